//! The `HostLink` service: one bidirectional stream per hostd. The stream
//! may publish only for the tenant and host in the hostd's certificate.

use std::sync::Arc;
use std::time::Duration;

use fleet_proto::identity::Identity;
use fleet_proto::net::peer_of;
use fleet_proto::stream::Streamed;
use fleet_proto::v1::host_link_server::HostLink;
use fleet_proto::v1::{AggregatorMessage, HostMessage, Welcome, aggregator_message, host_message};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::audit::{Audit, Record};
use crate::state::{Applied, State};

/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct HostLinkService {
    pub state: Arc<State>,
    pub audit: Audit,
    pub trust_domain: String,
    /// Plaintext development listener: no certificates, Hello is trusted.
    pub dev: bool,
    pub beat: Duration,
    /// Turns true on SIGTERM: every host link is told to reconnect.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl HostLinkService {
    fn refuse(&self, who: String, target: String, why: String) -> Status {
        tracing::warn!(%who, %target, %why, "host link refused");
        self.audit.write(Record {
            kind: "security",
            who,
            verb: "hello".into(),
            target,
            outcome: format!("refused: {why}"),
            ..Default::default()
        });
        Status::permission_denied(why)
    }
}

#[tonic::async_trait]
impl HostLink for HostLinkService {
    type AttachStream = Streamed<AggregatorMessage>;

    async fn attach(
        &self,
        req: Request<Streaming<HostMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let peer = peer_of(&req).cloned();
        let who = match peer.as_ref().and_then(|p| p.identity.as_ref()) {
            Some(id) => id.uri(),
            None => peer
                .as_ref()
                .and_then(|p| p.addr)
                .map_or_else(|| "unknown".into(), |a| a.to_string()),
        };
        let certified = match peer.as_ref().and_then(|p| p.identity.clone()) {
            Some(Identity::Host {
                trust_domain,
                tenant,
                host,
            }) if trust_domain == self.trust_domain => Some((tenant, host)),
            None if self.dev => None,
            Some(other) => {
                return Err(self.refuse(
                    who,
                    String::new(),
                    format!("{other} may not open a host link (hostd certificates only, trust domain {})", self.trust_domain),
                ));
            }
            None => return Err(Status::unauthenticated("no client certificate")),
        };
        let mut inbound = req.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(HostMessage {
                msg: Some(host_message::Msg::Hello(h)),
            }))) => h,
            Ok(Ok(_)) => return Err(Status::invalid_argument("the first message must be Hello")),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Status::deadline_exceeded("no Hello within 10 s")),
        };
        let claimed = format!("{}/{}", hello.tenant_id, hello.host);
        if let Some((tenant, host)) = &certified
            && (tenant != &hello.tenant_id || host != &hello.host)
        {
            return Err(self.refuse(
                who,
                claimed,
                format!(
                    "the certificate is for tenant {tenant} host {host}, but Hello claims tenant {} host {}",
                    hello.tenant_id, hello.host
                ),
            ));
        }
        if !fleet_proto::identity::check_label(&hello.tenant_id)
            || !fleet_proto::identity::check_label(&hello.host)
        {
            return Err(self.refuse(who, claimed, "bad tenant or host id in Hello".into()));
        }
        let (tx, rx) = mpsc::channel(1024);
        let (link, events_after) = match self.state.attach(&hello, tx.clone()) {
            Ok(l) => l,
            Err(why) => {
                tracing::warn!(host = %claimed, %why, "duplicate host identity refused");
                self.audit.write(Record {
                    kind: "security",
                    who,
                    verb: "hello".into(),
                    target: claimed,
                    outcome: format!("refused: {why}"),
                    ..Default::default()
                });
                return Err(Status::already_exists(why));
            }
        };
        let welcome = AggregatorMessage {
            msg: Some(aggregator_message::Msg::Welcome(Welcome {
                beat_interval_ms: u32::try_from(self.beat.as_millis()).unwrap_or(u32::MAX),
                lease_ms: u32::try_from(self.state.lease.as_millis()).unwrap_or(u32::MAX),
                events_after,
            })),
        };
        let _ = tx.send(welcome).await;
        drop(tx);
        tracing::info!(host = %claimed, link = link.id, "host link up");
        let key = (hello.tenant_id, hello.host);
        let state = self.state.clone();
        let kill = link.kill.clone();
        let audit = self.audit.clone();
        // How the link ends when the aggregator ends it for cause.
        let (end_tx, end_rx) = mpsc::channel::<Status>(1);
        tokio::spawn(async move {
            let why = loop {
                let msg = tokio::select! {
                    m = inbound.next() => m,
                    () = kill.notified() => break "replaced or lease expired".to_owned(),
                };
                let msg = match msg {
                    None => break "closed by the host".to_owned(),
                    Some(Err(e)) => break format!("stream error: {}", e.message()),
                    Some(Ok(HostMessage { msg: None })) => continue,
                    Some(Ok(HostMessage { msg: Some(m) })) => m,
                };
                match msg {
                    host_message::Msg::Update(u) => match state.apply(&key, link.id, u) {
                        Applied::Gap => link.resync("sequence gap"),
                        Applied::Dropped(names) => audit.write(Record {
                            kind: "security",
                            who: who.clone(),
                            verb: "update".into(),
                            target: format!("{}/{}", key.0, key.1),
                            outcome: format!(
                                "refused {} row(s) whose agent name is not a name: {}",
                                names.len(),
                                names.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
                            ),
                            ..Default::default()
                        }),
                        Applied::Refused(why) => {
                            audit.write(Record {
                                kind: "security",
                                who: who.clone(),
                                verb: "update".into(),
                                target: format!("{}/{}", key.0, key.1),
                                outcome: format!("refused: {why}; link ended"),
                                ..Default::default()
                            });
                            let _ = end_tx.try_send(Status::resource_exhausted(why.clone()));
                            break why;
                        }
                        Applied::Ok | Applied::Stale | Applied::Superseded => {}
                    },
                    host_message::Msg::Event(e) => {
                        let agent: String = e.agent.escape_debug().take(80).collect();
                        if !state.host_forwarded_event(&key, link.id, e) {
                            audit.write(Record {
                                kind: "security",
                                who: who.clone(),
                                verb: "event".into(),
                                target: format!("{}/{}", key.0, key.1),
                                outcome: format!(
                                    "refused an event whose agent name is not a name: {agent}"
                                ),
                                ..Default::default()
                            });
                        }
                    }
                    host_message::Msg::Result(r) => {
                        state.heard(&key, link.id);
                        link.deliver(r).await;
                    }
                    host_message::Msg::Beat(_) | host_message::Msg::Hello(_) => {
                        state.heard(&key, link.id);
                    }
                }
            };
            tracing::info!(host = %format!("{}/{}", key.0, key.1), link = link.id, %why, "host link down");
            state.detach(&key, link.id, &why);
        });
        let out = ReceiverStream::new(rx)
            .map(Ok)
            .merge(ReceiverStream::new(end_rx).map(Err));
        Ok(Response::new(fleet_proto::stream::until_shutdown(
            Box::pin(out),
            self.shutdown.clone(),
            "aggregator is stopping; reconnect",
        )))
    }
}
