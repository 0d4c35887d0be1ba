//! /proc inspection against real processes and real tmux panes.
// Tests run real programs (tmux included) as a person would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use fleet_hostd::proc::{self, ProcTable};

/// A child in its own process group, killed with the whole group on drop.
struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        if let Some(pg) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process_group(pg, rustix::process::Signal::KILL);
        }
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &str) -> Kill {
    use std::os::unix::process::CommandExt;
    Kill(
        Command::new("sh")
            .args(["-c", cmd])
            .process_group(0)
            .spawn()
            .unwrap(),
    )
}

fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    fleet_testkit::eventually_blocking(what, Duration::from_secs(15), || {
        f().ok_or_else(|| "not yet".to_owned())
    })
}

#[test]
fn a_wrapping_shell_is_skipped() {
    let c = spawn("sleep 30; true");
    let pid = c.0.id();
    let fg = poll("sleep child", || {
        let fg = proc::foreground(&ProcTable::subtree(pid), pid)?;
        // comm changes early in exec, argv a moment later: wait for both.
        (fg.name == "sleep" && !fg.cmdline.is_empty()).then_some(fg)
    });
    assert_ne!(fg.pid, pid);
    let exec = spawn("exec sleep 31");
    let pid = exec.0.id();
    let fg = poll("exec'd sleep", || {
        let fg = proc::foreground(&ProcTable::subtree(pid), pid)?;
        // comm changes early in exec, argv a moment later: wait for both.
        (fg.name == "sleep" && !fg.cmdline.is_empty()).then_some(fg)
    });
    assert_eq!(fg.pid, pid, "exec: the process itself");
}

#[test]
fn zombies_are_not_running() {
    let mut c = Command::new("true").stdout(Stdio::null()).spawn().unwrap();
    let pid = c.id();
    // Not waited for yet: it becomes a zombie once it exits.
    poll("zombie", || (proc::read(pid)?.state == 'Z').then_some(()));
    assert!(!proc::is_running(pid));
    c.wait().unwrap();
    assert!(proc::read(pid).is_none());
    assert!(proc::is_running(std::process::id()));
}

#[test]
fn names_are_not_truncated_like_comm() {
    let me = proc::read(std::process::id()).unwrap();
    assert!(!me.name.is_empty());
    assert!(me.comm.len() <= 15);
    assert!(proc::matches_runtime(&me, std::slice::from_ref(&me.name)));
    assert!(!proc::matches_runtime(&me, &["definitely-not".into()]));
}

struct Tmux(String);
impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn the_foreground_job_of_an_interactive_shell_is_found() {
    let t = Tmux(format!("fleet-proc-{}", std::process::id()));
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-L")
            .arg(&t.0)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(
        tmux(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "t",
            "bash --norc --noprofile -i"
        ])
        .status
        .success()
    );
    let pid: u32 = String::from_utf8(tmux(&["display", "-p", "-t", "=t:", "#{pane_pid}"]).stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    poll("bash at its prompt", || {
        let fg = proc::foreground(&ProcTable::subtree(pid), pid)?;
        (fg.name == "bash").then_some(())
    });
    // Type only once bash has drawn its prompt (it reads the line then).
    poll("a prompt", || {
        let screen = String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", "=t:"]).stdout)
            .into_owned();
        screen
            .lines()
            .any(|l| l.trim_end().ends_with(['$', '#']))
            .then_some(())
    });
    tmux(&["send-keys", "-t", "=t:", "sleep 77", "Enter"]);
    let fg = poll("sleep in the foreground", || {
        let fg = proc::foreground(&ProcTable::subtree(pid), pid)?;
        // comm changes early in exec, argv a moment later: wait for both.
        (fg.name == "sleep" && !fg.cmdline.is_empty()).then_some(fg)
    });
    assert!(fg.cmdline.contains("sleep 77"));
    assert!(proc::is_shell("bash") && proc::is_shell("sh") && !proc::is_shell("node"));
}

#[test]
fn a_pid_runs_under_its_ancestors_only_while_it_lives() {
    let parent = spawn("sleep 30 & wait");
    let root = parent.0.id();
    let child = poll("the sleep child", || {
        ProcTable::subtree(root)
            .pids()
            .into_iter()
            .find(|p| *p != root)
    });
    assert!(proc::runs_under(root, root), "a pid is its own lineage");
    assert!(proc::runs_under(child, root));
    assert!(
        !proc::runs_under(root, child),
        "a parent is not a descendant"
    );
    assert!(
        !proc::runs_under(std::process::id(), root),
        "a stranger is not"
    );
    assert!(!proc::runs_under(0, root));
    drop(parent);
    poll("the tree ends", || {
        (!proc::runs_under(child, root)).then_some(())
    });
}
