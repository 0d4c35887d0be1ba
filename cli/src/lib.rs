//! fleetctl: the operator CLI. Every read verb has `--json`; exit codes are
//! documented in `fleetctl --help` and the README.
#![forbid(unsafe_code)]

pub mod beat;
pub mod certs;
pub mod client;
pub mod contexts;
pub mod dashboard;
pub mod demo;
pub mod events;
pub mod hook;
pub mod hosts;
pub mod init;
pub mod mcp;
pub mod mirror;
pub mod offline;
pub mod ps;
pub mod render;
pub mod select;
pub mod send;
pub mod top;
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
    #[arg(long, value_name = "PATH", help_heading = "Connection")]
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
    Ps(ps::PsArgs),
    /// Stream lifecycle events: started, adopted, died, heartbeat
    /// stale/healthy, roster reloaded/rejected, tmux server lost … (every
    /// kind is listed below).
    #[command(after_long_help = vocab_help("Kinds", fleet_proto::v1::EventKind::ALL.iter().map(|k| (k.word(), k.meaning()))))]
    Events(events::EventsArgs),
    /// Host rows: tenant, host, hostd version, tmux, agent counts, unit state.
    #[command(after_long_help = vocab_help("Flags", fleet_proto::v1::HostFlag::ALL.iter().map(|f| (f.word(), f.meaning()))))]
    Hosts(hosts::HostsArgs),
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
        #[command(flatten)]
        conn: client::Conn,
    },
    /// Take an agent's session over INTERACTIVELY: the only verb that can
    /// type. Needs a terminal; recorded as an event.
    Attach {
        agent: String,
        #[command(flatten)]
        conn: client::Conn,
    },
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
    /// A full-screen terminal dashboard: agents (colour by health and
    /// status), hosts, live events and the selected agent's screen, live and
    /// read-only. `?` lists the keys; `q` leaves.
    Top {
        #[command(flatten)]
        args: top::TopArgs,
        #[command(flatten)]
        conn: client::Conn,
    },
    /// Serve a read-only web dashboard on loopback (URL with a one-time
    /// token printed on start); it reaches the fleet with your identity.
    Dashboard {
        #[command(flatten)]
        args: dashboard::DashboardArgs,
        #[command(flatten)]
        conn: client::Conn,
    },
    /// Fleet's tools for an agent: a Model Context Protocol server on stdio
    /// (fleet_ps, fleet_digest, fleet_send, fleet_events,
    /// fleet_need_human). hostd starts it inside an agent's runtime when
    /// the roster says `mcp: true`; it acts as that agent (found by its
    /// pane, not by anything it is told) within the roster's `may:`.
    Mcp {
        #[command(flatten)]
        conn: client::Conn,
    },
    /// Shell completions on stdout: `fleetctl completions bash >
    /// ~/.local/share/bash-completion/completions/fleetctl` (zsh: into a
    /// directory of $fpath as `_fleetctl`; fish:
    /// ~/.config/fish/completions/fleetctl.fish).
    Completions { shell: clap_complete::Shell },
    /// The manual page (roff) on stdout: `fleetctl man | man -l -`.
    Man,
    /// The named contexts of ~/.config/fleet/fleetctl.toml (or
    /// $FLEET_CONFIG), the current one marked.
    ///
    /// A context names an aggregator and the files to reach it:
    ///
    ///   current-context = "prod"
    ///   [contexts.prod]
    ///   aggregator = "10.0.0.5:7443"
    ///   ca = "prod/ca.pem"           # relative to the file's directory
    ///   cert = "prod/operator.pem"
    ///   key = "prod/operator.key"
    ///   server-name = "aggregator.fleet"   # when the address is not in its certificate
    ///
    /// Chosen by --context NAME or FLEET_CONTEXT, else current-context when
    /// neither --aggregator nor --socket is given. Flags and FLEET_*
    /// variables override its fields one by one.
    #[command(verbatim_doc_comment)]
    Contexts {
        #[arg(long)]
        json: bool,
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
    /// The connection flags given after the verb; `None` for a verb that
    /// never connects.
    fn conn(&self) -> Option<&client::Conn> {
        match self {
            Verb::Ps(a) => Some(&a.conn),
            Verb::Events(a) => Some(&a.conn),
            Verb::Hosts(a) => Some(&a.conn),
            Verb::Send(a) => Some(&a.conn),
            Verb::Watch { conn, .. }
            | Verb::Attach { conn, .. }
            | Verb::Top { conn, .. }
            | Verb::Dashboard { conn, .. }
            | Verb::Mcp { conn } => Some(conn),
            Verb::Start(t) | Verb::Stop(t) | Verb::Restart(t) | Verb::Reset(t) => Some(&t.conn),
            Verb::Beat { .. }
            | Verb::Hook { .. }
            | Verb::Demo { .. }
            | Verb::Certs { .. }
            | Verb::Init(_)
            | Verb::Completions { .. }
            | Verb::Man
            | Verb::Contexts { .. } => None,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Verb::Ps(_) => "ps",
            Verb::Events(_) => "events",
            Verb::Hosts(_) => "hosts",
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
            Verb::Top { .. } => "top",
            Verb::Completions { .. } => "completions",
            Verb::Man => "man",
            Verb::Contexts { .. } => "contexts",
            Verb::Dashboard { .. } => "dashboard",
            Verb::Mcp { .. } => "mcp",
        }
    }
}

/// The command line's definition (for completions and the man page).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Parses the process's arguments (exits with usage on error).
pub fn parse() -> Cli {
    <Cli as clap::Parser>::parse()
}

async fn run(cli: Cli) -> ExitCode {
    let (socket, remote) = match cli.command.conn() {
        Some(c) => c.over(cli.socket.clone(), cli.remote.clone()),
        None => (cli.socket.clone(), cli.remote.clone()),
    };
    let connects = cli.command.conn().is_some();
    let chosen = if connects {
        contexts::apply(remote, socket.is_some())
    } else {
        Ok(remote)
    };
    let remote = match chosen {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fleetctl: {e}");
            return ExitCode::from(e.code());
        }
    };
    let server = client::Server::new(socket.as_deref(), &remote);
    let socket = client::socket_path(socket.as_deref());
    use fleet_proto::v1::ControlAction;
    let ok = |r: Result<(), Failure>| r.map(|()| exit::OK);
    let result: Result<u8, Failure> = match cli.command {
        Verb::Send(args) => send::run(&server, args).await,
        Verb::Watch {
            agent, once, json, ..
        } => ok(watch::watch(&server, &agent, once, json).await),
        Verb::Attach { agent, .. } => ok(watch::attach(&server, &agent).await),
        Verb::Start(t) => watch::control(&server, t, ControlAction::Start).await,
        Verb::Stop(t) => watch::control(&server, t, ControlAction::Stop).await,
        Verb::Restart(t) => watch::control(&server, t, ControlAction::Restart).await,
        Verb::Reset(t) => watch::control(&server, t, ControlAction::Reset).await,
        Verb::Ps(a) => ok(ps::run(&server, a).await),
        Verb::Events(a) => ok(events::run(&server, a).await),
        Verb::Hosts(a) => ok(hosts::run(&server, a).await),
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
        Verb::Top { args, .. } => ok(top::run(&server, args).await),
        Verb::Completions { shell } => {
            let mut cmd = command();
            clap_complete::generate(shell, &mut cmd, "fleetctl", &mut std::io::stdout());
            Ok(exit::OK)
        }
        Verb::Man => ok(clap_mangen::Man::new(command())
            .render(&mut std::io::stdout())
            .map_err(Failure::from)),
        Verb::Contexts { json } => ok(contexts::list(json)),
        Verb::Dashboard { args, .. } => ok(dashboard::run(&server, args).await),
        Verb::Mcp { .. } => ok(mcp::run(&server).await),
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
