//! `fleetctl beat`: the native heartbeat writer for runtimes with hooks
//! (e.g. a prompt-submit hook runs `fleetctl beat --status busy --turn`,
//! a stop hook `fleetctl beat --status idle`).

use std::path::PathBuf;

use fleet_proto::heartbeat::{self, Beat, Status};

use crate::Failure;

pub struct BeatArgs {
    pub status: Status,
    pub model: Option<String>,
    pub turn: bool,
    pub file: Option<PathBuf>,
    pub pid: Option<u32>,
}

/// Writes one native beat: status as given; model and turn carried over
/// from the previous beat unless given (`--turn` adds one).
pub fn run(a: BeatArgs) -> Result<Beat, Failure> {
    let file = a
        .file
        .or_else(|| std::env::var_os(heartbeat::ENV_HEARTBEAT_FILE).map(PathBuf::from))
        .ok_or_else(|| {
            Failure::Usage(format!(
                "no heartbeat file: pass --file or run inside a fleet pane ({} is set there)",
                heartbeat::ENV_HEARTBEAT_FILE
            ))
        })?;
    if let Some(m) = &a.model
        && (m.is_empty() || m.len() > 200 || m.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(Failure::Usage(format!(
            "--model {m:?}: must be 1-200 characters without spaces"
        )));
    }
    let prev = heartbeat::read(&file).ok();
    let prev_turn = prev.as_ref().and_then(|b| b.turn);
    let beat = Beat {
        ts: time::OffsetDateTime::now_utc(),
        // The hook's parent is the runtime that ran it.
        pid: a.pid.unwrap_or_else(|| {
            rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32)
        }),
        status: a.status,
        model: a
            .model
            .or_else(|| prev.as_ref().and_then(|b| b.model.clone())),
        turn: if a.turn {
            Some(prev_turn.unwrap_or(0) + 1)
        } else {
            prev_turn
        },
        key: if a.turn {
            None
        } else {
            prev.as_ref().and_then(|b| b.key.clone())
        },
    };
    heartbeat::write_atomic(&file, &beat)
        .map_err(|e| Failure::Other(format!("cannot write {}: {e}", file.display())))?;
    heartbeat::touch_native_marker(&file).map_err(|e| {
        Failure::Other(format!(
            "cannot touch the native marker of {}: {e}",
            file.display()
        ))
    })?;
    Ok(beat)
}
