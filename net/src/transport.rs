//! gRPC over mTLS with certificates that rotate: a listener that completes
//! handshakes concurrently and tags each connection with the peer's fleet
//! identity, and a dialer that checks who answered. tonic's own TLS settings
//! are static, so both sides drive rustls themselves.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

use crate::tls;
use fleet_proto::identity::Identity;

/// A handshake that has not finished after this long is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The listen queue an aggregator asks for. Every host dials a restarted
/// aggregator within a second or so; with the default queue (1,024) the
/// kernel dropped thousands of those connections per restart of 10,000
/// hosts (`nstat` ListenOverflows), and each dropped host waited out a SYN
/// retransmission (1 s, then 3 s). The kernel caps the queue at
/// `net.core.somaxconn` (4,096 on current kernels).
pub const LISTEN_BACKLOG: u32 = 65_535;

/// A TCP listener on `addr` with [`LISTEN_BACKLOG`], the address reusable
/// at once after a restart (as `TcpListener::bind` does).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Who is on the other end of one accepted connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: Option<SocketAddr>,
    /// The identity in the client certificate; `None` on a plaintext
    /// development listener.
    pub identity: Option<Identity>,
}

/// The identity of the caller of a request served through [`incoming`].
pub fn peer_of<T>(req: &tonic::Request<T>) -> Option<&Peer> {
    req.extensions().get::<Peer>()
}

/// One accepted connection: TLS or (development only) plain TCP.
pub struct Conn {
    io: ConnIo,
    peer: Peer,
}

enum ConnIo {
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Plain(TcpStream),
}

impl Connected for Conn {
    type ConnectInfo = Peer;
    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            ConnIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().io {
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            ConnIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            ConnIo::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ConnIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A refused or failed handshake, for the embedder's security log.
#[derive(Debug, Clone)]
pub struct Refused {
    pub addr: SocketAddr,
    pub reason: String,
}

/// How [`incoming`] treats connections.
pub enum Security {
    /// mTLS: the client must present a certificate from the configured CA
    /// carrying exactly one fleet identity.
    Mtls(Arc<rustls::ServerConfig>),
    /// Plain TCP with no identity. Only for a loopback development listener.
    DevPlaintext,
}

/// Accepts connections on `listener`, completing each handshake on its own
/// task so one slow or hostile client cannot hold up the others. Refusals
/// are reported on `refused` (never more than the channel holds).
pub fn incoming(
    listener: TcpListener,
    security: Security,
    refused: Option<tokio::sync::mpsc::Sender<Refused>>,
) -> ReceiverStream<Result<Conn, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let security = Arc::new(security);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let tx = tx.clone();
            let security = security.clone();
            let refused = refused.clone();
            tokio::spawn(async move {
                let conn = match &*security {
                    Security::DevPlaintext => Ok(Conn {
                        io: ConnIo::Plain(tcp),
                        peer: Peer {
                            addr: Some(addr),
                            identity: None,
                        },
                    }),
                    Security::Mtls(cfg) => handshake(cfg.clone(), tcp, addr).await,
                };
                match conn {
                    Ok(c) => {
                        let _ = tx.send(Ok(c)).await;
                    }
                    Err(reason) => {
                        tracing::info!(%addr, %reason, "connection refused");
                        if let Some(r) = refused {
                            let _ = r.try_send(Refused { addr, reason });
                        }
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn handshake(
    cfg: Arc<rustls::ServerConfig>,
    tcp: TcpStream,
    addr: SocketAddr,
) -> Result<Conn, String> {
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let identity = {
        let certs = tls
            .get_ref()
            .1
            .peer_certificates()
            .ok_or("no client certificate")?;
        let leaf = certs.first().ok_or("no client certificate")?;
        tls::peer_identity(leaf).map_err(|e| e.to_string())?
    };
    Ok(Conn {
        io: ConnIo::Tls(Box::new(tls)),
        peer: Peer {
            addr: Some(addr),
            identity: Some(identity),
        },
    })
}

/// Where and how to dial.
#[derive(Clone)]
pub struct Dial {
    /// `host:port` (an `https://` prefix is accepted and ignored).
    pub address: String,
    /// `None` dials plain TCP (development listener on loopback only).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Name checked against the server certificate (default: the host part
    /// of `address`).
    pub server_name: Option<String>,
}

impl Dial {
    fn host_port(&self) -> &str {
        let a = self.address.trim_end_matches('/');
        a.strip_prefix("https://")
            .or_else(|| a.strip_prefix("http://"))
            .unwrap_or(a)
    }

    fn host(&self) -> String {
        let hp = self.host_port();
        let host = match hp.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => hp,
        };
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned()
    }
}

/// HTTP/2 keepalive both peers use (tonic's default is off).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a dial failed, as a type a client can match on (it reaches the
/// caller inside tonic's error chain: see [`DialError::find`]).
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("bad address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("bad server name {name:?}: {reason}")]
    ServerName { name: String, reason: String },
    #[error("{address} does not resolve: {source}")]
    Resolve {
        address: String,
        source: std::io::Error,
    },
    #[error("nothing listens at {address}: {source}")]
    Refused {
        address: String,
        source: std::io::Error,
    },
    #[error("no answer from {address} within {after:?}")]
    Timeout { address: String, after: Duration },
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    /// The server's certificate is not trusted (CA or name).
    #[error("the server's certificate is not trusted: {0}")]
    Untrusted(rustls::Error),
    /// The handshake broke off: the server refused or closed.
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("the server sent no certificate")]
    NoCertificate,
    #[error("the server is {0}, not a fleet aggregator")]
    NotAggregator(String),
    #[error("server certificate: {0}")]
    Identity(String),
}

impl DialError {
    /// The dial error somewhere in `err`'s source chain, if one is there.
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a DialError> {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(d) = e.downcast_ref::<DialError>() {
                return Some(d);
            }
            cur = e.source();
        }
        None
    }
}

/// A lazily connecting channel to `dial`; every (re)connect checks that the
/// server presents the aggregator identity, and gives up after
/// `connect_timeout`.
pub fn channel(dial: &Dial, connect_timeout: Duration) -> Result<Channel, DialError> {
    let uri = format!("http://{}", dial.host_port());
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| DialError::Address {
            address: dial.address.clone(),
            reason: e.to_string(),
        })?
        // Ours below bounds the whole dial; tonic's is the backstop.
        .connect_timeout(connect_timeout + Duration::from_secs(1))
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    let dial = dial.clone();
    let name = dial.server_name.clone().unwrap_or_else(|| dial.host());
    let server_name = ServerName::try_from(name.clone()).map_err(|e| DialError::ServerName {
        name: name.clone(),
        reason: e.to_string(),
    })?;
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
            let dial = dial.clone();
            let server_name = server_name.clone();
            async move {
                match tokio::time::timeout(connect_timeout, connect(&dial, server_name)).await {
                    Ok(c) => c.map(TokioIo::new),
                    Err(_) => Err(DialError::Timeout {
                        address: dial.address.clone(),
                        after: connect_timeout,
                    }),
                }
            }
        })),
    )
}

/// A client connection: TLS, or plain TCP for a development listener.
pub enum ClientConn {
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Plain(TcpStream),
}
impl AsyncRead for ClientConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientConn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            ClientConn::Plain(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}
impl AsyncWrite for ClientConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientConn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            ClientConn::Plain(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientConn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            ClientConn::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientConn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ClientConn::Plain(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

async fn connect(dial: &Dial, server_name: ServerName<'static>) -> Result<ClientConn, DialError> {
    let address = || dial.address.clone();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(dial.host_port())
        .await
        .map_err(|source| DialError::Resolve {
            address: address(),
            source,
        })?
        .collect();
    let tcp = TcpStream::connect(addrs.as_slice())
        .await
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::ConnectionRefused => DialError::Refused {
                address: address(),
                source,
            },
            _ => DialError::Connect {
                address: address(),
                source,
            },
        })?;
    tcp.set_nodelay(true).map_err(|source| DialError::Connect {
        address: address(),
        source,
    })?;
    let Some(cfg) = &dial.tls else {
        return Ok(ClientConn::Plain(tcp));
    };
    let tls = tokio_rustls::TlsConnector::from(cfg.clone())
        .connect(server_name, tcp)
        .await
        .map_err(|e| {
            // rustls reports a certificate it refused inside the io error.
            match e.get_ref().and_then(|r| r.downcast_ref::<rustls::Error>()) {
                Some(r @ rustls::Error::InvalidCertificate(_)) => DialError::Untrusted(r.clone()),
                _ => DialError::Handshake(e),
            }
        })?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or(DialError::NoCertificate)?;
    match tls::peer_identity(leaf) {
        Ok(Identity::Aggregator { .. }) => Ok(ClientConn::Tls(Box::new(tls))),
        Ok(other) => Err(DialError::NotAggregator(other.to_string())),
        Err(e) => Err(DialError::Identity(e.to_string())),
    }
}

/// Tells systemd (`Type=notify`, when `NOTIFY_SOCKET` is set) that the
/// daemon serves now — with `status` (`STATUS=…`), e.g. the address it
/// bound, which a supervisor or a test reads to learn a port 0 listener's
/// port — and that it is stopping once `shutdown` turns true. Both daemons
/// announce themselves through this.
pub fn notify_ready(status: Option<&str>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    use sd_notify::NotifyState;
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let mut states = Vec::with_capacity(2);
    if let Some(s) = status {
        states.push(NotifyState::Status(s));
    }
    states.push(NotifyState::Ready);
    if let Err(e) = sd_notify::notify(false, &states) {
        tracing::warn!(error = %e, "cannot tell systemd this daemon is ready");
    }
    tokio::spawn(async move {
        if shutdown.wait_for(|s| *s).await.is_ok() {
            let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
        }
    });
}

/// Serves until `server` ends by itself, or until `drain` after `shutdown`
/// turned true (calls still running then are dropped): a stop never waits
/// on a peer.
pub async fn drained<E>(
    server: impl std::future::Future<Output = Result<(), E>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    drain: std::time::Duration,
) -> Result<(), E> {
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r,
        () = async {
            if shutdown.wait_for(|s| *s).await.is_err() {
                // No stop can come any more: serve for as long as it runs.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(drain).await;
        } => {
            tracing::warn!(?drain, "calls still running after the drain; closing them");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's cap on any listen queue.
    fn somaxconn() -> usize {
        std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096)
    }

    /// A burst of dials larger than the default queue (1,024), none of
    /// them accepted yet, all connect at once: none is dropped to wait out
    /// a SYN retransmission.
    #[tokio::test]
    async fn a_burst_of_dials_waits_in_the_listen_queue_instead_of_being_dropped() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let n = somaxconn().saturating_sub(16).min(2_000);
        let dials: Vec<_> = (0..n)
            .map(|_| {
                tokio::spawn(tokio::time::timeout(
                    Duration::from_millis(800),
                    TcpStream::connect(addr),
                ))
            })
            .collect();
        let mut connected = 0;
        let mut held = Vec::new();
        for d in dials {
            if let Ok(Ok(Ok(s))) = d.await {
                connected += 1;
                held.push(s);
            }
        }
        assert_eq!(connected, n, "of {n} dials only {connected} connected");
        // And the queue hands them over.
        let (first, _) = listener.accept().await.unwrap();
        drop(first);
    }

    #[tokio::test]
    async fn a_restart_binds_the_same_port_at_once() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        // The server side closes first: its end lingers in TIME_WAIT.
        drop(server);
        drop(client);
        drop(listener);
        listen(addr).unwrap();
    }
}
