//! fleetctl: the operator CLI. Every read verb has `--json`; exit codes are
//! documented in `fleetctl --help` and the README.
#![forbid(unsafe_code)]

pub mod beat;
pub mod certs;
pub mod client;
pub mod demo;
pub mod events;
pub mod hook;
pub mod init;
pub mod offline;
pub mod ps;
pub mod render;
pub mod send;
pub mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes (also in the README).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Error: no hostd, refused, unknown agent, I/O.
    pub const ERROR: u8 = 1;
    /// Usage error (bad flags or arguments).
    pub const USAGE: u8 = 2;
    /// `send --verify`: the text stayed on the input row as a draft.
    pub const DRAFT: u8 = 3;
    /// `send --verify`: no evidence either way.
    pub const UNVERIFIABLE: u8 = 4;
    /// `send --verify`: the agent queued the prompt behind a running turn.
    pub const QUEUED: u8 = 5;
}

/// Why a verb failed, sorted by what the operator should do about it.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{}", describe_status(.0))]
    Status(#[from] tonic::Status),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

impl From<serde_json::Error> for Failure {
    /// Writing JSON to stdout fails as the write did (a closed pipe is a
    /// closed pipe, whatever was being written).
    fn from(e: serde_json::Error) -> Self {
        match e.io_error_kind() {
            Some(kind) => Failure::Io(std::io::Error::new(kind, e.to_string())),
            None => Failure::Other(e.to_string()),
        }
    }
}

impl Failure {
    /// The reader of stdout went away (`fleetctl … | head`): not an error
    /// worth a word.
    fn is_broken_pipe(&self) -> bool {
        matches!(self, Failure::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// One line for a server's answer, sorted by its code (never by its text),
/// naming the server this invocation talks to.
fn describe_status(s: &tonic::Status) -> String {
    use tonic::Code;
    let peer = client::peer();
    let what = match s.code() {
        Code::PermissionDenied => format!("refused by the {peer}"),
        Code::Unauthenticated => format!("not authenticated to the {peer}"),
        Code::NotFound => "not found".to_owned(),
        Code::InvalidArgument => "invalid request".to_owned(),
        // Through an aggregator the message names what is unavailable (a
        // host, its link); from hostd it is hostd itself.
        Code::Unavailable if peer == "aggregator" => "unavailable".to_owned(),
        Code::Unavailable => "hostd unavailable".to_owned(),
        Code::ResourceExhausted => format!("too slow for the {peer}; run again"),
        Code::DeadlineExceeded => format!("no answer from the {peer} in time"),
        _ => format!("{peer} error"),
    };
    format!("{what}: {}", s.message())
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Failure::Usage(_) => exit::USAGE,
            _ => exit::ERROR,
        }
    }
}

/// Fleet operator CLI: see every agent of the fleet and whether it is really
/// alive.
///
/// Without an aggregator configured, fleetctl talks to the local fleet-hostd
/// over its Unix socket ($XDG_RUNTIME_DIR/fleet/hostd.sock, or
/// /tmp/fleet-<uid>/hostd.sock; override with --socket or FLEET_SOCKET).
/// With --aggregator HOST:PORT (or FLEET_AGGREGATOR) and an operator
/// certificate (--ca/--cert/--key or FLEET_CA/FLEET_CERT/FLEET_KEY) the same
/// verbs act on the whole fleet through fleet-aggregator over mTLS; agents
/// are then addressed as AGENT, HOST/AGENT or TENANT/HOST/AGENT.
///
/// Exit codes: 0 success (for `send --verify`: accepted), 1 error (no hostd,
/// refused, unknown or ambiguous agent, dead pane), 2 usage, 3 draft,
/// 4 unverifiable, 5 queued.
#[derive(Debug, Parser)]
#[command(name = "fleetctl", version, propagate_version = true)]
pub struct Cli {
    /// hostd socket to talk to.
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    #[command(flatten)]
    pub remote: client::Remote,
    #[command(subcommand)]
    pub command: Verb,
}

/// A help section listing words and their meanings, from the one table that
/// names them (`fleet_proto::vocab`).
fn vocab_help<'a>(title: &str, words: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let words: Vec<_> = words.collect();
    let width = words.iter().map(|(w, _)| w.len()).max().unwrap_or(0);
    let mut out = format!("{title}:\n");
    for (w, m) in words {
        out.push_str(&format!("  {w:<width$}  {m}\n"));
    }
    out
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// One row per agent: pane, real process, idle time, heartbeat health and flags.
    ///
    /// Columns: PANE alive/dead/missing; PROCESS the real foreground program
    /// (from /proc, skipping a wrapping shell); IDLE since the pane last
    /// changed; HB-AGE age of the newest heartbeat; HEALTH healthy (≤ 3 ×
    /// interval), stale, unknown; STATUS idle (ready for a prompt), busy (a
    /// turn runs), waiting (it asks a human: permission, question, trust),
    /// unknown; SOURCE where the status came from: native (the runtime's
    /// own hook, extension or plugin), observed (hostd read it off the
    /// screen by the runtime's rules, e.g. an interrupt no hook reports),
    /// fallback (only the process is known; status unknown). MODEL is what
    /// the runtime reports about itself, else the roster's hint. FLAGS are
    /// listed below, with the supervisor's state (respawn, gave-up).
    ///
    /// Narrow terminals drop the least important columns; --json always has
    /// every field (schema "fleet.ps/v1", see the README).
    #[command(after_long_help = vocab_help("Flags", fleet_proto::v1::AgentFlag::ALL.iter().map(|f| (f.word(), f.meaning()))))]
    Ps {
        /// Machine-readable output (stable shape, tenant_id and host on every row).
        #[arg(long)]
        json: bool,
        /// Redraw on every change (streamed from hostd, not polled).
        #[arg(long, short = 'w')]
        watch: bool,
    },
    /// Stream lifecycle events: started, adopted, died, heartbeat
    /// stale/healthy, roster reloaded/rejected, tmux server lost … (every
    /// kind is listed below).
    #[command(after_long_help = vocab_help("Kinds", fleet_proto::v1::EventKind::ALL.iter().map(|k| (k.word(), k.meaning()))))]
    Events {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Print the retained backlog and exit instead of following.
        #[arg(long)]
        no_follow: bool,
        /// Only events about this agent: AGENT, HOST/AGENT or
        /// TENANT/HOST/AGENT (the same address `send` takes).
        #[arg(long, value_name = "NAME")]
        agent: Option<String>,
        /// Only events after this sequence number.
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        after: u64,
        /// Only events of this kind (repeatable). Without it every kind but
        /// the per-turn `turn-started` / `turn-ended` is shown; ask for
        /// those by name.
        #[arg(long, value_name = "KIND")]
        kind: Vec<String>,
    },
    /// Host rows: tenant, host, hostd version, tmux, agent counts, unit state.
    #[command(after_long_help = vocab_help("Flags", fleet_proto::v1::HostFlag::ALL.iter().map(|f| (f.word(), f.meaning()))))]
    Hosts {
        #[arg(long)]
        json: bool,
    },
    /// Write a native heartbeat (for runtimes with hooks). Reads
    /// FLEET_HEARTBEAT_FILE, which hostd sets in every agent's pane.
    ///
    /// Example hooks: on prompt submit `fleetctl beat --status busy --turn`,
    /// on turn end `fleetctl beat --status idle`, on a permission prompt
    /// `fleetctl beat --status waiting`.
    Beat {
        /// idle (or v1's ok), busy or waiting.
        #[arg(long, value_parser = parse_status)]
        status: fleet_proto::heartbeat::Status,
        /// Model the runtime is using (self-reported; shown in `ps`).
        #[arg(long)]
        model: Option<String>,
        /// Count one more accepted prompt (the `turn` counter).
        #[arg(long)]
        turn: bool,
        /// Heartbeat file (default: $FLEET_HEARTBEAT_FILE).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// pid to record (default: the parent process, i.e. the runtime running the hook).
        #[arg(long)]
        pid: Option<u32>,
    },
    /// The native status writer hostd wires into each built-in runtime's
    /// hooks, extension or plugin (you do not run it by hand).
    ///
    /// Reads the runtime's event payload (JSON) on stdin and rewrites the
    /// agent's heartbeat (FLEET_HEARTBEAT_FILE): busy when a prompt is
    /// accepted (one turn per the runtime's own turn key), idle when the
    /// turn ends, waiting on a permission prompt, and the model the runtime
    /// reports. Prints nothing and always exits 0, so it can never block or
    /// change a turn; FLEET_HOOK_DEBUG=1 shows errors on stderr.
    Hook {
        /// claude, codex, gemini, opencode, pi or aider.
        runtime: String,
        /// The runtime's event name (e.g. UserPromptSubmit, Stop, agent_end).
        event: String,
        /// Arguments a runtime appends (aider passes none; ignored).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        rest: Vec<String>,
    },
    /// Run a local demo fleet (no configuration needed) and print `ps`.
    ///
    /// Starts fleet-hostd in the background with an embedded roster: demo
    /// agents with native heartbeats, a plain shell on fallback beats, and one
    /// agent whose process does not match its roster runtime (drift).
    Demo {
        /// Stop the demo fleet (hostd and its tmux server).
        #[arg(long)]
        stop: bool,
        /// Seconds to wait for the fleet to become healthy.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Type a prompt into an agent: pasted through a tmux buffer (never a
    /// shell), then Enter. With --verify, wait for the verdict: accepted (exit
    /// 0; evidence "acknowledged" when the runtime's heartbeat turn advanced,
    /// else "screen"), draft (3), unverifiable (4), queued (5).
    ///
    /// Control bytes other than newline and tab are stripped; invalid UTF-8
    /// and text over hostd's limit (64 KiB by default) are refused. A pane in
    /// copy mode is taken out of it first; a dead pane is refused.
    ///
    /// Inputs to one agent take turns (one writer per pane): a send behind
    /// another waits (--queue-timeout) and its receipt says so. A runtime
    /// still starting is waited for until it shows its input box. Text
    /// already in the input box (a stale draft) is never merged with yours:
    /// the send is refused naming its size, unless --clear-draft, which
    /// empties the box with the runtime's clear key first. A runtime asking a
    /// human (a permission or trust prompt) is refused: the text would
    /// answer it. Typed into a runtime that reads nothing while a turn runs
    /// (aider), text is the terminal's type-ahead: queued, not accepted.
    Send(send::SendArgs),
    /// Watch an agent's screen, read-only by construction. On a terminal: a
    /// throw-away grouped tmux session attached with `attach -r` (typing does
    /// nothing; the agent's window size is kept). Otherwise, or with --once,
    /// screen frames from hostd.
    Watch {
        agent: String,
        /// Print the current screen and exit.
        #[arg(long)]
        once: bool,
        /// Frames as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Take an agent's session over INTERACTIVELY: the only verb that can
    /// type. Needs a terminal; recorded as an event.
    Attach { agent: String },
    /// Start a stopped or missing agent (a dead pane is respawned).
    Start(watch::Target),
    /// End an agent's session and keep it stopped until `start`.
    Stop(watch::Target),
    /// Respawn an agent's pane in place (same pane id, new process).
    Restart(watch::Target),
    /// Send the runtime's reset command (`/clear`, `/new`) through the
    /// verified send path; exits with the receipt's verdict code.
    Reset(watch::Target),
    /// Development PKI: a CA and certificates with one SPIFFE URI SAN each
    /// (hostd: spiffe://TD/tenant/T/host/H, operator: spiffe://TD/operator/N,
    /// aggregator: spiffe://TD/aggregator). Keys are written 0600.
    Certs {
        #[command(subcommand)]
        what: certs::Certs,
    },
    /// Install fleet-hostd for this user: config, starter roster, systemd
    /// user unit (enabled and started) and linger (so it starts at boot).
    /// Idempotent; --dry-run prints the plan.
    Init(init::InitArgs),
}

fn parse_status(s: &str) -> Result<fleet_proto::heartbeat::Status, String> {
    s.parse()
        .map_err(|_| format!("{s:?}: expected idle, busy or waiting (ok = idle)"))
}

/// Runs one invocation and returns the process exit code. The whole verb
/// runs in one span, a child of `TRACEPARENT` when that is set; its trace
/// context travels with every command.
pub async fn main(cli: Cli) -> ExitCode {
    use tracing::Instrument;
    let telemetry = fleet_proto::telemetry::init("fleetctl", None);
    let span = tracing::info_span!("fleetctl", verb = cli.command.name());
    fleet_proto::telemetry::adopt(&span, &std::env::var("TRACEPARENT").unwrap_or_default());
    let code = run(cli).instrument(span).await;
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    code
}

/// The `traceparent` a command carries: the current span's.
pub fn traceparent() -> String {
    fleet_proto::telemetry::outgoing(
        &tracing::Span::current(),
        &std::env::var("TRACEPARENT").unwrap_or_default(),
    )
}

impl Verb {
    fn name(&self) -> &'static str {
        match self {
            Verb::Ps { .. } => "ps",
            Verb::Events { .. } => "events",
            Verb::Hosts { .. } => "hosts",
            Verb::Beat { .. } => "beat",
            Verb::Hook { .. } => "hook",
            Verb::Demo { .. } => "demo",
            Verb::Send(_) => "send",
            Verb::Watch { .. } => "watch",
            Verb::Attach { .. } => "attach",
            Verb::Start(_) => "start",
            Verb::Stop(_) => "stop",
            Verb::Restart(_) => "restart",
            Verb::Reset(_) => "reset",
            Verb::Certs { .. } => "certs",
            Verb::Init(_) => "init",
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    let server = client::Server::new(cli.socket.as_deref(), &cli.remote);
    let socket = client::socket_path(cli.socket.as_deref());
    use fleet_proto::v1::ControlAction;
    let ok = |r: Result<(), Failure>| r.map(|()| exit::OK);
    let result: Result<u8, Failure> = match cli.command {
        Verb::Send(args) => send::run(&server, args).await,
        Verb::Watch { agent, once, json } => ok(watch::watch(&server, &agent, once, json).await),
        Verb::Attach { agent } => ok(watch::attach(&server, &agent).await),
        Verb::Start(t) => watch::control(&server, t, ControlAction::Start).await,
        Verb::Stop(t) => watch::control(&server, t, ControlAction::Stop).await,
        Verb::Restart(t) => watch::control(&server, t, ControlAction::Restart).await,
        Verb::Reset(t) => watch::control(&server, t, ControlAction::Reset).await,
        Verb::Ps { json, watch } => ok(ps::run(&server, json, watch).await),
        Verb::Events {
            json,
            no_follow,
            agent,
            after,
            kind,
        } => ok(events::run(&server, json, !no_follow, agent, after, kind).await),
        Verb::Hosts { json } => ok(hosts(&server, json).await),
        Verb::Beat {
            status,
            model,
            turn,
            file,
            pid,
        } => beat::run(beat::BeatArgs {
            status,
            model,
            turn,
            file,
            pid,
        })
        .map(|_| exit::OK),
        Verb::Hook { runtime, event, .. } => {
            hook::run(&runtime, &event);
            Ok(exit::OK)
        }
        Verb::Demo { stop, timeout } => ok(demo::run(&socket, stop, timeout).await),
        Verb::Certs { what } => certs::run(what).map(|()| exit::OK),
        Verb::Init(a) => init::run(a).map(|()| exit::OK),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        // Quiet, and a success, as for `grep … | head`.
        Err(e) if e.is_broken_pipe() => ExitCode::from(exit::OK),
        Err(e) => {
            // An error may quote what a peer or an agent said.
            eprintln!("fleetctl: {}", render::printable(&e.to_string(), true));
            ExitCode::from(e.code())
        }
    }
}

/// LINK: how the host is reached, and each of its own links up (a hostd
/// whose uplink fails says so, not just `local`).
fn link_cell(h: &fleet_proto::v1::HostRow) -> render::Cell {
    use render::Colour;
    let mut text = h.link.clone();
    let mut bad = h.link == "unreachable";
    for u in &h.uplinks {
        text.push_str(&format!(", up {} {}", u.address, u.state));
        if u.state != "connected" {
            bad = true;
            if !u.error.is_empty() {
                text.push_str(&format!(" ({})", u.error));
            }
        }
    }
    (text, if bad { Colour::Red } else { Colour::None })
}

async fn hosts(server: &client::Server, json: bool) -> Result<(), Failure> {
    use std::io::Write;
    let mut c = client::open(server).await?;
    let resp = c
        .list_hosts(fleet_proto::v1::ListHostsRequest {})
        .await?
        .into_inner();
    let doc = ps::document(&[], &resp.hosts, resp.generated_at_unix_ms);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({"schema": "fleet.hosts/v1", "hosts": doc.hosts}),
        )?;
        writeln!(out)?;
        out.flush()?;
        return Ok(());
    }
    use render::{Colour, Column};
    let cols = [
        Column {
            header: "TENANT",
            priority: 5,
        },
        Column {
            header: "HOST",
            priority: 9,
        },
        Column {
            header: "LINK",
            priority: 8,
        },
        Column {
            header: "LAST-SEEN",
            priority: 6,
        },
        Column {
            header: "VERSION",
            priority: 2,
        },
        Column {
            header: "TMUX",
            priority: 4,
        },
        Column {
            header: "AGENTS",
            priority: 8,
        },
        Column {
            header: "ALIVE",
            priority: 7,
        },
        Column {
            header: "HEALTHY",
            priority: 7,
        },
        Column {
            header: "UNIT",
            priority: 3,
        },
        Column {
            header: "FLAGS",
            priority: 6,
        },
    ];
    let rows: Vec<Vec<render::Cell>> = resp
        .hosts
        .iter()
        .map(|h| {
            let unit = h.unit.clone().unwrap_or_default();
            let p = |s: String| (s, Colour::None);
            vec![
                p(h.tenant_id.clone()),
                p(h.host.clone()),
                link_cell(h),
                p(if h.last_seen_unix_ms > 0 {
                    format!(
                        "{}s ago",
                        (resp.generated_at_unix_ms - h.last_seen_unix_ms).max(0) / 1000
                    )
                } else {
                    "-".into()
                }),
                p(h.hostd_version.clone()),
                p(format!(
                    "-L {} ({})",
                    h.tmux_socket,
                    if h.tmux_running { "up" } else { "down" }
                )),
                p(h.agents_total.to_string()),
                p(h.agents_alive.to_string()),
                p(h.agents_healthy.to_string()),
                p(if unit.known {
                    format!(
                        "{} {}/{} linger={}",
                        unit.unit, unit.active, unit.enabled, unit.linger
                    )
                } else {
                    format!("unknown ({})", unit.reason)
                }),
                p(if h.flags.is_empty() {
                    "-".into()
                } else {
                    h.flags.join(",")
                }),
            ]
        })
        .collect();
    out.write_all(render::table(&cols, &rows, render::Style::for_stdout()).as_bytes())?;
    out.flush()?;
    Ok(())
}
