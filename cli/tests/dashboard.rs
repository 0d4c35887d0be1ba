//! `fleetctl dashboard` end to end: a real hostd on a throw-away tmux
//! socket, the real `fleetctl dashboard`, and a real headless Chromium
//! (Debian's `chromium`, driven over the DevTools protocol on a pipe by
//! `tests/dashboard/cdp.js` under node) loading the page: rows and their
//! health in the DOM, a screenshot, a killed agent turning dead on the
//! page, the token and the read-only rules checked with a plain HTTP client
//! too, and every request the page made recorded.
// Tests run real programs (tmux, chromium, node) as a person would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fleet_proto::v1::PaneState;
use support::{Fleet, find};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const ROSTER: &str = "\
version: 1
transport: tmux
defaults:
  heartbeat_interval_secs: 0.3
agents:
  - name: native0
    runtime: demo
    command: fleet-demo-agent --model demo-9 --busy-ms 200
  - name: shell0
    runtime: shell
    command: bash --norc --noprofile
";

/// A program on PATH (or named by `env`), else a failure saying how to get it.
fn need(program: &str, env: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = match std::env::var_os(env) {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => std::env::split_paths(&path)
            .map(|d| d.join(program))
            .find(|p| p.is_file()),
    };
    found
        .unwrap_or_else(|| {
            panic!(
                "{program} is not installed: the dashboard test drives a real headless Chromium under node; run deploy/test.sh (its ensure_chromium installs Debian's chromium and nodejs) or set {env}"
            )
        })
}

/// One HTTP/1.1 request on a fresh connection; the status and the raw head
/// and body of the answer (read to its end: never a stream's URL).
async fn http(port: u16, method: &str, target: &str, extra: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let host = if extra.starts_with("Host:") {
        String::new()
    } else {
        format!("Host: 127.0.0.1:{port}\r\n")
    };
    let req = format!(
        "{method} {target} HTTP/1.1\r\n{host}Connection: close\r\nContent-Length: 0\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    (code, text)
}

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    let head = resp.split("\r\n\r\n").next().unwrap_or("");
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// `fleetctl dashboard ARGS` against `f`, and the URL it printed.
async fn dashboard(f: &Fleet, args: &[&str]) -> (tokio::process::Child, String) {
    let server = [OsString::from("--socket"), f.socket.clone().into()];
    dashboard_over(&server, args).await
}

/// `fleetctl SERVER… dashboard ARGS`, and the URL it printed.
async fn dashboard_over(server: &[OsString], args: &[&str]) -> (tokio::process::Child, String) {
    let mut dash = tokio::process::Command::new(support::bin("fleetctl"))
        .args(server)
        .arg("dashboard")
        .args(args)
        .env_remove("FLEET_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(dash.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(20), out.next_line())
        .await
        .expect("the dashboard prints its URL")
        .unwrap()
        .expect("a URL line");
    (dash, url)
}

/// Opens a live stream and returns once its head is in (the connection
/// stays open, holding the stream).
async fn open_stream(port: u16, path: &str, cookie: &str) -> (u16, tokio::net::TcpStream) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .expect("a head in time")
            .unwrap();
        assert!(n == 1, "closed inside the head: {head:?}");
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let code = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, s)
}

/// The browser, behind the line protocol of `cdp.js`.
struct Browser {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    id: u64,
}

impl Browser {
    async fn start(profile: &Path) -> Self {
        let node = need("node", "FLEET_TEST_NODE");
        let chromium = need("chromium", "FLEET_TEST_CHROMIUM");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard/cdp.js");
        let mut child = tokio::process::Command::new(node)
            .arg(script)
            .arg(profile)
            .env("CHROMIUM", chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdin,
            lines,
            id: 0,
        }
    }

    async fn call(&mut self, mut cmd: serde_json::Value) -> serde_json::Value {
        self.id += 1;
        cmd["id"] = self.id.into();
        let line = format!("{cmd}\n");
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        loop {
            let got = tokio::time::timeout(Duration::from_secs(40), self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("the browser driver did not answer {cmd}"))
                .unwrap()
                .unwrap_or_else(|| panic!("the browser driver ended before answering {cmd}"));
            let v: serde_json::Value = serde_json::from_str(&got).unwrap();
            if v["id"] == 0 {
                panic!("browser driver: {}", v["error"]);
            }
            if v["id"] != self.id {
                continue;
            }
            assert!(v["ok"] == true, "{cmd}: {}", v["error"]);
            return v["value"].clone();
        }
    }

    async fn eval(&mut self, expr: &str) -> serde_json::Value {
        self.call(serde_json::json!({"cmd": "eval", "expr": expr}))
            .await
    }

    /// Polls `expr` until `ok` holds of its value; the last value at the
    /// deadline is in the failure.
    async fn until(
        &mut self,
        what: &str,
        timeout: Duration,
        expr: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(expr).await;
            if ok(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; page shows {v}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver takes chromium down with it on SIGTERM.
        if let Some(pid) = self
            .child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
}

/// The rows of the agents table: [address, pane, health].
const ROWS: &str = "JSON.stringify([...document.querySelectorAll('#agents tbody tr')].map(tr => [tr.dataset.agent, tr.querySelector('.pane').textContent, tr.querySelector('.health').textContent]))";

fn rows(v: &serde_json::Value) -> Vec<(String, String, String)> {
    serde_json::from_str(v.as_str().unwrap_or("[]")).unwrap_or_default()
}

fn cell<'a>(
    rows: &'a [(String, String, String)],
    agent: &str,
) -> Option<&'a (String, String, String)> {
    rows.iter().find(|r| r.0 == format!("acme/box1/{agent}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_fleet_live_in_a_real_browser_and_never_writes() {
    // Missing tools fail here, before anything starts.
    need("node", "FLEET_TEST_NODE");
    need("chromium", "FLEET_TEST_CHROMIUM");
    let mut f = Fleet::new(ROSTER, "");
    f.start().await;
    let agents = f
        .wait_for("alive and healthy", Duration::from_secs(20), |a| {
            a.len() == 2
                && a.iter().all(|r| {
                    r.pane == PaneState::Alive as i32
                        && r.process.is_some()
                        && r.heartbeat
                            .as_ref()
                            .is_some_and(|h| h.health == fleet_proto::v1::Health::Healthy as i32)
                })
        })
        .await;
    let shell_pid = find(&agents, "shell0").unwrap().pane_pid;

    // A non-loopback address is a usage error.
    let out = f.fleetctl(&["dashboard", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("loopback"),
        "{out:?}"
    );

    let (mut dash, url) = dashboard(&f, &[]).await;
    let rest = url
        .strip_prefix("http://127.0.0.1:")
        .unwrap_or_else(|| panic!("{url}"));
    let (port, token) = rest.split_once("/?token=").unwrap();
    let port: u16 = port.parse().unwrap();
    assert_eq!(token.len(), 64, "{url}");
    let origin = format!("http://127.0.0.1:{port}/");

    // A plain HTTP client: no token, no entry.
    for path in ["/", "/app.js", "/api/fleet", "/api/events", "/api/summary"] {
        let (code, resp) = http(port, "GET", path, "").await;
        assert_eq!(code, 401, "{path}: {resp}");
        assert_eq!(header(&resp, "x-content-type-options"), Some("nosniff"));
    }
    let wrong = format!("/?token={}", "0".repeat(64));
    assert_eq!(http(port, "GET", &wrong, "").await.0, 401);
    // A page of another name resolving to loopback (DNS rebinding) is
    // refused even with the token.
    let (code, resp) = http(
        port,
        "GET",
        &format!("/?token={token}"),
        &format!("Host: evil.example:{port}\r\n"),
    )
    .await;
    assert_eq!(code, 421, "a foreign Host: {resp}");
    // With it: the page, a cookie for the rest, and the headers.
    let (code, page) = http(port, "GET", &format!("/?token={token}"), "").await;
    assert_eq!(code, 200, "{page}");
    let cookie = header(&page, "set-cookie").expect("a cookie").to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    let csp = header(&page, "content-security-policy").expect("a CSP");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(header(&page, "access-control-allow-origin").is_none());
    assert!(
        !page.contains("<script>"),
        "no inline script in the page: {page}"
    );
    let jar = cookie.split(';').next().unwrap().to_owned();
    let (code, summary) = http(port, "GET", "/api/summary", &format!("Cookie: {jar}\r\n")).await;
    assert_eq!(code, 200, "{summary}");
    assert!(summary.contains("fleet.summary/v1"), "{summary}");
    // Nothing but GET, token or not.
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        for path in ["/", "/api/fleet", "/api/send"] {
            let (code, resp) = http(port, method, path, &format!("Cookie: {jar}\r\n")).await;
            assert!(code == 405 || code == 401, "{method} {path}: {resp}");
            let (code, _) = http(port, method, path, "").await;
            assert!(code == 405 || code == 401, "{method} {path} without token");
        }
    }

    // The browser: rows with their health.
    let mut b = Browser::start(&f.dir.path().join("chromium")).await;
    b.call(serde_json::json!({"cmd": "goto", "url": url})).await;
    let seen = b
        .until(
            "both agents alive and healthy on the page",
            Duration::from_secs(15),
            ROWS,
            |v| {
                let r = rows(v);
                ["native0", "shell0"].iter().all(|n| {
                    cell(&r, n)
                        .is_some_and(|(_, pane, health)| pane == "alive" && health == "healthy")
                })
            },
        )
        .await;
    assert_eq!(rows(&seen).len(), 2, "{seen}");
    // The token left the address bar; the summary and the host came.
    assert_eq!(b.eval("location.search").await, "");
    b.until(
        "the summary",
        Duration::from_secs(10),
        "document.getElementById('sum-agents').textContent",
        |v| v == "2",
    )
    .await;
    b.until(
        "the host row",
        Duration::from_secs(10),
        "JSON.stringify([...document.querySelectorAll('#hosts tbody tr')].map(tr => [tr.dataset.host, tr.querySelector('.link').textContent]))",
        |v| v == r#"[["acme/box1","local"]]"#,
    )
    .await;
    // An agent's screen, live.
    b.eval("document.querySelector('#agents tr[data-agent=\"acme/box1/native0\"]').click()")
        .await;
    b.until(
        "native0's screen",
        Duration::from_secs(10),
        "document.getElementById('screen').textContent.length",
        |v| v.as_u64().is_some_and(|n| n > 0),
    )
    .await;
    let shot = f.dir.path().join("dashboard.png");
    b.call(serde_json::json!({"cmd": "screenshot", "path": shot}))
        .await;
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.len() > 1000 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "a PNG screenshot: {} bytes",
        png.len()
    );

    // A killed agent turns dead on the page within 2 s.
    let t = Instant::now();
    support::kill(shell_pid, rustix::process::Signal::KILL);
    b.until(
        "shell0 dead on the page",
        Duration::from_secs(2),
        ROWS,
        |v| cell(&rows(v), "shell0").is_some_and(|(_, pane, _)| pane == "dead"),
    )
    .await;
    let took = t.elapsed();
    eprintln!("kill to dead on the page: {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    b.until(
        "the died event on the page",
        Duration::from_secs(10),
        "JSON.stringify([...document.querySelectorAll('#events li')].map(li => [li.dataset.kind, li.dataset.agent]))",
        |v| v.as_str().is_some_and(|s| s.contains(r#"["died","shell0"]"#)),
    )
    .await;

    // A filter is a selector the server applies: only the dead row comes.
    b.eval("(() => { const s = document.getElementById('f-pane'); s.value = 'dead'; s.dispatchEvent(new Event('change')); })()")
        .await;
    b.until(
        "only the dead row under pane=dead",
        Duration::from_secs(10),
        ROWS,
        |v| {
            let r = rows(v);
            r.len() == 1 && cell(&r, "shell0").is_some_and(|(_, pane, _)| pane == "dead")
        },
    )
    .await;
    b.until(
        "the summary of the selection",
        Duration::from_secs(10),
        "document.getElementById('sum-agents').textContent",
        |v| v == "1",
    )
    .await;

    // The page asked for nothing that could change the fleet.
    let reqs = b.call(serde_json::json!({"cmd": "requests"})).await;
    let reqs = reqs.as_array().unwrap();
    assert!(reqs.len() >= 5, "{reqs:#?}");
    for r in reqs {
        assert_eq!(r["method"], "GET", "{r}");
        let u = r["url"].as_str().unwrap();
        assert!(
            u.starts_with(&origin),
            "a request off the dashboard's origin: {r}"
        );
        assert!(!u.contains("send") && !u.contains("attach"), "{r}");
    }
    assert!(
        reqs.iter()
            .any(|r| r["url"].as_str().unwrap().ends_with("/api/fleet?pane=dead")),
        "the filter went to the server: {reqs:#?}"
    );
    b.call(serde_json::json!({"cmd": "quit"})).await;
    drop(b);

    // SIGTERM stops it cleanly, streams and all.
    let pid = rustix::process::Pid::from_raw(dash.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), dash.wait())
        .await
        .expect("the dashboard stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");

    // Live streams are bounded: past the limit, 503.
    let (mut dash, url) = dashboard(&f, &["--max-streams", "1"]).await;
    let rest = url.strip_prefix("http://127.0.0.1:").unwrap();
    let (port, token) = rest.split_once("/?token=").unwrap();
    let port: u16 = port.parse().unwrap();
    let (_, page) = http(port, "GET", &format!("/?token={token}"), "").await;
    let jar = header(&page, "set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let (code, _held) = open_stream(port, "/api/events", &jar).await;
    assert_eq!(code, 200);
    let (code, _) = open_stream(port, "/api/fleet", &jar).await;
    assert_eq!(code, 503, "a second stream past --max-streams 1");
    dash.start_kill().unwrap();
    let _ = dash.wait().await;
}

/// The connection flags of operator `name` for `agg`.
fn as_operator(
    pki: &support::fed::Pki,
    agg: &support::fed::Aggregator,
    name: &str,
) -> Vec<OsString> {
    let (cert, key) = pki.pair(&format!("operator-{name}"));
    vec![
        "--aggregator".into(),
        agg.address().into(),
        "--ca".into(),
        pki.ca().into(),
        "--cert".into(),
        cert.into(),
        "--key".into(),
        key.into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_an_aggregator_grants_apply_and_too_many_rows_are_a_count() {
    use support::fed::{Aggregator, Pki, agents, linked_hostd, wait_ps};
    need("node", "FLEET_TEST_NODE");
    need("chromium", "FLEET_TEST_CHROMIUM");
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    pki.operator("alice");
    pki.operator("bob");
    let grants = "[operators.alice]\ntenants = [\"acme\"]\nverbs = [\"read\"]\n\
                  [operators.bob]\ntenants = [\"other\"]\nverbs = [\"read\"]\n";
    let mut agg = Aggregator::new(dir.path(), &pki, grants, "");
    agg.start();
    let mut host = linked_hostd(&pki, &agg, "acme", "box1", ROSTER);
    host.start().await;
    wait_ps(
        &pki,
        &agg,
        "alice",
        "both agents through the aggregator",
        Duration::from_secs(30),
        |d| agents(d).len() == 2 && agents(d).iter().all(|a| a["pane"] == "alive"),
    )
    .await;

    // alice, with room for one row: the page counts two and shows none.
    let (_alice, url) =
        dashboard_over(&as_operator(&pki, &agg, "alice"), &["--max-rows", "1"]).await;
    let mut b = Browser::start(&dir.path().join("chromium-alice")).await;
    b.call(serde_json::json!({"cmd": "goto", "url": url})).await;
    b.until(
        "the count instead of rows",
        Duration::from_secs(15),
        "document.getElementById('too-many').textContent",
        |v| v.as_str().is_some_and(|t| t.starts_with("2 agents match")),
    )
    .await;
    assert_eq!(rows(&b.eval(ROWS).await).len(), 0);
    b.until(
        "the summary counts them all",
        Duration::from_secs(10),
        "document.getElementById('sum-agents').textContent",
        |v| v == "2",
    )
    .await;
    // Narrowed to one, its row comes, its host linked to the aggregator.
    b.eval("(() => { const s = document.getElementById('f-name'); s.value = 'native*'; s.dispatchEvent(new Event('change')); })()")
        .await;
    b.until("native0 alone", Duration::from_secs(10), ROWS, |v| {
        let r = rows(v);
        r.len() == 1 && cell(&r, "native0").is_some_and(|(_, pane, _)| pane == "alive")
    })
    .await;
    assert_eq!(
        b.eval("document.getElementById('too-many').textContent")
            .await,
        ""
    );
    b.until(
        "the host row, linked",
        Duration::from_secs(10),
        "JSON.stringify([...document.querySelectorAll('#hosts tbody tr')].map(tr => [tr.dataset.host, tr.querySelector('.link').textContent]))",
        |v| {
            let hosts: Vec<(String, String)> =
                serde_json::from_str(v.as_str().unwrap_or("[]")).unwrap_or_default();
            hosts.len() == 1 && hosts[0].0 == "acme/box1" && hosts[0].1.starts_with("connected")
        },
    )
    .await;
    b.call(serde_json::json!({"cmd": "quit"})).await;
    drop(b);

    // bob is granted another tenant only: the same fleet shows him nothing.
    let (_bob, url) = dashboard_over(&as_operator(&pki, &agg, "bob"), &[]).await;
    let mut b = Browser::start(&dir.path().join("chromium-bob")).await;
    b.call(serde_json::json!({"cmd": "goto", "url": url})).await;
    b.until(
        "an empty summary for bob",
        Duration::from_secs(15),
        "document.getElementById('sum-agents').textContent",
        |v| v == "0",
    )
    .await;
    assert_eq!(rows(&b.eval(ROWS).await).len(), 0);
    b.call(serde_json::json!({"cmd": "quit"})).await;
}
