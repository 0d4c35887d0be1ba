//! `fleetctl bench ps`: starts N idle agents under a real hostd on a
//! throw-away tmux socket, then prints, in one run, `fleetctl ps --json`
//! wall time, the naive per-agent tmux baseline, their ratio, and hostd's
//! idle CPU and RSS.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Subcommand;
use fleet_proto::v1::{ListAgentsRequest, PaneState};

use crate::{Failure, client, demo};

#[derive(Debug, Subcommand)]
pub enum What {
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

pub async fn run(what: What) -> Result<(), Failure> {
    match what {
        What::Ps {
            agents,
            runs,
            idle_secs,
        } => {
            println!(
                "{:>6} {:>12} {:>14} {:>8} {:>14} {:>10} {:>16}",
                "agents", "ps_ms(p50)", "naive_ms(p50)", "ratio", "cpu_ms/min", "cpu_%", "rss_mb"
            );
            for n in agents {
                let r = bench_size(n, runs.max(1), idle_secs).await?;
                println!(
                    "{:>6} {:>12.2} {:>14.2} {:>7.1}x {:>14.1} {:>9.3}% {:>16.1}",
                    n,
                    r.ps_ms,
                    r.naive_ms,
                    r.naive_ms / r.ps_ms,
                    r.cpu_ms_per_min,
                    r.cpu_ms_per_min / 600.0,
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
    rss_mb: f64,
}

struct Bed {
    dir: tempfile::TempDir,
    socket_name: String,
    hostd: tokio::process::Child,
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = self.hostd.start_kill();
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.socket_name, "kill-server"])
            .stderr(Stdio::null())
            .status();
    }
}

async fn bench_size(n: u32, runs: u32, idle_secs: u64) -> Result<Figures, Failure> {
    let dir = tempfile::Builder::new().prefix("fleet-bench").tempdir()?;
    let socket_name = format!("fleet-bench-{}-{n}", std::process::id());
    let mut roster = String::from(
        "version: 1\ntransport: tmux\nruntimes:\n  idle:\n    command: sleep 100000\n    process_names: [sleep]\nagents:\n",
    );
    for i in 0..n {
        roster.push_str(&format!("  - name: a{i}\n    runtime: idle\n"));
    }
    let roster_path = dir.path().join("roster.yaml");
    std::fs::write(&roster_path, roster)?;
    let sock = dir.path().join("hostd.sock");
    let hostd = tokio::process::Command::new(demo::hostd_exe())
        .arg("--roster")
        .arg(&roster_path)
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .arg("--socket")
        .arg(&sock)
        .arg("--tmux-socket")
        .arg(&socket_name)
        .arg("--log")
        .arg("warn")
        .env("FLEET_HOSTD_SYSTEMD__PROBE", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failure::Other(format!("cannot start fleet-hostd: {e}")))?;
    let bed = Bed {
        dir,
        socket_name,
        hostd,
    };
    let hostd_pid = bed.hostd.id().unwrap_or_default();
    wait_all_alive(&sock, n).await?;

    // ps --json end to end, as an operator runs it.
    let exe = std::env::current_exe()?;
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let out = tokio::process::Command::new(&exe)
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

    let cpu0 = cpu_ticks(hostd_pid);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let cpu1 = cpu_ticks(hostd_pid);
    let elapsed_min = t0.elapsed().as_secs_f64() / 60.0;
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let cpu_ms = (cpu1.saturating_sub(cpu0)) as f64 * 1000.0 / ticks_per_sec;
    Ok(Figures {
        ps_ms,
        naive_ms,
        cpu_ms_per_min: cpu_ms / elapsed_min,
        rss_mb: rss_kb(hostd_pid) as f64 / 1024.0,
    })
}

async fn wait_all_alive(sock: &Path, n: u32) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(mut c) = client::connect(sock).await
            && let Ok(r) = c.list_agents(ListAgentsRequest {}).await
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
    let out = tokio::process::Command::new("tmux")
        .args([
            "-L",
            socket,
            "display-message",
            "-p",
            "-t",
            &format!("={name}:"),
            "#{pane_pid}\t#{pane_dead}\t#{pane_current_command}\t#{window_activity}",
        ])
        .output()
        .await;
    let pid = out
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split('\t').next().map(str::to_owned))
        .unwrap_or_default();
    let _ = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    let _ = std::fs::read_to_string(PathBuf::from(run_dir).join(format!("{name}.hb")));
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm.
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
