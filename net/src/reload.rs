//! Files re-read while a daemon runs: a value loaded from files, loaded
//! again when their modification times change, with the last good value
//! kept when a new load fails. TLS certificates and trust bundles, the
//! aggregator's grants and anything else a daemon reloads use this one
//! implementation, so "a bad edit is refused once and the old value stays"
//! means the same thing everywhere.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// A value read from `files`; [`Watched::reload`] re-reads it when they
/// changed. Readers get the value in force as an `Arc`: a reload never
/// disturbs a reader holding the old one.
#[derive(Debug)]
pub struct Watched<T> {
    files: Vec<PathBuf>,
    current: RwLock<(Arc<T>, Option<SystemTime>)>,
}

/// The newest modification time of `files` (`None` when none can be read:
/// a file that disappears is a change too).
fn stamp(files: &[PathBuf]) -> Option<SystemTime> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .max()
        .flatten()
}

impl<T> Watched<T> {
    /// `value`, already loaded from `files` (empty: held in memory, never
    /// reloaded); [`Watched::load`] is the race-free way to load it.
    pub fn new(files: Vec<PathBuf>, value: T) -> Self {
        let at = stamp(&files);
        Self {
            files,
            current: RwLock::new((Arc::new(value), at)),
        }
    }

    /// Loads the value from `files`. Their times are taken before the
    /// load, so an edit racing it is loaded again by the first reload.
    pub fn load<E>(files: Vec<PathBuf>, load: impl FnOnce() -> Result<T, E>) -> Result<Self, E> {
        let at = stamp(&files);
        let value = load()?;
        Ok(Self {
            files,
            current: RwLock::new((Arc::new(value), at)),
        })
    }

    /// The value in force.
    pub fn get(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Calls `load` if the files changed since the last attempt: `Ok(true)`
    /// when its value is now in force, `Ok(false)` when nothing changed,
    /// its error (once per change: the attempt is remembered) otherwise —
    /// and then the last good value stays.
    pub fn reload<E>(&self, load: impl FnOnce() -> Result<T, E>) -> Result<bool, E> {
        if self.files.is_empty() {
            return Ok(false);
        }
        let at = stamp(&self.files);
        if at == self.current.read().unwrap_or_else(|p| p.into_inner()).1 {
            return Ok(false);
        }
        let loaded = load();
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        cur.1 = at;
        cur.0 = Arc::new(loaded?);
        Ok(true)
    }
}

/// Calls `check` every `every` on the runtime's timer, forever (the task
/// ends when the runtime does). `check` is a reload: it reports its own
/// outcome, so callers log and audit in one place.
pub fn every(
    every: Duration,
    mut check: impl FnMut() + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            check();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn touch(p: &Path, secs: u64, text: &str) {
        std::fs::write(p, text).unwrap();
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(SystemTime::now() + Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn a_failed_load_keeps_the_last_good_value_and_is_reported_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("v");
        std::fs::write(&p, "1").unwrap();
        let load = || std::fs::read_to_string(&p).unwrap().parse::<u32>();
        let w = Watched::load(vec![p.clone()], load).unwrap();
        assert_eq!(*w.get(), 1);
        assert_eq!(w.reload(load), Ok(false), "unchanged file: no load");
        touch(&p, 5, "x");
        assert!(w.reload(load).is_err());
        assert_eq!(*w.get(), 1, "the last good value stays");
        assert_eq!(
            w.reload(load),
            Ok(false),
            "the same bad edit is reported once"
        );
        touch(&p, 10, "2");
        assert_eq!(w.reload(load), Ok(true));
        assert_eq!(*w.get(), 2);
    }

    #[test]
    fn a_value_without_files_never_reloads() {
        let w = Watched::new(Vec::new(), 7u8);
        assert_eq!(w.reload(|| Err::<u8, ()>(())), Ok(false));
        assert_eq!(*w.get(), 7);
    }
}
