//! The audit log: one JSON line per operator command and per security event
//! (refused handshake, denied verb, mismatched Hello, reload refused) —
//! never per heartbeat.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Record {
    /// RFC 3339 UTC.
    pub ts: String,
    /// `command` or `security`.
    pub kind: &'static str,
    /// The peer's SPIFFE identity, or its address when it has none.
    pub who: String,
    /// read, watch, send, control, attach, hello, handshake, reload …
    pub verb: String,
    /// TENANT/HOST/AGENT, a host, or "" for fleet-wide reads.
    pub target: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub trace_id: String,
    /// ok, denied, refused, failed: <why>, or the send verdict.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    /// Links a relayed command's two lines: `intent` (written before it is
    /// relayed) and `done` (its outcome, whatever happened).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_id: Option<u64>,
    /// `intent` or `done`; absent on single-line records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<&'static str>,
}

#[derive(Clone)]
pub struct Audit {
    path: PathBuf,
    file: Arc<Mutex<std::fs::File>>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

impl Audit {
    /// Opens (appends to) the log, creating its directory; the file is 0600.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        // Command ids stay unique across restarts: they start at the clock.
        let start = u64::try_from(fleet_proto::clock::now_ms()).unwrap_or(0) * 1000;
        Ok(Self {
            path: path.to_owned(),
            file: Arc::new(Mutex::new(file)),
            next_id: Arc::new(std::sync::atomic::AtomicU64::new(start)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `intent` line of a command about to be relayed; the id goes into
    /// its [`finish`](Self::finish) line.
    pub fn begin(&self, r: Record) -> u64 {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.write(Record {
            command_id: Some(id),
            phase: Some("intent"),
            outcome: "relaying".into(),
            ..r
        });
        id
    }

    /// The `done` line of command `id`: its outcome.
    pub fn finish(&self, id: u64, r: Record) {
        self.write(Record {
            command_id: Some(id),
            phase: Some("done"),
            ..r
        });
    }

    /// Appends one line. A write failure is logged, never fatal to the
    /// command being audited.
    pub fn write(&self, mut r: Record) {
        if r.ts.is_empty() {
            r.ts = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
        }
        let Ok(mut line) = serde_json::to_vec(&r) else {
            return;
        };
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(&line) {
            tracing::error!(error = %e, path = %self.path.display(), "audit log write failed");
        }
    }
}

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
