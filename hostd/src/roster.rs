//! The roster: the operator's list of agents, in YAML or TOML. Rosters of
//! the source fleet load unchanged; every error names file, line and key.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_proto::name::AgentName;
use serde::Deserialize;

use crate::runtime;

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
    pub agents: Vec<AgentSpec>,
    pub supervision: Supervision,
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
}

impl Default for RespawnPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            max_deaths: 5,
            window: Duration::from_secs(600),
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
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
    pub fn agent(&self, name: &str) -> Option<&AgentSpec> {
        self.agents.iter().find(|a| a.name.as_str() == name)
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

// === the file as written ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoster {
    #[serde(default = "one")]
    version: u32,
    #[serde(default = "tmux_word")]
    transport: String,
    #[serde(default)]
    tmux: RawTmux,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    runtimes: BTreeMap<String, RawRuntime>,
    #[serde(default)]
    agents: Vec<RawAgent>,
    #[serde(default)]
    supervision: RawSupervision,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSupervision {
    tick_ms: Option<u64>,
    #[serde(default)]
    respawn: RawRespawn,
    poke: Option<RawPoke>,
    first_mate: Option<String>,
    digest_interval_secs: Option<f64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRespawn {
    enabled: Option<bool>,
    max_deaths: Option<u32>,
    window_secs: Option<f64>,
    initial_delay_secs: Option<f64>,
    max_delay_secs: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoke {
    classes: Option<Vec<String>>,
    idle_secs: Option<f64>,
    cooldown_secs: Option<f64>,
    text: Option<String>,
}

fn one() -> u32 {
    1
}

fn tmux_word() -> String {
    "tmux".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTmux {
    socket_name: Option<String>,
    holder_session: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    working_directory: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    path: Vec<String>,
    heartbeat_interval_secs: Option<f64>,
    native: Option<NativeSetting>,
}

/// `native:` — `true`/`false` turns the runtime's own status mechanism on
/// or off; a runtime name (`native: codex`) gives a custom runtime that
/// runtime's mechanism and screen rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum NativeSetting {
    On(bool),
    Like(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    command: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    workdir: Option<String>,
    process_names: Option<Vec<String>>,
    #[serde(default)]
    path: Vec<String>,
    reset_command: Option<String>,
    submit_gap_ms: Option<u64>,
    bracketed_paste: Option<bool>,
    native: Option<NativeSetting>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    name: String,
    runtime: String,
    class: Option<String>,
    model_hint: Option<String>,
    #[serde(default)]
    reset_between_tasks: bool,
    #[serde(default)]
    persistent_persona: bool,
    command: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(alias = "working_directory")]
    workdir: Option<String>,
    #[serde(default)]
    path: Vec<String>,
    heartbeat_interval_secs: Option<f64>,
    submit_gap_ms: Option<u64>,
    bracketed_paste: Option<bool>,
    respawn: Option<RawRespawn>,
    native: Option<bool>,
}

/// Variables hostd sets in every pane; a roster may not override them.
const RESERVED_ENV: &[&str] = &[
    fleet_proto::heartbeat::ENV_AGENT,
    fleet_proto::heartbeat::ENV_TENANT,
    fleet_proto::heartbeat::ENV_HEARTBEAT_FILE,
    fleet_proto::heartbeat::ENV_HEARTBEAT_INTERVAL,
];

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

/// Parses and checks roster text; `path` is only used in messages.
/// The line where a second YAML document begins: a `---` or `...` after
/// content, or else the first content line indented less than the first
/// one (which makes libyaml end the first document there).
fn second_document(text: &str) -> usize {
    let mut first_indent = None;
    for (i, l) in text.lines().enumerate() {
        let content = l.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let indent = l.len() - content.len();
        match first_indent {
            None => first_indent = Some(indent),
            Some(_) if l.starts_with("---") || l.starts_with("...") => return i + 1,
            Some(f) if indent < f => return i + 1,
            Some(_) => {}
        }
    }
    1
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

fn resolve(
    raw: RawRoster,
    path: &Path,
    home: &Path,
    at: &dyn Fn(&str, String) -> RosterError,
) -> Result<Roster, RosterError> {
    if raw.version != 1 {
        return Err(at(
            "version",
            format!(
                "unsupported roster version {} (this fleet reads version 1)",
                raw.version
            ),
        ));
    }
    if raw.transport != "tmux" {
        return Err(at(
            "transport",
            format!("unsupported transport {:?} (only \"tmux\")", raw.transport),
        ));
    }
    let socket_name = raw.tmux.socket_name.unwrap_or_else(|| "fleet".into());
    fleet_proto::name::check(&socket_name).map_err(|e| at("tmux.socket_name", e.to_string()))?;
    let holder_session = raw.tmux.holder_session.unwrap_or_else(|| "_holder".into());
    // The holder may start with '_' so it can never clash with an agent.
    fleet_proto::name::check(holder_session.trim_start_matches('_'))
        .map_err(|e| at("tmux.holder_session", e.to_string()))?;

    let expand = |p: &str| crate::config::expand_home(Path::new(p), home);
    check_env(&raw.defaults.env, "defaults.env", at)?;
    let default_interval = interval(
        raw.defaults.heartbeat_interval_secs,
        "defaults.heartbeat_interval_secs",
        at,
    )?;
    let default_workdir = raw
        .defaults
        .working_directory
        .as_deref()
        .map(expand)
        .unwrap_or_else(|| home.to_owned());

    for (name, rt) in &raw.runtimes {
        let key = format!("runtimes.{name}");
        fleet_proto::name::check(name).map_err(|e| at(&key, e.to_string()))?;
        if runtime::builtin(name).is_none() && rt.command.is_none() {
            return Err(at(&key, format!("custom runtime {name:?} needs a command")));
        }
        check_env(&rt.env, &format!("{key}.env"), at)?;
        if rt.submit_gap_ms.is_some_and(|g| g > 10_000) {
            return Err(at(
                &format!("{key}.submit_gap_ms"),
                "must be at most 10000".into(),
            ));
        }
    }

    let supervision = resolve_supervision(&raw.supervision, at)?;
    let mut agents = Vec::with_capacity(raw.agents.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, a) in raw.agents.into_iter().enumerate() {
        let key = |k: &str| format!("agents[{i}].{k}");
        let name = AgentName::new(&a.name).map_err(|e| at(&key("name"), e.to_string()))?;
        if a.name == holder_session {
            return Err(at(
                &key("name"),
                format!("{:?} is the holder session's name", a.name),
            ));
        }
        let line = at(&key("name"), String::new()).line.unwrap_or(0);
        if let Some(first) = seen.insert(a.name.clone(), line) {
            return Err(at(
                &key("name"),
                format!("duplicate agent name {:?} (first at line {first})", a.name),
            ));
        }
        let builtin = runtime::builtin(&a.runtime);
        let custom = raw.runtimes.get(&a.runtime);
        if builtin.is_none() && custom.is_none() {
            let mut known: Vec<&str> = runtime::names().collect();
            known.extend(raw.runtimes.keys().map(String::as_str));
            known.sort_unstable();
            known.dedup();
            return Err(at(
                &key("runtime"),
                format!(
                    "unknown runtime {:?} (known: {})",
                    a.runtime,
                    known.join(", ")
                ),
            ));
        }
        check_env(&a.env, &key("env"), at)?;
        let hb = interval(
            a.heartbeat_interval_secs,
            &key("heartbeat_interval_secs"),
            at,
        )?;
        if a.submit_gap_ms.is_some_and(|g| g > 10_000) {
            return Err(at(&key("submit_gap_ms"), "must be at most 10000".into()));
        }
        let command = a
            .command
            .clone()
            .or_else(|| custom.and_then(|c| c.command.clone()))
            .or_else(|| builtin.map(|b| b.command.to_owned()))
            .unwrap_or_default();
        if command.trim().is_empty() {
            return Err(at(&key("command"), "command is empty".into()));
        }
        let process_names = custom
            .and_then(|c| c.process_names.clone())
            .or_else(|| builtin.map(|b| b.process_names.iter().map(|s| (*s).to_owned()).collect()))
            .or_else(|| runtime::process_name_of(&command).map(|p| vec![p]))
            .unwrap_or_default();
        let mut env = raw.defaults.env.clone();
        if let Some(c) = custom {
            env.extend(c.env.clone());
        }
        env.extend(a.env.clone());
        let workdir = a
            .workdir
            .as_deref()
            .or_else(|| custom.and_then(|c| c.workdir.as_deref()))
            .map(expand)
            .unwrap_or_else(|| default_workdir.clone());
        let mut path_prefix: Vec<PathBuf> = Vec::new();
        let runtime_path = custom.map(|c| c.path.clone()).unwrap_or_default();
        for p in a.path.iter().chain(&runtime_path).chain(&raw.defaults.path) {
            let p = expand(p);
            if !path_prefix.contains(&p) {
                path_prefix.push(p);
            }
        }
        let like = match custom.and_then(|c| c.native.clone()) {
            Some(NativeSetting::Like(n)) => match runtime::Native::parse(&n) {
                Some(k) => Some((k, runtime::builtin(&n))),
                None => {
                    return Err(at(
                        &format!("runtimes.{}.native", a.runtime),
                        format!(
                            "unknown mechanism {n:?} (true, false, or one of claude, codex, gemini, opencode, pi, aider)"
                        ),
                    ));
                }
            },
            _ => None,
        };
        let native_kind = like
            .map(|(k, _)| k)
            .or_else(|| builtin.map(|b| b.native))
            .unwrap_or(runtime::Native::None);
        let on = |v: &Option<NativeSetting>| match v {
            Some(NativeSetting::On(b)) => Some(*b),
            Some(NativeSetting::Like(_)) => Some(true),
            None => None,
        };
        let native = a
            .native
            .or_else(|| custom.and_then(|c| on(&c.native)))
            .or_else(|| on(&raw.defaults.native))
            .unwrap_or(true);
        let rules_of = like.and_then(|(_, b)| b).or(builtin);
        let screen = rules_of.map_or(&runtime::Screen::GENERIC, |b| b.screen);
        let startup = rules_of.map_or(Duration::from_secs(10), |b| b.startup);
        let submit_gap = a
            .submit_gap_ms
            .or_else(|| custom.and_then(|c| c.submit_gap_ms))
            .map(Duration::from_millis)
            .or_else(|| builtin.map(|b| b.submit_gap))
            .unwrap_or(runtime::DEFAULT_SUBMIT_GAP);
        agents.push(AgentSpec {
            name,
            runtime: a.runtime.clone(),
            class: a.class.unwrap_or_else(|| "worker".into()),
            model_hint: a.model_hint,
            reset_between_tasks: a.reset_between_tasks,
            persistent_persona: a.persistent_persona,
            command,
            env,
            workdir,
            path_prefix,
            process_names,
            reset_command: custom
                .and_then(|c| c.reset_command.clone())
                .or_else(|| builtin.and_then(|b| b.reset_command.map(str::to_owned))),
            submit_gap,
            bracketed_paste: a
                .bracketed_paste
                .or_else(|| custom.and_then(|c| c.bracketed_paste))
                .or_else(|| builtin.and_then(|b| b.bracketed_paste)),
            heartbeat_interval: hb.or(default_interval),
            native,
            native_kind,
            screen,
            startup,
            respawn: match &a.respawn {
                Some(r) => respawn_policy(r, &supervision.respawn, &key("respawn"), at)?,
                None => supervision.respawn.clone(),
            },
            line,
        });
    }
    if let Some(fm) = &supervision.first_mate
        && !agents.iter().any(|a| a.name.as_str() == fm)
    {
        return Err(at(
            "supervision.first_mate",
            format!("{fm:?} is not an agent of this roster"),
        ));
    }
    Ok(Roster {
        path: path.to_owned(),
        tmux: TmuxSettings {
            socket_name,
            holder_session,
        },
        agents,
        supervision,
    })
}

fn secs_in(
    v: Option<f64>,
    default: Duration,
    key: &str,
    range: (f64, f64),
    at: &dyn Fn(&str, String) -> RosterError,
) -> Result<Duration, RosterError> {
    match v {
        None => Ok(default),
        Some(s) if s.is_finite() && s >= range.0 && s <= range.1 => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(at(
            key,
            format!("{s} is outside {}..={} seconds", range.0, range.1),
        )),
    }
}

fn respawn_policy(
    r: &RawRespawn,
    base: &RespawnPolicy,
    key: &str,
    at: &dyn Fn(&str, String) -> RosterError,
) -> Result<RespawnPolicy, RosterError> {
    let k = |s: &str| format!("{key}.{s}");
    let p = RespawnPolicy {
        enabled: r.enabled.unwrap_or(base.enabled),
        max_deaths: r.max_deaths.unwrap_or(base.max_deaths),
        window: secs_in(
            r.window_secs,
            base.window,
            &k("window_secs"),
            (1.0, 86_400.0),
            at,
        )?,
        initial_delay: secs_in(
            r.initial_delay_secs,
            base.initial_delay,
            &k("initial_delay_secs"),
            (0.0, 3_600.0),
            at,
        )?,
        max_delay: secs_in(
            r.max_delay_secs,
            base.max_delay,
            &k("max_delay_secs"),
            (0.0, 86_400.0),
            at,
        )?,
    };
    if !(1..=1000).contains(&p.max_deaths) {
        return Err(at(
            &k("max_deaths"),
            format!("{} is outside 1..=1000", p.max_deaths),
        ));
    }
    if p.max_delay < p.initial_delay {
        return Err(at(
            &k("max_delay_secs"),
            "must be at least initial_delay_secs".into(),
        ));
    }
    Ok(p)
}

fn resolve_supervision(
    raw: &RawSupervision,
    at: &dyn Fn(&str, String) -> RosterError,
) -> Result<Supervision, RosterError> {
    let d = Supervision::default();
    let tick = match raw.tick_ms {
        None => d.tick,
        Some(ms) if (10..=60_000).contains(&ms) => Duration::from_millis(ms),
        Some(ms) => {
            return Err(at(
                "supervision.tick_ms",
                format!("{ms} is outside 10..=60000"),
            ));
        }
    };
    let respawn = respawn_policy(&raw.respawn, &d.respawn, "supervision.respawn", at)?;
    let poke = match &raw.poke {
        None => None,
        Some(p) => Some(PokePolicy {
            classes: p.classes.clone().unwrap_or_else(|| vec!["orchestrator".into()]),
            idle: secs_in(p.idle_secs, Duration::from_secs(300), "supervision.poke.idle_secs", (0.1, 86_400.0), at)?,
            cooldown: secs_in(p.cooldown_secs, Duration::from_secs(900), "supervision.poke.cooldown_secs", (0.1, 86_400.0), at)?,
            text: p.text.clone().unwrap_or_else(|| {
                "[fleet] You have been idle and no worker is making progress. Check on your workers and assign the next task.".into()
            }),
        }),
    };
    if let Some(fm) = &raw.first_mate {
        fleet_proto::name::check(fm).map_err(|e| at("supervision.first_mate", e.to_string()))?;
    }
    Ok(Supervision {
        tick,
        respawn,
        poke,
        first_mate: raw.first_mate.clone(),
        digest_interval: secs_in(
            raw.digest_interval_secs,
            d.digest_interval,
            "supervision.digest_interval_secs",
            (0.1, 86_400.0),
            at,
        )?,
    })
}

fn check_env(
    env: &BTreeMap<String, String>,
    key: &str,
    at: &dyn Fn(&str, String) -> RosterError,
) -> Result<(), RosterError> {
    for k in env.keys() {
        let ok = k
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(at(
                &format!("{key}.{k}"),
                format!("{k:?} is not a valid environment variable name"),
            ));
        }
        if RESERVED_ENV.contains(&k.as_str()) {
            return Err(at(
                &format!("{key}.{k}"),
                format!("{k} is set by hostd itself"),
            ));
        }
    }
    Ok(())
}

fn interval(
    secs: Option<f64>,
    key: &str,
    at: &dyn Fn(&str, String) -> RosterError,
) -> Result<Option<Duration>, RosterError> {
    match secs {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => {
            Ok(Some(Duration::from_secs_f64(s)))
        }
        Some(s) => Err(at(
            key,
            format!("{s} is not a number of seconds in (0, 86400]"),
        )),
    }
}

/// serde's messages end with " at line X column Y" (yaml) or carry a
/// trailing period; the location is reported separately.
fn clean_message(m: &str) -> String {
    let m = m.trim();
    let m = match m.find(" at line ") {
        Some(i) => &m[..i],
        None => m,
    };
    m.trim_end_matches('.').to_owned()
}

fn path_string(p: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for seg in p.iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            serde_path_to_error::Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    if out == "." { String::new() } else { out }
}

fn line_at(text: &str, byte: usize) -> usize {
    text.get(..byte.min(text.len()))
        .map_or(1, |t| t.matches('\n').count() + 1)
}

// === key path -> line ===

/// Where each key path (`agents[1].runtime`) is written in the file, for
/// messages about values serde accepted but the roster rules refuse. Covers
/// block-style YAML and TOML tables, which is how rosters are written.
struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    fn build(text: &str, format: Format) -> Self {
        let lines = match format {
            Format::Yaml => yaml_lines(text),
            Format::Toml => toml_lines(text),
        };
        Self { lines }
    }

    /// The line of `key`, or of its closest ancestor.
    fn line(&self, key: &str) -> Option<usize> {
        let mut k = key.to_owned();
        loop {
            if let Some(l) = self.lines.get(&k) {
                return Some(*l);
            }
            let cut = k.rfind(['.', '['])?;
            k.truncate(cut);
        }
    }
}

fn join(stack: &[(usize, String)]) -> String {
    let mut out = String::new();
    for (_, seg) in stack {
        if seg.starts_with('[') || out.is_empty() {
            out.push_str(seg);
        } else {
            out.push('.');
            out.push_str(seg);
        }
    }
    out
}

fn yaml_lines(text: &str) -> HashMap<String, usize> {
    let mut map = HashMap::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut counters: HashMap<String, usize> = HashMap::new();
    for (no, raw) in text.lines().enumerate() {
        let line = no + 1;
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        let mut indent = raw.len() - trimmed.len();
        let mut rest = trimmed;
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        while rest == "-" || rest.starts_with("- ") {
            let parent = join(&stack);
            let n = counters.entry(format!("{parent}@{indent}")).or_insert(0);
            stack.push((indent, format!("[{n}]")));
            *n += 1;
            map.entry(join(&stack)).or_insert(line);
            let after = rest.get(1..).unwrap_or("");
            let inner = after.trim_start();
            indent += 1 + after.len() - inner.len();
            rest = inner;
        }
        let key = rest
            .split_once(": ")
            .map(|(k, _)| k)
            .or_else(|| rest.strip_suffix(':'));
        if let Some(k) = key {
            let k = k.trim().trim_matches(['"', '\'']);
            stack.push((indent, k.to_owned()));
            map.entry(join(&stack)).or_insert(line);
        }
    }
    map
}

fn toml_lines(text: &str) -> HashMap<String, usize> {
    let mut map = HashMap::new();
    let mut table = String::new();
    let mut counters: HashMap<String, usize> = HashMap::new();
    for (no, raw) in text.lines().enumerate() {
        let line = no + 1;
        let t = raw.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
            let name = name.trim().to_owned();
            let n = counters.entry(name.clone()).or_insert(0);
            table = format!("{name}[{n}]");
            *n += 1;
            map.entry(table.clone()).or_insert(line);
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            table = name.trim().to_owned();
            map.entry(table.clone()).or_insert(line);
        } else if let Some((k, _)) = t.split_once('=')
            && !t.starts_with('#')
        {
            let k = k.trim().trim_matches('"');
            let full = if table.is_empty() {
                k.to_owned()
            } else {
                format!("{table}.{k}")
            };
            map.entry(full).or_insert(line);
        }
    }
    map
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
