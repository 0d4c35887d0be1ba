//! Stock gRPC tools reach both daemons with their default settings:
//! grpcurl 1.8 (reflection v1alpha only; sends the socket path as
//! `:authority`) and Python grpcio (sends its %-encoding) on hostd's Unix
//! socket, and grpcurl on the aggregator's mTLS port.
// Tests run real programs (tmux included) as a person would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use support::Fleet;
use support::fed;

const ROSTER: &str = "\
version: 1
transport: tmux
agents:
  - name: sh0
    runtime: shell
    command: bash --norc --noprofile
";

fn tool(var: &str, default: &str) -> String {
    let p = std::env::var(var).unwrap_or_else(|_| default.into());
    assert!(
        std::path::Path::new(&p).exists(),
        "{p} missing: deploy/test.sh installs it (ensure_python_grpc)"
    );
    p
}

fn grpcurl(args: &[&str]) -> Output {
    Command::new(tool("FLEET_TEST_GRPCURL", "/opt/fleet-py/bin/grpcurl"))
        .args(["-max-time", "20"])
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// grpcio with no options: a generic unary call (no stubs) and a health
/// check, each printed as one line.
const PY_UNIX: &str = r#"
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
ch = grpc.insecure_channel("unix:" + sys.argv[1])
raw = ch.unary_unary("/fleet.v1.Fleet/ListAgents")(b"", timeout=20)
print("agents-bytes", raw.count(b"sh0"))
st = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=20)
print("health", health_pb2.HealthCheckResponse.ServingStatus.Name(st.status))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_and_grpcio_reach_hostd_on_its_unix_socket_unchanged() {
    let mut f = Fleet::new(ROSTER, "");
    f.start().await;
    f.wait_for("sh0 listed", Duration::from_secs(20), |a| a.len() == 1)
        .await;
    let sock = f.socket.display().to_string();
    let out = grpcurl(&["-plaintext", "-unix", &sock, "list"]);
    let listed = text(&out);
    assert!(out.status.success(), "{listed}");
    for service in [
        "fleet.v1.Fleet",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(listed.lines().any(|l| l == service), "{service}: {listed}");
    }
    let out = grpcurl(&["-plaintext", "-unix", &sock, "fleet.v1.Fleet/ListAgents"]);
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["agents"][0]["name"], "sh0", "{doc}");

    let python = tool("FLEET_TEST_PYTHON", "/opt/fleet-py/bin/python3");
    let out = Command::new(python)
        .args(["-c", PY_UNIX, &sock])
        .output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("agents-bytes 1"), "{said}");
    assert!(said.contains("health SERVING"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_the_aggregator_over_mtls_by_reflection_v1alpha() {
    let fed::OneHost {
        dir: _dir,
        pki,
        agg,
        host: _box1,
    } = fed::one_linked_host(&["read"], ROSTER, &[]).await;
    fed::wait_ps(
        &pki,
        &agg,
        "alice",
        "sh0 listed",
        Duration::from_secs(30),
        |d| fed::agents(d).len() == 1,
    )
    .await;
    let (cert, key) = pki.pair("operator-alice");
    let ca = pki.ca().display().to_string();
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let address = format!("localhost:{}", agg.port);
    let tls = ["-cacert", &ca, "-cert", &cert, "-key", &key];
    let out = grpcurl(&[&tls[..], &[&address, "list"]].concat());
    let listed = text(&out);
    assert!(out.status.success(), "{listed}");
    assert!(listed.lines().any(|l| l == "fleet.v1.Fleet"), "{listed}");
    let out = grpcurl(&[&tls[..], &[&address, "fleet.v1.Fleet/ListAgents"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["agents"][0]["name"], "sh0", "{doc}");
}
