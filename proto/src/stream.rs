//! Server-streaming helpers shared by hostd and the aggregator.

use std::borrow::Borrow;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;

/// The boxed stream type every streaming RPC returns.
pub type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// `stream` until `shutdown` turns true; then one `UNAVAILABLE` naming
/// `why` (so a client knows to reconnect, not that it saw the end) and
/// the end. A daemon's graceful stop never waits on a stream left open.
pub fn until_shutdown<T: Send + 'static>(
    stream: Streamed<T>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    why: &'static str,
) -> Streamed<T> {
    Box::pin(Until {
        inner: stream,
        stop: Some(tokio_stream::wrappers::WatchStream::new(shutdown)),
        why,
        done: false,
    })
}

struct Until<T> {
    inner: Streamed<T>,
    /// `None` once the sender is gone (no shutdown can come any more).
    stop: Option<tokio_stream::wrappers::WatchStream<bool>>,
    why: &'static str,
    done: bool,
}

impl<T> Stream for Until<T> {
    type Item = Result<T, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        while let Some(stop) = self.stop.as_mut() {
            match Pin::new(stop).poll_next(cx) {
                Poll::Ready(Some(true)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(Status::unavailable(self.why))));
                }
                Poll::Ready(Some(false)) => continue,
                Poll::Ready(None) => self.stop = None,
                Poll::Pending => break,
            }
        }
        self.inner.as_mut().poll_next(cx)
    }
}

/// Streaming clients shed so far (too slow for their buffer or behind the
/// event broadcast), for the daemons' metrics.
pub static SHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn shed_one() {
    SHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Queues one message, or sheds a client whose buffer is full: it gets
/// `RESOURCE_EXHAUSTED` and should call again for a fresh snapshot.
pub async fn offer<T>(tx: &mpsc::Sender<Result<T, Status>>, item: T) -> bool {
    match tx.try_send(Ok(item)) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Closed(_)) => false,
        Err(mpsc::error::TrySendError::Full(_)) => {
            shed_one();
            let shed = Status::resource_exhausted("client too slow; call again to resync");
            let _ = tx.send_timeout(Err(shed), Duration::from_secs(1)).await;
            false
        }
    }
}

/// What an `Events` reader asked for, applied the same way by hostd and
/// the aggregator: `agent` is an address (`AGENT`, `HOST/AGENT` or
/// `TENANT/HOST/AGENT`; empty = every agent and host-level events) and
/// `kinds` kind words (empty = all).
#[derive(Debug, Clone)]
pub struct EventFilter {
    agent: Option<crate::address::Address>,
    kinds: Vec<String>,
    select: crate::select::Select,
    since_ms: i64,
    until_ms: i64,
}

impl EventFilter {
    pub fn new(req: &crate::v1::EventsRequest) -> Result<Self, tonic::Status> {
        let agent = match req.agent.as_str() {
            "" => None,
            a => Some(crate::address::Address::parse(a)?),
        };
        Ok(Self {
            agent,
            kinds: req.kinds.clone(),
            select: crate::select::Select::new(req.selector.as_ref())?,
            since_ms: req.since_unix_ms,
            until_ms: req.until_unix_ms,
        })
    }

    pub fn matches(&self, e: &crate::v1::Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            && e.ts_unix_ms >= self.since_ms
            && (self.until_ms <= 0 || e.ts_unix_ms <= self.until_ms)
            && self
                .agent
                .as_ref()
                .is_none_or(|a| a.names(&e.tenant_id, &e.host, &e.agent))
            && self.select.event(e)
    }
}

/// The `Events` stream: `backlog` (already after the caller's `after_seq`)
/// then, when `follow`, live events — both filtered by `wanted`. A reader
/// that falls behind the broadcast is told so and cut off.
pub fn events(
    backlog: Vec<crate::v1::Event>,
    mut live: tokio::sync::broadcast::Receiver<crate::v1::Event>,
    follow: bool,
    wanted: impl Fn(&crate::v1::Event) -> bool + Send + Sync + 'static,
) -> Streamed<crate::v1::Event> {
    use tokio::sync::broadcast::error::RecvError;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        for e in backlog.into_iter().filter(|e| wanted(e)) {
            if tx.send(Ok(e)).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        loop {
            match live.recv().await {
                Ok(e) if wanted(&e) => {
                    if !offer(&tx, e).await {
                        return;
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    shed_one();
                    let _ = tx
                        .send(Err(Status::resource_exhausted(format!(
                            "event stream fell {n} events behind; reconnect with after_seq"
                        ))))
                        .await;
                    return;
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// How a snapshot is cut into messages: at most `rows` agent rows and,
/// past its first row, at most about `bytes` encoded bytes each.
#[derive(Clone, Copy, Debug)]
pub struct Chunk {
    pub rows: usize,
    pub bytes: usize,
}

impl Chunk {
    /// At most `rows` rows a message, whatever their size.
    pub const fn rows(rows: usize) -> Self {
        Self {
            rows,
            bytes: usize::MAX,
        }
    }
}

/// A snapshot as messages cut by `chunk`; every message but the last says
/// `more`, and the hosts ride with the last one.
pub fn snapshot_chunks<R: Borrow<crate::v1::AgentRow>>(
    agents: &[R],
    hosts: Vec<crate::v1::HostRow>,
    chunk: Chunk,
) -> Vec<crate::v1::Snapshot> {
    use prost::Message;
    let mut parts: Vec<crate::v1::Snapshot> = Vec::new();
    let mut part = crate::v1::Snapshot {
        more: true,
        ..Default::default()
    };
    let mut bytes = 0;
    for r in agents {
        let r = r.borrow();
        let size = if chunk.bytes == usize::MAX {
            0
        } else {
            r.encoded_len()
        };
        if !part.agents.is_empty()
            && (part.agents.len() >= chunk.rows.max(1) || bytes + size > chunk.bytes)
        {
            parts.push(std::mem::replace(
                &mut part,
                crate::v1::Snapshot {
                    more: true,
                    ..Default::default()
                },
            ));
            bytes = 0;
        }
        bytes += size;
        part.agents.push(r.clone());
    }
    if !part.agents.is_empty() {
        parts.push(part);
    }
    if parts.is_empty() {
        parts.push(crate::v1::Snapshot::default());
    }
    if let Some(last) = parts.last_mut() {
        last.more = false;
        last.hosts = hosts;
    }
    parts
}

/// The framing of one `WatchFleet` or `HostLink` stream: every message
/// carries the sender's epoch and the next sequence number (from 0) and is
/// stamped when it is made. Both daemons number their streams with this.
#[derive(Debug)]
pub struct Frames {
    epoch: u64,
    seq: u64,
}

impl Frames {
    pub fn new(epoch: u64) -> Self {
        Self { epoch, seq: 0 }
    }

    /// The next message, carrying `update`.
    pub fn next(&mut self, update: crate::v1::fleet_update::Update) -> crate::v1::FleetUpdate {
        let u = crate::v1::FleetUpdate {
            epoch: self.epoch,
            seq: self.seq,
            update: Some(update),
            generated_at_unix_ms: crate::clock::now_ms(),
        };
        self.seq += 1;
        u
    }

    /// A snapshot as numbered messages of at most `chunk` rows.
    pub fn snapshot<R: Borrow<crate::v1::AgentRow>>(
        &mut self,
        agents: &[R],
        hosts: Vec<crate::v1::HostRow>,
        chunk: Chunk,
    ) -> Vec<crate::v1::FleetUpdate> {
        snapshot_chunks(agents, hosts, chunk)
            .into_iter()
            .map(|s| self.next(crate::v1::fleet_update::Update::Snapshot(s)))
            .collect()
    }

    pub fn delta(&mut self, d: crate::v1::Delta) -> crate::v1::FleetUpdate {
        self.next(crate::v1::fleet_update::Update::Delta(d))
    }
}

/// What changed between one host's two views: rows that changed or
/// appeared, rows that vanished, and the host row when it changed in more
/// than its last-seen time. `None` when nothing did. A row the next view
/// shares with the previous one (the same `Arc`) is unchanged without a
/// look at its fields.
pub fn diff(
    (prev_agents, prev_host): (&[Arc<crate::v1::AgentRow>], &crate::v1::HostRow),
    (next_agents, next_host): (&[Arc<crate::v1::AgentRow>], &crate::v1::HostRow),
) -> Option<crate::v1::Delta> {
    use std::collections::{HashMap, HashSet};
    let same_names = prev_agents.len() == next_agents.len()
        && prev_agents
            .iter()
            .zip(next_agents)
            .all(|(p, n)| Arc::ptr_eq(p, n) || p.name == n.name);
    let (upserts, removals): (Vec<crate::v1::AgentRow>, Vec<crate::v1::AgentKey>) = if same_names {
        // The usual case (the same agents in the same order): pairwise.
        let upserts = prev_agents
            .iter()
            .zip(next_agents)
            .filter(|(p, n)| !Arc::ptr_eq(p, n) && p != n)
            .map(|(_, n)| crate::v1::AgentRow::clone(n))
            .collect();
        (upserts, Vec::new())
    } else {
        let old: HashMap<&str, &Arc<crate::v1::AgentRow>> =
            prev_agents.iter().map(|r| (r.name.as_str(), r)).collect();
        let upserts = next_agents
            .iter()
            .filter(|r| old.get(r.name.as_str()) != Some(r))
            .map(|r| crate::v1::AgentRow::clone(r))
            .collect();
        let new: HashSet<&str> = next_agents.iter().map(|r| r.name.as_str()).collect();
        let removals = prev_agents
            .iter()
            .filter(|r| !new.contains(r.name.as_str()))
            .map(|r| crate::v1::AgentKey {
                tenant_id: r.tenant_id.clone(),
                host: r.host.clone(),
                name: r.name.clone(),
            })
            .collect();
        (upserts, removals)
    };
    let hosts = if same_but_last_seen(prev_host, next_host) {
        vec![]
    } else {
        vec![next_host.clone()]
    };
    if upserts.is_empty() && removals.is_empty() && hosts.is_empty() {
        None
    } else {
        Some(crate::v1::Delta {
            upserts,
            removals,
            hosts,
        })
    }
}

/// Whether two host rows differ in at most their last-seen time (every
/// field named, so a new one cannot be forgotten here).
fn same_but_last_seen(a: &crate::v1::HostRow, b: &crate::v1::HostRow) -> bool {
    let crate::v1::HostRow {
        tenant_id,
        host,
        uid,
        hostd_version,
        boot_epoch,
        started_at_unix_ms,
        tmux_socket,
        tmux_running,
        agents_total,
        agents_alive,
        agents_healthy,
        unit,
        flags,
        roster_path,
        roster_loaded_at_unix_ms,
        last_seen_unix_ms: _,
        link,
        via,
        uplinks,
        flag_codes,
    } = a;
    *tenant_id == b.tenant_id
        && *host == b.host
        && *uid == b.uid
        && *hostd_version == b.hostd_version
        && *boot_epoch == b.boot_epoch
        && *started_at_unix_ms == b.started_at_unix_ms
        && *tmux_socket == b.tmux_socket
        && *tmux_running == b.tmux_running
        && *agents_total == b.agents_total
        && *agents_alive == b.agents_alive
        && *agents_healthy == b.agents_healthy
        && *unit == b.unit
        && *flags == b.flags
        && *roster_path == b.roster_path
        && *roster_loaded_at_unix_ms == b.roster_loaded_at_unix_ms
        && *link == b.link
        && *via == b.via
        && *uplinks == b.uplinks
        && *flag_codes == b.flag_codes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{AgentRow, Event, EventsRequest, HostRow};

    #[test]
    fn diff_finds_changed_new_and_gone_rows_in_either_order() {
        let row = |n: &str, cmd: &str| AgentRow {
            name: n.into(),
            pane_command: cmd.into(),
            ..Default::default()
        };
        let arcs = |v: Vec<AgentRow>| v.into_iter().map(Arc::new).collect::<Vec<_>>();
        let host = HostRow::default();
        let a = arcs(vec![row("a", "x"), row("b", "x")]);
        assert!(diff((&a, &host), (&a, &host)).is_none(), "nothing changed");
        let moved = HostRow {
            last_seen_unix_ms: 5,
            ..Default::default()
        };
        assert!(
            diff((&a, &host), (&a, &moved)).is_none(),
            "a newer last-seen time alone is no change"
        );
        // Same names, same order: the changed row only.
        let b = arcs(vec![row("a", "x"), row("b", "y")]);
        let d = diff((&a, &host), (&b, &host)).unwrap();
        assert_eq!(d.upserts, vec![row("b", "y")]);
        assert!(d.removals.is_empty() && d.hosts.is_empty());
        // Reordered, one gone, one new, one changed.
        let c = arcs(vec![row("c", "z"), row("a", "w")]);
        let d = diff((&a, &host), (&c, &host)).unwrap();
        assert_eq!(d.upserts, vec![row("c", "z"), row("a", "w")]);
        assert_eq!(
            d.removals
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        let flagged = HostRow {
            agents_total: 2,
            ..Default::default()
        };
        assert_eq!(
            diff((&a, &host), (&a, &flagged)).unwrap().hosts,
            vec![flagged]
        );
    }

    #[test]
    fn one_event_filter_reads_every_address_form() {
        let e = |t: &str, h: &str, a: &str, k: &str| Event {
            tenant_id: t.into(),
            host: h.into(),
            agent: a.into(),
            kind: k.into(),
            ..Default::default()
        };
        let f = |agent: &str, kinds: &[&str]| {
            EventFilter::new(&EventsRequest {
                agent: agent.into(),
                kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
                ..Default::default()
            })
            .unwrap()
        };
        let died = e("acme", "h1", "coder", "died");
        assert!(f("", &[]).matches(&died));
        assert!(f("coder", &[]).matches(&died));
        assert!(f("h1/coder", &["died"]).matches(&died));
        assert!(f("acme/h1/coder", &[]).matches(&died));
        assert!(!f("h2/coder", &[]).matches(&died));
        assert!(!f("globex/h1/coder", &[]).matches(&died));
        assert!(!f("coder", &["started"]).matches(&died));
        assert!(!f("coder", &[]).matches(&e("acme", "h1", "", "roster-reloaded")));
        assert!(f("", &[]).matches(&e("acme", "h1", "", "roster-reloaded")));
        for bad in ["a:b", "a/b/c/d", "../x/y"] {
            let req = EventsRequest {
                agent: bad.into(),
                ..Default::default()
            };
            assert!(EventFilter::new(&req).is_err(), "{bad}");
        }
    }

    #[test]
    fn snapshots_are_chunked_with_hosts_on_the_last() {
        let rows: Vec<AgentRow> = (0..5)
            .map(|i| AgentRow {
                name: format!("a{i}"),
                ..Default::default()
            })
            .collect();
        let parts = snapshot_chunks(&rows, vec![HostRow::default()], Chunk::rows(2));
        assert_eq!(
            parts.iter().map(|p| p.agents.len()).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        assert_eq!(
            parts.iter().map(|p| p.more).collect::<Vec<_>>(),
            [true, true, false]
        );
        assert_eq!(
            parts.iter().map(|p| p.hosts.len()).collect::<Vec<_>>(),
            [0, 0, 1]
        );
        let empty = snapshot_chunks::<AgentRow>(&[], vec![HostRow::default()], Chunk::rows(2));
        assert_eq!(empty.len(), 1);
        assert!(!empty[0].more && empty[0].hosts.len() == 1);
    }

    #[test]
    fn a_snapshot_is_cut_by_bytes_too_but_never_below_one_row() {
        use prost::Message;
        let row = |n: usize| AgentRow {
            name: format!("a{n}"),
            pane_command: "x".repeat(100),
            ..Default::default()
        };
        let rows: Vec<AgentRow> = (0..5).map(row).collect();
        let one = rows[0].encoded_len();
        let by_bytes = Chunk {
            rows: 100,
            bytes: one * 2,
        };
        let parts = snapshot_chunks(&rows, vec![], by_bytes);
        assert_eq!(
            parts.iter().map(|p| p.agents.len()).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        let tiny = Chunk {
            rows: 100,
            bytes: 1,
        };
        let parts = snapshot_chunks(&rows, vec![], tiny);
        assert_eq!(parts.len(), 5, "a row bigger than the bound is a message");
        let all: Vec<String> = parts
            .into_iter()
            .flat_map(|p| p.agents)
            .map(|r| r.name)
            .collect();
        assert_eq!(all, ["a0", "a1", "a2", "a3", "a4"]);
    }
}
