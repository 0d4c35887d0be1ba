//! Who a peer is, from the one SPIFFE URI SAN its certificate carries:
//! `spiffe://<td>/tenant/<tenant>/host/<host>` (a hostd),
//! `spiffe://<td>/operator/<name>` (a person or automation) and
//! `spiffe://<td>/aggregator`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Host {
        trust_domain: String,
        tenant: String,
        host: String,
    },
    Operator {
        trust_domain: String,
        name: String,
    },
    Aggregator {
        trust_domain: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("{0:?} is not a spiffe:// URI")]
    NotSpiffe(String),
    #[error(
        "{uri:?}: {what} {value:?} is not allowed (letters, digits, '.', '_', '-'; starting with a letter or digit)"
    )]
    BadLabel {
        uri: String,
        what: &'static str,
        value: String,
    },
    #[error(
        "{0:?} is not a fleet identity (expected /tenant/T/host/H, /operator/NAME or /aggregator)"
    )]
    UnknownShape(String),
}

/// Trust domains, tenants, hosts and operator names: DNS-label-like, so
/// they are safe in URIs, paths and log lines.
pub fn check_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !s.contains("..")
}

impl Identity {
    pub fn trust_domain(&self) -> &str {
        match self {
            Identity::Host { trust_domain, .. }
            | Identity::Operator { trust_domain, .. }
            | Identity::Aggregator { trust_domain } => trust_domain,
        }
    }

    /// The SPIFFE URI for this identity.
    pub fn uri(&self) -> String {
        self.to_string()
    }

    pub fn parse(uri: &str) -> Result<Self, IdentityError> {
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| IdentityError::NotSpiffe(uri.to_owned()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let label = |what: &'static str, value: &str| {
            if check_label(value) {
                Ok(value.to_owned())
            } else {
                Err(IdentityError::BadLabel {
                    uri: uri.to_owned(),
                    what,
                    value: value.to_owned(),
                })
            }
        };
        match parts.as_slice() {
            [td, "tenant", t, "host", h] => Ok(Identity::Host {
                trust_domain: label("trust domain", td)?,
                tenant: label("tenant", t)?,
                host: label("host", h)?,
            }),
            [td, "operator", n] => Ok(Identity::Operator {
                trust_domain: label("trust domain", td)?,
                name: label("operator", n)?,
            }),
            [td, "aggregator"] => Ok(Identity::Aggregator {
                trust_domain: label("trust domain", td)?,
            }),
            _ => Err(IdentityError::UnknownShape(uri.to_owned())),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Host {
                trust_domain,
                tenant,
                host,
            } => write!(f, "spiffe://{trust_domain}/tenant/{tenant}/host/{host}"),
            Identity::Operator { trust_domain, name } => {
                write!(f, "spiffe://{trust_domain}/operator/{name}")
            }
            Identity::Aggregator { trust_domain } => {
                write!(f, "spiffe://{trust_domain}/aggregator")
            }
        }
    }
}

/// The request header with which `fleetctl mcp` says it calls for the agent
/// whose pane it runs in (hostd then checks that, and holds the call to
/// the agent's grants). Its value is informational.
pub const CALLER_HEADER: &str = "fleet-caller";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_three_kinds() {
        for uri in [
            "spiffe://fleet.example/tenant/acme/host/box-1",
            "spiffe://fleet.example/operator/alice",
            "spiffe://fleet.example/aggregator",
        ] {
            assert_eq!(Identity::parse(uri).unwrap().uri(), uri);
        }
        assert_eq!(
            Identity::parse("spiffe://td/tenant/acme/host/h1").unwrap(),
            Identity::Host {
                trust_domain: "td".into(),
                tenant: "acme".into(),
                host: "h1".into()
            }
        );
    }

    #[test]
    fn refuses_what_is_not_a_fleet_identity() {
        for bad in [
            "https://td/operator/a",
            "spiffe://td/operator/../x",
            "spiffe://td/tenant/acme/host",
            "spiffe://td/tenant/a b/host/h",
            "spiffe:///aggregator",
            "spiffe://td/admin",
            "spiffe://td/operator/a/extra",
        ] {
            assert!(Identity::parse(bad).is_err(), "{bad}");
        }
    }
}
