//! `fleetctl hook RUNTIME EVENT`: the native status writer the runtimes'
//! own hooks, extensions and plugins run (hostd wires them in at launch,
//! DESIGN §13). It reads the event's JSON on stdin, turns it into a status
//! change by the runtime's rules ([`interpret`], pure and unit-tested) and
//! rewrites the agent's heartbeat.
//!
//! A hook must never harm the agent: Claude Code, Codex and gemini-cli run
//! it synchronously, put its stdout into the model's context and block the
//! prompt on exit code 2. So it prints nothing, always exits 0, reads at
//! most [`MAX_INPUT`] bytes for at most [`INPUT_WAIT`], touches no network
//! and needs no hostd: it only replaces a file.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use fleet_proto::heartbeat::{self, Beat, Status};
use serde_json::Value;

/// Largest event payload read from stdin.
pub const MAX_INPUT: usize = 1 << 20;
/// Longest wait for the payload (a runtime that never closes stdin).
pub const INPUT_WAIT: Duration = Duration::from_millis(500);
/// Longest wait for another writer's lock on the beat. Hooks a runtime
/// runs synchronously (Claude Code, Codex, gemini-cli) run one at a time,
/// so they only ever meet hostd's fallback writer, which holds the lock for
/// microseconds and never waits for it; the in-process plugins (pi,
/// opencode) start their hooks detached, and two of those can overlap on a
/// loaded machine: waiting keeps the second from overwriting the first
/// (a lost turn).
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// What one runtime event means for the agent's status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub status: Option<Status>,
    /// A prompt was accepted: `Some(key)` counts a turn unless the key is
    /// the current turn's (a prompt steered into a running turn).
    pub turn: Option<TurnKey>,
    pub model: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnKey {
    /// The runtime names its turns (Claude `prompt_id`, Codex `turn_id`).
    Keyed(String),
    /// Every such event is a new turn.
    Fresh,
    /// A new turn only if the agent was not already busy (opencode reports
    /// a prompt queued behind a running turn with the same event).
    UnlessBusy,
}

fn text(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(200).collect())
}

/// The status change `event` of `runtime` means, given its payload.
/// Unknown runtimes or events change nothing.
pub fn interpret(runtime: &str, event: &str, p: &Value) -> Change {
    let model_at = |paths: &[&[&str]]| paths.iter().find_map(|path| text(p, path));
    let mut c = Change::default();
    match (runtime, event) {
        ("claude", "SessionStart") => {
            c.status = Some(Status::Idle);
            c.model = model_at(&[&["model"], &["model", "id"]]);
        }
        ("claude", "UserPromptSubmit") => {
            c.status = Some(Status::Busy);
            c.turn = Some(
                text(p, &["prompt_id"])
                    .map(TurnKey::Keyed)
                    .unwrap_or(TurnKey::Fresh),
            );
        }
        // A prompt queued behind a turn runs under a prompt_id no submit
        // announced: its end counts it.
        ("claude", "Stop" | "StopFailure") => {
            c.status = Some(Status::Idle);
            c.turn = text(p, &["prompt_id"]).map(TurnKey::Keyed);
        }
        ("claude", "SessionEnd") => c.status = Some(Status::Idle),
        ("claude", "Notification") => {
            let kind = text(p, &["notification_type"]).unwrap_or_default();
            let msg = text(p, &["message"]).unwrap_or_default();
            if kind.contains("permission") || msg.contains("permission") {
                c.status = Some(Status::Waiting);
            } else if kind == "idle_prompt" {
                c.status = Some(Status::Idle);
            }
        }
        ("claude", "PermissionRequest") => c.status = Some(Status::Waiting),
        ("claude", "PreToolUse" | "PostToolUse") => c.status = Some(Status::Busy),
        ("claude", "PostModelSwitch") => {
            c.model = model_at(&[&["to_model"], &["model"]]);
        }
        ("codex", "SessionStart") => {
            c.status = Some(Status::Idle);
            c.model = model_at(&[&["model"]]);
        }
        ("codex", "UserPromptSubmit") => {
            c.status = Some(Status::Busy);
            c.model = model_at(&[&["model"]]);
            c.turn = Some(
                text(p, &["turn_id"])
                    .map(TurnKey::Keyed)
                    .unwrap_or(TurnKey::Fresh),
            );
        }
        ("codex", "Stop" | "Interrupt" | "notify") => {
            c.status = Some(Status::Idle);
            c.model = model_at(&[&["model"]]);
        }
        ("codex", "PreToolUse" | "PostToolUse") => c.status = Some(Status::Busy),
        ("codex", "PermissionRequest") => c.status = Some(Status::Waiting),
        ("gemini", "SessionStart") => c.status = Some(Status::Idle),
        // gemini-cli fires nothing for a prompt queued while busy; its
        // BeforeAgent comes when that prompt starts.
        ("gemini", "BeforeAgent") => {
            c.status = Some(Status::Busy);
            c.turn = Some(TurnKey::Fresh);
        }
        ("gemini", "AfterAgent" | "SessionEnd") => c.status = Some(Status::Idle),
        ("gemini", "BeforeModel") => {
            c.model = model_at(&[&["llm_request", "model"], &["model"]]);
        }
        ("gemini", "Notification") => {
            let kind = text(p, &["notification_type"]).unwrap_or_default();
            if kind.contains("Permission") || kind.contains("permission") {
                c.status = Some(Status::Waiting);
            }
        }
        // aider's notifications command runs when its prompt comes back
        // after a model call: a turn ended (aider reports no start, so its
        // counter counts finished turns).
        ("aider", "notify") => {
            c.status = Some(Status::Idle);
            c.turn = Some(TurnKey::Fresh);
        }
        // pi's extension forwards its events with `model` added.
        ("pi", "session_start") => {
            c.status = Some(Status::Idle);
            c.model = model_at(&[&["model"]]);
        }
        ("pi", "input") => {
            if text(p, &["source"]).is_none_or(|s| s == "interactive") {
                c.status = Some(Status::Busy);
                // A prompt typed while pi runs steers the running turn.
                let steering = p.get("idle").and_then(Value::as_bool) == Some(false);
                if !steering {
                    c.turn = Some(TurnKey::Fresh);
                }
            }
            c.model = model_at(&[&["model"]]);
        }
        // pi retries a failed turn on its own: busy again, same turn.
        ("pi", "agent_start" | "turn_start") => {
            c.status = Some(Status::Busy);
            c.model = model_at(&[&["model"]]);
        }
        ("pi", "agent_end" | "session_shutdown") => {
            c.status = Some(Status::Idle);
            c.model = model_at(&[&["model"]]);
        }
        ("pi", "model_select") => c.model = model_at(&[&["model"]]),
        // opencode's plugin forwards bus events and chat hooks.
        ("opencode", "chat.message") => {
            c.status = Some(Status::Busy);
            c.turn = Some(TurnKey::UnlessBusy);
            c.model = model_at(&[&["model", "modelID"], &["model"]]);
        }
        ("opencode", "session.status") => {
            if matches!(
                text(p, &["status", "type"]).as_deref(),
                Some("busy" | "retry")
            ) {
                c.status = Some(Status::Busy);
            } else if text(p, &["status", "type"]).as_deref() == Some("idle") {
                c.status = Some(Status::Idle);
            }
        }
        ("opencode", "session.idle") => c.status = Some(Status::Idle),
        ("opencode", "permission.updated" | "permission.asked") => {
            c.status = Some(Status::Waiting);
        }
        ("opencode", "permission.replied") => c.status = Some(Status::Busy),
        _ => {}
    }
    c
}

/// Applies a change to the previous beat (None: there is none yet).
pub fn apply(prev: Option<&Beat>, c: &Change, pid: u32, now: time::OffsetDateTime) -> Beat {
    let was_busy = prev.is_some_and(|b| b.status == Status::Busy);
    let prev_turn = prev.and_then(|b| b.turn).unwrap_or(0);
    let prev_key = prev.and_then(|b| b.key.clone());
    let (turn, key) = match &c.turn {
        None => (prev.and_then(|b| b.turn), prev_key),
        Some(TurnKey::Keyed(k)) if prev_key.as_deref() == Some(k.as_str()) => {
            (Some(prev_turn), prev_key)
        }
        Some(TurnKey::Keyed(k)) => (Some(prev_turn + 1), Some(k.clone())),
        Some(TurnKey::Fresh) => (Some(prev_turn + 1), None),
        Some(TurnKey::UnlessBusy) if was_busy => (Some(prev_turn), prev_key),
        Some(TurnKey::UnlessBusy) => (Some(prev_turn + 1), None),
    };
    Beat {
        ts: now,
        pid,
        status: c.status.or(prev.map(|b| b.status)).unwrap_or(Status::Idle),
        model: c
            .model
            .clone()
            .or_else(|| prev.and_then(|b| b.model.clone())),
        turn,
        key,
    }
}

/// Runs the hook. Every failure is swallowed (the runtime must not see
/// one); set `FLEET_HOOK_DEBUG=1` to have them on stderr.
pub fn run(runtime: &str, event: &str) {
    if let Err(e) = run_inner(runtime, event)
        && std::env::var_os("FLEET_HOOK_DEBUG").is_some()
    {
        eprintln!("fleetctl hook {runtime} {event}: {e}");
    }
}

fn run_inner(runtime: &str, event: &str) -> Result<(), String> {
    let file = std::env::var_os(heartbeat::ENV_HEARTBEAT_FILE)
        .map(PathBuf::from)
        .ok_or("FLEET_HEARTBEAT_FILE is not set")?;
    let payload = read_stdin();
    let value: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
    let change = interpret(runtime, event, &value);
    if change == Change::default() {
        return Ok(());
    }
    let _lock = heartbeat::lock(&file, LOCK_WAIT);
    let prev = heartbeat::read(&file).ok();
    let beat = apply(
        prev.as_ref(),
        &change,
        runtime_pid(),
        time::OffsetDateTime::now_utc(),
    );
    heartbeat::write_atomic(&file, &beat).map_err(|e| e.to_string())?;
    heartbeat::touch_native_marker(&file).map_err(|e| e.to_string())
}

/// stdin up to [`MAX_INPUT`] bytes, waiting at most [`INPUT_WAIT`]; a
/// terminal is not read.
fn read_stdin() -> Vec<u8> {
    if rustix::termios::isatty(std::io::stdin()) {
        return Vec::new();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::stdin()
            .lock()
            .take(MAX_INPUT as u64)
            .read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx.recv_timeout(INPUT_WAIT).unwrap_or_default()
}

/// The runtime that ran this hook: the nearest ancestor that is not a
/// shell (Claude Code and gemini-cli run a hook through `sh -c`).
fn runtime_pid() -> u32 {
    let mut pid = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32);
    for _ in 0..4 {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !matches!(comm.trim(), "sh" | "bash" | "dash" | "zsh" | "fish") {
            break;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Field 4 (ppid) follows the parenthesised command name.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok());
        match parent {
            Some(p) if p > 1 => pid = p,
            _ => break,
        }
    }
    pid
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t0() -> time::OffsetDateTime {
        time::OffsetDateTime::UNIX_EPOCH
    }

    fn run_events(runtime: &str, events: &[(&str, Value)]) -> Beat {
        let mut beat: Option<Beat> = None;
        for (e, p) in events {
            let c = interpret(runtime, e, p);
            beat = Some(apply(beat.as_ref(), &c, 7, t0()));
        }
        beat.unwrap()
    }

    #[test]
    fn claude_counts_turns_by_prompt_id_and_reports_its_model() {
        let b = run_events(
            "claude",
            &[
                ("SessionStart", json!({"model": "claude-opus-4-7"})),
                ("UserPromptSubmit", json!({"prompt_id": "p1"})),
            ],
        );
        assert_eq!(
            (b.status, b.turn, b.model.as_deref()),
            (Status::Busy, Some(1), Some("claude-opus-4-7"))
        );
        let b = run_events(
            "claude",
            &[
                ("UserPromptSubmit", json!({"prompt_id": "p1"})),
                ("StopFailure", json!({})),
                ("UserPromptSubmit", json!({"prompt_id": "p2"})),
                ("Stop", json!({})),
            ],
        );
        assert_eq!((b.status, b.turn), (Status::Idle, Some(2)));
        // A queued prompt shares the running turn's id at submit and ends
        // under its own.
        let b = run_events(
            "claude",
            &[
                ("UserPromptSubmit", json!({"prompt_id": "p1"})),
                ("UserPromptSubmit", json!({"prompt_id": "p1"})),
                ("StopFailure", json!({"prompt_id": "p1"})),
                ("StopFailure", json!({"prompt_id": "p2"})),
            ],
        );
        assert_eq!(b.turn, Some(2));
    }

    #[test]
    fn a_codex_prompt_steered_into_the_running_turn_does_not_count_twice() {
        let b = run_events(
            "codex",
            &[
                (
                    "UserPromptSubmit",
                    json!({"turn_id": "t1", "model": "gpt-5.5"}),
                ),
                ("UserPromptSubmit", json!({"turn_id": "t1"})),
            ],
        );
        assert_eq!(
            (b.status, b.turn, b.model.as_deref()),
            (Status::Busy, Some(1), Some("gpt-5.5"))
        );
        let b = run_events(
            "codex",
            &[
                ("UserPromptSubmit", json!({"turn_id": "t1"})),
                ("Interrupt", json!({})),
                ("UserPromptSubmit", json!({"turn_id": "t2"})),
            ],
        );
        assert_eq!(b.turn, Some(2));
    }

    #[test]
    fn pi_retries_are_busy_again_without_a_new_turn() {
        let b = run_events(
            "pi",
            &[
                ("input", json!({"source": "interactive", "model": "m"})),
                ("agent_start", json!({})),
                ("agent_end", json!({"stopReason": "error"})),
                ("agent_start", json!({})),
            ],
        );
        assert_eq!((b.status, b.turn), (Status::Busy, Some(1)));
        // A prompt steered into the running turn is not a new one.
        let b = run_events(
            "pi",
            &[
                ("input", json!({"source": "interactive", "idle": true})),
                ("input", json!({"source": "interactive", "idle": false})),
            ],
        );
        assert_eq!(b.turn, Some(1));
        // An extension's own input (source "extension") is no prompt.
        let b = run_events("pi", &[("input", json!({"source": "extension"}))]);
        assert_eq!(b.turn, None);
    }

    #[test]
    fn opencode_does_not_count_a_prompt_queued_behind_a_running_turn() {
        let msg = json!({"model": {"providerID": "anthropic", "modelID": "claude-x"}});
        let b = run_events(
            "opencode",
            &[("chat.message", msg.clone()), ("chat.message", msg.clone())],
        );
        assert_eq!(
            (b.status, b.turn, b.model.as_deref()),
            (Status::Busy, Some(1), Some("claude-x"))
        );
        let b = run_events(
            "opencode",
            &[
                ("chat.message", msg.clone()),
                ("session.idle", json!({})),
                ("chat.message", msg),
            ],
        );
        assert_eq!(b.turn, Some(2));
    }

    #[test]
    fn permission_prompts_are_waiting() {
        for (rt, e, p) in [
            (
                "claude",
                "Notification",
                json!({"notification_type": "permission_prompt"}),
            ),
            ("claude", "PermissionRequest", json!({})),
            ("opencode", "permission.updated", json!({})),
            (
                "gemini",
                "Notification",
                json!({"notification_type": "ToolPermission"}),
            ),
        ] {
            assert_eq!(
                interpret(rt, e, &p).status,
                Some(Status::Waiting),
                "{rt} {e}"
            );
        }
    }

    #[test]
    fn unknown_events_and_garbage_change_nothing() {
        assert_eq!(interpret("claude", "Nope", &json!({})), Change::default());
        assert_eq!(
            interpret("mystery", "Stop", &Value::Null),
            Change::default()
        );
        // A missing key still counts the prompt.
        let c = interpret("claude", "UserPromptSubmit", &Value::Null);
        assert_eq!(c.turn, Some(TurnKey::Fresh));
    }
}
