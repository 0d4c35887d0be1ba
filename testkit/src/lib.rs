//! `fleet-testkit`: what every crate's tests share. A test never sleeps for
//! readiness: it polls a probe until it holds or a deadline passes, and at
//! the deadline it fails with what the last attempt saw. [`eventually`] is
//! the async form (it yields to the runtime between attempts);
//! [`eventually_blocking`] is for plain `#[test]`s with no runtime.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

/// Between two attempts.
const PAUSE: Duration = Duration::from_millis(20);

/// Polls `probe` until it gives `Ok`; at the deadline panics with `what`
/// and the last `Err` (what the last attempt saw).
#[allow(clippy::panic)]
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(saw) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}: {saw}")
            }
            Err(_) => tokio::time::sleep(PAUSE).await,
        }
    }
}

/// [`eventually`] for a test without a runtime: the thread itself waits.
#[allow(clippy::panic)]
pub fn eventually_blocking<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(saw) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}: {saw}")
            }
            Err(_) => std::thread::sleep(PAUSE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_success_and_keeps_trying_until_then() {
        let mut n = 0;
        let v = eventually("three tries", Duration::from_secs(5), async || {
            n += 1;
            if n < 3 {
                Err(format!("try {n}"))
            } else {
                Ok(n)
            }
        })
        .await;
        assert_eq!(v, 3);
        let mut m = 0;
        let w = eventually_blocking("two tries", Duration::from_secs(5), || {
            m += 1;
            if m < 2 { Err("no".into()) } else { Ok(m) }
        });
        assert_eq!(w, 2);
    }

    #[tokio::test]
    async fn a_probe_that_never_holds_fails_with_what_it_saw() {
        let out = tokio::spawn(eventually("never", Duration::from_millis(50), async || {
            Err::<(), _>("still red".to_owned())
        }))
        .await;
        let panic = out.expect_err("it must fail at the deadline").into_panic();
        let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            text.contains("never") && text.contains("still red"),
            "{text}"
        );
    }
}
