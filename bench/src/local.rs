//! `fleet-bench ps`: starts N idle agents under a real hostd on a
//! throw-away tmux socket, then prints, in one run, `fleetctl ps --json`
//! wall time, the naive per-agent tmux baseline, their ratio, and hostd's
//! idle CPU and RSS.

use fleet_hostd::tmux::{Tmux, exact};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Subcommand;
use fleet_proto::v1::{ListAgentsRequest, PaneState};

use fleetctl::{Failure, client, demo};

#[derive(Debug, Subcommand)]
pub enum What {
    /// `send --verify` time to the accepted receipt (screen path against a
    /// REPL, acknowledged path against the demo agent) and `watch` frame
    /// latency.
    Send {
        /// Verified sends per target.
        #[arg(long, default_value_t = 50)]
        sends: u32,
        /// Verified sends per real runtime (installed by
        /// deploy/agents/setup.sh; each runs offline under `unshare -n`).
        #[arg(long, default_value_t = 20)]
        runtime_sends: u32,
        /// Only these real runtimes (default: every installed one; `none`
        /// skips them).
        #[arg(long, value_delimiter = ',')]
        runtimes: Vec<String>,
    },
    /// Federation at scale: a real aggregator, N simulated hostd links.
    Federation(crate::federation::FedArgs),
    /// hostd under churn for minutes: RSS, descriptors and threads of hostd
    /// and the tmux server at the start and the end, with the ratio.
    Soak(crate::soak::SoakArgs),
    /// `fleetctl top` in a real tmux pane over a real aggregator with N
    /// simulated hosts: time to the first screen, to a filter's rows, RSS
    /// and CPU while they change.
    Top(crate::top::TopArgs),
    /// The cost of recording: events per second through hostd's and the
    /// aggregator's event log with the durable history on and off, and
    /// the database's size per million events.
    History(crate::history::HistoryArgs),
    /// `ps` latency against the naive baseline, and idle hostd cost.
    Ps {
        /// Fleet sizes to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [10u32, 100, 500])]
        agents: Vec<u32>,
        /// `ps --json` runs per size (the median is printed).
        #[arg(long, default_value_t = 15)]
        runs: u32,
        /// Seconds of idle time to measure hostd CPU over.
        #[arg(long, default_value_t = 20)]
        idle_secs: u64,
    },
}

/// A program the benchmarks run: Fleet's own binaries and `unshare`; tmux
/// goes through `fleet_hostd::tmux` like everywhere else.
#[allow(clippy::disallowed_methods)]
pub fn program(path: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
    tokio::process::Command::new(path)
}

/// A binary built beside this one (`cargo build --release --workspace`).
pub fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

pub async fn run(what: What) -> Result<(), Failure> {
    match what {
        What::Send {
            sends,
            runtime_sends,
            runtimes,
        } => {
            bench_send(sends.max(1)).await?;
            bench_runtimes(runtime_sends.max(1), &runtimes).await
        }
        What::Federation(a) => crate::federation::run(a).await,
        What::Soak(a) => crate::soak::run(a).await,
        What::Top(a) => crate::top::run(a).await,
        What::History(a) => crate::history::run(a).await,
        What::Ps {
            agents,
            runs,
            idle_secs,
        } => {
            println!(
                "{:>6} {:>12} {:>14} {:>8} {:>11} {:>10} {:>12} {:>10}",
                "agents",
                "ps_ms(p50)",
                "naive_ms(p50)",
                "ratio",
                "hostd_cpu_%",
                "tmux_cpu_%",
                "together_%",
                "hostd_mb"
            );
            for n in agents {
                let r = bench_size(n, runs.max(1), idle_secs).await?;
                // ms of CPU per minute / 600 = % of one core.
                let (hostd, tmux) = (r.cpu_ms_per_min / 600.0, r.tmux_cpu_ms_per_min / 600.0);
                println!(
                    "{:>6} {:>12.2} {:>14.2} {:>7.1}x {:>10.3}% {:>9.3}% {:>11.3}% {:>10.1}",
                    n,
                    r.ps_ms,
                    r.naive_ms,
                    r.naive_ms / r.ps_ms,
                    hostd,
                    tmux,
                    hostd + tmux,
                    r.rss_mb
                );
            }
            Ok(())
        }
    }
}

struct Figures {
    ps_ms: f64,
    naive_ms: f64,
    cpu_ms_per_min: f64,
    /// The tmux server's, over the same idle minute.
    tmux_cpu_ms_per_min: f64,
    rss_mb: f64,
}

pub(crate) struct Bed {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) socket_name: String,
    pub(crate) hostd: tokio::process::Child,
}

impl Bed {
    /// A real hostd for `roster` on a throw-away tmux socket.
    pub(crate) async fn start(tag: &str, roster: &str) -> Result<Self, Failure> {
        let dir = tempfile::Builder::new().prefix("fleet-bench").tempdir()?;
        Self::start_in(dir, tag, roster, false).await
    }

    /// Like [`start`](Self::start) in `dir`; `offline` runs hostd (its
    /// tmux and every agent) with no network but loopback (`unshare -n`).
    async fn start_in(
        dir: tempfile::TempDir,
        tag: &str,
        roster: &str,
        offline: bool,
    ) -> Result<Self, Failure> {
        let socket_name = format!("fleet-bench-{}-{tag}", std::process::id());
        let roster_path = dir.path().join("roster.yaml");
        std::fs::write(&roster_path, roster)?;
        let mut cmd = demo::hostd_command(
            &roster_path,
            dir.path(),
            &dir.path().join("hostd.sock"),
            &socket_name,
        );
        if offline {
            let hostd = cmd.as_std().get_program().to_owned();
            let args: Vec<_> = cmd.as_std().get_args().map(ToOwned::to_owned).collect();
            cmd = program("unshare");
            cmd.arg("-n").arg(hostd).args(args).stdin(Stdio::null());
        }
        let hostd = cmd
            .arg("--log")
            .arg("warn")
            .env("FLEET_HOSTD_SYSTEMD__PROBE", "false")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Failure::Other(format!("cannot start fleet-hostd: {e}")))?;
        Ok(Self {
            dir,
            socket_name,
            hostd,
        })
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = self.hostd.start_kill();
        let _ = Tmux::new("tmux", &self.socket_name)
            .interactive(["kill-server"])
            .stderr(Stdio::null())
            .status();
    }
}

async fn bench_size(n: u32, runs: u32, idle_secs: u64) -> Result<Figures, Failure> {
    let mut roster = String::from(
        "version: 1\ntransport: tmux\nruntimes:\n  idle:\n    command: sleep 100000\n    process_names: [sleep]\nagents:\n",
    );
    for i in 0..n {
        roster.push_str(&format!("  - name: a{i}\n    runtime: idle\n"));
    }
    let bed = Bed::start(&format!("{n}"), &roster).await?;
    let sock = bed.dir.path().join("hostd.sock");
    let hostd_pid = bed.hostd.id().unwrap_or_default();
    wait_all_alive(&sock, n).await?;

    // ps --json end to end, as an operator runs it.
    let exe = sibling("fleetctl");
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let out = program(&exe)
            .arg("--socket")
            .arg(&sock)
            .args(["ps", "--json"])
            .stdout(Stdio::piped())
            .output()
            .await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        if !out.status.success() {
            return Err(Failure::Other(
                "fleetctl ps --json failed during the bench".into(),
            ));
        }
    }
    let ps_ms = median(&mut times);

    // The naive way: one tmux process per agent per query, plus /proc and
    // the heartbeat file.
    let t = Instant::now();
    for i in 0..n {
        naive_row(
            &bed.socket_name,
            &format!("a{i}"),
            &bed.dir.path().join("run"),
        )
        .await;
    }
    let naive_ms = t.elapsed().as_secs_f64() * 1000.0;

    let tmux_pid: u32 = Tmux::new("tmux", &bed.socket_name)
        .run(["display-message", "-p", "#{pid}"])
        .await
        .map_err(|e| Failure::Other(format!("the tmux server's pid: {e}")))?
        .trim()
        .parse()
        .map_err(|e| Failure::Other(format!("the tmux server's pid: {e}")))?;
    // Settle after the naive queries, then measure idle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cpu0, tmux0) = (cpu_ticks(hostd_pid), cpu_ticks(tmux_pid));
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let (cpu1, tmux1) = (cpu_ticks(hostd_pid), cpu_ticks(tmux_pid));
    let elapsed_min = t0.elapsed().as_secs_f64() / 60.0;
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let ms = |a: u64, b: u64| b.saturating_sub(a) as f64 * 1000.0 / ticks_per_sec;
    Ok(Figures {
        ps_ms,
        naive_ms,
        cpu_ms_per_min: ms(cpu0, cpu1) / elapsed_min,
        tmux_cpu_ms_per_min: ms(tmux0, tmux1) / elapsed_min,
        rss_mb: rss_kb(hostd_pid) as f64 / 1024.0,
    })
}

pub(crate) async fn wait_all_alive(sock: &Path, n: u32) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(mut c) = client::connect(sock).await
            && let Ok(r) = c.list_agents(ListAgentsRequest::default()).await
        {
            let alive = r
                .into_inner()
                .agents
                .iter()
                .filter(|a| a.pane == PaneState::Alive as i32 && a.process.is_some())
                .count();
            if alive >= n as usize {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(Failure::Other(format!(
                "{n} agents did not come up in time"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn naive_row(socket: &str, name: &str, run_dir: &Path) {
    let out = Tmux::new("tmux", socket)
        .run([
            "display-message",
            "-p",
            "-t",
            &exact(name),
            "#{pane_pid}\t#{pane_dead}\t#{pane_current_command}\t#{window_activity}",
        ])
        .await;
    let pid = out
        .ok()
        .and_then(|s| s.split('\t').next().map(str::to_owned))
        .unwrap_or_default();
    let _ = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    let _ = std::fs::read_to_string(PathBuf::from(run_dir).join(format!("{name}.hb")));
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// utime + stime of `pid`, in clock ticks (USER_HZ: 100 a second).
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm.
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

pub(crate) fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(0.0)
}

/// Verified sends against a REPL (screen evidence) and the demo agent
/// (acknowledged by its heartbeat turn), then watch frame latency.
async fn bench_send(sends: u32) -> Result<(), Failure> {
    use fleet_proto::v1::{SendRequest, Verdict, WatchScreenRequest};
    let roster = "version: 1\ntransport: tmux\nruntimes:\n  repl:\n    command: python3 -q\n    process_names: [python3]\n    bracketed_paste: true\nagents:\n  - name: repl\n    runtime: repl\n  - name: demo\n    runtime: demo\n    command: fleet-demo-agent --busy-ms 0\n    heartbeat_interval_secs: 5\n  - name: sh\n    runtime: shell\n    command: bash --norc --noprofile\n";
    let bed = Bed::start("send", roster).await?;
    let sock = bed.dir.path().join("hostd.sock");
    wait_all_alive(&sock, 3).await?;
    let mut c = client::connect(&sock).await?;
    // Programs draw their first prompt shortly after they start.
    let deadline = Instant::now() + Duration::from_secs(20);
    for agent in ["repl", "demo", "sh"] {
        loop {
            let f = c
                .watch_screen(WatchScreenRequest {
                    agent: agent.into(),
                    max_fps: 0,
                    colours: false,
                    once: true,
                })
                .await?
                .into_inner()
                .message()
                .await?;
            if f.is_some_and(|f| f.lines.iter().any(|l| !l.trim().is_empty())) {
                break;
            }
            if Instant::now() > deadline {
                return Err(Failure::Other(format!("{agent} never drew")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "{:<28} {:>8} {:>8} {:>8} {:>10}",
        "send --verify", "p50_ms", "p95_ms", "max_ms", "accepted"
    );
    for (agent, label) in [
        ("repl", "REPL (screen evidence)"),
        ("demo", "demo agent (acknowledged)"),
    ] {
        let mut times = Vec::new();
        let mut accepted = 0;
        for i in 0..sends {
            let t = Instant::now();
            let r = c
                .send(SendRequest {
                    agent: agent.into(),
                    text: if agent == "repl" {
                        format!("{i}+1").into_bytes()
                    } else {
                        format!("hello {i}").into_bytes()
                    },
                    verify: true,
                    verify_timeout_ms: 6000,
                    ..Default::default()
                })
                .await?
                .into_inner();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            if r.verdict == Verdict::Accepted as i32 {
                accepted += 1;
            }
        }
        let (p50, p95, max) = (
            percentile(&mut times.clone(), 0.5),
            percentile(&mut times.clone(), 0.95),
            percentile(&mut times, 1.0),
        );
        println!("{label:<28} {p50:>8.1} {p95:>8.1} {max:>8.1} {accepted:>7}/{sends}");
    }

    // watch: from a change in the pane (typed characters echoed by the
    // shell) to a frame carrying it.
    let mut stream = c
        .watch_screen(WatchScreenRequest {
            agent: "sh".into(),
            max_fps: 60,
            colours: false,
            once: false,
        })
        .await?
        .into_inner();
    let _ = stream.message().await?;
    let server = Tmux::new("tmux", &bed.socket_name);
    let tmux = |args: &[&str]| server.interactive(args).stdout(Stdio::null()).status();
    let mut lat = Vec::new();
    for i in 0..30 {
        let mark = format!("w{i}x");
        let t = Instant::now();
        tmux(&["send-keys", "-t", "=sh:", "-l", &mark])?;
        loop {
            let Some(f) = stream.message().await? else {
                return Err(Failure::Other("watch stream ended".into()));
            };
            if f.lines.iter().any(|l| l.contains(&mark)) {
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                break;
            }
        }
        tmux(&["send-keys", "-t", "=sh:", "C-u"])?;
    }
    println!(
        "{:<28} {:>8.1} {:>8.1} {:>8.1}",
        "watch frame latency",
        percentile(&mut lat.clone(), 0.5),
        percentile(&mut lat.clone(), 0.95),
        percentile(&mut lat, 1.0)
    );
    Ok(())
}

/// The real runtimes, offline: per runtime two agents in one hostd, one
/// with its native hooks wired in and one with `native: false`, sent to in
/// turn; prints the time from Enter to the runtime's own acknowledgement
/// (its turn counter advanced) against the time to screen evidence, each
/// interrupted and back to idle before the next send.
async fn bench_runtimes(sends: u32, only: &[String]) -> Result<(), Failure> {
    use fleetctl::offline;
    if only.iter().any(|r| r == "none") {
        return Ok(());
    }
    let chosen: Vec<&offline::Offline> = offline::ALL
        .iter()
        .filter(|r| only.is_empty() || only.iter().any(|o| o == r.runtime))
        .filter(|r| r.installed())
        .collect();
    if chosen.is_empty() {
        println!(
            "(no real runtime installed under {}: run deploy/agents/setup.sh)",
            offline::prefix().display()
        );
        return Ok(());
    }
    println!(
        "{:<10} {:>8} {:>8} {:>11} {:>11} {:>8} {:>8} {:>7}",
        "runtime", "ack_p50", "ack_p95", "screen_p50", "screen_p95", "acked", "screen", "ratio"
    );
    // gemini-cli reads settings only below directories nobody else may
    // write: not /tmp.
    let parent = std::env::var_os("HOME")
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from)
        .join(".cache/fleet-bench");
    std::fs::create_dir_all(&parent)?;
    for rt in chosen {
        let dir = tempfile::Builder::new().prefix("rt").tempdir_in(&parent)?;
        let (native, screen) = (format!("{}-n", rt.runtime), format!("{}-s", rt.runtime));
        let mut roster = String::from("version: 1\ntransport: tmux\nagents:\n");
        for (name, on) in [(&native, true), (&screen, false)] {
            let base = dir.path().join(name);
            roster.push_str(&rt.prepare(
                name,
                &base.join("home"),
                &base.join("project"),
                true,
                on,
            )?);
        }
        let bed = Bed::start_in(dir, rt.runtime, &roster, true).await?;
        let sock = bed.dir.path().join("hostd.sock");
        wait_all_alive(&sock, 2).await?;
        let mut c = client::connect(&sock).await?;
        let (mut ack, mut scr) = (Vec::new(), Vec::new());
        for i in 0..sends {
            for (agent, is_native) in [(&native, true), (&screen, false)] {
                wait_idle(&mut c, &bed.socket_name, agent, rt.interrupt).await?;
                let r = c
                    .send(fleet_proto::v1::SendRequest {
                        agent: agent.clone(),
                        text: format!("benchmark prompt number {i}").into_bytes(),
                        verify: true,
                        verify_timeout_ms: 8000,
                        queue_timeout_ms: 120_000,
                        clear_draft: true,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                if is_native && r.enter_to_ack_ms > 0 {
                    ack.push(r.enter_to_ack_ms as f64);
                }
                if !is_native && r.enter_to_screen_ms > 0 {
                    scr.push(r.enter_to_screen_ms as f64);
                }
                // Interrupt the turn once it shows (a Ctrl-C that comes
                // before aider's turn arms its exit instead).
                wait_status(&mut c, agent, fleet_proto::v1::AgentStatus::Busy).await?;
                interrupt(&bed.socket_name, agent, rt.interrupt).await;
            }
        }
        // `stop` ends each agent's whole process tree (some runtimes
        // outlive their tmux session).
        for agent in [&native, &screen] {
            let _ = c
                .control(fleet_proto::v1::ControlRequest {
                    agent: agent.clone(),
                    action: fleet_proto::v1::ControlAction::Stop as i32,
                    ..Default::default()
                })
                .await;
        }
        let (n_ack, n_scr) = (ack.len(), scr.len());
        let (a50, a95) = (
            percentile(&mut ack.clone(), 0.5),
            percentile(&mut ack, 0.95),
        );
        let (s50, s95) = (
            percentile(&mut scr.clone(), 0.5),
            percentile(&mut scr, 0.95),
        );
        let ratio = if a50 > 0.0 && s50 > 0.0 {
            format!("{:.2}", a50 / s50)
        } else {
            "-".into()
        };
        println!(
            "{:<10} {a50:>8.0} {a95:>8.0} {s50:>11.0} {s95:>11.0} {:>8} {:>8} {ratio:>7}",
            rt.runtime,
            format!("{n_ack}/{sends}"),
            format!("{n_scr}/{sends}"),
        );
    }
    Ok(())
}

/// `agent`'s status as hostd resolves it (None: no such row or no beat).
async fn status_of(
    c: &mut fleet_proto::v1::fleet_client::FleetClient<tonic::transport::Channel>,
    agent: &str,
) -> Result<Option<i32>, Failure> {
    let rows = c
        .list_agents(ListAgentsRequest::default())
        .await?
        .into_inner()
        .agents;
    Ok(rows
        .iter()
        .find(|r| r.name == agent)
        .and_then(|r| r.heartbeat.as_ref())
        .map(|h| h.status))
}

/// Until `agent`'s status is `want` (bounded; a turn that ended before it
/// was seen busy is fine too).
async fn wait_status(
    c: &mut fleet_proto::v1::fleet_client::FleetClient<tonic::transport::Channel>,
    agent: &str,
    want: fleet_proto::v1::AgentStatus,
) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if status_of(c, agent).await? == Some(want as i32) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Presses a runtime's interrupt keys one at a time (two Escapes sent
/// together read as one Alt-Escape).
async fn interrupt(socket: &str, agent: &str, keys: &[&str]) {
    for k in keys {
        let _ = Tmux::new("tmux", socket)
            .run(["send-keys", "-t", &exact(agent), k])
            .await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Until `agent` is idle by hostd's best source, interrupting again every
/// few seconds (a runtime may start a retry between two keys).
async fn wait_idle(
    c: &mut fleet_proto::v1::fleet_client::FleetClient<tonic::transport::Channel>,
    socket: &str,
    agent: &str,
    keys: &[&str],
) -> Result<(), Failure> {
    use fleet_proto::v1::AgentStatus;
    let start = Instant::now();
    let mut pressed = Instant::now();
    loop {
        let status = status_of(c, agent).await?;
        if status == Some(AgentStatus::Ok as i32) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(120) {
            return Err(Failure::Other(format!("{agent} did not come back to idle")));
        }
        // Still busy a while after the keys: press them again (never a
        // second Ctrl-C: it quits aider).
        if status == Some(AgentStatus::Busy as i32)
            && pressed.elapsed() > Duration::from_secs(4)
            && !keys.contains(&"C-c")
        {
            interrupt(socket, agent, keys).await;
            pressed = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
