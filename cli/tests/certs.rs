//! `fleetctl certs`: a development CA and the three kinds of certificate,
//! checked by parsing what was written (x509-parser) and verifying each
//! signature against the CA.
// Tests run real programs (tmux included) as a person would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use fleet_proto::identity::Identity;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::parse_x509_pem;

fn certs(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(support::bin("fleetctl"))
        .arg("certs")
        .args(args)
        .args(["--dir", dir.to_str().unwrap()])
        .output()
        .unwrap()
}

/// The URI SANs, DNS names and whether the CA signed it.
fn inspect(dir: &std::path::Path, file: &str) -> (Vec<String>, Vec<String>, bool) {
    let ca_pem = std::fs::read(dir.join("ca.pem")).unwrap();
    let (_, ca) = parse_x509_pem(&ca_pem).unwrap();
    let ca = ca.parse_x509().unwrap();
    let pem = std::fs::read(dir.join(file)).unwrap();
    let (_, leaf) = parse_x509_pem(&pem).unwrap();
    let leaf = leaf.parse_x509().unwrap();
    let signed = leaf.verify_signature(Some(ca.public_key())).is_ok();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    for n in &san.value.general_names {
        match n {
            GeneralName::URI(u) => uris.push((*u).to_owned()),
            GeneralName::DNSName(d) => dns.push((*d).to_owned()),
            _ => {}
        }
    }
    (uris, dns, signed)
}

#[test]
fn a_ca_issues_the_three_kinds_with_one_spiffe_id_each() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = Command::new(support::bin("fleetctl"))
        .args([
            "certs",
            "init",
            "--trust-domain",
            "fleet.test",
            "--dir",
            d.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = |f: &str| std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("ca.key"), 0o600);

    assert!(
        certs(d, &["issue", "host", "--tenant", "acme", "--host", "box1"])
            .status
            .success()
    );
    assert!(
        certs(d, &["issue", "operator", "--name", "alice"])
            .status
            .success()
    );
    let out = certs(
        d,
        &[
            "issue",
            "aggregator",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for (file, want) in [
        (
            "host-acme-box1.pem",
            "spiffe://fleet.test/tenant/acme/host/box1",
        ),
        ("operator-alice.pem", "spiffe://fleet.test/operator/alice"),
        ("aggregator.pem", "spiffe://fleet.test/aggregator"),
    ] {
        let (uris, _, signed) = inspect(d, file);
        assert_eq!(uris, [want], "{file}: exactly one URI SAN");
        assert!(signed, "{file} is signed by the CA");
        assert!(Identity::parse(&uris[0]).is_ok());
        assert_eq!(mode(&file.replace(".pem", ".key")), 0o600);
    }
    let (_, dns, _) = inspect(d, "aggregator.pem");
    assert_eq!(dns, ["localhost"]);

    // A second init does not silently replace the CA.
    let out = Command::new(support::bin("fleetctl"))
        .args([
            "certs",
            "init",
            "--trust-domain",
            "fleet.test",
            "--dir",
            d.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
}

#[test]
fn bad_names_and_a_missing_ca_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = certs(d, &["issue", "operator", "--name", "bob"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("certs init"));
    let out = Command::new(support::bin("fleetctl"))
        .args([
            "certs",
            "init",
            "--trust-domain",
            "a/b",
            "--dir",
            d.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        Command::new(support::bin("fleetctl"))
            .args([
                "certs",
                "init",
                "--trust-domain",
                "td",
                "--dir",
                d.to_str().unwrap()
            ])
            .status()
            .unwrap()
            .success()
    );
    for bad in [
        ["--tenant", "../x", "--host", "h"],
        ["--tenant", "t", "--host", "a/b"],
    ] {
        let mut args = vec!["issue", "host"];
        args.extend_from_slice(&bad);
        assert_eq!(certs(d, &args).status.code(), Some(2), "{bad:?}");
    }
    assert!(!d.join("host-t-a/b.pem").exists());
}
