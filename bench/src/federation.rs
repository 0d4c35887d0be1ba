//! `fleet-bench federation`: a real `fleet-aggregator` process over real
//! mTLS, and in this process N simulated hosts, each running hostd's own
//! link code (`fleet_hostd::link`) with its own host certificate and a table
//! of synthetic agents. Prints, per N, in one run: aggregator RSS per link,
//! updates ingested per second at saturation, `ps --json` wall time for the
//! full view, change-to-operator latency (p50/p99) at the steady change
//! rate, and the time for the full view to return after a kill -9 and
//! restart (with any host wrongly shown unreachable meanwhile).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_hostd::table::View;
use fleet_proto::v1::{
    AgentRow, AgentStatus, Health, Heartbeat, HeartbeatSource, HostRow, PaneState,
    WatchFleetRequest, fleet_update,
};
use tokio::sync::watch;

use crate::local::{cpu_ticks, percentile, program, rss_kb, sibling};
use fleetctl::Failure;
use fleetctl::certs::{self, Ca, Kind};
use fleetctl::client::{self, Remote};

#[derive(Debug, clap::Args)]
pub struct FedArgs {
    /// Numbers of simulated hosts, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [100u32, 1000, 10000])]
    pub hosts: Vec<u32>,
    /// Agents per host.
    #[arg(long, default_value_t = 50)]
    pub agents: u32,
    /// Fraction of all agents that change per second in the steady phase.
    #[arg(long, default_value_t = 0.01)]
    pub change_rate: f64,
    /// Seconds of steady changes to measure latency over.
    #[arg(long, default_value_t = 10)]
    pub steady_secs: u64,
    /// Seconds of saturating changes to measure ingestion over.
    #[arg(long, default_value_t = 3)]
    pub saturate_secs: u64,
    /// Host links started per second (staggered start).
    #[arg(long, default_value_t = 2000)]
    pub start_rate: u32,
    /// Another `fleet-aggregator` binary (an older build, say) to measure
    /// in the same run, each size right after this build's: the rows are
    /// labelled `this` and `other`.
    #[arg(long, value_name = "PATH")]
    pub compare: Option<PathBuf>,
}

struct Figures {
    connect_s: f64,
    rss_total_mb: f64,
    rss_per_link_kb: f64,
    ingest_per_s: f64,
    /// The aggregator's own CPU per update at saturation (both its cores'
    /// worth): what it would ingest if the simulated hosts cost nothing.
    agg_us_per_update: f64,
    ps_ms: f64,
    lat_p50_ms: f64,
    lat_p99_ms: f64,
    restart_s: f64,
    wrongly_unreachable: u64,
}

pub async fn run(a: FedArgs) -> Result<(), Failure> {
    println!(
        "{:>6} {:>6} {:>7} {:>9} {:>9} {:>12} {:>14} {:>11} {:>9} {:>9} {:>9} {:>10} {:>11}",
        "build",
        "hosts",
        "agents",
        "link_s",
        "rss_mb",
        "rss/link_kb",
        "ingest_upd/s",
        "agg_us/upd",
        "ps_ms",
        "p50_ms",
        "p99_ms",
        "restart_s",
        "unreach"
    );
    let mut builds = vec![("this", sibling("fleet-aggregator"))];
    if let Some(other) = &a.compare {
        builds.push(("other", other.clone()));
    }
    for n in &a.hosts {
        for (label, bin) in &builds {
            let f = one_size(*n, &a, bin).await?;
            println!(
                "{:>6} {:>6} {:>7} {:>9.2} {:>9.1} {:>12.1} {:>14.0} {:>11.1} {:>9.1} {:>9.1} {:>9.1} {:>10.2} {:>11}",
                label,
                n,
                u64::from(*n) * u64::from(a.agents),
                f.connect_s,
                f.rss_total_mb,
                f.rss_per_link_kb,
                f.ingest_per_s,
                f.agg_us_per_update,
                f.ps_ms,
                f.lat_p50_ms,
                f.lat_p99_ms,
                f.restart_s,
                f.wrongly_unreachable
            );
        }
    }
    Ok(())
}

/// 10,000 links need 10,000 descriptors on each side.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    l.current = l.maximum;
    let _ = setrlimit(Resource::Nofile, l);
}

/// Progress on stderr, so a long run shows where it is.
fn phase(hosts: u32, what: &str) {
    eprintln!(
        "{} bench federation {hosts} hosts: {what}",
        fleet_proto::clock::rfc3339(fleet_proto::clock::now_ms())
    );
}

fn other(e: impl std::fmt::Display) -> Failure {
    Failure::Other(e.to_string())
}

/// What the operator-side watcher has seen.
#[derive(Default)]
struct Seen {
    hosts: HashMap<(String, String), String>,
    agents: HashMap<(String, String), HashSet<String>>,
    record: bool,
    latencies_ms: Vec<f64>,
    /// Host rows seen as unreachable while `watch_unreachable` is set.
    watch_unreachable: bool,
    unreachable: u64,
}

impl Seen {
    fn complete(&self, n: usize, per: usize) -> bool {
        self.hosts.len() == n
            && self.hosts.values().all(|l| l == "connected")
            && self.agents.len() == n
            && self.agents.values().all(|a| a.len() == per)
    }

    fn host(&mut self, h: &HostRow) {
        if self.watch_unreachable && h.link == "unreachable" {
            self.unreachable += 1;
        }
        self.hosts
            .insert((h.tenant_id.clone(), h.host.clone()), h.link.clone());
    }
}

/// Follows WatchFleet as an operator, reconnecting after errors.
async fn watcher(remote: Remote, seen: Arc<Mutex<Seen>>, stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let Ok(mut c) = client::connect_remote(&remote).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(resp) = c.watch_fleet(WatchFleetRequest::default()).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut stream = resp.into_inner();
        let mut fresh = true;
        while let Ok(Some(u)) = stream.message().await {
            let now = fleet_proto::clock::now_ms();
            let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
            match u.update {
                Some(fleet_update::Update::Snapshot(snap)) => {
                    if fresh {
                        s.hosts.clear();
                        s.agents.clear();
                        fresh = false;
                    }
                    for a in snap.agents {
                        s.agents
                            .entry((a.tenant_id, a.host))
                            .or_default()
                            .insert(a.name);
                    }
                    for h in &snap.hosts {
                        s.host(h);
                    }
                }
                Some(fleet_update::Update::Delta(d)) => {
                    for a in d.upserts {
                        if s.record && a.observed_at_unix_ms > 0 {
                            s.latencies_ms.push((now - a.observed_at_unix_ms) as f64);
                        }
                        s.agents
                            .entry((a.tenant_id, a.host))
                            .or_default()
                            .insert(a.name);
                    }
                    for h in &d.hosts {
                        s.host(h);
                    }
                }
                None => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn agent_row(t: &str, h: &str, i: u32) -> AgentRow {
    AgentRow {
        tenant_id: t.to_owned(),
        host: h.to_owned(),
        name: format!("agent{i:03}"),
        runtime: "claude".into(),
        class: "implementer".into(),
        pane: PaneState::Alive as i32,
        pane_id: format!("%{i}"),
        pane_pid: 10_000 + i,
        pane_command: "claude".into(),
        heartbeat: Some(Heartbeat {
            health: Health::Healthy as i32,
            status: AgentStatus::Ok as i32,
            source: HeartbeatSource::Native as i32,
            interval_ms: 15_000,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub struct Sim {
    tx: watch::Sender<Arc<View>>,
}

impl Sim {
    /// Whether the link has taken the last change (holds the current view
    /// as its own): a change made before would be folded into the next.
    fn taken(&self) -> bool {
        Arc::strong_count(&self.tx.borrow()) > 1
    }

    /// Changes agent `i` (status flips; observed_at marks the change time).
    pub fn change(&self, i: usize) {
        self.tx.send_modify(|v| {
            let v = Arc::make_mut(v);
            if let Some(r) = v.agents.get_mut(i) {
                let r = Arc::make_mut(r);
                let hb = r.heartbeat.get_or_insert_with(Default::default);
                hb.status = if hb.status == AgentStatus::Busy as i32 {
                    AgentStatus::Ok as i32
                } else {
                    AgentStatus::Busy as i32
                };
                r.observed_at_unix_ms = fleet_proto::clock::now_ms();
            }
        });
    }
}

struct AggProc {
    child: tokio::process::Child,
    config: PathBuf,
    port: u16,
}

/// Starts the aggregator and waits for its readiness notice (the systemd
/// protocol: `READY=1` with `STATUS=serving on ADDR`), which names the port
/// it bound: the first start binds port 0 and the port it got is written
/// into `config`, so a restart serves the same address.
async fn start_aggregator(
    bin: &Path,
    config: &Path,
) -> Result<(tokio::process::Child, u16), Failure> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_extension("log"))?;
    let notify = config.with_extension("notify");
    let _ = std::fs::remove_file(&notify);
    let ready = tokio::net::UnixDatagram::bind(&notify)?;
    let mut child = program(bin)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .env("NOTIFY_SOCKET", &notify)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Failure::Other(format!(
                "cannot start fleet-aggregator (build it: cargo build --release): {e}"
            ))
        })?;
    let mut buf = vec![0u8; 4096];
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let n = ready.recv(&mut buf).await?;
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.lines().any(|l| l == "READY=1") {
                return Ok::<_, std::io::Error>(msg);
            }
        }
    })
    .await;
    let _ = std::fs::remove_file(&notify);
    let msg = match waited {
        Ok(Ok(m)) => m,
        _ => {
            let _ = child.start_kill();
            return Err(Failure::Other(
                "fleet-aggregator did not say it was ready (a build without the systemd readiness notice cannot be measured)".into(),
            ));
        }
    };
    let port = msg
        .lines()
        .find_map(|l| l.strip_prefix("STATUS=serving on "))
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.port())
        .ok_or_else(|| Failure::Other(format!("READY without an address: {msg:?}")))?;
    let text = std::fs::read_to_string(config)?;
    std::fs::write(
        config,
        text.replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
            1,
        ),
    )?;
    Ok((child, port))
}

async fn wait_until(
    seen: &Arc<Mutex<Seen>>,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&Seen) -> bool,
) -> Result<Duration, Failure> {
    let t0 = Instant::now();
    loop {
        if pred(&seen.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > timeout {
            let s = seen.lock().unwrap_or_else(|p| p.into_inner());
            return Err(Failure::Other(format!(
                "timed out waiting for {what}: {} hosts seen ({} connected)",
                s.hosts.len(),
                s.hosts.values().filter(|l| *l == "connected").count()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A real aggregator with `n` simulated hosts of `agents` agents each,
/// every link up and the whole view seen by an operator's watcher.
pub struct Linked {
    pub dir: tempfile::TempDir,
    agg: AggProc,
    pub port: u16,
    agg_pid: u32,
    rss_base: u64,
    rss_after: u64,
    connect_s: f64,
    pub sims: Vec<Sim>,
    seen: Arc<Mutex<Seen>>,
    stop_tx: watch::Sender<bool>,
    pub per: usize,
}

impl Linked {
    /// The connection flags of the operator `bench` (granted read on every
    /// tenant).
    pub fn operator_flags(&self) -> Vec<std::ffi::OsString> {
        let d = self.dir.path();
        vec![
            "--aggregator".into(),
            format!("127.0.0.1:{}", self.port).into(),
            "--ca".into(),
            d.join("ca.pem").into(),
            "--cert".into(),
            d.join("operator-bench.pem").into(),
            "--key".into(),
            d.join("operator-bench.key").into(),
        ]
    }

    /// Stops the links and the aggregator.
    pub async fn stop(mut self) {
        let _ = self.stop_tx.send(true);
        let _ = self.agg.child.start_kill();
        let _ = self.agg.child.wait().await;
    }
}

pub async fn link_fleet(
    n: u32,
    agents: u32,
    start_rate: u32,
    bin: &Path,
) -> Result<Linked, Failure> {
    raise_fd_limit();
    let dir = tempfile::Builder::new()
        .prefix("fleet-fedbench")
        .tempdir()?;
    let d = dir.path();
    certs::init(d, "bench.local", 2, false)?;
    let ca = Ca::load(d)?;
    for kind in [
        Kind::Aggregator {
            dns: vec!["localhost".into()],
            ip: vec![std::net::IpAddr::from([127, 0, 0, 1])],
        },
        Kind::Operator {
            name: "bench".into(),
        },
    ] {
        let i = ca.issue(kind, 2)?;
        certs::write(&d.join(format!("{}.pem", i.file)), &i.cert_pem, false)?;
        certs::write(&d.join(format!("{}.key", i.file)), &i.key_pem, true)?;
    }
    std::fs::write(
        d.join("authz.toml"),
        "[operators.bench]\ntenants = [\"*\"]\nverbs = [\"read\"]\n",
    )?;
    let config = d.join("aggregator.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ntrust_domain = \"bench.local\"\nauthz = \"{0}/authz.toml\"\naudit_log = \"{0}/audit.jsonl\"\nlog = \"warn,fleet_aggregator::stats=info\"\nstats_secs = 0.25\n[tls]\nca = \"{0}/ca.pem\"\ncert = \"{0}/aggregator.pem\"\nkey = \"{0}/aggregator.key\"\n",
            d.display()
        ),
    )?;
    let (child, port) = start_aggregator(bin, &config).await?;
    let agg = AggProc {
        child,
        config,
        port,
    };
    let agg_pid = agg.child.id().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_base = rss_kb(agg_pid);

    phase(n, "linking");
    // The hosts: real link code, one certificate each.
    let (stop_tx, stop_rx) = watch::channel(false);
    let per = agents as usize;
    let mut sims = Vec::with_capacity(n as usize);
    let mut pending = Vec::with_capacity(n as usize);
    let trust = fleet_net::tls::Trust::load(&d.join("ca.pem")).map_err(other)?;
    for i in 0..n {
        let (t, h) = (format!("t{}", i % 10), format!("h{i:05}"));
        let issued = ca.issue(
            Kind::Host {
                tenant: t.clone(),
                host: h.clone(),
            },
            2,
        )?;
        let me = fleet_net::tls::Reloading::from_pem(&issued.cert_pem, &issued.key_pem)
            .map_err(other)?;
        let tls = fleet_net::tls::client_config(trust.clone(), me).map_err(other)?;
        let view = View {
            agents: (0..agents)
                .map(|k| Arc::new(agent_row(&t, &h, k)))
                .collect(),
            host: HostRow {
                tenant_id: t.clone(),
                host: h.clone(),
                agents_total: agents,
                agents_alive: agents,
                agents_healthy: agents,
                ..Default::default()
            },
        };
        let (tx, rx) = watch::channel(Arc::new(view));
        let source = fleet_hostd::link::Source {
            hello: fleet_proto::v1::Hello {
                tenant_id: t.clone(),
                host: h.clone(),
                uid: 1000,
                hostd_version: "bench".into(),
                boot_epoch: rand_u64(),
                protocol: fleet_hostd::link::PROTOCOL,
                ..Default::default()
            },
            view: rx,
            events: fleet_proto::events::EventLog::new(&t, &h, 16),
            service: None,
            report: None,
            refused_retry: std::time::Duration::from_secs(30),
            uplinks: None,
        };
        let dial = fleet_net::transport::Dial {
            address: format!("127.0.0.1:{port}"),
            tls: Some(Arc::new(tls)),
            server_name: None,
        };
        sims.push(Sim { tx });
        pending.push((dial, source));
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let remote = Remote {
        aggregator: Some(format!("127.0.0.1:{port}")),
        ca: Some(d.join("ca.pem")),
        cert: Some(d.join("operator-bench.pem")),
        key: Some(d.join("operator-bench.key")),
        server_name: None,
        context: None,
    };
    tokio::spawn(watcher(remote.clone(), seen.clone(), stop_rx.clone()));
    let t_links = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / f64::from(start_rate.max(1)));
    for (k, (dial, source)) in pending.into_iter().enumerate() {
        tokio::spawn(fleet_hostd::link::run(dial, source, stop_rx.clone()));
        // Staggered: start_rate links per second.
        let due = gap.mul_f64(k as f64 + 1.0);
        let el = t_links.elapsed();
        if due > el {
            tokio::time::sleep(due - el).await;
        }
    }
    let nn = n as usize;
    wait_until(
        &seen,
        Duration::from_secs(120 + u64::from(n) / 50),
        "every host linked",
        |s| s.complete(nn, per),
    )
    .await?;
    let connect_s = t_links.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_kb(agg_pid);
    Ok(Linked {
        dir,
        agg,
        port,
        agg_pid,
        rss_base,
        rss_after,
        connect_s,
        sims,
        seen,
        stop_tx,
        per,
    })
}

async fn one_size(n: u32, a: &FedArgs, bin: &Path) -> Result<Figures, Failure> {
    let Linked {
        dir,
        mut agg,
        port,
        agg_pid,
        rss_base,
        rss_after,
        connect_s,
        sims,
        seen,
        stop_tx,
        per,
    } = link_fleet(n, a.agents, a.start_rate, bin).await?;
    let d = dir.path();
    let nn = n as usize;

    phase(n, "ps --json");
    // ps --json of the full view, as a separate fleetctl process.
    let mut ps = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let out = program(sibling("fleetctl"))
            .arg("--aggregator")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--ca")
            .arg(d.join("ca.pem"))
            .arg("--cert")
            .arg(d.join("operator-bench.pem"))
            .arg("--key")
            .arg(d.join("operator-bench.key"))
            .args(["ps", "--json"])
            .stdout(std::process::Stdio::null())
            .output()
            .await?;
        if !out.status.success() {
            return Err(Failure::Other(format!(
                "ps failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        ps.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    phase(n, "steady changes");
    // Steady changes: change_rate of all agents per second, in 100 ms ticks.
    let per_tick = ((f64::from(n) * f64::from(a.agents) * a.change_rate) / 10.0).max(1.0);
    seen.lock().unwrap_or_else(|p| p.into_inner()).record = true;
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut carry = 0.0;
    let mut k: usize = 0;
    while t0.elapsed() < Duration::from_secs(a.steady_secs) {
        tick.tick().await;
        carry += per_tick;
        while carry >= 1.0 {
            carry -= 1.0;
            k = k.wrapping_add(7919);
            let host = k % sims.len();
            sims[host].change((k / sims.len()) % per);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut lat = {
        let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
        s.record = false;
        std::mem::take(&mut s.latencies_ms)
    };

    phase(n, "saturation");
    // Saturation: every host changes as fast as this process can make it;
    // the aggregator's own counters (its stats lines) say what it applied.
    let sat_from = time::OffsetDateTime::now_utc();
    let cpu_from = cpu_ticks(agg_pid);
    let t0 = Instant::now();
    // Each host is changed again as soon as its link has sent the last
    // change: every change is an update, none is folded away unsent.
    // One pass over every host each 10 ms at most (up to 100 changes per
    // host and second, five times what 20,000 updates/s asks of each of
    // 1,000 hosts): the driver must not spin a core the links and the
    // aggregator need.
    let mut round = tokio::time::interval(Duration::from_millis(10));
    round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pass = 0usize;
    while t0.elapsed() < Duration::from_secs(a.saturate_secs) {
        round.tick().await;
        for s in &sims {
            if s.taken() {
                s.change(pass % per);
            }
        }
        pass += 1;
    }
    let sat_to = time::OffsetDateTime::now_utc();
    let sat_secs = t0.elapsed().as_secs_f64();
    let agg_cpu_s = cpu_ticks(agg_pid).saturating_sub(cpu_from) as f64 / 100.0;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let ingest_per_s = ingest_rate(&agg.config.with_extension("log"), sat_from, sat_to);
    let agg_us_per_update = if ingest_per_s > 0.0 {
        agg_cpu_s * 1e6 / (ingest_per_s * sat_secs)
    } else {
        0.0
    };

    phase(n, "kill -9 and restart");
    // kill -9 and restart: time until the whole view is back.
    let _ = agg.child.start_kill();
    let _ = agg.child.wait().await;
    {
        let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
        s.hosts.clear();
        s.agents.clear();
        s.watch_unreachable = true;
        s.unreachable = 0;
    }
    let t_restart = Instant::now();
    let (child, port) = start_aggregator(bin, &agg.config).await?;
    if port != agg.port {
        return Err(Failure::Other(format!(
            "the restarted aggregator serves port {port}, not {}",
            agg.port
        )));
    }
    agg.child = child;
    wait_until(
        &seen,
        Duration::from_secs(120),
        "the view after a restart",
        |s| s.complete(nn, per),
    )
    .await?;
    let restart_s = t_restart.elapsed().as_secs_f64();
    let wrongly_unreachable = seen.lock().unwrap_or_else(|p| p.into_inner()).unreachable;

    let _ = stop_tx.send(true);
    let _ = agg.child.start_kill();
    let _ = agg.child.wait().await;
    Ok(Figures {
        connect_s,
        rss_total_mb: rss_after as f64 / 1024.0,
        rss_per_link_kb: rss_after.saturating_sub(rss_base) as f64 / f64::from(n),
        ingest_per_s,
        agg_us_per_update,
        ps_ms: percentile(&mut ps, 0.5),
        lat_p50_ms: percentile(&mut lat, 0.5),
        lat_p99_ms: percentile(&mut lat, 0.99),
        restart_s,
        wrongly_unreachable,
    })
}

/// Updates per second the aggregator applied between `from` and `to`, from
/// the first and last of its stats lines inside that window.
fn ingest_rate(log: &Path, from: time::OffsetDateTime, to: time::OffsetDateTime) -> f64 {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let points: Vec<(time::OffsetDateTime, u64)> = text
        .lines()
        .filter_map(|l| {
            let ts = l.split_whitespace().next()?;
            let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
                .ok()?;
            let v = l
                .split("updates_total=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((t, v))
        })
        .filter(|(t, _)| *t >= from && *t <= to)
        .collect();
    match (points.first(), points.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => (b.1 - a.1) as f64 / (b.0 - a.0).as_seconds_f64(),
        _ => 0.0,
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
