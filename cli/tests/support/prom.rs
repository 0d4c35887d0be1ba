//! A real, throw-away Prometheus server (Debian's `prometheus` package,
//! installed by deploy/prereqs.sh `ensure_prometheus`; or
//! `FLEET_TEST_PROMETHEUS`): it scrapes the given targets every second,
//! binds port 0 and says in its log which port it got.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

fn binary() -> String {
    std::env::var("FLEET_TEST_PROMETHEUS").unwrap_or_else(|_| "prometheus".into())
}

impl Prometheus {
    /// Starts one scraping each `(job, address)` at `/metrics`.
    pub fn start(targets: &[(&str, SocketAddr)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
        for (job, addr) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [\"{addr}\"]\n"
            ));
        }
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config).unwrap();
        let log = dir.path().join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(binary())
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("prometheus (Debian's package; deploy/prereqs.sh ensure_prometheus)");
        let addr = fleet_testkit::eventually_blocking(
            "prometheus listening",
            Duration::from_secs(30),
            || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("prometheus exited ({status}):\n{text}");
                }
                // `msg="Listening on" address=127.0.0.1:PORT`
                text.lines()
                    .filter(|l| l.contains("msg=\"Listening on\""))
                    .find_map(|l| {
                        l.split("address=")
                            .nth(1)?
                            .split_whitespace()
                            .next()?
                            .parse::<SocketAddr>()
                            .ok()
                    })
                    .ok_or(text)
            },
        );
        Self {
            child,
            addr,
            _dir: dir,
        }
    }

    /// An instant query through the HTTP API: the whole JSON answer.
    pub fn query(&self, promql: &str) -> serde_json::Value {
        let q: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let mut s = std::net::TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /api/v1/query?query={q} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
