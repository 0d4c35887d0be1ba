//! Default-deny operator authorization. The grants file names each
//! operator (the `<name>` of `spiffe://<td>/operator/<name>`), the tenants
//! it may touch and the verbs it may use:
//!
//! ```toml
//! [operators.alice]
//! tenants = ["acme", "globex"]   # "*" = every tenant
//! verbs = ["read", "watch", "send", "control", "attach"]
//! ```
//!
//! Agents (`fleetctl mcp` on a host, asking about other hosts through the
//! host's link) have grants of their own, by subject, within their own
//! tenant only (`reach` patterns: `NAME` on the agent's host, `HOST/NAME`
//! elsewhere):
//!
//! ```toml
//! [agents."acme/box1/coord"]
//! read = ["*/*"]
//! send = ["box2/worker-*"]
//! ```
//!
//! The file is re-read when it changes; a bad edit is refused (and logged)
//! and the last good grants stay in force.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fleet_net::reload::Watched;
use fleet_proto::reach::Reach;
use serde::Deserialize;

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// ListAgents, ListHosts, WatchFleet, Events.
    Read,
    /// WatchScreen.
    Watch,
    /// Send.
    Send,
    /// Control start / stop / restart / reset.
    Control,
    /// Control attach.
    Attach,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Read => "read",
            Verb::Watch => "watch",
            Verb::Send => "send",
            Verb::Control => "control",
            Verb::Attach => "attach",
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub tenants: BTreeSet<String>,
    pub verbs: BTreeSet<Verb>,
}

impl Grant {
    pub fn tenant(&self, t: &str) -> bool {
        self.tenants.contains("*") || self.tenants.contains(t)
    }
}

/// What one agent may reach beyond its host (default: nothing).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentGrant {
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub send: Vec<String>,
}

impl AgentGrant {
    pub fn read(&self) -> Reach {
        Reach::parse(&self.read).unwrap_or_default()
    }

    pub fn send(&self) -> Reach {
        Reach::parse(&self.send).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    #[serde(default)]
    pub operators: BTreeMap<String, Grant>,
    /// By `TENANT/HOST/NAME`.
    #[serde(default)]
    pub agents: BTreeMap<String, AgentGrant>,
}

/// Why a grants file was refused: always names the file, and the key
/// where there is one.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GrantsError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: operators.{name}: not a valid operator name")]
    Operator { path: String, name: String },
    #[error("{path}: agents.{key:?}: {message}")]
    Agent {
        path: String,
        key: String,
        message: String,
    },
    #[error("{path}: operators.{name}.tenants: {tenant:?} is not a tenant id")]
    Tenant {
        path: String,
        name: String,
        tenant: String,
    },
}

impl Grants {
    pub fn parse(text: &str, path: &Path) -> Result<Self, GrantsError> {
        let path = || path.display().to_string();
        let g: Grants = toml::from_str(text).map_err(|e| GrantsError::Syntax {
            path: path(),
            message: e.to_string().trim().to_owned(),
        })?;
        for (name, grant) in &g.operators {
            if !fleet_proto::identity::check_label(name) {
                return Err(GrantsError::Operator {
                    path: path(),
                    name: name.clone(),
                });
            }
            for t in &grant.tenants {
                if t != "*" && !fleet_proto::identity::check_label(t) {
                    return Err(GrantsError::Tenant {
                        path: path(),
                        name: name.clone(),
                        tenant: t.clone(),
                    });
                }
            }
        }
        for (key, grant) in &g.agents {
            let bad = |message: String| GrantsError::Agent {
                path: path(),
                key: key.clone(),
                message,
            };
            let parts: Vec<&str> = key.split('/').collect();
            let [tenant, host, name] = parts.as_slice() else {
                return Err(bad("expected TENANT/HOST/NAME".into()));
            };
            if !fleet_proto::identity::check_label(tenant)
                || !fleet_proto::identity::check_label(host)
                || fleet_proto::name::check(name).is_err()
            {
                return Err(bad("not a tenant, host and agent name".into()));
            }
            Reach::parse(&grant.read).map_err(|e| bad(format!("read: {e}")))?;
            Reach::parse(&grant.send).map_err(|e| bad(format!("send: {e}")))?;
        }
        Ok(g)
    }

    pub fn load(path: &Path) -> Result<Self, GrantsError> {
        let text = std::fs::read_to_string(path).map_err(|e| GrantsError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    /// The grant of the agent `TENANT/HOST/NAME`, if any.
    pub fn agent(&self, key: &str) -> Option<&AgentGrant> {
        self.agents.get(key)
    }

    /// The grant of `operator`, if any.
    pub fn of(&self, operator: &str) -> Option<&Grant> {
        self.operators.get(operator)
    }
}

/// The grants in force, swapped when the file changes.
#[derive(Debug)]
pub struct Authz {
    path: PathBuf,
    current: Watched<Grants>,
    /// Bumped on every reload that put new grants in force: open streams
    /// re-check themselves.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Authz {
    pub fn load(path: &Path) -> Result<Arc<Self>, GrantsError> {
        let current = Watched::load(vec![path.to_owned()], || Grants::load(path))?;
        Ok(Arc::new(Self {
            path: path.to_owned(),
            current,
            changed: tokio::sync::watch::Sender::new(0),
        }))
    }

    pub fn grants(&self) -> Arc<Grants> {
        self.current.get()
    }

    /// Re-reads a changed file. `Ok(true)` when new grants are in force; on
    /// error the old ones stay.
    pub fn reload_if_changed(&self) -> Result<bool, GrantsError> {
        let reloaded = self.current.reload(|| Grants::load(&self.path))?;
        if reloaded {
            self.changed.send_modify(|n| *n += 1);
        }
        Ok(reloaded)
    }

    /// Fires after each reload that changed the grants in force.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// `operator`'s grant now, if it still may `verb`.
    pub fn still(&self, operator: &str, verb: Verb) -> Option<Grant> {
        self.grants()
            .of(operator)
            .filter(|g| g.verbs.contains(&verb))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_and_deny_by_default() {
        let p = Path::new("authz.toml");
        let g = Grants::parse(
            "[operators.alice]\ntenants = [\"acme\"]\nverbs = [\"read\", \"send\"]\n\
             [operators.root]\ntenants = [\"*\"]\nverbs = [\"read\"]\n",
            p,
        )
        .unwrap();
        let a = g.of("alice").unwrap();
        assert!(a.tenant("acme") && !a.tenant("globex"));
        assert!(a.verbs.contains(&Verb::Send) && !a.verbs.contains(&Verb::Control));
        assert!(g.of("root").unwrap().tenant("anything"));
        assert!(g.of("mallory").is_none());
        assert!(Grants::parse("", p).unwrap().operators.is_empty());
    }

    #[test]
    fn agent_grants_are_by_subject_within_a_tenant_and_checked_on_load() {
        let p = Path::new("authz.toml");
        let g = Grants::parse(
            "[agents.\"acme/box1/coord\"]\nread = [\"*/*\"]\nsend = [\"box2/w-*\"]\n",
            p,
        )
        .unwrap();
        let a = g.agent("acme/box1/coord").unwrap();
        assert!(a.send().admits("box1", "box2", "w-1"));
        assert!(!a.send().admits("box1", "box3", "w-1"));
        assert!(a.read().admits("box1", "box9", "x"));
        assert!(g.agent("acme/box1/other").is_none(), "default deny");
        for bad in [
            "[agents.\"acme/box1\"]\n",
            "[agents.\"acme/box1/../x\"]\n",
            "[agents.\"acme/box1/a\"]\nsend = [\"globex/box2/w\"]\n",
            "[agents.\"acme/box1/a\"]\nwrite = [\"x\"]\n",
        ] {
            assert!(Grants::parse(bad, p).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_grants_say_where() {
        let p = Path::new("authz.toml");
        let e = Grants::parse("[operators.a]\ntenants=[\"x\"]\nverbs=[\"fly\"]\n", p).unwrap_err();
        let e = e.to_string();
        assert!(e.starts_with("authz.toml:") && e.contains("fly"), "{e}");
        let e = Grants::parse("[operators.a]\ntenants=[\"../x\"]\nverbs=[]\n", p).unwrap_err();
        assert!(e.to_string().contains("not a tenant id"), "{e}");
        let e = Grants::parse("[operators.a]\ntenants=[]\nverbs=[]\nextra=1\n", p).unwrap_err();
        assert!(e.to_string().contains("extra"), "{e}");
    }

    #[test]
    fn a_bad_reload_keeps_the_last_good_grants() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("authz.toml");
        std::fs::write(&p, "[operators.a]\ntenants=[\"t\"]\nverbs=[\"read\"]\n").unwrap();
        let a = Authz::load(&p).unwrap();
        std::fs::write(&p, "[operators.a\n").unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(a.reload_if_changed().is_err());
        assert!(a.grants().of("a").is_some());
        std::fs::write(&p, "[operators.b]\ntenants=[\"t\"]\nverbs=[\"read\"]\n").unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(10);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(a.reload_if_changed(), Ok(true));
        assert!(a.grants().of("a").is_none() && a.grants().of("b").is_some());
    }
}
