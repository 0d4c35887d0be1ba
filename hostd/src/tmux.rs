//! The one module that talks to tmux: one-shot commands run with an argv
//! (never through a shell), and one persistent control-mode client that
//! answers queries and reports changes.
// The one place tmux is spawned (clippy.toml disallows it elsewhere).
#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Mutex, Notify, oneshot};
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum TmuxError {
    #[error("cannot run {bin}: {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error("tmux {command}: {message}")]
    Failed { command: String, message: String },
    #[error("tmux control client is gone")]
    ControlGone,
    #[error("tmux did not answer {command} within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
}

/// How long any one tmux call may take by default: a stopped (or wedged)
/// server must never hold up the caller for longer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// A tmux server addressed by its `-L` socket name.
#[derive(Debug, Clone)]
pub struct Tmux {
    bin: PathBuf,
    socket: String,
    /// Bound on every call; the tmux client is killed when it passes.
    timeout: Duration,
}

/// Environment variable handed to a pane with `-e`, so it reaches the pane
/// itself (panes inherit the tmux server's environment, not ours).
pub type PaneEnv = Vec<(String, String)>;

/// What `new-session` needs to start one agent.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    /// Checked agent name (also the session name).
    pub name: &'a str,
    pub workdir: &'a Path,
    pub env: &'a PaneEnv,
    /// Operator-configured command line; run as `sh -c 'exec <command>'` so
    /// the runtime replaces the shell and is the pane's own process.
    pub command: &'a str,
    pub size: (u16, u16),
}

/// Ids of a freshly created pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub session_id: String,
    pub window_id: String,
    pub pane_id: String,
    pub pane_pid: u32,
}

impl Tmux {
    pub fn new(bin: impl Into<PathBuf>, socket: impl Into<String>) -> Self {
        Self {
            bin: bin.into(),
            socket: socket.into(),
            timeout: CALL_TIMEOUT,
        }
    }

    /// The same server with another bound on each call.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// A blocking `tmux -L <socket> <args…>` that shares this process's
    /// terminal: for the verbs that hand it to a person (`attach`,
    /// `watch`). Unbounded on purpose: it lasts as long as they stay.
    pub fn interactive<I, S>(&self, args: I) -> std::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.arg("-L").arg(&self.socket).args(args);
        cmd
    }

    /// Runs `tmux -L <socket> <args…>` and returns stdout. Arguments go to
    /// tmux as an argv: no shell ever sees them.
    pub async fn run<I, S>(&self, args: I) -> Result<String, TmuxError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.run_with_path(args, None).await
    }

    /// Like [`run`](Self::run), with the tmux client's own PATH set: tmux
    /// 3.3a gives a new pane the PATH of the client that asked for it,
    /// overriding `-e PATH=…`.
    async fn run_with_path<I, S>(&self, args: I, path: Option<&str>) -> Result<String, TmuxError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let mut cmd = Command::new(&self.bin);
        if let Some(path) = path {
            cmd.env("PATH", path);
        }
        let out = cmd
            .arg("-L")
            .arg(&self.socket)
            .args(&args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .instrument(span_for(&args));
        let out = self
            .bounded(&args, out)
            .await?
            .map_err(|source| TmuxError::Spawn {
                bin: self.bin.display().to_string(),
                source,
            })?;
        finish(&args, &out)
    }

    /// Runs a tmux command that reads `input` on stdin (`load-buffer -`):
    /// the bytes reach tmux exactly, with no shell and no argv limits.
    pub async fn run_with_stdin<I, S>(&self, args: I, input: &[u8]) -> Result<String, TmuxError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let spawn_err = |source| TmuxError::Spawn {
            bin: self.bin.display().to_string(),
            source,
        };
        let mut child = Command::new(&self.bin)
            .arg("-L")
            .arg(&self.socket)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_err)?;
        let stdin = child.stdin.take();
        let run = async move {
            if let Some(mut stdin) = stdin {
                stdin.write_all(input).await?;
                drop(stdin);
            }
            child.wait_with_output().await
        }
        .instrument(span_for(&args));
        let out = self.bounded(&args, run).await?.map_err(spawn_err)?;
        finish(&args, &out)
    }

    /// Awaits one tmux client for at most [`timeout`](Self::timeout); the
    /// client is killed (dropped) when it takes longer.
    async fn bounded<T>(
        &self,
        args: &[std::ffi::OsString],
        call: impl std::future::Future<Output = T>,
    ) -> Result<T, TmuxError> {
        let started = std::time::Instant::now();
        let answered = tokio::time::timeout(self.timeout, call).await;
        match answered {
            Ok(_) => crate::metrics::TMUX.observe("oneshot", started.elapsed().as_secs_f64()),
            Err(_) => crate::metrics::TMUX.timed_out("oneshot"),
        }
        answered.map_err(|_| TmuxError::Timeout {
            command: args
                .first()
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or_default(),
            timeout: self.timeout,
        })
    }

    /// True when a server answers on the socket.
    pub async fn server_running(&self) -> bool {
        self.run(["list-sessions", "-F", "#{session_id}"])
            .await
            .is_ok()
    }

    /// Starts the server with the holder session (idempotent) and sets the
    /// server-wide options hostd relies on. Never `window-size manual`
    /// globally: tmux 3.3a segfaults at the next new-session.
    pub async fn ensure_server(&self, holder: &str) -> Result<bool, TmuxError> {
        let target = exact(holder);
        let started = if self.run(["has-session", "-t", &target]).await.is_ok() {
            false
        } else {
            match self
                .run(["new-session", "-d", "-s", holder, "-x", "80", "-y", "24"])
                .await
            {
                Ok(_) => true,
                // Lost a race with another starter: fine, it exists now.
                Err(TmuxError::Failed { message, .. }) if message.contains("duplicate") => false,
                Err(e) => return Err(e),
            }
        };
        // Dead panes stay visible (and respawnable) instead of vanishing.
        self.run(["set-option", "-wg", "remain-on-exit", "on"])
            .await?;
        Ok(started)
    }

    /// Creates the agent's session. Returns `Ok(None)` when a session of that
    /// name already exists (the caller adopts it instead).
    pub async fn launch(&self, l: &Launch<'_>) -> Result<Option<Created>, TmuxError> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "new-session".into(),
            "-d".into(),
            "-s".into(),
            l.name.into(),
            "-x".into(),
            l.size.0.to_string().into(),
            "-y".into(),
            l.size.1.to_string().into(),
            "-c".into(),
            l.workdir.as_os_str().to_owned(),
            "-P".into(),
            "-F".into(),
            "#{session_id}\t#{window_id}\t#{pane_id}\t#{pane_pid}".into(),
        ];
        for (k, v) in l.env {
            args.push("-e".into());
            args.push(format!("{k}={v}").into());
        }
        args.push("--".into());
        args.push("/bin/sh".into());
        args.push("-c".into());
        args.push(format!("exec {}", l.command).into());
        let path = l
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str());
        let out = match self.run_with_path(&args, path).await {
            Ok(out) => out,
            Err(TmuxError::Failed { message, .. }) if message.contains("duplicate session") => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let created = parse_created(&out).ok_or_else(|| TmuxError::Failed {
            command: "new-session".into(),
            message: format!("unexpected output {out:?}"),
        })?;
        self.pin_size(&created.window_id, l.size).await?;
        Ok(Some(created))
    }

    /// Respawns a pane in place (`respawn-pane -k`): the pane id stays, the
    /// process is new, started like [`launch`](Self::launch).
    pub async fn respawn(
        &self,
        pane_id: &str,
        workdir: &Path,
        env: &PaneEnv,
        command: &str,
    ) -> Result<(), TmuxError> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "respawn-pane".into(),
            "-k".into(),
            "-t".into(),
            pane_id.into(),
            "-c".into(),
            workdir.as_os_str().to_owned(),
        ];
        for (k, v) in env {
            args.push("-e".into());
            args.push(format!("{k}={v}").into());
        }
        args.extend([
            "--".into(),
            "/bin/sh".into(),
            "-c".into(),
            format!("exec {command}").into(),
        ]);
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str());
        self.run_with_path(&args, path).await.map(drop)
    }

    /// Fixes one window's size (`resize-window` also sets `window-size
    /// manual` on that window only), so a watcher never shrinks an agent.
    pub async fn pin_size(&self, window_id: &str, size: (u16, u16)) -> Result<(), TmuxError> {
        self.run([
            "resize-window",
            "-t",
            window_id,
            "-x",
            &size.0.to_string(),
            "-y",
            &size.1.to_string(),
        ])
        .await
        .map(drop)
    }

    /// The tmux server's pid, for the SIGCHLD nudge.
    pub async fn server_pid(&self) -> Result<u32, TmuxError> {
        let out = self.run(["display-message", "-p", "#{pid}"]).await?;
        out.trim().parse().map_err(|_| TmuxError::Failed {
            command: "display-message".into(),
            message: format!("unexpected pid {out:?}"),
        })
    }

    pub async fn kill_server(&self) {
        let _ = self.run(["kill-server"]).await;
    }
}

/// stdout of a successful tmux run, or its stderr as the error.
fn finish(args: &[std::ffi::OsString], out: &std::process::Output) -> Result<String, TmuxError> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(TmuxError::Failed {
            command: args
                .first()
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or_default(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// `=name:` — an exact session match (plain `-t name` would also match a pane
/// keyword such as `top`, or a prefix).
/// A span for one tmux invocation made on behalf of a traced command (an
/// operator's send, control …); the table's own housekeeping is not traced.
fn span_for(args: &[std::ffi::OsString]) -> tracing::Span {
    if tracing::Span::current().is_none() {
        return tracing::Span::none();
    }
    let command = args
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    tracing::info_span!("tmux", command = %command)
}

pub fn exact(session: &str) -> String {
    format!("={session}:")
}

fn parse_created(out: &str) -> Option<Created> {
    let mut f = out.trim().split('\t');
    Some(Created {
        session_id: f.next()?.to_owned(),
        window_id: f.next()?.to_owned(),
        pane_id: f.next()?.to_owned(),
        pane_pid: f.next()?.parse().ok()?,
    })
}

// === Panes ===

/// One pane as `list-panes -a` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pane {
    pub session_id: String,
    pub session_name: String,
    pub window_id: String,
    pub window_index: u32,
    pub pane_id: String,
    pub pane_index: u32,
    pub pane_pid: u32,
    pub dead: bool,
    /// Exit status of a dead pane; `None` when it died by a signal or the
    /// status never arrived (tmux 3.3a bug).
    pub dead_status: Option<i32>,
    /// Signal that killed a dead pane.
    pub dead_signal: Option<i32>,
    pub current_command: String,
    /// window_activity, Unix seconds.
    pub activity: i64,
    pub in_mode: bool,
    pub alternate_on: bool,
    /// A read-only watch session (`fleetctl watch` marks what it creates
    /// with the session option [`WATCHER_OPTION`]), not an agent.
    pub watcher: bool,
}

/// Session user option that marks a throw-away watch session. Known by what
/// created it, never by its name: an agent may be called `x-watch-1`.
pub const WATCHER_OPTION: &str = "@fleet-watcher";

/// `list-panes -a` format, tab-separated. The session name (tmux escapes a
/// tab in it) and the command (a process may put a raw tab in its name)
/// come last: the command is the rest of the line, whatever it holds.
pub const PANE_FORMAT: &str = "P\t#{session_id}\t#{window_id}\t#{window_index}\t#{pane_id}\t#{pane_index}\t#{pane_pid}\t#{pane_dead}\t#{pane_dead_status}\t#{pane_dead_signal}\t#{window_activity}\t#{pane_in_mode}\t#{alternate_on}\t#{@fleet-watcher}\t#{session_name}\t#{pane_current_command}";

pub fn parse_panes(lines: &[String]) -> Vec<Pane> {
    lines.iter().filter_map(|l| parse_pane(l)).collect()
}

fn parse_pane(line: &str) -> Option<Pane> {
    let mut f = line.splitn(16, '\t');
    if f.next()? != "P" {
        return None;
    }
    let session_id = f.next()?.to_owned();
    let window_id = f.next()?.to_owned();
    let window_index = f.next()?.parse().ok()?;
    let pane_id = f.next()?.to_owned();
    let pane_index = f.next()?.parse().ok()?;
    let pane_pid = f.next()?.parse().unwrap_or(0);
    let dead = f.next()? == "1";
    let dead_status = f.next()?.parse().ok();
    let dead_signal = f.next()?.parse().ok();
    let activity = f.next()?.parse().unwrap_or(0);
    let in_mode = f.next()? == "1";
    let alternate_on = f.next()? == "1";
    let watcher = !f.next()?.is_empty();
    let session_name = f.next()?.to_owned();
    let current_command = f.next()?.to_owned();
    Some(Pane {
        session_id,
        session_name,
        window_id,
        window_index,
        pane_id,
        pane_index,
        pane_pid,
        dead,
        dead_status,
        dead_signal,
        current_command,
        activity,
        in_mode,
        alternate_on,
        watcher,
    })
}

// === Control client ===

/// A persistent `tmux -C attach` client: one process for every query, and
/// the source of change notifications: tmux's own for sessions and
/// windows, and a line of ours for each pane death (a global `pane-died`
/// hook that writes to this client). Activity is learned by asking
/// ([`Control::windows_moved`]), not by a format subscription: tmux
/// re-evaluates a subscription over every pane each second, which with 500
/// idle panes cost the server ~2 % of a core.
pub struct Control {
    inner: Arc<Inner>,
    child: Mutex<Child>,
    /// Bound on each command's answer.
    timeout: Duration,
    /// Digest of the last [`Control::windows_moved`] answer.
    activity: std::sync::atomic::AtomicU64,
    /// Fired on any notification that may change the pane table.
    pub changed: Arc<Notify>,
    /// Fired once when the client exits (server gone or killed).
    pub exited: Arc<Notify>,
    /// `pane-died` lines read (deaths tmux reported through the hook).
    pub deaths: Arc<std::sync::atomic::AtomicU64>,
}

struct Inner {
    io: Mutex<Io>,
}

struct Io {
    stdin: ChildStdin,
    pending: VecDeque<oneshot::Sender<Result<Vec<String>, String>>>,
    gone: bool,
}

/// Commands sent but not answered beyond which the control client refuses
/// more (each is a short line: far below a pipe's capacity).
const MAX_OWED: usize = 16;

/// What the `pane-died` hook writes to the control client: a line outside
/// any `%begin`/`%end` block (a hook's own commands raise no control
/// notifications on 3.3a; `display-message -c CLIENT -p` does reach it).
pub const DIED_LINE: &str = "%fleet-pane-died";

/// Each window's activity time, one line per window in the server's order:
/// what [`Control::windows_moved`] compares (~1 ms of the server at 500
/// panes; each field a window prints costs as much again, so no id: a
/// window that comes or goes changes the lines, and tmux notifies it too).
const ACTIVITY_FORMAT: &str = "#{window_activity}";

impl Control {
    /// Attaches to `holder` (which must exist) and has pane deaths written
    /// to this client.
    pub async fn attach(tmux: &Tmux, holder: &str) -> Result<Self, TmuxError> {
        let mut child = Command::new(&tmux.bin)
            .arg("-L")
            .arg(&tmux.socket)
            .args(["-C", "attach-session", "-t", &exact(holder)])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| TmuxError::Spawn {
                bin: tmux.bin.display().to_string(),
                source,
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(TmuxError::ControlGone);
        };
        let inner = Arc::new(Inner {
            io: Mutex::new(Io {
                stdin,
                pending: VecDeque::new(),
                gone: false,
            }),
        });
        let changed = Arc::new(Notify::new());
        let exited = Arc::new(Notify::new());
        let deaths = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(read_loop(
            BufReader::new(stdout),
            inner.clone(),
            changed.clone(),
            exited.clone(),
            deaths.clone(),
            ready_tx,
        ));
        // Commands sent before the attach completes fail with "no current
        // client": wait for the attach's own (flags 0) block first.
        match tokio::time::timeout(tmux.timeout.max(Duration::from_secs(5)), ready_rx).await {
            Ok(Ok(())) => {}
            _ => return Err(TmuxError::ControlGone),
        }
        let control = Self {
            inner,
            child: Mutex::new(child),
            timeout: tmux.timeout,
            activity: std::sync::atomic::AtomicU64::new(0),
            changed,
            exited,
            deaths,
        };
        // This client's name (`client-<pid>`, no quotes in it) for the hook;
        // a new control client after a tmux restart sets it again.
        let name = control
            .command("display-message -p '#{client_name}'")
            .await?;
        let name = name.first().map(String::as_str).unwrap_or_default();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
        {
            return Err(TmuxError::Failed {
                command: "display-message".into(),
                message: format!("unexpected control client name {name:?}"),
            });
        }
        control
            .command(&format!(
                "set-hook -g pane-died \"display-message -c '{name}' -p '{DIED_LINE} #{{hook_pane}}'\""
            ))
            .await?;
        Ok(control)
    }

    /// Sends one command line (tmux command syntax — callers pass only fixed
    /// formats, ids and checked names) and returns its output lines.
    pub async fn command(&self, line: &str) -> Result<Vec<String>, TmuxError> {
        let (tx, rx) = oneshot::channel();
        let timeout = self.timeout;
        let timed_out = || TmuxError::Timeout {
            command: line.split(' ').next().unwrap_or_default().to_owned(),
            timeout,
        };
        {
            let mut io = self.inner.io.lock().await;
            if io.gone {
                return Err(TmuxError::ControlGone);
            }
            // Answers still owed (a stopped server reads nothing): refuse
            // more rather than fill the pipe, so this write never blocks.
            if io.pending.len() >= MAX_OWED {
                return Err(timed_out());
            }
            io.pending.push_back(tx);
            let mut buf = line.as_bytes().to_vec();
            buf.push(b'\n');
            if io.stdin.write_all(&buf).await.is_err() || io.stdin.flush().await.is_err() {
                io.gone = true;
                return Err(TmuxError::ControlGone);
            }
        }
        let started = std::time::Instant::now();
        let answered = tokio::time::timeout(timeout, rx).await;
        match &answered {
            Ok(_) => crate::metrics::TMUX.observe("control", started.elapsed().as_secs_f64()),
            Err(_) => crate::metrics::TMUX.timed_out("control"),
        }
        match answered {
            Ok(Ok(Ok(lines))) => Ok(lines),
            Ok(Ok(Err(message))) => Err(TmuxError::Failed {
                command: line.split(' ').next().unwrap_or_default().to_owned(),
                message,
            }),
            Ok(Err(_)) => Err(TmuxError::ControlGone),
            Err(_) => Err(timed_out()),
        }
    }

    pub async fn list_panes(&self) -> Result<Vec<Pane>, TmuxError> {
        let lines = self
            .command(&format!("list-panes -a -F '{PANE_FORMAT}'"))
            .await?;
        Ok(parse_panes(&lines))
    }

    /// Whether any window's activity moved (or a window came or went)
    /// since the last call: the cheap question asked every couple of
    /// seconds, so the full pane read runs only when something happened.
    pub async fn windows_moved(&self) -> Result<bool, TmuxError> {
        use std::hash::{Hash, Hasher};
        let lines = self
            .command(&format!("list-windows -a -F '{ACTIVITY_FORMAT}'"))
            .await?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        lines.hash(&mut h);
        let digest = h.finish();
        let before = self
            .activity
            .swap(digest, std::sync::atomic::Ordering::Relaxed);
        Ok(before != digest)
    }

    pub async fn close(&self) {
        let _ = self.child.lock().await.start_kill();
    }
}

async fn read_loop(
    mut reader: BufReader<tokio::process::ChildStdout>,
    inner: Arc<Inner>,
    changed: Arc<Notify>,
    exited: Arc<Notify>,
    deaths: Arc<std::sync::atomic::AtomicU64>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    // Output of the block being read: (ours, lines).
    let mut block: Option<(bool, Vec<String>)> = None;
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\n', '\r']);
        // Our hook's line may come between a block's lines: never output.
        if line.starts_with(DIED_LINE) {
            deaths.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            changed.notify_one();
            continue;
        }
        if let Some((ours, lines)) = block.as_mut() {
            let end = line.starts_with("%end ");
            if end || line.starts_with("%error ") {
                let ours = *ours;
                let lines = std::mem::take(lines);
                block = None;
                if ours {
                    let reply = if end {
                        Ok(lines)
                    } else {
                        Err(lines.join("; "))
                    };
                    if let Some(tx) = inner.io.lock().await.pending.pop_front() {
                        let _ = tx.send(reply);
                    }
                } else if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            } else {
                lines.push(line.to_owned());
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("%begin ") {
            // `%begin <time> <number> <flags>`: flags 1 = from this client.
            let ours = rest.rsplit(' ').next() == Some("1");
            block = Some((ours, Vec::new()));
        } else if line.starts_with("%output ") || line.starts_with("%extended-output ") {
            // Output of the holder session only; not interesting.
        } else if line.starts_with("%exit") {
            break;
        } else if line.starts_with('%') {
            changed.notify_one();
        }
    }
    let mut io = inner.io.lock().await;
    io.gone = true;
    for tx in io.pending.drain(..) {
        let _ = tx.send(Err("control client exited".into()));
    }
    drop(io);
    exited.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_pane_line_with_tabs_in_nothing_but_separators() {
        let line = "P\t$1\t@2\t0\t%3\t0\t4242\t1\t\t\t1795547633\t0\t1\t\tcoder0\tnode".to_owned();
        let p = parse_panes(&[line]);
        assert_eq!(p.len(), 1);
        let p = &p[0];
        assert_eq!(p.pane_id, "%3");
        assert_eq!(p.pane_pid, 4242);
        assert!(p.dead);
        assert_eq!(p.dead_status, None, "empty status is the 3.3a bug case");
        assert_eq!(p.dead_signal, None);
        assert!(p.alternate_on);
        assert_eq!(p.session_name, "coder0");
        assert!(!p.watcher);
    }

    #[test]
    fn a_tab_in_the_command_stays_in_the_command() {
        let line = "P\t$1\t@2\t0\t%3\t0\t4242\t0\t\t\t1\t0\t0\t1\tcoder0\tx\ty".to_owned();
        let p = &parse_panes(&[line])[0];
        assert_eq!(p.session_name, "coder0");
        assert_eq!(p.current_command, "x\ty");
        assert!(p.watcher);
    }

    #[test]
    fn ignores_foreign_lines() {
        assert!(parse_panes(&["hello".into(), "P\tx".into()]).is_empty());
    }

    #[test]
    fn exact_target_form() {
        assert_eq!(exact("top"), "=top:");
    }
}
