//! Pane-process exit notifications through pidfds: the moment a pane's
//! process ends, hostd knows — without waiting for tmux, whose 3.3a server
//! sometimes never reaps the child (tmux#4559).

use std::collections::HashMap;

use rustix::process::{Pid, PidfdFlags, pidfd_open};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub struct Exits {
    tx: mpsc::UnboundedSender<u32>,
    watched: HashMap<u32, JoinHandle<()>>,
}

impl Exits {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<u32>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                tx,
                watched: HashMap::new(),
            },
            rx,
        )
    }

    /// Reports `pid` on the channel once it has exited (at once if it
    /// already has). Watching the same pid twice is a no-op.
    pub fn watch(&mut self, pid: u32) {
        if pid == 0 || self.watched.contains_key(&pid) {
            return;
        }
        let tx = self.tx.clone();
        let fd = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or(rustix::io::Errno::SRCH)
            .and_then(|p| pidfd_open(p, PidfdFlags::NONBLOCK));
        let task = tokio::spawn(async move {
            // `register_with_interest` is the `unsafe` replacement; the
            // deprecated constructor is sound here because the AsyncFd owns
            // the OwnedFd, so the fd cannot be closed while registered.
            #[allow(deprecated)]
            let registered = fd
                .ok()
                .and_then(|fd| AsyncFd::with_interest(fd, Interest::READABLE).ok());
            if let Some(fd) = registered {
                // A pidfd turns readable when the process exits.
                let _ = fd.readable().await;
            }
            let _ = tx.send(pid);
        });
        self.watched.insert(pid, task);
    }

    /// Stops watching pids not in `keep`.
    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        self.watched.retain(|pid, task| {
            let k = keep(*pid);
            if !k {
                task.abort();
            }
            k
        });
    }

    pub fn forget(&mut self, pid: u32) {
        if let Some(t) = self.watched.remove(&pid) {
            t.abort();
        }
    }
}

impl Drop for Exits {
    fn drop(&mut self) {
        for t in self.watched.values() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    #[allow(clippy::disallowed_methods)] // a child to watch exit: `sleep`
    async fn reports_a_child_exit_promptly() {
        let (mut exits, mut rx) = Exits::new();
        let mut child = tokio::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        exits.watch(pid);
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert_eq!(got, Some(pid));
        let _ = child.wait().await;
    }

    #[tokio::test]
    async fn a_vanished_pid_is_reported_at_once() {
        let (mut exits, mut rx) = Exits::new();
        // pid_max is far below this.
        exits.watch(999_999_999);
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert_eq!(got, Some(999_999_999));
    }
}
