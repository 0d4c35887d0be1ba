//! The tmux layer against a real tmux server on a throw-away socket.
// Tests run real programs (tmux included) as a person would.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fleet_testkit::eventually;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fleet_hostd::tmux::{Control, Launch, Tmux};

static N: AtomicU32 = AtomicU32::new(0);

struct Server(Tmux);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", self.0.socket(), "kill-server"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn server() -> Server {
    let name = format!(
        "fleet-tmuxtest-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    Server(Tmux::new("tmux", name))
}

#[tokio::test]
async fn launch_passes_env_and_execs_the_command() {
    let s = server();
    assert!(s.0.ensure_server("_holder").await.unwrap());
    assert!(!s.0.ensure_server("_holder").await.unwrap(), "idempotent");
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("FLEET_AGENT".to_owned(), "a0".to_owned()),
        ("TRICKY".to_owned(), "a b;c $(x) `y` 'q' \"d\"".to_owned()),
        (
            "PATH".to_owned(),
            "/opt/fleet-test-bin:/usr/bin:/bin".to_owned(),
        ),
    ];
    let created =
        s.0.launch(&Launch {
            name: "a0",
            workdir: dir.path(),
            env: &env,
            command: "sleep 300",
            size: (120, 40),
        })
        .await
        .unwrap()
        .expect("created");
    // exec: the pane's process becomes sleep itself (after sh has exec'd).
    eventually("the exec", Duration::from_secs(5), async || {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", created.pane_pid)).unwrap();
        assert!(
            comm.trim() == "sleep" || comm.trim() == "sh",
            "only the exec'ing shell may come first: {comm}"
        );
        (comm.trim() == "sleep").then_some(()).ok_or(comm)
    })
    .await;
    let environ = std::fs::read(format!("/proc/{}/environ", created.pane_pid)).unwrap();
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    assert!(vars.contains(&&b"FLEET_AGENT=a0"[..]));
    assert!(
        vars.contains(&&b"TRICKY=a b;c $(x) `y` 'q' \"d\""[..]),
        "byte-exact, no shell"
    );
    // tmux 3.3a would hand the pane its client's PATH instead of -e PATH.
    assert!(vars.contains(&&b"PATH=/opt/fleet-test-bin:/usr/bin:/bin"[..]));
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", created.pane_pid)).unwrap();
    assert_eq!(cwd, dir.path().canonicalize().unwrap());
    // A second launch of the same name is an adopt, not an error.
    let again =
        s.0.launch(&Launch {
            name: "a0",
            workdir: dir.path(),
            env: &env,
            command: "sleep 300",
            size: (120, 40),
        })
        .await
        .unwrap();
    assert!(again.is_none());
    // The window is pinned to its size.
    let size =
        s.0.run([
            "display-message",
            "-p",
            "-t",
            "=a0:",
            "#{window_width}x#{window_height} #{window-size}",
        ])
        .await
        .unwrap();
    assert_eq!(size.trim(), "120x40 manual");
    let global =
        s.0.run(["show-options", "-gw", "window-size"])
            .await
            .unwrap();
    assert!(!global.contains("manual"), "never global: {global}");
}

#[tokio::test]
async fn control_client_lists_panes_and_reports_changes() {
    let s = server();
    s.0.ensure_server("_holder").await.unwrap();
    let control = Control::attach(&s.0, "_holder").await.unwrap();
    let panes = control.list_panes().await.unwrap();
    assert_eq!(panes.len(), 1);
    assert_eq!(panes[0].session_name, "_holder");

    // Drain notifications from the attach itself, then expect one for a new session.
    let _ = tokio::time::timeout(Duration::from_millis(200), control.changed.notified()).await;
    s.0.run(["new-session", "-d", "-s", "top", "sleep 300"])
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(3), control.changed.notified())
        .await
        .expect("a notification for the new session");
    // Right after the fork the command still reads "tmux"; poll for the exec.
    eventually(
        "the new session's exec",
        Duration::from_secs(5),
        async || {
            let panes = control.list_panes().await.unwrap();
            let top = panes.iter().find(|p| p.session_name == "top").unwrap();
            assert!(!top.dead);
            (top.current_command == "sleep")
                .then_some(())
                .ok_or(format!("{top:?}"))
        },
    )
    .await;

    // Many queries in flight keep their order.
    let (a, b, c) = tokio::join!(
        control.command("display-message -p 'one'"),
        control.command("display-message -p 'two'"),
        control.command("display-message -p 'three'"),
    );
    assert_eq!(a.unwrap(), ["one"]);
    assert_eq!(b.unwrap(), ["two"]);
    assert_eq!(c.unwrap(), ["three"]);
    let err = control.command("no-such-command").await;
    assert!(err.is_err());
    assert!(
        control.command("display-message -p ok").await.is_ok(),
        "still usable"
    );
}

#[tokio::test]
async fn a_dead_pane_stays_visible_as_dead() {
    let s = server();
    s.0.ensure_server("_holder").await.unwrap();
    let control = Control::attach(&s.0, "_holder").await.unwrap();
    s.0.run(["new-session", "-d", "-s", "short", "exit 3"])
        .await
        .unwrap();
    eventually(
        "the pane to show dead",
        Duration::from_secs(5),
        async || {
            let panes = control.list_panes().await.unwrap();
            panes
                .iter()
                .any(|p| p.session_name == "short" && p.dead)
                .then_some(())
                .ok_or(format!("{panes:?}"))
        },
    )
    .await;
}

#[tokio::test]
async fn a_death_is_a_line_of_ours_and_activity_is_asked_for() {
    let s = server();
    s.0.ensure_server("_holder").await.unwrap();
    let control = Control::attach(&s.0, "_holder").await.unwrap();
    // Deaths reach this client as the pane-died hook's line, with no
    // subscription and from sessions it is not attached to. tmux 3.3a loses
    // some (tmux#4559: hostd's pidfds see every death first), so three die
    // and at least one line must come.
    let mut pids = Vec::new();
    for n in ["d0", "d1", "d2"] {
        s.0.run(["new-session", "-d", "-s", n, "sleep 300"])
            .await
            .unwrap();
        let target = format!("={n}:");
        let pid =
            s.0.run(["display-message", "-p", "-t", &target, "#{pane_pid}"])
                .await
                .unwrap();
        pids.push(pid.trim().parse::<i32>().unwrap());
    }
    let server_pid: i32 =
        s.0.run(["display-message", "-p", "#{pid}"])
            .await
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    let before = control.deaths.load(Ordering::Relaxed);
    for pid in pids {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::TERM,
        )
        .unwrap();
    }
    eventually("a pane-died line", Duration::from_secs(5), async || {
        let _ = tokio::time::timeout(Duration::from_millis(200), control.changed.notified()).await;
        if control.deaths.load(Ordering::Relaxed) > before {
            return Ok(());
        }
        // What hostd does for an unreaped pane: make tmux look again.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(server_pid).unwrap(),
            rustix::process::Signal::CHILD,
        );
        Err("no line yet".to_owned())
    })
    .await;

    // The first question about activity answers "moved"; then nothing does.
    let _ = control.windows_moved().await.unwrap();
    eventually("a quiet fleet", Duration::from_secs(5), async || {
        (!control.windows_moved().await.unwrap())
            .then_some(())
            .ok_or_else(|| "windows still moving".to_owned())
    })
    .await;
    // A window whose pane draws moves (tmux keeps activity in seconds).
    s.0.run([
        "new-session",
        "-d",
        "-s",
        "talk",
        "while :; do echo hi; sleep 0.3; done",
    ])
    .await
    .unwrap();
    // The new window itself is a move; after that, only its drawing is.
    let _ = control.windows_moved().await.unwrap();
    eventually("activity to be seen", Duration::from_secs(5), async || {
        control
            .windows_moved()
            .await
            .unwrap()
            .then_some(())
            .ok_or_else(|| "no window moved".to_owned())
    })
    .await;
}

#[tokio::test]
async fn the_control_client_notices_the_server_going_away() {
    let s = server();
    s.0.ensure_server("_holder").await.unwrap();
    let control = Control::attach(&s.0, "_holder").await.unwrap();
    s.0.kill_server().await;
    tokio::time::timeout(Duration::from_secs(5), control.exited.notified())
        .await
        .expect("exit noticed");
    assert!(control.list_panes().await.is_err());
}
