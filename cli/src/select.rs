//! The selector flags every read verb shares (`--tenant`, `--host`,
//! `--health`, `--status`, `--pane`, `--flag`, NAME-GLOB …), turned into the
//! wire `Selector` the server applies before it sends anything.

use std::time::Duration;

use fleet_proto::v1::{AgentFlag, AgentStatus, Health, PaneState, Selector};

/// Which agents a read shows. Each flag is repeatable and takes
/// comma-separated values; values of one flag are "any of", different flags
/// must all hold. Applied by hostd or the aggregator before anything is sent.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Selection")]
pub struct SelectArgs {
    /// Only agents named so: exact names or shell globs ('coder-*').
    #[arg(value_name = "NAME-GLOB")]
    pub names: Vec<String>,
    /// Only this tenant (repeatable).
    #[arg(long = "tenant", value_name = "TENANT", value_delimiter = ',')]
    pub tenants: Vec<String>,
    /// Only hosts named so: exact or a glob ('gpu-*').
    #[arg(long = "host", value_name = "HOST-GLOB", value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// healthy, stale or unknown.
    #[arg(long, value_name = "HEALTH", value_delimiter = ',', value_parser = health)]
    pub health: Vec<Health>,
    /// idle, busy, waiting or unknown.
    #[arg(long, value_name = "STATUS", value_delimiter = ',', value_parser = status)]
    pub status: Vec<AgentStatus>,
    /// alive, dead or missing.
    #[arg(long, value_name = "PANE", value_delimiter = ',', value_parser = pane)]
    pub pane: Vec<PaneState>,
    /// Rows carrying this flag: drift, unmanaged, in-mode, stopped … (see
    /// `fleetctl ps --help`).
    #[arg(long = "flag", value_name = "FLAG", value_delimiter = ',', value_parser = flag)]
    pub flags: Vec<AgentFlag>,
}

impl SelectArgs {
    /// The selector as sent; `None` when it admits everything (an old
    /// server then sees the request it knows).
    pub fn selector(&self) -> Option<Selector> {
        let s = Selector {
            tenants: self.tenants.clone(),
            hosts: self.hosts.clone(),
            names: self.names.clone(),
            health: self.health.iter().map(|h| *h as i32).collect(),
            status: self.status.iter().map(|s| *s as i32).collect(),
            pane: self.pane.iter().map(|p| *p as i32).collect(),
            flags: self.flags.iter().map(|f| *f as i32).collect(),
        };
        (s != Selector::default()).then_some(s)
    }

    /// A selection from the query of a URL (`name`, `tenant`, `host`,
    /// `health`, `status`, `pane`, `flag`, each comma-separated, in the
    /// words the flags take).
    pub fn from_query(q: &std::collections::BTreeMap<String, String>) -> Result<Self, String> {
        let list = |key: &str| -> Vec<String> {
            q.get(key)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .take(64)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        fn each<T>(
            words: Vec<String>,
            parse: fn(&str) -> Result<T, String>,
        ) -> Result<Vec<T>, String> {
            words.iter().map(|w| parse(w)).collect()
        }
        Ok(Self {
            names: list("name"),
            tenants: list("tenant"),
            hosts: list("host"),
            health: each(list("health"), health)?,
            status: each(list("status"), status)?,
            pane: each(list("pane"), pane)?,
            flags: each(list("flag"), flag)?,
        })
    }

    /// Checks the patterns here, before any request, as the server would.
    pub fn check(&self) -> Result<Option<Selector>, crate::Failure> {
        let s = self.selector();
        fleet_proto::select::Select::new(s.as_ref())
            .map_err(|e| crate::Failure::Usage(e.to_string()))?;
        Ok(s)
    }
}

fn one_of<T: Copy>(what: &str, s: &str, all: &[(&str, T)]) -> Result<T, String> {
    all.iter()
        .find(|(w, _)| *w == s)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let words: Vec<_> = all.iter().map(|(w, _)| *w).collect();
            format!("{s:?} is no {what}: expected {}", words.join(", "))
        })
}

pub fn health(s: &str) -> Result<Health, String> {
    one_of(
        "health",
        s,
        &[
            ("healthy", Health::Healthy),
            ("stale", Health::Stale),
            ("unknown", Health::Unknown),
        ],
    )
}

pub fn status(s: &str) -> Result<AgentStatus, String> {
    one_of(
        "status",
        s,
        &[
            ("idle", AgentStatus::Ok),
            ("ok", AgentStatus::Ok),
            ("busy", AgentStatus::Busy),
            ("waiting", AgentStatus::Waiting),
            ("unknown", AgentStatus::Unknown),
        ],
    )
}

pub fn pane(s: &str) -> Result<PaneState, String> {
    one_of(
        "pane state",
        s,
        &[
            ("alive", PaneState::Alive),
            ("dead", PaneState::Dead),
            ("missing", PaneState::Missing),
        ],
    )
}

pub fn flag(s: &str) -> Result<AgentFlag, String> {
    let all: Vec<_> = AgentFlag::ALL.iter().map(|f| (f.word(), *f)).collect();
    one_of("flag", s, &all)
}

/// A duration such as `90s`, `15m`, `2h`, `1d` or `1h30m` (a bare number
/// is seconds). Hand-written: four units do not need a crate.
/// An instant as Unix milliseconds: a DURATION ago (`2h`, `1d`) or an
/// RFC 3339 time (`2026-12-01T22:00:00Z`).
pub fn parse_when(s: &str) -> Result<i64, String> {
    if let Ok(t) =
        time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
    {
        return i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
            .map_err(|_| format!("{s:?}: out of range"));
    }
    let d = parse_duration(s).map_err(|_| {
        format!("{s:?}: expected a duration ago (90s, 15m, 2h, 1d) or an RFC 3339 time (2026-12-01T22:00:00Z)")
    })?;
    Ok(fleet_proto::clock::now_ms()
        .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?}: expected a duration such as 90s, 15m, 2h, 1d or 1h30m");
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_an_operator_writes_them() {
        let d = |s| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(d("90"), Ok(90));
        assert_eq!(d("90s"), Ok(90));
        assert_eq!(d("15m"), Ok(900));
        assert_eq!(d("1h30m"), Ok(5400));
        assert_eq!(d("2d"), Ok(172_800));
        for bad in ["", "m", "5x", "1h30", "-5s", "99999999999999999999d"] {
            assert!(d(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_empty_selection_sends_no_selector_and_words_map_to_values() {
        assert_eq!(SelectArgs::default().selector(), None);
        let s = SelectArgs {
            status: vec![status("idle").unwrap()],
            flags: vec![flag("drift").unwrap()],
            ..Default::default()
        };
        let sel = s.selector().unwrap();
        assert_eq!(sel.status, [AgentStatus::Ok as i32]);
        assert_eq!(sel.flags, [AgentFlag::Drift as i32]);
        assert!(
            health("sick")
                .unwrap_err()
                .contains("healthy, stale, unknown")
        );
        let bad = SelectArgs {
            names: vec!["a[".into()],
            ..Default::default()
        };
        assert!(matches!(bad.check(), Err(crate::Failure::Usage(_))));
    }
}
