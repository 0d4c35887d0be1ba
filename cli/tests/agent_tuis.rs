//! `send --verify` against real agent TUIs — Claude Code and Codex from the
//! npm registry (`deploy/agents/setup.sh`) — offline, with a dummy API key
//! and their onboarding pre-seeded in a throw-away HOME. No model request
//! can succeed here; acceptance is about the prompt leaving the input box.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleet_proto::v1::PaneState;
use support::Fleet;

fn agents_bin(name: &str) -> PathBuf {
    let prefix =
        std::env::var("FLEET_AGENTS_PREFIX").unwrap_or_else(|_| "/opt/fleet-agents".into());
    let p = PathBuf::from(prefix).join("node_modules/.bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run deploy/agents/setup.sh (deploy/test.sh and .ci/run do)",
        p.display()
    );
    p
}

const CLAUDE_KEY: &str = "sk-ant-api03-fleet-offline-dummy-key-0123456789abcdef";

/// A HOME in which Claude Code starts straight at its input box.
fn seed_claude(home: &Path, project: &Path) {
    let tail: String = CLAUDE_KEY
        .chars()
        .rev()
        .take(20)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
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

/// A HOME in which Codex starts at its input box: an API-key login in
/// auth.json and the project trusted. (An OPENAI_API_KEY variable would
/// bring the sign-in screen back.)
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

fn screen(f: &Fleet, name: &str) -> String {
    String::from_utf8_lossy(
        &f.tmux(&["capture-pane", "-p", "-t", &format!("={name}:")])
            .stdout,
    )
    .into_owned()
}

async fn wait_screen(
    f: &Fleet,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let s = screen(f, name);
        if pred(&s) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {what} never showed:\n{s}\nlog:\n{}",
            f.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn send(f: &Fleet, agent: &str, text: &str) -> (i32, serde_json::Value) {
    let out = f.fleetctl(&["send", agent, text, "--verify", "--json"]);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no receipt: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), v)
}

async fn fleet_with(
    name: &str,
    runtime: &str,
    home_env: &str,
    seed: fn(&Path, &Path),
) -> (Fleet, tempfile::TempDir) {
    let scratch = tempfile::tempdir().unwrap();
    let home = scratch.path().join("home");
    let project = scratch.path().join("project");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&project).unwrap();
    seed(&home, &project);
    let roster = format!(
        "version: 1\ntransport: tmux\nagents:\n  - name: {name}\n    runtime: {runtime}\n    command: {bin}\n    workdir: {project}\n    env:\n      HOME: {home}\n{home_env}",
        bin = agents_bin(runtime).display(),
        project = project.display(),
        home = home.display(),
        home_env = home_env.replace("__HOME__", &home.display().to_string()),
    );
    let mut f = Fleet::new(&roster, "");
    f.start().await;
    f.wait_for("TUI running", Duration::from_secs(30), |a| {
        a.len() == 1 && a[0].pane == PaneState::Alive as i32 && a[0].process.is_some()
    })
    .await;
    (f, scratch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_accepts_then_queues_behind_a_running_turn() {
    let env = format!(
        "      ANTHROPIC_API_KEY: {CLAUDE_KEY}\n      DISABLE_AUTOUPDATER: \"1\"\n      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: \"1\"\n"
    );
    let (f, _scratch) = fleet_with("cc", "claude", &env, seed_claude).await;
    wait_screen(&f, "cc", "the input box", Duration::from_secs(60), |s| {
        s.lines().any(|l| l.trim_start().starts_with('❯')) && s.contains("for shortcuts")
    })
    .await;
    let agents = f.agents().await;
    assert!(
        !agents[0].flags.contains(&"drift".to_owned()),
        "claude runs as claude/node: {:?}",
        agents[0].process
    );

    let (code, r) = send(&f, "cc", "say hello to the fleet");
    assert_eq!(code, 0, "{r}\n{}", screen(&f, "cc"));
    assert_eq!(r["verdict"], "accepted");
    assert_eq!(r["evidence"], "screen");
    assert_eq!(r["bracketed_paste"], "yes");
    // The API is unreachable, so the turn keeps retrying: a busy agent.
    let (code, r) = send(&f, "cc", "and a follow-up");
    assert_eq!(code, 5, "{r}\n{}", screen(&f, "cc"));
    assert_eq!(r["verdict"], "queued");
    assert!(screen(&f, "cc").contains("queued"), "{}", screen(&f, "cc"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_accepts_a_prompt_and_takes_one_while_busy() {
    let (f, _scratch) = fleet_with(
        "cx",
        "codex",
        "      CODEX_HOME: __HOME__/.codex\n",
        seed_codex,
    )
    .await;
    wait_screen(&f, "cx", "the input box", Duration::from_secs(60), |s| {
        s.contains("› ")
    })
    .await;
    let (code, r) = send(&f, "cx", "say hello to the fleet");
    // Codex may still be starting its session and queue the very first
    // prompt ("Queued follow-up inputs"); both mean it took the prompt.
    assert!(code == 0 || code == 5, "{r}\n{}", screen(&f, "cx"));
    wait_screen(
        &f,
        "cx",
        "the prompt in the transcript",
        Duration::from_secs(20),
        |s| s.contains("› say hello to the fleet"),
    )
    .await;
    // While the turn runs (it cannot reach the API), Codex 0.169 steers an
    // Enter into the running turn: the text leaves the box at once.
    wait_screen(&f, "cx", "a running turn", Duration::from_secs(20), |s| {
        s.contains("esc to interrupt")
    })
    .await;
    let (code, r) = send(&f, "cx", "one more thing");
    assert!(code == 0 || code == 5, "{r}\n{}", screen(&f, "cx"));
    assert!(
        r["verdict"] == "accepted" || r["verdict"] == "queued",
        "{r}"
    );
}
