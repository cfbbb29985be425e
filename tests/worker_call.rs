//! `worker.call` against a real daemon (`examples/worker_daemon.rs`): a worker's
//! `Worker::command` answers, with a value or an error; a worker that is too slow, or dies
//! mid-call, gives a clear error and the daemon goes on serving; a late reply is ignored;
//! a user method built with `ctx.defer` and `workers().call` replies once the worker has
//! done the work; the workers' lines reach the bus as `daemon.log.<worker>` events.
//!
//! Every test has its own temp dir and daemon, killed when the test ends; every wait polls
//! with a deadline. A filtered run does not build the example: `cargo build --examples`
//! first, or an old binary is tested.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{DEADLINE, Foreground, TestDir, example_named, path_str, unix_addr, wait_until};
use daimon::client::{Client, Protocol};
use daimon::{Error, Result};
use serde_json::{Value, json};

struct Daemon {
    dir: TestDir,
    marks: PathBuf,
    daemon: Foreground,
}

impl Daemon {
    fn start(extra: &[&str]) -> Daemon {
        let dir = TestDir::new();
        let marks = dir.join("marks");
        std::fs::create_dir(&marks).expect("creating the marks dir");
        let mut cmd = Command::new(example_named("worker_daemon"));
        cmd.arg("-f")
            .args(["--dir", &path_str(&marks)])
            .args(extra)
            .args(dir.std_args())
            .current_dir(dir.path());
        let mut daemon = Foreground::spawn_cmd(&dir, cmd);
        daemon.wait_ready_std(&dir);
        Daemon { dir, marks, daemon }
    }

    fn client(&self) -> Client {
        let address = unix_addr(&self.dir.socket()).parse().expect("an address");
        Client::connect_with(&address, Protocol::Json, Duration::from_secs(10)).expect("connecting")
    }

    fn raw(&self) -> BufReader<UnixStream> {
        let stream = UnixStream::connect(self.dir.socket()).expect("connecting");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a read timeout");
        BufReader::new(stream)
    }
}

/// The code and message of an RPC error.
fn rpc_error<T: std::fmt::Debug>(result: Result<T>) -> (i64, String) {
    match result {
        Err(Error::Rpc { code, message, .. }) => (code, message),
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

/// `w0`'s pid, once it is LOOPING with a pid other than `old`.
fn looping_pid(client: &mut Client, old: Option<i64>) -> i64 {
    let mut pid = None;
    wait_until("w0 LOOPING with a new pid", DEADLINE, || {
        let list = client.call("worker.list", json!([])).expect("worker.list");
        let w0 = &list[0];
        pid = w0["pid"].as_i64().filter(|p| Some(*p) != old);
        w0["state"] == 1 && pid.is_some()
    });
    pid.expect("set above")
}

fn line(conn: &mut BufReader<UnixStream>) -> Value {
    let mut text = String::new();
    conn.read_line(&mut text).expect("reading a reply");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("reply {text:?}: {e}"))
}

#[test]
fn a_call_replies_with_the_workers_value_and_its_errors_code_and_message() {
    let d = Daemon::start(&[]);
    let mut client = d.client();
    looping_pid(&mut client, None);
    let payload = json!({"text": "héllo", "list": [1, 2.5, null, true]});
    assert_eq!(
        client
            .call("worker.call", json!(["w0", "echo", payload]))
            .unwrap(),
        payload
    );
    // By name, with a timeout; no payload is null.
    assert_eq!(
        client
            .call(
                "worker.call",
                json!({"name": "w0", "command": "echo", "timeout": 2.0})
            )
            .unwrap(),
        Value::Null
    );
    let (code, message) = rpc_error(client.call(
        "worker.call",
        json!(["w0", "fail", [-32099, "the disk is full"]]),
    ));
    assert_eq!((code, message.as_str()), (-32099, "the disk is full"));
    let (code, message) = rpc_error(client.call("worker.call", json!(["w0", "fail"])));
    assert_eq!((code, message.as_str()), (4242, "failed on purpose"));
    // A command the worker forwards to its bus: null at once.
    assert_eq!(
        client
            .call("worker.call", json!(["w0", "received", 7]))
            .unwrap(),
        Value::Null
    );
    // worker.send goes through the same handler, its reply discarded.
    assert_eq!(
        client
            .call("worker.send", json!(["w0", "touch", "sent"]))
            .unwrap(),
        json!(true)
    );
    let touched = d.marks.join("w0.touched");
    wait_until("w0.touched after worker.send", DEADLINE, || {
        std::fs::read_to_string(&touched).is_ok_and(|t| t == "sent")
    });
    // Over MessagePack-RPC too, an error with its code.
    let address = unix_addr(&d.dir.socket()).parse().expect("an address");
    let mut mp = Client::connect_with(&address, Protocol::MessagePack, Duration::from_secs(10))
        .expect("connecting");
    assert_eq!(
        mp.call("worker.call", json!(["w0", "echo", [1, "two"]]))
            .unwrap(),
        json!([1, "two"])
    );
    let (code, _) = rpc_error(mp.call("worker.call", json!(["w0", "fail", [7, "seven"]])));
    assert_eq!(code, 7);
}

#[test]
fn a_call_that_times_out_gets_a_clear_error_and_a_late_reply_is_ignored() {
    let d = Daemon::start(&[]);
    let mut client = d.client();
    looping_pid(&mut client, None);
    let started = Instant::now();
    let (code, message) = rpc_error(client.call("worker.call", json!(["w0", "sleep", 1.5, 0.3])));
    let took = started.elapsed();
    assert_eq!(code, -32000, "{message}");
    assert!(
        message.contains("w0") && message.contains("did not reply to 'sleep' within 300 ms"),
        "{message}"
    );
    assert!(
        took < Duration::from_millis(1400),
        "answered after {took:?}"
    );
    // The worker replies late, while the next call waits behind the sleep: that call gets
    // its own answer, never the stale one.
    assert_eq!(
        client
            .call("worker.call", json!(["w0", "echo", "fresh"]))
            .unwrap(),
        json!("fresh")
    );
    assert_eq!(
        client
            .call("worker.call", json!(["w0", "echo", "next"]))
            .unwrap(),
        json!("next")
    );
}

#[test]
fn a_worker_that_dies_mid_call_gives_an_error_is_restarted_and_the_daemon_serves_on() {
    let d = Daemon::start(&[]);
    let mut client = d.client();
    let first = looping_pid(&mut client, None);
    let (code, message) = rpc_error(client.call("worker.call", json!(["w0", "die"])));
    assert_eq!(code, -32000);
    assert!(
        message.contains("w0") && message.contains("exited before replying to 'die'"),
        "{message}"
    );
    // The daemon answers at once, and the worker comes back.
    let status = client.call("worker.status", json!(["w0"])).unwrap();
    assert!(status.is_i64(), "{status}");
    let second = looping_pid(&mut client, Some(first));
    assert_ne!(first, second);
    wait_until("the crash in the daemon's log", DEADLINE, || {
        d.daemon.log_lines(&["worker crashed", "w0"]) >= 1
    });
    assert_eq!(
        client
            .call("worker.call", json!(["w0", "echo", "again"]))
            .unwrap(),
        json!("again")
    );
}

#[test]
fn a_reply_that_cannot_cross_the_channel_is_an_error_and_the_worker_lives() {
    let d = Daemon::start(&[]);
    let mut client = d.client();
    let pid = looping_pid(&mut client, None);
    let (code, message) = rpc_error(client.call("worker.call", json!(["w0", "big", 100_000])));
    assert_eq!(code, -32603, "{message}");
    assert!(message.contains("cannot cross the channel"), "{message}");
    let (code, message) = rpc_error(client.call("worker.call", json!(["w0", "reply-deep", 200])));
    assert_eq!(code, -32603, "{message}");
    assert!(message.contains("deeper than 128"), "{message}");
    let small = client
        .call("worker.call", json!(["w0", "big", 30_000]))
        .unwrap();
    assert_eq!(small.as_str().map(str::len), Some(30_000));
    let deep = client
        .call("worker.call", json!(["w0", "reply-deep", 100]))
        .unwrap();
    assert!(deep.is_array());
    let list = client.call("worker.list", json!([])).unwrap();
    assert_eq!(list[0]["pid"], pid, "the same process: {list}");
}

#[test]
fn calls_that_cannot_be_made_are_refused_clearly() {
    let d = Daemon::start(&[]);
    let mut client = d.client();
    looping_pid(&mut client, None);
    let (code, message) = rpc_error(client.call("worker.call", json!(["nope", "echo"])));
    assert_eq!(code, -32000);
    assert!(message.contains("no worker named 'nope'"), "{message}");
    let (code, message) = rpc_error(client.call("worker.call", json!(["w0", "stop"])));
    assert_eq!(code, -32000);
    assert!(message.contains("worker.stop"), "{message}");
    let (code, message) = rpc_error(client.call("worker.call", json!(["w0", "echo", 1, -1])));
    assert_eq!(code, -32602, "{message}");

    // In a batch: refused, with a reason; the rest of the batch is answered.
    let mut conn = d.raw();
    let batch = json!([
        {"jsonrpc": "2.0", "method": "worker.call", "params": ["w0", "echo", 1], "id": 1},
        {"jsonrpc": "2.0", "method": "worker.status", "params": ["w0"], "id": 2},
    ]);
    conn.get_mut()
        .write_all(format!("{batch}\n").as_bytes())
        .unwrap();
    let replies = line(&mut conn);
    let replies = replies.as_array().expect("a batch reply");
    let call = replies
        .iter()
        .find(|r| r["id"] == 1)
        .expect("the call's reply");
    assert_eq!(call["error"]["code"], -32000, "{call}");
    let text = call["error"]["message"].as_str().unwrap_or_default();
    assert!(text.contains("on its own"), "{call}");
    let status = replies.iter().find(|r| r["id"] == 2).expect("the status");
    assert_eq!(status["result"], 1, "{status}");
    // In a multicall too.
    let results = client
        .call(
            "system.multicall",
            json!([[{"methodName": "worker.call", "params": ["w0", "echo"]}]]),
        )
        .unwrap();
    assert_eq!(results[0]["faultCode"], -32000, "{results}");
}

#[test]
fn a_method_built_with_defer_and_call_replies_once_the_worker_has_done_it() {
    let d = Daemon::start(&[]);
    let mut client = d.client();
    looping_pid(&mut client, None);
    let touched = d.marks.join("w0.touched");
    assert!(!touched.exists());
    let path = client.call("example.touch", json!(["done"])).unwrap();
    // No waiting: the reply came after the worker wrote it.
    assert_eq!(std::fs::read_to_string(&touched).unwrap(), "done");
    assert_eq!(path, json!(touched.display().to_string()));
}

#[test]
fn the_workers_lines_reach_the_bus_as_log_events() {
    let d = Daemon::start(&["--tap-logs"]);
    let mut client = d.client();
    looping_pid(&mut client, None);
    assert_eq!(
        client
            .call("worker.call", json!(["w0", "print", "ping"]))
            .unwrap(),
        json!(true)
    );
    let want = [
        json!({"name": "daemon.log.w0", "data": {"worker": "w0", "stream": "stdout", "line": "out: ping"}}),
        json!({"name": "daemon.log.w0", "data": {"worker": "w0", "stream": "stderr", "line": "err: ping"}}),
    ];
    let mut seen = Value::Null;
    wait_until("the stdout and stderr lines as events", DEADLINE, || {
        seen = client
            .call("example.logs", json!([]))
            .expect("example.logs");
        let events = seen.as_array().expect("an array");
        want.iter().all(|w| events.contains(w))
            && events.iter().any(|e| {
                e["data"]["stream"] == "log"
                    && e["data"]["line"]
                        .as_str()
                        .is_some_and(|l| l.starts_with("log: ping"))
            })
    });
}

#[test]
fn a_subscriber_gets_the_workers_lines_as_daemon_log_events() {
    let d = Daemon::start(&[]);
    let mut client = d.client();
    looping_pid(&mut client, None);
    let mut conn = d.raw();
    let send = |conn: &mut BufReader<UnixStream>, request: Value| {
        conn.get_mut()
            .write_all(format!("{request}\n").as_bytes())
            .expect("sending");
    };
    send(
        &mut conn,
        json!({"jsonrpc": "2.0", "id": 1, "method": "daemon.subscribe", "params": [["daemon.log.*"]]}),
    );
    let subscribed = line(&mut conn);
    assert!(
        subscribed["result"].as_u64().is_some_and(|id| id > 0),
        "{subscribed}"
    );
    send(
        &mut conn,
        json!({"jsonrpc": "2.0", "id": 2, "method": "worker.call", "params": ["w0", "print", "pong"]}),
    );
    let (mut replied, mut streams) = (false, Vec::new());
    let deadline = Instant::now() + DEADLINE;
    while !(replied && streams.len() == 3) {
        assert!(
            Instant::now() < deadline,
            "got {streams:?}, replied: {replied}"
        );
        let message = line(&mut conn);
        if message["id"] == 2 {
            assert_eq!(message["result"], true, "{message}");
            replied = true;
            continue;
        }
        assert_eq!(message["method"], "daemon.event", "{message}");
        let params = &message["params"];
        assert_eq!(params["name"], "daemon.log.w0", "{message}");
        let data = &params["data"];
        assert_eq!(data["worker"], "w0", "{message}");
        let text = data["line"].as_str().unwrap_or_default();
        if text.contains("pong") {
            streams.push(data["stream"].as_str().unwrap_or_default().to_owned());
        }
    }
    streams.sort();
    assert_eq!(streams, ["log", "stderr", "stdout"]);
}

/// Stalls w0 for a second, and queues behind the stall more commands than a worker reads
/// in one turn (1,024), then `touch last`; when the stall began.
fn queue_behind_a_stall(client: &mut Client) -> Instant {
    assert_eq!(
        client
            .call("worker.send", json!(["w0", "stall", 1.0]))
            .unwrap(),
        json!(true)
    );
    let started = Instant::now();
    for i in 0..2_500 {
        let sent = client
            .call("worker.send", json!(["w0", "received", i]))
            .unwrap();
        assert_eq!(sent, json!(true), "command {i}");
    }
    client
        .call("worker.send", json!(["w0", "touch", "last"]))
        .unwrap();
    started
}

/// More commands than a worker reads in one turn (1,024), queued while it is busy: it
/// reads the rest on its next turns by itself (nothing wakes it again: the daemon rang
/// once, and no tick comes within the test), in order.
#[test]
fn commands_past_a_turns_budget_are_read_on_the_next_turns() {
    let d = Daemon::start(&["--workers", "1", "--looptime", "3600"]);
    let started = queue_behind_a_stall(&mut d.client());
    // All queued while the worker stalled (else the test shows nothing).
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "queueing took {:?}",
        started.elapsed()
    );
    let touched = d.marks.join("w0.touched");
    wait_until("w0 read every command", DEADLINE, || {
        std::fs::read_to_string(&touched).is_ok_and(|t| t == "last")
    });
}

/// The daemon's shutdown comes after what it sent before: a worker busy when the daemon
/// is told to stop reads every command queued behind its stall first (more than one turn's
/// budget of them), then stops, through its spindown.
#[test]
fn a_shutdown_comes_after_the_commands_sent_before_it() {
    let mut d = Daemon::start(&["--workers", "1", "--looptime", "3600"]);
    let started = queue_behind_a_stall(&mut d.client());
    d.daemon.signal(nix::sys::signal::Signal::SIGTERM);
    // All queued, and the stop asked, while the worker stalled (else the test shows
    // nothing).
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "queueing took {:?}",
        started.elapsed()
    );
    let status = d.daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", d.daemon.stderr());
    // Stopped by the daemon's stop, not by the SIGTERM that follows it at half the
    // shutdown timeout.
    assert!(
        !d.daemon.stderr().contains("did not stop"),
        "{}",
        d.daemon.stderr()
    );
    let touched = d.marks.join("w0.touched");
    assert_eq!(
        std::fs::read_to_string(&touched).ok().as_deref(),
        Some("last"),
        "the last command was read before the stop"
    );
    assert!(d.marks.join("w0.down").exists(), "w0 ran its spindown");
}
