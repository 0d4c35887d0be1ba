//! Temporary lead roster (replaced by the full version).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_proto::name::AgentName;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq)]
pub struct TmuxSettings {
    pub socket_name: String,
    pub holder_session: String,
}
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSpec {
    pub command: Option<String>,
    pub process_names: Option<Vec<String>>,
    pub reset_command: Option<String>,
}
#[derive(Debug, Clone, PartialEq)]
pub struct Roster {
    pub path: PathBuf,
    pub tmux: TmuxSettings,
    pub agents: Vec<AgentSpec>,
    pub runtimes: BTreeMap<String, RuntimeSpec>,
}
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSpec {
    pub name: AgentName,
    pub runtime: String,
    pub class: String,
    pub model_hint: Option<String>,
    pub reset_between_tasks: bool,
    pub persistent_persona: bool,
    pub command: String,
    pub env: BTreeMap<String, String>,
    pub workdir: PathBuf,
    pub path_prefix: Vec<PathBuf>,
    pub process_names: Vec<String>,
    pub reset_command: Option<String>,
    pub submit_gap: Duration,
    pub heartbeat_interval: Option<Duration>,
    pub line: usize,
}
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct RosterError {
    pub path: String,
    pub line: usize,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    transport: String,
    #[serde(default)]
    tmux: Option<TmuxFile>,
    #[serde(default)]
    defaults: Option<Defaults>,
    #[serde(default)]
    runtimes: BTreeMap<String, RuntimeSpec>,
    #[serde(default)]
    agents: Vec<AgentFile>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TmuxFile {
    socket_name: Option<String>,
    holder_session: Option<String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    working_directory: Option<PathBuf>,
    heartbeat_interval_secs: Option<f64>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    name: String,
    runtime: String,
    class: Option<String>,
    model_hint: Option<String>,
    #[serde(default)]
    reset_between_tasks: bool,
    #[serde(default)]
    persistent_persona: bool,
    command: Option<String>,
    heartbeat_interval_secs: Option<f64>,
}

pub fn load(path: &Path, home: &Path) -> Result<Roster, RosterError> {
    let err = |line: usize, message: String| RosterError {
        path: path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        line,
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(0, e.to_string()))?;
    let f: File = serde_yaml::from_str(&text)
        .map_err(|e| err(e.location().map_or(0, |l| l.line()), e.to_string()))?;
    if f.version != 1 || f.transport != "tmux" {
        return Err(err(
            1,
            format!("transport: unsupported transport {:?}", f.transport),
        ));
    }
    let builtin: BTreeMap<&str, (&str, Vec<&str>)> = [
        ("claude", ("claude", vec!["claude", "node"])),
        ("codex", ("codex", vec!["codex", "node"])),
        ("pi", ("pi", vec!["pi", "node"])),
        ("opencode", ("opencode", vec!["opencode", "node", "bun"])),
        ("shell", ("bash", vec!["bash", "sh", "dash", "zsh", "fish"])),
        ("demo", ("fleet-demo-agent", vec!["fleet-demo-agent"])),
    ]
    .into_iter()
    .collect();
    let defaults = f.defaults.unwrap_or(Defaults {
        working_directory: None,
        heartbeat_interval_secs: None,
    });
    let mut agents = Vec::new();
    for (i, a) in f.agents.into_iter().enumerate() {
        let name =
            AgentName::new(&a.name).map_err(|e| err(i + 1, format!("agents[{i}].name: {e}")))?;
        let custom = f.runtimes.get(&a.runtime);
        let (cmd, procs) = match (builtin.get(a.runtime.as_str()), custom) {
            (
                _,
                Some(RuntimeSpec {
                    command: Some(c),
                    process_names,
                    ..
                }),
            ) => (
                c.clone(),
                process_names
                    .clone()
                    .unwrap_or_else(|| vec![c.split_whitespace().next().unwrap_or("").to_owned()]),
            ),
            (Some((c, p)), _) => ((*c).to_owned(), p.iter().map(|s| (*s).to_owned()).collect()),
            _ => {
                return Err(err(
                    i + 1,
                    format!("agents[{i}].runtime: unknown runtime {:?}", a.runtime),
                ));
            }
        };
        agents.push(AgentSpec {
            name,
            runtime: a.runtime,
            class: a.class.unwrap_or_else(|| "worker".into()),
            model_hint: a.model_hint,
            reset_between_tasks: a.reset_between_tasks,
            persistent_persona: a.persistent_persona,
            command: a.command.unwrap_or(cmd),
            env: BTreeMap::new(),
            workdir: defaults
                .working_directory
                .clone()
                .map_or_else(|| home.to_owned(), |w| crate::config::expand_home(&w, home)),
            path_prefix: vec![],
            process_names: procs,
            reset_command: None,
            submit_gap: Duration::from_millis(100),
            heartbeat_interval: a
                .heartbeat_interval_secs
                .or(defaults.heartbeat_interval_secs)
                .map(Duration::from_secs_f64),
            line: i + 1,
        });
    }
    let t = f.tmux.unwrap_or(TmuxFile {
        socket_name: None,
        holder_session: None,
    });
    Ok(Roster {
        path: path.to_owned(),
        tmux: TmuxSettings {
            socket_name: t.socket_name.unwrap_or_else(|| "fleet".into()),
            holder_session: t.holder_session.unwrap_or_else(|| "_holder".into()),
        },
        agents,
        runtimes: f.runtimes,
    })
}
