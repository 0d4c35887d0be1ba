//! `fleet-bench soak`: a real hostd with N agents under a steady churn
//! of operator work for M minutes — `ps`, verified sends, kills the
//! supervisor must respawn, watch and event streams opened and dropped,
//! roster reloads — then hostd's and the tmux server's RSS, open
//! descriptors and threads at the start and the end, with the ratio. A
//! leak shows as a ratio well above 1.

use std::time::{Duration, Instant};

use fleet_proto::v1::{EventsRequest, ListAgentsRequest, PaneState, SendRequest, Verdict};

use crate::local::{Bed, rss_kb, wait_all_alive};
use fleetctl::{Failure, client};

#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// Agents in the fleet (half demo agents, half shells).
    #[arg(long, default_value_t = 200)]
    pub agents: u32,
    /// Minutes of churn.
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
}

/// What one process costs at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    rss_kb: u64,
    fds: u64,
    threads: u64,
}

fn cost(pid: u32) -> Cost {
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    Cost {
        rss_kb: rss_kb(pid),
        fds,
        threads,
    }
}

#[derive(Debug, Default)]
struct Churn {
    sends: u32,
    accepted: u32,
    kills: u32,
    streams: u32,
    reloads: u32,
    ps: u32,
}

pub async fn run(a: SoakArgs) -> Result<(), Failure> {
    let n = a.agents.max(2);
    let mut roster = String::from(
        "version: 1\ntransport: tmux\nsupervision:\n  respawn:\n    initial_delay_secs: 0.5\n    max_deaths: 1000\nagents:\n",
    );
    for i in 0..n {
        if i % 2 == 0 {
            roster.push_str(&format!(
                "  - name: d{i}\n    runtime: demo\n    command: fleet-demo-agent --busy-ms 100\n    heartbeat_interval_secs: 1\n"
            ));
        } else {
            roster.push_str(&format!(
                "  - name: s{i}\n    runtime: shell\n    command: bash --norc --noprofile\n"
            ));
        }
    }
    let bed = Bed::start("soak", &roster).await?;
    let sock = bed.dir.path().join("hostd.sock");
    let hostd = bed.hostd.id().unwrap_or_default();
    wait_all_alive(&sock, n).await?;
    let tmux: u32 = fleet_hostd::tmux::Tmux::new("tmux", &bed.socket_name)
        .run(["display-message", "-p", "#{pid}"])
        .await
        .ok()
        .and_then(|o| o.trim().parse().ok())
        .unwrap_or(0);
    let mut c = client::connect(&sock).await?;
    // Settle: first beats written, first screens observed.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let start = (cost(hostd), cost(tmux));
    let mut churn = Churn::default();
    let until = Instant::now() + Duration::from_secs_f64(a.minutes.max(0.05) * 60.0);
    let began = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut second = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        second += 1;
        let rows = c
            .list_agents(ListAgentsRequest::default())
            .await?
            .into_inner()
            .agents;
        churn.ps += 1;
        if second.is_multiple_of(2) {
            let demo = (second / 2 % u64::from(n.div_ceil(2))) * 2;
            let r = c
                .send(SendRequest {
                    agent: format!("d{demo}"),
                    text: format!("soak {second}").into_bytes(),
                    verify: true,
                    ..Default::default()
                })
                .await;
            churn.sends += 1;
            if r.is_ok_and(|r| r.into_inner().verdict == Verdict::Accepted as i32) {
                churn.accepted += 1;
            }
        }
        if second.is_multiple_of(5) {
            let victim = &rows[(second as usize / 5 * 7) % rows.len()];
            if victim.pane == PaneState::Alive as i32 && victim.pane_pid > 0 {
                if let Some(pid) = i32::try_from(victim.pane_pid)
                    .ok()
                    .and_then(rustix::process::Pid::from_raw)
                {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
                churn.kills += 1;
            }
        }
        if second.is_multiple_of(3) {
            let mut events = c
                .events(EventsRequest {
                    follow: true,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let _ = tokio::time::timeout(Duration::from_secs(1), events.message()).await;
            churn.streams += 1;
        }
        if second.is_multiple_of(30) {
            if let Some(pid) = i32::try_from(hostd)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::HUP);
            }
            churn.reloads += 1;
        }
        if second.is_multiple_of(60) {
            let now = cost(hostd);
            let alive = rows
                .iter()
                .filter(|r| r.pane == PaneState::Alive as i32)
                .count();
            println!(
                "{:>5.1} min: {alive}/{n} alive, hostd rss {} KiB fds {} threads {}",
                began.elapsed().as_secs_f64() / 60.0,
                now.rss_kb,
                now.fds,
                now.threads
            );
        }
    }
    // Let the last respawns land before the end figures.
    wait_all_alive(&sock, n).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = (cost(hostd), cost(tmux));
    println!(
        "soak: {n} agents, {:.1} min: {} ps, {}/{} sends accepted, {} kills (all respawned), {} streams, {} reloads",
        began.elapsed().as_secs_f64() / 60.0,
        churn.ps,
        churn.accepted,
        churn.sends,
        churn.kills,
        churn.streams,
        churn.reloads
    );
    println!("{:<16} {:>10} {:>10} {:>7}", "", "start", "end", "ratio");
    let ratio = |s: u64, e: u64| if s == 0 { 0.0 } else { e as f64 / s as f64 };
    for (who, s, e) in [("hostd", start.0, end.0), ("tmux server", start.1, end.1)] {
        for (what, s, e) in [
            ("rss_kib", s.rss_kb, e.rss_kb),
            ("open_fds", s.fds, e.fds),
            ("threads", s.threads, e.threads),
        ] {
            println!(
                "{:<16} {s:>10} {e:>10} {:>6.2}x",
                format!("{who} {what}"),
                ratio(s, e)
            );
        }
    }
    Ok(())
}
