//! The local Unix socket: created 0600 in a 0700 directory, and every
//! request checked against the peer's credentials — only hostd's own uid is
//! served (root included only when hostd itself runs as root).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("another fleet-hostd is already serving {0}")]
    InUse(PathBuf),
    #[error("{path}: {message}")]
    Unsafe { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SocketError + '_ {
    move |source| SocketError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Prepares the socket's directory and binds the socket.
pub async fn bind(path: &Path, uid: u32) -> Result<UnixListener, SocketError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    }
    let meta = std::fs::metadata(dir).map_err(io(dir))?;
    if meta.uid() != uid {
        return Err(SocketError::Unsafe {
            path: dir.to_owned(),
            message: format!("directory belongs to uid {}, not {uid}", meta.uid()),
        });
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(SocketError::InUse(path.to_owned()));
        }
        // A socket left by a hostd that died: nobody answers on it.
        std::fs::remove_file(path).map_err(io(path))?;
    }
    let listener = UnixListener::bind(path).map_err(io(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    Ok(listener)
}

/// The uid of a local-socket caller (none for a relayed command).
pub fn peer_uid<T>(req: &Request<T>) -> Option<u32> {
    req.extensions()
        .get::<UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
        .map(|cred| cred.uid())
}

/// How events name a local caller: its login name and uid.
pub fn local_operator(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("{} (uid {uid})", u.name),
        _ => format!("uid {uid}"),
    }
}

/// A tonic interceptor admitting only peers whose uid is `uid`.
pub fn same_uid(uid: u32) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let peer = req
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .map(|cred| cred.uid());
        match peer {
            Some(p) if p == uid => Ok(req),
            Some(p) => {
                tracing::warn!(peer_uid = p, "refused a client of another uid");
                Err(Status::permission_denied(format!(
                    "uid {p} may not use the fleet-hostd of uid {uid}: the local socket serves its own user only"
                )))
            }
            None => Err(Status::permission_denied(
                "peer credentials unavailable: refusing (default deny)",
            )),
        }
    }
}
