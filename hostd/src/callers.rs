//! Who calls on the local socket. Every peer is hostd's own uid (the
//! socket admits no other); a request that says it comes from an agent
//! (`fleetctl mcp`, header [`CALLER_HEADER`]) is that agent only if the
//! calling process runs inside the agent's pane — found from its pid
//! (SO_PEERCRED) up its parents in /proc to a pane's pid, never from what
//! the request or its environment claims — and is then held to the agent's
//! `may:` grants. A caller that says "agent" and is in no pane is refused.

use std::collections::HashMap;

use fleet_proto::reach::subject;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use crate::roster::{Grants, Roster};
use crate::table::View;

pub use fleet_proto::identity::CALLER_HEADER;

/// Parents followed up from the caller at most (a pane's process tree is
/// shallow; a longer chain is not a pane's).
const MAX_DEPTH: usize = 64;

/// On a command relayed by an aggregator: whom it verified (an operator's
/// SPIFFE identity, or an agent's subject for a call it checked).
#[derive(Debug, Clone)]
pub struct RelayedFor(pub String);

/// An agent calling about the fleet.
#[derive(Debug, Clone)]
pub struct AgentCaller {
    pub name: String,
    /// `agent:TENANT/HOST/NAME`.
    pub subject: String,
    pub grants: Grants,
}

#[derive(Debug, Clone)]
pub enum Caller {
    /// The uid's operator (every local caller not asking as an agent).
    Operator,
    Agent(AgentCaller),
}

/// The parent of `pid`, from `/proc/PID/stat` (after the command's
/// closing parenthesis: state, then ppid).
fn parent(pid: u32) -> Option<u32> {
    let stat = fleet_proto::heartbeat::read_bounded(
        std::path::Path::new(&format!("/proc/{pid}/stat")),
        4096,
    )
    .ok()?;
    let stat = String::from_utf8_lossy(&stat);
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The agent whose pane `pid` runs in, if any: `pid` or one of its
/// ancestors is a pane's process.
pub fn pane_of(pid: u32, panes: &HashMap<u32, String>) -> Option<String> {
    let mut p = pid;
    for _ in 0..MAX_DEPTH {
        if let Some(name) = panes.get(&p) {
            return Some(name.clone());
        }
        match parent(p) {
            Some(pp) if pp > 1 && pp != p => p = pp,
            _ => return None,
        }
    }
    None
}

/// Who `req` comes from.
pub fn identify<T>(req: &Request<T>, view: &View, roster: &Roster) -> Result<Caller, Status> {
    if req.metadata().get(CALLER_HEADER).is_none() {
        return Ok(Caller::Operator);
    }
    let pid = req
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|i| i.peer_cred)
        .and_then(|c| c.pid())
        .and_then(|p| u32::try_from(p).ok())
        .ok_or_else(|| {
            Status::permission_denied(
                "an agent's request must come over the local socket from its pane (no peer pid)",
            )
        })?;
    let panes: HashMap<u32, String> = view
        .agents
        .iter()
        .filter(|r| r.pane_pid > 1)
        .map(|r| (r.pane_pid, r.name.clone()))
        .collect();
    let name = pane_of(pid, &panes).ok_or_else(|| {
        Status::permission_denied(format!(
            "process {pid} asks as an agent but runs in no agent's pane on this host"
        ))
    })?;
    let grants = roster
        .agent(&name)
        .map(|s| s.may.clone())
        .unwrap_or_default();
    Ok(Caller::Agent(AgentCaller {
        subject: subject(&view.host.tenant_id, &view.host.host, &name),
        name,
        grants,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_found_under_its_parent_and_not_elsewhere() {
        let me = std::process::id();
        let up = parent(me).expect("a parent");
        let panes: HashMap<u32, String> = [(up, "a".to_owned())].into();
        assert_eq!(pane_of(me, &panes).as_deref(), Some("a"));
        let elsewhere: HashMap<u32, String> = [(u32::MAX - 1, "b".to_owned())].into();
        assert_eq!(pane_of(me, &elsewhere), None);
    }
}
