//! A real federated fleet for tests: a development CA and certificates made
//! with `fleetctl certs`, the real `fleet-aggregator` binary on a loopback
//! port, and real hostds (each with its own tenant/host certificate and tmux
//! socket) linked to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{Fleet, bin};

pub const TD: &str = "fleet.test";

/// Two demo agents (coder0, worker) beating every second.
pub const ROSTER_BOX1: &str = "\
version: 1
transport: tmux
agents:
  - name: coder0
    runtime: demo
    command: fleet-demo-agent
    heartbeat_interval_secs: 1
  - name: worker
    runtime: demo
    command: fleet-demo-agent
    heartbeat_interval_secs: 1
";

/// The PKI of one test.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Self {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        certs(&dir, &["init", "--trust-domain", TD]);
        certs(
            &dir,
            &[
                "issue",
                "aggregator",
                "--ip",
                "127.0.0.1",
                "--dns",
                "localhost",
            ],
        );
        Self { dir }
    }

    pub fn host(&self, tenant: &str, host: &str) -> (PathBuf, PathBuf) {
        certs(
            &self.dir,
            &["issue", "host", "--tenant", tenant, "--host", host],
        );
        self.pair(&format!("host-{tenant}-{host}"))
    }

    pub fn operator(&self, name: &str) -> (PathBuf, PathBuf) {
        certs(&self.dir, &["issue", "operator", "--name", name]);
        self.pair(&format!("operator-{name}"))
    }

    pub fn pair(&self, stem: &str) -> (PathBuf, PathBuf) {
        let pair = (
            self.dir.join(format!("{stem}.pem")),
            self.dir.join(format!("{stem}.key")),
        );
        assert!(pair.0.exists() && pair.1.exists(), "{stem} not issued");
        pair
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

fn certs(dir: &Path, args: &[&str]) {
    let (first, rest) = args.split_first().unwrap();
    let mut c = Command::new(bin("fleetctl"));
    c.arg("certs").arg(first).arg("--dir").arg(dir).args(rest);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "fleetctl certs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Aggregator {
    pub dir: PathBuf,
    /// The port it bound (0 until the first start: it binds port 0 and
    /// says which port it got; restarts reuse that one).
    pub port: u16,
    pub config: PathBuf,
    pub authz: PathBuf,
    pub audit: PathBuf,
    pub child: Option<Child>,
    /// Extra environment for the aggregator.
    pub env: Vec<(String, String)>,
    /// Where it serves metrics, when `metrics_listen` is set (from its
    /// readiness notice).
    pub metrics: Option<std::net::SocketAddr>,
}

impl Aggregator {
    /// Writes the config (`extra` appended before the [tls] table) and the
    /// grants file.
    pub fn new(dir: &Path, pki: &Pki, grants: &str, extra: &str) -> Self {
        let dir = dir.join("aggregator");
        std::fs::create_dir_all(&dir).unwrap();
        let authz = dir.join("authz.toml");
        std::fs::write(&authz, grants).unwrap();
        let audit = dir.join("audit.jsonl");
        let (cert, key) = pki.pair("aggregator");
        let config = dir.join("aggregator.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nname = \"agg-test\"\ntrust_domain = \"{TD}\"\nauthz = \"{}\"\naudit_log = \"{}\"\nbeat_secs = 0.5\nlease_secs = 3\nreload_secs = 0.2\nlog = \"info,fleet_aggregator=debug\"\n{extra}\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                authz.display(),
                audit.display(),
                pki.ca().display(),
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        Self {
            dir,
            port: 0,
            config,
            authz,
            audit,
            child: None,
            env: Vec::new(),
            metrics: None,
        }
    }

    /// The durable history beside the audit log.
    pub fn history_db(&self) -> PathBuf {
        self.dir.join("history.db")
    }

    pub fn address(&self) -> String {
        assert_ne!(
            self.port, 0,
            "start the aggregator first: it picks its port"
        );
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the binary and waits for its readiness notice (the systemd
    /// protocol: `READY=1` with `STATUS=serving on ADDR` on a datagram
    /// socket of ours), which names the port it bound. The first start
    /// binds port 0; the port it got is then written into the config, so a
    /// restart serves the same address.
    pub fn start(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("aggregator.log"))
            .unwrap();
        let notify = self.dir.join("notify.sock");
        let _ = std::fs::remove_file(&notify);
        let ready = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
        ready
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let child = Command::new(bin("fleet-aggregator"))
            .arg("--config")
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("NOTIFY_SOCKET", &notify)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        let addr = loop {
            if let Ok(n) = ready.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.lines().any(|l| l == "READY=1") {
                    let status = msg
                        .lines()
                        .find_map(|l| l.strip_prefix("STATUS=serving on "))
                        .unwrap_or_else(|| panic!("READY without an address: {msg:?}"));
                    // `serving on ADDR[; metrics on ADDR]`
                    let mut parts = status.split("; metrics on ");
                    let addr = parts.next().unwrap();
                    self.metrics = parts.next().map(|m| m.parse().unwrap());
                    break addr.parse::<std::net::SocketAddr>().unwrap();
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("aggregator exited early ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "aggregator never said it was ready:\n{}",
                self.log()
            );
        };
        let _ = std::fs::remove_file(&notify);
        if self.port == 0 {
            self.port = addr.port();
            let text = std::fs::read_to_string(&self.config).unwrap();
            let pinned = text.replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{}\"", self.port),
                1,
            );
            std::fs::write(&self.config, pinned).unwrap();
        }
        assert_eq!(addr.port(), self.port, "a restart serves the same port");
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("aggregator.log")).unwrap_or_default()
    }

    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// hostd settings that link it to `agg` with its own certificate.
pub fn link_config(pki: &Pki, agg: &Aggregator, tenant: &str, host: &str) -> String {
    let (cert, key) = pki.host(tenant, host);
    format!(
        "aggregators = [\"{}\"]\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        agg.address(),
        pki.ca().display(),
        cert.display(),
        key.display()
    )
}

/// A hostd for `tenant`/`host` linked to `agg`.
pub fn linked_hostd(pki: &Pki, agg: &Aggregator, tenant: &str, host: &str, roster: &str) -> Fleet {
    Fleet::with_identity(tenant, host, roster, &link_config(pki, agg, tenant, host))
}

/// fleetctl as operator `name` against `agg`.
pub fn fleetctl_as(
    pki: &Pki,
    agg: &Aggregator,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let (cert, key) = pki.pair(&format!("operator-{name}"));
    fleetctl_with(agg, [&pki.ca(), &cert, &key], args, env)
}

/// fleetctl against `agg` trusting `ca` and presenting `cert`/`key`,
/// whichever CA they come from.
pub fn fleetctl_with(
    agg: &Aggregator,
    [ca, cert, key]: [&Path; 3],
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut c = Command::new(bin("fleetctl"));
    c.args(["--aggregator", &agg.address()])
        .arg("--ca")
        .arg(ca)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .args(args)
        .env_remove("FLEET_SOCKET")
        .env_remove("TRACEPARENT");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Polls `fleetctl ps --json` as `name` until `pred` holds on the parsed
/// document; panics with the last document and the logs at the deadline.
pub async fn wait_ps(
    pki: &Pki,
    agg: &Aggregator,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let out = fleetctl_as(pki, agg, name, &["ps", "--json"], &[]);
        let doc: serde_json::Value = if out.status.success() {
            serde_json::from_slice(&out.stdout).unwrap()
        } else {
            serde_json::json!({"error": String::from_utf8_lossy(&out.stderr)})
        };
        if pred(&doc) {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last: {doc:#}\naggregator log:\n{}",
            agg.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The agent rows of a `fleet.ps/v1` document.
pub fn agents(doc: &serde_json::Value) -> Vec<serde_json::Value> {
    doc["agents"].as_array().cloned().unwrap_or_default()
}

pub fn hosts(doc: &serde_json::Value) -> Vec<serde_json::Value> {
    doc["hosts"].as_array().cloned().unwrap_or_default()
}

/// An aggregator with operator `alice` granted `verbs` on every tenant, and
/// one hostd (acme/box1, running `roster`, with `env`) linked to it and
/// seen connected.
pub struct OneHost {
    pub dir: tempfile::TempDir,
    pub pki: Pki,
    pub agg: Aggregator,
    pub host: Fleet,
}

pub async fn one_linked_host(verbs: &[&str], roster: &str, env: &[(&str, String)]) -> OneHost {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.operator("alice");
    let verbs: Vec<String> = verbs.iter().map(|v| format!("{v:?}")).collect();
    let grants = format!(
        "[operators.alice]\ntenants = [\"*\"]\nverbs = [{}]\n",
        verbs.join(", ")
    );
    let mut agg = Aggregator::new(dir.path(), &pki, &grants, "");
    agg.start();
    let mut host = linked_hostd(&pki, &agg, "acme", "box1", roster);
    host.env
        .extend(env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    host.start().await;
    wait_ps(
        &pki,
        &agg,
        "alice",
        "box1 linked",
        Duration::from_secs(30),
        |d| hosts(d).iter().any(|h| h["link"] == "connected"),
    )
    .await;
    OneHost {
        dir,
        pki,
        agg,
        host,
    }
}
