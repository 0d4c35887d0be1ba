//! The `HostLink` service: one bidirectional stream per hostd. The stream
//! may publish only for the tenant and host in the hostd's certificate.

use std::collections::HashMap;
use std::time::Duration;

use fleet_net::transport::peer_of;
use fleet_proto::identity::Identity;
use fleet_proto::stream::Streamed;
use fleet_proto::v1::host_link_server::HostLink;
use fleet_proto::v1::{
    AggregatorMessage, CommandResult, HostMessage, Welcome, aggregator_message, host_message,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::audit::{Audit, Record};
use crate::route::{Call, Limits, Route};
use crate::view::View;

/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct HostLinkService {
    pub view: View,
    pub audit: Audit,
    pub trust_domain: String,
    /// Plaintext development listener: no certificates, Hello is trusted.
    pub dev: bool,
    pub beat: Duration,
    /// Turns true on SIGTERM: every host link is told to reconnect.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Answers the calls the hosts' agents make up their links.
    pub fleet: crate::fleet::FleetService,
}

/// Agent calls one link may have in flight; past it they are refused.
const AGENT_CALLS_IN_FLIGHT: usize = 16;

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
        let (route, mut ends) = Route::new(self.view.next_link(), tx.clone(), Limits::of(&hello));
        let link = route.id;
        let events_after = match self.view.attach(&hello, route, who.clone()).await {
            Ok(after) => after,
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
                return Err(why.into());
            }
        };
        let welcome = AggregatorMessage {
            msg: Some(aggregator_message::Msg::Welcome(Welcome {
                beat_interval_ms: u32::try_from(self.beat.as_millis()).unwrap_or(u32::MAX),
                lease_ms: u32::try_from(self.view.lease.as_millis()).unwrap_or(u32::MAX),
                events_after,
            })),
        };
        let _ = tx.send(Box::new(welcome)).await;
        // Answers to the host's agent calls go down this link.
        let replies = tx.clone();
        drop(tx);
        let fleet = self.fleet.clone();
        let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(AGENT_CALLS_IN_FLIGHT));
        tracing::info!(host = %claimed, link, "host link up");
        let key = std::sync::Arc::new((hello.tenant_id, hello.host));
        let view = self.view.clone();
        let audit = self.audit.clone();
        // How the link ends when the aggregator ends it for cause.
        let (end_tx, end_rx) = mpsc::channel::<Box<Status>>(1);
        tokio::spawn(async move {
            // Where each running command's results go: this task's alone.
            let mut pending: HashMap<u64, mpsc::Sender<CommandResult>> = HashMap::new();
            let why = loop {
                let msg = tokio::select! {
                    // Registrations first: a result never overtakes its own.
                    biased;
                    Some(call) = ends.calls.recv() => {
                        match call {
                            Call::Register { id, to } => {
                                pending.insert(id, to);
                            }
                            Call::Forget(id) => {
                                pending.remove(&id);
                            }
                        }
                        continue;
                    }
                    Some(end) = ends.ending.recv() => {
                        if let Some(status) = end.status {
                            let _ = end_tx.try_send(status);
                        }
                        break end.why;
                    }
                    m = inbound.next() => m,
                };
                let msg = match msg {
                    None => break "closed by the host".to_owned(),
                    Some(Err(e)) => break format!("stream error: {}", e.message()),
                    Some(Ok(HostMessage { msg: None })) => continue,
                    Some(Ok(HostMessage { msg: Some(m) })) => m,
                };
                match msg {
                    host_message::Msg::Update(u) => view.apply(&key, link, u).await,
                    host_message::Msg::Event(e) => {
                        // Events name agents like rows do: checked alike.
                        if !e.agent.is_empty() && fleet_proto::name::check(&e.agent).is_err() {
                            let agent: String = e.agent.escape_debug().take(80).collect();
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
                        } else {
                            view.host_event(&key, link, e).await;
                        }
                    }
                    host_message::Msg::Result(r) => {
                        use fleet_proto::v1::command_result::Result as R;
                        if matches!(r.result, Some(R::Frame(_))) {
                            // A viewer that cannot keep up loses frames,
                            // never the link.
                            if let Some(to) = pending.get(&r.id) {
                                let _ = to.try_send(r);
                            }
                            view.heard(&key, link).await;
                        } else if let Some(to) = pending.remove(&r.id) {
                            view.deliver(&key, link, r, to).await;
                        } else {
                            view.heard(&key, link).await;
                        }
                    }
                    host_message::Msg::Beat(_) | host_message::Msg::Hello(_) => {
                        view.heard(&key, link).await;
                    }
                    host_message::Msg::AgentCall(call) => {
                        view.heard(&key, link).await;
                        let (fleet, replies, key) = (fleet.clone(), replies.clone(), key.clone());
                        let permit = in_flight.clone().try_acquire_owned();
                        tokio::spawn(async move {
                            let reply = match permit {
                                Ok(_permit) => fleet.agent_call(&key.0, &key.1, call).await,
                                Err(_) => fleet_proto::v1::AgentReply {
                                    id: call.id,
                                    result: Some(fleet_proto::v1::agent_reply::Result::Error(
                                        fleet_proto::v1::CommandError {
                                            code: tonic::Code::ResourceExhausted as i32,
                                            message: format!(
                                                "this host has {AGENT_CALLS_IN_FLIGHT} agent calls in flight; try again"
                                            ),
                                        },
                                    )),
                                },
                            };
                            let _ = replies
                                .send(Box::new(AggregatorMessage {
                                    msg: Some(aggregator_message::Msg::AgentReply(reply)),
                                }))
                                .await;
                        });
                    }
                }
            };
            tracing::info!(host = %format!("{}/{}", key.0, key.1), link, %why, "host link down");
            view.detach(&key, link, why).await;
        });
        let out = ReceiverStream::new(rx)
            .map(|m| Ok(*m))
            .merge(ReceiverStream::new(end_rx).map(|s| Err(*s)));
        Ok(Response::new(fleet_proto::stream::until_shutdown(
            Box::pin(out),
            self.shutdown.clone(),
            "aggregator is stopping; reconnect",
        )))
    }
}
