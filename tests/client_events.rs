//! `daimon::Client`'s subscriptions against a real daemon (the `log_daemon` example), in
//! each of the three protocols: the events of a worker's restart, read after calls that
//! kept them, unsubscribe, and the daemon going away.
//!
//! Every test has its own temp dir and daemon, killed when the test ends.

mod common;

use std::io::ErrorKind;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{DEADLINE, Foreground, TestDir, unix_addr, wait_until};
use daimon::Error;
use daimon::client::{Client, Event, Protocol};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const PROTOCOLS: [Protocol; 3] = [
    Protocol::Json,
    Protocol::ContentLength,
    Protocol::MessagePack,
];

fn log_daemon(dir: &TestDir) -> Foreground {
    let mut cmd = Command::new(common::example_named("log_daemon"));
    cmd.arg("-f")
        .args(dir.std_args())
        .current_dir(dir.path())
        .stdin(Stdio::null());
    let mut daemon = Foreground::spawn_cmd(dir, cmd);
    daemon.wait_ready_std(dir);
    daemon
}

fn connect(dir: &TestDir, protocol: Protocol) -> Client {
    let address = unix_addr(&dir.socket()).parse().expect("a valid address");
    Client::connect_with(&address, protocol, Duration::from_secs(5)).expect("connecting")
}

/// w0's pid once it is LOOPING under another pid than `old`.
fn looping_pid(client: &mut Client, old: Option<i64>) -> i64 {
    let mut pid = None;
    wait_until("w0 looping (under a new pid)", DEADLINE, || {
        let list = client.call("worker.list", Value::Null).unwrap();
        pid = (list[0]["statename"] == "LOOPING")
            .then(|| list[0]["pid"].as_i64())
            .flatten()
            .filter(|&p| Some(p) != old);
        pid.is_some()
    });
    pid.expect("just seen")
}

/// The next event within [`DEADLINE`].
fn next(client: &mut Client) -> Event {
    client
        .next_event(DEADLINE)
        .expect("an event, not an error")
        .expect("an event within the deadline")
}

#[test]
fn a_restart_comes_as_events_kept_through_the_calls_in_every_protocol() {
    let dir = TestDir::new();
    let _daemon = log_daemon(&dir);
    for protocol in PROTOCOLS {
        let mut client = connect(&dir, protocol);
        let before = looping_pid(&mut client, None);
        let id = client.subscribe(&["daemon.worker.*"]).unwrap();
        assert!(id > 0);
        // The events come while these calls wait for their replies: kept, in order.
        client.call("worker.restart", json!(["w0"])).unwrap();
        let after = looping_pid(&mut client, Some(before));
        let exited = next(&mut client);
        assert_eq!(exited.name, "daemon.worker.exited", "{protocol:?}");
        assert_eq!(exited.subscription, Some(id));
        assert_eq!(exited.data["worker"], "w0");
        assert_eq!(exited.data["pid"], before);
        assert_eq!(exited.data["requested"], true);
        let started = next(&mut client);
        assert_eq!(started.name, "daemon.worker.started", "{protocol:?}");
        assert_eq!(started.data["pid"], after);
        assert!(started.time >= exited.time, "{exited:?} {started:?}");
        // Nothing else: a wait that times out, and the connection still serves.
        assert_eq!(client.next_event(Duration::from_millis(100)).unwrap(), None);
        assert_eq!(client.call("worker.status", json!(["w0"])).unwrap(), 1);
        // After unsubscribe, another restart brings nothing.
        client.unsubscribe(id).unwrap();
        client.call("worker.restart", json!(["w0"])).unwrap();
        looping_pid(&mut client, Some(after));
        assert_eq!(
            client.next_event(Duration::from_millis(200)).unwrap(),
            None,
            "{protocol:?}"
        );
        // An unknown subscription, a bad pattern: refused, the connection usable.
        assert!(matches!(
            client.unsubscribe(id),
            Err(Error::Rpc { code: -32000, .. })
        ));
        assert!(matches!(
            client.subscribe(&["a*b"]),
            Err(Error::Rpc { code: -32602, .. })
        ));
        assert_eq!(client.call("worker.status", json!(["w0"])).unwrap(), 1);
    }
}

#[test]
fn the_events_end_with_an_error_when_the_daemon_goes_away() {
    let dir = TestDir::new();
    let mut daemon = log_daemon(&dir);
    let mut client = connect(&dir, Protocol::MessagePack);
    looping_pid(&mut client, None);
    client.subscribe(&["daemon.worker.*"]).unwrap();
    daemon.stop_with(Signal::SIGTERM);
    let ended = client
        .events()
        .find_map(|e| e.err())
        .expect("an error ends the events");
    match ended {
        Error::Io(e) => assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{e}"),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}
