//! Connecting to a `Fleet` server: the local hostd over its Unix socket.

use std::path::{Path, PathBuf};

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
    let channel = Endpoint::from_static("http://hostd.local")
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
