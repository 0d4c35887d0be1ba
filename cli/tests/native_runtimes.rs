//! The six real runtimes answer for themselves (DESIGN §13): each is
//! started by hostd with its own hook, extension or plugin wired to
//! `fleetctl hook`, offline (hostd and its tmux run under `unshare -n`, so
//! every model call fails), in a throw-away HOME. For each: `ps` shows
//! native `busy` within a second of an accepted prompt and leaves it when
//! the failing turn ends or is interrupted; the model is self-reported
//! where the runtime exposes it; `send --verify` is acknowledged; a prompt
//! to a busy agent is queued where the runtime queues; a stale draft is
//! refused or cleared, never merged; two sends at once both land whole;
//! a permission or trust prompt shows `waiting`.
//!
//! Installed by `deploy/agents/setup.sh` (pinned versions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleet_proto::v1::{AgentRow, AgentStatus, PaneState, StatusSource};
use support::Fleet;

fn agents_bin(name: &str) -> PathBuf {
    let prefix =
        std::env::var("FLEET_AGENTS_PREFIX").unwrap_or_else(|_| "/opt/fleet-agents".into());
    let p = PathBuf::from(prefix).join("bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run deploy/agents/setup.sh (deploy/test.sh and .ci/run do)",
        p.display()
    );
    p
}

/// One runtime under test: how to seed its HOME, its roster lines.
struct Runtime {
    agent: &'static str,
    runtime: &'static str,
    /// Arguments after the executable.
    args: &'static str,
    /// Extra `env:` lines (YAML, 6 spaces in); `__HOME__` is replaced.
    env: &'static str,
    seed: fn(&Path, &Path),
}

struct Bed {
    f: Fleet,
    name: &'static str,
    _scratch: tempfile::TempDir,
    project: PathBuf,
}

async fn start(rt: &Runtime, trusted: bool) -> Bed {
    let scratch = tempfile::tempdir().unwrap();
    let home = scratch.path().join("home");
    let project = scratch.path().join("project");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&project).unwrap();
    (rt.seed)(
        &home,
        if trusted {
            &project
        } else {
            Path::new("/nonexistent")
        },
    );
    let roster = format!(
        "version: 1\ntransport: tmux\nagents:\n  - name: {name}\n    runtime: {runtime}\n    command: {bin} {args}\n    workdir: {project}\n    env:\n      HOME: {home}\n{env}",
        name = rt.agent,
        runtime = rt.runtime,
        bin = agents_bin(rt.runtime).display(),
        args = rt.args,
        project = project.display(),
        home = home.display(),
        env = rt.env.replace("__HOME__", &home.display().to_string()),
    );
    let mut f = Fleet::new(&roster, "");
    f.offline = true;
    f.start().await;
    f.wait_for("the runtime running", Duration::from_secs(60), |a| {
        a.len() == 1 && a[0].pane == PaneState::Alive as i32 && a[0].process.is_some()
    })
    .await;
    Bed {
        f,
        name: rt.agent,
        _scratch: scratch,
        project,
    }
}

fn hb(r: &AgentRow) -> &fleet_proto::v1::Heartbeat {
    r.heartbeat.as_ref().unwrap()
}

fn status(r: &AgentRow) -> (AgentStatus, StatusSource) {
    (
        AgentStatus::try_from(hb(r).status).unwrap(),
        StatusSource::try_from(hb(r).status_source).unwrap(),
    )
}

impl Bed {
    fn screen(&self) -> String {
        String::from_utf8_lossy(
            &self
                .f
                .tmux(&["capture-pane", "-p", "-t", &format!("={}:", self.name)])
                .stdout,
        )
        .into_owned()
    }

    async fn wait_screen(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if pred(&s) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {what} never showed:\n{s}\nlog:\n{}",
                self.name,
                self.f.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(AgentStatus, StatusSource, &AgentRow) -> bool,
    ) -> AgentRow {
        let screen = || self.screen();
        let rows = self
            .f
            .wait_for(what, timeout, |a| {
                let (s, src) = status(&a[0]);
                pred(s, src, &a[0])
            })
            .await;
        let _ = screen;
        rows[0].clone()
    }

    fn send(&self, text: &str, extra: &[&str]) -> (i32, serde_json::Value, String) {
        let mut args = vec!["send", self.name, text, "--verify", "--json"];
        args.extend_from_slice(extra);
        let out = self.f.fleetctl(&args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out.status.code().unwrap(), v, err)
    }

    /// Until the runtime is at its input box, idle, by its own word or by
    /// the screen.
    async fn ready(&self) -> AgentRow {
        self.wait_status(
            "idle at the input box",
            Duration::from_secs(90),
            |s, _, _| s == AgentStatus::Ok,
        )
        .await
    }

    /// A prompt at idle: acknowledged by the runtime's own turn counter,
    /// and `busy` by the runtime's word within a second.
    async fn first_prompt_is_acknowledged_and_busy(&self, native_busy: bool) -> AgentRow {
        let (code, r, err) = self.send("say hello to the fleet", &[]);
        assert_eq!(code, 0, "{r} {err}\n{}", self.screen());
        assert_eq!(r["verdict"], "accepted", "{r}");
        assert_eq!(r["evidence"], "acknowledged", "{r}\n{}", self.screen());
        let accepted = Instant::now();
        let row = self
            .wait_status("busy", Duration::from_secs(5), |s, src, _| {
                s == AgentStatus::Busy && (!native_busy || src == StatusSource::Native)
            })
            .await;
        if native_busy {
            assert!(
                accepted.elapsed() <= Duration::from_secs(1),
                "busy {} ms after the receipt",
                accepted.elapsed().as_millis()
            );
        }
        assert!(hb(&row).turn.unwrap_or(0) >= 1, "{row:?}");
        row
    }

    /// A paste left in the box (no Enter) is a stale draft: the next send
    /// is refused naming its size, and --clear-draft empties it first.
    async fn stale_draft_is_refused_then_cleared(&self) {
        let out = self
            .f
            .fleetctl(&["send", self.name, "left behind", "--no-enter", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_screen("the draft", Duration::from_secs(5), |s| {
            s.contains("left behind")
        })
        .await;
        let (code, r, err) = self.send("a new prompt", &[]);
        assert_eq!(code, 1, "{r} {err}\n{}", self.screen());
        assert!(err.contains("already holds 11 bytes"), "{err}");
        assert!(
            !self.screen().contains("left behinda new prompt"),
            "never merged:\n{}",
            self.screen()
        );
        let (code, r, err) = self.send("a new prompt", &["--clear-draft"]);
        assert!(code == 0 || code == 5, "{r} {err}\n{}", self.screen());
        assert_eq!(r["cleared_draft_bytes"], 11, "{r}");
        assert!(!self.screen().contains("left behind"), "{}", self.screen());
    }

    /// Two senders at once (an operator and a poke): both land whole, one
    /// after the other, and the second says it waited.
    async fn two_sends_at_once_both_land_whole(&self) {
        let a = self.f.fleetctl_spawn(&[
            "send",
            self.name,
            "first of two together",
            "--verify",
            "--json",
        ]);
        let b = self.f.fleetctl_spawn(&[
            "send",
            self.name,
            "second of two together",
            "--verify",
            "--json",
        ]);
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let ra: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap_or_default();
        let rb: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap_or_default();
        for (out, r) in [(&a, &ra), (&b, &rb)] {
            assert!(
                matches!(out.status.code(), Some(0 | 5)),
                "{r} {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.screen()
            );
        }
        let waited = [&ra, &rb]
            .iter()
            .filter(|r| r["queued_ms"].as_u64().unwrap_or(0) > 0)
            .count();
        assert!(waited >= 1, "one of them waited its turn: {ra} {rb}");
        let s = self.screen();
        assert!(
            !s.contains("first of two togethersecond")
                && !s.contains("second of two togetherfirst"),
            "interleaved:\n{s}"
        );
    }
}

// === the runtimes ===

fn seed_nothing(_: &Path, _: &Path) {}

const CLAUDE_KEY: &str = "sk-ant-api03-fleet-offline-dummy-key-0123456789abcdef";

fn seed_claude(home: &Path, project: &Path) {
    let tail: String = CLAUDE_KEY[CLAUDE_KEY.len() - 20..].to_owned();
    let cfg = serde_json::json!({
        "hasCompletedOnboarding": true,
        "theme": "dark",
        "numStartups": 5,
        "projects": { project.display().to_string(): {
            "hasTrustDialogAccepted": true,
            "hasCompletedProjectOnboarding": true,
            "allowedTools": []
        }},
        "customApiKeyResponses": { "approved": [tail], "rejected": [] }
    });
    std::fs::write(home.join(".claude.json"), cfg.to_string()).unwrap();
}

fn seed_codex(home: &Path, project: &Path) {
    let dir = home.join(".codex");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "check_for_update_on_startup = false\nforced_login_method = \"api\"\ncli_auth_credentials_store = \"file\"\n[projects.\"{}\"]\ntrust_level = \"trusted\"\n",
            project.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("auth.json"),
        r#"{"auth_mode":"apikey","OPENAI_API_KEY":"sk-fleet-offline-dummy-0123456789"}"#,
    )
    .unwrap();
}

/// opencode installs its plugin dependency into every config dir it scans
/// unless one is there (a 70 s stall offline): the throw-away HOME's
/// config dir gets the empty `node_modules/` and lock file a networked
/// machine would have after its first start.
fn seed_opencode(home: &Path, _project: &Path) {
    let dir = home.join(".config/opencode");
    std::fs::create_dir_all(dir.join("node_modules")).unwrap();
    std::fs::write(
        dir.join("package-lock.json"),
        r#"{"name":"opencode-config","lockfileVersion":3,"requires":true,"packages":{"":{"dependencies":{"@opencode-ai/plugin":"*"}}}}"#,
    )
    .unwrap();
}

const PI: Runtime = Runtime {
    agent: "pi0",
    runtime: "pi",
    args: "--offline --provider anthropic --model claude-sonnet-4-5",
    env: "      ANTHROPIC_API_KEY: sk-ant-dummy\n",
    seed: seed_nothing,
};

const OPENCODE: Runtime = Runtime {
    agent: "oc0",
    runtime: "opencode",
    args: "-m anthropic/claude-sonnet-4-5",
    env: "      ANTHROPIC_API_KEY: sk-ant-dummy\n      OPENCODE_DISABLE_MODELS_FETCH: \"1\"\n      OPENCODE_DISABLE_AUTOUPDATE: \"1\"\n",
    seed: seed_opencode,
};

const CLAUDE: Runtime = Runtime {
    agent: "cc0",
    runtime: "claude",
    args: "",
    env: "      ANTHROPIC_API_KEY: sk-ant-api03-fleet-offline-dummy-key-0123456789abcdef\n      DISABLE_AUTOUPDATER: \"1\"\n      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: \"1\"\n      CLAUDE_CODE_MAX_RETRIES: \"1\"\n",
    seed: seed_claude,
};

const CODEX: Runtime = Runtime {
    agent: "cx0",
    runtime: "codex",
    args: "",
    env: "      CODEX_HOME: __HOME__/.codex\n",
    seed: seed_codex,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pi_reports_turns_and_model_natively_and_queues_a_steer() {
    let b = start(&PI, true).await;
    let idle = b.ready().await;
    assert_eq!(status(&idle).1, StatusSource::Native, "{idle:?}");
    assert_eq!(idle.model, "anthropic/claude-sonnet-4-5", "{idle:?}");
    assert_eq!(idle.model_source, "self-reported");
    b.first_prompt_is_acknowledged_and_busy(true).await;
    // While pi retries the failing turn, Enter steers: queued.
    let (code, r, err) = b.send("and steer this way", &[]);
    assert_eq!(code, 5, "{r} {err}\n{}", b.screen());
    assert!(r["detail"].as_str().unwrap().contains("Steering"), "{r}");
    // The steer is not a new turn.
    let row = b.f.agents().await;
    assert_eq!(hb(&row[0]).turn, Some(1), "{:?}", row[0]);
    // Esc ends it; pi reports the aborted turn itself.
    b.f.tmux(&["send-keys", "-t", "=pi0:", "Escape"]);
    b.wait_status("idle after Esc", Duration::from_secs(25), |s, _, _| {
        s == AgentStatus::Ok
    })
    .await;
    // pi puts a steered prompt back in the box on Esc: a stale draft.
    if b.screen().contains("and steer this way") {
        let (code, _, err) = b.send("next", &[]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("already holds"), "{err}");
        b.f.tmux(&["send-keys", "-t", "=pi0:", "C-c"]);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    b.stale_draft_is_refused_then_cleared().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opencode_reports_its_prompt_and_model_and_queues_behind_a_turn() {
    let b = start(&OPENCODE, true).await;
    b.ready().await;
    let busy = b.first_prompt_is_acknowledged_and_busy(true).await;
    assert_eq!(busy.model, "claude-sonnet-4-5", "{busy:?}");
    assert_eq!(busy.model_source, "self-reported");
    // An offline connection error retries forever: a second prompt queues.
    let (code, r, err) = b.send("a queued follow-up", &[]);
    assert_eq!(code, 5, "{r} {err}\n{}", b.screen());
    // Esc Esc interrupts; opencode reports session.idle.
    b.f.tmux(&["send-keys", "-t", "=oc0:", "Escape"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.f.tmux(&["send-keys", "-t", "=oc0:", "Escape"]);
    b.wait_status("idle after Esc Esc", Duration::from_secs(15), |s, _, _| {
        s == AgentStatus::Ok
    })
    .await;
    b.stale_draft_is_refused_then_cleared().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_reports_natively_and_an_unreported_interrupt_is_observed() {
    let b = start(&CLAUDE, true).await;
    let idle = b.ready().await;
    assert_eq!(
        status(&idle).1,
        StatusSource::Native,
        "SessionStart: {idle:?}"
    );
    assert!(idle.model.starts_with("claude-"), "{idle:?}");
    assert_eq!(idle.model_source, "self-reported");
    b.first_prompt_is_acknowledged_and_busy(true).await;
    let (code, r, err) = b.send("and a follow-up", &[]);
    assert_eq!(code, 5, "{r} {err}\n{}", b.screen());
    // Esc fires no hook: the screen brings the status back.
    b.f.tmux(&["send-keys", "-t", "=cc0:", "Escape"]);
    let row = b
        .wait_status("idle after Esc", Duration::from_secs(20), |s, _, _| {
            s == AgentStatus::Ok
        })
        .await;
    let _ = row;
    // Claude Code restores an interrupted prompt into its box.
    if !b.screen().lines().any(|l| l.trim() == "❯") {
        let (code, _, err) = b.send("next", &[]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("already holds"), "{err}");
        let (code, r, err) = b.send("next", &["--clear-draft"]);
        assert!(code == 0 || code == 5, "{r} {err}\n{}", b.screen());
        b.f.tmux(&["send-keys", "-t", "=cc0:", "Escape"]);
        b.wait_status("idle", Duration::from_secs(20), |s, _, _| {
            s == AgentStatus::Ok
        })
        .await;
        b.wait_screen("an empty box", Duration::from_secs(10), |s| {
            s.lines().any(|l| l.trim() == "❯")
        })
        .await;
    }
    b.stale_draft_is_refused_then_cleared().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_in_an_untrusted_folder_is_waiting_for_a_human() {
    let b = start(&CLAUDE, false).await;
    let row = b
        .wait_status("waiting", Duration::from_secs(90), |s, _, _| {
            s == AgentStatus::Waiting
        })
        .await;
    assert!(
        hb(&row).status_detail.contains("trust"),
        "{:?}\n{}",
        hb(&row),
        b.screen()
    );
    b.f.wait_event("waiting-for-human", |e| {
        e.kind == "waiting-for-human" && e.agent == "cc0"
    })
    .await;
    // A send would answer the dialog: refused.
    let (code, _, err) = b.send("yes", &[]);
    assert_eq!(code, 1);
    assert!(err.contains("asking a human"), "{err}");
    let _ = &b.project;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_reports_its_turn_and_model_and_a_steer_is_the_same_turn() {
    let b = start(&CODEX, true).await;
    b.wait_screen("the input box", Duration::from_secs(90), |s| {
        s.contains("› ")
    })
    .await;
    b.ready().await;
    let busy = b.first_prompt_is_acknowledged_and_busy(true).await;
    assert!(
        !busy.model.is_empty() && busy.model_source == "self-reported",
        "{busy:?}"
    );
    let turn = hb(&busy).turn;
    // Codex steers a prompt into the running turn: the same turn_id.
    let (code, r, err) = b.send("one more thing", &[]);
    assert!(code == 0 || code == 5, "{r} {err}\n{}", b.screen());
    let row = b.f.agents().await;
    assert_eq!(hb(&row[0]).turn, turn, "{:?}", row[0]);
    // Esc: Codex reports the interrupt.
    b.f.tmux(&["send-keys", "-t", "=cx0:", "Escape"]);
    b.wait_status("idle after Esc", Duration::from_secs(20), |s, _, _| {
        s == AgentStatus::Ok
    })
    .await;
    b.two_sends_at_once_both_land_whole().await;
}
