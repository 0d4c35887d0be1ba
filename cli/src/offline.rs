//! The six real runtimes, set up to start offline in a throw-away HOME
//! straight at their input box (dummy keys, onboarding and trust
//! answered, update checks off): what the acceptance tests and `fleetctl
//! bench send` run. Installed by `deploy/agents/setup.sh` into
//! `$FLEET_AGENTS_PREFIX/bin/<runtime>` (default `/opt/fleet-agents`).
//! Every model call fails offline; run hostd under `unshare -n` so they
//! fail at once.

use std::path::{Path, PathBuf};

/// One runtime and how to start it offline.
#[derive(Debug, Clone, Copy)]
pub struct Offline {
    /// The agent name the tests use.
    pub agent: &'static str,
    pub runtime: &'static str,
    /// Arguments after the executable (`__HOME__` is the seeded HOME).
    pub args: &'static str,
    /// Pane environment (`__HOME__` is the seeded HOME).
    pub env: &'static [(&'static str, &'static str)],
    /// Seeds HOME; `project` is the workdir, trusted when `trusted`.
    pub seed: fn(&Path, &Path, bool) -> std::io::Result<()>,
    /// tmux keys that end a running turn.
    pub interrupt: &'static [&'static str],
}

/// Where `deploy/agents/setup.sh` put the runtimes.
pub fn prefix() -> PathBuf {
    std::env::var_os("FLEET_AGENTS_PREFIX")
        .map_or_else(|| PathBuf::from("/opt/fleet-agents"), PathBuf::from)
}

pub fn binary(runtime: &str) -> PathBuf {
    prefix().join("bin").join(runtime)
}

impl Offline {
    pub fn installed(&self) -> bool {
        binary(self.runtime).is_file()
    }

    /// Seeds `home` and `project` and returns the roster entry (YAML,
    /// under `agents:`) for an agent `name`, with native status on or off.
    pub fn prepare(
        &self,
        name: &str,
        home: &Path,
        project: &Path,
        trusted: bool,
        native: bool,
    ) -> std::io::Result<String> {
        std::fs::create_dir_all(home)?;
        std::fs::create_dir_all(project)?;
        (self.seed)(home, project, trusted)?;
        let home_s = home.display().to_string();
        let mut env = format!("      HOME: {home_s}\n");
        for (k, v) in self.env {
            env.push_str(&format!(
                "      {k}: {}\n",
                serde_json::Value::String(v.replace("__HOME__", &home_s))
            ));
        }
        Ok(format!(
            "  - name: {name}\n    runtime: {rt}\n    native: {native}\n    command: {bin} {args}\n    workdir: {project}\n    env:\n{env}",
            rt = self.runtime,
            bin = binary(self.runtime).display(),
            args = self.args.replace("__HOME__", &home_s),
            project = project.display(),
        ))
    }
}

fn seed_nothing(_: &Path, _: &Path, _: bool) -> std::io::Result<()> {
    Ok(())
}

const CLAUDE_KEY: &str = "sk-ant-api03-fleet-offline-dummy-key-0123456789abcdef";

/// Onboarding done, the dummy key approved, the project trusted (or not).
fn seed_claude(home: &Path, project: &Path, trusted: bool) -> std::io::Result<()> {
    let tail = &CLAUDE_KEY[CLAUDE_KEY.len() - 20..];
    let cfg = serde_json::json!({
        "hasCompletedOnboarding": true,
        "theme": "dark",
        "numStartups": 5,
        "projects": { project.display().to_string(): {
            "hasTrustDialogAccepted": trusted,
            "hasCompletedProjectOnboarding": true,
            "allowedTools": []
        }},
        "customApiKeyResponses": { "approved": [tail], "rejected": [] }
    });
    std::fs::write(home.join(".claude.json"), cfg.to_string())
}

/// An API-key login in auth.json (an OPENAI_API_KEY variable would bring
/// the sign-in screen back) and the project trusted.
fn seed_codex(home: &Path, project: &Path, trusted: bool) -> std::io::Result<()> {
    let dir = home.join(".codex");
    std::fs::create_dir_all(&dir)?;
    let mut cfg = "check_for_update_on_startup = false\nforced_login_method = \"api\"\ncli_auth_credentials_store = \"file\"\n".to_owned();
    if trusted {
        cfg.push_str(&format!(
            "[projects.\"{}\"]\ntrust_level = \"trusted\"\n",
            project.display()
        ));
    }
    std::fs::write(dir.join("config.toml"), cfg)?;
    std::fs::write(
        dir.join("auth.json"),
        r#"{"auth_mode":"apikey","OPENAI_API_KEY":"sk-fleet-offline-dummy-0123456789"}"#,
    )
}

/// opencode installs its plugin dependency into every config dir it scans
/// unless one is there (a 70 s stall offline): the HOME's config dir gets
/// the empty `node_modules/` and lock file a networked machine has after
/// its first start.
fn seed_opencode(home: &Path, _: &Path, _: bool) -> std::io::Result<()> {
    let dir = home.join(".config/opencode");
    std::fs::create_dir_all(dir.join("node_modules"))?;
    std::fs::write(
        dir.join("package-lock.json"),
        r#"{"name":"opencode-config","lockfileVersion":3,"requires":true,"packages":{"":{"dependencies":{"@opencode-ai/plugin":"*"}}}}"#,
    )
}

/// gemini-cli's own settings: API-key auth chosen (no sign-in dialog),
/// folder trust off when trusted (an untrusted folder runs no hooks at
/// all), one attempt per request (an offline turn fails in under a second
/// instead of four minutes), a fixed model (no minute of routing). hostd
/// copies the file and adds Fleet's hooks to the copy.
fn seed_gemini(home: &Path, _: &Path, trusted: bool) -> std::io::Result<()> {
    let settings = serde_json::json!({
        "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": !trusted}},
        "general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false, "maxAttempts": 1},
        "privacy": {"usageStatisticsEnabled": false},
        "model": {"name": "gemini-2.5-flash"}
    });
    std::fs::write(home.join("gemini-system.json"), settings.to_string())
}

/// aider fetches model prices at every start unless it has them: the
/// entries of its bundled table for the two models it uses.
fn seed_aider(home: &Path, _: &Path, _: bool) -> std::io::Result<()> {
    std::fs::write(
        home.join("aider-model-metadata.json"),
        include_str!("aider-model-metadata.json"),
    )
}

pub const CLAUDE: Offline = Offline {
    agent: "cc0",
    runtime: "claude",
    args: "",
    env: &[
        ("ANTHROPIC_API_KEY", CLAUDE_KEY),
        ("DISABLE_AUTOUPDATER", "1"),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ("CLAUDE_CODE_MAX_RETRIES", "1"),
    ],
    seed: seed_claude,
    interrupt: &["Escape"],
};

pub const CODEX: Offline = Offline {
    agent: "cx0",
    runtime: "codex",
    args: "",
    env: &[("CODEX_HOME", "__HOME__/.codex")],
    seed: seed_codex,
    interrupt: &["Escape"],
};

pub const OPENCODE: Offline = Offline {
    agent: "oc0",
    runtime: "opencode",
    args: "-m anthropic/claude-sonnet-4-5",
    env: &[
        ("ANTHROPIC_API_KEY", "sk-ant-dummy"),
        ("OPENCODE_DISABLE_MODELS_FETCH", "1"),
        ("OPENCODE_DISABLE_AUTOUPDATE", "1"),
    ],
    seed: seed_opencode,
    interrupt: &["Escape", "Escape"],
};

pub const PI: Offline = Offline {
    agent: "pi0",
    runtime: "pi",
    args: "--offline --provider anthropic --model claude-sonnet-4-5",
    env: &[("ANTHROPIC_API_KEY", "sk-ant-dummy")],
    seed: seed_nothing,
    interrupt: &["Escape"],
};

pub const GEMINI: Offline = Offline {
    agent: "gm0",
    runtime: "gemini",
    args: "",
    env: &[
        ("GEMINI_API_KEY", "dummy"),
        (
            "GEMINI_CLI_SYSTEM_SETTINGS_PATH",
            "__HOME__/gemini-system.json",
        ),
        // gemini-cli runs headless (no TUI) when CI=true, which a CI
        // runner's environment passes down to hostd's tmux and its panes.
        ("CI", "false"),
    ],
    seed: seed_gemini,
    interrupt: &["Escape"],
};

pub const AIDER: Offline = Offline {
    agent: "ai0",
    runtime: "aider",
    args: "--model gpt-4o --model-metadata-file __HOME__/aider-model-metadata.json --no-git --chat-history-file __HOME__/aider.chat.history.md --input-history-file __HOME__/aider.input.history --no-check-update --no-show-release-notes --analytics-disable --no-show-model-warnings",
    env: &[("OPENAI_API_KEY", "sk-dummy-offline")],
    seed: seed_aider,
    interrupt: &["C-c"],
};

pub const ALL: &[Offline] = &[CLAUDE, CODEX, OPENCODE, PI, GEMINI, AIDER];
