//! A client's copy of the fleet a `WatchFleet` stream describes: the one
//! reader of the stream's protocol (a snapshot in chunks, then deltas in
//! sequence; a gap means start again) for `ps --watch`, `top` and the
//! dashboard, with a bound on the rows it will hold.

use std::collections::BTreeMap;

use fleet_proto::v1::{AgentRow, FleetUpdate, HostRow, fleet_update};

/// An agent row's key: one view may span many tenants and hosts.
pub type Key = (String, String, String);

pub fn key_of(r: &AgentRow) -> Key {
    (r.tenant_id.clone(), r.host.clone(), r.name.clone())
}

/// Why the copy was dropped; the stream must be opened again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    /// An update out of sequence: something was missed.
    Gap,
    /// More agent rows than the copy may hold.
    TooMany { limit: usize },
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Broken::Gap => f.write_str("the watch stream skipped updates"),
            Broken::TooMany { limit } => write!(
                f,
                "more than {limit} agents match: narrow the selection (--max-rows)"
            ),
        }
    }
}

#[derive(Debug)]
pub struct Mirror {
    pub rows: BTreeMap<Key, AgentRow>,
    pub hosts: BTreeMap<(String, String), HostRow>,
    /// A snapshot's chunks until its last one is in.
    partial: Option<(Vec<AgentRow>, Vec<HostRow>)>,
    last: Option<(u64, u64)>,
    /// Whether a whole snapshot has been applied.
    complete: bool,
    max_rows: usize,
}

impl Mirror {
    pub fn new(max_rows: usize) -> Self {
        Mirror {
            rows: BTreeMap::new(),
            hosts: BTreeMap::new(),
            partial: None,
            last: None,
            complete: false,
            max_rows,
        }
    }

    /// Forgets everything (a new stream follows).
    pub fn clear(&mut self) {
        *self = Mirror::new(self.max_rows);
    }

    /// Whether the copy is a whole view (its first snapshot is in).
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// Applies one update. `Ok(true)` when the view changed and is whole
    /// (worth drawing); `Err` drops every row: open a new stream.
    pub fn apply(&mut self, u: FleetUpdate) -> Result<bool, Broken> {
        let snapshot = matches!(u.update, Some(fleet_update::Update::Snapshot(_)));
        if let Some((epoch, seq)) = self.last
            && (epoch != u.epoch || seq.wrapping_add(1) != u.seq)
            && !snapshot
        {
            self.clear();
            return Err(Broken::Gap);
        }
        self.last = Some((u.epoch, u.seq));
        match u.update {
            Some(fleet_update::Update::Snapshot(s)) => {
                let (mut a, mut h) = self.partial.take().unwrap_or_default();
                a.extend(s.agents);
                h.extend(s.hosts);
                self.within(a.len())?;
                if s.more {
                    self.partial = Some((a, h));
                    return Ok(false);
                }
                self.rows = a.into_iter().map(|r| (key_of(&r), r)).collect();
                self.hosts = h
                    .into_iter()
                    .map(|r| ((r.tenant_id.clone(), r.host.clone()), r))
                    .collect();
                self.complete = true;
            }
            Some(fleet_update::Update::Delta(d)) => {
                if !self.complete {
                    return Ok(false);
                }
                for a in d.upserts {
                    self.rows.insert(key_of(&a), a);
                }
                for k in d.removals {
                    self.rows.remove(&(k.tenant_id, k.host, k.name));
                }
                for h in d.hosts {
                    self.hosts.insert((h.tenant_id.clone(), h.host.clone()), h);
                }
                self.within(self.rows.len())?;
            }
            None => return Ok(false),
        }
        Ok(true)
    }

    fn within(&mut self, held: usize) -> Result<(), Broken> {
        if held > self.max_rows {
            let limit = self.max_rows;
            self.clear();
            return Err(Broken::TooMany { limit });
        }
        Ok(())
    }

    /// The rows and hosts, in key order.
    pub fn lists(&self) -> (Vec<AgentRow>, Vec<HostRow>) {
        (
            self.rows.values().cloned().collect(),
            self.hosts.values().cloned().collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_proto::v1::{AgentKey, Delta, Snapshot};

    fn row(name: &str) -> AgentRow {
        AgentRow {
            tenant_id: "t".into(),
            host: "h".into(),
            name: name.into(),
            ..Default::default()
        }
    }

    fn upd(seq: u64, u: fleet_update::Update) -> FleetUpdate {
        FleetUpdate {
            epoch: 1,
            seq,
            update: Some(u),
            generated_at_unix_ms: 0,
        }
    }

    fn snap(names: &[&str], more: bool) -> fleet_update::Update {
        fleet_update::Update::Snapshot(Snapshot {
            agents: names.iter().map(|n| row(n)).collect(),
            hosts: vec![],
            more,
        })
    }

    fn delta(up: &[&str], gone: &[&str]) -> fleet_update::Update {
        fleet_update::Update::Delta(Delta {
            upserts: up.iter().map(|n| row(n)).collect(),
            removals: gone
                .iter()
                .map(|n| AgentKey {
                    tenant_id: "t".into(),
                    host: "h".into(),
                    name: (*n).into(),
                })
                .collect(),
            hosts: vec![],
        })
    }

    #[test]
    fn snapshots_in_chunks_then_deltas_and_a_gap_drops_everything() {
        let mut m = Mirror::new(100);
        assert_eq!(
            m.apply(upd(1, delta(&["x"], &[]))),
            Ok(false),
            "no view yet"
        );
        assert_eq!(m.apply(upd(2, snap(&["a"], true))), Ok(false));
        assert!(m.rows.is_empty(), "a partial snapshot is not a view");
        assert_eq!(m.apply(upd(3, snap(&["b"], false))), Ok(true));
        assert!(m.complete());
        assert_eq!(m.apply(upd(4, delta(&["c"], &["a"]))), Ok(true));
        let names: Vec<_> = m.rows.keys().map(|k| k.2.as_str()).collect();
        assert_eq!(names, ["b", "c"]);
        assert_eq!(m.apply(upd(6, delta(&["d"], &[]))), Err(Broken::Gap));
        assert!(m.rows.is_empty() && !m.complete());
    }

    #[test]
    fn more_rows_than_the_bound_are_refused_before_they_are_all_held() {
        let mut m = Mirror::new(2);
        assert_eq!(m.apply(upd(1, snap(&["a", "b"], true))), Ok(false));
        assert_eq!(
            m.apply(upd(2, snap(&["c"], true))),
            Err(Broken::TooMany { limit: 2 })
        );
        assert!(m.rows.is_empty() && m.partial.is_none());
        assert_eq!(m.apply(upd(1, snap(&["a", "b"], false))), Ok(true));
        assert_eq!(
            m.apply(upd(2, delta(&["c"], &[]))),
            Err(Broken::TooMany { limit: 2 })
        );
        assert!(m.rows.is_empty());
    }
}
