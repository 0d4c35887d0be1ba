//! The roster: the operator's list of agents, in YAML or TOML. Rosters of
//! the source fleet load unchanged; every error names file, line and key.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_proto::name::AgentName;
use fleet_proto::reach::Reach;
use serde::Deserialize;

use crate::runtime;

mod lines;
mod raw;
mod resolve;

use lines::*;
use raw::*;
use resolve::*;

// === resolved roster ===

#[derive(Debug, Clone, PartialEq)]
pub struct TmuxSettings {
    pub socket_name: String,
    pub holder_session: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Roster {
    pub path: PathBuf,
    pub tmux: TmuxSettings,
    /// Never changed after [`Roster::new`]: `index` points into it.
    pub agents: Vec<AgentSpec>,
    pub supervision: Supervision,
    /// Position of each agent in `agents` by name: lookups run per agent
    /// per tick, so 500 agents must not mean 250,000 comparisons.
    index: HashMap<String, usize>,
}

/// When and how hostd respawns an agent whose pane died.
#[derive(Debug, Clone, PartialEq)]
pub struct RespawnPolicy {
    pub enabled: bool,
    /// More deaths than this within `window` stop the respawns (need-human).
    pub max_deaths: u32,
    pub window: Duration,
    /// Wait before the first respawn; doubled per death in the window.
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// `initial_delay` doubled per death up to `max_delay`, validated.
    pub backoff: fleet_net::backoff::Backoff,
}

impl Default for RespawnPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            max_deaths: 5,
            window: Duration::from_secs(600),
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            backoff: fleet_net::backoff::Backoff::fixed(
                Duration::from_secs(1),
                Duration::from_secs(60),
                0.0,
            ),
        }
    }
}

/// Poking an idle orchestrator whose workers make no progress.
#[derive(Debug, Clone, PartialEq)]
pub struct PokePolicy {
    /// Agents of these classes are orchestrators; all others are workers.
    pub classes: Vec<String>,
    /// Idle (status ok, screen unchanged) this long before a poke; a
    /// worker with screen activity within it counts as progressing.
    pub idle: Duration,
    /// No second poke within this after a delivered one.
    pub cooldown: Duration,
    /// First line of the poke; a snapshot of the workers follows.
    pub text: String,
}

/// The roster's supervision settings (`supervision:`), every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Supervision {
    pub tick: Duration,
    pub respawn: RespawnPolicy,
    pub poke: Option<PokePolicy>,
    /// Agent that gets the change-only fleet digest and need-human alerts.
    pub first_mate: Option<String>,
    pub digest_interval: Duration,
}

impl Default for Supervision {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            respawn: RespawnPolicy::default(),
            poke: None,
            first_mate: None,
            digest_interval: Duration::from_secs(300),
        }
    }
}

/// What an agent may do through Fleet's MCP server (`may:`). Reads and
/// sends reach agents of its own tenant only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grants {
    pub read: Reach,
    pub send: Reach,
    pub need_human: bool,
}

/// One agent, with every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSpec {
    pub name: AgentName,
    pub runtime: String,
    pub class: String,
    pub model_hint: Option<String>,
    pub reset_between_tasks: bool,
    pub persistent_persona: bool,
    /// Shell command line, run as `sh -c 'exec <command>'`.
    pub command: String,
    /// defaults.env < runtime env < agent env.
    pub env: BTreeMap<String, String>,
    pub workdir: PathBuf,
    /// Extra PATH entries for the pane, agent's first.
    pub path_prefix: Vec<PathBuf>,
    /// Names the runtime's process really has (drift otherwise).
    pub process_names: Vec<String>,
    pub reset_command: Option<String>,
    pub submit_gap: Duration,
    pub bracketed_paste: Option<bool>,
    pub heartbeat_interval: Option<Duration>,
    /// Whether hostd wires the runtime's own status mechanism in at launch
    /// (`native:`, on by default).
    pub native: bool,
    /// The mechanism (the built-in runtime's, or the one a custom runtime
    /// names).
    pub native_kind: runtime::Native,
    /// Fleet's MCP server (`fleetctl mcp`) is added to the runtime's launch.
    pub mcp: bool,
    /// What the agent may do through it.
    pub may: Grants,
    /// The screen rules hostd reads this agent by.
    pub screen: &'static runtime::Screen,
    /// Longest start-up to the input box.
    pub startup: Duration,
    /// The roster's respawn policy with this agent's overrides.
    pub respawn: RespawnPolicy,
    /// 1-based line of the agent's entry.
    pub line: usize,
}

impl Roster {
    pub fn new(
        path: PathBuf,
        tmux: TmuxSettings,
        agents: Vec<AgentSpec>,
        supervision: Supervision,
    ) -> Self {
        let index = agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.to_string(), i))
            .collect();
        Self {
            path,
            tmux,
            agents,
            supervision,
            index,
        }
    }

    pub fn agent(&self, name: &str) -> Option<&AgentSpec> {
        self.index.get(name).and_then(|i| self.agents.get(*i))
    }

    /// The agents by name, for lookups in a loop.
    pub fn by_name(&self) -> HashMap<&str, &AgentSpec> {
        self.agents.iter().map(|a| (a.name.as_str(), a)).collect()
    }

    /// The agents' names.
    pub fn names(&self) -> std::collections::HashSet<String> {
        self.agents.iter().map(|a| a.name.to_string()).collect()
    }
}

// === errors ===

/// A roster problem: `file:line: key: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RosterError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for RosterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Toml,
}

impl Format {
    pub fn of(path: &Path) -> Option<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Some(Self::Yaml),
            Some("toml") => Some(Self::Toml),
            _ => None,
        }
    }
}

// === loading ===

/// Reads and checks a roster file.
/// Largest roster file read.
pub const MAX_BYTES: usize = 4 << 20;

pub fn load(path: &Path, home: &Path) -> Result<Roster, RosterError> {
    let err = |message: String| RosterError {
        path: path.to_owned(),
        line: None,
        key: String::new(),
        message,
    };
    let format = Format::of(path)
        .ok_or_else(|| err("unknown roster format: use a .yaml, .yml or .toml file".into()))?;
    // Never blocks: a FIFO or a device (also behind a symlink) is refused,
    // and at most MAX_BYTES are read.
    let bytes = fleet_proto::heartbeat::read_bounded_following(path, MAX_BYTES)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    if bytes.len() > MAX_BYTES {
        return Err(err(format!("larger than {MAX_BYTES} bytes")));
    }
    let text = String::from_utf8(bytes).map_err(|e| err(format!("not UTF-8: {e}")))?;
    parse(&text, path, format, home)
}

pub fn parse(text: &str, path: &Path, format: Format, home: &Path) -> Result<Roster, RosterError> {
    let index = LineIndex::build(text, format);
    let at = |key: &str, message: String| RosterError {
        path: path.to_owned(),
        line: index.line(key),
        key: key.to_owned(),
        message,
    };
    let raw: RawRoster = match format {
        Format::Yaml => {
            let de = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let key = path_string(e.path());
                let mut line = e
                    .inner()
                    .location()
                    .map(|l| l.line())
                    .or_else(|| index.line(&key));
                let mut message = clean_message(&e.inner().to_string());
                if line.is_none() && message.contains("more than one document") {
                    // the YAML parser gives this one no location: find it.
                    line = Some(second_document(text));
                    message = "a second YAML document starts here (a stray `---`, or a line indented less than the first); a roster is one document".into();
                }
                // the YAML parser prefixes the (parent) path; the key says it already.
                let message = match message.split_once(": ") {
                    Some((p, rest)) if !p.is_empty() && key.starts_with(p) => rest.to_owned(),
                    _ => message,
                };
                RosterError {
                    path: path.to_owned(),
                    line,
                    key,
                    message,
                }
            })?
        }
        Format::Toml => {
            let de = toml::Deserializer::parse(text).map_err(|e| RosterError {
                path: path.to_owned(),
                line: e.span().map(|s| line_at(text, s.start)),
                key: String::new(),
                message: clean_message(e.message()),
            })?;
            serde_path_to_error::deserialize(de).map_err(|e| {
                let key = path_string(e.path());
                let line = e
                    .inner()
                    .span()
                    .map(|s| line_at(text, s.start))
                    .or_else(|| index.line(&key));
                RosterError {
                    path: path.to_owned(),
                    line,
                    key,
                    message: clean_message(e.inner().message()),
                }
            })?
        }
    };
    resolve(raw, path, home, &at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/rosters")
            .join(name)
    }

    fn parse_yaml(text: &str) -> Result<Roster, RosterError> {
        parse(
            text,
            Path::new("r.yaml"),
            Format::Yaml,
            Path::new("/home/u"),
        )
    }

    fn err(text: &str) -> String {
        parse_yaml(text).unwrap_err().to_string()
    }

    #[test]
    fn native_wiring_is_on_by_default_off_by_switch_and_borrowable() {
        let r = parse_yaml(
            "version: 1\ntransport: tmux\ndefaults:\n  native: true\nruntimes:\n  fork:\n    command: /opt/x/codex\n    native: codex\n  quiet:\n    command: claude\n    native: false\nagents:\n  - name: a\n    runtime: claude\n  - name: b\n    runtime: claude\n    native: false\n  - name: c\n    runtime: fork\n  - name: d\n    runtime: quiet\n  - name: e\n    runtime: shell\n",
        )
        .unwrap();
        let a = |n: &str| r.agent(n).unwrap();
        assert!(a("a").native && a("a").native_kind == runtime::Native::Claude);
        assert!(!a("b").native, "an agent's switch");
        assert_eq!(a("c").native_kind, runtime::Native::Codex);
        assert_eq!(
            a("c").screen,
            &runtime::CODEX_SCREEN,
            "its screen rules too"
        );
        assert!(!a("d").native, "a runtime's switch");
        assert_eq!(a("e").native_kind, runtime::Native::None);
        assert!(
            err("version: 1\ntransport: tmux\nruntimes:\n  x:\n    command: x\n    native: cobol\nagents:\n  - name: a\n    runtime: x\n")
                .contains("unknown mechanism \"cobol\""),
        );
    }

    #[test]
    fn mcp_and_may_take_defaults_and_a_tenant_wide_reach_is_refused() {
        let r = parse_yaml(
            "version: 1\ntransport: tmux\ndefaults:\n  mcp: true\n  may:\n    send: [\"w-*\"]\nruntimes:\n  quiet:\n    command: claude\n    mcp: false\nagents:\n  - name: a\n    runtime: claude\n  - name: b\n    runtime: quiet\n  - name: c\n    runtime: shell\n    may:\n      read: [c, \"box2/*\"]\n      need_human: false\n",
        )
        .unwrap();
        let a = |n: &str| r.agent(n).unwrap();
        assert!(a("a").mcp && !a("b").mcp, "a runtime's switch");
        assert_eq!(a("a").may.read.patterns(), ["*"], "its own host by default");
        assert_eq!(a("a").may.send.patterns(), ["w-*"], "the defaults' sends");
        assert!(a("a").may.need_human);
        assert_eq!(a("c").may.read.patterns(), ["c", "box2/*"]);
        assert_eq!(a("c").may.send.patterns(), ["w-*"], "each key on its own");
        assert!(!a("c").may.need_human);
        let e = err(
            "version: 1\ntransport: tmux\nagents:\n  - name: a\n    runtime: shell\n    may:\n      send: [\"other/box/a\"]\n",
        );
        assert!(e.contains("may.send") && e.contains("own tenant"), "{e}");
        let e = err(
            "version: 1\ntransport: tmux\nagents:\n  - name: a\n    runtime: shell\n    may:\n      write: [x]\n",
        );
        assert!(e.contains("write"), "{e}");
    }

    #[test]
    fn the_source_fleets_rosters_load_unchanged() {
        for (f, n) in [
            ("coding.yaml", 4),
            ("general.yaml", 2),
            ("research.yaml", 4),
            ("coding.toml", 4),
        ] {
            let r = load(&fixture(f), Path::new("/home/u")).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert_eq!(r.agents.len(), n, "{f}");
            assert_eq!(r.tmux.socket_name, "mosaic-factory");
            assert_eq!(r.tmux.holder_session, "_holder");
            let orch = r.agent("orchestrator").unwrap();
            assert_eq!(orch.runtime, "claude");
            assert_eq!(orch.class, "orchestrator");
            assert!(orch.persistent_persona);
            assert_eq!(orch.reset_command.as_deref(), Some("/clear"));
            assert_eq!(orch.process_names, ["claude", "node"]);
            assert_eq!(orch.workdir, PathBuf::from("/home/u"), "~ expands");
        }
        let r = load(&fixture("coding.yaml"), Path::new("/home/u")).unwrap();
        let c = r.agent("coder0").unwrap();
        assert_eq!(c.model_hint.as_deref(), Some("openai-codex/gpt-5.5:high"));
        assert!(c.reset_between_tasks);
        assert_eq!(c.reset_command.as_deref(), Some("/new"));
        assert_eq!(c.line, 18);
    }

    #[test]
    fn the_example_roster_loads() {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/roster.example.yaml");
        let r = load(&p, Path::new("/home/u")).unwrap_or_else(|e| panic!("{e}"));
        assert!(r.agents.len() >= 3);
    }

    #[test]
    fn additions_resolve_with_precedence() {
        let r = parse_yaml(
            "version: 1\ntransport: tmux\ndefaults:\n  env: {A: d, B: d}\n  path: [~/bin]\n  heartbeat_interval_secs: 5\nruntimes:\n  mine:\n    command: my-agent --x\n    env: {B: r, C: r}\n    path: [/opt/mine/bin]\n    submit_gap_ms: 250\nagents:\n  - name: a\n    runtime: mine\n    env: {C: a}\n    workdir: ~/w\n    path: [/opt/a]\n  - name: b\n    runtime: pi\n    command: node /x/pi.js\n    heartbeat_interval_secs: 0.5\n",
        )
        .unwrap();
        let a = r.agent("a").unwrap();
        assert_eq!(a.command, "my-agent --x");
        assert_eq!(a.process_names, ["my-agent"]);
        assert_eq!(a.env.get("A").unwrap(), "d");
        assert_eq!(a.env.get("B").unwrap(), "r");
        assert_eq!(a.env.get("C").unwrap(), "a");
        assert_eq!(a.workdir, PathBuf::from("/home/u/w"));
        assert_eq!(
            a.path_prefix,
            [
                PathBuf::from("/opt/a"),
                PathBuf::from("/opt/mine/bin"),
                PathBuf::from("/home/u/bin")
            ]
        );
        assert_eq!(a.submit_gap, Duration::from_millis(250));
        assert_eq!(a.heartbeat_interval, Some(Duration::from_secs(5)));
        let b = r.agent("b").unwrap();
        assert_eq!(b.command, "node /x/pi.js");
        assert_eq!(b.process_names, ["pi", "node"]);
        assert_eq!(b.heartbeat_interval, Some(Duration::from_millis(500)));
        assert_eq!(b.bracketed_paste, Some(true));
    }

    const HEAD: &str = "version: 1\ntransport: tmux\nagents:\n";

    #[test]
    fn unknown_keys_name_line_and_key() {
        assert_eq!(
            err("version: 1\ntransprt: tmux\n"),
            "r.yaml:2: transprt: unknown field `transprt`, expected one of `version`, `transport`, `tmux`, `defaults`, `runtimes`, `agents`, `supervision`"
        );
        let e = err("version: 1\ntmux:\n  socket: x\n");
        assert!(
            e.starts_with("r.yaml:3: tmux.socket: unknown field `socket`"),
            "{e}"
        );
        let e = err(&format!(
            "{HEAD}  - name: a\n    runtime: pi\n  - name: b\n    runtim: pi\n"
        ));
        assert!(
            e.starts_with("r.yaml:7: agents[1].runtim: unknown field `runtim`"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_names_point_at_the_second() {
        let e = err(&format!(
            "{HEAD}  - name: a\n    runtime: pi\n  - name: a\n    runtime: pi\n"
        ));
        assert_eq!(
            e,
            "r.yaml:6: agents[1].name: duplicate agent name \"a\" (first at line 4)"
        );
    }

    #[test]
    fn invalid_names_are_refused_with_their_line() {
        for bad in ["../x", "a:b", "a.b", "-x", "\"\""] {
            let e = err(&format!(
                "{HEAD}  - name: ok\n    runtime: pi\n  - name: {bad}\n    runtime: pi\n"
            ));
            assert!(
                e.starts_with("r.yaml:6: agents[1].name: agent name"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn unknown_runtime_lists_the_known_ones() {
        let e = err(&format!("{HEAD}  - name: a\n    runtime: pii\n"));
        assert_eq!(
            e,
            "r.yaml:5: agents[0].runtime: unknown runtime \"pii\" (known: aider, claude, codex, demo, gemini, opencode, pi, shell)"
        );
    }

    #[test]
    fn transport_and_version_are_checked() {
        assert_eq!(
            err("version: 1\ntransport: ssh\n"),
            "r.yaml:2: transport: unsupported transport \"ssh\" (only \"tmux\")"
        );
        assert!(err("version: 2\n").starts_with("r.yaml:1: version: unsupported roster version 2"));
    }

    #[test]
    fn syntax_and_type_errors_carry_the_parsers_line() {
        let e = err("version: 1\nagents:\n  - name: [unclosed\n");
        assert!(e.starts_with("r.yaml:"), "{e}");
        let e = err(&format!(
            "{HEAD}  - name: a\n    runtime: pi\n    reset_between_tasks: maybe\n"
        ));
        assert!(
            e.starts_with("r.yaml:6: agents[0].reset_between_tasks: invalid type"),
            "{e}"
        );
        let e = err(&format!("{HEAD}  - runtime: pi\n"));
        assert!(
            e.starts_with("r.yaml:4: agents[0]: missing field `name`"),
            "{e}"
        );
        let t = parse(
            "version = 1\n[[agents]]\nname = \"a\"\nruntime = \"pi\"\nbogus = 1\n",
            Path::new("r.toml"),
            Format::Toml,
            Path::new("/h"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            t.starts_with("r.toml:5: agents[0].bogus: unknown field `bogus`"),
            "{t}"
        );
        let t = parse(
            "version = 1\n[[agents]\n",
            Path::new("r.toml"),
            Format::Toml,
            Path::new("/h"),
        )
        .unwrap_err()
        .to_string();
        assert!(t.starts_with("r.toml:2:"), "{t}");
    }

    #[test]
    fn env_and_custom_runtime_rules() {
        let e = err(&format!(
            "{HEAD}  - name: a\n    runtime: pi\n    env:\n      FLEET_AGENT: x\n"
        ));
        assert!(
            e.starts_with("r.yaml:7: agents[0].env.FLEET_AGENT: FLEET_AGENT is set by hostd"),
            "{e}"
        );
        let e = err(&format!(
            "{HEAD}  - name: a\n    runtime: pi\n    env:\n      1BAD: x\n"
        ));
        assert!(e.contains("not a valid environment variable name"), "{e}");
        let e = err("version: 1\nruntimes:\n  mine:\n    reset_command: /x\nagents: []\n");
        assert_eq!(
            e,
            "r.yaml:3: runtimes.mine: custom runtime \"mine\" needs a command"
        );
        assert!(
            parse_yaml("version: 1\nagents: []\n")
                .unwrap()
                .agents
                .is_empty()
        );
    }

    #[test]
    fn the_line_index_follows_nesting() {
        let m = yaml_lines("a:\n  b:\n    - x: 1\n      y: 2\n    - x: 3\nc: 4\n");
        assert_eq!(m.get("a.b[1].x"), Some(&5));
        assert_eq!(m.get("a.b[0].y"), Some(&4));
        assert_eq!(m.get("c"), Some(&6));
        let t = toml_lines(
            "x = 1\n[tmux]\nsocket_name = \"s\"\n[[agents]]\nname = \"a\"\n[[agents]]\nname = \"b\"\n",
        );
        assert_eq!(t.get("agents[1].name"), Some(&7));
        assert_eq!(t.get("tmux.socket_name"), Some(&3));
    }
}

#[cfg(test)]
mod supervision_tests {
    use super::*;

    fn parse_yaml(text: &str) -> Result<Roster, String> {
        parse(
            text,
            Path::new("r.yaml"),
            Format::Yaml,
            Path::new("/home/u"),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn supervision_defaults_overrides_and_errors() {
        let r = parse_yaml("version: 1\nagents:\n  - name: a\n    runtime: demo\n").unwrap();
        assert_eq!(r.supervision, Supervision::default());
        assert_eq!(r.agents[0].respawn, RespawnPolicy::default());
        let r = parse_yaml(
            "version: 1\nsupervision:\n  respawn:\n    max_deaths: 2\n  first_mate: m\n  poke: {}\nagents:\n  - name: a\n    runtime: demo\n    respawn:\n      enabled: false\n  - name: m\n    runtime: demo\n",
        )
        .unwrap();
        assert!(!r.agents[0].respawn.enabled);
        assert_eq!(
            r.agents[0].respawn.max_deaths, 2,
            "agent overrides inherit the roster's policy"
        );
        assert_eq!(r.agents[1].respawn.max_deaths, 2);
        assert_eq!(
            r.supervision.poke.as_ref().unwrap().classes,
            ["orchestrator"]
        );
        let e = parse_yaml("version: 1\nsupervision:\n  first_mate: ghost\nagents:\n  - name: a\n    runtime: demo\n").unwrap_err();
        assert!(
            e.contains("supervision.first_mate") && e.contains("not an agent"),
            "{e}"
        );
        let e = parse_yaml("version: 1\nsupervision:\n  respawn:\n    max_deaths: 0\nagents: []\n")
            .unwrap_err();
        assert!(e.contains("supervision.respawn.max_deaths"), "{e}");
        let e = parse_yaml("version: 1\nsupervision:\n  respawn:\n    initial_delay_secs: 9\n    max_delay_secs: 1\nagents: []\n").unwrap_err();
        assert!(e.contains("max_delay_secs"), "{e}");
        let e = parse_yaml("version: 1\nsupervision:\n  pokes: {}\nagents: []\n").unwrap_err();
        assert!(
            e.starts_with("r.yaml:3: supervision.pokes: unknown field"),
            "{e}"
        );
    }
}
