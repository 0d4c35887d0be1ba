//! The CLI fits an operator's habits: completions and a man page from the
//! one definition, connection flags only where they apply, named contexts.
// It runs fleetctl itself, as an operator would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Output};

fn fleetctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(support::bin("fleetctl"))
        .args(args)
        .env_remove("FLEET_AGGREGATOR")
        .env_remove("FLEET_CONTEXT")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line_definition() {
    for (shell, mark) in [
        ("bash", "_fleetctl()"),
        ("zsh", "#compdef fleetctl"),
        ("fish", "complete -c fleetctl"),
    ] {
        let o = fleetctl(&["completions", shell], &[]);
        assert!(o.status.success(), "{shell}: {o:?}");
        let text = stdout(&o);
        assert!(
            text.contains(mark),
            "{shell}: {}",
            &text[..text.len().min(300)]
        );
        assert!(
            text.contains("summary") && text.contains("health"),
            "{shell}"
        );
    }
    assert_eq!(
        fleetctl(&["completions", "tcsh"], &[]).status.code(),
        Some(2)
    );
    let man = fleetctl(&["man"], &[]);
    assert!(man.status.success());
    let page = stdout(&man);
    assert!(
        page.starts_with(".ie") || page.contains(".TH fleetctl"),
        "{}",
        &page[..200]
    );
    assert!(page.contains("completions") && page.contains("dashboard"));
}

#[test]
fn connection_flags_have_their_own_heading_and_only_on_verbs_that_connect() {
    let help = |verb: &str| stdout(&fleetctl(&[verb, "--help"], &[]));
    for verb in ["ps", "events", "hosts", "send", "watch", "stop", "top"] {
        let h = help(verb);
        assert!(
            h.contains("Connection:") && h.contains("--aggregator <"),
            "{verb}: {h}"
        );
    }
    assert!(help("ps").contains("Selection:"));
    for verb in ["certs", "demo", "beat", "completions", "man", "contexts"] {
        let h = help(verb);
        assert!(
            !h.contains("--aggregator <") && !h.contains("--server-name <"),
            "{verb}: {h}"
        );
    }
    // Given before or after the verb, the same flag reaches the same place.
    for args in [
        &["--socket", "/nonexistent/hostd.sock", "ps"][..],
        &["ps", "--socket", "/nonexistent/hostd.sock"][..],
    ] {
        let o = fleetctl(args, &[]);
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/hostd.sock"));
    }
}

#[test]
fn a_named_context_is_listed_and_chosen_and_an_unknown_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleetctl.toml");
    std::fs::write(
        &file,
        "current-context = \"lab\"\n\
         [contexts.lab]\naggregator = \"127.0.0.1:1\"\nca = \"ca.pem\"\ncert = \"op.pem\"\nkey = \"op.key\"\n\
         [contexts.prod]\naggregator = \"10.0.0.5:7443\"\nca = \"/p/ca.pem\"\ncert = \"/p/op.pem\"\nkey = \"/p/op.key\"\nserver-name = \"agg.fleet\"\n",
    )
    .unwrap();
    let cfg = file.to_str().unwrap();
    let o = fleetctl(&["contexts", "--json"], &[("FLEET_CONFIG", cfg)]);
    assert!(o.status.success(), "{o:?}");
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<_> = doc["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(names, [("lab".into(), true), ("prod".into(), false)]);
    // The current context is used: its files (relative to the file's
    // directory) are read.
    let o = fleetctl(&["ps"], &[("FLEET_CONFIG", cfg)]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        ["ca.pem", "op.pem", "op.key"]
            .iter()
            .any(|f| err.contains(&dir.path().join(f).display().to_string())),
        "{err}"
    );
    // An unknown context is a usage error naming the known ones.
    let o = fleetctl(&["ps", "--context", "staging"], &[("FLEET_CONFIG", cfg)]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        err.contains("staging") && err.contains("lab, prod"),
        "{err}"
    );
    // --socket wins over the current context: hostd, not the aggregator.
    let o = fleetctl(
        &["ps", "--socket", "/nonexistent/h.sock"],
        &[("FLEET_CONFIG", cfg)],
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/h.sock"));
}
