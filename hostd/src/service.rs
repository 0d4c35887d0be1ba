//! The `fleet.v1.Fleet` service as hostd serves it: every answer comes from
//! the published [`View`] and the event log, never from a tmux round trip.

use fleet_proto::v1::{AgentFlag, EventKind, HostFlag};
use fleet_proto::vocab::Flagged;
use std::sync::Arc;
use std::time::Duration;

use fleet_proto::v1::fleet_server::Fleet;
use fleet_proto::v1::{
    AgentRow, ControlAction, ControlRequest, ControlResult, Delta, Event, EventsRequest,
    FleetUpdate, ListAgentsRequest, ListAgentsResponse, ListHostsRequest, ListHostsResponse,
    NeedHumanReply, NeedHumanRequest, PaneState, ScreenFrame, Selector, SendReceipt, SendRequest,
    Summary, SummaryRequest, Verdict, WatchFleetRequest, WatchScreenRequest,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::address;
use crate::callers::{self, AgentCaller, Caller};
use crate::clock;
use crate::events::EventLog;
use crate::roster::Roster;
use crate::send::{self, SendError};
use crate::table::{Command, View};
use crate::tmux::Tmux;
use fleet_net::audit::Record;
use fleet_proto::select::Select;
use fleet_proto::stream::{Streamed, offer};
use fleet_proto::trace::trace_id;
use tracing::Instrument;

/// The longest need-human text, bytes.
const NEED_HUMAN_MAX: usize = 2000;

/// Per-stream buffer; a client this far behind is shed.
const STREAM_BUFFER: usize = 64;

#[derive(Clone)]
pub struct FleetService {
    pub view: watch::Receiver<Arc<View>>,
    pub roster: watch::Receiver<Arc<Roster>>,
    pub events: EventLog,
    pub epoch: u64,
    pub tmux: Tmux,
    pub run_dir: std::path::PathBuf,
    pub send_limit: usize,
    pub commands: mpsc::Sender<Command>,
    /// Each agent's one-writer input queue.
    pub inputs: crate::inputs::Inputs,
    /// Turns true on SIGTERM: every open stream ends at once.
    pub shutdown: watch::Receiver<bool>,
    /// What agents asked (`fleetctl mcp`): one line per send, refusal and
    /// need-human. `None` when the log cannot be opened (said at start).
    pub audit: Option<fleet_net::audit::Audit>,
    /// The aggregator links an agent's call for another host goes up.
    pub uplinks: crate::link::Uplinks,
    /// The durable event history, for reads older than the backlog.
    pub history: Option<fleet_store::Store>,
}

/// What a streaming client is told when hostd stops.
const STOPPING: &str = "hostd is stopping; reconnect when it is back";

/// Notes a send whose caller went away before it ended.
struct Abandoned<'a> {
    events: &'a EventLog,
    agent: &'a str,
    trace_id: &'a str,
    started: std::time::Instant,
    done: bool,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.events.emit(
                self.agent,
                EventKind::SendAbandoned,
                format!(
                    "the caller went away after {} ms; hostd stopped the send",
                    self.started.elapsed().as_millis()
                ),
                &[("trace_id", self.trace_id.to_owned())],
            );
        }
    }
}

// === errors at the edge ===

impl From<SendError> for Status {
    fn from(e: SendError) -> Self {
        match e {
            SendError::NotUtf8(_)
            | SendError::TooLarge { .. }
            | SendError::Empty
            | SendError::LineByLine => Status::invalid_argument(e.to_string()),
            SendError::Dead(_)
            | SendError::StillBusy(..)
            | SendError::StaleDraft { .. }
            | SendError::ClearFailed { .. }
            | SendError::Waiting { .. }
            | SendError::NotReady { .. } => Status::failed_precondition(e.to_string()),
            SendError::Tmux(_) => Status::unavailable(e.to_string()),
        }
    }
}

impl FleetService {
    /// The live row `address` names, refused unless its pane is alive.
    fn live_row(&self, address: &str) -> Result<AgentRow, Status> {
        let view = self.view.borrow().clone();
        let row = address::resolve(&view.agents, address)?.clone();
        match PaneState::try_from(row.pane) {
            Ok(PaneState::Alive) => Ok(row),
            Ok(PaneState::Dead) => Err(Status::failed_precondition(format!(
                "the pane of {} is dead ({}); start it first: fleetctl start {}",
                row.name,
                if row.last_event.is_empty() {
                    "exited"
                } else {
                    &row.last_event
                },
                row.name
            ))),
            _ => Err(Status::failed_precondition(format!(
                "{} has no tmux session{}; start it: fleetctl start {}",
                row.name,
                if row.has(AgentFlag::Stopped) {
                    " (stopped by an operator)"
                } else {
                    ""
                },
                row.name
            ))),
        }
    }

    fn target(&self, row: &AgentRow) -> send::Target {
        let roster = self.roster.borrow().clone();
        let spec = roster.agent(&row.name);
        send::Target {
            tenant: row.tenant_id.clone(),
            host: row.host.clone(),
            name: row.name.clone(),
            pane_id: row.pane_id.clone(),
            hb_file: spec.map(|s| fleet_proto::heartbeat::path_for(&self.run_dir, &s.name)),
            submit_gap: spec.map_or(Duration::from_millis(100), |s| s.submit_gap),
            bracketed_paste: crate::runtime::bracketed_paste(
                spec.and_then(|s| s.bracketed_paste),
                row.process.as_ref().map(|p| p.name.as_str()),
            ),
            screen: spec.map_or(&crate::runtime::Screen::GENERIC, |s| s.screen),
            startup: spec.map_or(Duration::from_secs(5), |s| s.startup),
            status: {
                let (view, name) = (self.view.clone(), row.name.clone());
                Some(send::StatusProbe(std::sync::Arc::new(move || {
                    let v = view.borrow();
                    v.agents
                        .iter()
                        .find(|r| r.name == name)
                        .and_then(|r| r.heartbeat.as_ref())
                        .and_then(|h| fleet_proto::v1::AgentStatus::try_from(h.status).ok())
                })))
            },
            acknowledges: spec.is_some_and(|s| {
                s.native
                    && s.native_kind.reports_turn_start()
                    && crate::native::agent_dir(&self.run_dir, s).is_dir()
            }),
        }
    }

    /// Fails fast while the table has flagged tmux as not answering: every
    /// input and screen read would only wait out its timeout.
    fn tmux_answers(&self) -> Result<(), Status> {
        let view = self.view.borrow();
        if view.host.has(HostFlag::TmuxUnresponsive) {
            return Err(Status::unavailable(format!(
                "tmux server on socket {} is not answering (host flag tmux-unresponsive); try again when it does",
                view.host.tmux_socket
            )));
        }
        Ok(())
    }

    /// Who `req` comes from (an agent asking from outside any pane is
    /// refused here, and audited).
    fn caller<T>(&self, req: &Request<T>, verb: &str, target: &str) -> Result<Caller, Status> {
        let view = self.view.borrow().clone();
        let roster = self.roster.borrow().clone();
        callers::identify(req, &view, &roster).inspect_err(|e| {
            self.audit(Record {
                kind: "security",
                who: "local process (not in an agent's pane)".into(),
                verb: verb.into(),
                target: target.into(),
                outcome: format!("denied: {}", e.message()),
                ..Default::default()
            });
        })
    }

    fn audit(&self, r: Record) {
        if let Some(a) = &self.audit {
            a.write(r);
        }
    }

    /// Refuses what `agent` may not do: an audit line, an `agent-refused`
    /// event (who, what, which target) and the status.
    fn refuse(&self, agent: &AgentCaller, verb: &str, target: &str, why: String) -> Status {
        self.audit(Record {
            kind: "command",
            who: agent.subject.clone(),
            verb: verb.into(),
            target: target.into(),
            outcome: format!("denied: {why}"),
            ..Default::default()
        });
        self.events.emit(
            &agent.name,
            EventKind::AgentRefused,
            format!("{} may not {verb} {target}: {why}", agent.subject),
            &[
                ("who", agent.subject.clone()),
                ("verb", verb.to_owned()),
                ("target", target.to_owned()),
            ],
        );
        Status::permission_denied(format!("{} may not {verb} {target}: {why}", agent.subject))
    }

    /// `HOST/AGENT` when an agent's address names another host of its
    /// tenant (`None`: this host); another tenant is refused.
    fn elsewhere(&self, a: &AgentCaller, addr: &str) -> Result<Option<String>, Status> {
        let parsed = fleet_proto::address::Address::parse(addr)?;
        let (tenant, own) = {
            let v = self.view.borrow();
            (v.host.tenant_id.clone(), v.host.host.clone())
        };
        if parsed.tenant.as_ref().is_some_and(|t| *t != tenant) {
            return Err(self.refuse(
                a,
                "send",
                addr,
                "an agent acts within its own tenant".into(),
            ));
        }
        Ok(parsed
            .host
            .filter(|h| *h != own)
            .map(|h| format!("{h}/{}", parsed.agent)))
    }

    /// An agent's send to another host: its roster grant first, then up a
    /// link to the aggregator, which checks its own grant for the agent and
    /// relays it to the target's hostd (its one-writer queue).
    async fn send_elsewhere(
        &self,
        a: &AgentCaller,
        target: String,
        mut req: SendRequest,
    ) -> Result<SendReceipt, Status> {
        let own = self.view.borrow().host.host.clone();
        let (host, name) = target.split_once('/').unwrap_or_default();
        let tenant = self.view.borrow().host.tenant_id.clone();
        let full = format!("{tenant}/{target}");
        if !a.grants.send.admits(&own, host, name) {
            return Err(self.refuse(
                a,
                "send",
                &full,
                format!("not in may.send {:?}", a.grants.send.patterns()),
            ));
        }
        let started = std::time::Instant::now();
        let timeout = fleet_proto::waits::Waits::of(&req).total() + Duration::from_secs(15);
        if req.traceparent.is_empty() {
            req.traceparent = fleet_proto::trace::TraceParent::fresh().to_string();
        }
        let trace = trace_id(&req.traceparent);
        let bytes = req.text.len() as u64;
        req.agent = target;
        let call = fleet_proto::v1::AgentCall {
            id: 0,
            agent: a.name.clone(),
            traceparent: req.traceparent.clone(),
            deadline_unix_ms: clock::now_ms()
                .saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX)),
            op: Some(fleet_proto::v1::agent_call::Op::Send(req)),
        };
        let result = self.uplinks.call(call, timeout).await.and_then(|r| {
            use fleet_proto::v1::agent_reply::Result as R;
            match r.result {
                Some(R::Receipt(r)) => Ok(r),
                Some(R::Error(e)) => Err(Status::new(tonic::Code::from(e.code), e.message)),
                _ => Err(Status::internal(
                    "the aggregator answered a send with something else",
                )),
            }
        });
        self.audit(Record {
            kind: "command",
            who: a.subject.clone(),
            verb: "send".into(),
            target: full.clone(),
            trace_id: trace,
            outcome: match &result {
                Ok(r) => Verdict::word_of(r.verdict).to_owned(),
                Err(e) => format!("failed: {}", e.message()),
            },
            bytes: Some(bytes),
            elapsed_ms: Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
            ..Default::default()
        });
        if let Err(e) = &result
            && e.code() == tonic::Code::PermissionDenied
        {
            self.events.emit(
                &a.name,
                EventKind::AgentRefused,
                format!("{} may not send {full}: {}", a.subject, e.message()),
                &[
                    ("who", a.subject.clone()),
                    ("verb", "send".into()),
                    ("target", full),
                ],
            );
        }
        result
    }

    /// Rows of other hosts an agent may read, from the aggregator (none
    /// when its grant names no other host or no link is up).
    async fn rows_elsewhere(&self, a: &AgentCaller, selector: Option<Selector>) -> Vec<AgentRow> {
        if !a.grants.read.beyond_own_host() {
            return Vec::new();
        }
        let call = fleet_proto::v1::AgentCall {
            id: 0,
            agent: a.name.clone(),
            traceparent: String::new(),
            deadline_unix_ms: clock::now_ms() + 5_000,
            op: Some(fleet_proto::v1::agent_call::Op::List(ListAgentsRequest {
                selector,
            })),
        };
        let own = self.view.borrow().host.host.clone();
        match self.uplinks.call(call, Duration::from_secs(5)).await {
            Ok(fleet_proto::v1::AgentReply {
                result: Some(fleet_proto::v1::agent_reply::Result::Agents(l)),
                ..
            }) => l
                .agents
                .into_iter()
                .filter(|r| r.host != own && a.grants.read.admits(&own, &r.host, &r.name))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Refuses a verb no agent is given (agents read with `ListAgents` and
    /// `Events`, and act with `Send` and `NeedHuman`).
    fn operators_only<T>(&self, req: &Request<T>, verb: &str, target: &str) -> Result<(), Status> {
        match self.caller(req, verb, target)? {
            Caller::Operator => Ok(()),
            Caller::Agent(a) => Err(self.refuse(
                &a,
                verb,
                target,
                "agents are given ps, events, send and need-human only".into(),
            )),
        }
    }

    /// A verified send to `agent` (the supervisor's pokes and digests).
    pub async fn deliver_to(&self, agent: &str, text: &[u8]) -> Result<SendReceipt, Status> {
        let row = self.live_row(agent)?;
        let opts = send::Options::verified(fleet_proto::trace::TraceParent::fresh().trace_id);
        self.deliver(&row, text, opts, fleet_proto::waits::QUEUE)
            .await
    }

    /// The verified send path shared by `Send` and `Control(RESET)`.
    ///
    /// Every input waits its turn in the agent's queue (at most
    /// `queue_bound`), then reads the pane afresh: the row it was resolved
    /// from may be older than the send ahead of it.
    pub async fn deliver(
        &self,
        row: &AgentRow,
        text: &[u8],
        opts: send::Options,
        queue_bound: Duration,
    ) -> Result<SendReceipt, Status> {
        let clean = send::sanitize(text, self.send_limit)?;
        self.tmux_answers()?;
        // Dropped with the call when its caller goes away: the work stops
        // there (no more polling), and the event says so.
        let mut abandoned = Abandoned {
            events: &self.events,
            agent: &row.name,
            trace_id: &opts.trace_id,
            started: std::time::Instant::now(),
            done: false,
        };
        let result = self.deliver_queued(row, &clean, &opts, queue_bound).await;
        abandoned.done = true;
        result
    }

    /// [`deliver`](Self::deliver) once the text is clean: the queue, the
    /// send, its event.
    async fn deliver_queued(
        &self,
        row: &AgentRow,
        clean: &send::Clean,
        opts: &send::Options,
        queue_bound: Duration,
    ) -> Result<SendReceipt, Status> {
        let turn = self
            .inputs
            .acquire(&row.name, queue_bound)
            .await
            .map_err(|waited| {
                let msg = format!(
                    "{} is taking other input (its one-writer queue) and did not come free within {} ms",
                    row.name,
                    waited.as_millis()
                );
                self.events.emit(
                    &row.name,
                    EventKind::SendFailed,
                    msg.clone(),
                    &[("trace_id", opts.trace_id.clone())],
                );
                Status::resource_exhausted(msg)
            })?;
        let row = if turn.waited >= Duration::from_millis(1) {
            self.live_row(&row.name)?
        } else {
            row.clone()
        };
        let row = &row;
        let target = self.target(row);
        let mut result = send::send(&self.tmux, &target, clean, opts).await;
        if let Ok(r) = &mut result
            && turn.waited >= Duration::from_millis(5)
        {
            r.queued_ms += turn.waited.as_millis() as u64;
            r.notes.insert(
                0,
                format!(
                    "waited {} ms behind another input to {} (one writer per pane)",
                    turn.waited.as_millis(),
                    row.name
                ),
            );
        }
        drop(turn);
        match &result {
            Ok(r) => {
                let verdict = Verdict::try_from(r.verdict).map_or("unknown", |v| v.as_str_name());
                self.events.emit(
                    &row.name,
                    EventKind::Sent,
                    format!(
                        "{} bytes: {} {}",
                        r.bytes,
                        Verdict::word_of(r.verdict),
                        r.detail
                    ),
                    &[
                        ("bytes", r.bytes.to_string()),
                        ("verdict", verdict.to_owned()),
                        ("trace_id", r.trace_id.clone()),
                        ("elapsed_ms", r.elapsed_ms.to_string()),
                        ("who", opts.who.clone()),
                    ],
                );
            }
            Err(e) => {
                self.events.emit(
                    &row.name,
                    EventKind::SendFailed,
                    e.to_string(),
                    &[("trace_id", opts.trace_id.clone())],
                );
            }
        }
        Ok(result?)
    }
}

#[tonic::async_trait]
impl Fleet for FleetService {
    async fn list_agents(
        &self,
        req: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let select = Select::new(req.get_ref().selector.as_ref())?;
        let caller = self.caller(&req, "read", "")?;
        let view = self.view.borrow().clone();
        let reads = |r: &AgentRow| match &caller {
            Caller::Operator => true,
            Caller::Agent(a) => a.grants.read.admits(&view.host.host, &r.host, &r.name),
        };
        let mut agents: Vec<AgentRow> = view
            .agents
            .iter()
            .filter(|r| select.agent(r) && reads(r))
            .map(|r| AgentRow::clone(r))
            .collect();
        if let Caller::Agent(a) = &caller {
            agents.extend(self.rows_elsewhere(a, req.into_inner().selector).await);
        }
        Ok(Response::new(ListAgentsResponse {
            agents,
            generated_at_unix_ms: clock::now_ms(),
        }))
    }

    async fn list_hosts(
        &self,
        req: Request<ListHostsRequest>,
    ) -> Result<Response<ListHostsResponse>, Status> {
        let select = Select::new(req.get_ref().selector.as_ref())?;
        let view = self.view.borrow().clone();
        Ok(Response::new(ListHostsResponse {
            hosts: select
                .host_row(&view.host)
                .then(|| view.host.clone())
                .into_iter()
                .collect(),
            generated_at_unix_ms: clock::now_ms(),
        }))
    }

    async fn summarize(&self, req: Request<SummaryRequest>) -> Result<Response<Summary>, Status> {
        self.operators_only(&req, "summarize", "")?;
        let select = Select::new(req.get_ref().selector.as_ref())?;
        let view = self.view.borrow().clone();
        Ok(Response::new(fleet_proto::select::summarize(
            &select,
            [(&view.host, view.agents.iter().map(|r| &**r))],
            clock::now_ms(),
        )))
    }

    type WatchFleetStream = Streamed<FleetUpdate>;

    async fn watch_fleet(
        &self,
        req: Request<WatchFleetRequest>,
    ) -> Result<Response<Self::WatchFleetStream>, Status> {
        self.operators_only(&req, "watch-fleet", "")?;
        let select = Select::new(req.get_ref().selector.as_ref())?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let mut view = self.view.clone();
        let epoch = self.epoch;
        tokio::spawn(async move {
            // What the selector admits of a view: rows stay shared, so the
            // diff of two picks is as cheap as of two views, and a row that
            // stops matching is a removal.
            let host_in = select.host_row(&view.borrow().host);
            let pick = |v: &View| View {
                agents: if host_in {
                    v.agents
                        .iter()
                        .filter(|r| select.agent(r))
                        .cloned()
                        .collect()
                } else {
                    Vec::new()
                },
                host: v.host.clone(),
            };
            let mut frames = fleet_proto::stream::Frames::new(epoch);
            let mut prev = pick(&view.borrow_and_update());
            let hosts = if host_in {
                vec![prev.host.clone()]
            } else {
                vec![]
            };
            for first in frames.snapshot(
                &prev.agents,
                hosts,
                fleet_proto::stream::Chunk::rows(usize::MAX),
            ) {
                if tx.send(Ok(first)).await.is_err() {
                    return;
                }
            }
            // The watch channel keeps only the newest view, so a slow client
            // skips intermediate states instead of growing a queue.
            while view.changed().await.is_ok() {
                if !host_in {
                    continue;
                }
                let next = pick(&view.borrow_and_update());
                let delta = diff(&prev, &next);
                prev = next;
                let Some(delta) = delta else { continue };
                if !offer(&tx, frames.delta(delta)).await {
                    return;
                }
            }
        });
        Ok(Response::new(
            self.until_stop(Box::pin(ReceiverStream::new(rx))),
        ))
    }

    async fn send(&self, req: Request<SendRequest>) -> Result<Response<SendReceipt>, Status> {
        let caller = self.caller(&req, "send", &req.get_ref().agent)?;
        let relayed = req.extensions().get::<callers::RelayedFor>().cloned();
        let local = crate::socket::peer_uid(&req);
        let req = req.into_inner();
        if let Caller::Agent(a) = &caller
            && let Some(elsewhere) = self.elsewhere(a, &req.agent)?
        {
            return self
                .send_elsewhere(a, elsewhere, req)
                .await
                .map(Response::new);
        }
        let span = tracing::info_span!("hostd", command = "send", agent = %req.agent);
        fleet_proto::telemetry::adopt(&span, &req.traceparent);
        let _entered = span.enter();
        let row = self.live_row(&req.agent)?;
        let who = match (&caller, relayed, local) {
            (Caller::Agent(a), ..) => {
                let own = self.view.borrow().host.host.clone();
                if !a.grants.send.admits(&own, &row.host, &row.name) {
                    let granted = a.grants.send.patterns();
                    return Err(self.refuse(
                        a,
                        "send",
                        &format!("{}/{}/{}", row.tenant_id, row.host, row.name),
                        if granted.is_empty() {
                            "its roster grants it no sends (may.send)".into()
                        } else {
                            format!("not in may.send {granted:?}")
                        },
                    ));
                }
                a.subject.clone()
            }
            (Caller::Operator, Some(r), _) => r.0,
            (Caller::Operator, None, Some(uid)) => crate::socket::local_operator(uid),
            (Caller::Operator, None, None) => String::new(),
        };
        let waits = fleet_proto::waits::Waits::of(&req);
        let queue = waits.queue;
        let opts = send::Options {
            verify: req.verify,
            verify_timeout: waits.verify,
            no_enter: req.no_enter,
            when_idle: waits.when_idle,
            strict: req.strict,
            trace_id: trace_id(&req.traceparent),
            clear_draft: req.clear_draft,
            ready_timeout: queue,
            who: who.clone(),
        };
        drop(_entered);
        let started = std::time::Instant::now();
        let result = self
            .deliver(&row, &req.text, opts, queue)
            .instrument(span)
            .await;
        if let Caller::Agent(_) = caller {
            self.audit(Record {
                kind: "command",
                who,
                verb: "send".into(),
                target: format!("{}/{}/{}", row.tenant_id, row.host, row.name),
                trace_id: trace_id(&req.traceparent),
                outcome: match &result {
                    Ok(r) => Verdict::word_of(r.verdict).to_owned(),
                    Err(e) => format!("failed: {}", e.message()),
                },
                bytes: Some(req.text.len() as u64),
                elapsed_ms: Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
                ..Default::default()
            });
        }
        Ok(Response::new(result?))
    }

    type WatchScreenStream = Streamed<ScreenFrame>;

    async fn watch_screen(
        &self,
        req: Request<WatchScreenRequest>,
    ) -> Result<Response<Self::WatchScreenStream>, Status> {
        self.operators_only(&req, "watch-screen", &req.get_ref().agent)?;
        let req = req.into_inner();
        let view = self.view.borrow().clone();
        let row = address::resolve(&view.agents, &req.agent)?.clone();
        if row.pane_id.is_empty() {
            return Err(Status::failed_precondition(format!(
                "{} has no tmux session",
                row.name
            )));
        }
        self.tmux_answers()?;
        let fps = if req.max_fps == 0 {
            10
        } else {
            req.max_fps.min(60)
        };
        let min_gap = Duration::from_millis(1000 / u64::from(fps));
        let tmux = self.tmux.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut seq = 0u64;
            let mut last: Option<(Vec<String>, u32, u32, bool)> = None;
            let mut last_sent = tokio::time::Instant::now() - min_gap;
            loop {
                let snap = match crate::screen::snapshot(&tmux, &row.pane_id, req.colours).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::not_found(format!("{} is gone: {e}", row.name))))
                            .await;
                        return;
                    }
                };
                let key = (snap.lines.clone(), snap.cursor_x, snap.cursor_y, snap.dead);
                if last.as_ref() != Some(&key) {
                    let wait = min_gap.saturating_sub(last_sent.elapsed());
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    seq += 1;
                    let frame = ScreenFrame {
                        tenant_id: row.tenant_id.clone(),
                        host: row.host.clone(),
                        agent: row.name.clone(),
                        seq,
                        ts_unix_ms: clock::now_ms(),
                        lines: snap.lines,
                        cursor_x: snap.cursor_x,
                        cursor_y: snap.cursor_y,
                        width: snap.width,
                        height: snap.height,
                        alternate_screen: snap.alternate_on,
                        dead: snap.dead,
                    };
                    if tx.send(Ok(frame)).await.is_err() || req.once {
                        return;
                    }
                    last = Some(key);
                    last_sent = tokio::time::Instant::now();
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        });
        Ok(Response::new(
            self.until_stop(Box::pin(ReceiverStream::new(rx))),
        ))
    }

    async fn control(
        &self,
        req: Request<ControlRequest>,
    ) -> Result<Response<ControlResult>, Status> {
        self.operators_only(&req, "control", &req.get_ref().agent)?;
        // On the local socket the caller is the peer's uid, whatever the
        // request says; only a relayed command (no socket peer: the
        // aggregator verified its operator) keeps its `operator`.
        let local = crate::socket::peer_uid(&req);
        let mut req = req.into_inner();
        if let Some(uid) = local {
            req.operator = crate::socket::local_operator(uid);
        }
        let action = ControlAction::try_from(req.action)
            .ok()
            .filter(|a| *a != ControlAction::Unspecified)
            .ok_or_else(|| Status::invalid_argument("unknown control action"))?;
        let span = tracing::info_span!("hostd", command = action.as_str_name(), agent = %req.agent);
        fleet_proto::telemetry::adopt(&span, &req.traceparent);
        self.control_in(req, action).instrument(span).await
    }

    type EventsStream = Streamed<Event>;

    async fn events(
        &self,
        req: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let reads = match self.caller(&req, "events", &req.get_ref().agent)? {
            Caller::Operator => None,
            Caller::Agent(a) => Some((a.grants.read, self.view.borrow().host.host.clone())),
        };
        self.events_stream(req.into_inner(), reads).await
    }

    async fn need_human(
        &self,
        req: Request<NeedHumanRequest>,
    ) -> Result<Response<NeedHumanReply>, Status> {
        let Caller::Agent(a) = self.caller(&req, "need-human", "")? else {
            return Err(Status::failed_precondition(
                "need-human is raised by an agent (`fleetctl mcp` in its pane); an operator is the human",
            ));
        };
        if !a.grants.need_human {
            return Err(self.refuse(
                &a,
                "need-human",
                "",
                "its roster sets may.need_human: false".into(),
            ));
        }
        let req = req.into_inner();
        let text = send::sanitize(req.text.as_bytes(), NEED_HUMAN_MAX)?
            .text
            .replace(['\n', '\t'], " ");
        let first_mate = self.roster.borrow().supervision.first_mate.clone();
        let event = self.events.emit(
            &a.name,
            EventKind::NeedHuman,
            format!("{} asks for a human: {text}", a.name),
            &[
                ("who", a.subject.clone()),
                ("text", text.clone()),
                ("trace_id", trace_id(&req.traceparent)),
            ],
        );
        self.audit(Record {
            kind: "command",
            who: a.subject.clone(),
            verb: "need-human".into(),
            target: a.subject.clone(),
            trace_id: trace_id(&req.traceparent),
            outcome: "raised".into(),
            bytes: Some(text.len() as u64),
            ..Default::default()
        });
        Ok(Response::new(NeedHumanReply {
            event_seq: event.seq,
            first_mate: first_mate.is_some_and(|m| m != a.name),
        }))
    }
}

impl FleetService {
    async fn control_in(
        &self,
        req: ControlRequest,
        action: ControlAction,
    ) -> Result<Response<ControlResult>, Status> {
        let view = self.view.borrow().clone();
        let row = address::resolve(&view.agents, &req.agent)?.clone();
        let operator = if req.operator.is_empty() {
            "local".to_owned()
        } else {
            req.operator.clone()
        };
        if action == ControlAction::Reset {
            let roster = self.roster.borrow().clone();
            let reset = roster
                .agent(&row.name)
                .and_then(|s| s.reset_command.clone())
                .ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "{} has no reset_command (set runtimes.{}.reset_command in the roster)",
                        row.name, row.runtime
                    ))
                })?;
            let row = self.live_row(&row.name)?;
            // A reset empties whatever the box holds first.
            let opts = send::Options {
                clear_draft: true,
                ..send::Options::verified(trace_id(&req.traceparent))
            };
            let receipt = self
                .deliver(&row, reset.as_bytes(), opts, fleet_proto::waits::QUEUE)
                .await?;
            let outcome = format!("sent {reset:?}: {}", Verdict::word_of(receipt.verdict));
            self.events.emit(
                &row.name,
                EventKind::Reset,
                format!("{outcome} (by {operator})"),
                &[("operator", operator)],
            );
            return Ok(Response::new(ControlResult {
                tenant_id: row.tenant_id,
                host: row.host,
                agent: row.name,
                action: action as i32,
                outcome,
                receipt: Some(receipt),
                ..Default::default()
            }));
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.commands
            .send(Command::Control {
                action,
                agent: row.name.clone(),
                operator,
                reply,
            })
            .await
            .map_err(|_| Status::unavailable("hostd is shutting down"))?;
        let outcome = rx
            .await
            .map_err(|_| Status::unavailable("hostd is shutting down"))?
            .map_err(|e| e.status())?;
        Ok(Response::new(ControlResult {
            tenant_id: row.tenant_id,
            host: row.host,
            agent: row.name.clone(),
            action: action as i32,
            outcome,
            receipt: None,
            tmux_socket: self.tmux.socket().to_owned(),
            tmux_target: crate::tmux::exact(&row.name),
        }))
    }

    /// The events `req` selects; for an agent (`reads`: its grant and its
    /// host), only those about agents it may read, and the host's own.
    async fn events_stream(
        &self,
        req: EventsRequest,
        reads: Option<(fleet_proto::reach::Reach, String)>,
    ) -> Result<Response<Streamed<Event>>, Status> {
        let filter = fleet_proto::stream::EventFilter::new(&req)?;
        let (mut backlog, live) = self.events.subscribe(req.after_seq);
        // Older than memory: the history first (the filters below apply
        // to it alike).
        fleet_store::prepend_older(self.history.as_ref(), &req, &mut backlog)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let follow = req.follow && req.until_unix_ms <= 0;
        let wanted = move |e: &Event| {
            filter.matches(e)
                && reads.as_ref().is_none_or(|(reach, own)| {
                    e.agent.is_empty() || reach.admits(own, &e.host, &e.agent)
                })
        };
        Ok(Response::new(self.until_stop(fleet_proto::stream::events(
            backlog, live, follow, wanted,
        ))))
    }

    fn until_stop<T: Send + 'static>(&self, s: Streamed<T>) -> Streamed<T> {
        fleet_proto::stream::until_shutdown(s, self.shutdown.clone(), STOPPING)
    }
}

/// Rows that changed or vanished between two views; `None` when nothing did.
pub fn diff(prev: &View, next: &View) -> Option<Delta> {
    fleet_proto::stream::diff((&prev.agents, &prev.host), (&next.agents, &next.host))
}
