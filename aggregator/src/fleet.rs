//! The `Fleet` service as the aggregator serves it to operators: reads from
//! the merged view, commands relayed down the right host's stream. Every
//! call is authorized (default-deny, per operator: tenants × verbs) and
//! every command, and every refusal, is audited.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_net::transport::peer_of;
use fleet_proto::address::{self, Address};
use fleet_proto::clock;
use fleet_proto::identity::Identity;
use fleet_proto::select::Select;
use fleet_proto::stream::{Chunk, Streamed, offer};
use fleet_proto::trace::TraceParent;
use fleet_proto::v1::fleet_server::Fleet;
use fleet_proto::v1::{
    AgentCall, AgentReply, AgentRow, Command, ControlAction, ControlRequest, ControlResult, Event,
    EventsRequest, FleetUpdate, ListAgentsRequest, ListAgentsResponse, ListHostsRequest,
    ListHostsResponse, ScreenFrame, SendReceipt, SendRequest, Summary, SummaryRequest, Verdict,
    WatchFleetRequest, WatchScreenRequest, command, command_result,
};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::audit::{Audit, Record};
use crate::authz::{Authz, Grant, Verb};
use crate::view::{Fold, View};

/// The audit target of reads over everything the caller may see.
const FLEET_WIDE: &str = "*";

/// Outcome of a command whose caller gave up before the answer.
const CALLER_GONE: &str = "caller gone: the host was told to stop the command";

/// Rows per snapshot message; a bigger view is chunked, never refused.
pub const SNAPSHOT_CHUNK: usize = 5_000;
const STREAM_BUFFER: usize = 256;
/// How long a WatchFleet client may take no message before it is shed.
const CLIENT_STALL: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct FleetService {
    pub view: View,
    pub authz: Arc<Authz>,
    pub audit: Audit,
    pub trust_domain: String,
    pub dev: bool,
    /// Turns true on SIGTERM: every open stream ends at once.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// The durable event history, for reads older than the backlog.
    pub history: Option<fleet_store::Store>,
}

/// What a streaming client is told when the aggregator stops.
const STOPPING: &str = "aggregator is stopping; reconnect when it is back";

impl FleetService {
    fn until_stop<T: Send + 'static>(&self, s: Streamed<T>) -> Streamed<T> {
        fleet_proto::stream::until_shutdown(s, self.shutdown.clone(), STOPPING)
    }

    /// `s`, ended with `PERMISSION_DENIED` (audited) as soon as a grants
    /// reload takes `verb` — or, for one agent's stream, `tenant` — away
    /// from the caller; and until shutdown.
    fn revocable<T: Send + 'static>(
        &self,
        s: Streamed<T>,
        caller: &Caller,
        verb: Verb,
        target: String,
        tenant: Option<String>,
    ) -> Streamed<T> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let (authz, audit, who, name) = (
            self.authz.clone(),
            self.audit.clone(),
            caller.who.clone(),
            caller.name.clone(),
        );
        let mut changed = authz.subscribe();
        changed.mark_unchanged();
        tokio::spawn(async move {
            let mut s = s;
            loop {
                tokio::select! {
                    // The caller went away: drop the inner stream with it.
                    () = tx.closed() => return,
                    item = tokio_stream::StreamExt::next(&mut s) => {
                        let Some(item) = item else { return };
                        if tx.send(item).await.is_err() {
                            return;
                        }
                    }
                    c = changed.changed() => {
                        if c.is_err() {
                            continue;
                        }
                        let allowed = authz.still(&name, verb).is_some_and(|g| {
                            tenant.as_deref().is_none_or(|t| g.tenant(t))
                        });
                        if !allowed {
                            let why = format!(
                                "the grants changed: {name} may no longer {} {target}",
                                verb.as_str()
                            );
                            audit.write(Record {
                                kind: "security",
                                who,
                                verb: verb.as_str().into(),
                                target,
                                outcome: format!("revoked: open stream ended ({why})"),
                                ..Default::default()
                            });
                            let _ = tx.send(Err(Status::permission_denied(why))).await;
                            return;
                        }
                    }
                }
            }
        });
        self.until_stop(Box::pin(ReceiverStream::new(rx)))
    }
}

/// What an audit line of a denied call can say about its request.
trait Facts {
    fn trace_id(&self) -> String {
        String::new()
    }
    fn bytes(&self) -> Option<u64> {
        None
    }
}

fn trace_of(traceparent: &str) -> String {
    TraceParent::parse(traceparent).map_or_else(String::new, |t| t.trace_id)
}

impl Facts for SendRequest {
    fn trace_id(&self) -> String {
        trace_of(&self.traceparent)
    }
    fn bytes(&self) -> Option<u64> {
        Some(self.text.len() as u64)
    }
}

impl Facts for ControlRequest {
    fn trace_id(&self) -> String {
        trace_of(&self.traceparent)
    }
}

impl Facts for WatchScreenRequest {}
impl Facts for ListAgentsRequest {}
impl Facts for ListHostsRequest {}
impl Facts for WatchFleetRequest {}
impl Facts for EventsRequest {}
impl Facts for SummaryRequest {}

/// An authorized caller.
#[derive(Clone)]
struct Caller {
    who: String,
    /// The operator's name in the grants file.
    name: String,
    grant: Grant,
}

impl Caller {
    fn sees(&self) -> impl Fn(&str) -> bool + Send + Sync + 'static {
        let g = self.grant.clone();
        move |t: &str| g.tenant(t)
    }

    /// What the caller may see as the grants are *now*: for streams that
    /// outlive a grants reload (they are re-filtered at once).
    fn sees_now(&self, authz: &Arc<Authz>) -> impl Fn(&str) -> bool + Send + Sync + 'static {
        let (authz, name) = (authz.clone(), self.name.clone());
        move |t: &str| authz.still(&name, Verb::Read).is_some_and(|g| g.tenant(t))
    }
}

/// A span for one relayed command, a child of the caller's `traceparent`,
/// and the context to send down (the span's own when spans are on).
fn command_span(
    name: &'static str,
    agent: &str,
    who: &str,
    incoming: &str,
) -> (tracing::Span, TraceParent) {
    let span = tracing::info_span!("aggregator", command = name, agent = %agent, operator = %who);
    fleet_proto::telemetry::adopt(&span, incoming);
    let tp = TraceParent::parse(&fleet_proto::telemetry::outgoing(&span, incoming))
        .unwrap_or_else(TraceParent::fresh);
    (span, tp)
}

fn deadline_ms(d: Duration) -> i64 {
    clock::now_ms() + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

fn status_of(e: &fleet_proto::v1::CommandError) -> Status {
    Status::new(tonic::Code::from_i32(e.code), e.message.clone())
}

impl FleetService {
    fn deny(&self, who: &str, verb: Verb, target: &str, facts: &dyn Facts, why: String) -> Status {
        self.audit.write(Record {
            kind: "security",
            who: who.to_owned(),
            verb: verb.as_str().into(),
            target: target.to_owned(),
            trace_id: facts.trace_id(),
            bytes: facts.bytes(),
            outcome: format!("denied: {why}"),
            ..Default::default()
        });
        Status::permission_denied(why)
    }

    /// Who is calling and whether they may use `verb` at all.
    fn caller<T: Facts>(
        &self,
        req: &Request<T>,
        verb: Verb,
        target: &str,
    ) -> Result<Caller, Status> {
        let facts = req.get_ref();
        // From here on the handler writes this call's audit line itself.
        if let Some(mark) = req.extensions().get::<crate::audit::Mark>() {
            mark.set();
        }
        let peer = peer_of(req);
        let name = match peer.and_then(|p| p.identity.as_ref()) {
            Some(Identity::Operator { trust_domain, name })
                if *trust_domain == self.trust_domain =>
            {
                name.clone()
            }
            Some(other) => {
                let who = other.uri();
                return Err(self.deny(
                    &who,
                    verb,
                    target,
                    facts,
                    format!(
                        "{other} is not an operator of trust domain {}",
                        self.trust_domain
                    ),
                ));
            }
            None if self.dev => "dev".to_owned(),
            None => return Err(Status::unauthenticated("no client certificate")),
        };
        let who = Identity::Operator {
            trust_domain: self.trust_domain.clone(),
            name: name.clone(),
        }
        .uri();
        let grants = self.authz.grants();
        let Some(grant) = grants.of(&name) else {
            return Err(self.deny(
                &who,
                verb,
                target,
                facts,
                format!("operator {name} has no grants"),
            ));
        };
        if !grant.verbs.contains(&verb) {
            let has: Vec<&str> = grant.verbs.iter().map(|v| v.as_str()).collect();
            return Err(self.deny(
                &who,
                verb,
                target,
                facts,
                format!(
                    "operator {name} may not {} (granted: {})",
                    verb.as_str(),
                    if has.is_empty() {
                        "nothing".to_owned()
                    } else {
                        has.join(", ")
                    }
                ),
            ));
        }
        Ok(Caller {
            who,
            name: name.clone(),
            grant: grant.clone(),
        })
    }

    /// The one visible row `address` names.
    fn resolve(&self, caller: &Caller, addr: &str) -> Result<AgentRow, Status> {
        let parsed = Address::parse(addr)?;
        let sees = caller.sees();
        let named = self.view.agents_named(&parsed.agent, &sees);
        match address::resolve(&named, addr) {
            Ok(r) => Ok(r.clone()),
            Err(address::AddressError::NotFound { .. }) => {
                // Only the not-found path pays for listing every candidate.
                let all = self.view.agents(&sees);
                address::resolve(&all, addr).cloned().map_err(Into::into)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A send by `caller` (an operator, or an agent whose grant `may`
    /// admits the target row), relayed and audited.
    async fn send_for(
        &self,
        caller: Caller,
        mut req: SendRequest,
        started: Instant,
        may: impl Fn(&AgentRow) -> bool,
    ) -> Result<SendReceipt, Status> {
        let target = req.agent.clone();
        let (span, tp) = command_span("send", &req.agent, &caller.who, &req.traceparent);
        let bytes = Some(req.text.len() as u64);
        let row = match self.resolve(&caller, &req.agent) {
            Ok(r) => r,
            Err(e) => {
                return Err(self.refused(&caller, Verb::Send, started, &target, &tp, bytes, e));
            }
        };
        if !may(&row) {
            let e = Status::permission_denied(format!(
                "{} may not send {}: not in its aggregator grant (agents.send)",
                caller.who,
                full(&row)
            ));
            return Err(self.refused(&caller, Verb::Send, started, &full(&row), &tp, bytes, e));
        }
        // The host's own waits bound the relay, plus room for the trip.
        let timeout = fleet_proto::waits::Waits::of(&req).total() + Duration::from_secs(10);
        req.agent = row.name.clone();
        req.traceparent = tp.to_string();
        // What the host would refuse is refused here: a message its link
        // cannot decode would end the link with every command on it.
        if let Err(e) = self.fits(&row, &req) {
            return Err(self.refused(&caller, Verb::Send, started, &target, &tp, bytes, e));
        }
        self.relay_audited(
            row,
            caller,
            Verb::Send,
            tp,
            bytes,
            timeout,
            command::Op::Send(req),
            |r| match r {
                Ok(command_result::Result::Receipt(r)) => {
                    (Verdict::word_of(r.verdict).to_owned(), Ok(r))
                }
                Ok(_) => {
                    let e = Status::internal("the host answered a send with something else");
                    (format!("failed: {}", e.message()), Err(e))
                }
                Err(e) => (format!("failed: {}", e.message()), Err(e)),
            },
            started,
        )
        .instrument(span)
        .await
    }

    /// A call of an agent of `tenant`/`host`, up that host's link: checked
    /// against the agent's grant here (default deny; its own tenant only),
    /// audited with the agent as who, and answered for the link.
    pub async fn agent_call(&self, tenant: &str, host: &str, call: AgentCall) -> AgentReply {
        use fleet_proto::v1::{CommandError, agent_call, agent_reply};
        let id = call.id;
        let error = |code: tonic::Code, message: String| AgentReply {
            id,
            result: Some(agent_reply::Result::Error(CommandError {
                code: code as i32,
                message,
            })),
        };
        if fleet_proto::name::check(&call.agent).is_err() {
            return error(tonic::Code::InvalidArgument, "not an agent name".into());
        }
        let key = format!("{tenant}/{host}/{}", call.agent);
        let subject = fleet_proto::reach::subject(tenant, host, &call.agent);
        let started = Instant::now();
        let verb = match &call.op {
            Some(agent_call::Op::Send(_)) => Verb::Send,
            _ => Verb::Read,
        };
        let grants = self.authz.grants();
        let Some(grant) = grants.agent(&key).cloned() else {
            let why = format!(
                "{subject} has no grant in this aggregator's grants file (agents.\"{key}\")"
            );
            self.audit.write(Record {
                kind: "command",
                who: subject,
                verb: verb.as_str().into(),
                outcome: format!("denied: {why}"),
                ..Default::default()
            });
            return error(tonic::Code::PermissionDenied, why);
        };
        // The agent's own tenant, and nothing else.
        let caller = Caller {
            who: subject,
            name: key,
            grant: Grant {
                tenants: [tenant.to_owned()].into(),
                verbs: [verb].into(),
            },
        };
        let own = host.to_owned();
        match call.op {
            Some(agent_call::Op::Send(mut req)) => {
                if req.traceparent.is_empty() {
                    req.traceparent = call.traceparent;
                }
                let reach = grant.send();
                // Addressed within the tenant: HOST/AGENT.
                req.agent = format!(
                    "{tenant}/{}",
                    req.agent.trim_start_matches(&format!("{tenant}/"))
                );
                match self
                    .send_for(caller, req, started, |r| {
                        reach.admits(&own, &r.host, &r.name)
                    })
                    .await
                {
                    Ok(r) => AgentReply {
                        id,
                        result: Some(agent_reply::Result::Receipt(r)),
                    },
                    Err(s) => error(s.code(), s.message().to_owned()),
                }
            }
            Some(agent_call::Op::List(req)) => {
                let select = match Select::new(req.selector.as_ref()) {
                    Ok(s) => s,
                    Err(e) => return error(tonic::Code::InvalidArgument, e.to_string()),
                };
                let reach = grant.read();
                let sees = caller.sees();
                let agents: Vec<AgentRow> = self
                    .view
                    .agents(&sees)
                    .into_iter()
                    .filter(|r| {
                        r.host != own && reach.admits(&own, &r.host, &r.name) && select.agent(r)
                    })
                    .collect();
                self.audit_command(
                    &caller,
                    Verb::Read,
                    started,
                    Record {
                        outcome: format!("ok: {} rows", agents.len()),
                        ..Default::default()
                    },
                );
                AgentReply {
                    id,
                    result: Some(agent_reply::Result::Agents(ListAgentsResponse {
                        agents,
                        generated_at_unix_ms: clock::now_ms(),
                    })),
                }
            }
            None => error(
                tonic::Code::InvalidArgument,
                "an agent call with no request".into(),
            ),
        }
    }

    /// One audit line for a command: `r` carries target, trace id,
    /// outcome and sizes.
    fn audit_command(&self, caller: &Caller, verb: Verb, started: Instant, r: Record) {
        self.audit.write(Record {
            kind: "command",
            who: caller.who.clone(),
            verb: verb.as_str().into(),
            elapsed_ms: Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
            ..r
        });
    }

    /// Whether the host of `row` accepts `req` (its Hello's limits).
    fn fits(&self, row: &AgentRow, req: &SendRequest) -> Result<(), Status> {
        use prost::Message;
        let key = (row.tenant_id.clone(), row.host.clone());
        let Ok(link) = self.view.route(&key) else {
            // The relay reports an unreachable host.
            return Ok(());
        };
        if let Some(limit) = link.limits.send_limit
            && req.text.len() > limit
        {
            return Err(Status::invalid_argument(format!(
                "the text is {} bytes; host {}/{} accepts at most {limit} (its send_limit_bytes)",
                req.text.len(),
                key.0,
                key.1
            )));
        }
        // The command as it goes down the link, with room for its envelope.
        let size = req.encoded_len() + 1024;
        if size > link.limits.max_message {
            return Err(Status::invalid_argument(format!(
                "the command is {size} bytes; host {}/{} decodes at most {} on its link",
                key.0, key.1, link.limits.max_message
            )));
        }
        Ok(())
    }

    /// One complete audit line for a command refused before it was relayed
    /// (an unknown or ambiguous agent, a bad address); returns the error.
    #[allow(clippy::too_many_arguments)]
    fn refused(
        &self,
        caller: &Caller,
        verb: Verb,
        started: Instant,
        target: &str,
        tp: &TraceParent,
        bytes: Option<u64>,
        e: Status,
    ) -> Status {
        self.audit_command(
            caller,
            verb,
            started,
            Record {
                target: target.to_owned(),
                trace_id: tp.trace_id.clone(),
                outcome: format!("failed: {}", e.message()),
                bytes,
                ..Default::default()
            },
        );
        e
    }

    /// Relays a one-answer command with its audit: the `intent` line before
    /// it goes down, the `done` line after, both from a task the caller
    /// cannot cancel. A caller that goes away is noted ("caller gone") and
    /// the host is told to stop the command.
    #[allow(clippy::too_many_arguments)]
    async fn relay_audited<T: Send + 'static>(
        &self,
        row: AgentRow,
        caller: Caller,
        verb: Verb,
        tp: TraceParent,
        bytes: Option<u64>,
        timeout: Duration,
        op: command::Op,
        judge: impl FnOnce(Result<command_result::Result, Status>) -> (String, Result<T, Status>)
        + Send
        + 'static,
        started: Instant,
    ) -> Result<T, Status> {
        let base = Record {
            kind: "command",
            who: caller.who.clone(),
            verb: verb.as_str().into(),
            target: full(&row),
            trace_id: tp.trace_id.clone(),
            bytes,
            ..Default::default()
        };
        let id = self.audit.begin(base.clone());
        let (hold, gone) = tokio::sync::oneshot::channel::<()>();
        let svc = self.clone();
        let task = tokio::spawn(
            async move {
                let answer = svc.relay(&row, &caller, &tp, timeout, op, gone).await;
                let (outcome, result) = judge(answer);
                svc.audit.finish(
                    id,
                    Record {
                        outcome,
                        elapsed_ms: Some(
                            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                        ),
                        ..base
                    },
                );
                result
            }
            .in_current_span(),
        );
        // Dropped with this call when its caller goes away: the task hears it.
        let _hold = hold;
        task.await
            .unwrap_or_else(|e| Err(Status::internal(format!("the relay failed: {e}"))))
    }

    /// Relays a one-answer command to the host of `row`; `gone` resolves
    /// when the caller went away (the host is then told to stop it).
    async fn relay(
        &self,
        row: &AgentRow,
        caller: &Caller,
        tp: &TraceParent,
        timeout: Duration,
        op: command::Op,
        gone: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<command_result::Result, Status> {
        let key = (row.tenant_id.clone(), row.host.clone());
        let link = self.view.route(&key).map_err(Status::from)?;
        let cmd = Command {
            id: 0,
            deadline_unix_ms: deadline_ms(timeout),
            operator: caller.who.clone(),
            traceparent: tp.to_string(),
            op: Some(op),
        };
        let (id, mut rx) = link.call(cmd, 1).await.ok_or_else(|| {
            Status::unavailable(format!(
                "host {}/{} went away; nothing was sent",
                key.0, key.1
            ))
        })?;
        let answer = tokio::time::timeout(timeout + Duration::from_secs(2), rx.recv());
        let answer = tokio::select! {
            a = answer => a,
            _ = gone => {
                link.cancel(id);
                return Err(Status::cancelled(CALLER_GONE));
            }
        };
        let answer = answer
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "host {}/{} did not answer within {timeout:?}",
                    key.0, key.1
                ))
            })?
            .ok_or_else(|| {
                Status::unavailable(format!(
                    "the link to {}/{} was lost while the command ran; its outcome is unknown",
                    key.0, key.1
                ))
            })?;
        match answer.result {
            Some(command_result::Result::Error(e)) => Err(status_of(&e)),
            Some(r) => Ok(r),
            None => Err(Status::internal("empty answer from the host")),
        }
    }
}

#[tonic::async_trait]
impl Fleet for FleetService {
    async fn list_agents(
        &self,
        req: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let caller = self.caller(&req, Verb::Read, FLEET_WIDE)?;
        let select = Select::new(req.get_ref().selector.as_ref())?;
        let mut agents = self.view.snapshot().selected(&caller.sees(), &select);
        agents.sort_by(|a, b| {
            (&a.tenant_id, &a.host, &a.name).cmp(&(&b.tenant_id, &b.host, &b.name))
        });
        Ok(Response::new(ListAgentsResponse {
            agents,
            generated_at_unix_ms: clock::now_ms(),
        }))
    }

    async fn list_hosts(
        &self,
        req: Request<ListHostsRequest>,
    ) -> Result<Response<ListHostsResponse>, Status> {
        let caller = self.caller(&req, Verb::Read, FLEET_WIDE)?;
        let select = Select::new(req.get_ref().selector.as_ref())?;
        let mut hosts = self.view.hosts(&caller.sees());
        hosts.retain(|h| select.host_row(h));
        Ok(Response::new(ListHostsResponse {
            hosts,
            generated_at_unix_ms: clock::now_ms(),
        }))
    }

    async fn need_human(
        &self,
        _req: Request<fleet_proto::v1::NeedHumanRequest>,
    ) -> Result<Response<fleet_proto::v1::NeedHumanReply>, Status> {
        Err(Status::failed_precondition(
            "need-human is raised by an agent through its own hostd (`fleetctl mcp` in its pane); \
             its event reaches the aggregator over the host's link",
        ))
    }

    async fn summarize(&self, req: Request<SummaryRequest>) -> Result<Response<Summary>, Status> {
        let caller = self.caller(&req, Verb::Read, FLEET_WIDE)?;
        let select = Select::new(req.get_ref().selector.as_ref())?;
        let snap = self.view.snapshot();
        let sees = caller.sees();
        let hosts: Vec<_> = snap.hosts(&sees).map(|h| (h.to_row(), h)).collect();
        Ok(Response::new(fleet_proto::select::summarize(
            &select,
            hosts
                .iter()
                .map(|(row, h)| (row, h.agents.values().map(|a| &**a))),
            clock::now_ms(),
        )))
    }

    type WatchFleetStream = Streamed<FleetUpdate>;

    async fn watch_fleet(
        &self,
        req: Request<WatchFleetRequest>,
    ) -> Result<Response<Self::WatchFleetStream>, Status> {
        let caller = self.caller(&req, Verb::Read, FLEET_WIDE)?;
        let select = Select::new(req.get_ref().selector.as_ref())?;
        let sees = caller.sees_now(&self.authz);
        let (snap, mut changes) = self.view.subscribe();
        let versions = snap.versions();
        let epoch = self.view.epoch;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let view = self.view.clone();
        let mut grants = self.authz.subscribe();
        grants.mark_unchanged();
        tokio::spawn(async move {
            let agents = snap.selected(&sees, &select);
            let hosts: Vec<_> = snap
                .hosts(&sees)
                .filter(|h| select.host_row(&h.row))
                .map(crate::view::Host::to_row)
                .collect();
            drop(snap);
            let mut fold = Fold::new(select);
            fold.hold(&agents);
            // Tenants this stream has shown rows of: when a reload hides one,
            // its rows are removed from the caller's view at once.
            let mut shown: std::collections::BTreeSet<String> =
                agents.iter().map(|a| a.tenant_id.clone()).collect();
            let mut frames = fleet_proto::stream::Frames::new(epoch);
            // The snapshot, in chunks; hosts ride with the last one.
            for u in frames.snapshot(&agents, hosts, Chunk::rows(SNAPSHOT_CHUNK)) {
                if tx.send(Ok(u)).await.is_err() {
                    return;
                }
            }
            drop(agents);
            loop {
                let batch = tokio::select! {
                    c = changes.recv() => c,
                    g = grants.changed() => {
                        if g.is_err() {
                            continue;
                        }
                        let hidden: Vec<String> =
                            shown.iter().filter(|t| !sees(t)).cloned().collect();
                        if hidden.is_empty() {
                            continue;
                        }
                        shown.retain(|t| sees(t));
                        fold.forget(&|t: &str| hidden.iter().any(|h| h == t));
                        let removals = view
                            .agents(&|t: &str| hidden.iter().any(|h| h == t))
                            .into_iter()
                            .map(|r| fleet_proto::v1::AgentKey {
                                tenant_id: r.tenant_id,
                                host: r.host,
                                name: r.name,
                            })
                            .collect();
                        let u = frames.delta(fleet_proto::v1::Delta {
                            upserts: vec![],
                            removals,
                            hosts: vec![],
                        });
                        if !offer(&tx, u).await {
                            return;
                        }
                        continue;
                    }
                };
                // Room in the client's buffer first; meanwhile published
                // batches wait in the broadcast and then ride in one message.
                // Shed when the client stalls or the broadcast overtook it.
                let Ok(Ok(permit)) = tokio::time::timeout(CLIENT_STALL, tx.reserve()).await else {
                    fleet_proto::stream::shed_one();
                    let _ = tx.try_send(Err(Status::resource_exhausted(
                        "client too slow for the fleet's change rate; call again to resync",
                    )));
                    return;
                };
                let mut got = batch;
                loop {
                    match got {
                        Ok(b) => fold.add(&b, &versions, &sees, &mut shown),
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            fleet_proto::stream::shed_one();
                            permit.send(Err(Status::resource_exhausted(
                                "client too slow for the fleet's change rate; call again to resync",
                            )));
                            return;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                    if fold.len() >= SNAPSHOT_CHUNK {
                        break;
                    }
                    got = match changes.try_recv() {
                        Ok(b) => Ok(b),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => {
                            Err(broadcast::error::RecvError::Lagged(n))
                        }
                        Err(_) => break,
                    };
                }
                if !fold.is_empty() {
                    permit.send(Ok(frames.delta(fold.take())));
                }
            }
        });
        Ok(Response::new(self.revocable(
            Box::pin(ReceiverStream::new(rx)),
            &caller,
            Verb::Read,
            FLEET_WIDE.into(),
            None,
        )))
    }

    type EventsStream = Streamed<Event>;

    async fn events(
        &self,
        req: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let target = match req.get_ref().agent.as_str() {
            "" => FLEET_WIDE.to_owned(),
            a => a.to_owned(),
        };
        let caller = self.caller(&req, Verb::Read, &target)?;
        let req = req.into_inner();
        let filter = fleet_proto::stream::EventFilter::new(&req)?;
        let sees = caller.sees_now(&self.authz);
        let wanted = move |e: &Event| sees(&e.tenant_id) && filter.matches(e);
        let (mut backlog, live) = self.view.events.subscribe(req.after_seq);
        // Older than memory: the history first (the filters below apply
        // to it alike).
        fleet_store::prepend_older(self.history.as_ref(), &req, &mut backlog)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        // A bounded window is answered, never followed.
        let follow = req.follow && req.until_unix_ms <= 0;
        Ok(Response::new(self.revocable(
            fleet_proto::stream::events(backlog, live, follow, wanted),
            &caller,
            Verb::Read,
            target,
            None,
        )))
    }

    async fn send(&self, req: Request<SendRequest>) -> Result<Response<SendReceipt>, Status> {
        let started = Instant::now();
        let target = req.get_ref().agent.clone();
        let caller = self.caller(&req, Verb::Send, &target)?;
        self.send_for(caller, req.into_inner(), started, |_| true)
            .await
            .map(Response::new)
    }

    type WatchScreenStream = Streamed<ScreenFrame>;

    async fn watch_screen(
        &self,
        req: Request<WatchScreenRequest>,
    ) -> Result<Response<Self::WatchScreenStream>, Status> {
        let started = Instant::now();
        let target = req.get_ref().agent.clone();
        let caller = self.caller(&req, Verb::Watch, &target)?;
        let mut req = req.into_inner();
        let tp = TraceParent::fresh();
        let row = match self.resolve(&caller, &req.agent) {
            Ok(r) => r,
            Err(e) => {
                self.audit_command(
                    &caller,
                    Verb::Watch,
                    started,
                    Record {
                        target: req.agent.clone(),
                        trace_id: tp.trace_id.clone(),
                        outcome: format!("failed: {}", e.message()),
                        bytes: None,
                        ..Default::default()
                    },
                );
                return Err(e);
            }
        };
        let target = full(&row);
        let key = (row.tenant_id.clone(), row.host.clone());
        let link = match self.view.route(&key) {
            Ok(l) => l,
            Err(why) => {
                self.audit_command(
                    &caller,
                    Verb::Watch,
                    started,
                    Record {
                        target: target.clone(),
                        trace_id: tp.trace_id.clone(),
                        outcome: format!("failed: {why}"),
                        bytes: None,
                        ..Default::default()
                    },
                );
                return Err(why.into());
            }
        };
        req.agent = row.name.clone();
        let cmd = Command {
            id: 0,
            deadline_unix_ms: 0,
            operator: caller.who.clone(),
            traceparent: tp.to_string(),
            op: Some(command::Op::WatchScreen(req)),
        };
        let (id, mut results) = link
            .call(cmd, 16)
            .await
            .ok_or_else(|| Status::unavailable(format!("host {}/{} went away", key.0, key.1)))?;
        self.audit_command(
            &caller,
            Verb::Watch,
            started,
            Record {
                target: target.clone(),
                trace_id: tp.trace_id.clone(),
                outcome: "ok".into(),
                bytes: None,
                ..Default::default()
            },
        );
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tx.closed() => {
                        link.cancel(id);
                        return;
                    }
                    r = results.recv() => {
                        let item = match r.and_then(|r| r.result) {
                            Some(command_result::Result::Frame(f)) => Ok(f),
                            Some(command_result::Result::Error(e)) => Err(status_of(&e)),
                            Some(command_result::Result::Done(_)) => return,
                            Some(_) => Err(Status::internal("unexpected answer to watch")),
                            None => Err(Status::unavailable("the host link was lost")),
                        };
                        let end = item.is_err();
                        if tx.send(item).await.is_err() {
                            link.cancel(id);
                            return;
                        }
                        if end {
                            return;
                        }
                    }
                }
            }
        });
        let tenant = Some(row.tenant_id.clone());
        Ok(Response::new(self.revocable(
            Box::pin(ReceiverStream::new(rx)),
            &caller,
            Verb::Watch,
            target,
            tenant,
        )))
    }

    async fn control(
        &self,
        req: Request<ControlRequest>,
    ) -> Result<Response<ControlResult>, Status> {
        let started = Instant::now();
        let verb = if req.get_ref().action == ControlAction::Attach as i32 {
            Verb::Attach
        } else {
            Verb::Control
        };
        let target = req.get_ref().agent.clone();
        let caller = self.caller(&req, verb, &target)?;
        let mut req = req.into_inner();
        let (span, tp) = command_span("control", &req.agent, &caller.who, &req.traceparent);
        let row = match self.resolve(&caller, &req.agent) {
            Ok(r) => r,
            Err(e) => return Err(self.refused(&caller, verb, started, &target, &tp, None, e)),
        };
        let action = ControlAction::try_from(req.action)
            .map_or("unknown", |a| a.as_str_name())
            .to_owned();
        req.agent = row.name.clone();
        req.operator = caller.who.clone();
        req.traceparent = tp.to_string();
        let answer = self
            .relay_audited(
                row,
                caller,
                verb,
                tp,
                None,
                Duration::from_secs(30),
                command::Op::Control(req),
                move |r| match r {
                    Ok(command_result::Result::Control(r)) => {
                        (format!("{action}: {}", r.outcome), Ok(r))
                    }
                    Ok(_) => {
                        let e = Status::internal("the host answered a control with something else");
                        (format!("{action} failed: {}", e.message()), Err(e))
                    }
                    Err(e) => (format!("{action} failed: {}", e.message()), Err(e)),
                },
                started,
            )
            .instrument(span)
            .await;
        answer.map(Response::new)
    }
}

fn full(r: &AgentRow) -> String {
    format!("{}/{}/{}", r.tenant_id, r.host, r.name)
}
