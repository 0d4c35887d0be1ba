//! Selectors: which agents, hosts and events a read returns, applied by the
//! server (hostd and the aggregator) before anything is sent, and the
//! summary counts of what one admits. The wire form is `v1::Selector`; a
//! `Select` is it checked and compiled once per call.

use globset::{Glob, GlobMatcher};

use crate::v1::{
    AgentFlag, AgentRow, AgentStatus, Counts, Event, Health, HostRow, HostSummary, PaneState,
    Selector, Summary, TenantSummary,
};

/// Why a selector was refused (an `INVALID_ARGUMENT` for the caller).
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("{what} pattern {pattern:?}: {why}")]
    Pattern {
        what: &'static str,
        pattern: String,
        why: String,
    },
    #[error("selector {what}: unknown value {value}")]
    Value { what: &'static str, value: i32 },
}

impl From<SelectError> for tonic::Status {
    fn from(e: SelectError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// A name constraint: exact names are looked up, globs matched.
#[derive(Debug, Clone, Default)]
struct Names {
    exact: Vec<String>,
    globs: Vec<GlobMatcher>,
}

impl Names {
    fn new(what: &'static str, patterns: &[String]) -> Result<Self, SelectError> {
        let mut n = Names::default();
        for p in patterns {
            if p.contains(['*', '?', '[', '{']) {
                let g = Glob::new(p).map_err(|e| SelectError::Pattern {
                    what,
                    pattern: p.clone(),
                    why: e.kind().to_string(),
                })?;
                n.globs.push(g.compile_matcher());
            } else {
                n.exact.push(p.clone());
            }
        }
        Ok(n)
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.globs.is_empty()
    }

    fn admits(&self, name: &str) -> bool {
        self.is_empty()
            || self.exact.iter().any(|e| e == name)
            || self.globs.iter().any(|g| g.is_match(name))
    }
}

/// A checked, compiled selector.
#[derive(Debug, Clone, Default)]
pub struct Select {
    tenants: Vec<String>,
    hosts: Names,
    names: Names,
    health: Vec<Health>,
    status: Vec<AgentStatus>,
    pane: Vec<PaneState>,
    flags: Vec<AgentFlag>,
}

fn values<T: TryFrom<i32> + PartialEq>(
    what: &'static str,
    raw: &[i32],
) -> Result<Vec<T>, SelectError> {
    raw.iter()
        .map(|&v| T::try_from(v).map_err(|_| SelectError::Value { what, value: v }))
        .collect()
}

impl Select {
    /// Checks and compiles `s` (absent = every row).
    pub fn new(s: Option<&Selector>) -> Result<Self, SelectError> {
        let Some(s) = s else {
            return Ok(Self::default());
        };
        Ok(Self {
            tenants: s.tenants.clone(),
            hosts: Names::new("host", &s.hosts)?,
            names: Names::new("name", &s.names)?,
            health: values("health", &s.health)?,
            status: values("status", &s.status)?,
            pane: values("pane", &s.pane)?,
            flags: values("flag", &s.flags)?,
        })
    }

    /// Admits every row.
    pub fn is_all(&self) -> bool {
        self.tenants.is_empty() && self.hosts.is_empty() && !self.per_row()
    }

    /// Constrains rows by more than their host: a row's change can make
    /// it leave the selection.
    pub fn per_row(&self) -> bool {
        !(self.names.is_empty()
            && self.health.is_empty()
            && self.status.is_empty()
            && self.pane.is_empty()
            && self.flags.is_empty())
    }

    /// Admits the host (tenant and host constraints only).
    pub fn host(&self, tenant: &str, host: &str) -> bool {
        (self.tenants.is_empty() || self.tenants.iter().any(|t| t == tenant))
            && self.hosts.admits(host)
    }

    pub fn host_row(&self, h: &HostRow) -> bool {
        self.host(&h.tenant_id, &h.host)
    }

    /// Admits the agent row.
    pub fn agent(&self, r: &AgentRow) -> bool {
        let hb = r.heartbeat.as_ref();
        let health = hb.map_or(Health::Unknown, |h| {
            Health::try_from(h.health).unwrap_or(Health::Unknown)
        });
        let status = hb.map_or(AgentStatus::Unknown, |h| {
            AgentStatus::try_from(h.status).unwrap_or(AgentStatus::Unknown)
        });
        self.host(&r.tenant_id, &r.host)
            && self.names.admits(&r.name)
            && (self.health.is_empty() || self.health.contains(&health))
            && (self.status.is_empty() || self.status.contains(&status))
            && (self.pane.is_empty() || self.pane.iter().any(|p| *p as i32 == r.pane))
            && (self.flags.is_empty()
                || self
                    .flags
                    .iter()
                    .any(|f| r.flag_codes.contains(&(*f as i32))))
    }

    /// Admits the event: tenant, host and agent name only (a host-level
    /// event has no agent and passes only when no names are asked for).
    pub fn event(&self, e: &Event) -> bool {
        self.host(&e.tenant_id, &e.host)
            && (self.names.is_empty() || !e.agent.is_empty() && self.names.admits(&e.agent))
    }
}

impl Counts {
    /// Counts one more agent.
    pub fn add(&mut self, r: &AgentRow) {
        let hb = r.heartbeat.as_ref();
        self.agents += 1;
        match hb.and_then(|h| Health::try_from(h.health).ok()) {
            Some(Health::Healthy) => self.healthy += 1,
            Some(Health::Stale) => self.stale += 1,
            _ => self.health_unknown += 1,
        }
        match hb.and_then(|h| AgentStatus::try_from(h.status).ok()) {
            Some(AgentStatus::Ok) => self.idle += 1,
            Some(AgentStatus::Busy) => self.busy += 1,
            Some(AgentStatus::Waiting) => self.waiting += 1,
            _ => self.status_unknown += 1,
        }
        match PaneState::try_from(r.pane) {
            Ok(PaneState::Alive) => self.alive += 1,
            Ok(PaneState::Dead) => self.dead += 1,
            _ => self.missing += 1,
        }
    }

    fn merge(&mut self, o: &Counts) {
        self.agents += o.agents;
        self.healthy += o.healthy;
        self.stale += o.stale;
        self.health_unknown += o.health_unknown;
        self.idle += o.idle;
        self.busy += o.busy;
        self.waiting += o.waiting;
        self.status_unknown += o.status_unknown;
        self.alive += o.alive;
        self.dead += o.dead;
        self.missing += o.missing;
    }
}

/// The summary of the hosts (with their agents) `select` admits: one line
/// per host, per tenant and in total, sorted by tenant and host. A host the
/// selector admits is listed even with no matching agent.
pub fn summarize<'a, A>(
    select: &Select,
    hosts: impl IntoIterator<Item = (&'a HostRow, A)>,
    now_ms: i64,
) -> Summary
where
    A: IntoIterator,
    A::Item: std::borrow::Borrow<AgentRow>,
{
    use std::borrow::Borrow;
    let mut out: Vec<HostSummary> = Vec::new();
    for (h, agents) in hosts {
        if !select.host_row(h) {
            continue;
        }
        let mut counts = Counts::default();
        for a in agents {
            let a = a.borrow();
            if select.agent(a) {
                counts.add(a);
            }
        }
        out.push(HostSummary {
            tenant_id: h.tenant_id.clone(),
            host: h.host.clone(),
            link: h.link.clone(),
            counts: Some(counts),
        });
    }
    out.sort_by(|a, b| (&a.tenant_id, &a.host).cmp(&(&b.tenant_id, &b.host)));
    let mut total = Counts::default();
    let mut tenants: Vec<TenantSummary> = Vec::new();
    for h in &out {
        let c = h.counts.as_ref().map_or_else(Counts::default, Clone::clone);
        total.merge(&c);
        match tenants.last_mut() {
            Some(t) if t.tenant_id == h.tenant_id => {
                t.hosts += 1;
                if let Some(tc) = t.counts.as_mut() {
                    tc.merge(&c);
                }
            }
            _ => tenants.push(TenantSummary {
                tenant_id: h.tenant_id.clone(),
                hosts: 1,
                counts: Some(c),
            }),
        }
    }
    Summary {
        total: Some(total),
        tenants,
        hosts: out,
        generated_at_unix_ms: now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::Heartbeat;

    fn row(tenant: &str, host: &str, name: &str, health: Health, status: AgentStatus) -> AgentRow {
        AgentRow {
            tenant_id: tenant.into(),
            host: host.into(),
            name: name.into(),
            pane: PaneState::Alive as i32,
            heartbeat: Some(Heartbeat {
                health: health as i32,
                status: status as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn each_constraint_narrows_and_lists_are_any_of() {
        let busy = row(
            "acme",
            "box-1",
            "coder-1",
            Health::Healthy,
            AgentStatus::Busy,
        );
        let stale = row("acme", "box-2", "rev", Health::Stale, AgentStatus::Ok);
        let other = row(
            "zeta",
            "box-1",
            "coder-2",
            Health::Healthy,
            AgentStatus::Waiting,
        );
        let sel = |s: Selector| Select::new(Some(&s)).unwrap();
        let all = Select::new(None).unwrap();
        assert!(all.is_all() && all.agent(&busy) && all.agent(&other));

        let s = sel(Selector {
            names: vec!["coder-*".into()],
            ..Default::default()
        });
        assert!(s.agent(&busy) && s.agent(&other) && !s.agent(&stale));
        assert!(s.per_row() && !s.is_all());

        let s = sel(Selector {
            health: vec![Health::Stale as i32],
            status: vec![AgentStatus::Waiting as i32],
            ..Default::default()
        });
        assert!(!s.agent(&busy) && !s.agent(&stale) && !s.agent(&other));
        let s = sel(Selector {
            status: vec![AgentStatus::Waiting as i32, AgentStatus::Ok as i32],
            ..Default::default()
        });
        assert!(!s.agent(&busy) && s.agent(&stale) && s.agent(&other));

        let s = sel(Selector {
            tenants: vec!["acme".into()],
            hosts: vec!["box-[12]".into()],
            ..Default::default()
        });
        assert!(s.agent(&busy) && s.agent(&stale) && !s.agent(&other));
        assert!(!s.per_row() && s.host("acme", "box-2") && !s.host("acme", "box-3"));

        let mut drift = busy.clone();
        drift.flag_codes.push(AgentFlag::Drift as i32);
        let s = sel(Selector {
            flags: vec![AgentFlag::Drift as i32, AgentFlag::Stopped as i32],
            ..Default::default()
        });
        assert!(s.agent(&drift) && !s.agent(&busy));
    }

    #[test]
    fn bad_patterns_and_values_are_refused_naming_them() {
        let e = Select::new(Some(&Selector {
            names: vec!["coder-[".into()],
            ..Default::default()
        }))
        .unwrap_err();
        assert!(e.to_string().contains("coder-["), "{e}");
        let e = Select::new(Some(&Selector {
            health: vec![42],
            ..Default::default()
        }))
        .unwrap_err();
        assert!(
            e.to_string().contains("health") && e.to_string().contains("42"),
            "{e}"
        );
    }

    #[test]
    fn events_match_by_address_and_host_events_only_without_names() {
        let e = |agent: &str| Event {
            tenant_id: "acme".into(),
            host: "box-1".into(),
            agent: agent.into(),
            ..Default::default()
        };
        let s = Select::new(Some(&Selector {
            names: vec!["c*".into()],
            ..Default::default()
        }))
        .unwrap();
        assert!(s.event(&e("coder")) && !s.event(&e("rev")) && !s.event(&e("")));
        let s = Select::new(Some(&Selector {
            hosts: vec!["box-1".into()],
            ..Default::default()
        }))
        .unwrap();
        assert!(s.event(&e("")) && s.event(&e("rev")));
    }

    #[test]
    fn a_summary_counts_per_host_and_tenant_what_the_selector_admits() {
        let h = |t: &str, n: &str| HostRow {
            tenant_id: t.into(),
            host: n.into(),
            link: "connected".into(),
            ..Default::default()
        };
        let (h1, h2, h3) = (h("acme", "b"), h("acme", "a"), h("zeta", "a"));
        let mut dead = row("acme", "a", "x", Health::Unknown, AgentStatus::Unknown);
        dead.pane = PaneState::Dead as i32;
        let hosts = vec![
            (
                &h1,
                vec![row("acme", "b", "x", Health::Healthy, AgentStatus::Busy)],
            ),
            (
                &h2,
                vec![
                    dead,
                    row("acme", "a", "y", Health::Stale, AgentStatus::Waiting),
                ],
            ),
            (
                &h3,
                vec![row("zeta", "a", "x", Health::Healthy, AgentStatus::Ok)],
            ),
        ];
        let s = summarize(&Select::default(), hosts.clone(), 7);
        let t = s.total.unwrap();
        assert_eq!(
            (t.agents, t.healthy, t.stale, t.health_unknown),
            (4, 2, 1, 1)
        );
        assert_eq!((t.idle, t.busy, t.waiting, t.status_unknown), (1, 1, 1, 1));
        assert_eq!((t.alive, t.dead, t.missing), (3, 1, 0));
        let order: Vec<_> = s
            .hosts
            .iter()
            .map(|h| (h.tenant_id.as_str(), h.host.as_str()))
            .collect();
        assert_eq!(order, [("acme", "a"), ("acme", "b"), ("zeta", "a")]);
        assert_eq!(s.tenants.len(), 2);
        assert_eq!(
            (s.tenants[0].hosts, s.tenants[0].counts.unwrap().agents),
            (2, 3)
        );
        assert_eq!(s.generated_at_unix_ms, 7);

        let only = Select::new(Some(&Selector {
            names: vec!["x".into()],
            tenants: vec!["acme".into()],
            ..Default::default()
        }))
        .unwrap();
        let s = summarize(&only, hosts, 0);
        assert_eq!(s.total.unwrap().agents, 2);
        assert_eq!(s.hosts.len(), 2);
    }
}
