//! Operator control: start, stop, restart and their records.

use super::*;

/// Why a control action failed; [`ControlError::status`] is the one place
/// it becomes a gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// tmux is stopped or gone: try again later.
    #[error("{0}")]
    TmuxDown(String),
    #[error("{0}")]
    Tmux(#[from] tmux::TmuxError),
    #[error("{0} is not in the roster; hostd does not stop unmanaged sessions")]
    Unmanaged(String),
    #[error("{0} is not in the roster")]
    NotInRoster(String),
    #[error("{0:?} is not an action of the table")]
    NotTableAction(fleet_proto::v1::ControlAction),
}

impl ControlError {
    pub fn status(&self) -> tonic::Status {
        let msg = self.to_string();
        match self {
            ControlError::TmuxDown(_) | ControlError::Tmux(_) => tonic::Status::unavailable(msg),
            ControlError::Unmanaged(_) | ControlError::NotInRoster(_) => {
                tonic::Status::failed_precondition(msg)
            }
            ControlError::NotTableAction(_) => tonic::Status::invalid_argument(msg),
        }
    }
}

impl Table {
    pub(super) async fn control(
        &mut self,
        action: fleet_proto::v1::ControlAction,
        name: &str,
        operator: &str,
    ) -> Result<String, ControlError> {
        use fleet_proto::v1::ControlAction as A;
        let spec = self
            .roster
            .agents
            .iter()
            .find(|a| a.name.as_str() == name)
            .cloned();
        let pane = self.agents.get(name).and_then(|a| a.pane.clone());
        // Our pidfd may know of a death tmux 3.3a has not reported yet.
        let exited = self.agents.get(name).is_some_and(|a| a.exited);
        let who = [("operator", operator.to_owned())];
        if action != A::Attach
            && let Some(why) = self.tmux_unavailable()
        {
            return Err(ControlError::TmuxDown(why));
        }
        let outcome = match action {
            A::Attach => {
                self.events.emit(
                    name,
                    EventKind::Attach,
                    format!("{operator} took the session over interactively"),
                    &who,
                );
                return Ok("attach recorded".into());
            }
            A::Stop => {
                let Some(spec) = spec else {
                    return Err(ControlError::Unmanaged(name.to_owned()));
                };
                self.set_stopped(name, true);
                if let Some(p) = &pane {
                    let tree = proc::ProcTable::subtree(p.pane_pid).pids();
                    let killed = self
                        .tmux
                        .run(["kill-session", "-t", &tmux::exact(spec.name.as_str())])
                        .await;
                    if let Err(e) = killed {
                        self.tmux_failed(&e);
                        return Err(e.into());
                    }
                    end_tree_later(tree);
                }
                "stopped; hostd will not start it until `fleetctl start`".to_owned()
            }
            A::Start | A::Restart => {
                let Some(spec) = spec else {
                    return Err(ControlError::NotInRoster(name.to_owned()));
                };
                self.set_stopped(name, false);
                match pane {
                    None => {
                        self.launch(&spec).await?;
                        self.count_restart(name);
                        "started".to_owned()
                    }
                    Some(p) if p.dead || exited || action == A::Restart => {
                        let tree = proc::ProcTable::subtree(p.pane_pid).pids();
                        let respawned = self.respawn(&spec, &p.pane_id).await;
                        end_tree_later(tree);
                        if let Err(e) = respawned {
                            self.tmux_failed(&e);
                            return Err(e.into());
                        }
                        self.count_restart(name);
                        let agent = self.agents.entry(name.to_owned()).or_default();
                        agent.last_event = "restarted".into();
                        format!("respawned in pane {}", p.pane_id)
                    }
                    Some(_) => "already running".to_owned(),
                }
            }
            A::Reset | A::Unspecified => return Err(ControlError::NotTableAction(action)),
        };
        let kind = match action {
            A::Stop => EventKind::Stop,
            A::Start => EventKind::Start,
            _ => EventKind::Restart,
        };
        if let Some(a) = self.agents.get_mut(name) {
            a.last_event = kind.word().into();
        }
        self.events
            .emit(name, kind, format!("{outcome} (by {operator})"), &who);
        Ok(outcome)
    }

    pub(super) fn set_stopped(&mut self, name: &str, stopped: bool) {
        let changed = if stopped {
            self.stopped.insert(name.to_owned())
        } else {
            self.stopped.remove(name)
        };
        if changed {
            let list: String = self.stopped.iter().map(|n| format!("{n}\n")).collect();
            records::write(&self.cfg.run_dir, records::STOPPED, &list);
        }
    }

    /// One more restart of `name`, kept across hostd restarts.
    pub(super) fn count_restart(&mut self, name: &str) {
        self.agents.entry(name.to_owned()).or_default().restarts += 1;
        let list: String = self
            .agents
            .iter()
            .filter(|(_, a)| a.restarts > 0)
            .map(|(n, a)| format!("{n} {}\n", a.restarts))
            .collect();
        records::write(&self.cfg.run_dir, records::RESTARTS, &list);
    }

    /// Respawns the pane in place: same pane id, a new process, the same
    /// environment as a fresh start.
    pub(super) async fn respawn(
        &mut self,
        spec: &AgentSpec,
        pane_id: &str,
    ) -> Result<(), tmux::TmuxError> {
        let (command, env) = self.prepare_launch(spec);
        self.tmux
            .respawn(pane_id, &spec.workdir, &env, &command)
            .await?;
        let a = self.agents.entry(spec.name.to_string()).or_default();
        a.exited = false;
        a.process = None;
        a.launched = Some(Instant::now());
        Ok(())
    }
}
