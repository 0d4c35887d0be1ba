//! Wiring a built-in runtime's own hooks, extension or plugin to Fleet's
//! status writer (`fleetctl hook`) at launch (DESIGN §13). Everything goes
//! into the agent's private directory `<run_dir>/<agent>.d/`, which hostd
//! owns, plus flags and environment on the agent's command; the user's own
//! configuration is never written and keeps working (Claude Code merges
//! `--settings` over the user's settings, Codex's `-c` overrides only the
//! keys it names, gemini-cli's system settings are copied and extended,
//! opencode's plugin list and pi's extensions are added to).

use std::path::{Path, PathBuf};

use crate::roster::AgentSpec;
use crate::runtime::Native;

/// What a launch adds to the roster's command and environment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wiring {
    /// Appended to the command (already shell-quoted).
    pub args: String,
    pub env: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("no fleetctl next to fleet-hostd or on PATH: native status is off")]
    NoFleetctl,
    #[error(
        "the command runs {program:?}, not {runtime}: the {runtime} flags that wire its hooks cannot be added, so native status is off (observed from the screen); run {runtime} directly, or set `native: false`"
    )]
    Wrapped { runtime: String, program: String },
    #[error(
        "gemini-cli reads hooks only from a system settings file owned by root in root-owned directories, and fleet-hostd runs as uid {uid}: native status is off (observed from the screen). To turn it on, install the hooks once as root in {system} (fleetctl hook does nothing outside a fleet pane): see README, \"gemini-cli\""
    )]
    GeminiNeedsRoot { uid: u32, system: String },
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The private directory of one agent.
pub fn agent_dir(run_dir: &Path, spec: &AgentSpec) -> PathBuf {
    run_dir.join(format!("{}.d", spec.name))
}

/// Finds `fleetctl`: beside the running hostd, else on PATH.
pub fn find_fleetctl() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("fleetctl")))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("fleetctl"))
                .find(|p| p.is_file())
        })
    })
}

/// Single-quotes `s` for `sh`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The program a command line runs (its first word that is not an
/// environment assignment), as a basename.
fn program(command: &str) -> String {
    crate::runtime::process_name_of(command).unwrap_or_default()
}

/// Prepares the agent's directory and returns what to add to its launch.
/// `Ok(None)`: the runtime has no native mechanism or the roster turned it
/// off.
pub fn wire(
    run_dir: &Path,
    spec: &AgentSpec,
    fleetctl: Option<&Path>,
) -> Result<Option<Wiring>, WireError> {
    if !spec.native || spec.native_kind == Native::None {
        return Ok(None);
    }
    let fleetctl = fleetctl.ok_or(WireError::NoFleetctl)?;
    let hook = |event: &str| {
        format!(
            "{} hook {} {event}",
            shell_quote(&fleetctl.display().to_string()),
            spec.native_kind.runtime()
        )
    };
    // Flags go only to the runtime itself: its own executable under any
    // path (`/opt/tools/bin/pi`), or node running a script. Appended to
    // anything else (`sh -c '…; exec claude'`, another program) they would
    // break it.
    let needs_args = matches!(
        spec.native_kind,
        Native::Claude | Native::Codex | Native::Pi
    );
    let prog = program(&spec.command);
    if needs_args && prog != spec.native_kind.runtime() && prog != "node" {
        return Err(WireError::Wrapped {
            runtime: spec.native_kind.runtime().to_owned(),
            program: prog,
        });
    }
    let dir = agent_dir(run_dir, spec);
    make_private_dir(&dir)?;
    let mut w = Wiring::default();
    match spec.native_kind {
        Native::None => return Ok(None),
        Native::Claude => {
            let events = [
                "SessionStart",
                "UserPromptSubmit",
                "Stop",
                "StopFailure",
                "Notification",
                "PreToolUse",
                "PostToolUse",
            ];
            let mut hooks = serde_json::Map::new();
            for e in events {
                hooks.insert(
                    e.to_owned(),
                    serde_json::json!([{ "hooks": [{ "type": "command", "command": hook(e) }] }]),
                );
            }
            let path = dir.join("claude-settings.json");
            write_private(&path, &serde_json::json!({ "hooks": hooks }).to_string())?;
            w.args = format!(" --settings {}", shell_quote(&path.display().to_string()));
        }
        Native::Codex => {
            let mut args = String::new();
            for e in ["SessionStart", "UserPromptSubmit", "Stop", "Interrupt"] {
                let toml = format!(
                    "hooks.{e}=[{{hooks=[{{type=\"command\",command={}}}]}}]",
                    toml_string(&hook(e))
                );
                args.push_str(&format!(" -c {}", shell_quote(&toml)));
            }
            args.push_str(" --dangerously-bypass-hook-trust");
            w.args = args;
        }
        Native::Gemini => {
            let uid = rustix::process::geteuid().as_raw();
            let system = spec
                .env
                .get("GEMINI_CLI_SYSTEM_SETTINGS_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/etc/gemini-cli/settings.json"));
            let mut settings = json_object_file(&system);
            let has_ours = settings
                .get("hooks")
                .is_some_and(|h| h.to_string().contains(" hook gemini "));
            if uid != 0 {
                // The operator installed Fleet's hooks system-wide.
                if has_ours {
                    return Ok(None);
                }
                // No directory of ours: nothing here acknowledges a prompt
                // (the send path waits for acknowledgements only where an
                // agent directory says a mechanism is wired).
                let _ = std::fs::remove_dir(&dir);
                return Err(WireError::GeminiNeedsRoot {
                    uid,
                    system: system.display().to_string(),
                });
            }
            let hooks = settings
                .as_object_mut()
                .map(|o| o.entry("hooks").or_insert_with(|| serde_json::json!({})));
            if let Some(serde_json::Value::Object(hooks)) = hooks {
                for e in [
                    "SessionStart",
                    "BeforeAgent",
                    "AfterAgent",
                    "BeforeModel",
                    "Notification",
                ] {
                    // A short name: gemini shows it while the hook runs.
                    let ours = serde_json::json!({ "hooks": [{ "type": "command", "command": hook(e), "name": "fleet", "timeout": 5000 }] });
                    match hooks.get_mut(e) {
                        Some(serde_json::Value::Array(list)) => list.push(ours),
                        _ => {
                            hooks.insert(e.to_owned(), serde_json::json!([ours]));
                        }
                    }
                }
            }
            let path = dir.join("gemini-system-settings.json");
            write_private(&path, &settings.to_string())?;
            w.env.push((
                "GEMINI_CLI_SYSTEM_SETTINGS_PATH".into(),
                path.display().to_string(),
            ));
        }
        Native::Opencode => {
            let plugin_dir = dir.join("opencode");
            make_private_dir(&plugin_dir)?;
            make_private_dir(&plugin_dir.join("node_modules"))?;
            write_private(&plugin_dir.join("package-lock.json"), OPENCODE_PACKAGE_LOCK)?;
            let path = plugin_dir.join("fleet.js");
            write_private(&path, &js_plugin(OPENCODE_PLUGIN, "opencode", fleetctl))?;
            let mut content =
                json_object(spec.env.get("OPENCODE_CONFIG_CONTENT").map(String::as_str));
            let url = format!("file://{}", path.display());
            if let Some(o) = content.as_object_mut() {
                let list = o.entry("plugin").or_insert_with(|| serde_json::json!([]));
                match list {
                    serde_json::Value::Array(l) => l.push(url.into()),
                    other => *other = serde_json::json!([url]),
                }
            }
            w.env
                .push(("OPENCODE_CONFIG_CONTENT".into(), content.to_string()));
        }
        Native::Pi => {
            let path = dir.join("fleet-pi.ts");
            write_private(&path, &js_plugin(PI_EXTENSION, "pi", fleetctl))?;
            w.args = format!(" -e {}", shell_quote(&path.display().to_string()));
        }
        Native::Aider => {
            w.env.push(("AIDER_NOTIFICATIONS".into(), "true".into()));
            w.env
                .push(("AIDER_NOTIFICATIONS_COMMAND".into(), hook("notify")));
        }
    }
    Ok(Some(w))
}

/// Adds Fleet's MCP server (`fleetctl --socket S mcp`) to the agent's
/// runtime, in its private directory and flags only: Claude Code
/// `--mcp-config FILE`, Codex `-c mcp_servers.fleet.*` (its tools approved:
/// they are held to the roster's grants), opencode's `mcp` key in
/// `OPENCODE_CONFIG_CONTENT`, gemini-cli's `mcpServers` in the system
/// settings file hostd gives it (root only, as for its hooks). `env` is the
/// launch environment so far (the native wiring's included), which the
/// opencode and gemini settings extend. `Ok(None)`: the roster did not ask.
pub fn wire_mcp(
    run_dir: &Path,
    spec: &AgentSpec,
    fleetctl: Option<&Path>,
    socket: &Path,
    env: &[(String, String)],
) -> Result<Option<Wiring>, McpError> {
    if !spec.mcp {
        return Ok(None);
    }
    let fleetctl = fleetctl
        .ok_or(WireError::NoFleetctl)
        .map_err(McpError::Wire)?;
    let kind = match spec.native_kind {
        Native::None => {
            return Err(McpError::Unsupported(format!(
                "runtime {:?} has no MCP client Fleet knows how to configure",
                spec.runtime
            )));
        }
        Native::Pi => {
            return Err(McpError::Unsupported(
                "pi has no MCP client (by design; see its README)".into(),
            ));
        }
        Native::Aider => {
            return Err(McpError::Unsupported("aider has no MCP client".into()));
        }
        k => k,
    };
    let prog = program(&spec.command);
    if matches!(kind, Native::Claude | Native::Codex) && prog != kind.runtime() && prog != "node" {
        return Err(McpError::Wire(WireError::Wrapped {
            runtime: kind.runtime().to_owned(),
            program: prog,
        }));
    }
    let exe = fleetctl.display().to_string();
    let args = [
        "--socket".to_owned(),
        socket.display().to_string(),
        "mcp".to_owned(),
    ];
    let dir = agent_dir(run_dir, spec);
    make_private_dir(&dir).map_err(McpError::Wire)?;
    let of = |k: &str| {
        env.iter()
            .rev()
            .find(|(ek, _)| ek == k)
            .map(|(_, v)| v.clone())
    };
    let mut w = Wiring::default();
    match kind {
        Native::Claude => {
            let path = dir.join("claude-mcp.json");
            let config = serde_json::json!({
                "mcpServers": { "fleet": { "type": "stdio", "command": exe, "args": args } }
            });
            write_private(&path, &config.to_string()).map_err(McpError::Wire)?;
            w.args = format!(" --mcp-config={}", shell_quote(&path.display().to_string()));
        }
        Native::Codex => {
            let list = args
                .iter()
                .map(|a| toml_string(a))
                .collect::<Vec<_>>()
                .join(",");
            for kv in [
                format!("mcp_servers.fleet.command={}", toml_string(&exe)),
                format!("mcp_servers.fleet.args=[{list}]"),
                "mcp_servers.fleet.default_tools_approval_mode=\"approve\"".to_owned(),
            ] {
                w.args.push_str(&format!(" -c {}", shell_quote(&kv)));
            }
        }
        Native::Opencode => {
            let mut content = json_object(of("OPENCODE_CONFIG_CONTENT").as_deref());
            let mut command = vec![exe];
            command.extend(args);
            if let Some(o) = content.as_object_mut() {
                let mcp = o.entry("mcp").or_insert_with(|| serde_json::json!({}));
                if let Some(m) = mcp.as_object_mut() {
                    m.insert(
                        "fleet".into(),
                        serde_json::json!({ "type": "local", "command": command, "enabled": true }),
                    );
                }
            }
            w.env
                .push(("OPENCODE_CONFIG_CONTENT".into(), content.to_string()));
        }
        Native::Gemini => {
            let uid = rustix::process::geteuid().as_raw();
            if uid != 0 {
                return Err(McpError::Unsupported(format!(
                    "gemini-cli reads MCP servers for a process only from a root-owned system settings file, and fleet-hostd runs as uid {uid}; add \"fleet\": {{\"command\": \"{exe}\", \"args\": [\"--socket\", \"<the hostd socket>\", \"mcp\"], \"trust\": true}} to mcpServers there as root (see README, \"gemini-cli\")"
                )));
            }
            let system = of("GEMINI_CLI_SYSTEM_SETTINGS_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/etc/gemini-cli/settings.json"));
            let mut settings = json_object_file(&system);
            if let Some(o) = settings.as_object_mut() {
                let servers = o
                    .entry("mcpServers")
                    .or_insert_with(|| serde_json::json!({}));
                if let Some(m) = servers.as_object_mut() {
                    m.insert(
                        "fleet".into(),
                        serde_json::json!({ "command": exe, "args": args, "trust": true }),
                    );
                }
            }
            let path = dir.join("gemini-system-settings.json");
            write_private(&path, &settings.to_string()).map_err(McpError::Wire)?;
            w.env.push((
                "GEMINI_CLI_SYSTEM_SETTINGS_PATH".into(),
                path.display().to_string(),
            ));
        }
        Native::None | Native::Pi | Native::Aider => return Ok(None),
    }
    Ok(Some(w))
}

/// Why Fleet's MCP server is not in an agent's launch.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("{0}")]
    Wire(WireError),
    #[error("{0}: its agent runs without Fleet's tools")]
    Unsupported(String),
}

/// `text` as a JSON object, or an empty one (absent, not JSON, not an
/// object: the user's value is then not extended but replaced).
fn json_object(text: Option<&str>) -> serde_json::Value {
    text.and_then(|c| serde_json::from_str(c).ok())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}))
}

/// A settings file read as a JSON object (at most 1 MiB, never blocking on
/// what is there), or an empty one.
fn json_object_file(path: &Path) -> serde_json::Value {
    fleet_proto::heartbeat::read_bounded(path, 1 << 20)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}))
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The prelude and `body` for `runtime`, with fleetctl's path as a JSON
/// (so also JavaScript) string.
fn js_plugin(body: &str, runtime: &str, fleetctl: &Path) -> String {
    format!("{JS_PRELUDE}{body}")
        .replace("__RUNTIME__", runtime)
        .replace(
            "__FLEETCTL__",
            &serde_json::Value::String(fleetctl.display().to_string()).to_string(),
        )
}

/// Creates `dir` 0700 if needed and refuses anything that is not a real
/// directory of ours (a symlink an agent put there).
fn make_private_dir(dir: &Path) -> Result<(), WireError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let io = |source| WireError::Io {
        path: dir.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() && !m.file_type().is_symlink() => {
            if m.uid() != rustix::process::geteuid().as_raw() {
                return Err(io(std::io::Error::other("owned by another user")));
            }
            Ok(())
        }
        Ok(_) => Err(io(std::io::Error::other("exists and is not a directory"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(io),
        Err(e) => Err(io(e)),
    }
}

/// Writes a file 0600 by temp + rename, never through a symlink.
fn write_private(path: &Path, content: &str) -> Result<(), WireError> {
    fleet_proto::heartbeat::replace_file(path, content.as_bytes()).map_err(|source| WireError::Io {
        path: path.to_owned(),
        source,
    })
}

/// What opencode finds in a config dir whose plugin dependency is
/// installed (it would otherwise run `npm install` there: a 70 s stall
/// offline).
const OPENCODE_PACKAGE_LOCK: &str = r#"{"name":"fleet-opencode","lockfileVersion":3,"requires":true,"packages":{"":{"dependencies":{"@opencode-ai/plugin":"*"}}}}"#;

/// What both in-process plugins start with: `tell(event, payload)` hands
/// the payload to a detached `fleetctl hook` (never awaited, never
/// throwing: the runtime awaits its handlers).
const JS_PRELUDE: &str = r#"// Fleet: forwards __RUNTIME__ events to `fleetctl hook __RUNTIME__ <event>`.
// Written by fleet-hostd for this agent; never awaited, never throws.
import { spawn } from "node:child_process";
const FLEETCTL = __FLEETCTL__;
function tell(event, payload) {
  try {
    const child = spawn(FLEETCTL, ["hook", "__RUNTIME__", event], {
      detached: true, stdio: ["pipe", "ignore", "ignore"], env: process.env,
    });
    child.on("error", () => {});
    child.stdin.on("error", () => {});
    child.stdin.end(JSON.stringify(payload ?? {}).slice(0, 65536));
    child.unref();
  } catch (_) {}
}
"#;

/// opencode plugin: forwards chat and bus events to `fleetctl hook`,
/// detached, never awaited, never throwing.
const OPENCODE_PLUGIN: &str = r#"export const FleetStatus = async () => ({
  "chat.message": async (input) => {
    try { tell("chat.message", { model: input?.model ?? null }); } catch (_) {}
  },
  event: async ({ event }) => {
    try {
      const t = event?.type;
      if (t === "session.idle" || t === "session.status" || t === "permission.updated"
          || t === "permission.asked" || t === "permission.replied" || t === "session.error") {
        tell(t, event?.properties ?? {});
      }
    } catch (_) {}
  },
});
"#;

/// pi extension: forwards its lifecycle events with the model id.
const PI_EXTENSION: &str = r#"function modelOf(ctx) {
  try {
    const m = ctx?.model;
    if (!m) return null;
    return m.provider && m.id ? `${m.provider}/${m.id}` : (m.id ?? String(m));
  } catch (_) { return null; }
}
export default function (pi) {
  for (const name of ["session_start", "agent_start", "agent_end", "session_shutdown", "model_select"]) {
    try {
      pi.on(name, (event, ctx) => {
        try {
          const m = event?.model;
          const picked = m?.provider && m?.id ? `${m.provider}/${m.id}` : null;
          tell(name, { model: picked ?? modelOf(ctx) });
        } catch (_) {}
      });
    } catch (_) {}
  }
  try {
    pi.on("input", (event, ctx) => {
      let idle = null;
      try { idle = ctx?.isIdle ? ctx.isIdle() : null; } catch (_) {}
      try { tell("input", { source: event?.source ?? null, idle, model: modelOf(ctx) }); } catch (_) {}
    });
  } catch (_) {}
}
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roster::{self, Format};

    fn spec(agent: &str) -> AgentSpec {
        let r = roster::parse(
            &format!("version: 1\ntransport: tmux\nagents:\n{agent}"),
            Path::new("r.yaml"),
            Format::Yaml,
            Path::new("/home/u"),
        )
        .unwrap();
        r.agents[0].clone()
    }

    #[test]
    fn each_runtime_is_wired_in_its_own_directory_never_the_users() {
        let run = tempfile::tempdir().unwrap();
        let fleetctl = Path::new("/opt/fleet/bin/fleetctl");
        let w = wire(
            run.path(),
            &spec("  - name: a\n    runtime: claude\n"),
            Some(fleetctl),
        )
        .unwrap()
        .unwrap();
        let settings = run.path().join("a.d/claude-settings.json");
        assert_eq!(w.args, format!(" --settings '{}'", settings.display()));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
        assert_eq!(
            json["hooks"]["UserPromptSubmit"][0]["hooks"][0]["command"],
            "'/opt/fleet/bin/fleetctl' hook claude UserPromptSubmit"
        );
        // Codex: flags only, nothing written.
        let w = wire(
            run.path(),
            &spec("  - name: b\n    runtime: codex\n    command: /opt/x/codex --yolo\n"),
            Some(fleetctl),
        )
        .unwrap()
        .unwrap();
        assert!(
            w.args.contains("hooks.UserPromptSubmit=")
                && w.args.ends_with("--dangerously-bypass-hook-trust")
        );
        // opencode: added to the user's own config content, theirs kept.
        let w = wire(
            run.path(),
            &spec("  - name: c\n    runtime: opencode\n    env:\n      OPENCODE_CONFIG_CONTENT: '{\"plugin\":[\"theirs\"],\"theme\":\"x\"}'\n"),
            Some(fleetctl),
        )
        .unwrap()
        .unwrap();
        let content: serde_json::Value = serde_json::from_str(&w.env[0].1).unwrap();
        assert_eq!(content["theme"], "x");
        assert_eq!(content["plugin"][0], "theirs");
        assert!(
            content["plugin"][1]
                .as_str()
                .unwrap()
                .ends_with("c.d/opencode/fleet.js")
        );
        assert!(run.path().join("c.d/opencode/node_modules").is_dir());
        // aider: environment only.
        let w = wire(
            run.path(),
            &spec("  - name: d\n    runtime: aider\n"),
            Some(fleetctl),
        )
        .unwrap()
        .unwrap();
        assert!(w.args.is_empty());
        assert!(
            w.env.iter().any(
                |(k, v)| k == "AIDER_NOTIFICATIONS_COMMAND" && v.ends_with("hook aider notify")
            )
        );
    }

    #[test]
    fn flags_go_only_to_the_runtime_itself_and_a_switch_turns_it_off() {
        let run = tempfile::tempdir().unwrap();
        let f = Some(Path::new("/x/fleetctl"));
        let wrapped =
            spec("  - name: a\n    runtime: claude\n    command: sh -c 'cd /w; exec claude'\n");
        assert!(matches!(
            wire(run.path(), &wrapped, f),
            Err(WireError::Wrapped { .. })
        ));
        assert!(!run.path().join("a.d").exists());
        let node = spec("  - name: b\n    runtime: pi\n    command: node /x/pi.js\n");
        assert!(wire(run.path(), &node, f).unwrap().is_some());
        let off = spec("  - name: c\n    runtime: claude\n    native: false\n");
        assert_eq!(wire(run.path(), &off, f).unwrap(), None);
        let shell = spec("  - name: d\n    runtime: shell\n");
        assert_eq!(wire(run.path(), &shell, f).unwrap(), None);
        assert!(matches!(
            wire(
                run.path(),
                &spec("  - name: e\n    runtime: claude\n"),
                None
            ),
            Err(WireError::NoFleetctl)
        ));
        // An agent directory that is a symlink (an agent's doing) is refused.
        std::os::unix::fs::symlink("/tmp", run.path().join("f.d")).unwrap();
        assert!(matches!(
            wire(run.path(), &spec("  - name: f\n    runtime: claude\n"), f),
            Err(WireError::Io { .. })
        ));
    }

    #[test]
    fn the_mcp_server_goes_into_each_runtimes_own_mechanism_only_when_asked() {
        let run = tempfile::tempdir().unwrap();
        let f = Some(Path::new("/x/fleetctl"));
        let sock = Path::new("/run/h.sock");
        let plain = spec("  - name: a\n    runtime: claude\n");
        assert_eq!(wire_mcp(run.path(), &plain, f, sock, &[]).unwrap(), None);
        // Claude Code: a config file in the agent's directory, on the flag.
        let w = wire_mcp(
            run.path(),
            &spec("  - name: a\n    runtime: claude\n    mcp: true\n"),
            f,
            sock,
            &[],
        )
        .unwrap()
        .unwrap();
        let file = run.path().join("a.d/claude-mcp.json");
        assert_eq!(w.args, format!(" --mcp-config='{}'", file.display()));
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(config["mcpServers"]["fleet"]["command"], "/x/fleetctl");
        assert_eq!(
            config["mcpServers"]["fleet"]["args"],
            serde_json::json!(["--socket", "/run/h.sock", "mcp"])
        );
        // Codex: -c overrides, its tools approved.
        let w = wire_mcp(
            run.path(),
            &spec("  - name: b\n    runtime: codex\n    mcp: true\n"),
            f,
            sock,
            &[],
        )
        .unwrap()
        .unwrap();
        assert!(
            w.args
                .contains(r#"-c 'mcp_servers.fleet.command="/x/fleetctl"'"#),
            "{}",
            w.args
        );
        assert!(
            w.args
                .contains(r#"mcp_servers.fleet.args=["--socket","/run/h.sock","mcp"]"#),
            "{}",
            w.args
        );
        assert!(w.args.contains("default_tools_approval_mode"), "{}", w.args);
        // opencode: added to the content the launch already has.
        let so_far = [(
            "OPENCODE_CONFIG_CONTENT".to_owned(),
            r#"{"plugin":["file:///p.js"]}"#.to_owned(),
        )];
        let w = wire_mcp(
            run.path(),
            &spec("  - name: c\n    runtime: opencode\n    mcp: true\n"),
            f,
            sock,
            &so_far,
        )
        .unwrap()
        .unwrap();
        let content: serde_json::Value = serde_json::from_str(&w.env[0].1).unwrap();
        assert_eq!(content["plugin"][0], "file:///p.js");
        assert_eq!(
            content["mcp"]["fleet"]["command"],
            serde_json::json!(["/x/fleetctl", "--socket", "/run/h.sock", "mcp"])
        );
        // pi, aider and a plain program have no MCP client: said.
        for (name, runtime) in [("d", "pi"), ("e", "aider"), ("g", "shell")] {
            let s = spec(&format!(
                "  - name: {name}\n    runtime: {runtime}\n    mcp: true\n"
            ));
            assert!(
                matches!(
                    wire_mcp(run.path(), &s, f, sock, &[]),
                    Err(McpError::Unsupported(_))
                ),
                "{runtime}"
            );
        }
    }

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("a b'c"), r"'a b'\''c'");
        assert_eq!(toml_string(r#"x "y" \z"#), r#""x \"y\" \\z""#);
    }
}
