//! `fleetctl hosts`: one row per (tenant, host) with its link, versions,
//! agent counts and unit state.

use crate::render::{self, OutputArgs};
use crate::{Failure, client, ps};

/// `fleetctl hosts` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct HostsArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// Only hosts named so: exact names or shell globs ('gpu-*').
    #[arg(value_name = "HOST-GLOB")]
    pub hosts: Vec<String>,
    /// Only this tenant (repeatable, comma-separated).
    #[arg(long = "tenant", value_name = "TENANT", value_delimiter = ',')]
    pub tenants: Vec<String>,
    #[command(flatten)]
    pub conn: crate::client::Conn,
}

/// LINK: how the host is reached, and each of its own links up (a hostd
/// whose uplink fails says so, not just `local`).
pub fn link_cell(h: &fleet_proto::v1::HostRow) -> render::Cell {
    use render::Colour;
    let mut text = h.link.clone();
    let mut bad = h.link == "unreachable";
    for u in &h.uplinks {
        text.push_str(&format!(", up {} {}", u.address, u.state));
        if u.state != "connected" {
            bad = true;
            if !u.error.is_empty() {
                text.push_str(&format!(" ({})", u.error));
            }
        }
    }
    (text, if bad { Colour::Red } else { Colour::None })
}

pub async fn run(server: &client::Server, a: HostsArgs) -> Result<(), Failure> {
    use std::io::Write;
    let selector = crate::select::SelectArgs {
        tenants: a.tenants,
        hosts: a.hosts,
        ..Default::default()
    }
    .check()?;
    let mut c = client::open(server).await?;
    let resp = c
        .list_hosts(fleet_proto::v1::ListHostsRequest { selector })
        .await?
        .into_inner();
    let doc = ps::document(&[], &resp.hosts, resp.generated_at_unix_ms);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if a.output.format() == render::Format::Name {
        for h in &resp.hosts {
            let name = format!("{}/{}", h.tenant_id, h.host);
            writeln!(out, "{}", render::printable(&name, false))?;
        }
        out.flush()?;
        return Ok(());
    }
    if a.output.format() == render::Format::Json {
        serde_json::to_writer_pretty(
            &mut out,
            &serde_json::json!({"schema": "fleet.hosts/v1", "hosts": doc.hosts}),
        )?;
        writeln!(out)?;
        out.flush()?;
        return Ok(());
    }
    use render::{Colour, Column};
    let cols = [
        Column {
            header: "TENANT",
            priority: 5,
        },
        Column {
            header: "HOST",
            priority: 9,
        },
        Column {
            header: "LINK",
            priority: 8,
        },
        Column {
            header: "LAST-SEEN",
            priority: 6,
        },
        Column {
            header: "VERSION",
            priority: 2,
        },
        Column {
            header: "TMUX",
            priority: 4,
        },
        Column {
            header: "AGENTS",
            priority: 8,
        },
        Column {
            header: "ALIVE",
            priority: 7,
        },
        Column {
            header: "HEALTHY",
            priority: 7,
        },
        Column {
            header: "UNIT",
            priority: 3,
        },
        Column {
            header: "FLAGS",
            priority: 6,
        },
    ];
    let rows: Vec<Vec<render::Cell>> = resp
        .hosts
        .iter()
        .map(|h| {
            let unit = h.unit.clone().unwrap_or_default();
            let p = |s: String| (s, Colour::None);
            vec![
                p(h.tenant_id.clone()),
                p(h.host.clone()),
                link_cell(h),
                p(if h.last_seen_unix_ms > 0 {
                    format!(
                        "{}s ago",
                        (resp.generated_at_unix_ms - h.last_seen_unix_ms).max(0) / 1000
                    )
                } else {
                    "-".into()
                }),
                p(h.hostd_version.clone()),
                p(format!(
                    "-L {} ({})",
                    h.tmux_socket,
                    if h.tmux_running { "up" } else { "down" }
                )),
                p(h.agents_total.to_string()),
                p(h.agents_alive.to_string()),
                p(h.agents_healthy.to_string()),
                p(if unit.known {
                    format!(
                        "{} {}/{} linger={}",
                        unit.unit, unit.active, unit.enabled, unit.linger
                    )
                } else {
                    format!("unknown ({})", unit.reason)
                }),
                p(if h.flags.is_empty() {
                    "-".into()
                } else {
                    h.flags.join(",")
                }),
            ]
        })
        .collect();
    out.write_all(render::table(&cols, &rows, a.output.style()).as_bytes())?;
    out.flush()?;
    Ok(())
}
