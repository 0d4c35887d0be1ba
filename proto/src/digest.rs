//! The change-only fleet digest: one line per managed agent with what
//! matters and no times, so an unchanged fleet gives an unchanged text. The
//! supervisor pushes it to the first mate; `fleetctl mcp`'s `fleet_digest`
//! pulls it.

use crate::v1::{AgentFlag, AgentRow, AgentStatus, Health, PaneState};
use crate::vocab::Flagged;

/// The digest of `rows`, leaving out the agent `skip` (the reader itself)
/// and rows that are not managed here.
pub fn text(rows: &[&AgentRow], skip: &str) -> String {
    let mut parts: Vec<String> = rows
        .iter()
        .filter(|r| {
            !r.has(AgentFlag::Unmanaged) && !r.has(AgentFlag::Unreachable) && r.name != skip
        })
        .map(|r| {
            let pane = match PaneState::try_from(r.pane) {
                Ok(PaneState::Alive) => "alive",
                Ok(PaneState::Dead) => "dead",
                _ => "missing",
            };
            let hb = r.heartbeat.as_ref();
            let st = hb
                .and_then(|h| AgentStatus::try_from(h.status).ok())
                .unwrap_or(AgentStatus::Unspecified)
                .word();
            let health = if hb.is_some_and(|h| h.health == Health::Healthy as i32) {
                "healthy"
            } else {
                "not-healthy"
            };
            format!("{} {pane} {st} {health} restarts={}", r.name, r.restarts)
        })
        .collect();
    parts.sort();
    format!("[fleet digest] {}", parts.join("; "))
}
