//! House rules, checked rather than stated (rust-analyzer's tidy test):
//! every source file says what it owns in a `//!` doc; no test is ignored
//! or expects a panic (check the `Err` instead); a test file with async
//! tests never blocks its runtime in a sleep, and no test picks a port by
//! binding and releasing one (servers bind port 0 and say what they got);
//! every crate takes the
//! workspace's lints and its dependencies' versions from the workspace, so
//! each is versioned once.
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .to_owned()
}

/// Every file under the workspace's crates with extension `ext`, `target/`
/// and hidden directories left out.
fn files(ext: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "target" || name == "node_modules" {
                continue;
            }
            if p.is_dir() {
                walk(&p, ext, out);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for c in [
        "proto",
        "net",
        "hostd",
        "aggregator",
        "cli",
        "bench",
        "testkit",
    ] {
        walk(&root().join(c), ext, &mut out);
    }
    out.sort();
    out
}

#[test]
fn every_source_file_opens_with_a_doc_saying_what_it_owns() {
    let missing: Vec<String> = files("rs")
        .into_iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(missing.len() < files("rs").len(), "no files found");
    assert!(missing.is_empty(), "no `//!` module doc: {missing:#?}");
}

#[test]
fn no_test_is_ignored_or_expects_a_panic() {
    // Spelled in two parts so this file does not find itself.
    let banned = [concat!("#[", "ignore"), concat!("#[", "should_panic")];
    let mut hits = Vec::new();
    for p in files("rs") {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if banned.iter().any(|b| line.contains(b)) {
                hits.push(format!("{}:{}: {}", p.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(hits.is_empty(), "{hits:#?}");
}

#[test]
fn async_tests_never_sleep_the_thread_and_no_test_races_for_a_port() {
    // Spelled in parts so this file does not find itself.
    let blocking = concat!("thread::", "sleep");
    let racing = concat!("fn free_", "port");
    let mut hits = Vec::new();
    let mut seen = 0;
    for p in files("rs") {
        if !p.components().any(|c| c.as_os_str() == "tests") {
            continue;
        }
        seen += 1;
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let is_async = text.contains("async fn");
        for (n, line) in text.lines().enumerate() {
            if (is_async && line.contains(blocking)) || line.contains(racing) {
                hits.push(format!("{}:{}: {}", p.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(seen > 10, "no test files found");
    assert!(
        hits.is_empty(),
        "wait with fleet_testkit::eventually (a deadline, never a thread sleep in async code), and let servers bind port 0: {hits:#?}"
    );
}

#[test]
fn every_crate_takes_the_workspace_lints_and_versions() {
    let mut bad = Vec::new();
    for p in files("toml")
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "Cargo.toml"))
    {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let doc: toml::Table = text.parse().expect("a Cargo.toml parses");
        if doc.get("lints").and_then(|l| l.get("workspace")) != Some(&toml::Value::Boolean(true)) {
            bad.push(format!("{}: no `[lints] workspace = true`", p.display()));
        }
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let Some(deps) = doc.get(section).and_then(|d| d.as_table()) else {
                continue;
            };
            for (name, spec) in deps {
                let inherited = spec.get("workspace") == Some(&toml::Value::Boolean(true));
                if !inherited {
                    bad.push(format!(
                        "{}: {section}.{name} is versioned here, not in [workspace.dependencies]",
                        p.display()
                    ));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}
