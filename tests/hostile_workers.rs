//! Hostile and unlucky workers against a real daemon (`examples/worker_daemon.rs`): floods
//! that must not bloat the daemon, payloads nested deeper than the channel takes, and a
//! worker's own children that must not outlive it.
//!
//! Every test has its own temp dir and daemon, killed when the test ends; every wait polls
//! with a deadline. A filtered run does not build the example: `cargo build --examples`
//! first, or an old binary is tested.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    DEADLINE, Foreground, TestDir, alive, example_named, path_str, unix_addr, wait_until,
};
use daimon::client::{Client, Protocol};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

const LOOPING: i64 = 1;

/// The daemon's peak resident memory a flood may reach.
const RSS_BOUND_KIB: u64 = 16 * 1024;

struct Marks {
    dir: TestDir,
    marks: PathBuf,
}

impl Marks {
    fn new() -> Marks {
        let dir = TestDir::new();
        let marks = dir.join("marks");
        std::fs::create_dir(&marks).expect("creating the marks dir");
        Marks { dir, marks }
    }

    fn mark(&self, name: &str) -> PathBuf {
        self.marks.join(name)
    }

    fn start(&self, extra: &[&str]) -> Foreground {
        let mut cmd = Command::new(example_named("worker_daemon"));
        cmd.arg("-f")
            .args(["--dir", &path_str(&self.marks)])
            .args(extra)
            .args(self.dir.std_args())
            .current_dir(self.dir.path());
        let mut daemon = Foreground::spawn_cmd(&self.dir, cmd);
        daemon.wait_ready_std(&self.dir);
        daemon
    }

    fn client(&self) -> Client {
        let address = unix_addr(&self.dir.socket()).parse().expect("an address");
        Client::connect_with(&address, Protocol::Json, Duration::from_secs(5)).expect("connecting")
    }
}

/// `name`'s entry in `worker.list`.
fn entry(client: &mut Client, name: &str) -> Value {
    let list = client.call("worker.list", json!([])).expect("worker.list");
    list.as_array()
        .and_then(|l| l.iter().find(|w| w["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

fn pid_of(entry: &Value) -> Option<i32> {
    entry["pid"].as_i64().map(|p| p as i32)
}

/// Waits until `name` is LOOPING with a pid other than `old`; returns it.
fn wait_looping(client: &mut Client, name: &str, old: Option<i32>) -> i32 {
    let mut pid = None;
    wait_until(
        &format!("{name} LOOPING, pid not {old:?}"),
        DEADLINE,
        || {
            let e = entry(client, name);
            pid = pid_of(&e);
            pid.is_some() && pid != old && e["state"] == LOOPING
        },
    );
    pid.expect("checked")
}

fn read_mark(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Whether `pid` is gone entirely: neither running nor a zombie left unreaped.
fn vanished(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Kills a process a test made, if it is still there (a failed test leaves nothing).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if alive(self.0) {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Floods

/// Four workers flood messages whose payload (1,000 zeros, 1 KB on the wire) grows ~32x as
/// a JSON value: the daemon read up to 1,024 frames per worker per turn and dispatched 1,024
/// events per turn, so its bus queue grew without bound (peak RSS in the hundreds of MiB).
/// Now its peak stays under 16 MiB, every message still arrives, and a client is served
/// meanwhile.
#[test]
fn flooding_workers_keep_the_daemon_small_and_responsive() {
    const WORKERS: usize = 4;
    const MESSAGES: u64 = 1500;
    let m = Marks::new();
    let daemon = m.start(&["--workers", "4", "--looptime", "0.1"]);
    let mut client = m.client();
    for i in 0..WORKERS {
        wait_looping(&mut client, &format!("w{i}"), None);
    }
    for i in 0..WORKERS {
        let reply = client.call(
            "worker.send",
            json!([format!("w{i}"), "flood", [MESSAGES, 1000]]),
        );
        assert_eq!(reply.expect("worker.send flood"), json!(true));
    }
    // A good client during the flood: answered each time, within its 5 s timeout. The
    // floods themselves may take long on a loaded machine (the workers give up at 40 s).
    let deadline = Instant::now() + 5 * DEADLINE;
    loop {
        let reply = client.call("system.listMethods", json!([]));
        assert!(
            reply.is_ok(),
            "the daemon did not answer during the flood: {reply:?}"
        );
        if (0..WORKERS).all(|i| m.mark(&format!("w{i}.flooded")).exists()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the floods did not end; stderr tail: {}",
            tail(&daemon)
        );
        thread::sleep(Duration::from_millis(20));
    }
    for i in 0..WORKERS {
        assert_eq!(
            read_mark(&m.mark(&format!("w{i}.flooded"))),
            MESSAGES.to_string(),
            "w{i} could not send all its messages"
        );
    }
    let want = WORKERS * MESSAGES as usize;
    wait_until(
        "every message to reach the daemon's bus",
        3 * DEADLINE,
        || daemon.log_lines(&["worker message", "command: tick-report"]) >= want,
    );
    let peak = common::status_kib(daemon.pid(), "VmHWM");
    eprintln!("the daemon's peak RSS during the flood: {peak} KiB");
    assert!(
        peak < RSS_BOUND_KIB,
        "the daemon's peak RSS was {peak} KiB during the flood (bound {RSS_BOUND_KIB} KiB)"
    );
    for i in 0..WORKERS {
        assert_eq!(entry(&mut client, &format!("w{i}"))["restarts"], json!(0));
    }
}

fn tail(daemon: &Foreground) -> String {
    let s = daemon.stderr();
    s.lines().rev().take(5).collect::<Vec<_>>().join("\n")
}

// ---------------------------------------------------------------------------------------
// Nesting

fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!([v]);
    }
    v
}

/// A payload the socket accepted (70 deep, under its 128) killed the worker it was sent to
/// with `worker.send`: the channel's decoder stopped at 64, and the worker exited as if the
/// daemon had corrupted its channel, a crash that was restarted. Now one limit holds for
/// both: whatever the socket takes is delivered (a deeper payload would be refused by
/// `worker.send` with a clear error, never sent), and the worker lives on.
#[test]
fn a_deep_payload_sent_to_a_worker_is_delivered_or_refused_never_a_crash() {
    let m = Marks::new();
    let daemon = m.start(&["--looptime", "0.1"]);
    let mut client = m.client();
    let pid = wait_looping(&mut client, "w0", None);
    let mut delivered = 0;
    for depth in [70, 100, 125] {
        match client.call("worker.send", json!(["w0", "received", nested(depth)])) {
            Ok(v) => {
                assert_eq!(v, json!(true));
                delivered += 1;
            }
            Err(daimon::Error::Rpc { code, message, .. }) => {
                assert!(
                    message.contains("deep") || message.contains("nest"),
                    "depth {depth}: an unclear error {code} {message}"
                );
            }
            Err(e) => panic!("depth {depth}: not an RPC error: {e}"),
        }
        // A command behind it is handled by the same process.
        let after = format!("after-{depth}");
        client
            .call("worker.send", json!(["w0", "say", [after, null]]))
            .expect("a plain command");
        wait_until(
            &format!("the command after depth {depth}"),
            DEADLINE,
            || daemon.log_lines(&["worker message", &format!("command: {after}")]) == 1,
        );
        let e = entry(&mut client, "w0");
        assert_eq!(
            pid_of(&e),
            Some(pid),
            "depth {depth}: the worker was replaced: {e}"
        );
        assert_eq!(e["restarts"], json!(0), "depth {depth}: {e}");
    }
    // What was delivered came back up whole: the worker echoed each.
    wait_until("the echoes of the deep payloads", DEADLINE, || {
        daemon.log_lines(&["worker message", "command: received"]) == delivered
    });
    assert_eq!(
        delivered, 3,
        "the socket takes 125 deep: so does the channel"
    );
}

/// A worker that sent up a payload nested deeper than the daemon's decoder takes was killed
/// by the daemon as a corrupt channel (a crash, restarted). Now its own `send` refuses it
/// with a clear error, and the daemon and the worker go on.
#[test]
fn a_worker_sending_a_too_deep_payload_gets_an_error_and_lives() {
    let m = Marks::new();
    let daemon = m.start(&["--looptime", "0.1"]);
    let mut client = m.client();
    let pid = wait_looping(&mut client, "w0", None);
    let mark = m.mark("w0.sent-deep");
    client
        .call("worker.send", json!(["w0", "send-deep", 200]))
        .expect("worker.send");
    wait_until("w0 to try its deep send", DEADLINE, || mark.exists());
    let outcome = read_mark(&mark);
    assert!(
        outcome.starts_with("error") && (outcome.contains("deep") || outcome.contains("nest")),
        "the worker's send of a 200-deep payload: {outcome:?}"
    );
    // A shallow one goes through.
    std::fs::remove_file(&mark).expect("removing the mark");
    client
        .call("worker.send", json!(["w0", "send-deep", 10]))
        .expect("worker.send");
    wait_until("w0 to send a shallow payload", DEADLINE, || mark.exists());
    assert_eq!(read_mark(&mark), "ok");
    wait_until("the shallow payload to arrive", DEADLINE, || {
        daemon.log_lines(&["worker message", "command: deep"]) == 1
    });
    let e = entry(&mut client, "w0");
    assert_eq!(pid_of(&e), Some(pid), "{e}");
    assert_eq!(e["restarts"], json!(0), "{e}");
}

// ---------------------------------------------------------------------------------------
// A worker's own children

/// `sleep 300`, spawned by the worker, outlived the worker's SIGKILL (orphaned to init).
/// Now the worker's whole process group is killed with it, and the daemon, a subreaper,
/// reaps the orphan: it is gone, not a zombie; the worker restarts.
#[test]
fn a_killed_workers_own_children_die_with_it_and_are_reaped() {
    let m = Marks::new();
    let daemon = m.start(&["--looptime", "0.1"]);
    let mut client = m.client();
    let pid = wait_looping(&mut client, "w0", None);
    client
        .call("worker.send", json!(["w0", "spawn-sleep"]))
        .expect("worker.send");
    let mark = m.mark("w0.sleep");
    wait_until("w0 to spawn its sleep", DEADLINE, || {
        !read_mark(&mark).is_empty()
    });
    let sleep: i32 = read_mark(&mark).parse().expect("a pid");
    let _guard = KillOnDrop(sleep);
    assert!(alive(sleep));
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("killing the worker");
    wait_until("the worker's sleep to be gone and reaped", DEADLINE, || {
        vanished(sleep)
    });
    let new = wait_looping(&mut client, "w0", Some(pid));
    assert_ne!(new, pid);
    assert!(daemon.stderr().contains("worker crashed"));
}

/// The daemon's clean stop left a worker's `sleep 300` running. Now nothing of its workers
/// is left once it has exited.
#[test]
fn a_clean_stop_leaves_no_descendant_of_a_worker() {
    let m = Marks::new();
    let mut daemon = m.start(&["--looptime", "0.1", "--workers", "2"]);
    let mut client = m.client();
    let mut sleeps = Vec::new();
    for name in ["w0", "w1"] {
        wait_looping(&mut client, name, None);
        client
            .call("worker.send", json!([name, "spawn-sleep"]))
            .expect("worker.send");
        let mark = m.mark(&format!("{name}.sleep"));
        wait_until("the worker to spawn its sleep", DEADLINE, || {
            !read_mark(&mark).is_empty()
        });
        let sleep: i32 = read_mark(&mark).parse().expect("a pid");
        sleeps.push(KillOnDrop(sleep));
    }
    drop(client);
    daemon.stop_with(Signal::SIGTERM);
    for s in &sleeps {
        wait_until(
            "the sleep to be gone after the daemon's stop",
            DEADLINE,
            || vanished(s.0),
        );
    }
}
