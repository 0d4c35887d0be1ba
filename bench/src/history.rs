//! `fleet-bench history`: the cost of recording. The daemons' own
//! recording path — `EventLog::record` with and without the durable
//! history (`fleet-store`'s batching writer) as its sink — driven as fast
//! as it goes, in one run: hostd's events (one host, a handful of
//! agents) and the aggregator's (forwarded from many hosts, carrying the
//! host cursor fields). With the store on, the rate is what is committed
//! to SQLite with nothing dropped: the producer waits for the writer
//! whenever a queue's worth is outstanding. Then the database's size per
//! million events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet_proto::events::EventLog;
use fleet_proto::v1::{Event, EventKind};
use fleetctl::Failure;

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Events recorded per measurement.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Hosts the aggregator's events come from.
    #[arg(long, default_value_t = 1000)]
    pub hosts: u32,
}

/// Events outstanding for the writer at most before the producer waits
/// (under the store's queue, so nothing is dropped).
const OUTSTANDING: u64 = 4096;

fn hostd_event(i: u64) -> Event {
    let kinds = [
        EventKind::Sent,
        EventKind::TurnStarted,
        EventKind::TurnEnded,
        EventKind::Died,
    ];
    let kind = kinds[usize::try_from(i % 4).unwrap_or(0)];
    Event {
        ts_unix_ms: fleet_proto::clock::now_ms(),
        tenant_id: "acme".into(),
        host: "box1".into(),
        agent: format!("coder{}", i % 8),
        kind: kind.word().into(),
        kind_code: kind as i32,
        message: "120 bytes: accepted (turn 7 → 8)".into(),
        fields: [
            ("verdict".to_owned(), "VERDICT_ACCEPTED".to_owned()),
            ("elapsed_ms".to_owned(), "412".to_owned()),
            ("trace_id".to_owned(), format!("{i:032x}")),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

fn aggregator_event(i: u64, hosts: u32) -> Event {
    let mut e = hostd_event(i);
    e.tenant_id = format!("tenant{}", i % 10);
    e.host = format!("host{}", i % u64::from(hosts.max(1)));
    e.fields
        .insert(fleet_store::HOST_SEQ.into(), (i / 10 + 1).to_string());
    e.fields
        .insert(fleet_store::HOST_EPOCH.into(), "5eed".into());
    e
}

struct Measured {
    per_sec: f64,
    dropped: u64,
    bytes: u64,
}

/// Records `n` events made by `make` into a fresh log, with the store on
/// (in `dir`) or off.
fn measure(
    n: u64,
    make: &dyn Fn(u64) -> Event,
    dir: Option<&std::path::Path>,
) -> Result<Measured, Failure> {
    let log = EventLog::new("", "", 10_000);
    let store = match dir {
        Some(d) => {
            let cfg = fleet_store::Config {
                path: d.join("history.db"),
                max_age: Duration::from_secs(86_400 * 30),
                max_bytes: 1 << 40,
            };
            let opened = fleet_store::Store::open(&cfg, 10_000)
                .map_err(|e| Failure::Other(e.to_string()))?;
            let s = opened.store.clone();
            log.resume(
                opened.continue_after(),
                opened.recent,
                Some(Arc::new(move |e: &Event| s.record(e))),
            );
            Some(opened.store)
        }
        None => None,
    };
    let events: Vec<Event> = (0..n).map(make).collect();
    let started = Instant::now();
    for (i, e) in (0u64..).zip(events) {
        log.record(e);
        if let Some(s) = &store
            && i % 1024 == 0
        {
            while i + 1 - s.counts().0 - s.counts().1 > OUTSTANDING {
                std::thread::yield_now();
            }
        }
    }
    let (mut written, mut dropped) = (0, 0);
    if let Some(s) = &store {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            (written, dropped) = s.counts();
            if written + dropped >= n || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let bytes = dir.map_or(0, |d| {
        ["history.db", "history.db-wal"]
            .iter()
            .map(|f| std::fs::metadata(d.join(f)).map_or(0, |m| m.len()))
            .sum()
    });
    let _ = written;
    Ok(Measured {
        per_sec: n as f64 / elapsed,
        dropped,
        bytes,
    })
}

pub async fn run(a: HistoryArgs) -> Result<(), Failure> {
    let n = a.events.max(1000);
    let hosts = a.hosts;
    tokio::task::spawn_blocking(move || -> Result<(), Failure> {
        println!(
            "{:<11} {:>9} {:>14} {:>14} {:>8} {:>9} {:>16}",
            "recorder", "events", "off ev/s", "on ev/s", "on/off", "dropped", "MB per million"
        );
        let hostd = |i| hostd_event(i);
        let agg = move |i| aggregator_event(i, hosts);
        for (name, make) in [
            ("hostd", &hostd as &dyn Fn(u64) -> Event),
            ("aggregator", &agg as &dyn Fn(u64) -> Event),
        ] {
            let off = measure(n, make, None)?;
            let dir = tempfile::tempdir().map_err(|e| Failure::Other(e.to_string()))?;
            let on = measure(n, make, Some(dir.path()))?;
            println!(
                "{:<11} {:>9} {:>14.0} {:>14.0} {:>8.3} {:>9} {:>16.1}",
                name,
                n,
                off.per_sec,
                on.per_sec,
                on.per_sec / off.per_sec,
                on.dropped,
                on.bytes as f64 / 1e6 * 1e6 / n as f64,
            );
        }
        Ok(())
    })
    .await
    .map_err(|e| Failure::Other(e.to_string()))?
}
