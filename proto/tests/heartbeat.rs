//! Heartbeat protocol v1: parsing never panics, health follows the 3 ×
//! interval rule, writes are atomic.
// Tests run real programs (tmux included) as a person would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use fleet_proto::heartbeat::{self, Beat, Health, ReadError, Status};
use time::OffsetDateTime;
use time::macros::datetime;

fn beat(ts: OffsetDateTime) -> Beat {
    Beat {
        ts,
        pid: 42,
        status: Status::Busy,
        model: Some("gpt-5.5".into()),
        turn: Some(7),
        key: Some("turn-abc".into()),
    }
}

#[test]
fn round_trips_and_accepts_both_separators() {
    let b = beat(datetime!(2026-11-24 10:00:00.250 UTC));
    let text = heartbeat::format(&b);
    assert_eq!(heartbeat::parse(text.as_bytes()).unwrap(), b);
    let lines = "ts=2026-11-24T10:00:00+00:00\npid=42\nstatus=ok\nfuture_key=1\n";
    let p = heartbeat::parse(lines.as_bytes()).unwrap();
    assert_eq!(p.status, Status::Idle);
    for (v, want) in [
        ("idle", Status::Idle),
        ("busy", Status::Busy),
        ("waiting", Status::Waiting),
    ] {
        let b = heartbeat::parse(format!("ts=2026-11-24T10:00:00Z pid=1 status={v}").as_bytes())
            .unwrap();
        assert_eq!(b.status, want);
    }
    assert_eq!(p.turn, None);
    assert_eq!(p.model, None);
}

#[test]
fn garbage_is_an_error_with_a_reason_never_a_panic() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "empty"),
        (b"   \n".to_vec(), "empty"),
        (b"ts=2026-11-2 pid=1 status=ok".to_vec(), "ts"),
        (b"pid=1 status=ok".to_vec(), "missing ts"),
        (b"ts=2026-11-24T10:00:00Z status=ok".to_vec(), "missing pid"),
        (b"ts=2026-11-24T10:00:00Z pid=1".to_vec(), "missing status"),
        (b"ts=2026-11-24T10:00:00Z pid=-1 status=ok".to_vec(), "pid"),
        (
            b"ts=2026-11-24T10:00:00Z pid=1 status=sleepy".to_vec(),
            "status",
        ),
        (
            b"ts=2026-11-24T10:00:00Z pid=1 status=ok turn=x".to_vec(),
            "turn",
        ),
        (b"\x00\x01\x02\xff".to_vec(), "binary"),
        (b"ts=\x00".to_vec(), "binary"),
        (vec![b'a'; 5000], "bytes"),
    ];
    for (bytes, needle) in cases {
        let e = heartbeat::parse(&bytes).unwrap_err().to_string();
        assert!(
            e.contains(needle),
            "{:?}: {e}",
            String::from_utf8_lossy(&bytes)
        );
    }
    // Arbitrary bytes never panic.
    let mut x: u32 = 1;
    for len in 0..300 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x & 0xff) as u8
            })
            .collect();
        let _ = heartbeat::parse(&bytes);
    }
}

#[test]
fn health_follows_three_intervals() {
    let i = Duration::from_secs(15);
    let ts = datetime!(2026-11-24 10:00:00 UTC);
    let ok = Ok(beat(ts));
    let at = |s: i64| ts + time::Duration::seconds(s);
    assert_eq!(heartbeat::health(&ok, at(0), i), Health::Healthy);
    assert_eq!(
        heartbeat::health(&ok, at(45), i),
        Health::Healthy,
        "exactly 3 x is healthy"
    );
    assert_eq!(heartbeat::health(&ok, at(46), i), Health::Stale);
    assert!(
        matches!(heartbeat::health(&ok, at(-60), i), Health::Unknown(r) if r.contains("future"))
    );
    assert_eq!(
        heartbeat::health(&ok, at(-3), i),
        Health::Healthy,
        "small skew tolerated"
    );
    assert!(matches!(
        heartbeat::health(&Err(ReadError::Missing), at(0), i),
        Health::Unknown(r) if r == "no heartbeat file"
    ));
}

#[test]
fn writes_are_atomic_and_the_native_marker_ages() {
    let dir = tempfile::tempdir().unwrap();
    let hb = dir.path().join("a.hb");
    let b = beat(OffsetDateTime::now_utc());
    heartbeat::write_atomic(&hb, &b).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["a.hb"], "no temp files left behind");
    assert_eq!(heartbeat::read(&hb).unwrap().turn, Some(7));
    assert!(matches!(
        heartbeat::read(&dir.path().join("none.hb")),
        Err(ReadError::Missing)
    ));

    let i = Duration::from_secs(10);
    assert!(!heartbeat::native_marker_fresh(&hb, SystemTime::now(), i));
    heartbeat::touch_native_marker(&hb).unwrap();
    assert_eq!(
        heartbeat::native_marker_path(&hb),
        dir.path().join("a.hb.native")
    );
    assert!(heartbeat::native_marker_fresh(&hb, SystemTime::now(), i));
    assert!(!heartbeat::native_marker_fresh(
        &hb,
        SystemTime::now() + Duration::from_secs(21),
        i
    ));
}

#[test]
fn a_fifo_or_device_in_place_of_the_beat_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("a.hb");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // A blocking open of a FIFO with no writer would hang this test.
    match heartbeat::read(&fifo) {
        Err(ReadError::Io(m)) => assert!(m.contains("FIFO"), "{m}"),
        other => panic!("{other:?}"),
    }
    match heartbeat::read(std::path::Path::new("/dev/zero")) {
        Err(ReadError::Io(m)) => assert!(m.contains("device"), "{m}"),
        other => panic!("{other:?}"),
    }
    // A writer replaces the FIFO instead of opening it.
    let b = beat(OffsetDateTime::now_utc());
    heartbeat::write_atomic(&fifo, &b).unwrap();
    assert_eq!(heartbeat::read(&fifo).unwrap(), b);
    let litter: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(litter.len(), 1, "no temp file is left behind");
}

#[test]
fn a_beat_replacing_another_is_swapped_in_and_a_directory_in_its_place_stays() {
    let dir = tempfile::tempdir().unwrap();
    let hb = dir.path().join("a.hb");
    let first = beat(OffsetDateTime::now_utc());
    heartbeat::write_atomic(&hb, &first).unwrap();
    let mut second = beat(OffsetDateTime::now_utc());
    second.pid = 4321;
    // Over an existing beat (the exchange path): the new one, its mtime
    // as a stat shows it, and nothing else left in the directory.
    let mtime = heartbeat::write_atomic_stamped(&hb, &second).unwrap();
    assert_eq!(heartbeat::read(&hb).unwrap(), second);
    assert_eq!(std::fs::metadata(&hb).unwrap().modified().unwrap(), mtime);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["a.hb"], "the old beat and the temp file are gone");

    // A directory where the beat goes is refused, and left where it was.
    let d = dir.path().join("b.hb");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("inside"), "x").unwrap();
    assert!(heartbeat::write_atomic(&d, &second).is_err());
    assert!(d.join("inside").is_file(), "the directory is untouched");
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a.hb", "b.hb"], "no temp file is left behind");
}
