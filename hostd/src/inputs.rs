//! One writer per pane: every input to an agent — an operator's `send` and
//! `reset`, the supervisor's pokes, digests and alerts — waits its turn in
//! that agent's queue, so two pastes never interleave and each verdict
//! reads its own screen. The queue is a fair (FIFO) async mutex per agent;
//! a wait is bounded and said in the receipt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

#[derive(Clone, Default)]
pub struct Inputs {
    queues: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// The agent's input is ours until this is dropped.
pub struct Turn {
    _guard: OwnedMutexGuard<()>,
    /// How long this input waited behind others.
    pub waited: Duration,
}

impl Inputs {
    /// Waits for `agent`'s queue, at most `bound`; `Err(bound)` when the
    /// inputs ahead took longer.
    pub async fn acquire(&self, agent: &str, bound: Duration) -> Result<Turn, Duration> {
        let queue = {
            let mut map = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            // Forget queues nobody holds or waits for.
            map.retain(|_, q| Arc::strong_count(q) > 1);
            map.entry(agent.to_owned()).or_default().clone()
        };
        let start = Instant::now();
        match tokio::time::timeout(bound, queue.lock_owned()).await {
            Ok(guard) => Ok(Turn {
                _guard: guard,
                waited: start.elapsed(),
            }),
            Err(_) => Err(bound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inputs_to_one_agent_take_turns_in_order_and_others_do_not_wait() {
        let inputs = Inputs::default();
        let first = inputs.acquire("a", Duration::from_secs(1)).await.unwrap();
        // Another agent is not behind "a".
        let other = inputs.acquire("b", Duration::from_millis(10)).await;
        assert!(other.is_ok());
        // A second input to "a" waits, bounded.
        let late = inputs.acquire("a", Duration::from_millis(30)).await;
        assert_eq!(late.err(), Some(Duration::from_millis(30)));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (inputs, order) = (inputs.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let t = inputs.acquire("a", Duration::from_secs(5)).await.unwrap();
                order.lock().unwrap().push(i);
                tokio::task::yield_now().await;
                drop(t);
            }));
            // Queue them in a known order.
            tokio::task::yield_now().await;
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
    }
}
