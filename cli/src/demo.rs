//! `fleetctl demo`: a working local fleet with no configuration — hostd in
//! the background with an embedded roster — then the `ps` table.

use fleet_proto::v1::AgentFlag;
use fleet_proto::vocab::Flagged;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fleet_proto::v1::{Health, ListAgentsRequest, ListHostsRequest, PaneState};

use crate::render::Style;
use crate::{Failure, client, ps};

/// The demo roster: demo agents with native heartbeats, a plain shell on
/// fallback beats, and `canary-pi`, whose roster runtime (pi) does not match
/// the program it really runs, so `ps` flags drift.
pub const ROSTER: &str = "\
# Fleet demo roster (written by `fleetctl demo`).
version: 1
transport: tmux
tmux:
  socket_name: fleet-demo
  holder_session: _holder
defaults:
  working_directory: ~
  heartbeat_interval_secs: 2
agents:
  - name: orchestrator
    runtime: demo
    class: orchestrator
    model_hint: demo-large
    command: fleet-demo-agent --model demo-large --busy-ms 3000
  - name: coder0
    runtime: demo
    class: implementer
  - name: coder1
    runtime: demo
    class: implementer
  - name: shell0
    runtime: shell
    class: worker
    command: bash --norc --noprofile
  - name: canary-pi
    runtime: pi
    class: canary
    model_hint: openai-codex/gpt-5.5:high
    command: fleet-demo-agent --no-heartbeat
";

/// tmux socket of the demo fleet (`FLEET_DEMO_TMUX_SOCKET` overrides it, so
/// tests never touch a demo an operator is running).
fn tmux_socket() -> String {
    std::env::var("FLEET_DEMO_TMUX_SOCKET")
        .ok()
        .filter(|s| fleet_proto::name::check(s).is_ok())
        .unwrap_or_else(|| "fleet-demo".to_owned())
}

/// Agents of the demo roster that write native heartbeats.
const NATIVE: &[&str] = &["orchestrator", "coder0", "coder1"];

fn demo_dir() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    state.join("fleet/demo")
}

/// The `fleet-hostd` next to this executable, else the one on PATH.
pub fn hostd_exe() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("fleet-hostd")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("fleet-hostd"))
}

/// `fleet-hostd` for `roster`, with its heartbeat files in `dir/run`, serving
/// `socket` and owning the tmux server `tmux_socket`; standard input closed.
// fleet-hostd, never tmux.
#[allow(clippy::disallowed_methods)]
pub fn hostd_command(
    roster: &Path,
    dir: &Path,
    socket: &Path,
    tmux_socket: &str,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(hostd_exe());
    cmd.arg("--roster")
        .arg(roster)
        .arg("--run-dir")
        .arg(dir.join("run"))
        .arg("--socket")
        .arg(socket)
        .arg("--tmux-socket")
        .arg(tmux_socket)
        .stdin(Stdio::null());
    cmd
}

pub async fn run(socket: &Path, stop: bool, timeout: u64) -> Result<(), Failure> {
    let dir = demo_dir();
    let roster = dir.join("roster.yaml");
    if stop {
        return stop_demo(&dir, socket).await;
    }
    if let Ok(mut c) = client::connect(socket).await
        && let Ok(h) = c.list_hosts(ListHostsRequest::default()).await
    {
        let ours = h
            .into_inner()
            .hosts
            .iter()
            .any(|h| Path::new(&h.roster_path) == roster);
        if !ours {
            return Err(Failure::Other(format!(
                "a fleet-hostd with another roster already serves {}; stop it first or pass --socket",
                socket.display()
            )));
        }
        println!("demo fleet already running");
    } else {
        std::fs::create_dir_all(dir.join("run"))?;
        std::fs::write(&roster, ROSTER)?;
        let log = std::fs::File::create(dir.join("hostd.log"))?;
        let exe = hostd_exe();
        let mut cmd = hostd_command(&roster, &dir, socket, &tmux_socket());
        cmd.stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: the demo outlives this command and a
            // Ctrl-C here.
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            Failure::Other(format!(
                "cannot start {}: {e} (build it with `cargo build --workspace`)",
                exe.display()
            ))
        })?;
        if let Some(pid) = child.id() {
            std::fs::write(dir.join("hostd.pid"), pid.to_string())?;
        }
        println!(
            "started fleet-hostd (pid {}), log {}",
            child.id().unwrap_or_default(),
            dir.join("hostd.log").display()
        );
        // Waits for the socket while watching the child for an early exit.
        let deadline = Instant::now() + Duration::from_secs(timeout);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join("hostd.log")).unwrap_or_default();
                return Err(Failure::Other(format!(
                    "fleet-hostd exited ({status}):\n{log}"
                )));
            }
            if client::connect(socket).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(Failure::Other(
                    "fleet-hostd did not open its socket in time".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut c = client::connect(socket).await?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let agents = loop {
        let agents = c
            .list_agents(ListAgentsRequest::default())
            .await?
            .into_inner();
        let ready = agents.agents.iter().all(|a| {
            let healthy = a
                .heartbeat
                .as_ref()
                .is_some_and(|h| h.health == Health::Healthy as i32);
            a.pane == PaneState::Alive as i32
                && (healthy || !NATIVE.contains(&a.name.as_str()))
                && a.process.is_some()
                // The canary shows drift once hostd's start-up grace passed.
                && (a.name != "canary-pi" || a.has(AgentFlag::Drift))
        });
        if (ready && !agents.agents.is_empty()) || Instant::now() > deadline {
            break agents;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    print!(
        "{}",
        ps::text(
            &agents.agents,
            agents.generated_at_unix_ms,
            Style::for_stdout()
        )
    );
    println!(
        "\nnext: `fleetctl ps --watch` · `fleetctl events` · `tmux -L {} attach -r -t =coder0:` (read-only) · `fleetctl demo --stop`",
        tmux_socket()
    );
    Ok(())
}

async fn stop_demo(dir: &Path, socket: &Path) -> Result<(), Failure> {
    let pid_file = dir.join("hostd.pid");
    if let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        if rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while socket.exists() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let _ = std::fs::remove_file(&pid_file);
    }
    let _ = fleet_hostd::tmux::Tmux::new("tmux", tmux_socket())
        .run(["kill-server"])
        .await;
    println!("demo fleet stopped");
    Ok(())
}
