//! `fleetctl mcp`: Fleet's tools for the agents themselves, a Model
//! Context Protocol server on stdio (the official SDK, `rmcp`) that an
//! agent's runtime starts (hostd adds it to an agent's launch when the
//! roster says `mcp: true`). Every call goes to the agent's own hostd over
//! the local socket marked as an agent's ([`CALLER_HEADER`]); hostd finds
//! which agent from the process's place in its pane and holds the call to
//! that agent's `may:` grants — nothing a model passes in a tool's
//! arguments names who it is.

use std::sync::{Arc, Mutex};

use fleet_proto::identity::CALLER_HEADER;
use fleet_proto::v1::fleet_client::FleetClient;
use fleet_proto::v1::{
    AgentRow, AgentStatus, EventsRequest, Health, ListAgentsRequest, NeedHumanRequest, Selector,
    SendRequest, Verdict,
};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, ServiceExt, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use tonic::transport::Channel;

use crate::{Failure, client};

/// Events a call returns at most.
const EVENTS_MAX: u32 = 200;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PsParams {
    /// Agent name or shell glob (`worker-*`).
    pub name: Option<String>,
    /// idle, busy, waiting or unknown.
    pub status: Option<String>,
    /// healthy, stale or unknown.
    pub health: Option<String>,
    /// The roster class (orchestrator, worker, reviewer …).
    pub class: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SendParams {
    /// The agent: NAME on this host, or HOST/NAME.
    pub agent: String,
    /// What to type into its input; Enter is pressed after it.
    pub text: String,
    /// Clear what its input box already holds first (a stale draft);
    /// without it such a send is refused rather than appended to.
    pub clear_draft: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct EventsParams {
    /// Only events about this agent (NAME or HOST/NAME).
    pub agent: Option<String>,
    /// Only these kinds, comma-separated (died, need-human, sent …).
    pub kind: Option<String>,
    /// How far back, in seconds (default 600).
    pub since_secs: Option<u64>,
    /// The newest this many (default 50, at most 200).
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct NeedHumanParams {
    /// What the human should look at, in a sentence or two.
    pub text: String,
}

/// The last digest this server returned, and when.
#[derive(Debug, Default)]
struct Last {
    text: String,
    at_ms: i64,
}

#[derive(Clone)]
pub struct FleetTools {
    client: FleetClient<Channel>,
    last_digest: Arc<Mutex<Last>>,
    tool_router: ToolRouter<Self>,
}

/// A request marked as an agent's.
fn ask<T>(body: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    r.metadata_mut().insert(
        CALLER_HEADER,
        tonic::metadata::MetadataValue::from_static("mcp"),
    );
    r
}

fn text(s: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(s.into())])
}

fn refused(s: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(s.into())])
}

fn status_error(what: &str, s: &tonic::Status) -> CallToolResult {
    refused(format!("{what}: {} ({:?})", s.message(), s.code()))
}

fn source_word(r: &AgentRow) -> &'static str {
    let hb = r.heartbeat.clone().unwrap_or_default();
    match fleet_proto::v1::HeartbeatSource::try_from(hb.source) {
        Ok(fleet_proto::v1::HeartbeatSource::Native) => "native",
        Ok(fleet_proto::v1::HeartbeatSource::Fallback) => "fallback",
        _ => "observed",
    }
}

/// One compact line per agent: what a model needs to decide, with where
/// the status came from.
fn ps_line(r: &AgentRow, now_ms: i64) -> String {
    let p = crate::ps::ps_row(r, now_ms);
    let idle = p
        .idle_seconds
        .map_or_else(|| "-".to_owned(), |s| format!("{s:.0}s"));
    let flags = if p.flags.is_empty() {
        String::new()
    } else {
        format!(" flags={}", p.flags.join(","))
    };
    format!(
        "{}/{} pane={} status={} ({}) health={} class={} runtime={} idle={idle}{flags}",
        p.host,
        p.name,
        p.pane,
        p.heartbeat.status,
        source_word(r),
        p.heartbeat.health,
        p.class,
        p.runtime,
    )
}

fn health_of(w: &str) -> Option<Health> {
    match w {
        "healthy" => Some(Health::Healthy),
        "stale" => Some(Health::Stale),
        "unknown" => Some(Health::Unknown),
        _ => None,
    }
}

fn status_of(w: &str) -> Option<AgentStatus> {
    match w {
        "idle" | "ok" => Some(AgentStatus::Ok),
        "busy" => Some(AgentStatus::Busy),
        "waiting" => Some(AgentStatus::Waiting),
        "unknown" => Some(AgentStatus::Unknown),
        _ => None,
    }
}

#[tool_router]
impl FleetTools {
    pub fn new(client: FleetClient<Channel>) -> Self {
        FleetTools {
            client,
            last_digest: Arc::default(),
            tool_router: Self::tool_router(),
        }
    }

    async fn rows(&self, selector: Option<Selector>) -> Result<Vec<AgentRow>, tonic::Status> {
        let mut c = self.client.clone();
        Ok(c.list_agents(ask(ListAgentsRequest { selector }))
            .await?
            .into_inner()
            .agents)
    }

    #[tool(
        description = "List the fleet's agents this agent may see, one line each: host/name, pane (alive/dead/missing), status (idle, busy, waiting = it asks a human, unknown) with where that came from (native = the runtime's own hooks, observed = read off its screen, fallback = only the process is known), health of its heartbeat, class, runtime, idle time and flags. Filter by name glob, status, health or class."
    )]
    async fn fleet_ps(
        &self,
        Parameters(p): Parameters<PsParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let mut sel = Selector::default();
        if let Some(n) = p.name.filter(|n| !n.is_empty()) {
            sel.names.push(n);
        }
        if let Some(s) = p.status.as_deref().filter(|s| !s.is_empty()) {
            let Some(st) = status_of(s) else {
                return Ok(refused(format!(
                    "status {s:?}: expected idle, busy, waiting or unknown"
                )));
            };
            sel.status.push(st as i32);
        }
        if let Some(h) = p.health.as_deref().filter(|h| !h.is_empty()) {
            let Some(he) = health_of(h) else {
                return Ok(refused(format!(
                    "health {h:?}: expected healthy, stale or unknown"
                )));
            };
            sel.health.push(he as i32);
        }
        let rows = match self.rows(Some(sel)).await {
            Ok(r) => r,
            Err(s) => return Ok(status_error("fleet_ps", &s)),
        };
        let now = fleet_proto::clock::now_ms();
        let lines: Vec<String> = rows
            .iter()
            .filter(|r| {
                p.class
                    .as_deref()
                    .is_none_or(|c| c.is_empty() || r.class == c)
            })
            .map(|r| ps_line(r, now))
            .collect();
        Ok(text(if lines.is_empty() {
            "no agent matches (or none this agent may see)".to_owned()
        } else {
            format!("{} agents\n{}", lines.len(), lines.join("\n"))
        }))
    }

    #[tool(
        description = "The fleet digest the first mate is pushed, pulled now: one line per agent this agent may see (pane, status, health, restarts). When nothing changed since this tool last answered, it says so with the time."
    )]
    async fn fleet_digest(&self) -> Result<CallToolResult, ErrorData> {
        let rows = match self.rows(None).await {
            Ok(r) => r,
            Err(s) => return Ok(status_error("fleet_digest", &s)),
        };
        let me = std::env::var(fleet_proto::heartbeat::ENV_AGENT).unwrap_or_default();
        let refs: Vec<&AgentRow> = rows.iter().collect();
        let digest = fleet_proto::digest::text(&refs, &me);
        let now = fleet_proto::clock::now_ms();
        let mut last = self.last_digest.lock().unwrap_or_else(|p| p.into_inner());
        if last.at_ms > 0 && last.text == digest {
            return Ok(text(format!(
                "no change since {} UTC ({} agents)",
                crate::render::clock_utc(last.at_ms),
                rows.len()
            )));
        }
        *last = Last {
            text: digest.clone(),
            at_ms: now,
        };
        Ok(text(digest))
    }

    #[tool(
        description = "Send a message to another agent: it is typed into that agent's input through its one-writer queue and Enter is pressed, then verified. The answer is the receipt: verdict accepted (the agent took it), queued (it is busy and will read it), draft (left unsubmitted in its box), unverifiable, or refused, with the evidence and the time it took. Only agents this agent's grants allow (may.send)."
    )]
    async fn fleet_send(
        &self,
        Parameters(p): Parameters<SendParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let mut c = self.client.clone();
        let req = SendRequest {
            agent: p.agent.clone(),
            text: p.text.into_bytes(),
            verify: true,
            clear_draft: p.clear_draft.unwrap_or(false),
            traceparent: fleet_proto::trace::TraceParent::fresh().to_string(),
            ..Default::default()
        };
        match c.send(ask(req)).await {
            Ok(r) => {
                let r = r.into_inner();
                let verdict = Verdict::word_of(r.verdict);
                let body = format!(
                    "verdict={verdict} agent={}/{} evidence={} elapsed_ms={} queued_ms={}{}{}",
                    r.host,
                    r.agent,
                    if r.evidence.is_empty() {
                        "-"
                    } else {
                        &r.evidence
                    },
                    r.elapsed_ms,
                    r.queued_ms,
                    if r.detail.is_empty() {
                        String::new()
                    } else {
                        format!("\n{}", r.detail)
                    },
                    if r.notes.is_empty() {
                        String::new()
                    } else {
                        format!("\nnotes: {}", r.notes.join("; "))
                    },
                );
                let ok = matches!(
                    Verdict::try_from(r.verdict),
                    Ok(Verdict::Accepted | Verdict::Queued | Verdict::Delivered)
                );
                Ok(if ok { text(body) } else { refused(body) })
            }
            Err(s) => Ok(status_error(&format!("fleet_send to {}", p.agent), &s)),
        }
    }

    #[tool(
        description = "Recent fleet events this agent may see (started, died, respawning, need-human, sent, waiting-for-human …), oldest first: time, host/agent, kind, message. Filter by agent, kinds and how far back."
    )]
    async fn fleet_events(
        &self,
        Parameters(p): Parameters<EventsParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let since = p.since_secs.unwrap_or(600).min(7 * 24 * 3600);
        let kinds: Vec<String> = p
            .kind
            .unwrap_or_default()
            .split(',')
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect();
        let req = EventsRequest {
            follow: false,
            agent: p.agent.unwrap_or_default(),
            kinds,
            since_unix_ms: fleet_proto::clock::now_ms()
                .saturating_sub(i64::try_from(since * 1000).unwrap_or(i64::MAX)),
            ..Default::default()
        };
        let mut c = self.client.clone();
        let mut stream = match c.events(ask(req)).await {
            Ok(s) => s.into_inner(),
            Err(s) => return Ok(status_error("fleet_events", &s)),
        };
        let mut lines = std::collections::VecDeque::new();
        let limit = p.limit.unwrap_or(50).clamp(1, EVENTS_MAX) as usize;
        loop {
            match stream.message().await {
                Ok(Some(e)) => {
                    let who = e.fields.get("who").map(|w| format!(" (by {w})"));
                    lines.push_back(format!(
                        "{} {}/{} {} {}{}",
                        crate::render::clock_utc(e.ts_unix_ms),
                        e.host,
                        if e.agent.is_empty() { "-" } else { &e.agent },
                        e.kind,
                        e.message,
                        who.unwrap_or_default()
                    ));
                    if lines.len() > limit {
                        lines.pop_front();
                    }
                }
                Ok(None) => break,
                Err(s) => return Ok(status_error("fleet_events", &s)),
            }
        }
        Ok(text(if lines.is_empty() {
            format!("no events in the last {since} s")
        } else {
            Vec::from(lines).join("\n")
        }))
    }

    #[tool(
        description = "Ask for a human: raises a need-human event with your text, which reaches the operators of this tenant and the first mate at once. Use it when you are blocked on a decision, a permission or information only a person has."
    )]
    async fn fleet_need_human(
        &self,
        Parameters(p): Parameters<NeedHumanParams>,
    ) -> Result<CallToolResult, ErrorData> {
        let mut c = self.client.clone();
        let req = NeedHumanRequest {
            text: p.text,
            traceparent: fleet_proto::trace::TraceParent::fresh().to_string(),
        };
        match c.need_human(ask(req)).await {
            Ok(r) => {
                let r = r.into_inner();
                Ok(text(format!(
                    "raised (event {}); {}",
                    r.event_seq,
                    if r.first_mate {
                        "the operators and the first mate are told"
                    } else {
                        "the operators are told (no first mate)"
                    }
                )))
            }
            Err(s) => Ok(status_error("fleet_need_human", &s)),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for FleetTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("fleet", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Fleet's tools: see the other agents of your fleet (fleet_ps, fleet_digest, \
                 fleet_events), message one (fleet_send: the receipt says whether it was \
                 accepted), and ask for a human (fleet_need_human). You act as yourself; what \
                 you may see and whom you may message is set by the operator.",
            )
    }
}

/// Serves on stdin/stdout until the runtime closes stdin.
pub async fn run(server: &client::Server) -> Result<(), Failure> {
    let client::Server::Local(_) = server else {
        return Err(Failure::Usage(
            "fleetctl mcp serves an agent through its own hostd (the local socket), not an aggregator"
                .into(),
        ));
    };
    let c = client::open(server).await?;
    let service = FleetTools::new(c)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| Failure::Other(format!("MCP start-up: {e}")))?;
    service
        .waiting()
        .await
        .map_err(|e| Failure::Other(format!("MCP: {e}")))?;
    Ok(())
}
