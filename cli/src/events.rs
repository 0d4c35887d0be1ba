//! `fleetctl events`: lifecycle events, the retained backlog then live.

use std::io::Write;

use fleet_proto::v1::{Event, EventsRequest};

use crate::{Failure, client};

/// Event kinds shown only when asked for with `--kind` (one per turn).
pub const QUIET_KINDS: &[&str] = &["turn-started", "turn-ended"];

/// `fleetctl events` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct EventsArgs {
    /// One JSON object per line (the same as -o json).
    #[arg(long)]
    pub json: bool,
    /// json: one JSON object per line.
    #[arg(short = 'o', long = "output", value_name = "FORMAT", value_parser = ["json", "text"])]
    pub output: Option<String>,
    /// Print the retained backlog and exit instead of following.
    #[arg(long)]
    pub no_follow: bool,
    /// Only events about this agent: AGENT, HOST/AGENT or
    /// TENANT/HOST/AGENT (the same address `send` takes).
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// Only events of agents named so: exact names or shell globs
    /// ('coder-*'); host-level events are then left out.
    #[arg(value_name = "NAME-GLOB")]
    pub names: Vec<String>,
    /// Only events of this tenant (repeatable, comma-separated).
    #[arg(long = "tenant", value_name = "TENANT", value_delimiter = ',')]
    pub tenants: Vec<String>,
    /// Only events of hosts named so: exact or a glob.
    #[arg(long = "host", value_name = "HOST-GLOB", value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Only events since WHEN: a DURATION ago (90s, 15m, 2h, 1d) or an
    /// RFC 3339 time. Older than what the server keeps in memory, it is
    /// read from its durable history, then followed live.
    #[arg(long, value_name = "WHEN", value_parser = crate::select::parse_when)]
    pub since: Option<i64>,
    /// Only events until WHEN (the same forms); the window is printed and
    /// not followed.
    #[arg(long, value_name = "WHEN", value_parser = crate::select::parse_when)]
    pub until: Option<i64>,
    /// Only events after this sequence number.
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    pub after: u64,
    /// Only events of this kind (repeatable). Without it every kind but
    /// the per-turn `turn-started` / `turn-ended` is shown; ask for
    /// those by name.
    #[arg(long, value_name = "KIND", value_delimiter = ',')]
    pub kind: Vec<String>,
    #[command(flatten)]
    pub conn: crate::client::Conn,
}

pub async fn run(server: &client::Server, a: EventsArgs) -> Result<(), Failure> {
    let json = a.json || a.output.as_deref() == Some("json");
    let kinds = a.kind;
    if let Some(agent) = &a.agent {
        fleet_proto::address::Address::parse(agent).map_err(|e| Failure::Usage(e.to_string()))?;
    }
    for k in &kinds {
        if fleet_proto::v1::EventKind::from_word(k).is_none() {
            return Err(Failure::Usage(format!(
                "{k:?} is no event kind (see `fleetctl events --help`)"
            )));
        }
    }
    let select = crate::select::SelectArgs {
        names: a.names,
        tenants: a.tenants,
        hosts: a.hosts,
        ..Default::default()
    }
    .check()?;
    let since_unix_ms = a.since.unwrap_or(0);
    let until_unix_ms = a.until.unwrap_or(0);
    if until_unix_ms > 0 && since_unix_ms > until_unix_ms {
        return Err(Failure::Usage("--since is after --until".into()));
    }
    let mut client = client::open(server).await?;
    let mut stream = client
        .events(EventsRequest {
            follow: !a.no_follow && until_unix_ms == 0,
            after_seq: a.after,
            agent: a.agent.unwrap_or_default(),
            kinds: kinds.clone(),
            selector: select,
            since_unix_ms,
            until_unix_ms,
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
