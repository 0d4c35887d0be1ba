//! `fleetctl watch` (read-only by construction) and `fleetctl attach` (the
//! one verb that can type), plus start/stop/restart/reset.

use fleet_hostd::tmux::{Tmux, exact};
use std::io::{IsTerminal, Write};

use fleet_proto::v1::{
    ControlAction, ControlRequest, ListHostsRequest, ScreenFrame, WatchScreenRequest,
};

use crate::{Failure, client, exit, send};

fn frame_json(f: &ScreenFrame) -> serde_json::Value {
    serde_json::json!({
        "schema": "fleet.frame/v1",
        "tenant_id": f.tenant_id, "host": f.host, "agent": f.agent,
        "seq": f.seq, "ts_unix_ms": f.ts_unix_ms,
        "width": f.width, "height": f.height,
        "cursor": {"x": f.cursor_x, "y": f.cursor_y},
        "alternate_screen": f.alternate_screen, "dead": f.dead,
        "lines": f.lines,
    })
}

/// `watch`: an interactive read-only view on a terminal, otherwise a
/// stream of frames (`--once`: one frame).
pub async fn watch(
    server: &client::Server,
    agent: &str,
    once: bool,
    json: bool,
) -> Result<(), Failure> {
    fleet_proto::name::check(agent.rsplit('/').next().unwrap_or(agent))
        .map_err(|e| Failure::Usage(e.to_string()))?;
    // The read-only tmux view needs the agent's tmux server on this machine;
    // through an aggregator the frames are drawn instead.
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let interactive = !once && !json && tty && !server.is_aggregator();
    let redraw = !once && !json && tty && server.is_aggregator();
    let mut c = client::open(server).await?;
    if interactive {
        let hosts = c
            .list_hosts(ListHostsRequest::default())
            .await?
            .into_inner();
        let sock = hosts
            .hosts
            .first()
            .map(|h| h.tmux_socket.clone())
            .ok_or_else(|| Failure::Other("hostd reported no host".into()))?;
        return watch_interactive(&sock, agent.rsplit('/').next().unwrap_or(agent));
    }
    let mut stream = c
        .watch_screen(WatchScreenRequest {
            agent: agent.to_owned(),
            max_fps: 10,
            colours: false,
            once,
        })
        .await?
        .into_inner();
    while let Some(f) = stream.message().await? {
        let mut out = std::io::stdout().lock();
        if json {
            serde_json::to_writer(&mut out, &frame_json(&f))?;
            writeln!(out)?;
        } else {
            if redraw {
                // Clear and home: one screen, redrawn per frame.
                write!(out, "\x1b[H\x1b[2J")?;
            }
            if !once {
                writeln!(
                    out,
                    "--- {}/{}/{} frame {} ---",
                    f.tenant_id, f.host, f.agent, f.seq
                )?;
            }
            for l in &f.lines {
                writeln!(out, "{}", crate::render::printable(l, false))?;
            }
        }
        out.flush()?;
    }
    Ok(())
}

/// A throw-away session grouped with the agent's, attached read-only; it is
/// removed on detach (hostd sweeps it if this process is killed).
fn watch_interactive(tmux_socket: &str, agent: &str) -> Result<(), Failure> {
    let session = format!("{agent}-watch-{}", std::process::id());
    let server = Tmux::new("tmux", tmux_socket);
    let tmux = |args: &[&str]| server.interactive(args).status();
    // Marked in the same command list that creates it: hostd knows a
    // watcher by this option, never by its name.
    let made = tmux(&[
        "new-session",
        "-d",
        "-t",
        &exact(agent),
        "-s",
        &session,
        ";",
        "set-option",
        "-t",
        &exact(&session),
        "@fleet-watcher",
        "1",
    ])?;
    if !made.success() {
        return Err(Failure::Other(format!(
            "cannot open a watch session for {agent}"
        )));
    }
    eprintln!("watching {agent} read-only (typing does nothing; detach with C-b d)");
    let status = tmux(&["attach-session", "-r", "-t", &exact(&session)]);
    let _ = tmux(&["kill-session", "-t", &exact(&session)]);
    status?;
    Ok(())
}

/// `attach`: explicit interactive takeover; refuses without a terminal.
pub async fn attach(server: &client::Server, agent: &str) -> Result<(), Failure> {
    if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        return Err(Failure::Other(
            "attach needs a terminal: it hands your keyboard to the agent (use `fleetctl watch --once` or `send` from scripts)".into(),
        ));
    }
    let mut c = client::open(server).await?;
    let r = c
        .control(ControlRequest {
            agent: agent.to_owned(),
            action: ControlAction::Attach as i32,
            traceparent: crate::traceparent(),
            operator: operator(),
        })
        .await?
        .into_inner();
    if server.is_aggregator() {
        // There is no input path through the aggregator: the takeover is
        // recorded, and the keyboard has to be on the agent's host.
        println!(
            "attach to {}/{}/{} recorded. On host {} run:\n  tmux -L {} attach-session -t '{}'",
            r.tenant_id, r.host, r.agent, r.host, r.tmux_socket, r.tmux_target
        );
        return Ok(());
    }
    eprintln!(
        "taking over {} INTERACTIVELY: everything you type goes to the agent. Detach with C-b d.",
        r.agent
    );
    let status = Tmux::new("tmux", &r.tmux_socket)
        .interactive(["attach-session", "-t", &r.tmux_target])
        .status()?;
    if !status.success() {
        return Err(Failure::Other(format!("tmux attach ended with {status}")));
    }
    Ok(())
}

/// The agent a control verb acts on.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// AGENT, HOST/AGENT or TENANT/HOST/AGENT.
    pub agent: String,
    /// Print the outcome (and a reset's receipt) as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: crate::client::Conn,
}

fn operator() -> String {
    std::env::var("USER").unwrap_or_else(|_| format!("uid{}", rustix::process::getuid().as_raw()))
}

/// `start|stop|restart|reset`; returns the exit code (reset: the verdict's).
pub async fn control(
    server: &client::Server,
    target: Target,
    action: ControlAction,
) -> Result<u8, Failure> {
    let Target { agent, json, .. } = target;
    let mut c = client::open(server).await?;
    let r = c
        .control(ControlRequest {
            agent,
            action: action as i32,
            traceparent: crate::traceparent(),
            operator: operator(),
        })
        .await?
        .into_inner();
    let code = r.receipt.as_ref().map_or(exit::OK, send::verdict_code);
    let mut out = std::io::stdout().lock();
    if json {
        let v = serde_json::json!({
            "schema": "fleet.control/v1",
            "tenant_id": r.tenant_id, "host": r.host, "agent": r.agent,
            "action": action.as_str_name(),
            "outcome": r.outcome,
            "receipt": r.receipt.as_ref().map(send::receipt_json),
        });
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    } else {
        let line = format!("{}/{}/{}: {}", r.tenant_id, r.host, r.agent, r.outcome);
        writeln!(out, "{}", crate::render::printable(&line, false))?;
        if let Some(receipt) = &r.receipt {
            out.write_all(send::receipt_text(receipt).as_bytes())?;
        }
    }
    Ok(code)
}
