//! The merged view: tenants × hosts × agents, fed by every host link and
//! read by every operator. One mutex guards it; work under the lock is a
//! map update, and every change is published once on a broadcast channel
//! that operator streams read at their own pace (a reader that falls too
//! far behind is shed and resyncs).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fleet_proto::clock;
use fleet_proto::events::EventLog;
use fleet_proto::v1::{
    AgentKey, AgentRow, AggregatorMessage, CommandResult, Delta, Event, FleetUpdate, Health, Hello,
    HostRow, Resync, aggregator_message, fleet_update,
};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio::time::Instant;

/// `(tenant, host)`.
pub type HostKey = (String, String);

/// Flag on host and agent rows whose host stream is lost.
pub const UNREACHABLE: &str = "unreachable";

/// One published change: a delta about one host of `tenant`.
#[derive(Debug)]
pub struct Change {
    pub tenant: String,
    pub delta: Delta,
}

/// The live stream to one hostd.
#[derive(Clone)]
pub struct Link {
    pub id: u64,
    tx: mpsc::Sender<AggregatorMessage>,
    pending: Arc<Mutex<HashMap<u64, mpsc::Sender<CommandResult>>>>,
    next_command: Arc<AtomicU64>,
    /// Notified to end the stream (lease expired, replaced by a new link).
    pub kill: Arc<Notify>,
    /// What the host said it accepts (its Hello).
    pub limits: Limits,
}

/// A host's limits as its Hello states them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message it decodes on the link.
    pub max_message: usize,
    /// Largest `send` text it accepts (none: not said).
    pub send_limit: Option<usize>,
}

impl Limits {
    /// What a hostd that says nothing decodes (protocol 1's default).
    pub const DEFAULT_MAX_MESSAGE: usize = 4 * 1024 * 1024;

    pub fn of(hello: &Hello) -> Self {
        let size = |v: u64| usize::try_from(v).ok().filter(|v| *v > 0);
        Self {
            max_message: size(hello.max_message_bytes).unwrap_or(Self::DEFAULT_MAX_MESSAGE),
            send_limit: size(hello.send_limit_bytes),
        }
    }
}

impl Link {
    pub fn new(id: u64, tx: mpsc::Sender<AggregatorMessage>, limits: Limits) -> Self {
        Self {
            id,
            tx,
            pending: Arc::default(),
            next_command: Arc::new(AtomicU64::new(1)),
            kill: Arc::new(Notify::new()),
            limits,
        }
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<u64, mpsc::Sender<CommandResult>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `command` down (its id is assigned here) and returns the
    /// receiver of its results. `None` when the link is gone.
    pub async fn call(
        &self,
        mut command: fleet_proto::v1::Command,
        buffer: usize,
    ) -> Option<(u64, mpsc::Receiver<CommandResult>)> {
        let id = self.next_command.fetch_add(1, Ordering::Relaxed);
        command.id = id;
        let (tx, rx) = mpsc::channel(buffer);
        self.pending().insert(id, tx);
        let msg = AggregatorMessage {
            msg: Some(aggregator_message::Msg::Command(command)),
        };
        if self.tx.send(msg).await.is_err() {
            self.pending().remove(&id);
            return None;
        }
        Some((id, rx))
    }

    /// Stops a streaming command and forgets it.
    pub fn cancel(&self, id: u64) {
        self.pending().remove(&id);
        let _ = self.tx.try_send(AggregatorMessage {
            msg: Some(aggregator_message::Msg::Cancel(fleet_proto::v1::Cancel {
                id,
            })),
        });
    }

    /// Hands a result to whoever waits for it. Final results end the wait.
    pub async fn deliver(&self, result: CommandResult) {
        use fleet_proto::v1::command_result::Result as R;
        let last = !matches!(result.result, Some(R::Frame(_)));
        let tx = {
            let mut p = self.pending();
            if last {
                p.remove(&result.id)
            } else {
                p.get(&result.id).cloned()
            }
        };
        if let Some(tx) = tx {
            // A viewer that cannot keep up loses frames, never the link.
            let _ = tx.try_send(result);
        }
    }

    pub fn resync(&self, reason: &str) {
        let _ = self.tx.try_send(AggregatorMessage {
            msg: Some(aggregator_message::Msg::Resync(Resync {
                reason: reason.to_owned(),
            })),
        });
    }

    pub fn send_now(&self, msg: AggregatorMessage) -> bool {
        self.tx.try_send(msg).is_ok()
    }
}

struct HostEntry {
    row: HostRow,
    agents: BTreeMap<String, AgentRow>,
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
    link: Option<Link>,
    last_heard: Instant,
    /// The host's own event sequence number, newest seen (same epoch).
    last_event_seq: u64,
}

struct Inner {
    hosts: HashMap<HostKey, HostEntry>,
}

pub struct State {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Arc<Change>>,
    pub events: EventLog,
    /// Random per aggregator start (the `epoch` of its WatchFleet streams).
    pub epoch: u64,
    pub name: String,
    pub lease: Duration,
    next_link: AtomicU64,
    /// Updates (snapshot chunks and deltas) applied, and the rows in them.
    pub applied: AtomicU64,
    pub applied_rows: AtomicU64,
}

/// Why an update was not applied.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
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

/// A change to a host's row alone.
fn host_only(row: HostRow) -> Delta {
    Delta {
        upserts: vec![],
        removals: vec![],
        hosts: vec![row],
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

/// Host flag: a second hostd with this identity tried to link while the
/// first was live.
pub const DUPLICATE: &str = "duplicate-identity";

/// Most agent rows one host may hold, pending snapshot included.
pub const MAX_HOST_ROWS: usize = 100_000;
/// Most bytes (encoded rows) one pending snapshot may hold.
pub const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;

impl State {
    pub fn new(name: &str, lease: Duration, event_backlog: usize) -> Arc<Self> {
        let (changes, _) = broadcast::channel(65_536);
        Arc::new(Self {
            inner: Mutex::new(Inner {
                hosts: HashMap::new(),
            }),
            changes,
            events: EventLog::new("", "", event_backlog),
            epoch: rand::random(),
            name: name.to_owned(),
            lease,
            next_link: AtomicU64::new(1),
            applied: AtomicU64::new(0),
            applied_rows: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, tenant: &str, delta: Delta) {
        let _ = self.changes.send(Arc::new(Change {
            tenant: tenant.to_owned(),
            delta,
        }));
    }

    fn host_event(&self, key: &HostKey, kind: &str, message: String) {
        self.events.record(Event {
            ts_unix_ms: clock::now_ms(),
            tenant_id: key.0.clone(),
            host: key.1.clone(),
            kind: kind.to_owned(),
            message,
            ..Default::default()
        });
    }

    /// Registers a new stream for the host in `hello`, replacing any older
    /// one. Returns the link and the newest event sequence number already
    /// held from this boot epoch of the host.
    /// Takes a new stream for a host, unless another hostd with the same
    /// identity (another boot epoch) is live on one: that is refused and
    /// the host flagged `duplicate-identity`. A real restart — the old
    /// stream gone, or silent past its lease — takes over at once.
    pub fn attach(
        &self,
        hello: &Hello,
        tx: mpsc::Sender<AggregatorMessage>,
    ) -> Result<(Link, u64), String> {
        let key = (hello.tenant_id.clone(), hello.host.clone());
        let link = Link::new(
            self.next_link.fetch_add(1, Ordering::Relaxed),
            tx,
            Limits::of(hello),
        );
        let mut inner = self.lock();
        let now = Instant::now();
        let entry = inner.hosts.entry(key.clone()).or_insert_with(|| HostEntry {
            row: HostRow {
                tenant_id: key.0.clone(),
                host: key.1.clone(),
                ..Default::default()
            },
            agents: BTreeMap::new(),
            epoch: hello.boot_epoch,
            seq: None,
            pending: None,
            pending_bytes: 0,
            duplicate_since: None,
            awaiting_snapshot: true,
            link: None,
            last_heard: now,
            last_event_seq: 0,
        });
        let live = entry.link.is_some() && now.duration_since(entry.last_heard) <= self.lease;
        if live && entry.epoch != hello.boot_epoch {
            let why = format!(
                "another hostd with the identity {}/{} is live (boot epoch {:x}); this one (boot epoch {:x}) is refused",
                key.0, key.1, entry.epoch, hello.boot_epoch
            );
            entry.duplicate_since = Some(now);
            let flagged = !entry.row.flags.iter().any(|f| f == DUPLICATE);
            if flagged {
                entry.row.flags.push(DUPLICATE.into());
            }
            let row = entry.row.clone();
            drop(inner);
            if flagged {
                self.publish(&key.0, host_only(row));
                self.host_event(&key, "duplicate-identity", why.clone());
            }
            return Err(why);
        }
        if let Some(old) = entry.link.replace(link.clone()) {
            old.kill.notify_one();
        }
        if entry.epoch != hello.boot_epoch {
            entry.epoch = hello.boot_epoch;
            entry.last_event_seq = 0;
        }
        entry.seq = None;
        entry.pending = None;
        entry.awaiting_snapshot = true;
        entry.last_heard = now;
        entry.row.uid = hello.uid;
        entry.row.hostd_version = hello.hostd_version.clone();
        entry.row.boot_epoch = hello.boot_epoch;
        let events_after = entry.last_event_seq;
        drop(inner);
        self.host_event(
            &key,
            "host-connected",
            format!(
                "hostd {} connected (boot epoch {:x})",
                hello.hostd_version, hello.boot_epoch
            ),
        );
        Ok((link, events_after))
    }

    /// Applies one update from the stream `link_id` of `key`. Rows with
    /// names that are not names are refused (`Dropped`); a host over its
    /// bounds is `Refused`, and its pending snapshot forgotten.
    pub fn apply(&self, key: &HostKey, link_id: u64, update: FleetUpdate) -> Applied {
        let mut inner = self.lock();
        let Some(entry) = inner.hosts.get_mut(key) else {
            return Applied::Superseded;
        };
        if entry.link.as_ref().map(|l| l.id) != Some(link_id) {
            return Applied::Superseded;
        }
        entry.last_heard = Instant::now();
        if update.epoch != entry.epoch {
            return Applied::Stale;
        }
        if entry.seq.is_some_and(|s| update.seq <= s) {
            return Applied::Stale;
        }
        let name = self.name.clone();
        let mut dropped: Vec<String> = Vec::new();
        let mut fix = |mut r: AgentRow| {
            // Names from a peer are checked like names from a roster.
            if fleet_proto::name::check(&r.name).is_err() {
                let shown: String = r.name.escape_debug().take(80).collect();
                dropped.push(shown);
                return None;
            }
            // A host publishes only for itself, whatever its rows say.
            r.tenant_id.clone_from(&key.0);
            r.host.clone_from(&key.1);
            Some(r)
        };
        let host_row = |entry: &mut HostEntry, h: Option<HostRow>| {
            if let Some(mut h) = h {
                h.tenant_id.clone_from(&key.0);
                h.host.clone_from(&key.1);
                entry.row = h;
            }
            entry.row.link = "connected".into();
            entry.row.via.clone_from(&name);
            entry.row.last_seen_unix_ms = clock::now_ms();
            entry.row.flags.retain(|f| f != UNREACHABLE);
        };
        let delta = match update.update {
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
                let mut next: BTreeMap<String, AgentRow> =
                    rows.into_iter().map(|r| (r.name.clone(), r)).collect();
                let removals: Vec<AgentKey> = entry
                    .agents
                    .keys()
                    .filter(|n| !next.contains_key(*n))
                    .map(|n| AgentKey {
                        tenant_id: key.0.clone(),
                        host: key.1.clone(),
                        name: n.clone(),
                    })
                    .collect();
                let upserts: Vec<AgentRow> = next
                    .values()
                    .filter(|r| entry.agents.get(&r.name) != Some(*r))
                    .cloned()
                    .collect();
                std::mem::swap(&mut entry.agents, &mut next);
                host_row(entry, snap.hosts.into_iter().next());
                entry.seq = Some(update.seq);
                entry.awaiting_snapshot = false;
                Delta {
                    upserts,
                    removals,
                    hosts: vec![entry.row.clone()],
                }
            }
            Some(fleet_update::Update::Delta(d)) => {
                if entry.awaiting_snapshot || entry.pending.is_some() {
                    return Applied::Stale;
                }
                if entry.seq.is_some_and(|s| update.seq != s + 1) {
                    entry.awaiting_snapshot = true;
                    return Applied::Gap;
                }
                let upserts: Vec<AgentRow> = d.upserts.into_iter().filter_map(&mut fix).collect();
                let new = upserts
                    .iter()
                    .filter(|r| !entry.agents.contains_key(&r.name))
                    .count();
                if entry.agents.len() + new > MAX_HOST_ROWS {
                    return Applied::Refused(format!(
                        "more than {MAX_HOST_ROWS} agent rows for one host"
                    ));
                }
                for r in &upserts {
                    entry.agents.insert(r.name.clone(), r.clone());
                }
                let removals: Vec<AgentKey> = d
                    .removals
                    .into_iter()
                    .filter(|k| entry.agents.remove(&k.name).is_some())
                    .map(|k| AgentKey {
                        tenant_id: key.0.clone(),
                        host: key.1.clone(),
                        name: k.name,
                    })
                    .collect();
                host_row(entry, d.hosts.into_iter().next());
                entry.seq = Some(update.seq);
                Delta {
                    upserts,
                    removals,
                    hosts: vec![entry.row.clone()],
                }
            }
            None => return Applied::Stale,
        };
        drop(inner);
        self.applied.fetch_add(1, Ordering::Relaxed);
        self.applied_rows
            .fetch_add(delta.upserts.len() as u64, Ordering::Relaxed);
        self.publish(&key.0, delta);
        settle(dropped)
    }

    /// Anything at all arrived on the stream: the lease is renewed.
    pub fn heard(&self, key: &HostKey, link_id: u64) {
        let mut inner = self.lock();
        if let Some(e) = inner.hosts.get_mut(key)
            && e.link.as_ref().map(|l| l.id) == Some(link_id)
        {
            e.last_heard = Instant::now();
        }
    }

    /// Records an event a host forwarded.
    /// Records an event a host forwarded; one naming an agent by what is
    /// no name is dropped (`false`), like such a row.
    pub fn host_forwarded_event(&self, key: &HostKey, link_id: u64, mut ev: Event) -> bool {
        if !ev.agent.is_empty() && fleet_proto::name::check(&ev.agent).is_err() {
            return false;
        }
        {
            let mut inner = self.lock();
            let Some(e) = inner.hosts.get_mut(key) else {
                return true;
            };
            if e.link.as_ref().map(|l| l.id) != Some(link_id) {
                return true;
            }
            if ev.seq <= e.last_event_seq {
                return true;
            }
            e.last_event_seq = ev.seq;
        }
        ev.tenant_id.clone_from(&key.0);
        ev.host.clone_from(&key.1);
        self.events.record(ev);
        true
    }

    /// The stream `link_id` ended: the host is unreachable at once (unless a
    /// newer stream already replaced it).
    pub fn detach(&self, key: &HostKey, link_id: u64, why: &str) {
        let mut inner = self.lock();
        let Some(e) = inner.hosts.get_mut(key) else {
            return;
        };
        if e.link.as_ref().map(|l| l.id) != Some(link_id) {
            return;
        }
        e.link = None;
        let delta = mark_unreachable(e);
        drop(inner);
        self.publish(&key.0, delta);
        self.host_event(key, "host-unreachable", format!("host stream lost: {why}"));
    }

    /// Expires leases: hosts not heard from within the lease become
    /// unreachable and their streams are ended.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut inner = self.lock();
        let mut cleared = Vec::new();
        for (key, e) in &mut inner.hosts {
            // No duplicate seen for a whole lease: the flag goes.
            if e.duplicate_since
                .is_some_and(|t| now.duration_since(t) > self.lease * 2)
            {
                e.duplicate_since = None;
                e.row.flags.retain(|f| f != DUPLICATE);
                cleared.push((key.clone(), e.row.clone()));
            }
            if e.link.is_some() && now.duration_since(e.last_heard) > self.lease {
                if let Some(l) = e.link.take() {
                    l.kill.notify_one();
                }
                expired.push((key.clone(), mark_unreachable(e)));
            }
        }
        drop(inner);
        for (key, row) in cleared {
            self.publish(&key.0, host_only(row));
        }
        for (key, delta) in expired {
            self.publish(&key.0, delta);
            self.host_event(
                &key,
                "host-unreachable",
                format!("nothing heard for longer than the {:?} lease", self.lease),
            );
        }
    }

    /// The current stream of a host, or why there is none.
    pub fn link(&self, key: &HostKey) -> Result<Link, String> {
        let inner = self.lock();
        match inner.hosts.get(key) {
            Some(HostEntry { link: Some(l), .. }) => Ok(l.clone()),
            Some(e) => Err(format!(
                "host {}/{} is unreachable (last seen {}); nothing was sent",
                key.0,
                key.1,
                ago(e.row.last_seen_unix_ms)
            )),
            None => Err(format!("no host {}/{} is known", key.0, key.1)),
        }
    }

    /// Every agent row of the tenants `visible` admits.
    pub fn agents(&self, visible: &dyn Fn(&str) -> bool) -> Vec<AgentRow> {
        let inner = self.lock();
        inner
            .hosts
            .iter()
            .filter(|(k, _)| visible(&k.0))
            .flat_map(|(_, e)| e.agents.values().cloned())
            .collect()
    }

    /// Rows named `name` (what address resolution needs), for visible tenants.
    pub fn agents_named(&self, name: &str, visible: &dyn Fn(&str) -> bool) -> Vec<AgentRow> {
        let inner = self.lock();
        inner
            .hosts
            .iter()
            .filter(|(k, _)| visible(&k.0))
            .filter_map(|(_, e)| e.agents.get(name).cloned())
            .collect()
    }

    pub fn hosts(&self, visible: &dyn Fn(&str) -> bool) -> Vec<HostRow> {
        let inner = self.lock();
        let mut rows: Vec<HostRow> = inner
            .hosts
            .iter()
            .filter(|(k, _)| visible(&k.0))
            .map(|(_, e)| e.row.clone())
            .collect();
        rows.sort_by(|a, b| (&a.tenant_id, &a.host).cmp(&(&b.tenant_id, &b.host)));
        rows
    }

    /// A consistent snapshot and a receiver of every change after it.
    pub fn subscribe(
        &self,
        visible: &dyn Fn(&str) -> bool,
    ) -> (
        Vec<AgentRow>,
        Vec<HostRow>,
        broadcast::Receiver<Arc<Change>>,
    ) {
        let inner = self.lock();
        let rx = self.changes.subscribe();
        let mut agents = Vec::new();
        let mut hosts = Vec::new();
        for (k, e) in &inner.hosts {
            if visible(&k.0) {
                agents.extend(e.agents.values().cloned());
                hosts.push(e.row.clone());
            }
        }
        (agents, hosts, rx)
    }

    /// Counts for benchmarks and health: (hosts, connected hosts, agents).
    pub fn counts(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        let connected = inner.hosts.values().filter(|e| e.link.is_some()).count();
        let agents = inner.hosts.values().map(|e| e.agents.len()).sum();
        (inner.hosts.len(), connected, agents)
    }
}

fn ago(ms: i64) -> String {
    if ms == 0 {
        return "never".into();
    }
    let secs = (clock::now_ms() - ms).max(0) / 1000;
    format!("{secs} s ago")
}

/// Keeps every last known value, dated, and says plainly that it is old.
fn mark_unreachable(e: &mut HostEntry) -> Delta {
    e.row.link = UNREACHABLE.into();
    if !e.row.flags.iter().any(|f| f == UNREACHABLE) {
        e.row.flags.push(UNREACHABLE.into());
    }
    let since = e.row.last_seen_unix_ms;
    for r in e.agents.values_mut() {
        if !r.flags.iter().any(|f| f == UNREACHABLE) {
            r.flags.push(UNREACHABLE.into());
        }
        let hb = r.heartbeat.get_or_insert_with(Default::default);
        hb.health = Health::Unknown as i32;
        hb.reason = format!("host unreachable; last seen {}", clock::rfc3339(since));
    }
    e.pending = None;
    e.awaiting_snapshot = true;
    Delta {
        upserts: e.agents.values().cloned().collect(),
        removals: vec![],
        hosts: vec![e.row.clone()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_proto::v1::{Snapshot, aggregator_message::Msg};

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
            update: Some(fleet_update::Update::Snapshot(Snapshot {
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

    fn key() -> HostKey {
        ("acme".into(), "box1".into())
    }

    fn all(s: &State) -> Vec<AgentRow> {
        let mut v = s.agents(&|_| true);
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    #[tokio::test]
    async fn chunked_snapshots_apply_whole_and_rows_are_filed_under_the_link() {
        let s = State::new("agg", Duration::from_secs(30), 100);
        let (tx, _rx) = mpsc::channel(8);
        let (link, after) = s.attach(&hello(1), tx).unwrap();
        assert_eq!(after, 0);
        assert_eq!(
            s.apply(&key(), link.id, snap(1, 1, vec![row("a", 0)], true)),
            Applied::Ok
        );
        assert!(all(&s).is_empty(), "half a snapshot must not show");
        assert_eq!(
            s.apply(&key(), link.id, snap(1, 2, vec![row("b", 0)], false)),
            Applied::Ok
        );
        let rows = all(&s);
        assert_eq!(
            rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(
            rows.iter()
                .all(|r| r.tenant_id == "acme" && r.host == "box1")
        );
        assert_eq!(s.hosts(&|_| true)[0].link, "connected");
    }

    #[tokio::test]
    async fn stale_updates_are_dropped_and_a_gap_asks_for_a_snapshot() {
        let s = State::new("agg", Duration::from_secs(30), 100);
        let (tx, mut rx) = mpsc::channel(8);
        let (link, _) = s.attach(&hello(1), tx).unwrap();
        assert_eq!(
            s.apply(&key(), link.id, snap(1, 1, vec![row("a", 0)], false)),
            Applied::Ok
        );
        assert_eq!(
            s.apply(&key(), link.id, delta(1, 2, vec![row("a", 5)])),
            Applied::Ok
        );
        // Replayed or from another boot epoch: ignored.
        assert_eq!(
            s.apply(&key(), link.id, delta(1, 2, vec![row("a", 1)])),
            Applied::Stale
        );
        assert_eq!(
            s.apply(&key(), link.id, delta(9, 3, vec![row("a", 1)])),
            Applied::Stale
        );
        assert_eq!(all(&s)[0].heartbeat.as_ref().unwrap().turn, Some(5));
        // seq 4 after 2: a gap; deltas wait for the next snapshot.
        assert_eq!(
            s.apply(&key(), link.id, delta(1, 4, vec![row("a", 7)])),
            Applied::Gap
        );
        link.resync("gap");
        assert!(matches!(rx.try_recv().unwrap().msg, Some(Msg::Resync(_))));
        assert_eq!(
            s.apply(&key(), link.id, delta(1, 5, vec![row("a", 8)])),
            Applied::Stale
        );
        assert_eq!(
            s.apply(&key(), link.id, snap(1, 6, vec![row("a", 9)], false)),
            Applied::Ok
        );
        assert_eq!(all(&s)[0].heartbeat.as_ref().unwrap().turn, Some(9));
    }

    #[tokio::test]
    async fn a_lost_host_is_unreachable_with_its_last_values_and_a_new_link_supersedes() {
        let s = State::new("agg", Duration::from_millis(50), 100);
        let mut changes = s.changes.subscribe();
        let (tx, _rx) = mpsc::channel(8);
        let (old, _) = s.attach(&hello(1), tx.clone()).unwrap();
        assert_eq!(
            s.apply(&key(), old.id, snap(1, 1, vec![row("a", 3)], false)),
            Applied::Ok
        );
        tokio::time::sleep(Duration::from_millis(80)).await;
        s.sweep();
        let h = &s.hosts(&|_| true)[0];
        assert_eq!(h.link, UNREACHABLE);
        assert!(h.flags.iter().any(|f| f == UNREACHABLE));
        let r = &all(&s)[0];
        let hb = r.heartbeat.as_ref().unwrap();
        assert_eq!(hb.health, Health::Unknown as i32);
        assert!(hb.reason.starts_with("host unreachable"), "{}", hb.reason);
        assert_eq!(hb.turn, Some(3), "last known values are kept");
        assert!(s.link(&key()).err().unwrap().contains("unreachable"));
        // Every change was published for operators.
        let mut published = 0;
        while changes.try_recv().is_ok() {
            published += 1;
        }
        assert_eq!(published, 2);
        // The host comes back on a new link; the old one's end is ignored.
        let (new, _) = s.attach(&hello(1), tx).unwrap();
        assert_eq!(
            s.apply(&key(), old.id, snap(1, 2, vec![], false)),
            Applied::Superseded
        );
        assert_eq!(
            s.apply(&key(), new.id, snap(1, 1, vec![row("a", 4)], false)),
            Applied::Ok
        );
        s.detach(&key(), old.id, "old stream ended");
        assert_eq!(s.hosts(&|_| true)[0].link, "connected");
        assert!(all(&s)[0].flags.is_empty());
    }

    #[tokio::test]
    async fn forwarded_events_are_not_duplicated_after_a_reconnect() {
        let s = State::new("agg", Duration::from_secs(30), 100);
        let (tx, _rx) = mpsc::channel(8);
        let (link, _) = s.attach(&hello(1), tx.clone()).unwrap();
        for seq in [1, 2, 2, 3] {
            s.host_forwarded_event(
                &key(),
                link.id,
                Event {
                    seq,
                    kind: "started".into(),
                    ..Default::default()
                },
            );
        }
        let (backlog, _) = s.events.subscribe(0);
        assert_eq!(backlog.iter().filter(|e| e.kind == "started").count(), 3);
        let (again, after) = s.attach(&hello(1), tx.clone()).unwrap();
        assert_eq!(after, 3, "the host resumes after the newest event held");
        // A restarted hostd (its old stream gone) starts over.
        s.detach(&key(), again.id, "closed by the host");
        let (_, after) = s.attach(&hello(2), tx).unwrap();
        assert_eq!(after, 0, "a new boot epoch starts over");
    }

    #[test]
    fn a_second_live_hostd_with_one_identity_is_refused_and_flagged() {
        let s = State::new("agg", Duration::from_millis(200), 100);
        let (tx, _rx) = mpsc::channel(16);
        let (first, _) = s.attach(&hello(1), tx.clone()).unwrap();
        let Err(why) = s.attach(&hello(2), tx.clone()) else {
            panic!("a second live hostd was let in");
        };
        assert!(why.contains("another hostd"), "{why}");
        let flags = &s.hosts(&|_| true)[0].flags;
        assert!(flags.iter().any(|f| f == DUPLICATE), "{flags:?}");
        // The same process reconnecting (same epoch) takes over.
        let (again, _) = s.attach(&hello(1), tx.clone()).unwrap();
        assert_ne!(again.id, first.id);
        // Silent past its lease, the first one gives way to a restart.
        std::thread::sleep(Duration::from_millis(250));
        let (_, _) = s.attach(&hello(2), tx).unwrap();
    }
}
