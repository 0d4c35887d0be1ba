//! The merged view: tenants × hosts × agents, fed by every host link and
//! read by every operator.
//!
//! Hosts are split over shards by their key; each shard is one owner task
//! fed by a bounded command channel (tokio-console's aggregator, times the
//! cores). After every batch of commands a shard publishes an immutable
//! snapshot — persistent maps, so a publish costs what changed, not the
//! fleet — and the batch's changes, once, on a broadcast channel operator
//! streams read at their own pace (one that falls too far behind is shed
//! and resyncs). Readers clone a snapshot and never stop ingest.
//!
//! **Architecture Invariant:** only a shard task writes its hosts; nothing
//! in the view is behind a lock.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fleet_proto::clock;
use fleet_proto::events::EventLog;
use fleet_proto::select::Select;
use fleet_proto::v1::{
    AgentFlag, AgentKey, AgentRow, CommandResult, Delta, Event, EventKind, FleetUpdate, Health,
    Hello, HostFlag, HostRow, fleet_update,
};
use imbl::{HashMap as PMap, OrdMap};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::audit::{Audit, Record};
use crate::route::Route;
use fleet_proto::vocab::Flagged;

/// `(tenant, host)`.
pub type HostKey = (String, String);

/// A host's `link` while its stream is lost.
pub const UNREACHABLE: &str = "unreachable";
/// A host's `link` while its stream is live.
pub const CONNECTED: &str = "connected";

/// Most agent rows one host may hold, pending snapshot included.
pub const MAX_HOST_ROWS: usize = 100_000;
/// Most bytes (encoded rows) one pending snapshot may hold.
pub const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;

/// Commands a shard takes per batch (one publish each).
const BATCH: usize = 512;
/// Queued commands per shard before links wait (their hosts then wait on
/// TCP: backpressure, never memory).
const QUEUE: usize = 8192;
/// Published batches kept for operator streams that lag (at one per
/// `PUBLISH_EVERY` per shard: seconds of slack).
const CHANGES: usize = 4096;
/// A shard publishes at most this often (a command's final result is
/// handed over after a publish at once): readers see a change this much
/// later at worst, and a busy shard's publishes cost a fraction of ingest.
const PUBLISH_EVERY: Duration = Duration::from_millis(2);

// === published values ===

/// One host as published: cheap to clone (shared rows).
#[derive(Clone, Debug)]
pub struct Host {
    /// The row as it last changed (its `last_seen_unix_ms` is then).
    pub row: Arc<HostRow>,
    /// When anything was last heard from the host: kept beside the row so
    /// that an update which changes nothing else does not copy the row.
    pub last_seen_unix_ms: i64,
    /// Keys shared with the rows' names: a map node copied on write copies
    /// counts, not strings.
    pub agents: OrdMap<Arc<str>, Arc<AgentRow>>,
    /// Its live stream (none: unreachable).
    pub route: Option<Route>,
}

impl Host {
    /// The host's row as a reader sees it, last seen included.
    pub fn to_row(&self) -> HostRow {
        let mut row = HostRow::clone(&self.row);
        row.last_seen_unix_ms = self.last_seen_unix_ms;
        row
    }
}

/// One shard's hosts at one version.
#[derive(Clone, Debug, Default)]
pub struct ShardSnapshot {
    pub version: u64,
    /// Keys and values behind one pointer each: a publish copies a few
    /// map nodes, and a node's entries are then two counts each to copy.
    pub hosts: PMap<Arc<HostKey>, Arc<Host>>,
}

/// What changed about one host in one batch.
#[derive(Debug)]
pub struct Change {
    /// The host's (tenant, host).
    pub key: Arc<HostKey>,
    pub upserts: Vec<Arc<AgentRow>>,
    pub removals: Vec<AgentKey>,
    pub host: Option<Arc<HostRow>>,
}

/// One shard's batch of changes, at the version its snapshot took.
#[derive(Debug)]
pub struct Batch {
    pub shard: usize,
    pub version: u64,
    pub changes: Vec<Change>,
}

/// Every shard's snapshot, taken together: what a reader sees.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub shards: Vec<Arc<ShardSnapshot>>,
}

impl Snapshot {
    /// Every host of the tenants `visible` admits.
    pub fn hosts<'a>(
        &'a self,
        visible: &'a dyn Fn(&str) -> bool,
    ) -> impl Iterator<Item = &'a Host> {
        self.shards
            .iter()
            .flat_map(|s| s.hosts.iter())
            .filter(move |(k, _)| visible(&k.0))
            .map(|(_, h)| &**h)
    }

    /// Every agent row of the tenants `visible` admits.
    pub fn agents(&self, visible: &dyn Fn(&str) -> bool) -> Vec<AgentRow> {
        self.hosts(visible)
            .flat_map(|h| h.agents.values().map(|r| AgentRow::clone(r)))
            .collect()
    }

    /// The agent rows `select` admits, of the tenants `visible` admits
    /// (only those rows are copied).
    pub fn selected(&self, visible: &dyn Fn(&str) -> bool, select: &Select) -> Vec<AgentRow> {
        self.hosts(visible)
            .filter(|h| select.host_row(&h.row))
            .flat_map(|h| {
                h.agents
                    .values()
                    .filter(|r| select.agent(r))
                    .map(|r| AgentRow::clone(r))
            })
            .collect()
    }

    pub fn host(&self, key: &HostKey) -> Option<&Host> {
        self.shards
            .iter()
            .find_map(|s| s.hosts.get(key).map(|h| &**h))
    }

    /// The version each shard's snapshot is at (a subscriber skips the
    /// batches it already holds).
    pub fn versions(&self) -> Vec<u64> {
        self.shards.iter().map(|s| s.version).collect()
    }
}

/// Why a command cannot be routed to a host.
#[derive(Debug, thiserror::Error)]
pub enum NoRoute {
    #[error("host {}/{} is unreachable (last seen {}); nothing was sent", .0.0, .0.1, ago(*.1))]
    Unreachable(HostKey, i64),
    #[error("no host {}/{} is known", .0.0, .0.1)]
    Unknown(HostKey),
}

impl From<NoRoute> for tonic::Status {
    fn from(e: NoRoute) -> Self {
        match e {
            NoRoute::Unreachable(..) => tonic::Status::unavailable(e.to_string()),
            NoRoute::Unknown(_) => tonic::Status::not_found(e.to_string()),
        }
    }
}

// === the handle ===

/// Counters for stats, metrics and benchmarks.
#[derive(Debug, Default)]
pub struct Counters {
    /// Updates (snapshot chunks and deltas) applied.
    pub applied: AtomicU64,
    /// Rows in them.
    pub applied_rows: AtomicU64,
    /// Host streams taken (a hostd linked).
    pub links_up: AtomicU64,
    /// Host streams that ended.
    pub links_lost: AtomicU64,
    /// Hosts silent past their lease (their streams ended).
    pub leases_expired: AtomicU64,
}

/// The merged view, as links and operators hold it.
#[derive(Clone)]
pub struct View {
    shards: Arc<[ShardHandle]>,
    changes: broadcast::Sender<Arc<Batch>>,
    pub events: EventLog,
    /// Random per aggregator start (the `epoch` of its WatchFleet streams).
    pub epoch: u64,
    pub name: Arc<str>,
    pub lease: Duration,
    next_link: Arc<AtomicU64>,
    pub counters: Arc<Counters>,
    hasher: std::hash::RandomState,
}

struct ShardHandle {
    tx: mpsc::Sender<Cmd>,
    snapshot: watch::Receiver<Arc<ShardSnapshot>>,
}

/// What a shard is asked to do.
/// Why a host's stream was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// Another hostd with the same identity is live (the sentence says
    /// which boot epochs).
    #[error("{0}")]
    Duplicate(String),
    #[error("the aggregator is stopping")]
    Stopping,
}

impl From<AttachError> for tonic::Status {
    fn from(e: AttachError) -> Self {
        match e {
            AttachError::Duplicate(_) => tonic::Status::already_exists(e.to_string()),
            AttachError::Stopping => tonic::Status::unavailable(e.to_string()),
        }
    }
}

enum Cmd {
    Attach {
        hello: Box<Hello>,
        route: Route,
        who: String,
        reply: oneshot::Sender<Result<u64, AttachError>>,
    },
    Apply {
        key: Arc<HostKey>,
        link: u64,
        update: FleetUpdate,
    },
    Heard {
        key: Arc<HostKey>,
        link: u64,
    },
    Event {
        key: Arc<HostKey>,
        link: u64,
        event: Box<Event>,
    },
    Detach {
        key: Arc<HostKey>,
        link: u64,
        why: String,
    },
    /// A command's final result: handed over once every update the host
    /// sent before it is published, so the caller's next read shows them.
    Deliver {
        key: Arc<HostKey>,
        link: u64,
        result: Box<CommandResult>,
        to: mpsc::Sender<CommandResult>,
    },
}

impl View {
    /// Starts `shards` owner tasks (at least one).
    pub fn start(
        name: &str,
        lease: Duration,
        event_backlog: usize,
        shards: usize,
        audit: Audit,
        cursors: Vec<fleet_store::Cursor>,
    ) -> Self {
        let (changes, _) = broadcast::channel(CHANGES);
        let events = EventLog::new("", "", event_backlog);
        let ctx = Arc::new(Ctx {
            cursors: cursors
                .into_iter()
                .map(|c| ((c.tenant, c.host), (c.epoch, c.seq)))
                .collect(),
            name: name.to_owned(),
            lease,
            events: events.clone(),
            audit,
            changes: changes.clone(),
            counters: Arc::default(),
        });
        let handles: Vec<ShardHandle> = (0..shards.max(1))
            .map(|i| {
                let (tx, rx) = mpsc::channel(QUEUE);
                let (snap_tx, snapshot) = watch::channel(Arc::new(ShardSnapshot::default()));
                tokio::spawn(Shard::new(i, ctx.clone(), snap_tx).run(rx));
                ShardHandle { tx, snapshot }
            })
            .collect();
        Self {
            shards: handles.into(),
            changes,
            events,
            epoch: rand::random(),
            name: name.into(),
            lease,
            next_link: Arc::new(AtomicU64::new(1)),
            counters: ctx.counters.clone(),
            hasher: std::hash::RandomState::new(),
        }
    }

    fn shard(&self, key: &HostKey) -> &ShardHandle {
        let n = self.shards.len() as u64;
        &self.shards[usize::try_from(self.hasher.hash_one(key) % n).unwrap_or(0)]
    }

    async fn ask(&self, key: &HostKey, cmd: Cmd) {
        // A shard ends only with the runtime.
        let _ = self.shard(key).tx.send(cmd).await;
    }

    /// A fresh link id.
    pub fn next_link(&self) -> u64 {
        self.next_link.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes a new stream for the host in `hello`, unless another hostd
    /// with the same identity (another boot epoch) is live on one: that is
    /// refused and the host flagged `duplicate-identity`. A real restart —
    /// the old stream gone, or silent past its lease — takes over at once.
    /// Returns the newest event sequence number already held from this boot
    /// epoch of the host.
    pub async fn attach(
        &self,
        hello: &Hello,
        route: Route,
        who: String,
    ) -> Result<u64, AttachError> {
        let key = (hello.tenant_id.clone(), hello.host.clone());
        let (reply, answer) = oneshot::channel();
        self.ask(
            &key,
            Cmd::Attach {
                hello: Box::new(hello.clone()),
                route,
                who,
                reply,
            },
        )
        .await;
        answer.await.unwrap_or(Err(AttachError::Stopping))
    }

    /// Applies one update from stream `link` of `key` (rows whose names are
    /// not names are refused and audited; a host over its bounds has its
    /// link ended).
    pub async fn apply(&self, key: &Arc<HostKey>, link: u64, update: FleetUpdate) {
        let cmd = Cmd::Apply {
            key: key.clone(),
            link,
            update,
        };
        self.ask(key, cmd).await;
    }

    /// Anything at all arrived on the stream: the lease is renewed.
    pub async fn heard(&self, key: &Arc<HostKey>, link: u64) {
        let cmd = Cmd::Heard {
            key: key.clone(),
            link,
        };
        self.ask(key, cmd).await;
    }

    /// Records an event a host forwarded (its agent name already checked).
    pub async fn host_event(&self, key: &Arc<HostKey>, link: u64, event: Event) {
        let cmd = Cmd::Event {
            key: key.clone(),
            link,
            event: Box::new(event),
        };
        self.ask(key, cmd).await;
    }

    /// The stream `link` ended: the host is unreachable at once (unless a
    /// newer stream already replaced it).
    pub async fn detach(&self, key: &Arc<HostKey>, link: u64, why: String) {
        let cmd = Cmd::Detach {
            key: key.clone(),
            link,
            why,
        };
        self.ask(key, cmd).await;
    }

    /// Hands a final result to `to` after what came before it is published.
    pub async fn deliver(
        &self,
        key: &Arc<HostKey>,
        link: u64,
        result: CommandResult,
        to: mpsc::Sender<CommandResult>,
    ) {
        let cmd = Cmd::Deliver {
            key: key.clone(),
            link,
            result: Box::new(result),
            to,
        };
        self.ask(key, cmd).await;
    }

    /// The view as it is now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            shards: self
                .shards
                .iter()
                .map(|s| s.snapshot.borrow().clone())
                .collect(),
        }
    }

    /// A consistent snapshot and a receiver of every batch after it: a
    /// batch whose version is at or below the snapshot's for its shard is
    /// already in it.
    pub fn subscribe(&self) -> (Snapshot, broadcast::Receiver<Arc<Batch>>) {
        // Subscribed first: a batch published meanwhile is both received
        // and (maybe) in the snapshot; its version tells which.
        let rx = self.changes.subscribe();
        (self.snapshot(), rx)
    }

    /// The current stream of a host, or why there is none.
    pub fn route(&self, key: &HostKey) -> Result<Route, NoRoute> {
        let snap = self.shard(key).snapshot.borrow().clone();
        match snap.hosts.get(key).map(|h| &**h) {
            Some(Host { route: Some(r), .. }) => Ok(r.clone()),
            Some(h) => Err(NoRoute::Unreachable(key.clone(), h.last_seen_unix_ms)),
            None => Err(NoRoute::Unknown(key.clone())),
        }
    }

    /// Rows named `name` (what address resolution needs), for visible tenants.
    pub fn agents_named(&self, name: &str, visible: &dyn Fn(&str) -> bool) -> Vec<AgentRow> {
        let snap = self.snapshot();
        snap.hosts(visible)
            .filter_map(|h| h.agents.get(name).map(|r| AgentRow::clone(r)))
            .collect()
    }

    /// Every agent row of the tenants `visible` admits.
    pub fn agents(&self, visible: &dyn Fn(&str) -> bool) -> Vec<AgentRow> {
        self.snapshot().agents(visible)
    }

    /// Host rows of visible tenants, sorted by tenant and host.
    pub fn hosts(&self, visible: &dyn Fn(&str) -> bool) -> Vec<HostRow> {
        let snap = self.snapshot();
        let mut rows: Vec<HostRow> = snap.hosts(visible).map(Host::to_row).collect();
        rows.sort_by(|a, b| (&a.tenant_id, &a.host).cmp(&(&b.tenant_id, &b.host)));
        rows
    }

    /// Counts for benchmarks and health: (hosts, connected hosts, agents).
    pub fn counts(&self) -> (usize, usize, usize) {
        let snap = self.snapshot();
        let all = |_: &str| true;
        let (mut hosts, mut connected, mut agents) = (0, 0, 0);
        for h in snap.hosts(&all) {
            hosts += 1;
            connected += usize::from(h.route.is_some());
            agents += h.agents.len();
        }
        (hosts, connected, agents)
    }
}

fn ago(ms: i64) -> String {
    if ms == 0 {
        return "never".into();
    }
    let secs = (clock::now_ms() - ms).max(0) / 1000;
    format!("{secs} s ago")
}

// === a shard ===

/// What every shard shares.
struct Ctx {
    /// Per host, the boot epoch and newest event of it an earlier run
    /// recorded: a host back under that epoch is asked only for newer ones.
    cursors: std::collections::HashMap<HostKey, (u64, u64)>,
    name: String,
    lease: Duration,
    events: EventLog,
    audit: Audit,
    changes: broadcast::Sender<Arc<Batch>>,
    counters: Arc<Counters>,
}

/// One host as its shard holds it: the published part and the ingest
/// bookkeeping only the shard reads.
struct Entry {
    shown: Host,
    /// Who the current stream's peer is (for audit lines).
    who: String,
    epoch: u64,
    /// Last update applied from this epoch (`None` before the first snapshot).
    seq: Option<u64>,
    /// Rows of a snapshot arriving in chunks.
    pending: Option<Vec<AgentRow>>,
    /// Encoded size of `pending`.
    pending_bytes: usize,
    /// When a second hostd with this identity was last refused.
    duplicate_since: Option<Instant>,
    /// A resync was asked for; deltas are ignored until a snapshot comes.
    awaiting_snapshot: bool,
    last_heard: Instant,
    /// The host's own event sequence number, newest seen (same epoch).
    last_event_seq: u64,
}

impl Entry {
    fn live(&self, link: u64) -> bool {
        self.shown.route.as_ref().map(|r| r.id) == Some(link)
    }

    fn row(&mut self) -> &mut HostRow {
        Arc::make_mut(&mut self.shown.row)
    }
}

/// Why an update was not applied.
#[derive(Debug, PartialEq, Eq)]
enum Applied {
    Ok,
    /// Older than what is held, or from another epoch: ignored.
    Stale,
    /// A gap: the host must send a snapshot.
    Gap,
    /// The stream is no longer the host's current one.
    Superseded,
    /// Applied, but these rows were refused: their agent names are not
    /// names (checked like a roster's); shown escaped, cut.
    Dropped(Vec<String>),
    /// The host went over its bounds: the link must end.
    Refused(String),
}

struct Shard {
    index: usize,
    ctx: Arc<Ctx>,
    hosts: HashMap<Arc<HostKey>, Entry>,
    published: PMap<Arc<HostKey>, Arc<Host>>,
    version: u64,
    snapshot: watch::Sender<Arc<ShardSnapshot>>,
    /// Hosts changed since the last publish, and what changed.
    dirty: Vec<Arc<HostKey>>,
    changes: Vec<Change>,
    /// When this shard last published (a delivery publishes at once too).
    last_publish: Instant,
}

impl Shard {
    fn new(index: usize, ctx: Arc<Ctx>, snapshot: watch::Sender<Arc<ShardSnapshot>>) -> Self {
        Self {
            index,
            ctx,
            hosts: HashMap::new(),
            published: PMap::new(),
            version: 0,
            snapshot,
            dirty: Vec::new(),
            changes: Vec::new(),
            last_publish: Instant::now(),
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let every = (self.ctx.lease / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut sweep = tokio::time::interval(every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let due = self.last_publish + PUBLISH_EVERY;
            let waiting = self.waiting();
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        return;
                    }
                    for cmd in batch.drain(..) {
                        self.handle(cmd);
                    }
                }
                _ = sweep.tick() => self.sweep(),
                () = tokio::time::sleep_until(due), if waiting => {}
            }
            if self.waiting() && Instant::now() >= self.last_publish + PUBLISH_EVERY {
                self.publish();
            }
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Attach {
                hello,
                route,
                who,
                reply,
            } => {
                let _ = reply.send(self.attach(&hello, route, who));
            }
            Cmd::Apply { key, link, update } => self.apply(&key, link, update),
            Cmd::Heard { key, link } => {
                if let Some(e) = self.hosts.get_mut(&key)
                    && e.live(link)
                {
                    e.last_heard = Instant::now();
                }
            }
            Cmd::Event { key, link, event } => self.host_event(&key, link, *event),
            Cmd::Detach { key, link, why } => self.detach(&key, link, &why),
            Cmd::Deliver {
                key,
                link,
                result,
                to,
            } => {
                if let Some(e) = self.hosts.get_mut(&key)
                    && e.live(link)
                {
                    e.last_heard = Instant::now();
                }
                self.publish();
                let _ = to.try_send(*result);
            }
        }
    }

    /// Whether anything changed since the last publish.
    fn waiting(&self) -> bool {
        !self.dirty.is_empty() || !self.changes.is_empty()
    }

    /// Publishes what changed since the last publish: a new snapshot, then
    /// the batch (in that order: see [`View::subscribe`]).
    fn publish(&mut self) {
        if !self.waiting() {
            return;
        }
        self.last_publish = Instant::now();
        self.dirty.sort_unstable();
        self.dirty.dedup();
        for key in self.dirty.drain(..) {
            if let Some(e) = self.hosts.get(&*key) {
                self.published.insert(key, Arc::new(e.shown.clone()));
            }
        }
        self.version += 1;
        self.snapshot.send_replace(Arc::new(ShardSnapshot {
            version: self.version,
            hosts: self.published.clone(),
        }));
        if !self.changes.is_empty() {
            let _ = self.ctx.changes.send(Arc::new(Batch {
                shard: self.index,
                version: self.version,
                changes: std::mem::take(&mut self.changes),
            }));
        }
    }

    fn changed(&mut self, key: &Arc<HostKey>, change: Change) {
        self.dirty.push(key.clone());
        self.changes.push(change);
    }

    fn host_changed(&mut self, key: &Arc<HostKey>) {
        let Some(e) = self.hosts.get(key) else { return };
        let change = Change {
            key: key.clone(),
            upserts: vec![],
            removals: vec![],
            host: Some(e.shown.row.clone()),
        };
        self.changed(key, change);
    }

    fn event(&self, key: &HostKey, kind: EventKind, message: String) {
        self.ctx.events.record(Event {
            ts_unix_ms: clock::now_ms(),
            tenant_id: key.0.clone(),
            host: key.1.clone(),
            kind: kind.word().to_owned(),
            kind_code: kind as i32,
            message,
            ..Default::default()
        });
    }

    fn audit(&self, who: &str, verb: &str, key: &HostKey, outcome: String) {
        self.ctx.audit.write(Record {
            kind: "security",
            who: who.to_owned(),
            verb: verb.into(),
            target: format!("{}/{}", key.0, key.1),
            outcome,
            ..Default::default()
        });
    }

    fn attach(&mut self, hello: &Hello, route: Route, who: String) -> Result<u64, AttachError> {
        let key = Arc::new((hello.tenant_id.clone(), hello.host.clone()));
        let now = Instant::now();
        let lease = self.ctx.lease;
        let recorded = self
            .ctx
            .cursors
            .get(&*key)
            .filter(|(epoch, _)| *epoch == hello.boot_epoch)
            .map_or(0, |(_, seq)| *seq);
        let entry = self.hosts.entry(key.clone()).or_insert_with(|| Entry {
            shown: Host {
                row: Arc::new(HostRow {
                    tenant_id: key.0.clone(),
                    host: key.1.clone(),
                    ..Default::default()
                }),
                last_seen_unix_ms: 0,
                agents: OrdMap::new(),
                route: None,
            },
            who: String::new(),
            epoch: hello.boot_epoch,
            seq: None,
            pending: None,
            pending_bytes: 0,
            duplicate_since: None,
            awaiting_snapshot: true,
            last_heard: now,
            last_event_seq: recorded,
        });
        let live = entry.shown.route.is_some() && now.duration_since(entry.last_heard) <= lease;
        if live && entry.epoch != hello.boot_epoch {
            let why = format!(
                "another hostd with the identity {}/{} is live (boot epoch {:x}); this one (boot epoch {:x}) is refused",
                key.0, key.1, entry.epoch, hello.boot_epoch
            );
            entry.duplicate_since = Some(now);
            if !entry.shown.row.has(HostFlag::DuplicateIdentity) {
                entry.row().flag(HostFlag::DuplicateIdentity);
                self.host_changed(&key);
                self.event(&key, EventKind::DuplicateIdentity, why.clone());
            }
            return Err(AttachError::Duplicate(why));
        }
        if let Some(old) = entry.shown.route.replace(route) {
            old.end("replaced by a new stream from the host", None);
        }
        if entry.epoch != hello.boot_epoch {
            entry.epoch = hello.boot_epoch;
            entry.last_event_seq = 0;
        }
        entry.who = who;
        entry.seq = None;
        entry.pending = None;
        entry.pending_bytes = 0;
        entry.awaiting_snapshot = true;
        entry.last_heard = now;
        let row = entry.row();
        row.uid = hello.uid;
        row.hostd_version.clone_from(&hello.hostd_version);
        row.boot_epoch = hello.boot_epoch;
        let events_after = entry.last_event_seq;
        // The route is published at once: commands may follow the Welcome.
        self.dirty.push(key.clone());
        self.ctx.counters.links_up.fetch_add(1, Ordering::Relaxed);
        self.event(
            &key,
            EventKind::HostConnected,
            format!(
                "hostd {} connected (boot epoch {:x})",
                hello.hostd_version, hello.boot_epoch
            ),
        );
        Ok(events_after)
    }

    fn apply(&mut self, key: &Arc<HostKey>, link: u64, update: FleetUpdate) {
        let outcome = self.apply_update(key, link, update);
        let Some(e) = self.hosts.get(key) else { return };
        match outcome {
            Applied::Ok | Applied::Stale | Applied::Superseded => {}
            Applied::Gap => {
                if let Some(r) = &e.shown.route {
                    r.resync("sequence gap");
                }
            }
            Applied::Dropped(names) => self.audit(
                &e.who,
                "update",
                key,
                format!(
                    "refused {} row(s) whose agent name is not a name: {}",
                    names.len(),
                    names.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
                ),
            ),
            Applied::Refused(why) => {
                self.audit(&e.who, "update", key, format!("refused: {why}; link ended"));
                if let Some(r) = &e.shown.route {
                    r.end(why.clone(), Some(tonic::Status::resource_exhausted(why)));
                }
            }
        }
    }

    fn apply_update(&mut self, key: &Arc<HostKey>, link: u64, update: FleetUpdate) -> Applied {
        let Some(entry) = self.hosts.get_mut(key) else {
            return Applied::Superseded;
        };
        if !entry.live(link) {
            return Applied::Superseded;
        }
        entry.last_heard = Instant::now();
        if update.epoch != entry.epoch || entry.seq.is_some_and(|s| update.seq <= s) {
            return Applied::Stale;
        }
        let mut dropped: Vec<String> = Vec::new();
        let mut fix = |mut r: AgentRow| {
            // Names from a peer are checked like names from a roster.
            if fleet_proto::name::check(&r.name).is_err() {
                dropped.push(r.name.escape_debug().take(80).collect());
                return None;
            }
            // A host publishes only for itself, whatever its rows say.
            r.tenant_id.clone_from(&key.0);
            r.host.clone_from(&key.1);
            Some(r)
        };
        let (upserts, removals, host) = match update.update {
            Some(fleet_update::Update::Snapshot(snap)) => {
                use prost::Message;
                let bytes: usize = snap.agents.iter().map(Message::encoded_len).sum();
                let part = entry.pending.get_or_insert_with(Vec::new);
                entry.pending_bytes += bytes;
                if part.len() + snap.agents.len() > MAX_HOST_ROWS
                    || entry.pending_bytes > MAX_PENDING_BYTES
                {
                    let why = format!(
                        "snapshot over its bounds ({} rows, {} bytes; at most {MAX_HOST_ROWS} rows and {MAX_PENDING_BYTES} bytes per host)",
                        part.len() + snap.agents.len(),
                        entry.pending_bytes
                    );
                    entry.pending = None;
                    entry.pending_bytes = 0;
                    return Applied::Refused(why);
                }
                part.extend(snap.agents.into_iter().filter_map(&mut fix));
                if snap.more {
                    entry.seq = Some(update.seq);
                    return settle(dropped);
                }
                entry.pending_bytes = 0;
                let rows = entry.pending.take().unwrap_or_default();
                let mut next: OrdMap<Arc<str>, Arc<AgentRow>> = OrdMap::new();
                let mut upserts = Vec::new();
                for r in rows {
                    let held = entry.shown.agents.get_key_value(r.name.as_str());
                    let name = held.map_or_else(|| Arc::from(r.name.as_str()), |(k, _)| k.clone());
                    let r = match held {
                        Some((_, old)) if **old == r => old.clone(),
                        _ => {
                            let r = Arc::new(r);
                            upserts.push(r.clone());
                            r
                        }
                    };
                    next.insert(name, r);
                }
                let removals: Vec<AgentKey> = entry
                    .shown
                    .agents
                    .keys()
                    .filter(|n| !next.contains_key(&***n))
                    .map(|n| agent_key(key, n.to_string()))
                    .collect();
                entry.shown.agents = next;
                entry.awaiting_snapshot = false;
                (upserts, removals, snap.hosts.into_iter().next())
            }
            Some(fleet_update::Update::Delta(d)) => {
                if entry.awaiting_snapshot || entry.pending.is_some() {
                    return Applied::Stale;
                }
                if entry.seq.is_some_and(|s| update.seq != s + 1) {
                    entry.awaiting_snapshot = true;
                    return Applied::Gap;
                }
                let upserts: Vec<Arc<AgentRow>> = d
                    .upserts
                    .into_iter()
                    .filter_map(&mut fix)
                    .map(Arc::new)
                    .collect();
                let new = upserts
                    .iter()
                    .filter(|r| !entry.shown.agents.contains_key(r.name.as_str()))
                    .count();
                if entry.shown.agents.len() + new > MAX_HOST_ROWS {
                    return Applied::Refused(format!(
                        "more than {MAX_HOST_ROWS} agent rows for one host"
                    ));
                }
                for r in &upserts {
                    match entry.shown.agents.get_mut(r.name.as_str()) {
                        Some(held) => held.clone_from(r),
                        None => {
                            entry
                                .shown
                                .agents
                                .insert(Arc::from(r.name.as_str()), r.clone());
                        }
                    }
                }
                let removals: Vec<AgentKey> = d
                    .removals
                    .into_iter()
                    .filter(|k| entry.shown.agents.remove(k.name.as_str()).is_some())
                    .map(|k| agent_key(key, k.name))
                    .collect();
                (upserts, removals, d.hosts.into_iter().next())
            }
            None => return Applied::Stale,
        };
        let now = clock::now_ms();
        entry.shown.last_seen_unix_ms = now;
        let row_changed = if let Some(mut h) = host {
            h.tenant_id.clone_from(&key.0);
            h.host.clone_from(&key.1);
            // The aggregator's own flags are the aggregator's to set.
            h.unflag(HostFlag::DuplicateIdentity);
            h.unflag(HostFlag::Unreachable);
            if entry.duplicate_since.is_some() {
                h.flag(HostFlag::DuplicateIdentity);
            }
            h.link = CONNECTED.into();
            h.via.clone_from(&self.ctx.name);
            h.last_seen_unix_ms = now;
            // A new row, not a copy of the published one to overwrite.
            entry.shown.row = Arc::new(h);
            true
        } else if entry.shown.row.link != CONNECTED
            || entry.shown.row.via != self.ctx.name
            || entry.shown.row.has(HostFlag::Unreachable)
        {
            let row = entry.row();
            row.link = CONNECTED.into();
            row.via.clone_from(&self.ctx.name);
            row.last_seen_unix_ms = now;
            row.unflag(HostFlag::Unreachable);
            true
        } else {
            // Only its last-seen time moved: the row stays as it is (a
            // reader takes that time from the host, see Host::to_row).
            false
        };
        entry.seq = Some(update.seq);
        self.ctx.counters.applied.fetch_add(1, Ordering::Relaxed);
        self.ctx
            .counters
            .applied_rows
            .fetch_add(upserts.len() as u64, Ordering::Relaxed);
        let change = Change {
            key: key.clone(),
            upserts,
            removals,
            host: row_changed.then(|| entry.shown.row.clone()),
        };
        self.changed(key, change);
        settle(dropped)
    }

    fn host_event(&mut self, key: &Arc<HostKey>, link: u64, mut ev: Event) {
        let Some(e) = self.hosts.get_mut(key) else {
            return;
        };
        if !e.live(link) || ev.seq <= e.last_event_seq {
            return;
        }
        e.last_event_seq = ev.seq;
        // Where it came from, so a restarted aggregator's history knows
        // which of this host's events it holds (`fleet_store` keeps the
        // newest per host) and asks for no replay.
        ev.fields
            .insert(fleet_store::HOST_SEQ.into(), ev.seq.to_string());
        ev.fields
            .insert(fleet_store::HOST_EPOCH.into(), format!("{:x}", e.epoch));
        ev.tenant_id.clone_from(&key.0);
        ev.host.clone_from(&key.1);
        self.ctx.events.record(ev);
    }

    fn detach(&mut self, key: &Arc<HostKey>, link: u64, why: &str) {
        let Some(e) = self.hosts.get_mut(key) else {
            return;
        };
        if !e.live(link) {
            return;
        }
        e.shown.route = None;
        let change = mark_unreachable(key, e);
        self.ctx.counters.links_lost.fetch_add(1, Ordering::Relaxed);
        self.changed(key, change);
        self.event(
            key,
            EventKind::HostUnreachable,
            format!("host stream lost: {why}"),
        );
    }

    /// Expires leases: hosts not heard from within the lease become
    /// unreachable and their streams are ended.
    fn sweep(&mut self) {
        let now = Instant::now();
        let lease = self.ctx.lease;
        let mut cleared = Vec::new();
        let mut expired = Vec::new();
        for (key, e) in &mut self.hosts {
            // No duplicate seen for two leases: the flag goes.
            if e.duplicate_since
                .is_some_and(|t| now.duration_since(t) > lease * 2)
            {
                e.duplicate_since = None;
                e.row().unflag(HostFlag::DuplicateIdentity);
                cleared.push(key.clone());
            }
            if e.shown.route.is_some() && now.duration_since(e.last_heard) > lease {
                if let Some(r) = e.shown.route.take() {
                    r.end("lease expired", None);
                }
                self.ctx
                    .counters
                    .leases_expired
                    .fetch_add(1, Ordering::Relaxed);
                expired.push((key.clone(), mark_unreachable(key, e)));
            }
        }
        for key in cleared {
            self.host_changed(&key);
        }
        for (key, change) in expired {
            self.changed(&key, change);
            self.event(
                &key,
                EventKind::HostUnreachable,
                format!("nothing heard for longer than the {lease:?} lease"),
            );
        }
    }
}

fn agent_key(key: &HostKey, name: String) -> AgentKey {
    AgentKey {
        tenant_id: key.0.clone(),
        host: key.1.clone(),
        name,
    }
}

/// `Ok`, or `Dropped` naming the refused rows.
fn settle(dropped: Vec<String>) -> Applied {
    if dropped.is_empty() {
        Applied::Ok
    } else {
        Applied::Dropped(dropped)
    }
}

/// Keeps every last known value, dated, and says plainly that it is old.
fn mark_unreachable(key: &Arc<HostKey>, e: &mut Entry) -> Change {
    let since = e.shown.last_seen_unix_ms;
    let row = e.row();
    row.link = UNREACHABLE.into();
    row.flag(HostFlag::Unreachable);
    row.last_seen_unix_ms = since;
    let reason = format!("host unreachable; last seen {}", clock::rfc3339(since));
    let mut upserts = Vec::with_capacity(e.shown.agents.len());
    let names: Vec<Arc<str>> = e.shown.agents.keys().cloned().collect();
    for name in names {
        let Some(r) = e.shown.agents.get_mut(&*name) else {
            continue;
        };
        let r = Arc::make_mut(r);
        r.flag(AgentFlag::Unreachable);
        let hb = r.heartbeat.get_or_insert_with(Default::default);
        hb.health = Health::Unknown as i32;
        hb.reason.clone_from(&reason);
    }
    upserts.extend(e.shown.agents.values().cloned());
    e.pending = None;
    e.awaiting_snapshot = true;
    Change {
        key: key.clone(),
        upserts,
        removals: vec![],
        host: Some(e.shown.row.clone()),
    }
}

// === for subscribers ===

/// Folds batches into one delta for a subscriber: only tenants `visible`
/// admits, only batches past the subscriber's `versions`, only rows its
/// selector admits, the newest value of each row (an upsert after a
/// removal wins, and the reverse).
#[derive(Default)]
pub struct Fold {
    agents: std::collections::BTreeMap<(Arc<HostKey>, String), Option<Arc<AgentRow>>>,
    hosts: std::collections::BTreeMap<Arc<HostKey>, Arc<HostRow>>,
    select: Select,
    /// With a selector on rows' own fields: the rows the subscriber holds,
    /// so that a row which stops matching is sent as a removal, and one it
    /// never had is not.
    held: Option<HashMap<Arc<HostKey>, std::collections::HashSet<String>>>,
}

impl Fold {
    pub fn new(select: Select) -> Self {
        Self {
            held: select.per_row().then(Default::default),
            select,
            ..Default::default()
        }
    }

    /// Records rows the subscriber was sent outside the fold (its snapshot).
    pub fn hold(&mut self, rows: &[AgentRow]) {
        if let Some(held) = &mut self.held {
            for r in rows {
                held.entry(Arc::new((r.tenant_id.clone(), r.host.clone())))
                    .or_default()
                    .insert(r.name.clone());
            }
        }
    }

    /// Drops what is held or pending of the tenants `gone` admits (the
    /// caller may no longer see them; their removals are sent apart).
    pub fn forget(&mut self, gone: &dyn Fn(&str) -> bool) {
        if let Some(held) = &mut self.held {
            held.retain(|k, _| !gone(&k.0));
        }
        self.agents.retain(|(k, _), _| !gone(&k.0));
        self.hosts.retain(|k, _| !gone(&k.0));
    }

    fn holds(&self, key: &Arc<HostKey>, name: &str) -> bool {
        self.held
            .as_ref()
            .is_none_or(|h| h.get(key).is_some_and(|names| names.contains(name)))
    }

    /// A row that is not (or no longer) selected: a removal if the
    /// subscriber holds it, else nothing (and no pending upsert).
    fn unselect(&mut self, key: &Arc<HostKey>, name: &str) {
        if self.holds(key, name) {
            self.agents.insert((key.clone(), name.to_owned()), None);
        } else {
            self.agents.remove(&(key.clone(), name.to_owned()));
        }
    }

    /// Adds `batch`; returns the tenants it showed rows or hosts of.
    pub fn add(
        &mut self,
        batch: &Batch,
        versions: &[u64],
        visible: &dyn Fn(&str) -> bool,
        shown: &mut std::collections::BTreeSet<String>,
    ) {
        if versions
            .get(batch.shard)
            .is_some_and(|v| batch.version <= *v)
        {
            return;
        }
        for c in batch.changes.iter().filter(|c| visible(&c.key.0)) {
            if !self.select.host(&c.key.0, &c.key.1) {
                continue;
            }
            if !shown.contains(&c.key.0) {
                shown.insert(c.key.0.clone());
            }
            // Rows are filed under their host's key (the shard set each
            // row's tenant and host to it).
            for r in &c.upserts {
                if self.select.agent(r) {
                    self.agents
                        .insert((c.key.clone(), r.name.clone()), Some(r.clone()));
                } else {
                    self.unselect(&c.key, &r.name);
                }
            }
            for k in &c.removals {
                self.unselect(&c.key, &k.name);
            }
            if let Some(h) = &c.host {
                self.hosts.insert(c.key.clone(), h.clone());
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty() && self.hosts.is_empty()
    }

    /// Rows held; a fold over this many is sent before taking more.
    pub fn len(&self) -> usize {
        self.agents.len() + self.hosts.len()
    }

    pub fn take(&mut self) -> Delta {
        let mut d = Delta::default();
        for ((host, name), v) in std::mem::take(&mut self.agents) {
            if let Some(held) = &mut self.held {
                let names = held.entry(host.clone()).or_default();
                if v.is_some() {
                    names.insert(name.clone());
                } else {
                    names.remove(&name);
                    if names.is_empty() {
                        held.remove(&host);
                    }
                }
            }
            match v {
                Some(r) => d.upserts.push(AgentRow::clone(&r)),
                None => d.removals.push(AgentKey {
                    tenant_id: host.0.clone(),
                    host: host.1.clone(),
                    name,
                }),
            }
        }
        d.hosts = std::mem::take(&mut self.hosts)
            .into_values()
            .map(|h| HostRow::clone(&h))
            .collect();
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Limits;
    use fleet_proto::v1::{Snapshot as Snap, aggregator_message::Msg};

    fn hello(epoch: u64) -> Hello {
        Hello {
            tenant_id: "acme".into(),
            host: "box1".into(),
            boot_epoch: epoch,
            protocol: 1,
            ..Default::default()
        }
    }

    fn row(name: &str, turn: u64) -> AgentRow {
        AgentRow {
            // Whatever a host claims, rows are filed under its own key.
            tenant_id: "someone-else".into(),
            host: "elsewhere".into(),
            name: name.into(),
            heartbeat: Some(fleet_proto::v1::Heartbeat {
                health: Health::Healthy as i32,
                turn: Some(turn),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn snap(epoch: u64, seq: u64, agents: Vec<AgentRow>, more: bool) -> FleetUpdate {
        FleetUpdate {
            epoch,
            seq,
            update: Some(fleet_update::Update::Snapshot(Snap {
                agents,
                hosts: vec![],
                more,
            })),
            generated_at_unix_ms: 0,
        }
    }

    fn delta(epoch: u64, seq: u64, upserts: Vec<AgentRow>) -> FleetUpdate {
        FleetUpdate {
            epoch,
            seq,
            update: Some(fleet_update::Update::Delta(Delta {
                upserts,
                ..Default::default()
            })),
            generated_at_unix_ms: 0,
        }
    }

    fn key() -> Arc<HostKey> {
        Arc::new(("acme".into(), "box1".into()))
    }

    struct Bed {
        view: View,
        _dir: tempfile::TempDir,
    }

    fn bed(lease: Duration) -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open(&dir.path().join("audit.jsonl")).unwrap();
        Bed {
            view: View::start("agg", lease, 100, 2, audit, Vec::new()),
            _dir: dir,
        }
    }

    /// A link as the HostLink service makes one.
    struct Linked {
        id: u64,
        out: mpsc::Receiver<crate::route::Outbound>,
        ends: crate::route::Endpoints,
    }

    async fn attach(v: &View, epoch: u64) -> Result<(Linked, u64), AttachError> {
        let (tx, out) = mpsc::channel(16);
        let (route, ends) = Route::new(v.next_link(), tx, Limits::of(&hello(epoch)));
        let id = route.id;
        let after = v
            .attach(&hello(epoch), route, "spiffe://t/host".into())
            .await?;
        Ok((Linked { id, out, ends }, after))
    }

    /// Waits until the shard of `key` has handled and published everything
    /// sent to it before.
    async fn settled(v: &View) {
        let (tx, mut rx) = mpsc::channel(1);
        v.deliver(&key(), 0, CommandResult::default(), tx).await;
        rx.recv().await.unwrap();
    }

    async fn all(v: &View) -> Vec<AgentRow> {
        settled(v).await;
        let mut rows = v.agents(&|_| true);
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        rows
    }

    fn turn(r: &AgentRow) -> Option<u64> {
        r.heartbeat.as_ref().and_then(|h| h.turn)
    }

    #[tokio::test]
    async fn chunked_snapshots_apply_whole_and_rows_are_filed_under_the_link() {
        let b = bed(Duration::from_secs(30));
        let v = &b.view;
        let (l, after) = attach(v, 1).await.unwrap();
        assert_eq!(after, 0);
        v.apply(&key(), l.id, snap(1, 1, vec![row("a", 0)], true))
            .await;
        assert!(all(v).await.is_empty(), "half a snapshot must not show");
        v.apply(&key(), l.id, snap(1, 2, vec![row("b", 0)], false))
            .await;
        let rows = all(v).await;
        assert_eq!(
            rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(
            rows.iter()
                .all(|r| r.tenant_id == "acme" && r.host == "box1")
        );
        assert_eq!(v.hosts(&|_| true)[0].link, "connected");
        assert_eq!(v.counts(), (1, 1, 2));
    }

    #[tokio::test]
    async fn an_update_that_only_renews_a_host_moves_its_last_seen_time_not_its_row() {
        let b = bed(Duration::from_secs(30));
        let v = &b.view;
        let (_, mut batches) = v.subscribe();
        let (l, _) = attach(v, 1).await.unwrap();
        v.apply(&key(), l.id, snap(1, 1, vec![row("a", 0)], false))
            .await;
        settled(v).await;
        let first = v.snapshot().host(&key()).unwrap().row.clone();
        let seen = v.hosts(&|_| true)[0].last_seen_unix_ms;
        assert!(seen > 0);
        // The clock must move for a later last-seen time to show.
        while clock::now_ms() <= seen {
            tokio::task::yield_now().await;
        }
        v.apply(&key(), l.id, delta(1, 2, vec![row("a", 1)])).await;
        settled(v).await;
        let host = v.snapshot().host(&key()).unwrap().clone();
        assert!(
            Arc::ptr_eq(&host.row, &first),
            "the row is neither copied nor replaced"
        );
        assert!(
            v.hosts(&|_| true)[0].last_seen_unix_ms > seen,
            "readers see it renewed"
        );
        assert_eq!(turn(&all(v).await[0]), Some(1));
        // Watchers get the host row with the first snapshot, not with a
        // delta that changed nothing else about the host.
        let mut with_host = Vec::new();
        while let Ok(b) = batches.try_recv() {
            for c in b.changes.iter().filter(|c| !c.upserts.is_empty()) {
                with_host.push(c.host.is_some());
            }
        }
        assert_eq!(with_host, [true, false]);
    }

    #[tokio::test]
    async fn stale_updates_are_dropped_and_a_gap_asks_for_a_snapshot() {
        let b = bed(Duration::from_secs(30));
        let v = &b.view;
        let (mut l, _) = attach(v, 1).await.unwrap();
        v.apply(&key(), l.id, snap(1, 1, vec![row("a", 0)], false))
            .await;
        v.apply(&key(), l.id, delta(1, 2, vec![row("a", 5)])).await;
        // Replayed or from another boot epoch: ignored.
        v.apply(&key(), l.id, delta(1, 2, vec![row("a", 1)])).await;
        v.apply(&key(), l.id, delta(9, 3, vec![row("a", 1)])).await;
        assert_eq!(turn(&all(v).await[0]), Some(5));
        // seq 4 after 2: a gap; the host is asked for a snapshot, and
        // deltas wait for it.
        v.apply(&key(), l.id, delta(1, 4, vec![row("a", 7)])).await;
        settled(v).await;
        assert!(matches!(
            l.out.try_recv().unwrap().msg,
            Some(Msg::Resync(_))
        ));
        v.apply(&key(), l.id, delta(1, 5, vec![row("a", 8)])).await;
        assert_eq!(turn(&all(v).await[0]), Some(5));
        v.apply(&key(), l.id, snap(1, 6, vec![row("a", 9)], false))
            .await;
        assert_eq!(turn(&all(v).await[0]), Some(9));
    }

    #[tokio::test]
    async fn a_lost_host_is_unreachable_with_its_last_values_and_a_new_link_supersedes() {
        let b = bed(Duration::from_millis(50));
        let v = &b.view;
        let (snap0, mut changes) = v.subscribe();
        let (mut old, _) = attach(v, 1).await.unwrap();
        v.apply(&key(), old.id, snap(1, 1, vec![row("a", 3)], false))
            .await;
        // Past the lease, the sweep ends the stream and keeps the values.
        let end = tokio::time::timeout(Duration::from_secs(5), old.ends.ending.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(end.why, "lease expired");
        settled(v).await;
        let h = &v.hosts(&|_| true)[0];
        assert_eq!(h.link, UNREACHABLE);
        assert!(h.has(HostFlag::Unreachable));
        let r = &all(v).await[0];
        let hb = r.heartbeat.as_ref().unwrap();
        assert_eq!(hb.health, Health::Unknown as i32);
        assert!(hb.reason.starts_with("host unreachable"), "{}", hb.reason);
        assert_eq!(hb.turn, Some(3), "last known values are kept");
        let e = v.route(&key()).unwrap_err();
        assert!(matches!(e, NoRoute::Unreachable(..)), "{e}");
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::Unavailable);
        let unknown = v.route(&("acme".into(), "nobody".into())).unwrap_err();
        assert_eq!(tonic::Status::from(unknown).code(), tonic::Code::NotFound);
        // Every change was published for operators: the rows, then the
        // host gone unreachable with them.
        let mut fold = Fold::default();
        let mut shown = std::collections::BTreeSet::new();
        while let Ok(batch) = changes.try_recv() {
            fold.add(&batch, &snap0.versions(), &|_| true, &mut shown);
        }
        let d = fold.take();
        assert_eq!(d.upserts.len(), 1, "{d:?}");
        assert_eq!(d.hosts[0].link, UNREACHABLE);
        // The host comes back on a new link; the old one's end is ignored.
        let (new, _) = attach(v, 1).await.unwrap();
        v.apply(&key(), old.id, snap(1, 2, vec![], false)).await;
        v.apply(&key(), new.id, snap(1, 1, vec![row("a", 4)], false))
            .await;
        v.detach(&key(), old.id, "old stream ended".into()).await;
        assert_eq!(turn(&all(v).await[0]), Some(4));
        assert_eq!(v.hosts(&|_| true)[0].link, "connected");
        assert!(all(v).await[0].flags.is_empty());
    }

    #[tokio::test]
    async fn forwarded_events_are_not_duplicated_after_a_reconnect() {
        let b = bed(Duration::from_secs(30));
        let v = &b.view;
        let (l, _) = attach(v, 1).await.unwrap();
        for seq in [1, 2, 2, 3] {
            let e = Event {
                seq,
                kind: "started".into(),
                ..Default::default()
            };
            v.host_event(&key(), l.id, e).await;
        }
        settled(v).await;
        let (backlog, _) = v.events.subscribe(0);
        assert_eq!(backlog.iter().filter(|e| e.kind == "started").count(), 3);
        let (again, after) = attach(v, 1).await.unwrap();
        assert_eq!(after, 3, "the host resumes after the newest event held");
        // A restarted hostd (its old stream gone) starts over.
        v.detach(&key(), again.id, "closed by the host".into())
            .await;
        let (_, after) = attach(v, 2).await.unwrap();
        assert_eq!(after, 0, "a new boot epoch starts over");
    }

    #[tokio::test]
    async fn a_second_live_hostd_with_one_identity_is_refused_and_flagged() {
        let b = bed(Duration::from_millis(200));
        let v = &b.view;
        let (mut first, _) = attach(v, 1).await.unwrap();
        let Err(why) = attach(v, 2).await else {
            panic!("a second live hostd was let in");
        };
        assert!(
            matches!(&why, AttachError::Duplicate(s) if s.contains("another hostd")),
            "{why}"
        );
        settled(v).await;
        let flags = &v.hosts(&|_| true)[0].flags;
        assert!(flags.iter().any(|f| f == "duplicate-identity"), "{flags:?}");
        // The same process reconnecting (same epoch) takes over, and the
        // stream it replaces is ended.
        let (again, _) = attach(v, 1).await.unwrap();
        assert_ne!(again.id, first.id);
        let end = first.ends.ending.try_recv().unwrap();
        assert!(end.why.contains("replaced"), "{}", end.why);
        // Silent past its lease, the first one gives way to a restart.
        tokio::time::sleep(Duration::from_millis(250)).await;
        attach(v, 2).await.unwrap();
    }

    #[tokio::test]
    async fn a_subscriber_gets_each_change_once_whether_or_not_its_snapshot_had_it() {
        let b = bed(Duration::from_secs(30));
        let v = &b.view;
        let (l, _) = attach(v, 1).await.unwrap();
        v.apply(&key(), l.id, snap(1, 1, vec![row("a", 1)], false))
            .await;
        // Subscribed before the next change is published...
        let (before, mut rx) = v.subscribe();
        v.apply(&key(), l.id, delta(1, 2, vec![row("a", 2)])).await;
        settled(v).await;
        // ...and one after it: its snapshot holds turn 2 already.
        let (after, mut rx2) = v.subscribe();
        assert_eq!(turn(&after.agents(&|_| true)[0]), Some(2));
        let fold_of = |rx: &mut broadcast::Receiver<Arc<Batch>>, s: &Snapshot| {
            let mut f = Fold::default();
            let mut shown = std::collections::BTreeSet::new();
            while let Ok(batch) = rx.try_recv() {
                f.add(&batch, &s.versions(), &|_| true, &mut shown);
            }
            f
        };
        let mut f = fold_of(&mut rx, &before);
        let d = f.take();
        assert_eq!(d.upserts.iter().map(turn).collect::<Vec<_>>(), [Some(2)]);
        assert!(fold_of(&mut rx2, &after).is_empty(), "held in its snapshot");
        // A hidden tenant's changes never reach the subscriber.
        let (_, mut rx3) = v.subscribe();
        v.apply(&key(), l.id, delta(1, 3, vec![row("a", 3)])).await;
        settled(v).await;
        let mut f = Fold::default();
        let mut shown = std::collections::BTreeSet::new();
        while let Ok(batch) = rx3.try_recv() {
            f.add(&batch, &[0, 0], &|t| t != "acme", &mut shown);
        }
        assert!(f.is_empty() && shown.is_empty());
    }

    #[test]
    fn a_fold_keeps_the_newest_value_of_each_row() {
        let k = AgentKey {
            tenant_id: "acme".into(),
            host: "box1".into(),
            name: "a".into(),
        };
        let mut r = row("a", 1);
        r.tenant_id = "acme".into();
        r.host = "box1".into();
        let up = |turn: u64| {
            let mut r = r.clone();
            r.heartbeat.as_mut().unwrap().turn = Some(turn);
            Change {
                key: key(),
                upserts: vec![Arc::new(r)],
                removals: vec![],
                host: None,
            }
        };
        let gone = Change {
            key: key(),
            upserts: vec![],
            removals: vec![k.clone()],
            host: None,
        };
        let batch = |version, changes| Batch {
            shard: 0,
            version,
            changes,
        };
        let mut shown = std::collections::BTreeSet::new();
        let mut f = Fold::default();
        f.add(&batch(1, vec![up(1), gone]), &[0], &|_| true, &mut shown);
        f.add(&batch(2, vec![up(2)]), &[0], &|_| true, &mut shown);
        let d = f.take();
        assert!(d.removals.is_empty());
        assert_eq!(d.upserts.iter().map(turn).collect::<Vec<_>>(), [Some(2)]);
        let gone = Change {
            key: key(),
            upserts: vec![],
            removals: vec![k],
            host: None,
        };
        f.add(&batch(3, vec![up(3), gone]), &[0], &|_| true, &mut shown);
        let d = f.take();
        assert!(d.upserts.is_empty());
        assert_eq!(d.removals.len(), 1);
        // A batch the subscriber's snapshot holds is skipped.
        f.add(&batch(4, vec![up(4)]), &[4], &|_| true, &mut shown);
        assert!(f.is_empty());
    }

    #[test]
    fn a_selective_fold_sends_a_removal_only_for_a_row_the_subscriber_holds() {
        let stale = |name: &str, health: Health| {
            let mut r = row(name, 1);
            r.tenant_id = "acme".into();
            r.host = "box1".into();
            r.heartbeat.as_mut().unwrap().health = health as i32;
            Arc::new(r)
        };
        let batch = |version, upserts: Vec<Arc<AgentRow>>| Batch {
            shard: 0,
            version,
            changes: vec![Change {
                key: key(),
                upserts,
                removals: vec![],
                host: None,
            }],
        };
        let select = Select::new(Some(&fleet_proto::v1::Selector {
            health: vec![Health::Stale as i32],
            ..Default::default()
        }))
        .unwrap();
        let mut f = Fold::new(select);
        let mut held = stale("held", Health::Stale);
        Arc::make_mut(&mut held).tenant_id = "acme".into();
        f.hold(&[AgentRow::clone(&held)]);
        let mut shown = std::collections::BTreeSet::new();
        let all = |_: &str| true;
        // Healthy rows the subscriber never had: nothing to send.
        f.add(
            &batch(
                1,
                vec![stale("a", Health::Healthy), stale("b", Health::Healthy)],
            ),
            &[0],
            &all,
            &mut shown,
        );
        assert!(f.is_empty());
        // One turns stale: an upsert; the held one turns healthy: a removal.
        f.add(
            &batch(
                2,
                vec![stale("a", Health::Stale), stale("held", Health::Healthy)],
            ),
            &[0],
            &all,
            &mut shown,
        );
        let d = f.take();
        assert_eq!(
            d.upserts
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(
            d.removals
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>(),
            ["held"]
        );
        // Stale then healthy again within one fold: the subscriber never
        // saw "b" stale, so nothing; "a", which it now holds, is removed.
        f.add(
            &batch(3, vec![stale("b", Health::Stale)]),
            &[0],
            &all,
            &mut shown,
        );
        f.add(
            &batch(
                4,
                vec![stale("b", Health::Healthy), stale("a", Health::Healthy)],
            ),
            &[0],
            &all,
            &mut shown,
        );
        let d = f.take();
        assert!(d.upserts.is_empty(), "{:?}", d.upserts);
        assert_eq!(
            d.removals
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        // A host the selector leaves out sends nothing at all.
        let mut f = Fold::new(
            Select::new(Some(&fleet_proto::v1::Selector {
                hosts: vec!["gpu-*".into()],
                ..Default::default()
            }))
            .unwrap(),
        );
        f.add(
            &batch(5, vec![stale("a", Health::Stale)]),
            &[0],
            &all,
            &mut shown,
        );
        assert!(f.is_empty());
    }
}
