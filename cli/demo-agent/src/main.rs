//! Temporary lead demo agent.
use fleet_proto::heartbeat::{self, Beat, Status};
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut model = std::env::var("FLEET_DEMO_MODEL").unwrap_or_else(|_| "demo-1".into());
    let mut busy_ms: u64 = std::env::var("FLEET_DEMO_BUSY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let mut beats = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--model" => model = it.next().cloned().unwrap_or_default(),
            "--busy-ms" => busy_ms = it.next().and_then(|v| v.parse().ok()).unwrap_or(busy_ms),
            "--no-heartbeat" => beats = false,
            _ => {
                eprintln!("usage");
                std::process::exit(2)
            }
        }
    }
    let file = if beats {
        std::env::var_os("FLEET_HEARTBEAT_FILE").map(std::path::PathBuf::from)
    } else {
        None
    };
    let interval = std::env::var("FLEET_HEARTBEAT_INTERVAL")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(15.0);
    let state = Arc::new(Mutex::new((Status::Ok, 0u64)));
    let write = {
        let file = file.clone();
        let model = model.clone();
        let state = state.clone();
        move || {
            if let Some(f) = &file {
                let (status, turn) = *state.lock().unwrap_or_else(|p| p.into_inner());
                let b = Beat {
                    ts: time::OffsetDateTime::now_utc(),
                    pid: std::process::id(),
                    status,
                    model: Some(model.clone()),
                    turn: Some(turn),
                };
                let _ = heartbeat::write_atomic(f, &b);
                let _ = heartbeat::touch_native_marker(f);
            }
        }
    };
    write();
    let w2 = write.clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs_f64(interval));
            w2();
        }
    });
    println!("fleet demo agent ready");
    print!("demo> ");
    let _ = std::io::stdout().flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            print!("demo> ");
            let _ = std::io::stdout().flush();
            continue;
        }
        let turn = {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            s.1 += 1;
            s.0 = Status::Busy;
            s.1
        };
        write();
        println!("[turn {turn}] working on: {line}");
        std::thread::sleep(Duration::from_millis(busy_ms));
        state.lock().unwrap_or_else(|p| p.into_inner()).0 = Status::Ok;
        write();
        println!("[turn {turn}] done");
        print!("demo> ");
        let _ = std::io::stdout().flush();
    }
}
