//! Launching an agent: its pane, its environment and its native wiring.

use super::*;

/// PATH for panes: the roster's prefixes, the usual user-level bin dirs
/// that exist, hostd's own directory (so bundled tools such as
/// `fleet-demo-agent` and `fleetctl` resolve), then hostd's PATH.
pub fn pane_path(prefix: &[PathBuf], home: &std::path::Path) -> String {
    let mut dirs: Vec<PathBuf> = prefix.to_vec();
    for d in [".npm-global/bin", ".local/bin", ".cargo/bin"] {
        let p = home.join(d);
        if p.is_dir() {
            dirs.push(p);
        }
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        dirs.push(dir.to_owned());
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let mut seen = HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    std::env::join_paths(dirs)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Table {
    /// The command and environment of a fresh start: the runtime's native
    /// status mechanism wired in (or why not, as an event), and the last
    /// run's status forgotten so a new process starts without it.
    pub(super) fn prepare_launch(&mut self, spec: &AgentSpec) -> (String, tmux::PaneEnv) {
        let mut env = self.pane_env(spec);
        let mut command = spec.command.clone();
        let name = spec.name.to_string();
        let a = self.agents.entry(name.clone()).or_default();
        // Reports from before this start are the last run's.
        a.launched_wall = Some(SystemTime::now());
        a.native_status = None;
        a.observed = None;
        // What each wiring adds (its flags, its variables over the
        // roster's), or the event saying why it is off.
        let add = |wired: Result<Option<native::Wiring>, String>,
                   off: EventKind,
                   command: &mut String,
                   env: &mut tmux::PaneEnv| match wired {
            Ok(Some(w)) => {
                command.push_str(&w.args);
                for (k, v) in w.env {
                    env.retain(|(ek, _)| *ek != k);
                    env.push((k, v));
                }
            }
            Ok(None) => {}
            Err(e) => {
                self.events.emit(&name, off, e, &[]);
            }
        };
        let wired = native::wire(&self.cfg.run_dir, spec, self.fleetctl.as_deref());
        add(
            wired.map_err(|e| e.to_string()),
            EventKind::NativeOff,
            &mut command,
            &mut env,
        );
        let so_far: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let wired = native::wire_mcp(
            &self.cfg.run_dir,
            spec,
            self.fleetctl.as_deref(),
            &self.cfg.socket,
            &so_far,
        );
        add(
            wired.map_err(|e| e.to_string()),
            EventKind::McpOff,
            &mut command,
            &mut env,
        );
        (command, env)
    }

    /// Starts every roster agent that has no session (and was not stopped
    /// by an operator).
    pub(super) async fn launch_missing(&mut self) {
        let specs: Vec<AgentSpec> = self.roster.agents.clone();
        for spec in specs {
            let name = spec.name.to_string();
            let has = self.agents.get(&name).is_some_and(|a| a.pane.is_some());
            if has || self.stopped.contains(&name) {
                continue;
            }
            if self.unresponsive.is_some() {
                return;
            }
            // A failure is an event and the supervisor's to retry.
            let _ = self.launch(&spec).await;
        }
    }

    /// Creates the agent's session; a failure is a `start-failed` event
    /// and the error.
    pub(super) async fn launch(&mut self, spec: &AgentSpec) -> Result<(), tmux::TmuxError> {
        let name = spec.name.to_string();
        let (command, env) = self.prepare_launch(spec);
        let launch = tmux::Launch {
            name: &name,
            workdir: &spec.workdir,
            env: &env,
            command: &command,
            size: self.cfg.pane_size,
        };
        match self.tmux.launch(&launch).await {
            Ok(Some(created)) => {
                let agent = self.agents.entry(name.clone()).or_default();
                agent.last_event = "started".into();
                agent.launched = Some(Instant::now());
                self.events.emit(
                    &name,
                    EventKind::Started,
                    format!("started {} (pid {})", spec.runtime, created.pane_pid),
                    &[
                        ("pid", created.pane_pid.to_string()),
                        ("pane", created.pane_id.clone()),
                        ("command", spec.command.clone()),
                    ],
                );
            }
            Ok(None) => {}
            Err(e) => {
                self.tmux_failed(&e);
                let agent = self.agents.entry(name.clone()).or_default();
                agent.last_event = "start-failed".into();
                self.events
                    .emit(&name, EventKind::StartFailed, e.to_string(), &[]);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The pane's environment, set with `new-session -e` so it reaches the
    /// pane (panes inherit the tmux server's environment, not hostd's).
    pub(super) fn pane_env(&self, spec: &AgentSpec) -> tmux::PaneEnv {
        let interval = spec
            .heartbeat_interval
            .unwrap_or(self.cfg.heartbeat_interval);
        let mut env: tmux::PaneEnv = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push(("PATH".into(), pane_path(&spec.path_prefix, &self.cfg.home)));
        env.push((heartbeat::ENV_AGENT.into(), spec.name.to_string()));
        env.push((heartbeat::ENV_TENANT.into(), self.cfg.tenant.clone()));
        env.push((
            heartbeat::ENV_HEARTBEAT_FILE.into(),
            heartbeat::path_for(&self.cfg.run_dir, &spec.name)
                .display()
                .to_string(),
        ));
        env.push((
            heartbeat::ENV_HEARTBEAT_INTERVAL.into(),
            format_secs(interval),
        ));
        env
    }

    // === roster ===
}
