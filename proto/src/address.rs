//! Agent addresses on the command line and the wire: `AGENT`,
//! `HOST/AGENT` or `TENANT/HOST/AGENT`. A short address that matches more
//! than one agent is an error listing the candidates; it never picks one.

use crate::v1::AgentRow;
use crate::vocab::Flagged;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub tenant: Option<String>,
    pub host: Option<String>,
    pub agent: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("bad address {0:?}: use AGENT, HOST/AGENT or TENANT/HOST/AGENT")]
    Syntax(String),
    #[error("{0}")]
    Name(#[from] crate::name::NameError),
    #[error("no agent {address}{}", hint(.candidates))]
    NotFound {
        address: String,
        candidates: Vec<String>,
    },
    #[error("{address} is ambiguous; it matches: {}", .candidates.join(", "))]
    Ambiguous {
        address: String,
        candidates: Vec<String>,
    },
}

impl From<AddressError> for tonic::Status {
    fn from(e: AddressError) -> Self {
        match e {
            AddressError::NotFound { .. } => tonic::Status::not_found(e.to_string()),
            _ => tonic::Status::invalid_argument(e.to_string()),
        }
    }
}

fn hint(c: &[String]) -> String {
    if c.is_empty() {
        "; there are no agents".into()
    } else {
        format!("; known agents: {}", c.join(", "))
    }
}

impl Address {
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let parts: Vec<&str> = s.split('/').collect();
        let (tenant, host, agent) = match parts.as_slice() {
            [a] => (None, None, *a),
            [h, a] => (None, Some(*h), *a),
            [t, h, a] => (Some(*t), Some(*h), *a),
            _ => return Err(AddressError::Syntax(s.to_owned())),
        };
        crate::name::check(agent)?;
        let label_ok = |l: &str| {
            l.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        if !tenant.is_none_or(label_ok) || !host.is_none_or(label_ok) {
            return Err(AddressError::Syntax(s.to_owned()));
        }
        Ok(Self {
            tenant: tenant.map(str::to_owned),
            host: host.map(str::to_owned),
            agent: agent.to_owned(),
        })
    }

    /// Whether this address names the agent `tenant/host/agent`.
    pub fn names(&self, tenant: &str, host: &str, agent: &str) -> bool {
        agent == self.agent
            && self.host.as_ref().is_none_or(|h| h == host)
            && self.tenant.as_ref().is_none_or(|t| t == tenant)
    }

    fn matches(&self, r: &AgentRow) -> bool {
        self.names(&r.tenant_id, &r.host, &r.name)
    }
}

fn full(r: &AgentRow) -> String {
    format!("{}/{}/{}", r.tenant_id, r.host, r.name)
}

/// The one row `address` names.
pub fn resolve<'a, R: std::borrow::Borrow<AgentRow>>(
    rows: &'a [R],
    address: &str,
) -> Result<&'a AgentRow, AddressError> {
    let a = Address::parse(address)?;
    let rows = rows.iter().map(R::borrow);
    let hits: Vec<&AgentRow> = rows.clone().filter(|r| a.matches(r)).collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => {
            let mut candidates: Vec<String> = rows
                .filter(|r| !r.has(crate::v1::AgentFlag::Unmanaged))
                .map(|r| {
                    if a.host.is_some() {
                        full(r)
                    } else {
                        r.name.clone()
                    }
                })
                .collect();
            candidates.sort();
            candidates.dedup();
            Err(AddressError::NotFound {
                address: address.to_owned(),
                candidates,
            })
        }
        many => Err(AddressError::Ambiguous {
            address: address.to_owned(),
            candidates: many.iter().map(|r| full(r)).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: &str, h: &str, n: &str) -> AgentRow {
        AgentRow {
            tenant_id: t.into(),
            host: h.into(),
            name: n.into(),
            ..Default::default()
        }
    }

    #[test]
    fn all_three_forms_resolve() {
        let rows = vec![row("acme", "a", "coder0"), row("acme", "b", "coder1")];
        assert_eq!(resolve(&rows, "coder0").unwrap().host, "a");
        assert_eq!(resolve(&rows, "b/coder1").unwrap().name, "coder1");
        assert_eq!(resolve(&rows, "acme/a/coder0").unwrap().name, "coder0");
    }

    #[test]
    fn a_short_address_matching_two_hosts_is_ambiguous() {
        let rows = vec![row("acme", "a", "coder0"), row("globex", "b", "coder0")];
        let err = resolve(&rows, "coder0").unwrap_err();
        assert_eq!(
            err,
            AddressError::Ambiguous {
                address: "coder0".into(),
                candidates: vec!["acme/a/coder0".into(), "globex/b/coder0".into()]
            }
        );
        assert!(err.to_string().contains("acme/a/coder0, globex/b/coder0"));
        assert_eq!(resolve(&rows, "b/coder0").unwrap().tenant_id, "globex");
    }

    #[test]
    fn unknown_names_list_the_candidates() {
        let rows = vec![row("acme", "a", "coder0"), row("acme", "a", "reviewer")];
        let err = resolve(&rows, "coder9").unwrap_err().to_string();
        assert_eq!(err, "no agent coder9; known agents: coder0, reviewer");
    }

    #[test]
    fn bad_names_never_reach_a_lookup() {
        for bad in ["../x", "a:b", "a.b", "", "a/b/c/d", "/x", "t//x"] {
            assert!(
                matches!(
                    resolve::<AgentRow>(&[], bad),
                    Err(AddressError::Syntax(_) | AddressError::Name(_))
                ),
                "{bad}"
            );
        }
    }
}
