//! `fleet-bench top`: the real `fleetctl top` in a real tmux pane, over a
//! real aggregator with N simulated hosts (the federation bench's links).
//! Prints, per N, in one run: the time until the unfiltered view is on
//! screen (a count: more agents match than `top` holds) and `top`'s RSS
//! then; the time until a filter matching one agent per host (N rows)
//! is on screen and the RSS holding them; `top`'s CPU while those rows
//! change at the steady rate; and the time back to the count after `c`.

use std::path::Path;
use std::time::{Duration, Instant};

use fleet_hostd::tmux::Tmux;

use crate::federation::link_fleet;
use crate::local::{cpu_ticks, rss_kb, sibling};
use fleetctl::Failure;

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Numbers of simulated hosts, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1000u32, 10000])]
    pub hosts: Vec<u32>,
    /// Agents per host.
    #[arg(long, default_value_t = 50)]
    pub agents: u32,
    /// Changes per second to the rows `top` holds, as a fraction of all
    /// agents (all land on the filtered rows).
    #[arg(long, default_value_t = 0.01)]
    pub change_rate: f64,
    /// Seconds of changes to measure `top`'s CPU over.
    #[arg(long, default_value_t = 10)]
    pub steady_secs: u64,
    /// Host links started per second.
    #[arg(long, default_value_t = 2000)]
    pub start_rate: u32,
}

struct Figures {
    open_ms: f64,
    open_rss_mb: f64,
    filter_ms: f64,
    rows_rss_mb: f64,
    steady_cpu_pct: f64,
    changes_per_s: f64,
    clear_ms: f64,
}

pub async fn run(a: TopArgs) -> Result<(), Failure> {
    println!(
        "{:>6} {:>7} {:>9} {:>12} {:>10} {:>6} {:>12} {:>11} {:>10} {:>9}",
        "hosts",
        "agents",
        "open_ms",
        "open_rss_mb",
        "filter_ms",
        "rows",
        "rows_rss_mb",
        "changes/s",
        "top_cpu_%",
        "clear_ms"
    );
    for n in &a.hosts {
        let f = one_size(*n, &a).await?;
        println!(
            "{:>6} {:>7} {:>9.0} {:>12.1} {:>10.0} {:>6} {:>12.1} {:>11.0} {:>10.1} {:>9.0}",
            n,
            u64::from(*n) * u64::from(a.agents),
            f.open_ms,
            f.open_rss_mb,
            f.filter_ms,
            n,
            f.rows_rss_mb,
            f.changes_per_s,
            f.steady_cpu_pct,
            f.clear_ms
        );
    }
    Ok(())
}

fn other(e: impl std::fmt::Display) -> Failure {
    Failure::Other(e.to_string())
}

/// Polls the pane until `ok` holds of its text; the time it took.
async fn until(
    tmux: &Tmux,
    what: &str,
    from: Instant,
    ok: impl Fn(&str) -> bool,
) -> Result<f64, Failure> {
    let deadline = from + Duration::from_secs(120);
    loop {
        let screen = tmux
            .run(["capture-pane", "-p", "-t", "top"])
            .await
            .map_err(other)?;
        if ok(&screen) {
            return Ok(from.elapsed().as_secs_f64() * 1000.0);
        }
        if Instant::now() > deadline {
            return Err(Failure::Other(format!(
                "top never showed {what}; its screen:\n{screen}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn keys(tmux: &Tmux, keys: &[&str]) -> Result<(), Failure> {
    let mut args = vec!["send-keys", "-t", "top"];
    args.extend_from_slice(keys);
    tmux.run(args).await.map_err(other).map(drop)
}

async fn one_size(n: u32, a: &TopArgs) -> Result<Figures, Failure> {
    eprintln!("[{n} hosts] linking");
    let fleet = link_fleet(n, a.agents, a.start_rate, &sibling("fleet-aggregator")).await?;
    let script = fleet.dir.path().join("top.sh");
    let mut line = format!("exec {}", sibling("fleetctl").display());
    for f in fleet.operator_flags() {
        line.push(' ');
        line.push_str(&f.to_string_lossy());
    }
    line.push_str(" top\n");
    std::fs::write(&script, line)?;
    let tmux = Tmux::new("tmux", format!("fleet-bench-top-{}", std::process::id()));
    let result = measure(&tmux, &script, n, a, &fleet).await;
    tmux.kill_server().await;
    fleet.stop().await;
    result
}

async fn measure(
    tmux: &Tmux,
    script: &Path,
    n: u32,
    a: &TopArgs,
    fleet: &crate::federation::Linked,
) -> Result<Figures, Failure> {
    eprintln!("[{n} hosts] top, unfiltered");
    let t = Instant::now();
    let script = script.to_string_lossy();
    tmux.run([
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-x",
        "200",
        "-y",
        "50",
        "-s",
        "top",
        "bash",
        &script,
    ])
    .await
    .map_err(other)?;
    let total = u64::from(n) * u64::from(a.agents);
    let open_ms = until(tmux, "the count", t, |s| {
        s.contains(&format!("{total} agents match this selection"))
    })
    .await?;
    let pid: u32 = tmux
        .run(["display-message", "-p", "-t", "top", "#{pane_pid}"])
        .await
        .map_err(other)?
        .trim()
        .parse()
        .map_err(other)?;
    let open_rss_mb = rss_kb(pid) as f64 / 1024.0;

    eprintln!("[{n} hosts] a filter matching {n} rows");
    let t = Instant::now();
    keys(tmux, &["/"]).await?;
    keys(tmux, &["-l", "agent001"]).await?;
    keys(tmux, &["Enter"]).await?;
    let filter_ms = until(tmux, "the filtered rows", t, |s| {
        s.contains(&format!(" of {n})")) || s.contains(&format!("Agents ({n})"))
    })
    .await?;
    let rows_rss_mb = rss_kb(pid) as f64 / 1024.0;

    eprintln!("[{n} hosts] changes to the rows held");
    // agent001 of hosts in turn, in 100 ms ticks.
    let per_tick = (total as f64 * a.change_rate / 10.0).max(1.0);
    let cpu_from = cpu_ticks(pid);
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let (mut carry, mut k, mut made) = (0.0, 0usize, 0u64);
    while t0.elapsed() < Duration::from_secs(a.steady_secs) {
        tick.tick().await;
        carry += per_tick;
        while carry >= 1.0 {
            carry -= 1.0;
            k = (k + 1) % fleet.sims.len();
            fleet.sims[k].change(1);
            made += 1;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let steady_cpu_pct = cpu_ticks(pid).saturating_sub(cpu_from) as f64 / secs;

    eprintln!("[{n} hosts] cleared");
    let t = Instant::now();
    keys(tmux, &["c"]).await?;
    let clear_ms = until(tmux, "the count again", t, |s| {
        s.contains(&format!("{total} agents match this selection"))
    })
    .await?;
    keys(tmux, &["q"]).await?;
    Ok(Figures {
        open_ms,
        open_rss_mb,
        filter_ms,
        rows_rss_mb,
        steady_cpu_pct,
        changes_per_s: made as f64 / secs,
        clear_ms,
    })
}
