//! How long a send may wait, as both daemons read a `SendRequest`: a zero
//! field means the default below, and every wait is clamped to
//! [`MAX_WAIT`] so no caller can hold a pane's queue or a relay open
//! longer. hostd applies these; the aggregator bounds its relay by them;
//! `fleetctl send` leaves a field at zero unless the operator set it.

use std::time::Duration;

use crate::v1::SendRequest;

/// To a verdict after Enter.
pub const VERIFY: Duration = Duration::from_secs(6);
/// Until the agent is not busy (`when_idle`).
pub const WHEN_IDLE: Duration = Duration::from_secs(30);
/// For a place in the agent's input queue and for a starting runtime's
/// input box.
pub const QUEUE: Duration = Duration::from_secs(30);
/// No wait is longer.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// The waits of one send, defaults filled in and clamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waits {
    pub verify: Duration,
    /// `None` when the send does not wait for idle.
    pub when_idle: Option<Duration>,
    pub queue: Duration,
}

fn ms(v: u32, default: Duration) -> Duration {
    if v == 0 {
        default
    } else {
        Duration::from_millis(u64::from(v)).min(MAX_WAIT)
    }
}

/// A duration as a request field: whole milliseconds, saturating.
pub fn field(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl Waits {
    pub fn of(req: &SendRequest) -> Self {
        Self {
            verify: ms(req.verify_timeout_ms, VERIFY),
            when_idle: req
                .when_idle
                .then(|| ms(req.when_idle_timeout_ms, WHEN_IDLE)),
            queue: ms(req.queue_timeout_ms, QUEUE),
        }
    }

    /// The longest the whole send can take at the host, queue and idle
    /// wait included: what a relay waits before it gives up on the answer.
    pub fn total(&self) -> Duration {
        self.queue + self.when_idle.unwrap_or_default() + self.verify
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_the_default_and_every_wait_is_clamped() {
        let w = Waits::of(&SendRequest::default());
        assert_eq!((w.verify, w.when_idle, w.queue), (VERIFY, None, QUEUE));
        let w = Waits::of(&SendRequest {
            verify_timeout_ms: 1500,
            when_idle: true,
            queue_timeout_ms: u32::MAX,
            ..Default::default()
        });
        assert_eq!(w.verify, Duration::from_millis(1500));
        assert_eq!(w.when_idle, Some(WHEN_IDLE));
        assert_eq!(w.queue, MAX_WAIT);
        assert_eq!(
            w.total(),
            Duration::from_millis(1500) + WHEN_IDLE + MAX_WAIT
        );
        assert_eq!(field(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
