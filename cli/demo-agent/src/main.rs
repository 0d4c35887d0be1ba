//! `fleet-demo-agent`: a small line-oriented agent for demos and tests. It
//! reads prompts line by line, stays busy for a while per prompt, and writes
//! native heartbeats (protocol v1) with a `turn` counter.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_proto::heartbeat::{self, Beat, Status};

const USAGE: &str = "\
usage: fleet-demo-agent [--model M] [--busy-ms N] [--name NAME] [--no-heartbeat]

Reads prompts from standard input, one per line; each one is a turn: the
agent reports busy, works for --busy-ms (default 1500, env FLEET_DEMO_BUSY_MS),
then reports idle. `/ask QUESTION` asks a human instead (`QUESTION [y/n]`,
status waiting) until the next line answers it. `/quit` or end of input
exits.

Heartbeats go to $FLEET_HEARTBEAT_FILE every $FLEET_HEARTBEAT_INTERVAL seconds
(default 15) and at every status change, with the native marker touched.";

struct Args {
    model: String,
    busy: Duration,
    name: String,
    heartbeat: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        model: std::env::var("FLEET_DEMO_MODEL").unwrap_or_else(|_| "demo-1".into()),
        busy: Duration::from_millis(
            std::env::var("FLEET_DEMO_BUSY_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1500),
        ),
        name: std::env::var(heartbeat::ENV_AGENT).unwrap_or_else(|_| "demo".into()),
        heartbeat: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |f: &str| it.next().ok_or_else(|| format!("{f} needs a value"));
        match flag.as_str() {
            "--model" => a.model = value("--model")?,
            "--name" => a.name = value("--name")?,
            "--busy-ms" => {
                let v = value("--busy-ms")?;
                a.busy = Duration::from_millis(
                    v.parse()
                        .map_err(|_| format!("--busy-ms {v:?}: not a number"))?,
                );
            }
            "--no-heartbeat" => a.heartbeat = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.model.is_empty() || a.model.contains(char::is_whitespace) {
        return Err("--model must be one word".into());
    }
    Ok(a)
}

/// Shared state the heartbeat thread reports.
struct State {
    status: Status,
    turn: u64,
}

struct Writer {
    file: Option<PathBuf>,
    model: String,
    state: Arc<Mutex<State>>,
    warned: std::sync::atomic::AtomicBool,
}

impl Writer {
    fn beat(&self) {
        let Some(file) = &self.file else { return };
        let (status, turn) = {
            let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            (s.status, s.turn)
        };
        let b = Beat {
            ts: time::OffsetDateTime::now_utc(),
            pid: std::process::id(),
            status,
            model: Some(self.model.clone()),
            turn: Some(turn),
            key: None,
        };
        let r =
            heartbeat::write_atomic(file, &b).and_then(|()| heartbeat::touch_native_marker(file));
        if let Err(e) = r
            && !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            eprintln!("fleet-demo-agent: cannot write {}: {e}", file.display());
        }
    }

    fn set(&self, status: Status, next_turn: bool) -> u64 {
        let turn = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.status = status;
            if next_turn {
                s.turn += 1;
            }
            s.turn
        };
        self.beat();
        turn
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fleet-demo-agent: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let interval = std::env::var(heartbeat::ENV_HEARTBEAT_INTERVAL)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0 && *v <= 86_400.0)
        .map_or(Duration::from_secs(15), Duration::from_secs_f64);
    let file = if args.heartbeat {
        std::env::var_os(heartbeat::ENV_HEARTBEAT_FILE).map(PathBuf::from)
    } else {
        None
    };
    let writer = Arc::new(Writer {
        file,
        model: args.model.clone(),
        state: Arc::new(Mutex::new(State {
            status: Status::Idle,
            turn: 0,
        })),
        warned: std::sync::atomic::AtomicBool::new(false),
    });
    writer.beat();
    let ticker = writer.clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(interval);
            ticker.beat();
        }
    });

    let mut out = std::io::stdout();
    let prompt = |out: &mut std::io::Stdout| {
        let _ = write!(out, "demo> ");
        let _ = out.flush();
    };
    let _ = writeln!(
        out,
        "fleet demo agent {} ready (model {})",
        args.name, args.model
    );
    prompt(&mut out);
    let mut asking = false;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line == "/quit" {
            break;
        }
        if asking {
            asking = false;
            writer.set(Status::Idle, false);
            let _ = writeln!(out, "answered: {line}");
            prompt(&mut out);
            continue;
        }
        if let Some(question) = line.strip_prefix("/ask ") {
            asking = true;
            writer.set(Status::Waiting, false);
            let _ = write!(out, "{question} [y/n] ");
            let _ = out.flush();
            continue;
        }
        if line.is_empty() {
            prompt(&mut out);
            continue;
        }
        let turn = writer.set(Status::Busy, true);
        let _ = writeln!(out, "[turn {turn}] working on: {line}");
        let _ = out.flush();
        std::thread::sleep(args.busy);
        writer.set(Status::Idle, false);
        let _ = writeln!(out, "[turn {turn}] done");
        prompt(&mut out);
    }
}
