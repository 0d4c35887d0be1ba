//! Aggregator configuration: built-in defaults < TOML file <
//! `FLEET_AGGREGATOR_*` environment < flags, validated before any port is
//! bound. Operator grants live in a separate file (see [`crate::authz`]) so
//! they can be reloaded while the aggregator runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub const ENV_PREFIX: &str = "FLEET_AGGREGATOR_";

/// The file as an operator writes it; every key optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to serve HostLink and Fleet on (one mTLS port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Name this aggregator reports itself as in host rows (`via`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// SPIFFE trust domain every peer identity must belong to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    /// Operator grants (TOML), reloaded when the file changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authz: Option<PathBuf>,
    /// JSON-lines audit log (one line per operator command and per security
    /// event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<PathBuf>,
    /// Rotate the audit file past this size (MiB, default 64), keeping
    /// `audit_keep` old files (default 5). The history database holds
    /// every line too, and is the source of truth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_max_mb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_keep: Option<u32>,
    /// The durable history of events and audit (SQLite, WAL): `history_db`
    /// (default `history.db` beside the audit log), kept
    /// `history_max_age_days` (30) and under `history_max_mb` (256);
    /// `history = false` keeps events in memory and the audit in the file
    /// only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_db: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_max_age_days: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_max_mb: Option<u64>,
    /// Serve Prometheus metrics (`GET /metrics`) here, e.g.
    /// "127.0.0.1:9465"; off when unset. Plain HTTP without identities: an
    /// address off loopback also needs `metrics_public = true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_public: Option<bool>,
    /// How often hostds send an application heartbeat, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beat_secs: Option<f64>,
    /// A host not heard from for this long is `unreachable`, seconds. Must
    /// exceed beat_secs and the HTTP/2 keepalive interval + timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<f64>,
    /// How often certificates and the grants file are checked for changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload_secs: Option<f64>,
    /// Events kept for `fleetctl events`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_backlog: Option<usize>,
    /// How often a `stats` log line (hosts, links, agents, updates applied)
    /// is written, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats_secs: Option<f64>,
    /// `tracing` filter, `RUST_LOG` syntax.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// Serve plain TCP without identities. Refused unless `listen` is a
    /// loopback address; for development only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_plaintext: Option<bool>,
    #[serde(default, skip_serializing_if = "TlsFile::is_empty")]
    pub tls: TlsFile,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// CA certificate(s) that sign hostd and operator certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// The aggregator's certificate (URI SAN spiffe://<td>/aggregator).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

impl TlsFile {
    fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Certificate files of one side of an mTLS link.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub name: String,
    pub trust_domain: String,
    pub authz: PathBuf,
    pub audit_log: PathBuf,
    pub audit_rotation: fleet_net::audit::Rotation,
    /// `None`: events in memory, the audit in its file only.
    pub history: Option<fleet_store::Config>,
    pub metrics_listen: Option<SocketAddr>,
    pub beat: Duration,
    pub lease: Duration,
    pub reload: Duration,
    pub event_backlog: usize,
    pub stats: Duration,
    pub log: String,
    /// `None` only with `dev_plaintext` on a loopback address.
    pub tls: Option<TlsPaths>,
    pub sources: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Figment(Box<figment::Error>),
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Loads the configuration: `file` must exist when given.
pub fn load(file: Option<&Path>, flags: &FileConfig) -> Result<Config, ConfigError> {
    let mut figment = Figment::new();
    let mut sources = Vec::new();
    if let Some(f) = file {
        if !f.exists() {
            return Err(ConfigError::MissingFile(f.to_owned()));
        }
        figment = figment.merge(Toml::file_exact(f));
        sources.push(f.to_owned());
    }
    let raw: FileConfig = figment
        .merge(Env::prefixed(ENV_PREFIX).split("__"))
        .merge(Serialized::defaults(flags))
        .extract()
        .map_err(|e| ConfigError::Figment(Box::new(e)))?;
    resolve(raw, sources)
}

fn secs(key: &'static str, v: Option<f64>, default: f64) -> Result<Duration, ConfigError> {
    let v = v.unwrap_or(default);
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(invalid(
            key,
            format!("{v} is not a number of seconds in (0, 86400]"),
        ))
    }
}

fn resolve(raw: FileConfig, sources: Vec<PathBuf>) -> Result<Config, ConfigError> {
    let listen_s = raw.listen.unwrap_or_else(|| "0.0.0.0:7443".to_owned());
    let listen: SocketAddr = listen_s
        .parse()
        .map_err(|e| invalid("listen", format!("{listen_s:?}: {e} (want IP:PORT)")))?;
    let trust_domain = raw.trust_domain.unwrap_or_else(|| "fleet.local".to_owned());
    if !fleet_proto::identity::check_label(&trust_domain) {
        return Err(invalid(
            "trust_domain",
            format!("{trust_domain:?} is not a DNS name"),
        ));
    }
    let name = raw
        .name
        .unwrap_or_else(|| rustix_hostname().unwrap_or_else(|| "aggregator".to_owned()));
    let beat = secs("beat_secs", raw.beat_secs, 10.0)?;
    let lease = secs("lease_secs", raw.lease_secs, 30.0)?;
    if lease <= beat * 2 {
        return Err(invalid(
            "lease_secs",
            format!(
                "{:?} must be more than twice beat_secs ({:?}) so one lost beat does not expire a host",
                lease, beat
            ),
        ));
    }
    let reload = secs("reload_secs", raw.reload_secs, 2.0)?;
    let event_backlog = raw.event_backlog.unwrap_or(10_000);
    if !(10..=1_000_000).contains(&event_backlog) {
        return Err(invalid(
            "event_backlog",
            format!("{event_backlog} is outside 10..=1000000"),
        ));
    }
    let stats = secs("stats_secs", raw.stats_secs, 60.0)?;
    let log = raw.log.unwrap_or_else(|| "info".to_owned());
    tracing_subscriber::EnvFilter::try_new(&log).map_err(|e| invalid("log", e.to_string()))?;
    let dev = raw.dev_plaintext.unwrap_or(false);
    let tls = match (raw.tls.ca, raw.tls.cert, raw.tls.key) {
        (Some(ca), Some(cert), Some(key)) => Some(TlsPaths { ca, cert, key }),
        (None, None, None) if dev => None,
        _ => {
            return Err(invalid(
                "tls",
                "tls.ca, tls.cert and tls.key are required (mTLS is the only way in; \
                 `fleetctl certs init` makes a development CA)",
            ));
        }
    };
    if dev {
        if !listen.ip().is_loopback() {
            return Err(invalid(
                "dev_plaintext",
                format!("plaintext is allowed on a loopback address only, not {listen}"),
            ));
        }
        if tls.is_some() {
            return Err(invalid(
                "dev_plaintext",
                "set either dev_plaintext or tls, not both",
            ));
        }
    }
    if let Some(t) = &tls {
        for (key, p) in [
            ("tls.ca", &t.ca),
            ("tls.cert", &t.cert),
            ("tls.key", &t.key),
        ] {
            if !p.is_file() {
                return Err(invalid(key, format!("{} does not exist", p.display())));
            }
        }
    }
    let authz = raw
        .authz
        .ok_or_else(|| invalid("authz", "required: the operator grants file (default-deny)"))?;
    if !authz.is_file() {
        return Err(invalid(
            "authz",
            format!("{} does not exist", authz.display()),
        ));
    }
    let audit_log = raw
        .audit_log
        .unwrap_or_else(|| PathBuf::from("/var/log/fleet-aggregator/audit.jsonl"));
    let audit_mb = raw.audit_max_mb.unwrap_or(64);
    if !(1..=1_048_576).contains(&audit_mb) {
        return Err(invalid(
            "audit_max_mb",
            format!("{audit_mb} is outside 1..=1048576"),
        ));
    }
    let audit_keep = raw.audit_keep.unwrap_or(5);
    if !(1..=1000).contains(&audit_keep) {
        return Err(invalid(
            "audit_keep",
            format!("{audit_keep} is outside 1..=1000"),
        ));
    }
    let history = fleet_store::Config::from_keys(
        raw.history,
        raw.history_db,
        raw.history_max_age_days,
        raw.history_max_mb,
        audit_log
            .parent()
            .unwrap_or(Path::new("."))
            .join("history.db"),
    )
    .map_err(|(key, message)| invalid(key, message))?;
    let metrics_listen = raw
        .metrics_listen
        .as_deref()
        .map(|l| fleet_net::metrics::parse_listen(l, raw.metrics_public.unwrap_or(false)))
        .transpose()
        .map_err(|m| invalid("metrics_listen", m))?;
    Ok(Config {
        listen,
        name,
        trust_domain,
        authz,
        audit_log,
        audit_rotation: fleet_net::audit::Rotation {
            max_bytes: audit_mb << 20,
            keep: audit_keep,
        },
        history,
        metrics_listen,
        beat,
        lease,
        reload,
        event_backlog,
        stats,
        log,
        tls,
        sources,
    })
}

fn rustix_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(dir: &Path) -> PathBuf {
        let p = dir.join("authz.toml");
        std::fs::write(&p, "").unwrap();
        p
    }

    #[test]
    fn plaintext_only_on_loopback_and_tls_otherwise_required() {
        let d = tempfile::tempdir().unwrap();
        let authz = Some(grants(d.path()));
        let base = FileConfig {
            authz: authz.clone(),
            ..Default::default()
        };
        let e = load(None, &base).unwrap_err().to_string();
        assert!(e.starts_with("tls:"), "{e}");
        let dev = FileConfig {
            dev_plaintext: Some(true),
            listen: Some("0.0.0.0:1".into()),
            ..base.clone()
        };
        let e = load(None, &dev).unwrap_err().to_string();
        assert!(e.contains("loopback"), "{e}");
        let dev = FileConfig {
            listen: Some("127.0.0.1:0".into()),
            ..dev
        };
        let c = load(None, &dev).unwrap();
        assert!(c.tls.is_none());
    }

    #[test]
    fn bad_values_name_their_key() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("agg.toml");
        std::fs::write(&f, "listen = \"nowhere\"\n").unwrap();
        let e = load(Some(&f), &FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("listen:"), "{e}");
        std::fs::write(&f, "lease_secs = 5\nbeat_secs = 10\n").unwrap();
        let e = load(Some(&f), &FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("lease_secs:"), "{e}");
        std::fs::write(&f, "colour = true\n").unwrap();
        let e = load(Some(&f), &FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
        let e = load(Some(&d.path().join("nope.toml")), &FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// deploy/aggregator.example.toml and deploy/authz.example.toml stay
    /// valid: every key is known, and the example resolves once its files
    /// exist.
    #[test]
    fn the_examples_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let text = std::fs::read_to_string(root.join("aggregator.example.toml")).unwrap();
        let mut raw: FileConfig = toml::from_str(&text).unwrap();
        assert_eq!(raw.lease_secs, Some(30.0));
        let d = tempfile::tempdir().unwrap();
        for f in ["ca.pem", "agg.pem", "agg.key"] {
            std::fs::write(d.path().join(f), "x").unwrap();
        }
        raw.tls = TlsFile {
            ca: Some(d.path().join("ca.pem")),
            cert: Some(d.path().join("agg.pem")),
            key: Some(d.path().join("agg.key")),
        };
        raw.authz = Some(root.join("authz.example.toml"));
        let c = resolve(raw, vec![]).unwrap();
        assert_eq!(c.trust_domain, "fleet.example");
        let g = crate::authz::Grants::load(&root.join("authz.example.toml")).unwrap();
        assert!(g.of("alice").unwrap().tenant("anything"));
        assert!(
            !g.of("oncall-bot")
                .unwrap()
                .verbs
                .contains(&crate::authz::Verb::Control)
        );
    }
}
