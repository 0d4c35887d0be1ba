//! hostd's side of `HostLink`: one task per configured aggregator dials out,
//! says Hello, sends a snapshot of the table and then its changes and
//! events, answers relayed commands through the same code the local socket
//! uses, and reconnects with capped, fully jittered exponential backoff.
//! Nothing here touches the agents: losing an aggregator only stops the
//! stream.

use fleet_proto::v1::EventKind;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fleet_net::backoff::Backoff;
use fleet_net::transport::{self as net, Dial};
use fleet_proto::events::EventLog;
use fleet_proto::stream::Frames;
use fleet_proto::v1::fleet_server::Fleet;
use fleet_proto::v1::host_link_client::HostLinkClient;
use fleet_proto::v1::{
    AgentCall, AgentReply, AggregatorMessage, Command, CommandError, CommandResult, FleetUpdate,
    Hello, HostMessage, LinkBeat, aggregator_message, command, command_result, host_message,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use crate::clock;
use crate::service::{FleetService, diff};
use crate::table::View;

/// How a snapshot is cut into messages: the aggregator's decode buffer
/// for this stream grows to the largest message and keeps that size for
/// the stream's life, so messages stay small (a 50-agent host's snapshot
/// is about four), and a big host's is cut by rows too.
pub const SNAPSHOT_CHUNK: fleet_proto::stream::Chunk = fleet_proto::stream::Chunk {
    rows: 2_000,
    bytes: 8 * 1024,
};
/// Backoff bounds (full jitter: each wait is uniform in [0, cap]).
pub const BACKOFF_FIRST: Duration = Duration::from_millis(500);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// HostLink protocol version this hostd speaks.
pub const PROTOCOL: u32 = 1;

/// Everything one link needs from hostd.
#[derive(Clone)]
pub struct Source {
    pub hello: Hello,
    pub view: watch::Receiver<Arc<View>>,
    pub events: EventLog,
    /// Answers relayed commands; `None` refuses them (load generators).
    pub service: Option<FleetService>,
    /// Where the link's state goes (the table, for `hosts`).
    pub report: Option<mpsc::Sender<crate::table::Command>>,
    /// The shortest wait after the aggregator refused this hostd.
    pub refused_retry: Duration,
    /// Where this link offers itself for agent calls while it is up.
    pub uplinks: Option<Uplinks>,
}

/// One agent call and where its answer goes.
type PendingCall = (AgentCall, oneshot::Sender<AgentReply>);

/// The links that can carry this host's agents' calls to other hosts
/// (`fleetctl mcp` → hostd → an aggregator): each session registers while
/// it is up; a call takes the first.
#[derive(Clone, Default, Debug)]
pub struct Uplinks(Arc<std::sync::Mutex<Vec<Offer>>>);

/// One live session's way in, by its registration id.
type Offer = (u64, mpsc::Sender<PendingCall>);

/// A session's registration, withdrawn when the session ends.
struct Offered {
    uplinks: Uplinks,
    id: u64,
}

impl Drop for Offered {
    fn drop(&mut self) {
        self.uplinks.lock().retain(|(i, _)| *i != self.id);
    }
}

impl Uplinks {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Offer>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn offer(&self, tx: mpsc::Sender<PendingCall>) -> Offered {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().push((id, tx));
        Offered {
            uplinks: self.clone(),
            id,
        }
    }

    /// Sends `call` up a link and waits (at most `timeout`) for the answer.
    pub async fn call(&self, call: AgentCall, timeout: Duration) -> Result<AgentReply, Status> {
        let down = || {
            Status::unavailable(
                "no aggregator link is up: other hosts' agents cannot be reached now",
            )
        };
        let tx = self
            .lock()
            .iter()
            .find(|(_, tx)| !tx.is_closed())
            .map(|(_, tx)| tx.clone())
            .ok_or_else(down)?;
        let (answer, rx) = oneshot::channel();
        tx.send_timeout((call, answer), timeout)
            .await
            .map_err(|_| down())?;
        tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| Status::deadline_exceeded("the aggregator did not answer in time"))?
            .map_err(|_| Status::unavailable("the aggregator link went down before it answered"))
    }
}

impl Source {
    /// Tells the table this link's state (never waits: a full queue only
    /// delays the report to the next change).
    fn report(&self, address: &str, state: &str, error: &str) {
        if let Some(tx) = &self.report {
            let _ = tx.try_send(crate::table::Command::Uplink(fleet_proto::v1::Uplink {
                address: address.to_owned(),
                state: state.to_owned(),
                error: error.to_owned(),
                since_unix_ms: clock::now_ms(),
            }));
        }
    }
}

/// The links' schedule: from `BACKOFF_FIRST` doubling to `BACKOFF_MAX`,
/// full jitter (a fleet of hostds never retries in lockstep).
pub const LINK_BACKOFF: Backoff = Backoff::fixed(BACKOFF_FIRST, BACKOFF_MAX, 1.0);

/// The wait before attempt `n` (0-based): uniform in [0, min(max, first·2ⁿ)].
pub fn backoff(n: u32) -> Duration {
    LINK_BACKOFF.delay(n)
}

/// Runs the link to one aggregator until `shutdown`.
pub async fn run(dial: Dial, source: Source, mut shutdown: watch::Receiver<bool>) {
    let mut channel = match net::channel(&dial, Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(aggregator = %dial.address, error = %e, "cannot link");
            return;
        }
    };
    let mut attempt = 0u32;
    let mut wait = backoff(0);
    // The refusal last reported (once, until the link comes up again).
    let mut refused: Option<String> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let started = tokio::time::Instant::now();
        source.report(&dial.address, "connecting", "");
        let outcome = tokio::select! {
            r = session(channel.clone(), &source, &dial.address, &mut refused) => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match &outcome {
            Ok(()) => tracing::info!(aggregator = %dial.address, "link closed by the aggregator"),
            Err(e) => tracing::warn!(aggregator = %dial.address, error = %e, "link down"),
        }
        match outcome {
            Err(Down::Refused(why)) => {
                source.report(&dial.address, "refused", &why);
                if refused.as_deref() != Some(&why) {
                    source.events.emit(
                        "",
                        EventKind::UplinkRefused,
                        format!(
                            "aggregator {} refused this hostd ({why}); trying again every {:?} or so until its certificate or grant is fixed",
                            dial.address, source.refused_retry
                        ),
                        &[("aggregator", dial.address.clone())],
                    );
                    refused = Some(why);
                }
                wait = refused_backoff(source.refused_retry);
                // A fresh connection next time: the refused one carries the
                // old certificate, and a fixed one must be presented anew.
                if let Ok(c) = net::channel(&dial, Duration::from_secs(5)) {
                    channel = c;
                }
            }
            other => {
                let why = other
                    .err()
                    .map_or_else(|| "closed by the aggregator".into(), |e| e.to_string());
                source.report(&dial.address, "retrying", &why);
                // A link that stayed up a while starts the backoff over.
                attempt = if started.elapsed() > BACKOFF_MAX {
                    0
                } else {
                    attempt.saturating_add(1)
                };
                wait = backoff(attempt);
            }
        }
    }
}

fn up(u: FleetUpdate) -> HostMessage {
    HostMessage {
        msg: Some(host_message::Msg::Update(u)),
    }
}

async fn send_snapshot(
    tx: &mpsc::Sender<HostMessage>,
    frames: &mut Frames,
    view: &View,
) -> Result<(), String> {
    for u in frames.snapshot(&view.agents, vec![view.host.clone()], SNAPSHOT_CHUNK) {
        tx.send(up(u))
            .await
            .map_err(|_| "stream closed".to_owned())?;
    }
    Ok(())
}

/// Sends what changed in `view` since `prev` as one delta.
async fn send_changes(
    view: &mut watch::Receiver<Arc<View>>,
    prev: &mut Arc<View>,
    tx: &mpsc::Sender<HostMessage>,
    frames: &mut Frames,
) -> Result<(), String> {
    let next = view.borrow_and_update().clone();
    if let Some(d) = diff(prev, &next) {
        tx.send(up(frames.delta(d)))
            .await
            .map_err(|_| "stream closed".to_owned())?;
    }
    *prev = next;
    Ok(())
}

/// One connected session: returns when the stream ends.
async fn session(
    channel: tonic::transport::Channel,
    source: &Source,
    address: &str,
    refused: &mut Option<String>,
) -> Result<(), Down> {
    let mut client = HostLinkClient::new(channel)
        .max_decoding_message_size(crate::MAX_DECODE)
        .max_encoding_message_size(crate::MAX_ENCODE);
    let (up, up_rx) = mpsc::channel::<HostMessage>(1024);
    up.send(HostMessage {
        msg: Some(host_message::Msg::Hello(source.hello.clone())),
    })
    .await
    .map_err(|_| "stream closed".to_owned())?;
    let mut down = client
        .attach(ReceiverStream::new(up_rx))
        .await
        .map_err(Down::of)?
        .into_inner();
    let welcome = match down.next().await {
        Some(Ok(AggregatorMessage {
            msg: Some(aggregator_message::Msg::Welcome(w)),
        })) => w,
        Some(Ok(_)) => {
            return Err("the aggregator did not start with Welcome"
                .to_owned()
                .into());
        }
        Some(Err(s)) => return Err(Down::of(s)),
        None => return Err("closed before Welcome".to_owned().into()),
    };
    tracing::info!(lease_ms = welcome.lease_ms, "linked");
    source.report(address, "connected", "");
    if let Some(was) = refused.take() {
        source.events.emit(
            "",
            EventKind::UplinkRecovered,
            format!("aggregator {address} accepts this hostd again (was: {was})"),
            &[("aggregator", address.to_owned())],
        );
    }
    let mut frames = Frames::new(source.hello.boot_epoch);
    let mut view = source.view.clone();
    let mut prev = view.borrow_and_update().clone();
    send_snapshot(&up, &mut frames, &prev).await?;
    // An earlier run's events were forwarded by that run (under its boot
    // epoch): only this run's go up.
    let after = welcome.events_after.max(source.events.resumed_after());
    let (backlog, mut live) = source.events.subscribe(after);
    for e in backlog {
        up.send(HostMessage {
            msg: Some(host_message::Msg::Event(e)),
        })
        .await
        .map_err(|_| "stream closed".to_owned())?;
    }
    let beat_every = Duration::from_millis(u64::from(welcome.beat_interval_ms.clamp(100, 60_000)));
    let mut beat = tokio::time::interval(beat_every);
    let mut running: HashMap<u64, AbortHandle> = HashMap::new();
    // Command answers pass through this loop (see below).
    let (results_tx, mut results_rx) = mpsc::channel::<HostMessage>(256);
    // Agent calls go up this session while it lasts.
    let (calls_tx, mut calls_rx) = mpsc::channel::<PendingCall>(16);
    let _offered = source.uplinks.as_ref().map(|u| u.offer(calls_tx));
    let mut awaiting: HashMap<u64, oneshot::Sender<AgentReply>> = HashMap::new();
    let mut next_call: u64 = 0;
    let closed = |_| "stream closed".to_owned();
    loop {
        tokio::select! {
            changed = view.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                send_changes(&mut view, &mut prev, &up, &mut frames).await?;
            }
            Some((mut call, answer)) = calls_rx.recv() => {
                next_call += 1;
                call.id = next_call;
                awaiting.retain(|_, a| !a.is_closed());
                awaiting.insert(next_call, answer);
                up.send(HostMessage { msg: Some(host_message::Msg::AgentCall(call)) }).await.map_err(closed)?;
            }
            Some(r) = results_rx.recv() => {
                // The change a command made goes up before its answer, so the
                // operator's next read already shows it.
                if view.has_changed().unwrap_or(false) {
                    send_changes(&mut view, &mut prev, &up, &mut frames).await?;
                }
                up.send(r).await.map_err(closed)?;
            }
            e = live.recv() => match e {
                Ok(e) => {
                    tracing::debug!(seq = e.seq, kind = %e.kind, "event up");
                    up.send(HostMessage { msg: Some(host_message::Msg::Event(e)) }).await.map_err(closed)?;
                }
                Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!(n, "events skipped on the link"),
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = beat.tick() => {
                up.send(HostMessage { msg: Some(host_message::Msg::Beat(LinkBeat { ts_unix_ms: clock::now_ms() })) }).await.map_err(closed)?;
            }
            m = down.next() => {
                let m = match m {
                    None => return Ok(()),
                    Some(Err(s)) => return Err(Down::of(s)),
                    Some(Ok(AggregatorMessage { msg: None })) => continue,
                    Some(Ok(AggregatorMessage { msg: Some(m) })) => m,
                };
                match m {
                    aggregator_message::Msg::Command(c) => {
                        running.retain(|_, h| !h.is_finished());
                        let id = c.id;
                        let h = tokio::spawn(execute(source.service.clone(), c, results_tx.clone()));
                        running.insert(id, h.abort_handle());
                    }
                    aggregator_message::Msg::Cancel(c) => {
                        if let Some(h) = running.remove(&c.id) {
                            h.abort();
                        }
                    }
                    aggregator_message::Msg::Resync(r) => {
                        tracing::info!(reason = %r.reason, "aggregator asked for a snapshot");
                        prev = view.borrow_and_update().clone();
                        send_snapshot(&up, &mut frames, &prev).await?;
                    }
                    aggregator_message::Msg::AgentReply(r) => {
                        if let Some(answer) = awaiting.remove(&r.id) {
                            let _ = answer.send(r);
                        }
                    }
                    aggregator_message::Msg::Welcome(_) => {}
                }
            }
        }
    }
}

/// Why a link went down, and how soon to try again.
#[derive(Debug)]
enum Down {
    /// The aggregator refused this hostd (its certificate, or a grant):
    /// trying again soon changes nothing.
    Refused(String),
    /// Anything else (the network, a restart, a duplicate still live).
    Lost(String),
}

impl Down {
    fn of(s: Status) -> Self {
        let text = format!("{:?}: {}", s.code(), s.message());
        match s.code() {
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => Down::Refused(text),
            _ => Down::Lost(text),
        }
    }
}

impl From<String> for Down {
    fn from(s: String) -> Self {
        Down::Lost(s)
    }
}

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Down::Refused(s) | Down::Lost(s) => f.write_str(s),
        }
    }
}

/// The wait after a refusal: `first` to twice that (30–60 s by default),
/// so a fixed certificate or grant is found soon, without hammering the
/// aggregator meanwhile.
pub fn refused_backoff(first: Duration) -> Duration {
    first.mul_f64(1.0 + rand::random::<f64>())
}

fn error_result(id: u64, s: &Status) -> CommandResult {
    CommandResult {
        id,
        result: Some(command_result::Result::Error(CommandError {
            code: s.code() as i32,
            message: s.message().to_owned(),
        })),
    }
}

fn answer(id: u64, r: Result<command_result::Result, Status>) -> CommandResult {
    match r {
        Ok(x) => CommandResult {
            id,
            result: Some(x),
        },
        Err(s) => error_result(id, &s),
    }
}

/// `f`, cut off at the command's deadline.
async fn within<T>(
    left: Option<Duration>,
    f: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match left {
        Some(d) => tokio::time::timeout(d, f)
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("deadline passed on the host"))),
        None => f.await,
    }
}

/// How long a relayed command may run: none for no deadline (0 or less),
/// an error when it has passed, never more than `MAX_WAIT` whatever the
/// peer sent.
fn time_left(deadline_unix_ms: i64, now_ms: i64) -> Result<Option<Duration>, ()> {
    if deadline_unix_ms <= 0 {
        return Ok(None);
    }
    let ms = deadline_unix_ms.saturating_sub(now_ms);
    if ms <= 0 {
        return Err(());
    }
    Ok(Some(
        Duration::from_millis(ms.unsigned_abs()).min(fleet_proto::waits::MAX_WAIT),
    ))
}

/// Runs one relayed command with the local service and sends its result(s).
async fn execute(svc: Option<FleetService>, c: Command, up: mpsc::Sender<HostMessage>) {
    let id = c.id;
    let send = |r: CommandResult| {
        let up = up.clone();
        async move {
            up.send(HostMessage {
                msg: Some(host_message::Msg::Result(r)),
            })
            .await
            .is_ok()
        }
    };
    let left = match time_left(c.deadline_unix_ms, clock::now_ms()) {
        Ok(left) => left,
        Err(()) => {
            send(error_result(
                id,
                &Status::deadline_exceeded("the command arrived after its deadline"),
            ))
            .await;
            return;
        }
    };
    tracing::debug!(id, operator = %c.operator, traceparent = %c.traceparent, "relayed command");
    let Some(svc) = svc else {
        send(error_result(
            id,
            &Status::unimplemented("this link takes no commands"),
        ))
        .await;
        return;
    };
    match c.op {
        Some(command::Op::Send(mut req)) => {
            if req.traceparent.is_empty() {
                req.traceparent.clone_from(&c.traceparent);
            }
            let mut r = Request::new(req);
            r.extensions_mut()
                .insert(crate::callers::RelayedFor(c.operator.clone()));
            let r = svc.send(r);
            let r = within(left, async {
                r.await
                    .map(|r| command_result::Result::Receipt(r.into_inner()))
            });
            send(answer(id, r.await)).await;
        }
        Some(command::Op::Control(mut req)) => {
            req.operator.clone_from(&c.operator);
            if req.traceparent.is_empty() {
                req.traceparent.clone_from(&c.traceparent);
            }
            let r = svc.control(Request::new(req));
            let r = within(left, async {
                r.await
                    .map(|r| command_result::Result::Control(r.into_inner()))
            });
            send(answer(id, r.await)).await;
        }
        Some(command::Op::WatchScreen(req)) => {
            let mut frames = match svc.watch_screen(Request::new(req)).await {
                Ok(s) => s.into_inner(),
                Err(s) => {
                    send(error_result(id, &s)).await;
                    return;
                }
            };
            while let Some(f) = frames.next().await {
                let r = match f {
                    Ok(f) => CommandResult {
                        id,
                        result: Some(command_result::Result::Frame(f)),
                    },
                    Err(s) => {
                        send(error_result(id, &s)).await;
                        return;
                    }
                };
                if !send(r).await {
                    return;
                }
            }
            send(CommandResult {
                id,
                result: Some(command_result::Result::Done(true)),
            })
            .await;
        }
        None => {
            send(error_result(id, &Status::invalid_argument("empty command"))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_supplied_deadline_is_clamped_and_never_overflows() {
        let max = fleet_proto::waits::MAX_WAIT;
        assert_eq!(time_left(0, 1_000), Ok(None));
        assert_eq!(time_left(i64::MIN, 1_000), Ok(None));
        assert_eq!(time_left(i64::MAX, 1_000), Ok(Some(max)));
        assert_eq!(time_left(i64::MAX, i64::MIN + 1), Ok(Some(max)));
        assert_eq!(
            time_left(1_500, 1_000),
            Ok(Some(Duration::from_millis(500)))
        );
        assert_eq!(time_left(1_000, 1_000), Err(()));
        assert_eq!(time_left(1, i64::MAX), Err(()));
    }

    #[test]
    fn backoff_is_fully_jittered_and_capped() {
        for n in 0..40 {
            let cap = BACKOFF_FIRST
                .saturating_mul(1u32 << n.min(16))
                .min(BACKOFF_MAX);
            for _ in 0..50 {
                assert!(backoff(n) <= cap, "attempt {n}");
            }
        }
        // Even the first attempt waits a random part of 0.5 s, so a
        // restarted aggregator is not met by every host at once.
        let first: Vec<Duration> = (0..200).map(|_| backoff(0)).collect();
        assert!(first.iter().any(|d| *d < Duration::from_millis(150)));
        assert!(first.iter().any(|d| *d > Duration::from_millis(350)));
        assert!(
            (0..200)
                .map(|_| backoff(30))
                .any(|d| d > Duration::from_secs(15))
        );
    }
}
