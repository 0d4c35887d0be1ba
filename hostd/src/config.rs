//! hostd configuration: built-in defaults < TOML file < `FLEET_HOSTD_*`
//! environment < command-line flags, validated before anything is bound.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that configure hostd. `__` nests
/// (`FLEET_HOSTD_SYSTEMD__PROBE=false`). It is narrower than `FLEET_` because
/// hostd sets `FLEET_AGENT`, `FLEET_TENANT` … inside panes, and a hostd
/// started from such a pane must not mistake them for its own settings.
pub const ENV_PREFIX: &str = "FLEET_HOSTD_";

/// The file as written by an operator; every key optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Tenant id this hostd publishes for (default: the uid's login name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Host name this hostd publishes as (default: the kernel's hostname).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Roster file (YAML or TOML).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roster: Option<PathBuf>,
    /// Directory of the `<agent>.hb` heartbeat files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<PathBuf>,
    /// Unix socket that serves the `Fleet` service to the same uid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// Heartbeat interval for agents that do not set their own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_secs: Option<f64>,
    /// How often the table is re-checked (health, fallback beats) without a
    /// tmux event. tmux changes arrive as events, independent of this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick_ms: Option<u64>,
    /// Full re-read of tmux and /proc as a safety net, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resync_ms: Option<u64>,
    /// Size every agent window is pinned to (per window, never globally).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pane_width: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pane_height: Option<u16>,
    /// tmux binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmux: Option<PathBuf>,
    /// Longest any one tmux call may take, milliseconds; a server that
    /// takes longer is flagged `tmux-unresponsive`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmux_timeout_ms: Option<u64>,
    /// Override the roster's `tmux.socket_name` (tests, side-by-side fleets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmux_socket: Option<String>,
    /// `tracing` filter, `RUST_LOG` syntax.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// Number of lifecycle events kept for `fleetctl events`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_backlog: Option<usize>,
    /// Largest text `send` accepts, bytes (after stripping control bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_limit_bytes: Option<usize>,
    /// Connections open at once on the local socket; more are closed at
    /// once (fewer if the descriptor limit leaves too little for tmux).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// The durable event history (SQLite, WAL): `history_db` (default
    /// `history.db` beside the run directory), kept `history_max_age_days`
    /// (30) and under `history_max_mb` (256); `history = false` keeps
    /// events in memory only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_db: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_max_age_days: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_max_mb: Option<u64>,
    /// Serve Prometheus metrics (`GET /metrics`, OpenMetrics text) here,
    /// e.g. "127.0.0.1:9464"; off when unset. Plain HTTP without
    /// identities: an address off loopback also needs `metrics_public`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_public: Option<bool>,
    #[serde(default, skip_serializing_if = "SystemdFile::is_empty")]
    pub systemd: SystemdFile,
    /// Run the supervisor (respawn, pokes, digest) per the roster's
    /// `supervision` settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supervise: Option<bool>,
    /// Aggregators to stream to (`host:port`), one mTLS link each.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregators: Option<Vec<String>>,
    /// Seconds before trying again after an aggregator refused this hostd
    /// (its certificate or grant; each wait is this to twice this).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_refused_retry_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "TlsFile::is_empty")]
    pub tls: TlsFile,
}

/// Certificates for the links to aggregators.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// CA that signed the aggregator's certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// This hostd's certificate: spiffe://TD/tenant/TENANT/host/HOST.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Name to check the aggregator certificate against (default: the
    /// host part of each aggregator address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Dial aggregators without TLS (development only; loopback addresses
    /// only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<bool>,
}

impl TlsFile {
    fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// How hostd reaches its aggregators.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    pub aggregators: Vec<String>,
    /// The shortest wait after a refusal.
    pub refused_retry: Duration,
    /// `None` only for plaintext development links.
    pub tls: Option<TlsPaths>,
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SystemdFile {
    /// Ask systemd for the unit's state (boot-enable flag). Off → unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<bool>,
    /// The user unit that runs this hostd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub systemctl: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loginctl: Option<PathBuf>,
    /// How often the unit state is asked again, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recheck_secs: Option<f64>,
}

impl SystemdFile {
    fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// The resolved configuration hostd runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub tenant: String,
    pub host: String,
    pub uid: u32,
    pub home: PathBuf,
    pub roster: PathBuf,
    pub run_dir: PathBuf,
    pub socket: PathBuf,
    pub heartbeat_interval: Duration,
    pub tick: Duration,
    pub resync: Duration,
    pub pane_size: (u16, u16),
    pub tmux: PathBuf,
    pub tmux_timeout: Duration,
    pub tmux_socket: Option<String>,
    pub log: String,
    pub event_backlog: usize,
    pub send_limit: usize,
    pub max_connections: usize,
    pub systemd: SystemdConfig,
    pub link: LinkConfig,
    pub supervise: bool,
    /// `None`: events in memory only.
    pub history: Option<fleet_store::Config>,
    /// Where `GET /metrics` is served (`None`: not served).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Files that contributed, for `--check-config` and error messages.
    pub sources: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SystemdConfig {
    pub probe: bool,
    pub recheck: Duration,
    pub unit: String,
    pub systemctl: PathBuf,
    pub loginctl: PathBuf,
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

/// Where things live by default, from the XDG variables and the uid.
#[derive(Debug, Clone)]
pub struct Environment {
    pub uid: u32,
    pub home: PathBuf,
    pub user: Option<String>,
    pub hostname: String,
    pub xdg_config_home: Option<PathBuf>,
    pub xdg_state_home: Option<PathBuf>,
    pub xdg_runtime_dir: Option<PathBuf>,
}

impl Environment {
    /// Reads the real process environment.
    pub fn current() -> Self {
        let uid = rustix::process::getuid().as_raw();
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        let user = std::env::var("USER")
            .ok()
            .or_else(|| login_name(uid))
            .filter(|u| !u.is_empty());
        let hostname = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        let var = |k: &str| {
            std::env::var_os(k)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        Self {
            uid,
            home,
            user,
            hostname,
            xdg_config_home: var("XDG_CONFIG_HOME"),
            xdg_state_home: var("XDG_STATE_HOME"),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
        }
    }

    pub fn config_dir(&self) -> PathBuf {
        self.xdg_config_home
            .clone()
            .unwrap_or_else(|| self.home.join(".config"))
            .join("fleet")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.xdg_state_home
            .clone()
            .unwrap_or_else(|| self.home.join(".local/state"))
            .join("fleet")
    }

    /// Directory of the hostd socket: `$XDG_RUNTIME_DIR/fleet`, else
    /// `/tmp/fleet-<uid>` (created 0700 and checked to be ours).
    pub fn runtime_dir(&self) -> PathBuf {
        fleet_proto::paths::runtime_dir(self.uid, self.xdg_runtime_dir.as_deref())
    }

    pub fn default_socket(&self) -> PathBuf {
        self.runtime_dir().join("hostd.sock")
    }

    pub fn default_config_file(&self) -> PathBuf {
        self.config_dir().join("hostd.toml")
    }
}

fn login_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        (f.next()?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    })
}

/// Loads the configuration. `file` is the explicit `--config` (must exist);
/// without it the XDG default file is used when present.
pub fn load(
    env: &Environment,
    file: Option<&Path>,
    flags: &FileConfig,
) -> Result<Config, ConfigError> {
    let mut figment = Figment::new();
    let mut sources = Vec::new();
    match file {
        Some(f) => {
            if !f.exists() {
                return Err(ConfigError::MissingFile(f.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(f));
            sources.push(f.to_owned());
        }
        None => {
            let f = env.default_config_file();
            if f.exists() {
                figment = figment.merge(Toml::file_exact(&f));
                sources.push(f);
            }
        }
    }
    figment = figment
        .merge(Env::prefixed(ENV_PREFIX).split("__"))
        .merge(Serialized::defaults(flags));
    let raw: FileConfig = figment
        .extract()
        .map_err(|e| ConfigError::Figment(Box::new(e)))?;
    resolve(env, raw, sources)
}

fn resolve(
    env: &Environment,
    raw: FileConfig,
    sources: Vec<PathBuf>,
) -> Result<Config, ConfigError> {
    let expand = |p: PathBuf| expand_home(&p, &env.home);
    let tenant = raw
        .tenant
        .or_else(|| env.user.clone())
        .unwrap_or_else(|| format!("uid{}", env.uid));
    check_label("tenant", &tenant)?;
    let host = raw.host.unwrap_or_else(|| env.hostname.clone());
    check_label("host", &host)?;
    let interval = raw.heartbeat_interval_secs.unwrap_or(15.0);
    if !(interval.is_finite() && interval > 0.0 && interval <= 86_400.0) {
        return Err(ConfigError::Invalid {
            key: "heartbeat_interval_secs",
            message: format!("{interval} is not a number of seconds in (0, 86400]"),
        });
    }
    let tick_ms = raw.tick_ms.unwrap_or(1000);
    if !(10..=60_000).contains(&tick_ms) {
        return Err(ConfigError::Invalid {
            key: "tick_ms",
            message: format!("{tick_ms} is outside 10..=60000"),
        });
    }
    let resync_ms = raw.resync_ms.unwrap_or(10_000);
    if !(100..=600_000).contains(&resync_ms) {
        return Err(ConfigError::Invalid {
            key: "resync_ms",
            message: format!("{resync_ms} is outside 100..=600000"),
        });
    }
    let tmux_timeout_ms = raw.tmux_timeout_ms.unwrap_or(3000);
    if !(100..=60_000).contains(&tmux_timeout_ms) {
        return Err(ConfigError::Invalid {
            key: "tmux_timeout_ms",
            message: format!("{tmux_timeout_ms} is outside 100..=60000"),
        });
    }
    let (w, h) = (raw.pane_width.unwrap_or(200), raw.pane_height.unwrap_or(50));
    if !(20..=1000).contains(&w) || !(5..=1000).contains(&h) {
        return Err(ConfigError::Invalid {
            key: "pane_width/pane_height",
            message: format!("{w}x{h} is outside 20x5..=1000x1000"),
        });
    }
    if let Some(sock) = &raw.tmux_socket {
        fleet_proto::name::check(sock).map_err(|e| ConfigError::Invalid {
            key: "tmux_socket",
            message: e.to_string(),
        })?;
    }
    let log = raw.log.unwrap_or_else(|| "info".to_owned());
    tracing_subscriber::EnvFilter::try_new(&log).map_err(|e| ConfigError::Invalid {
        key: "log",
        message: e.to_string(),
    })?;
    let socket = raw
        .socket
        .map(expand)
        .unwrap_or_else(|| env.default_socket());
    if socket.as_os_str().len() > 100 {
        return Err(ConfigError::Invalid {
            key: "socket",
            message: format!(
                "{} is longer than a Unix socket path may be (100 bytes here)",
                socket.display()
            ),
        });
    }
    let event_backlog = raw.event_backlog.unwrap_or(1000);
    if !(10..=1_000_000).contains(&event_backlog) {
        return Err(ConfigError::Invalid {
            key: "event_backlog",
            message: format!("{event_backlog} is outside 10..=1000000"),
        });
    }
    let send_limit = raw.send_limit_bytes.unwrap_or(64 * 1024);
    if !(1..=16 * 1024 * 1024).contains(&send_limit) {
        return Err(ConfigError::Invalid {
            key: "send_limit_bytes",
            message: format!("{send_limit} is outside 1..=16777216"),
        });
    }
    let max_connections = raw.max_connections.unwrap_or(256);
    if !(1..=65_536).contains(&max_connections) {
        return Err(ConfigError::Invalid {
            key: "max_connections",
            message: format!("{max_connections} is outside 1..=65536"),
        });
    }
    let link = resolve_link(
        raw.aggregators.unwrap_or_default(),
        raw.link_refused_retry_secs,
        raw.tls,
        &tenant,
        &host,
        &expand,
    )?;
    let run_dir = raw
        .run_dir
        .clone()
        .map(expand)
        .unwrap_or_else(|| env.state_dir().join("run"));
    let history = fleet_store::Config::from_keys(
        raw.history,
        raw.history_db.clone().map(&expand),
        raw.history_max_age_days,
        raw.history_max_mb,
        run_dir.parent().unwrap_or(&run_dir).join("history.db"),
    )
    .map_err(|(key, message)| ConfigError::Invalid { key, message })?;
    let metrics_listen = raw
        .metrics_listen
        .as_deref()
        .map(|l| fleet_net::metrics::parse_listen(l, raw.metrics_public.unwrap_or(false)))
        .transpose()
        .map_err(|message| ConfigError::Invalid {
            key: "metrics_listen",
            message,
        })?;
    Ok(Config {
        link,
        history,
        metrics_listen,
        supervise: raw.supervise.unwrap_or(true),
        tenant,
        host,
        uid: env.uid,
        home: env.home.clone(),
        roster: raw
            .roster
            .map(expand)
            .unwrap_or_else(|| env.config_dir().join("roster.yaml")),
        run_dir,
        socket,
        heartbeat_interval: Duration::from_secs_f64(interval),
        tick: Duration::from_millis(tick_ms),
        resync: Duration::from_millis(resync_ms),
        pane_size: (w, h),
        tmux: raw.tmux.unwrap_or_else(|| PathBuf::from("tmux")),
        tmux_timeout: Duration::from_millis(tmux_timeout_ms),
        tmux_socket: raw.tmux_socket,
        log,
        event_backlog,
        send_limit,
        max_connections,
        systemd: SystemdConfig {
            probe: raw.systemd.probe.unwrap_or(true),
            recheck: match raw.systemd.recheck_secs {
                None => Duration::from_secs(60),
                Some(s) if s.is_finite() && (0.05..=86_400.0).contains(&s) => {
                    Duration::from_secs_f64(s)
                }
                Some(s) => {
                    return Err(ConfigError::Invalid {
                        key: "systemd.recheck_secs",
                        message: format!("{s} is outside 0.05..=86400"),
                    });
                }
            },
            unit: raw
                .systemd
                .unit
                .unwrap_or_else(|| "fleet-hostd.service".to_owned()),
            systemctl: raw
                .systemd
                .systemctl
                .unwrap_or_else(|| PathBuf::from("systemctl")),
            loginctl: raw
                .systemd
                .loginctl
                .unwrap_or_else(|| PathBuf::from("loginctl")),
        },
        sources,
    })
}

fn resolve_link(
    aggregators: Vec<String>,
    refused_retry_secs: Option<f64>,
    tls: TlsFile,
    tenant: &str,
    host: &str,
    expand: &dyn Fn(PathBuf) -> PathBuf,
) -> Result<LinkConfig, ConfigError> {
    let invalid = |key, message: String| ConfigError::Invalid { key, message };
    let refused_retry = refused_retry_secs.unwrap_or(30.0);
    if !(refused_retry.is_finite() && (0.1..=3600.0).contains(&refused_retry)) {
        return Err(invalid(
            "link_refused_retry_secs",
            format!("{refused_retry} is not a number of seconds in [0.1, 3600]"),
        ));
    }
    let refused_retry = Duration::from_secs_f64(refused_retry);
    for a in &aggregators {
        let hp = a.trim_start_matches("https://");
        let ok = hp
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(invalid("aggregators", format!("{a:?} is not HOST:PORT")));
        }
    }
    let plaintext = tls.plaintext.unwrap_or(false);
    let paths = match (tls.ca, tls.cert, tls.key) {
        (Some(ca), Some(cert), Some(key)) => Some(TlsPaths {
            ca: expand(ca),
            cert: expand(cert),
            key: expand(key),
        }),
        (None, None, None) => None,
        _ => {
            return Err(invalid(
                "tls",
                "set all of tls.ca, tls.cert and tls.key".into(),
            ));
        }
    };
    if plaintext {
        if paths.is_some() {
            return Err(invalid(
                "tls.plaintext",
                "set either plaintext or certificates, not both".into(),
            ));
        }
        for a in &aggregators {
            let h = a.rsplit_once(':').map_or(a.as_str(), |(h, _)| h);
            let loopback = h == "localhost"
                || h.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(invalid(
                    "tls.plaintext",
                    format!("plaintext links are for loopback aggregators only, not {a}"),
                ));
            }
        }
    } else if !aggregators.is_empty() {
        let Some(p) = &paths else {
            return Err(invalid(
                "tls",
                "aggregators are reached over mTLS only: set tls.ca, tls.cert and tls.key \
                 (`fleetctl certs issue host` makes them)"
                    .into(),
            ));
        };
        for (key, f) in [
            ("tls.ca", &p.ca),
            ("tls.cert", &p.cert),
            ("tls.key", &p.key),
        ] {
            if !f.is_file() {
                return Err(invalid(key, format!("{} does not exist", f.display())));
            }
        }
        // The certificate decides what this hostd may publish as: catch a
        // mismatch here rather than as a refused link later.
        let ck = fleet_net::tls::load_certified_key(&p.cert, &p.key)
            .map_err(|e| invalid("tls.cert", e.to_string()))?;
        let leaf = ck
            .cert
            .first()
            .ok_or_else(|| invalid("tls.cert", "empty chain".into()))?;
        match fleet_net::tls::peer_identity(leaf) {
            Ok(fleet_proto::identity::Identity::Host {
                tenant: t, host: h, ..
            }) if t == tenant && h == host => {}
            Ok(other) => {
                return Err(invalid(
                    "tls.cert",
                    format!(
                        "{} is for {other}, but this hostd publishes as tenant {tenant} host {host}",
                        p.cert.display()
                    ),
                ));
            }
            Err(e) => return Err(invalid("tls.cert", format!("{}: {e}", p.cert.display()))),
        }
    }
    Ok(LinkConfig {
        aggregators,
        refused_retry,
        tls: if plaintext { None } else { paths },
        server_name: tls.server_name,
    })
}

/// Tenant and host ids end up in addresses (`TENANT/HOST/AGENT`) and, later,
/// in certificate SANs: same grammar as agent names plus `.` for FQDNs.
fn check_label(key: &'static str, value: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && value.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key,
            message: format!(
                "{value:?} is not allowed: letters, digits, '.', '_' and '-', starting with a letter or digit"
            ),
        })
    }
}

/// `~` and `~/x` against `home`; other paths unchanged.
pub fn expand_home(path: &Path, home: &Path) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) if rest.as_os_str().is_empty() => home.to_owned(),
        Ok(rest) => home.join(rest),
        Err(_) => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_in(dir: &Path) -> Environment {
        Environment {
            uid: 4242,
            home: dir.to_owned(),
            user: Some("acme".into()),
            hostname: "box1".into(),
            xdg_config_home: None,
            xdg_state_home: None,
            xdg_runtime_dir: Some(dir.join("run")),
        }
    }

    #[test]
    fn defaults_follow_xdg() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path());
        let c = load(&env, None, &FileConfig::default()).unwrap();
        assert_eq!(c.tenant, "acme");
        assert_eq!(c.host, "box1");
        assert_eq!(c.socket, dir.path().join("run/fleet/hostd.sock"));
        assert_eq!(c.roster, dir.path().join(".config/fleet/roster.yaml"));
        assert_eq!(c.run_dir, dir.path().join(".local/state/fleet/run"));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(15));
    }

    #[test]
    fn layers_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path());
        let file = dir.path().join("hostd.toml");
        std::fs::write(
            &file,
            "tenant = \"globex\"\nhost = \"h2\"\nroster = \"~/r.yaml\"\n[systemd]\nprobe = false\n",
        )
        .unwrap();
        let flags = FileConfig {
            host: Some("h3".into()),
            ..Default::default()
        };
        let c = load(&env, Some(&file), &flags).unwrap();
        assert_eq!(c.tenant, "globex");
        assert_eq!(c.host, "h3", "flags win over the file");
        assert_eq!(c.roster, dir.path().join("r.yaml"));
        assert!(!c.systemd.probe);
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path());
        let file = dir.path().join("hostd.toml");
        std::fs::write(&file, "tenant = \"a\"\ntennant = \"b\"\n").unwrap();
        let err = load(&env, Some(&file), &FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("tennant"), "{err}");
        assert!(err.contains("hostd.toml"), "{err}");
    }

    #[test]
    fn invalid_values_are_refused_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path());
        for (flags, key) in [
            (
                FileConfig {
                    tenant: Some("../x".into()),
                    ..Default::default()
                },
                "tenant",
            ),
            (
                FileConfig {
                    heartbeat_interval_secs: Some(-1.0),
                    ..Default::default()
                },
                "heartbeat_interval_secs",
            ),
            (
                FileConfig {
                    tmux_socket: Some("a:b".into()),
                    ..Default::default()
                },
                "tmux_socket",
            ),
            (
                FileConfig {
                    log: Some("[[[".into()),
                    ..Default::default()
                },
                "log",
            ),
        ] {
            let err = load(&env, None, &flags).unwrap_err().to_string();
            assert!(err.starts_with(key), "{err}");
        }
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path());
        let err = load(
            &env,
            Some(&dir.path().join("nope.toml")),
            &FileConfig::default(),
        );
        assert!(matches!(err, Err(ConfigError::MissingFile(_))));
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// deploy/hostd.example.toml is kept valid: it loads, and every key in
    /// it is one hostd knows (unknown keys would fail the load).
    #[test]
    fn the_example_config_loads() {
        let dir = tempfile::tempdir().unwrap();
        let env = Environment {
            uid: 1000,
            home: dir.path().to_owned(),
            user: Some("someone".into()),
            hostname: "h".into(),
            xdg_config_home: None,
            xdg_state_home: None,
            xdg_runtime_dir: None,
        };
        let example =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/hostd.example.toml");
        let c = load(&env, Some(&example), &FileConfig::default()).unwrap();
        assert_eq!(c.tenant, "acme");
        assert_eq!(c.roster, dir.path().join(".config/fleet/roster.yaml"));
    }
}
