//! Roster reloads: read beside the owner, applied by it.

use super::*;

impl Table {
    /// Reads the roster beside the owner (a blocking worker); the result
    /// comes back to [`apply_reload`](Self::apply_reload). A reload asked
    /// for while one runs is one more after it.
    pub(super) fn reload(&mut self, why: &'static str) {
        if self.reloading {
            self.reload_again = Some(why);
            return;
        }
        self.reloading = true;
        let path = self.roster.path.clone();
        self.roster_mtime = mtime(&path);
        let (home, tx) = (self.cfg.home.clone(), self.reloads_tx.clone());
        tokio::task::spawn_blocking(move || {
            let _ = tx.send((why, roster::load(&path, &home)));
        });
    }

    pub(super) async fn apply_reload(
        &mut self,
        why: &str,
        loaded: Result<Roster, roster::RosterError>,
    ) {
        self.reloading = false;
        let path = self.roster.path.clone();
        match loaded {
            Ok(new) => {
                let old = self.roster.names();
                let now = new.names();
                let mut added: Vec<_> = now.difference(&old).cloned().collect();
                let mut removed: Vec<_> = old.difference(&now).cloned().collect();
                added.sort();
                removed.sort();
                if new.tmux != self.roster.tmux {
                    tracing::warn!(
                        "tmux settings changed in the roster; they apply at the next hostd start"
                    );
                }
                let tmux = self.roster.tmux.clone();
                self.roster = Roster::new(new.path, tmux, new.agents, new.supervision);
                self.roster_tx.send_replace(Arc::new(self.roster.clone()));
                self.roster_loaded_at = clock::now_ms();
                self.events.emit(
                    "",
                    EventKind::RosterReloaded,
                    format!(
                        "roster reloaded ({why}): {} agents, added [{}], removed [{}] (removed agents keep running, unmanaged)",
                        self.roster.agents.len(),
                        added.join(", "),
                        removed.join(", ")
                    ),
                    &[("path", path.display().to_string())],
                );
                self.launch_missing().await;
                self.want_read();
            }
            Err(e) => {
                tracing::warn!(error = %e, "roster rejected; keeping the last good one");
                self.events.emit(
                    "",
                    EventKind::RosterRejected,
                    format!(
                        "{}; keeping the last good roster",
                        at_most(&e.to_string(), 1024)
                    ),
                    &[("path", path.display().to_string())],
                );
                self.publish();
            }
        }
    }

    // === periodic ===
}
