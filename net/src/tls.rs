//! mTLS for every off-host link: rustls with the ring provider, a
//! certificate *resolver* that swaps to new files without a restart (a new
//! certificate and key are checked to match before they are used; a bad one
//! is refused and the old one kept), a CA bundle that is reloaded the same
//! way (a CA rollover needs no restart), and the peer's fleet identity read
//! from its one SPIFFE URI SAN.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::reload::Watched;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};

use fleet_proto::identity::{Identity, IdentityError};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("peer certificate: {0}")]
    Peer(String),
    #[error("peer identity: {0}")]
    Identity(#[from] IdentityError),
}

/// Installs the ring crypto provider for the process. Call first thing in
/// every `main` (tonic panics later without one). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// ring with AES-128-GCM/SHA-256 preferred: every host link handshakes
/// again after an aggregator restart, and SHA-384's transcript hashing was
/// a tenth of that crypto for no protection a fleet needs beyond AES-128.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    // The same suites, AES-128 first (a stable sort keeps the rest's order).
    p.cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(p)
}

fn file_err(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Reads a certificate chain and its key, and checks that they match.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, e))?;
    if chain.is_empty() {
        return Err(file_err(cert, "no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
    CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| {
        file_err(
            cert,
            format!("certificate and key do not belong together: {e}"),
        )
    })
}

/// Reads the trusted CA certificates.
pub fn load_roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    load_roots_with_expiry(ca).map(|(roots, _)| roots)
}

/// Reads the trusted CA certificates once: the store, and each one's
/// subject and expiry.
fn load_roots_with_expiry(ca: &Path) -> Result<(RootCertStore, Vec<(String, i64)>), TlsError> {
    let mut roots = RootCertStore::empty();
    let mut expiry = Vec::new();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| file_err(ca, e))? {
        let c = c.map_err(|e| file_err(ca, e))?;
        expiry.extend(not_after(&c));
        roots.add(c).map_err(|e| file_err(ca, e))?;
    }
    if roots.is_empty() {
        return Err(file_err(ca, "no CA certificate in the file"));
    }
    Ok((roots, expiry))
}

/// Files re-read while the process runs.
pub trait Reload: Send + Sync + 'static {
    /// Re-reads the files if they changed: `Ok(true)` when the new contents
    /// are now in use; on error the old contents stay in use.
    fn reload_if_changed(&self) -> Result<bool, TlsError>;

    /// Polls the files every `every`, reporting a refused change through
    /// `on_error` (once per change of the files).
    fn spawn_watcher(
        self: Arc<Self>,
        every: std::time::Duration,
        on_error: impl Fn(&TlsError) + Send + 'static,
    ) -> tokio::task::JoinHandle<()>
    where
        Self: Sized,
    {
        crate::reload::every(every, move || match self.reload_if_changed() {
            Ok(true) => tracing::info!("tls files reloaded"),
            Ok(false) => {}
            Err(e) => on_error(&e),
        })
    }
}

/// The certificate this process presents, replaceable while it runs.
#[derive(Debug)]
pub struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: Watched<CertifiedKey>,
}

impl Reloading {
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let current = Watched::load(vec![cert.to_owned(), key.to_owned()], || {
            load_certified_key(cert, key)
        })?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current,
        }))
    }

    /// A certificate held in memory only (never reloaded): for load
    /// generators that play thousands of hosts.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Arc<Self>, TlsError> {
        let mem = Path::new("<memory>");
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| file_err(mem, e))?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| file_err(mem, e))?;
        let ck = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
            file_err(
                mem,
                format!("certificate and key do not belong together: {e}"),
            )
        })?;
        Ok(Arc::new(Self {
            cert: PathBuf::new(),
            key: PathBuf::new(),
            current: Watched::new(Vec::new(), ck),
        }))
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.get()
    }

    /// The subject and expiry (Unix seconds) of the certificate in use.
    pub fn not_after(&self) -> Vec<(String, i64)> {
        self.current()
            .cert
            .first()
            .and_then(not_after)
            .into_iter()
            .collect()
    }
}

/// A certificate's subject and its expiry in Unix seconds.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<(String, i64)> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some((x.subject().to_string(), x.validity().not_after.timestamp()))
}

impl Reload for Reloading {
    /// A new certificate is checked against its key before it is used.
    fn reload_if_changed(&self) -> Result<bool, TlsError> {
        self.current
            .reload(|| load_certified_key(&self.cert, &self.key))
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for Reloading {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The CA bundle this process trusts, replaceable while it runs. A CA
/// rollover is: add the new CA to the bundle, reissue certificates, drop
/// the old CA, with no restart anywhere. A bundle that does not parse (or
/// holds no CA) is refused and the current one kept.
#[derive(Debug)]
pub struct Trust {
    ca: PathBuf,
    current: Watched<Verifiers>,
    /// Handshake signatures are checked the same way whatever the bundle.
    algorithms: WebPkiSupportedAlgorithms,
}

#[derive(Debug)]
struct Verifiers {
    client: Arc<dyn ClientCertVerifier>,
    server: Arc<dyn ServerCertVerifier>,
    /// Each CA's subject and expiry.
    not_after: Vec<(String, i64)>,
}

impl Verifiers {
    fn load(ca: &Path) -> Result<Self, TlsError> {
        let (roots, not_after) = load_roots_with_expiry(ca)?;
        let roots = Arc::new(roots);
        Ok(Self {
            not_after,
            client: WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|e| file_err(ca, e))?,
            server: WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| file_err(ca, e))?,
        })
    }
}

impl Trust {
    pub fn load(ca: &Path) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            ca: ca.to_owned(),
            current: Watched::load(vec![ca.to_owned()], || Verifiers::load(ca))?,
            algorithms: provider().signature_verification_algorithms,
        }))
    }

    fn current(&self) -> Arc<Verifiers> {
        self.current.get()
    }

    /// Each trusted CA's subject and expiry (Unix seconds), as loaded now.
    pub fn not_after(&self) -> Vec<(String, i64)> {
        self.current().not_after.clone()
    }
}

impl Reload for Trust {
    /// A bundle that does not parse or holds no CA is refused.
    fn reload_if_changed(&self) -> Result<bool, TlsError> {
        self.current.reload(|| Verifiers::load(&self.ca))
    }
}

/// The handshake-signature half of both verifier traits: the same checks
/// whichever side of the handshake and whatever the bundle.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(message, cert, dss, &self.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    };
}

/// The server side of the handshake checks clients against the bundle.
impl ClientCertVerifier for Trust {
    /// No CA names are hinted: a fleet client holds one certificate, and the
    /// hints would have to borrow from a bundle that can change.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .client
            .verify_client_cert(end_entity, intermediates, now)
    }

    handshake_signatures!();
}

/// The client side of the handshake checks servers against the bundle.
impl ServerCertVerifier for Trust {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.current().server.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    handshake_signatures!();
}

/// This process's certificate and CA bundle, loaded from their files and
/// re-read every `every`; a refused change is reported to `on_refused` with
/// what was refused (`"certificate"` or `"ca"`).
pub fn load_watched(
    cert: &Path,
    key: &Path,
    ca: &Path,
    every: std::time::Duration,
    on_refused: impl Fn(&'static str, &TlsError) + Clone + Send + 'static,
) -> Result<(Arc<Reloading>, Arc<Trust>), TlsError> {
    let me = Reloading::load(cert, key)?;
    let trust = Trust::load(ca)?;
    let report = on_refused.clone();
    me.clone()
        .spawn_watcher(every, move |e| report("certificate", e));
    trust
        .clone()
        .spawn_watcher(every, move |e| on_refused("ca", e));
    Ok((me, trust))
}

/// A server that requires a client certificate from `trust` and presents
/// `me`.
pub fn server_config(trust: Arc<Trust>, me: Arc<Reloading>) -> Result<ServerConfig, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(trust)
        .with_cert_resolver(me);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// A client that trusts only `trust` and presents `me`.
pub fn client_config(trust: Arc<Trust>, me: Arc<Reloading>) -> Result<ClientConfig, TlsError> {
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(trust)
        .with_client_cert_resolver(me);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    // No session resumption: a resumed TLS 1.3 session carries the client
    // certificate of the first handshake, so a certificate replaced on disk
    // would never be presented (the peer would go on seeing the old one).
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(cfg)
}

/// The fleet identity in a (verified) peer certificate: exactly one URI SAN,
/// a SPIFFE fleet identity.
pub fn peer_identity(cert: &CertificateDer<'_>) -> Result<Identity, TlsError> {
    use x509_parser::extensions::GeneralName;
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| TlsError::Peer(e.to_string()))?;
    let san = x
        .subject_alternative_name()
        .map_err(|e| TlsError::Peer(e.to_string()))?
        .ok_or_else(|| TlsError::Peer("no subjectAltName".into()))?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [one] => Ok(Identity::parse(one)?),
        [] => Err(TlsError::Peer("no URI SAN".into())),
        _ => Err(TlsError::Peer(format!(
            "{} URI SANs; exactly one is allowed",
            uris.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn aes_128_is_preferred_and_no_suite_is_dropped() {
        let ours: Vec<_> = super::provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        let mut stock: Vec<_> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(ours[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let mut sorted = ours.clone();
        sorted.sort_by_key(|s| u16::from(*s));
        stock.sort_by_key(|s| u16::from(*s));
        assert_eq!(sorted, stock, "the same suites, only reordered");
    }
}
