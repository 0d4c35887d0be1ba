//! Connecting to a `Fleet` server: the local hostd over its Unix socket, or
//! a fleet-aggregator over mTLS with an operator certificate.

use fleet_net::transport::DialError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fleet_proto::v1::fleet_client::FleetClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use crate::Failure;

/// Largest response fleetctl accepts (a full snapshot of a big fleet).
pub const MAX_DECODE: usize = 64 * 1024 * 1024;

/// The socket to use: `--socket`, else `FLEET_SOCKET`, else the default.
pub fn socket_path(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_owned)
        .or_else(|| std::env::var_os("FLEET_SOCKET").map(PathBuf::from))
        .unwrap_or_else(fleet_proto::paths::current_default_socket)
}

/// Connects to the hostd at `socket`, with an error that says what to do
/// when nothing is there.
pub async fn connect(socket: &Path) -> Result<FleetClient<Channel>, Failure> {
    if !socket.exists() {
        return Err(Failure::Unavailable(format!(
            "no fleet-hostd is running for this user (no socket at {}).\n\
             start one: `fleet-hostd --roster ROSTER.yaml` (or `systemctl --user start fleet-hostd`),\n\
             or run the demo fleet: `fleetctl demo`",
            socket.display()
        )));
    }
    let path = socket.to_owned();
    // The URI is required by tonic but unused: the connector dials the socket.
    // One window for a whole answer: a 500-agent list arrives without
    // waiting for window updates.
    let channel = Endpoint::from_static("http://hostd.local")
        .initial_stream_window_size(Some(WINDOW))
        .initial_connection_window_size(Some(WINDOW))
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(s))
            }
        }))
        .await
        .map_err(|e| {
            let detail = std::error::Error::source(&e)
                .map(ToString::to_string)
                .unwrap_or_else(|| e.to_string());
            Failure::Unavailable(format!(
                "cannot connect to fleet-hostd at {}: {detail}\n\
                 (a socket left by a stopped hostd? start fleet-hostd again)",
                socket.display()
            ))
        })?;
    Ok(FleetClient::new(channel).max_decoding_message_size(MAX_DECODE))
}

/// HTTP/2 flow-control window fleetctl offers: answers up to this size
/// need no round trip for more window.
const WINDOW: u32 = 8 * 1024 * 1024;

/// How to reach an aggregator, given before the verb (flags, `FLEET_*`
/// variables, or a named context in fleetctl.toml).
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Connection")]
pub struct Remote {
    /// Use this context of ~/.config/fleet/fleetctl.toml (`fleetctl
    /// contexts` lists them); flags and variables override its fields.
    #[arg(long, env = "FLEET_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
    /// Talk to this fleet-aggregator (HOST:PORT) instead of the local hostd.
    #[arg(long, env = "FLEET_AGGREGATOR", value_name = "HOST:PORT")]
    pub aggregator: Option<String>,
    /// CA certificate that signed the aggregator's certificate.
    #[arg(long, env = "FLEET_CA", value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Your operator certificate (spiffe://TD/operator/NAME).
    #[arg(long, env = "FLEET_CERT", value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// The key of --cert.
    #[arg(long, env = "FLEET_KEY", value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// Name to check the aggregator's certificate against (default: the
    /// host part of --aggregator).
    #[arg(long, env = "FLEET_SERVER_NAME", value_name = "NAME")]
    pub server_name: Option<String>,
}

/// The same connection flags given after a verb that connects (they win
/// over those before it; the variables are read before the verb). Verbs
/// that never connect (certs, demo, init …) do not take them.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Connection")]
pub struct Conn {
    /// hostd socket to talk to (or FLEET_SOCKET).
    #[arg(long = "socket", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Use this context of fleetctl.toml (or FLEET_CONTEXT).
    #[arg(long = "context", value_name = "NAME")]
    pub context: Option<String>,
    /// Talk to this fleet-aggregator (or FLEET_AGGREGATOR).
    #[arg(long = "aggregator", value_name = "HOST:PORT")]
    pub aggregator: Option<String>,
    /// CA certificate of the aggregator's (or FLEET_CA).
    #[arg(long = "ca", value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Your operator certificate (or FLEET_CERT).
    #[arg(long = "cert", value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// The key of --cert (or FLEET_KEY).
    #[arg(long = "key", value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// Name to check the aggregator's certificate against (or
    /// FLEET_SERVER_NAME).
    #[arg(long = "server-name", value_name = "NAME")]
    pub server_name: Option<String>,
}

impl Conn {
    /// `socket` and `remote` with this verb's flags put over them.
    pub fn over(&self, socket: Option<PathBuf>, mut remote: Remote) -> (Option<PathBuf>, Remote) {
        fn put<T: Clone>(to: &mut Option<T>, from: &Option<T>) {
            if from.is_some() {
                to.clone_from(from);
            }
        }
        put(&mut remote.context, &self.context);
        put(&mut remote.aggregator, &self.aggregator);
        put(&mut remote.ca, &self.ca);
        put(&mut remote.cert, &self.cert);
        put(&mut remote.key, &self.key);
        put(&mut remote.server_name, &self.server_name);
        (self.socket.clone().or(socket), remote)
    }
}

/// What this invocation talks to: `hostd` or `aggregator` (see [`peer`]).
static PEER: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// The server this invocation talks to, for error messages (`hostd` until
/// a [`Server`] is made).
pub fn peer() -> &'static str {
    PEER.get().copied().unwrap_or("hostd")
}

/// Where the verbs go.
#[derive(Debug, Clone)]
pub enum Server {
    Local(PathBuf),
    Aggregator(Remote),
}

impl Server {
    pub fn new(socket: Option<&Path>, remote: &Remote) -> Self {
        let server = match &remote.aggregator {
            Some(_) if socket.is_none() => Server::Aggregator(remote.clone()),
            _ => Server::Local(socket_path(socket)),
        };
        // Errors are worded for the server this invocation talks to.
        let _ = PEER.set(if server.is_aggregator() {
            "aggregator"
        } else {
            "hostd"
        });
        server
    }

    pub fn is_aggregator(&self) -> bool {
        matches!(self, Server::Aggregator(_))
    }
}

/// Connects to wherever `server` says.
pub async fn open(server: &Server) -> Result<FleetClient<Channel>, Failure> {
    match server {
        Server::Local(socket) => connect(socket).await,
        Server::Aggregator(r) => connect_remote(r).await,
    }
}

/// Connects to an aggregator over mTLS.
pub async fn connect_remote(r: &Remote) -> Result<FleetClient<Channel>, Failure> {
    let address = r.aggregator.clone().unwrap_or_default();
    let (Some(ca), Some(cert), Some(key)) = (&r.ca, &r.cert, &r.key) else {
        return Err(Failure::Usage(
            "an aggregator is reached over mTLS: give --ca, --cert and --key \
             (or FLEET_CA, FLEET_CERT, FLEET_KEY); `fleetctl certs issue operator` makes them"
                .into(),
        ));
    };
    let tls_err = |e: fleet_net::tls::TlsError| Failure::Usage(e.to_string());
    let me = fleet_net::tls::Reloading::load(cert, key).map_err(tls_err)?;
    let trust = fleet_net::tls::Trust::load(ca).map_err(tls_err)?;
    let cfg = fleet_net::tls::client_config(trust, me).map_err(tls_err)?;
    let dial = fleet_net::transport::Dial {
        address: address.clone(),
        tls: Some(Arc::new(cfg)),
        server_name: r.server_name.clone(),
    };
    let channel = fleet_net::transport::channel(&dial, Duration::from_secs(5))
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    // One cheap call so a refused handshake is reported as such, here.
    if let Err(s) = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
    {
        let dial = std::error::Error::source(&s).and_then(DialError::find);
        let detail = match dial {
            Some(d) => d.to_string(),
            None => {
                std::error::Error::source(&s).map_or_else(|| s.message().to_owned(), error_chain)
            }
        };
        return Err(Failure::Unavailable(format!(
            "cannot reach fleet-aggregator at {address}: {detail}{}",
            connect_hint(dial)
        )));
    }
    Ok(FleetClient::new(channel).max_decoding_message_size(MAX_DECODE))
}

/// An error and its sources in one line (wrappers often repeat their
/// source's text: said once).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let text = inner.to_string();
        if !msg.contains(&text) {
            msg = format!("{msg}: {text}");
        }
        cur = inner.source();
    }
    msg
}

/// What an operator should check, from why the first call failed.
fn connect_hint(dial: Option<&DialError>) -> &'static str {
    match dial {
        Some(DialError::Untrusted(_)) => {
            "\n  this client does not trust the aggregator's certificate: check --ca, and \
             --server-name when the address is not a name in that certificate"
        }
        Some(DialError::Refused { .. }) => {
            "\n  nothing listens there: is fleet-aggregator running, and is the address right?"
        }
        Some(DialError::Resolve { .. }) => {
            "\n  the aggregator's name does not resolve: check the address"
        }
        Some(DialError::Timeout { .. } | DialError::Connect { .. }) => {
            "\n  no answer: check the address and any firewall between"
        }
        Some(DialError::NotAggregator(_) | DialError::Identity(_) | DialError::NoCertificate) => {
            "\n  something other than a fleet aggregator answered: check the address"
        }
        // Under TLS 1.3 the server checks the client's certificate after
        // the client thinks the handshake is done, so a refusal shows as an
        // alert, a closed connection or a broken pipe, whichever comes first.
        Some(
            DialError::Handshake(_) | DialError::Address { .. } | DialError::ServerName { .. },
        )
        | None => {
            "\n  the aggregator closed the connection, as it does when it refused this client's \
         certificate (its audit log says why): is --cert issued by a CA in the \
         aggregator's bundle, and still valid?"
        }
    }
}
