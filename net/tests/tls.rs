//! mTLS with real handshakes on 127.0.0.1:0 and certificates made per test:
//! identities read from SANs, unknown CAs refused, certificates and CA
//! bundles rotated without a restart and a bad rotation refused.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fleet_net::tls::{self, Reload, Reloading, Trust};
use fleet_proto::identity::Identity;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn new_ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

/// Writes `<name>.pem`/`.key` signed by `ca` with the given SANs.
fn leaf(dir: &Path, name: &str, ca: &Ca, sans: Vec<SanType>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = sans;
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = p.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

fn uri(u: &str) -> SanType {
    SanType::URI(u.try_into().unwrap())
}

/// Marks a file as changed (distinct mtimes even within one clock tick).
fn touch_file(path: &Path, secs: u64) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() + Duration::from_secs(secs))
        .unwrap();
}

/// Marks a certificate and its key as changed.
fn touch(dir: &Path, name: &str, secs: u64) {
    for ext in ["pem", "key"] {
        touch_file(&dir.join(format!("{name}.{ext}")), secs);
    }
}

/// One server accepting TLS connections; reports each client's identity.
async fn serve(
    trust: Arc<Trust>,
    resolver: Arc<Reloading>,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::Receiver<Result<Identity, String>>,
) {
    let cfg = tls::server_config(trust, resolver).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let r = match acceptor.accept(tcp).await {
                    Ok(mut s) => {
                        let id = tls::peer_identity(&s.get_ref().1.peer_certificates().unwrap()[0])
                            .map_err(|e| e.to_string());
                        let _ = s.write_all(b"ok").await;
                        id
                    }
                    Err(e) => Err(e.to_string()),
                };
                let _ = tx.send(r).await;
            });
        }
    });
    (addr, rx)
}

/// Connects as the client whose files are `<name>.pem/.key` trusting
/// `trust`; returns the server certificate it saw.
async fn connect(
    dir: &Path,
    name: &str,
    trust: &Arc<Trust>,
    addr: std::net::SocketAddr,
) -> Result<Vec<u8>, String> {
    let me = Reloading::load(
        &dir.join(format!("{name}.pem")),
        &dir.join(format!("{name}.key")),
    )
    .unwrap();
    let cfg = tls::client_config(trust.clone(), me).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2];
    s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    Ok(s.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec())
}

#[tokio::test]
async fn mtls_identities_rotation_and_refusals() {
    tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = new_ca("test CA");
    std::fs::write(d.join("ca.pem"), &ca.pem).unwrap();
    let server_sans = || {
        vec![
            uri("spiffe://td/aggregator"),
            SanType::DnsName("localhost".try_into().unwrap()),
        ]
    };
    leaf(d, "server", &ca, server_sans());
    leaf(d, "alice", &ca, vec![uri("spiffe://td/operator/alice")]);
    leaf(
        d,
        "host",
        &ca,
        vec![uri("spiffe://td/tenant/acme/host/box1")],
    );
    leaf(
        d,
        "twouris",
        &ca,
        vec![uri("spiffe://td/operator/a"), uri("spiffe://td/operator/b")],
    );

    let resolver = Reloading::load(&d.join("server.pem"), &d.join("server.key")).unwrap();
    let trust = Trust::load(&d.join("ca.pem")).unwrap();
    let (addr, mut seen) = serve(trust.clone(), resolver.clone()).await;

    // Identities come from the one SPIFFE URI SAN.
    let first = connect(d, "alice", &trust, addr).await.unwrap();
    assert_eq!(
        seen.recv().await.unwrap().unwrap(),
        Identity::Operator {
            trust_domain: "td".into(),
            name: "alice".into()
        }
    );
    connect(d, "host", &trust, addr).await.unwrap();
    assert_eq!(
        seen.recv().await.unwrap().unwrap(),
        Identity::Host {
            trust_domain: "td".into(),
            tenant: "acme".into(),
            host: "box1".into()
        }
    );
    let _ = connect(d, "twouris", &trust, addr).await;
    assert!(
        seen.recv()
            .await
            .unwrap()
            .unwrap_err()
            .contains("exactly one")
    );

    // A client certificate from another CA is refused at the handshake.
    let other = new_ca("other CA");
    leaf(
        d,
        "mallory",
        &other,
        vec![uri("spiffe://td/operator/mallory")],
    );
    let r = connect(d, "mallory", &trust, addr).await;
    assert!(r.is_err(), "handshake must fail");
    assert!(seen.recv().await.unwrap().is_err());

    // Rotation: new files are picked up without a restart.
    assert!(
        !resolver.reload_if_changed().unwrap(),
        "nothing changed yet"
    );
    leaf(d, "server", &ca, server_sans());
    touch(d, "server", 5);
    assert!(resolver.reload_if_changed().unwrap());
    let second = connect(d, "alice", &trust, addr).await.unwrap();
    seen.recv().await.unwrap().unwrap();
    assert_ne!(first, second, "new connections see the new certificate");

    // A certificate whose key does not match is refused; the old one stays.
    let good = std::fs::read(d.join("server.key")).unwrap();
    std::fs::write(
        d.join("server.key"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    touch(d, "server", 10);
    let err = resolver.reload_if_changed().unwrap_err().to_string();
    assert!(err.contains("do not belong together"), "{err}");
    let third = connect(d, "alice", &trust, addr).await.unwrap();
    seen.recv().await.unwrap().unwrap();
    assert_eq!(second, third, "still serving the last good certificate");
    std::fs::write(d.join("server.key"), good).unwrap();
}

#[tokio::test]
async fn a_ca_rollover_needs_no_restart_and_a_bad_bundle_is_refused() {
    tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old, new) = (new_ca("old CA"), new_ca("new CA"));
    std::fs::write(d.join("ca.pem"), &old.pem).unwrap();
    leaf(
        d,
        "server",
        &old,
        vec![
            uri("spiffe://td/aggregator"),
            SanType::DnsName("localhost".try_into().unwrap()),
        ],
    );
    leaf(d, "alice", &old, vec![uri("spiffe://td/operator/alice")]);
    leaf(d, "bob", &new, vec![uri("spiffe://td/operator/bob")]);
    let server_trust = Trust::load(&d.join("ca.pem")).unwrap();
    let resolver = Reloading::load(&d.join("server.pem"), &d.join("server.key")).unwrap();
    let (addr, mut seen) = serve(server_trust.clone(), resolver).await;
    let bundle = format!("{}{}", old.pem, new.pem);

    // Server side: bob's certificate is from a CA the server does not trust
    // yet; once the new CA is in the bundle file he is let in, and alice
    // still is.
    let client_trust = Trust::load(&d.join("ca.pem")).unwrap();
    assert!(connect(d, "bob", &client_trust, addr).await.is_err());
    assert!(seen.recv().await.unwrap().is_err());
    assert!(
        !server_trust.reload_if_changed().unwrap(),
        "nothing changed"
    );
    std::fs::write(d.join("ca.pem"), &bundle).unwrap();
    touch_file(&d.join("ca.pem"), 5);
    assert!(server_trust.reload_if_changed().unwrap());
    connect(d, "bob", &client_trust, addr).await.unwrap();
    assert_eq!(
        seen.recv().await.unwrap().unwrap(),
        Identity::Operator {
            trust_domain: "td".into(),
            name: "bob".into()
        }
    );
    connect(d, "alice", &client_trust, addr).await.unwrap();
    seen.recv().await.unwrap().unwrap();

    // Client side: a client that trusts only the new CA refuses the server
    // (old CA) until its own bundle file gains the old CA.
    std::fs::write(d.join("client-ca.pem"), &new.pem).unwrap();
    let bobs = Trust::load(&d.join("client-ca.pem")).unwrap();
    let err = connect(d, "bob", &bobs, addr).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    let _ = seen.recv().await;
    std::fs::write(d.join("client-ca.pem"), &bundle).unwrap();
    touch_file(&d.join("client-ca.pem"), 5);
    assert!(bobs.reload_if_changed().unwrap());
    connect(d, "bob", &bobs, addr).await.unwrap();
    seen.recv().await.unwrap().unwrap();

    // A bundle that does not parse, or holds no CA, is refused: the last
    // good one stays in force.
    for (i, junk) in ["not a certificate\n", ""].into_iter().enumerate() {
        std::fs::write(d.join("ca.pem"), junk).unwrap();
        touch_file(&d.join("ca.pem"), 10 + i as u64);
        let err = server_trust.reload_if_changed().unwrap_err().to_string();
        assert!(err.contains("no CA certificate"), "{err}");
        connect(d, "bob", &client_trust, addr).await.unwrap();
        seen.recv().await.unwrap().unwrap();
    }
}
