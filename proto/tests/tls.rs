//! mTLS with real handshakes on 127.0.0.1:0 and certificates made per test:
//! identities read from SANs, unknown CAs refused, certificates rotated
//! without a restart and a bad rotation refused.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fleet_proto::identity::Identity;
use fleet_proto::tls::{self, Reloading};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn new_ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
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

/// Marks files as changed (distinct mtimes even within one clock tick).
fn touch(dir: &Path, name: &str, secs: u64) {
    let t = SystemTime::now() + Duration::from_secs(secs);
    for ext in ["pem", "key"] {
        std::fs::File::options()
            .write(true)
            .open(dir.join(format!("{name}.{ext}")))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
}

/// One server accepting TLS connections; reports each client's identity.
async fn serve(
    dir: &Path,
    resolver: Arc<Reloading>,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::Receiver<Result<Identity, String>>,
) {
    let cfg = tls::server_config(&dir.join("ca.pem"), resolver).unwrap();
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
/// `ca_file`; returns the server certificate it saw.
async fn connect(
    dir: &Path,
    name: &str,
    ca_file: &str,
    addr: std::net::SocketAddr,
) -> Result<Vec<u8>, String> {
    let me = Reloading::load(
        &dir.join(format!("{name}.pem")),
        &dir.join(format!("{name}.key")),
    )
    .unwrap();
    let cfg = tls::client_config(&dir.join(ca_file), me).unwrap();
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
    let ca = new_ca();
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
    let (addr, mut seen) = serve(d, resolver.clone()).await;

    // Identities come from the one SPIFFE URI SAN.
    let first = connect(d, "alice", "ca.pem", addr).await.unwrap();
    assert_eq!(
        seen.recv().await.unwrap().unwrap(),
        Identity::Operator {
            trust_domain: "td".into(),
            name: "alice".into()
        }
    );
    connect(d, "host", "ca.pem", addr).await.unwrap();
    assert_eq!(
        seen.recv().await.unwrap().unwrap(),
        Identity::Host {
            trust_domain: "td".into(),
            tenant: "acme".into(),
            host: "box1".into()
        }
    );
    let _ = connect(d, "twouris", "ca.pem", addr).await;
    assert!(
        seen.recv()
            .await
            .unwrap()
            .unwrap_err()
            .contains("exactly one")
    );

    // A client certificate from another CA is refused at the handshake.
    let other = new_ca();
    leaf(
        d,
        "mallory",
        &other,
        vec![uri("spiffe://td/operator/mallory")],
    );
    let r = connect(d, "mallory", "ca.pem", addr).await;
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
    let second = connect(d, "alice", "ca.pem", addr).await.unwrap();
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
    let third = connect(d, "alice", "ca.pem", addr).await.unwrap();
    seen.recv().await.unwrap().unwrap();
    assert_eq!(second, third, "still serving the last good certificate");
    std::fs::write(d.join("server.key"), good).unwrap();
}
