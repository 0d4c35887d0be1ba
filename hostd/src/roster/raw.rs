//! The roster as written: the serde shapes of the file, before any default or check.

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoster {
    #[serde(default = "one")]
    pub(super) version: u32,
    #[serde(default = "tmux_word")]
    pub(super) transport: String,
    #[serde(default)]
    pub(super) tmux: RawTmux,
    #[serde(default)]
    pub(super) defaults: RawDefaults,
    #[serde(default)]
    pub(super) runtimes: BTreeMap<String, RawRuntime>,
    #[serde(default)]
    pub(super) agents: Vec<RawAgent>,
    #[serde(default)]
    pub(super) supervision: RawSupervision,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSupervision {
    pub(super) tick_ms: Option<u64>,
    #[serde(default)]
    pub(super) respawn: RawRespawn,
    pub(super) poke: Option<RawPoke>,
    pub(super) first_mate: Option<String>,
    pub(super) digest_interval_secs: Option<f64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRespawn {
    pub(super) enabled: Option<bool>,
    pub(super) max_deaths: Option<u32>,
    pub(super) window_secs: Option<f64>,
    pub(super) initial_delay_secs: Option<f64>,
    pub(super) max_delay_secs: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPoke {
    pub(super) classes: Option<Vec<String>>,
    pub(super) idle_secs: Option<f64>,
    pub(super) cooldown_secs: Option<f64>,
    pub(super) text: Option<String>,
}

pub(super) fn one() -> u32 {
    1
}

pub(super) fn tmux_word() -> String {
    "tmux".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTmux {
    pub(super) socket_name: Option<String>,
    pub(super) holder_session: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefaults {
    pub(super) working_directory: Option<String>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) path: Vec<String>,
    pub(super) heartbeat_interval_secs: Option<f64>,
    pub(super) native: Option<NativeSetting>,
    pub(super) mcp: Option<bool>,
    pub(super) may: Option<RawMay>,
}

/// `may:` — what an agent may do through Fleet's MCP server.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMay {
    pub(super) read: Option<Vec<String>>,
    pub(super) send: Option<Vec<String>>,
    pub(super) need_human: Option<bool>,
}

/// `native:` — `true`/`false` turns the runtime's own status mechanism on
/// or off; a runtime name (`native: codex`) gives a custom runtime that
/// runtime's mechanism and screen rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum NativeSetting {
    On(bool),
    Like(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRuntime {
    pub(super) command: Option<String>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    pub(super) workdir: Option<String>,
    pub(super) process_names: Option<Vec<String>>,
    #[serde(default)]
    pub(super) path: Vec<String>,
    pub(super) reset_command: Option<String>,
    pub(super) submit_gap_ms: Option<u64>,
    pub(super) bracketed_paste: Option<bool>,
    pub(super) native: Option<NativeSetting>,
    pub(super) mcp: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    pub(super) name: String,
    pub(super) runtime: String,
    pub(super) class: Option<String>,
    pub(super) model_hint: Option<String>,
    #[serde(default)]
    pub(super) reset_between_tasks: bool,
    #[serde(default)]
    pub(super) persistent_persona: bool,
    pub(super) command: Option<String>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    #[serde(alias = "working_directory")]
    pub(super) workdir: Option<String>,
    #[serde(default)]
    pub(super) path: Vec<String>,
    pub(super) heartbeat_interval_secs: Option<f64>,
    pub(super) submit_gap_ms: Option<u64>,
    pub(super) bracketed_paste: Option<bool>,
    pub(super) respawn: Option<RawRespawn>,
    pub(super) native: Option<bool>,
    pub(super) mcp: Option<bool>,
    pub(super) may: Option<RawMay>,
}

/// Variables hostd sets in every pane; a roster may not override them.
pub(super) const RESERVED_ENV: &[&str] = &[
    fleet_proto::heartbeat::ENV_AGENT,
    fleet_proto::heartbeat::ENV_TENANT,
    fleet_proto::heartbeat::ENV_HEARTBEAT_FILE,
    fleet_proto::heartbeat::ENV_HEARTBEAT_INTERVAL,
];
