//! `fleetctl init`: install fleet-hostd for this tenant uid the way
//! infrastructure is installed — its config, a starter roster, a systemd
//! user unit — then enable and start the unit and enable linger so it comes
//! back after a reboot. Idempotent: what is already in place is left alone
//! and said so. `--dry-run` prints the plan and touches nothing. systemd is
//! reached through a [`Runner`] (the real `systemctl`/`loginctl`, or a fake).

use std::path::{Path, PathBuf};

use fleet_hostd::systemd::{Runner, parse_properties};

use crate::Failure;

/// The unit file shipped in deploy/systemd; ExecStart is rewritten.
pub const UNIT_TEMPLATE: &str = include_str!("../../deploy/systemd/fleet-hostd.service");
pub const UNIT: &str = "fleet-hostd.service";

#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// Tenant id hostd publishes for (default: your login name).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Host name hostd publishes as (default: the hostname).
    #[arg(long)]
    pub host: Option<String>,
    /// Aggregator to stream to (HOST:PORT; repeatable). Needs --ca, --cert
    /// and --key of this host (`fleetctl certs issue host`).
    #[arg(long = "link", value_name = "HOST:PORT")]
    pub aggregators: Vec<String>,
    /// CA certificate for the aggregator links.
    #[arg(long = "link-ca", value_name = "PEM")]
    pub link_ca: Option<PathBuf>,
    /// This host's certificate (spiffe://TD/tenant/T/host/H).
    #[arg(long = "link-cert", value_name = "PEM")]
    pub link_cert: Option<PathBuf>,
    #[arg(long = "link-key", value_name = "PEM")]
    pub link_key: Option<PathBuf>,
    /// Name to check the aggregators' certificate against, when --link
    /// gives an IP or a name the certificate does not carry (e.g.
    /// `aggregator.fleet`).
    #[arg(long = "link-server-name", value_name = "NAME")]
    pub link_server_name: Option<String>,
    /// The fleet-hostd binary the unit runs (default: next to fleetctl, else on PATH).
    #[arg(long, value_name = "PATH")]
    pub hostd: Option<PathBuf>,
    /// Print what would be done and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replace an existing hostd.toml with the generated one.
    #[arg(long)]
    pub force: bool,
    /// Print the report as one JSON document (schema fleet.init/v1):
    /// every step with whether it changed something.
    #[arg(long)]
    pub json: bool,
    /// systemctl to run (tests and unusual installs).
    #[arg(long, default_value = "systemctl", value_name = "PATH")]
    pub systemctl: String,
    /// loginctl to run.
    #[arg(long, default_value = "loginctl", value_name = "PATH")]
    pub loginctl: String,
}

/// Where things go, from the environment (overridable in tests).
#[derive(Debug, Clone)]
pub struct Places {
    pub config_dir: PathBuf,
    pub unit_dir: PathBuf,
    pub user: String,
    pub hostname: String,
}

impl Places {
    pub fn current() -> Result<Self, Failure> {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .ok_or_else(|| Failure::Other("HOME is not set".into()))?;
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| home.join(".config"));
        let env = fleet_hostd::config::Environment::current();
        Ok(Self {
            config_dir: config.join("fleet"),
            unit_dir: config.join("systemd/user"),
            user: env
                .user
                .clone()
                .unwrap_or_else(|| format!("uid{}", env.uid)),
            hostname: env.hostname,
        })
    }
}

/// One step of the plan and what came of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub what: String,
    pub done: bool,
}

fn toml_str(s: &str) -> String {
    format!("{s:?}")
}

/// The hostd.toml `init` writes.
pub fn hostd_config(a: &InitArgs, p: &Places) -> String {
    let tenant = a.tenant.clone().unwrap_or_else(|| p.user.clone());
    let host = a.host.clone().unwrap_or_else(|| p.hostname.clone());
    let mut s = format!(
        "# Written by `fleetctl init`; see deploy/hostd.example.toml for every key.\n\
         tenant = {}\nhost = {}\nroster = {}\n",
        toml_str(&tenant),
        toml_str(&host),
        toml_str(&p.config_dir.join("roster.yaml").display().to_string())
    );
    if !a.aggregators.is_empty() {
        let list: Vec<String> = a.aggregators.iter().map(|x| toml_str(x)).collect();
        s.push_str(&format!("aggregators = [{}]\n", list.join(", ")));
        s.push_str("\n[tls]\n");
        for (k, v) in [
            ("ca", &a.link_ca),
            ("cert", &a.link_cert),
            ("key", &a.link_key),
        ] {
            if let Some(v) = v {
                s.push_str(&format!("{k} = {}\n", toml_str(&v.display().to_string())));
            }
        }
        if let Some(n) = &a.link_server_name {
            s.push_str(&format!("server_name = {}\n", toml_str(n)));
        }
    }
    s
}

const STARTER_ROSTER: &str = "# Written by `fleetctl init`: list your agents here (see\n\
# deploy/roster.example.yaml), then `systemctl --user reload fleet-hostd`.\n\
version: 1\ntransport: tmux\nagents: []\n";

/// The unit with ExecStart pointing at `hostd`.
pub fn unit_text(hostd: &Path) -> String {
    UNIT_TEMPLATE
        .lines()
        .map(|l| {
            if l.starts_with("ExecStart=") {
                format!("ExecStart={}", hostd.display())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn find_hostd(flag: Option<&Path>) -> Result<PathBuf, Failure> {
    if let Some(p) = flag {
        return Ok(p.to_owned());
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("fleet-hostd")))
        .filter(|p| p.is_file());
    let on_path = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("fleet-hostd"))
                .find(|p| p.is_file())
        })
    };
    sibling.or_else(on_path).ok_or_else(|| {
        Failure::Other(
            "cannot find fleet-hostd next to fleetctl or on PATH; install it \
             (cargo install --path hostd) or pass --hostd PATH"
                .into(),
        )
    })
}

/// Plans and (unless dry-run) carries out the installation.
pub fn run_with(a: &InitArgs, p: &Places, runner: &dyn Runner) -> Result<Vec<Step>, Failure> {
    if !a.aggregators.is_empty()
        && (a.link_ca.is_none() || a.link_cert.is_none() || a.link_key.is_none())
    {
        return Err(Failure::Usage(
            "--link needs --link-ca, --link-cert and --link-key (mTLS only)".into(),
        ));
    }
    // The files hostd will read, as absolute paths (the unit runs in
    // another directory), each there now.
    let mut a = a.clone();
    for (flag, path) in [
        ("--link-ca", &mut a.link_ca),
        ("--link-cert", &mut a.link_cert),
        ("--link-key", &mut a.link_key),
    ] {
        if let Some(p) = path {
            if !p.is_file() {
                return Err(Failure::Usage(format!(
                    "{flag} {}: no such file",
                    p.display()
                )));
            }
            *p = std::path::absolute(&*p)?;
        }
    }
    let a = &a;
    let hostd = find_hostd(a.hostd.as_deref())?;
    // Without a user manager nothing below could work: say so before
    // anything is written.
    let (ok, _, err) = runner.run(&a.systemctl, &["--user", "show-environment"]);
    if !ok {
        return Err(Failure::Other(format!(
            "no systemd user manager answers for {user} ({why}); nothing was written.\n\
             either run fleet-hostd under another supervisor: \
             `fleet-hostd --config {cfg}` (after writing that file; see deploy/hostd.example.toml),\n\
             or give {user} a user manager: as root `loginctl enable-linger {user}`, then log in \
             again so XDG_RUNTIME_DIR and the user bus exist, and run `fleetctl init` again",
            user = p.user,
            why = if err.trim().is_empty() {
                "systemctl --user failed"
            } else {
                err.trim()
            },
            cfg = p.config_dir.join("hostd.toml").display(),
        )));
    }
    let mut plan = Plan {
        steps: Vec::new(),
        dry: a.dry_run,
    };
    let dry = a.dry_run;
    let mut step = |what: String, done: bool| plan.steps.push(Step { what, done });

    // Files.
    let cfg_path = p.config_dir.join("hostd.toml");
    let cfg = hostd_config(a, p);
    match std::fs::read_to_string(&cfg_path) {
        Ok(old) if old == cfg => step(format!("{} is up to date", cfg_path.display()), false),
        Ok(_) if !a.force => step(
            format!(
                "kept {} (it differs from the generated one; --force replaces it)",
                cfg_path.display()
            ),
            false,
        ),
        _ => {
            if !dry {
                std::fs::create_dir_all(&p.config_dir)?;
                std::fs::write(&cfg_path, &cfg)?;
            }
            step(format!("write {}", cfg_path.display()), true);
        }
    }
    let roster = p.config_dir.join("roster.yaml");
    if roster.exists() {
        step(format!("{} exists", roster.display()), false);
    } else {
        if !dry {
            std::fs::write(&roster, STARTER_ROSTER)?;
        }
        step(format!("write a starter roster {}", roster.display()), true);
    }
    let unit_path = p.unit_dir.join(UNIT);
    let unit = unit_text(&hostd);
    let unit_changed = std::fs::read_to_string(&unit_path).ok().as_deref() != Some(unit.as_str());
    if unit_changed {
        if !dry {
            std::fs::create_dir_all(&p.unit_dir)?;
            std::fs::write(&unit_path, &unit)?;
        }
        step(
            format!(
                "write {} (ExecStart={})",
                unit_path.display(),
                hostd.display()
            ),
            true,
        );
    } else {
        step(format!("{} is up to date", unit_path.display()), false);
    }

    // systemd: ask first, act only on what is missing.
    if unit_changed {
        plan.act(runner, &a.systemctl, &["--user", "daemon-reload"])?;
    }
    let (_, enabled, _) = runner.run(&a.systemctl, &["--user", "is-enabled", UNIT]);
    if enabled.trim() == "enabled" {
        plan.note(format!("{UNIT} is enabled"));
    } else {
        plan.act(runner, &a.systemctl, &["--user", "enable", UNIT])?;
    }
    let (_, active, _) = runner.run(&a.systemctl, &["--user", "is-active", UNIT]);
    if active.trim() == "active" {
        plan.note(format!("{UNIT} is running"));
    } else {
        plan.act(runner, &a.systemctl, &["--user", "start", UNIT])?;
    }
    let (ok, out, _) = runner.run(&a.loginctl, &["show-user", &p.user, "--property=Linger"]);
    if ok && parse_properties(&out).get("Linger").map(String::as_str) == Some("yes") {
        plan.note(format!("linger is on for {}", p.user));
    } else {
        plan.act(runner, &a.loginctl, &["enable-linger", &p.user])?;
    }
    Ok(plan.steps)
}

struct Plan {
    steps: Vec<Step>,
    dry: bool,
}

impl Plan {
    fn note(&mut self, what: String) {
        self.steps.push(Step { what, done: false });
    }

    /// Runs one changing command (or, dry, records that it would).
    fn act(&mut self, runner: &dyn Runner, program: &str, args: &[&str]) -> Result<(), Failure> {
        let line = format!("{program} {}", args.join(" "));
        if !self.dry {
            let (ok, _, err) = runner.run(program, args);
            if !ok {
                return Err(Failure::Other(format!("{line} failed: {}", err.trim())));
            }
        }
        self.steps.push(Step {
            what: format!("run: {line}"),
            done: true,
        });
        Ok(())
    }
}

/// `fleetctl init`.
pub fn run(a: InitArgs) -> Result<(), Failure> {
    let places = Places::current()?;
    let steps = run_with(&a, &places, &fleet_hostd::systemd::SystemRunner)?;
    if a.json {
        let doc = serde_json::json!({
            "schema": "fleet.init/v1",
            "user": places.user,
            "dry_run": a.dry_run,
            "changed": steps.iter().any(|s| s.done),
            "steps": steps
                .iter()
                .map(|s| serde_json::json!({"what": s.what, "changed": s.done}))
                .collect::<Vec<_>>(),
        });
        println!("{doc}");
        return Ok(());
    }
    for s in &steps {
        let mark = match (a.dry_run, s.done) {
            (true, true) => "would",
            (false, true) => "done ",
            (_, false) => "ok   ",
        };
        println!("{mark} {}", s.what);
    }
    if !a.dry_run {
        println!(
            "fleet-hostd is installed for {}: `fleetctl ps` shows its agents; it starts at boot.",
            places.user
        );
    }
    Ok(())
}
