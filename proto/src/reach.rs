//! What an agent may reach: patterns over its own tenant's agents, as a
//! roster's `may.read` / `may.send` and an aggregator's agent grants write
//! them. `NAME-GLOB` is an agent of the caller's own host; `HOST-GLOB/
//! NAME-GLOB` one of another host of the same tenant. A tenant part is
//! refused: an agent never acts for another tenant.

use globset::{Glob, GlobMatcher};

#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    /// `None`: the caller's own host.
    host: Option<GlobMatcher>,
    name: GlobMatcher,
}

/// A list of reach patterns; empty reaches nothing.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    patterns: Vec<Pattern>,
}

fn glob(what: &str, p: &str, part: &str) -> Result<GlobMatcher, String> {
    if part.is_empty() {
        return Err(format!("{p:?}: an empty {what}"));
    }
    Glob::new(part)
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("{p:?}: {}", e.kind()))
}

/// Two lists are equal when they were written alike.
impl PartialEq for Reach {
    fn eq(&self, other: &Self) -> bool {
        self.patterns() == other.patterns()
    }
}

impl Reach {
    pub fn parse(list: &[String]) -> Result<Self, String> {
        let mut patterns = Vec::with_capacity(list.len());
        for p in list {
            let parts: Vec<&str> = p.split('/').collect();
            let (host, name) = match parts.as_slice() {
                [name] => (None, glob("agent name", p, name)?),
                [host, name] => (
                    Some(glob("host name", p, host)?),
                    glob("agent name", p, name)?,
                ),
                _ => {
                    return Err(format!(
                        "{p:?}: expected NAME or HOST/NAME (an agent acts within its own tenant)"
                    ));
                }
            };
            patterns.push(Pattern {
                text: p.clone(),
                host,
                name,
            });
        }
        Ok(Reach { patterns })
    }

    /// Whether the agent `host/name` is reached by a caller on `own_host`.
    pub fn admits(&self, own_host: &str, host: &str, name: &str) -> bool {
        self.patterns.iter().any(|p| {
            let host_ok = match &p.host {
                None => host == own_host,
                Some(g) => g.is_match(host),
            };
            host_ok && p.name.is_match(name)
        })
    }

    /// Whether any pattern names another host than the caller's own.
    pub fn beyond_own_host(&self) -> bool {
        self.patterns.iter().any(|p| p.host.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns as written.
    pub fn patterns(&self) -> Vec<String> {
        self.patterns.iter().map(|p| p.text.clone()).collect()
    }
}

/// An agent's subject, as events and audit lines name it.
pub fn subject(tenant: &str, host: &str, name: &str) -> String {
    format!("agent:{tenant}/{host}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(p: &[&str]) -> Reach {
        Reach::parse(&p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn a_bare_name_is_the_own_host_and_a_host_part_reaches_others() {
        let r = reach(&["worker-*", "box2/reviewer"]);
        assert!(r.admits("box1", "box1", "worker-3"));
        assert!(
            !r.admits("box1", "box2", "worker-3"),
            "a bare name stays home"
        );
        assert!(r.admits("box1", "box2", "reviewer"));
        assert!(!r.admits("box1", "box3", "reviewer"));
        assert!(r.beyond_own_host());
        assert!(!reach(&["*"]).beyond_own_host());
        assert!(reach(&[]).is_empty());
        assert!(!reach(&[]).admits("h", "h", "a"));
    }

    #[test]
    fn a_tenant_part_or_an_empty_part_or_a_bad_glob_is_refused() {
        for bad in ["acme/box1/a", "/a", "box1/", "a[", ""] {
            assert!(Reach::parse(&[bad.to_owned()]).is_err(), "{bad:?}");
        }
    }
}
