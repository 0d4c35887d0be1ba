//! What a pane is really running, from /proc: the foreground process
//! group of its tty, skipping a wrapping shell (DESIGN §4).

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    pub pgrp: u32,
    pub tpgid: i32,
    pub state: char,
    pub comm: String,
    pub name: String,
    pub cmdline: String,
}

pub fn read(pid: u32) -> Option<ProcInfo> {
    // `stat` and `cmdline` are two reads: a process that execs between them
    // (a launcher, a shim) would pair one program's comm with another's
    // arguments. Read until `stat` says the same program before and after.
    let mut attempt = 0;
    let (stat, raw) = loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let again = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        attempt += 1;
        if comm_of(&stat) == comm_of(&again) || attempt == 3 {
            break (again, raw);
        }
    };
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let state = rest.first()?.chars().next()?;
    let ppid = rest.get(1)?.parse().ok()?;
    let pgrp = rest.get(2)?.parse().ok()?;
    let tpgid = rest.get(5)?.parse().ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let name = args
        .first()
        .and_then(|a| a.rsplit('/').next())
        .map(str::to_owned)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| comm.clone());
    let mut cmdline = args.join(" ");
    if cmdline.len() > 512 {
        let mut cut = 512;
        while !cmdline.is_char_boundary(cut) {
            cut -= 1;
        }
        cmdline.truncate(cut);
    }
    Some(ProcInfo {
        pid,
        ppid,
        pgrp,
        tpgid,
        state,
        comm,
        name,
        cmdline,
    })
}

/// The `(comm)` field of a `/proc/<pid>/stat` line.
fn comm_of(stat: &str) -> Option<&str> {
    stat.get(stat.find('(')? + 1..stat.rfind(')')?)
}

/// State and parent of a live pid, from `/proc/<pid>/stat` alone.
fn state_and_parent(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    Some((state, f.next()?.parse().ok()?))
}

/// Whether `pid` runs and is `ancestor` or one of its descendants (the
/// parent chain is followed at most 64 steps).
pub fn runs_under(pid: u32, ancestor: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let mut at = pid;
    for _ in 0..64 {
        let Some((state, ppid)) = state_and_parent(at) else {
            return false;
        };
        if at == pid && matches!(state, 'Z' | 'X') {
            return false;
        }
        if at == ancestor {
            return true;
        }
        if ppid <= 1 {
            return false;
        }
        at = ppid;
    }
    false
}

pub fn is_running(pid: u32) -> bool {
    read(pid).is_some_and(|p| p.state != 'Z' && p.state != 'X')
}

#[derive(Debug, Default)]
pub struct ProcTable {
    procs: BTreeMap<u32, ProcInfo>,
}

impl ProcTable {
    pub fn subtree(root: u32) -> Self {
        let mut procs = BTreeMap::new();
        let mut todo = vec![root];
        while let Some(pid) = todo.pop() {
            if procs.len() >= 256 {
                break;
            }
            let Some(info) = read(pid) else { continue };
            procs.insert(pid, info);
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
            if let Ok(tasks) = tasks {
                for t in tasks.flatten() {
                    if let Ok(children) = std::fs::read_to_string(t.path().join("children")) {
                        todo.extend(
                            children
                                .split_whitespace()
                                .filter_map(|c| c.parse::<u32>().ok()),
                        );
                    }
                }
            }
        }
        Self { procs }
    }

    pub fn get(&self, pid: u32) -> Option<&ProcInfo> {
        self.procs.get(&pid)
    }

    pub fn children(&self, pid: u32) -> impl Iterator<Item = &ProcInfo> {
        self.procs.values().filter(move |p| p.ppid == pid)
    }

    /// Every pid in the tree.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.keys().copied().collect()
    }
}

/// Ends a whole process tree that outlived its pane: SIGTERM to every pid
/// collected before the pane was killed (a runtime's detached helpers,
/// such as `codex app-server`, are reparented away from the pane and
/// survive `kill-session`), then SIGKILL to what is left after `grace`.
/// Returns how many were still running and were signalled.
pub async fn end_tree(pids: Vec<u32>, grace: std::time::Duration) -> usize {
    use rustix::process::{Pid, Signal, kill_process};
    let signal = |pid: u32, sig: Signal| {
        i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .is_some_and(|p| kill_process(p, sig).is_ok())
    };
    let alive: Vec<u32> = pids.into_iter().filter(|p| is_running(*p)).collect();
    let n = alive.iter().filter(|p| signal(**p, Signal::TERM)).count();
    let deadline = tokio::time::Instant::now() + grace;
    while alive.iter().any(|p| is_running(*p)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for p in alive.iter().filter(|p| is_running(**p)) {
        signal(*p, Signal::KILL);
    }
    n
}

pub fn is_shell(name: &str) -> bool {
    matches!(
        name,
        "bash" | "sh" | "dash" | "zsh" | "fish" | "ksh" | "tcsh" | "csh" | "ash"
    )
}

pub fn foreground(table: &ProcTable, pane_pid: u32) -> Option<ProcInfo> {
    let pane = table.get(pane_pid)?;
    let start = u32::try_from(pane.tpgid)
        .ok()
        .filter(|t| *t > 0)
        .and_then(|t| table.get(t))
        .unwrap_or(pane);
    if !is_shell(&start.name) {
        return Some(start.clone());
    }
    let mut queue = std::collections::VecDeque::from([start.pid]);
    while let Some(pid) = queue.pop_front() {
        for c in table.children(pid) {
            if !is_shell(&c.name) {
                return Some(c.clone());
            }
            queue.push_back(c.pid);
        }
    }
    Some(start.clone())
}

pub fn matches_runtime(process: &ProcInfo, expected: &[String]) -> bool {
    expected
        .iter()
        .any(|e| *e == process.name || *e == process.comm)
}
