//! One retry schedule for everything that waits and tries again (host links,
//! respawns, send polling): exponential from `min`, capped at `max`, with a
//! `jitter` fraction of each delay drawn at random — validated when it is
//! made, so a bad schedule is an error at start, never a spin or a stall.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackoffError {
    #[error("backoff: the first delay {min:?} is longer than the cap {max:?}")]
    MinOverMax { min: Duration, max: Duration },
    #[error("backoff: jitter {0} is not a fraction between 0 and 1")]
    Jitter(f64),
}

/// A validated schedule: delay `n` is `min · 2ⁿ`, at most `max`, of which a
/// `jitter` fraction is random (1.0: uniform in `[0, delay]`, "full
/// jitter", so a fleet never retries in lockstep; 0.0: exact).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: f64,
}

impl Backoff {
    pub fn try_new(min: Duration, max: Duration, jitter: f64) -> Result<Self, BackoffError> {
        if min > max {
            return Err(BackoffError::MinOverMax { min, max });
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(BackoffError::Jitter(jitter));
        }
        Ok(Self { min, max, jitter })
    }

    /// [`try_new`](Self::try_new) for constants: an invalid one fails the
    /// build.
    pub const fn fixed(min: Duration, max: Duration, jitter: f64) -> Self {
        assert!(min.as_nanos() <= max.as_nanos(), "backoff: min over max");
        assert!(
            jitter >= 0.0 && jitter <= 1.0,
            "backoff: jitter not a fraction"
        );
        Self { min, max, jitter }
    }

    /// The delay before retry `n` (0-based), without its jitter.
    pub fn ceiling(&self, n: u32) -> Duration {
        self.min.saturating_mul(1u32 << n.min(20)).min(self.max)
    }

    /// The delay before retry `n`, jittered.
    pub fn delay(&self, n: u32) -> Duration {
        let d = self.ceiling(n);
        if self.jitter == 0.0 {
            return d;
        }
        d.mul_f64(1.0 - self.jitter * rand::random::<f64>())
    }

    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn bad_schedules_are_refused_when_made() {
        assert_eq!(
            Backoff::try_new(MS * 10, MS, 0.0),
            Err(BackoffError::MinOverMax {
                min: MS * 10,
                max: MS
            })
        );
        assert!(matches!(
            Backoff::try_new(MS, MS, 1.5),
            Err(BackoffError::Jitter(_))
        ));
        assert!(matches!(
            Backoff::try_new(MS, MS, f64::NAN),
            Err(BackoffError::Jitter(_))
        ));
        // No wait at all is a schedule too (respawn at once).
        let none = Backoff::try_new(Duration::ZERO, Duration::ZERO, 0.0).unwrap();
        assert_eq!(none.delay(7), Duration::ZERO);
    }

    #[test]
    fn delays_double_to_the_cap_and_jitter_stays_under_it() {
        let exact = Backoff::try_new(MS * 500, MS * 3000, 0.0).unwrap();
        let got: Vec<_> = (0..5).map(|n| exact.delay(n)).collect();
        assert_eq!(got, [MS * 500, MS * 1000, MS * 2000, MS * 3000, MS * 3000]);
        assert_eq!(exact.delay(u32::MAX), MS * 3000, "no overflow");
        let full = Backoff::try_new(MS * 500, MS * 30_000, 1.0).unwrap();
        let draws: Vec<_> = (0..200).map(|_| full.delay(3)).collect();
        assert!(draws.iter().all(|d| *d <= MS * 4000));
        let spread = draws
            .iter()
            .max()
            .unwrap()
            .saturating_sub(*draws.iter().min().unwrap());
        assert!(
            spread > MS * 1000,
            "full jitter spreads retries: {spread:?}"
        );
    }
}
