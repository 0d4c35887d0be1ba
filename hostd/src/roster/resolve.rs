//! Resolving a roster as written into the one hostd runs: defaults applied, runtimes looked up, every value checked, errors naming file, line and key.

use super::*;

pub(super) fn resolve(
    raw: RawRoster,
    path: &Path,
    home: &Path,
    at: &dyn Fn(&str, String) -> RosterError,
) -> Result<Roster, RosterError> {
    if raw.version != 1 {
        return Err(at(
            "version",
            format!(
                "unsupported roster version {} (this fleet reads version 1)",
                raw.version
            ),
        ));
    }
    if raw.transport != "tmux" {
        return Err(at(
            "transport",
            format!("unsupported transport {:?} (only \"tmux\")", raw.transport),
        ));
    }
    let socket_name = raw.tmux.socket_name.unwrap_or_else(|| "fleet".into());
    fleet_proto::name::check(&socket_name).map_err(|e| at("tmux.socket_name", e.to_string()))?;
    let holder_session = raw.tmux.holder_session.unwrap_or_else(|| "_holder".into());
    // The holder may start with '_' so it can never clash with an agent.
    fleet_proto::name::check(holder_session.trim_start_matches('_'))
        .map_err(|e| at("tmux.holder_session", e.to_string()))?;

    let expand = |p: &str| crate::config::expand_home(Path::new(p), home);
    check_env(&raw.defaults.env, "defaults.env", at)?;
    let default_interval = interval(
        raw.defaults.heartbeat_interval_secs,
        "defaults.heartbeat_interval_secs",
        at,
    )?;
    let default_workdir = raw
        .defaults
        .working_directory
        .as_deref()
        .map(expand)
        .unwrap_or_else(|| home.to_owned());

    for (name, rt) in &raw.runtimes {
        let key = format!("runtimes.{name}");
        fleet_proto::name::check(name).map_err(|e| at(&key, e.to_string()))?;
        if runtime::builtin(name).is_none() && rt.command.is_none() {
            return Err(at(&key, format!("custom runtime {name:?} needs a command")));
        }
        check_env(&rt.env, &format!("{key}.env"), at)?;
        if rt.submit_gap_ms.is_some_and(|g| g > 10_000) {
            return Err(at(
                &format!("{key}.submit_gap_ms"),
                "must be at most 10000".into(),
            ));
        }
    }

    let supervision = resolve_supervision(&raw.supervision, at)?;
    let mut agents = Vec::with_capacity(raw.agents.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, a) in raw.agents.into_iter().enumerate() {
        let key = |k: &str| format!("agents[{i}].{k}");
        let name = AgentName::new(&a.name).map_err(|e| at(&key("name"), e.to_string()))?;
        if a.name == holder_session {
            return Err(at(
                &key("name"),
                format!("{:?} is the holder session's name", a.name),
            ));
        }
        let line = at(&key("name"), String::new()).line.unwrap_or(0);
        if let Some(first) = seen.insert(a.name.clone(), line) {
            return Err(at(
                &key("name"),
                format!("duplicate agent name {:?} (first at line {first})", a.name),
            ));
        }
        let builtin = runtime::builtin(&a.runtime);
        let custom = raw.runtimes.get(&a.runtime);
        if builtin.is_none() && custom.is_none() {
            let mut known: Vec<&str> = runtime::names().collect();
            known.extend(raw.runtimes.keys().map(String::as_str));
            known.sort_unstable();
            known.dedup();
            return Err(at(
                &key("runtime"),
                format!(
                    "unknown runtime {:?} (known: {})",
                    a.runtime,
                    known.join(", ")
                ),
            ));
        }
        check_env(&a.env, &key("env"), at)?;
        let hb = interval(
            a.heartbeat_interval_secs,
            &key("heartbeat_interval_secs"),
            at,
        )?;
        if a.submit_gap_ms.is_some_and(|g| g > 10_000) {
            return Err(at(&key("submit_gap_ms"), "must be at most 10000".into()));
        }
        let command = a
            .command
            .clone()
            .or_else(|| custom.and_then(|c| c.command.clone()))
            .or_else(|| builtin.map(|b| b.command.to_owned()))
            .unwrap_or_default();
        if command.trim().is_empty() {
            return Err(at(&key("command"), "command is empty".into()));
        }
        let process_names = custom
            .and_then(|c| c.process_names.clone())
            .or_else(|| builtin.map(|b| b.process_names.iter().map(|s| (*s).to_owned()).collect()))
            .or_else(|| runtime::process_name_of(&command).map(|p| vec![p]))
            .unwrap_or_default();
        let mut env = raw.defaults.env.clone();
        if let Some(c) = custom {
            env.extend(c.env.clone());
        }
        env.extend(a.env.clone());
        let workdir = a
            .workdir
            .as_deref()
            .or_else(|| custom.and_then(|c| c.workdir.as_deref()))
            .map(expand)
            .unwrap_or_else(|| default_workdir.clone());
        let mut path_prefix: Vec<PathBuf> = Vec::new();
        let runtime_path = custom.map(|c| c.path.clone()).unwrap_or_default();
        for p in a.path.iter().chain(&runtime_path).chain(&raw.defaults.path) {
            let p = expand(p);
            if !path_prefix.contains(&p) {
                path_prefix.push(p);
            }
        }
        let like = match custom.and_then(|c| c.native.clone()) {
            Some(NativeSetting::Like(n)) => match runtime::Native::parse(&n) {
                Some(k) => Some((k, runtime::builtin(&n))),
                None => {
                    return Err(at(
                        &format!("runtimes.{}.native", a.runtime),
                        format!(
                            "unknown mechanism {n:?} (true, false, or one of claude, codex, gemini, opencode, pi, aider)"
                        ),
                    ));
                }
            },
            _ => None,
        };
        let native_kind = like
            .map(|(k, _)| k)
            .or_else(|| builtin.map(|b| b.native))
            .unwrap_or(runtime::Native::None);
        let on = |v: &Option<NativeSetting>| match v {
            Some(NativeSetting::On(b)) => Some(*b),
            Some(NativeSetting::Like(_)) => Some(true),
            None => None,
        };
        let native = a
            .native
            .or_else(|| custom.and_then(|c| on(&c.native)))
            .or_else(|| on(&raw.defaults.native))
            .unwrap_or(true);
        let mcp = a
            .mcp
            .or_else(|| custom.and_then(|c| c.mcp))
            .or(raw.defaults.mcp)
            .unwrap_or(false);
        let may = resolve_may(
            a.may.as_ref(),
            raw.defaults.may.as_ref(),
            &|k: &str, m: String| {
                let key = if a.may.is_some() {
                    key(&format!("may.{k}"))
                } else {
                    format!("defaults.may.{k}")
                };
                at(&key, m)
            },
        )?;
        let rules_of = like.and_then(|(_, b)| b).or(builtin);
        let screen = rules_of.map_or(&runtime::Screen::GENERIC, |b| b.screen);
        let startup = rules_of.map_or(Duration::from_secs(10), |b| b.startup);
        let submit_gap = a
            .submit_gap_ms
            .or_else(|| custom.and_then(|c| c.submit_gap_ms))
            .map(Duration::from_millis)
            .or_else(|| builtin.map(|b| b.submit_gap))
            .unwrap_or(runtime::DEFAULT_SUBMIT_GAP);
        agents.push(AgentSpec {
            name,
            runtime: a.runtime.clone(),
            class: a.class.unwrap_or_else(|| "worker".into()),
            model_hint: a.model_hint,
            reset_between_tasks: a.reset_between_tasks,
            persistent_persona: a.persistent_persona,
            command,
            env,
            workdir,
            path_prefix,
            process_names,
            reset_command: custom
                .and_then(|c| c.reset_command.clone())
                .or_else(|| builtin.and_then(|b| b.reset_command.map(str::to_owned))),
            submit_gap,
            bracketed_paste: a
                .bracketed_paste
                .or_else(|| custom.and_then(|c| c.bracketed_paste))
                .or_else(|| builtin.and_then(|b| b.bracketed_paste)),
            heartbeat_interval: hb.or(default_interval),
            native,
            native_kind,
            mcp,
            may,
            screen,
            startup,
            respawn: match &a.respawn {
                Some(r) => respawn_policy(r, &supervision.respawn, &key("respawn"), at)?,
                None => supervision.respawn.clone(),
            },
            line,
        });
    }
    if let Some(fm) = &supervision.first_mate
        && !agents.iter().any(|a| a.name.as_str() == fm)
    {
        return Err(at(
            "supervision.first_mate",
            format!("{fm:?} is not an agent of this roster"),
        ));
    }
    Ok(Roster::new(
        path.to_owned(),
        TmuxSettings {
            socket_name,
            holder_session,
        },
        agents,
        supervision,
    ))
}

pub(super) fn secs_in(
    v: Option<f64>,
    default: Duration,
    key: &str,
    range: (f64, f64),
    at: &dyn Fn(&str, String) -> RosterError,
) -> Result<Duration, RosterError> {
    match v {
        None => Ok(default),
        Some(s) if s.is_finite() && s >= range.0 && s <= range.1 => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(at(
            key,
            format!("{s} is outside {}..={} seconds", range.0, range.1),
        )),
    }
}

pub(super) fn respawn_policy(
    r: &RawRespawn,
    base: &RespawnPolicy,
    key: &str,
    at: &dyn Fn(&str, String) -> RosterError,
) -> Result<RespawnPolicy, RosterError> {
    let k = |s: &str| format!("{key}.{s}");
    let p = RespawnPolicy {
        enabled: r.enabled.unwrap_or(base.enabled),
        max_deaths: r.max_deaths.unwrap_or(base.max_deaths),
        window: secs_in(
            r.window_secs,
            base.window,
            &k("window_secs"),
            (1.0, 86_400.0),
            at,
        )?,
        initial_delay: secs_in(
            r.initial_delay_secs,
            base.initial_delay,
            &k("initial_delay_secs"),
            (0.0, 3_600.0),
            at,
        )?,
        max_delay: secs_in(
            r.max_delay_secs,
            base.max_delay,
            &k("max_delay_secs"),
            (0.0, 86_400.0),
            at,
        )?,
        backoff: base.backoff,
    };
    if !(1..=1000).contains(&p.max_deaths) {
        return Err(at(
            &k("max_deaths"),
            format!("{} is outside 1..=1000", p.max_deaths),
        ));
    }
    // The one validated schedule: doubling from the first delay to the cap.
    let backoff =
        fleet_net::backoff::Backoff::try_new(p.initial_delay, p.max_delay, 0.0).map_err(|_| {
            at(
                &k("max_delay_secs"),
                "must be at least initial_delay_secs".into(),
            )
        })?;
    Ok(RespawnPolicy { backoff, ..p })
}

pub(super) fn resolve_supervision(
    raw: &RawSupervision,
    at: &dyn Fn(&str, String) -> RosterError,
) -> Result<Supervision, RosterError> {
    let d = Supervision::default();
    let tick = match raw.tick_ms {
        None => d.tick,
        Some(ms) if (10..=60_000).contains(&ms) => Duration::from_millis(ms),
        Some(ms) => {
            return Err(at(
                "supervision.tick_ms",
                format!("{ms} is outside 10..=60000"),
            ));
        }
    };
    let respawn = respawn_policy(&raw.respawn, &d.respawn, "supervision.respawn", at)?;
    let poke = match &raw.poke {
        None => None,
        Some(p) => Some(PokePolicy {
            classes: p.classes.clone().unwrap_or_else(|| vec!["orchestrator".into()]),
            idle: secs_in(p.idle_secs, Duration::from_secs(300), "supervision.poke.idle_secs", (0.1, 86_400.0), at)?,
            cooldown: secs_in(p.cooldown_secs, Duration::from_secs(900), "supervision.poke.cooldown_secs", (0.1, 86_400.0), at)?,
            text: p.text.clone().unwrap_or_else(|| {
                "[fleet] You have been idle and no worker is making progress. Check on your workers and assign the next task.".into()
            }),
        }),
    };
    if let Some(fm) = &raw.first_mate {
        fleet_proto::name::check(fm).map_err(|e| at("supervision.first_mate", e.to_string()))?;
    }
    Ok(Supervision {
        tick,
        respawn,
        poke,
        first_mate: raw.first_mate.clone(),
        digest_interval: secs_in(
            raw.digest_interval_secs,
            d.digest_interval,
            "supervision.digest_interval_secs",
            (0.1, 86_400.0),
            at,
        )?,
    })
}

pub(super) fn check_env(
    env: &BTreeMap<String, String>,
    key: &str,
    at: &dyn Fn(&str, String) -> RosterError,
) -> Result<(), RosterError> {
    for k in env.keys() {
        let ok = k
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(at(
                &format!("{key}.{k}"),
                format!("{k:?} is not a valid environment variable name"),
            ));
        }
        if RESERVED_ENV.contains(&k.as_str()) {
            return Err(at(
                &format!("{key}.{k}"),
                format!("{k} is set by hostd itself"),
            ));
        }
    }
    Ok(())
}

pub(super) fn interval(
    secs: Option<f64>,
    key: &str,
    at: &dyn Fn(&str, String) -> RosterError,
) -> Result<Option<Duration>, RosterError> {
    match secs {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => {
            Ok(Some(Duration::from_secs_f64(s)))
        }
        Some(s) => Err(at(
            key,
            format!("{s} is not a number of seconds in (0, 86400]"),
        )),
    }
}

/// An agent's `may:` over the defaults' (each key on its own): read its own
/// host's agents, send to none, raise need-human.
fn resolve_may(
    agent: Option<&RawMay>,
    defaults: Option<&RawMay>,
    at: &dyn Fn(&str, String) -> RosterError,
) -> Result<Grants, RosterError> {
    let pick =
        |f: fn(&RawMay) -> Option<Vec<String>>| agent.and_then(f).or_else(|| defaults.and_then(f));
    let read = pick(|m| m.read.clone()).unwrap_or_else(|| vec!["*".into()]);
    let send = pick(|m| m.send.clone()).unwrap_or_default();
    let need_human = agent
        .and_then(|m| m.need_human)
        .or_else(|| defaults.and_then(|m| m.need_human))
        .unwrap_or(true);
    Ok(Grants {
        read: Reach::parse(&read).map_err(|e| at("read", e))?,
        send: Reach::parse(&send).map_err(|e| at("send", e))?,
        need_human,
    })
}
