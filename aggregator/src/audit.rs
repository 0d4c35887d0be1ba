//! The aggregator's audit: one JSON line (`fleet_net::audit`) per operator
//! command and per security event (refused handshake, denied verb,
//! mismatched Hello, reload refused) — never per heartbeat — including the
//! commands refused before their handler ran.

use std::sync::Arc;

pub use fleet_net::audit::{Audit, Record};

/// Set by a command's handler once it has written (or will write) that
/// command's audit line.
#[derive(Debug, Clone, Default)]
pub struct Mark(Arc<std::sync::atomic::AtomicBool>);

impl Mark {
    pub fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The verb an operator call on `path` stands for, when it is a command.
fn command_verb(path: &str) -> Option<&'static str> {
    match path.strip_prefix("/fleet.v1.Fleet/")? {
        "Send" => Some("send"),
        "Control" => Some("control"),
        "WatchScreen" => Some("watch"),
        _ => None,
    }
}

/// A tower layer that audits the commands refused before their handler
/// ran (a message that does not decode, or is over the size limit): the
/// handler never saw them, so nothing else would write their line.
#[derive(Clone)]
pub struct RefusedAtDecode {
    pub audit: Audit,
}

impl<S> tower::Layer<S> for RefusedAtDecode {
    type Service = RefusedAtDecodeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RefusedAtDecodeService {
            inner,
            audit: self.audit.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RefusedAtDecodeService<S> {
    inner: S,
    audit: Audit,
}

impl<S, B, R> tower::Service<http::Request<B>> for RefusedAtDecodeService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let Some(verb) = command_verb(req.uri().path()) else {
            return Box::pin(self.inner.call(req));
        };
        let mark = Mark::default();
        req.extensions_mut().insert(mark.clone());
        let who = req
            .extensions()
            .get::<fleet_net::transport::Peer>()
            .map(|p| match &p.identity {
                Some(id) => id.uri(),
                None => p.addr.map_or_else(|| "unknown".into(), |a| a.to_string()),
            })
            .unwrap_or_else(|| "unknown".into());
        let audit = self.audit.clone();
        let call = self.inner.call(req);
        Box::pin(async move {
            let resp = call.await?;
            let status = resp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("0");
            if !mark.is_set() && status != "0" {
                let message = resp
                    .headers()
                    .get("grpc-message")
                    .and_then(|v| v.to_str().ok())
                    // grpc-message is percent-encoded.
                    .map(|m| {
                        percent_encoding::percent_decode_str(m)
                            .decode_utf8_lossy()
                            .into_owned()
                    })
                    .unwrap_or_default();
                audit.write(Record {
                    kind: "command",
                    who,
                    verb: verb.into(),
                    target: "(request not decoded)".into(),
                    outcome: format!("refused at decode (grpc-status {status}): {message}"),
                    ..Default::default()
                });
            }
            Ok(resp)
        })
    }
}
