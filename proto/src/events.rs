//! The lifecycle event log: a bounded backlog for late readers and a
//! broadcast for live ones. Never per heartbeat — only state changes.
//! hostd emits its own events; the aggregator also records the events its
//! hosts forward, renumbered in its own sequence.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::v1::{Event, EventKind};
use tokio::sync::broadcast;

use crate::clock;

#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Mutex<Backlog>>,
    live: broadcast::Sender<Event>,
    tenant: String,
    host: String,
}

/// Where every recorded event also goes, in order (a durable history, the
/// metrics, the OTLP log export); it must not wait.
pub type Sink = Arc<dyn Fn(&Event) + Send + Sync>;

struct Backlog {
    next_seq: u64,
    events: VecDeque<Event>,
    cap: usize,
    sinks: Vec<Sink>,
    /// The last sequence number of an earlier run (0: none).
    resumed_after: u64,
}

impl EventLog {
    pub fn new(tenant: &str, host: &str, cap: usize) -> Self {
        let (live, _) = broadcast::channel(1024);
        Self {
            inner: Arc::new(Mutex::new(Backlog {
                next_seq: 1,
                events: VecDeque::with_capacity(cap.min(4096)),
                cap,
                sinks: Vec::new(),
                resumed_after: 0,
            })),
            live,
            tenant: tenant.to_owned(),
            host: host.to_owned(),
        }
    }

    /// Records an event about `agent` on this log's own tenant and host and
    /// returns it (with its sequence number).
    pub fn emit(
        &self,
        agent: &str,
        kind: EventKind,
        message: impl Into<String>,
        fields: &[(&str, String)],
    ) -> Event {
        let message = message.into();
        tracing::info!(agent, kind = kind.word(), %message, "event");
        self.record(Event {
            seq: 0,
            ts_unix_ms: clock::now_ms(),
            tenant_id: self.tenant.clone(),
            host: self.host.clone(),
            agent: agent.to_owned(),
            kind: kind.word().to_owned(),
            kind_code: kind as i32,
            message,
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect(),
        })
    }

    /// Records an event made elsewhere (a host's, forwarded to an
    /// aggregator), giving it this log's next sequence number.
    pub fn record(&self, ev: Event) -> Event {
        let mut ev = ev.with_kind_code();
        let mut b = self.lock();
        ev.seq = b.next_seq;
        b.next_seq += 1;
        if b.events.len() == b.cap {
            b.events.pop_front();
        }
        b.events.push_back(ev.clone());
        for sink in &b.sinks {
            sink(&ev);
        }
        // Sent while the backlog lock is held, so a reader that takes the
        // backlog and subscribes under the same lock sees no gap and no
        // duplicate.
        let _ = self.live.send(ev.clone());
        ev
    }

    /// Continues a history: numbering after `last_seq`, the backlog
    /// starting from `recent` (the newest first-kept events, oldest first),
    /// and every event from now on also given to `sink`.
    pub fn resume(&self, last_seq: u64, recent: Vec<Event>, sink: Option<Sink>) {
        let mut b = self.lock();
        b.next_seq = b.next_seq.max(last_seq + 1);
        b.resumed_after = b.next_seq - 1;
        let skip = recent.len().saturating_sub(b.cap);
        for e in recent.into_iter().skip(skip) {
            if b.events.len() == b.cap {
                b.events.pop_front();
            }
            b.events.push_back(e);
        }
        b.sinks.extend(sink);
    }

    /// Every event from now on is also given to `sink`, after the sinks
    /// added before it.
    pub fn add_sink(&self, sink: Sink) {
        self.lock().sinks.push(sink);
    }

    /// Events numbered up to this one are an earlier run's (0: this log
    /// has no earlier run): a link forwards only this run's.
    pub fn resumed_after(&self) -> u64 {
        self.lock().resumed_after
    }

    /// The oldest event kept in memory: its sequence number and time.
    pub fn oldest(&self) -> Option<(u64, i64)> {
        self.lock().events.front().map(|e| (e.seq, e.ts_unix_ms))
    }

    /// The retained events after `after_seq`, and a receiver for the ones
    /// that follow them.
    pub fn subscribe(&self, after_seq: u64) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let b = self.lock();
        let backlog = b
            .events
            .iter()
            .filter(|e| e.seq > after_seq)
            .cloned()
            .collect();
        (backlog, self.live.subscribe())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Backlog> {
        // A panic while holding this lock cannot leave the backlog
        // inconsistent (each mutation is a push/pop), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_is_bounded_and_ordered() {
        let log = EventLog::new("t", "h", 10);
        for i in 0..25 {
            log.emit("a", EventKind::Started, format!("n{i}"), &[]);
        }
        let (backlog, _) = log.subscribe(0);
        assert_eq!(backlog.len(), 10);
        assert_eq!(backlog[0].seq, 16);
        assert_eq!(backlog[9].seq, 25);
        let (after, _) = log.subscribe(20);
        assert_eq!(after.len(), 5);
    }

    #[test]
    fn a_resumed_log_continues_the_numbering_and_feeds_its_sink() {
        let log = EventLog::new("t", "h", 3);
        let old = EventLog::new("t", "h", 10);
        for i in 0..5 {
            old.emit("a", EventKind::Started, format!("n{i}"), &[]);
        }
        let (before, _) = old.subscribe(0);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        log.resume(
            5,
            before,
            Some(Arc::new(move |e: &Event| s.lock().unwrap().push(e.seq))),
        );
        assert_eq!(log.oldest().map(|o| o.0), Some(3), "the newest three kept");
        let e = log.emit("a", EventKind::Died, "after", &[]);
        assert_eq!(e.seq, 6);
        assert_eq!(*seen.lock().unwrap(), [6]);
    }

    #[tokio::test]
    async fn live_follows_backlog_without_gap() {
        let log = EventLog::new("t", "h", 10);
        log.emit("a", EventKind::Started, "x", &[]);
        let (backlog, mut rx) = log.subscribe(0);
        log.emit("a", EventKind::Died, "y", &[("pid", "1".into())]);
        let next = rx.recv().await.unwrap();
        assert_eq!(backlog.last().unwrap().seq + 1, next.seq);
        assert_eq!(next.fields.get("pid").map(String::as_str), Some("1"));
        assert_eq!(next.tenant_id, "t");
    }
}
