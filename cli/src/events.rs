//! `fleetctl events`: lifecycle events, the retained backlog then live.

use std::io::Write;

use fleet_proto::v1::{Event, EventsRequest};

use crate::{Failure, client};

/// Event kinds shown only when asked for with `--kind` (one per turn).
pub const QUIET_KINDS: &[&str] = &["turn-started", "turn-ended"];

pub async fn run(
    server: &client::Server,
    json: bool,
    follow: bool,
    agent: Option<String>,
    after: u64,
    kinds: Vec<String>,
) -> Result<(), Failure> {
    if let Some(a) = &agent {
        fleet_proto::address::Address::parse(a).map_err(|e| Failure::Usage(e.to_string()))?;
    }
    let mut client = client::open(server).await?;
    let mut stream = client
        .events(EventsRequest {
            follow,
            after_seq: after,
            agent: agent.unwrap_or_default(),
            kinds: kinds.clone(),
        })
        .await?
        .into_inner();
    while let Some(e) = stream.message().await? {
        // Older servers ignore `kinds`: filter here too.
        let wanted = if kinds.is_empty() {
            !QUIET_KINDS.contains(&e.kind.as_str())
        } else {
            kinds.contains(&e.kind)
        };
        if !wanted {
            continue;
        }
        let mut out = std::io::stdout().lock();
        if json {
            serde_json::to_writer(&mut out, &event_json(&e))?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}", event_line(&e))?;
        }
        out.flush()?;
    }
    Ok(())
}

pub fn event_json(e: &Event) -> serde_json::Value {
    let fields: std::collections::BTreeMap<_, _> = e.fields.iter().collect();
    serde_json::json!({
        "seq": e.seq,
        "ts": rfc3339(e.ts_unix_ms),
        "ts_unix_ms": e.ts_unix_ms,
        "tenant_id": e.tenant_id,
        "host": e.host,
        "agent": e.agent,
        "kind": e.kind,
        "message": e.message,
        "fields": fields,
    })
}

pub fn event_line(e: &Event) -> String {
    let who = if e.agent.is_empty() {
        format!("{}/{}", e.tenant_id, e.host)
    } else {
        format!("{}/{}/{}", e.tenant_id, e.host, e.agent)
    };
    let line = format!(
        "{}  {:<6} {who}  {}  {}",
        rfc3339(e.ts_unix_ms),
        e.seq,
        e.kind,
        e.message
    );
    // Every part but the time and the number came from a peer or an agent.
    crate::render::printable(&line, false).into_owned()
}

fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
