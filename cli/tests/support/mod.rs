//! A real single-host fleet for tests: the real `fleet-hostd` binary on a
//! throw-away tmux socket, socket and heartbeat files in a temp dir, and a
//! client. Everything is torn down on drop.
// Tests run real programs (tmux included) as a person would.
#![allow(clippy::disallowed_methods)]
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use fleet_proto::v1::fleet_client::FleetClient;
use fleet_proto::v1::{AgentRow, Event, EventsRequest, ListAgentsRequest};
use tonic::transport::Channel;

pub mod fed;
pub mod prom;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Directory holding the workspace binaries (fleetctl, fleet-hostd, fleet-demo-agent).
pub fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fleetctl"))
        .parent()
        .unwrap()
        .to_owned()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built (cargo build --workspace)",
        p.display()
    );
    p
}

pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub run_dir: PathBuf,
    pub roster: PathBuf,
    pub config: PathBuf,
    pub tmux_socket: String,
    pub hostd: Option<Child>,
    /// Extra environment for hostd.
    pub env: Vec<(String, String)>,
    /// Run hostd (and so its tmux server and every agent) with networking
    /// cut to nothing but its own loopback (`unshare -n`): real runtimes
    /// start, and every model call fails at once.
    pub offline: bool,
}

impl Fleet {
    /// A fleet for `roster` (YAML). `extra_config` is appended to hostd.toml.
    pub fn new(roster: &str, extra_config: &str) -> Self {
        Self::with_identity("acme", "box1", roster, extra_config)
    }

    /// A fleet publishing as `tenant`/`host`.
    pub fn with_identity(tenant: &str, host: &str, roster: &str, extra_config: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("fleet-t")
            .tempdir()
            .unwrap();
        Self::in_dir(dir, tenant, host, roster, extra_config)
    }

    /// A fleet whose files live under `parent` (not /tmp: gemini-cli reads
    /// a settings file only if no directory above it is world-writable).
    pub fn under(parent: &Path, roster: &str, extra_config: &str) -> Self {
        std::fs::create_dir_all(parent).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("fleet-t")
            .tempdir_in(parent)
            .unwrap();
        Self::in_dir(dir, "acme", "box1", roster, extra_config)
    }

    fn in_dir(
        dir: tempfile::TempDir,
        tenant: &str,
        host: &str,
        roster: &str,
        extra_config: &str,
    ) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tmux_socket = format!("fleet-test-{}-{n}", std::process::id());
        let socket = dir.path().join("hostd.sock");
        let run_dir = dir.path().join("run");
        let roster_path = dir.path().join("roster.yaml");
        std::fs::write(&roster_path, roster).unwrap();
        let config = dir.path().join("hostd.toml");
        std::fs::write(
            &config,
            format!(
                "tenant = \"{tenant}\"\nhost = \"{host}\"\nroster = \"{}\"\nrun_dir = \"{}\"\nsocket = \"{}\"\ntmux_socket = \"{tmux_socket}\"\ntick_ms = 50\nlog = \"info,fleet_hostd=debug\"\n{}{extra_config}\n{}",
                roster_path.display(),
                run_dir.display(),
                socket.display(),
                // Tests of dead panes want them to stay dead; supervision
                // tests switch it on.
                if extra_config.contains("supervise") { "" } else { "supervise = false\n" },
                if extra_config.contains("[systemd]") { "" } else { "[systemd]\nprobe = false\n" },
            ),
        )
        .unwrap();
        Self {
            dir,
            socket,
            run_dir,
            roster: roster_path,
            config,
            tmux_socket,
            hostd: None,
            env: Vec::new(),
            offline: false,
        }
    }

    pub fn hostd_command(&self) -> Command {
        let mut c = if self.offline {
            let mut c = Command::new("unshare");
            c.arg("-n").arg(bin("fleet-hostd"));
            c
        } else {
            Command::new(bin("fleet-hostd"))
        };
        c.arg("--config").arg(&self.config);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Starts hostd and waits (bounded) until its socket answers.
    pub async fn start(&mut self) -> &mut Self {
        assert!(self.hostd.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("hostd.log"))
            .unwrap();
        let child = self
            .hostd_command()
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.hostd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.hostd.as_mut().unwrap().try_wait().unwrap() {
                panic!("hostd exited early ({status}):\n{}", self.log());
            }
            let ok = match fleetctl::client::connect(&self.socket).await {
                Ok(mut c) => c.list_agents(ListAgentsRequest::default()).await.is_ok(),
                Err(_) => false,
            };
            if ok {
                return self;
            }
            assert!(
                Instant::now() < deadline,
                "hostd not ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hostd.log")).unwrap_or_default()
    }

    pub fn hostd_pid(&self) -> u32 {
        self.hostd.as_ref().unwrap().id()
    }

    /// SIGKILL: hostd gets no chance to clean up.
    pub fn kill_hostd(&mut self) {
        if let Some(mut c) = self.hostd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal_hostd(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.hostd_pid() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    pub async fn client(&self) -> FleetClient<Channel> {
        fleetctl::client::connect(&self.socket).await.unwrap()
    }

    pub async fn agents(&self) -> Vec<AgentRow> {
        self.client()
            .await
            .list_agents(ListAgentsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .agents
    }

    /// Polls the table until `pred` holds; panics with the last table and
    /// hostd's log at the deadline.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[AgentRow]) -> bool,
    ) -> Vec<AgentRow> {
        let deadline = Instant::now() + timeout;
        let mut client = self.client().await;
        loop {
            let agents = client
                .list_agents(ListAgentsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .agents;
            if pred(&agents) {
                return agents;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; table: {agents:#?}\nlog:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn events(&self) -> Vec<Event> {
        let mut s = self
            .client()
            .await
            .events(EventsRequest {
                follow: false,
                after_seq: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(e) = s.message().await.unwrap() {
            out.push(e);
        }
        out
    }

    pub async fn wait_event(&self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let evs = self.events().await;
            if let Some(e) = evs.iter().find(|e| pred(e)) {
                return e.clone();
            }
            if Instant::now() > deadline {
                panic!("no event {what}; events: {evs:#?}\nlog:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.tmux_socket)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn fleetctl(&self, args: &[&str]) -> Output {
        Command::new(bin("fleetctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("FLEET_SOCKET")
            .output()
            .unwrap()
    }

    /// Starts `fleetctl` without waiting for it (concurrent clients).
    pub fn fleetctl_spawn(&self, args: &[&str]) -> Child {
        Command::new(bin("fleetctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("FLEET_SOCKET")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn hb_path(&self, agent: &str) -> PathBuf {
        self.run_dir.join(format!("{agent}.hb"))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.kill_hostd();
        // Some runtimes outlive a killed tmux server (gemini-cli's node
        // child ignores the hangup): end every pane's tree too.
        let panes = Command::new("tmux")
            .args([
                "-L",
                &self.tmux_socket,
                "list-panes",
                "-a",
                "-F",
                "#{pane_pid}",
            ])
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let tree: Vec<u32> = panes
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .flat_map(descendants)
            .collect();
        let _ = Command::new("tmux")
            .arg("-L")
            .arg(&self.tmux_socket)
            .arg("kill-server")
            .stderr(Stdio::null())
            .status();
        for pid in tree {
            if let Some(p) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
    }
}

/// `pid` and every process below it.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                all.extend(
                    kids.split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    all
}

/// Runs `c` and asserts it succeeded, showing its stderr if not.
pub fn run_ok(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        c.get_program(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The one wait with a deadline (not every test binary uses it).
#[allow(unused_imports)]
pub use fleet_testkit::eventually;

pub fn row<'a>(agents: &'a [AgentRow], name: &str) -> &'a AgentRow {
    agents
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no row {name} in {agents:#?}"))
}

pub fn find<'a>(agents: &'a [AgentRow], name: &str) -> Option<&'a AgentRow> {
    agents.iter().find(|a| a.name == name)
}

pub fn demo_agent_path() -> PathBuf {
    bin("fleet-demo-agent")
}

pub fn path_of(p: &Path) -> String {
    p.display().to_string()
}

/// Sends `sig` to `pid` (a pane's process, in tests).
pub fn kill(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

/// A small real filesystem (tmpfs, 0700) mounted at a test's directory,
/// unmounted on drop: a full disk without filling the machine's.
pub struct Tmpfs(pub std::path::PathBuf);

impl Tmpfs {
    pub fn mount(at: &std::path::Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test needs to mount a tmpfs (root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(at.to_owned())
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
