//! The bus on the control socket (`examples/events_daemon.rs`): `daemon.subscribe` streams
//! events to a connection as notifications, interleaved with its replies, in each protocol;
//! every standard kind of event has its JSON form; a slow subscriber is bounded and told
//! what it missed; every call is audited; user methods reply later.
//!
//! Every test has its own temp dir and daemon, killed when the test ends; every read and
//! wait has a deadline. A filtered run does not build the example: `cargo build --examples`
//! first.

mod common;

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::conn::{Conn, Stream, request};
use common::{DEADLINE, Foreground, TestDir, example_named, free_tcp_port, path_str, wait_until};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

fn start(dir: &TestDir, extra: &[&str], config: Option<Value>) -> Foreground {
    let mut cmd = Command::new(example_named("events_daemon"));
    cmd.arg("-f")
        .args(extra)
        .args(dir.std_args())
        .current_dir(dir.path());
    if let Some(config) = config {
        let path = dir.write_config("events.json", &config);
        cmd.args(["--config", &path_str(&path)]);
    }
    let mut daemon = Foreground::spawn_cmd(dir, cmd);
    daemon.wait_ready_std(dir);
    daemon
}

fn unix(dir: &TestDir) -> Conn<UnixStream> {
    Conn::new(UnixStream::connect(dir.socket()).expect("connecting"))
}

fn is_event(v: &Value) -> bool {
    v["method"] == "daemon.event"
}

/// JSON messages from `conn` until `want` holds for one (returned with all before it).
fn read_until<S: Stream>(conn: &mut Conn<S>, mut want: impl FnMut(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "not seen in time; saw {seen:?}");
        let v = conn.json();
        let done = want(&v);
        seen.push(v);
        if done {
            return seen;
        }
    }
}

/// The next event named `name` (skipping others), its params.
fn event_named<S: Stream>(conn: &mut Conn<S>, name: &str) -> Value {
    let seen = read_until(conn, |v| is_event(v) && v["params"]["name"] == name);
    seen.last().expect("read_until returns the match")["params"].clone()
}

fn subscribe<S: Stream>(conn: &mut Conn<S>, patterns: Value, id: u64) -> u64 {
    conn.send(&request("daemon.subscribe", json!([patterns]), id));
    let reply = read_until(conn, |v| v["id"] == id).pop().unwrap();
    reply["result"]
        .as_u64()
        .unwrap_or_else(|| panic!("subscribe failed: {reply}"))
}

#[test]
fn events_reach_a_subscriber_interleaved_with_its_replies() {
    let dir = TestDir::new();
    let _daemon = start(&dir, &[], None);
    let mut c = unix(&dir);
    let sub = subscribe(&mut c, json!(["examples.*"]), 1);
    assert!(sub > 0);
    c.send(&request("examples.note", json!(["héllo"]), 2));
    let reply = c.json();
    assert_eq!(
        (reply["id"].clone(), reply["result"].clone()),
        (json!(2), json!(true))
    );
    let event = c.json();
    assert!(is_event(&event), "{event}");
    assert_eq!(event["jsonrpc"], "2.0");
    assert!(
        event.get("id").is_none(),
        "a notification has no id: {event}"
    );
    let p = &event["params"];
    assert_eq!(p["subscription"], sub);
    assert_eq!(p["name"], "examples.noted");
    assert_eq!(p["data"], json!({"text": "héllo", "length": 5}));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((p["time"].as_f64().unwrap() - now).abs() < 60.0, "{p}");
    // Two subscriptions that both match: the event comes once for each.
    let second = subscribe(&mut c, json!(["examples.noted", "nothing.else"]), 3);
    c.send(&request("examples.note", json!(["x"]), 4));
    let seen = read_until(&mut c, |v| {
        is_event(v) && v["params"]["subscription"] == second
    });
    let subs: Vec<&Value> = seen
        .iter()
        .filter(|v| is_event(v))
        .map(|v| &v["params"]["subscription"])
        .collect();
    assert!(subs.contains(&&json!(sub)), "{seen:?}");
    // Unsubscribed: nothing more for it; unknown ids and bad patterns are errors.
    c.send(&request("daemon.unsubscribe", json!([sub]), 5));
    assert_eq!(
        read_until(&mut c, |v| v["id"] == 5).pop().unwrap()["result"],
        true
    );
    c.send(&request("daemon.unsubscribe", json!([sub]), 6));
    let reply = c.json();
    assert_eq!(reply["error"]["code"], -32000, "{reply}");
    c.send(&request("daemon.subscribe", json!([["a*b"]]), 7));
    let reply = c.json();
    assert_eq!(reply["error"]["code"], -32602, "{reply}");
    assert!(
        reply["error"]["data"].as_str().unwrap().contains("a*b"),
        "{reply}"
    );
    c.send(&request("examples.note", json!(["y"]), 8));
    let seen = read_until(&mut c, is_event);
    assert_eq!(seen.last().unwrap()["params"]["subscription"], second);
    // Another connection's subscription cannot be ended from here.
    let mut other = unix(&dir);
    other.send(&request("daemon.unsubscribe", json!([second]), 9));
    assert_eq!(other.json()["error"]["code"], -32000);
}

#[test]
fn every_standard_kind_of_event_has_its_json_form() {
    let dir = TestDir::new();
    let config = json!({
        "workers": {"w0": {"maxrestarts": 1, "restartwindow": 60, "backoff": 0.01}},
    });
    let mut daemon = start(
        &dir,
        &["--workers", "2", "--tick-every", "1", "--timer", "100"],
        Some(config),
    );
    let mut c = unix(&dir);
    subscribe(&mut c, json!(["*"]), 1);
    let timer = event_named(&mut c, "examples.timer");
    assert!(timer["data"]["timer"].is_u64(), "{timer}");
    let tick = event_named(&mut c, "daemon.worker.message.w1.tick");
    assert_eq!(tick["data"]["worker"], "w1");
    assert_eq!(tick["data"]["command"], "tick");
    assert!(tick["data"]["payload"]["ticks"].is_u64(), "{tick}");
    // A client that comes and goes, and its calls.
    {
        let mut other = unix(&dir);
        other.send(&request("worker.status", json!(["w1"]), 1));
        assert_eq!(other.json()["result"], 1);
        other.send(&request("no.such.method", json!([]), 2));
        assert_eq!(other.json()["error"]["code"], -32601);
    }
    let connect = event_named(&mut c, "daemon.socket.client.connect");
    assert!(
        connect["data"]["peer"].as_str().unwrap().contains("pid"),
        "{connect}"
    );
    let rpc = event_named(&mut c, "daemon.rpc.worker.status");
    assert_eq!(rpc["data"]["method"], "worker.status");
    assert_eq!(rpc["data"]["params"], json!({"name": "w1"}));
    let call = event_named(&mut c, "daemon.call.worker.status");
    assert_eq!(call["data"]["outcome"], "ok");
    assert!(call["data"]["micros"].is_u64());
    let unknown = event_named(&mut c, "daemon.call.no.such.method");
    assert_eq!(unknown["data"]["outcome"], "error");
    assert_eq!(unknown["data"]["error"]["code"], -32601);
    event_named(&mut c, "daemon.socket.client.hangup");
    // A worker killed twice: exited, restarting, started, then failed.
    for round in 0..2 {
        c.send(&request("worker.signal", json!(["w0", "KILL"]), 10 + round));
        let exited = event_named(&mut c, "daemon.worker.exited");
        assert_eq!(exited["data"]["worker"], "w0");
        assert_eq!(exited["data"]["signal"], 9, "{exited}");
        assert_eq!(exited["data"]["crashed"], true);
        if round == 0 {
            let restarting = event_named(&mut c, "daemon.worker.restarting");
            assert_eq!(restarting["data"]["worker"], "w0");
            assert!(restarting["data"]["delay"].is_f64(), "{restarting}");
            let started = event_named(&mut c, "daemon.worker.started");
            assert_eq!(started["data"]["worker"], "w0");
            assert_eq!(started["data"]["restarts"], 1);
            assert!(started["data"]["pid"].is_i64());
        } else {
            let failed = event_named(&mut c, "daemon.worker.failed");
            assert_eq!(failed["data"]["worker"], "w0");
            assert!(failed["data"]["stops_daemon"].is_boolean(), "{failed}");
        }
    }
    // A reload by method and by SIGHUP: the signal, then the reload.
    c.send(&request("daemon.reload", json!([]), 20));
    let reload = event_named(&mut c, "daemon.reload");
    assert!(reload["data"]["applied"].is_array(), "{reload}");
    assert!(reload["data"]["restart_needed"].is_array(), "{reload}");
    daemon.signal(Signal::SIGHUP);
    let hup = event_named(&mut c, "daemon.posix.SIGHUP");
    assert_eq!(hup["data"], json!({"signal": "SIGHUP", "number": 1}));
    event_named(&mut c, "daemon.reload");
    // The stop: a subscriber hears it to the end (the socket file is gone meanwhile, and the
    // other connections closed), then the connection closes.
    let mut bystander = unix(&dir);
    bystander.echo_status();
    daemon.signal(Signal::SIGTERM);
    let stopping = event_named(&mut c, "daemon.stopping");
    assert_eq!(stopping["data"], json!({}));
    let exited = event_named(&mut c, "daemon.worker.exited");
    assert_eq!(exited["data"]["worker"], "w1");
    assert_eq!(exited["data"]["requested"], true);
    let stop = event_named(&mut c, "daemon.stop");
    assert_eq!(stop["data"], json!({}));
    c.wait_closed(DEADLINE);
    bystander.wait_closed(DEADLINE);
    daemon.wait_exit();
    assert!(!dir.socket().exists());
}

#[test]
fn a_msgpack_subscriber_over_tcp_after_its_secret() {
    let dir = TestDir::new();
    let port = free_tcp_port();
    let socket = format!("tcp://127.0.0.1:{port}");
    let config = json!({"sockethandler": socket, "socketsecret": "s3cret"});
    let mut cmd = Command::new(example_named("events_daemon"));
    let path = dir.write_config("events.json", &config);
    cmd.args(["-f", "--config", &path_str(&path)])
        .args(["--pidfile", &path_str(&dir.pidfile())])
        .current_dir(dir.path());
    let _daemon = Foreground::spawn_cmd(&dir, cmd);
    let deadline = Instant::now() + DEADLINE;
    let stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("the daemon does not listen on {socket}: {e}"),
        }
    };
    let mut c = Conn::new(stream);
    let mp = |v: &Value| rmp_serde::to_vec(v).unwrap();
    // Before the secret, subscribing is refused like any call, and audited.
    c.send(&mp(&json!([0, 1, "daemon.subscribe", [["*"]]])));
    let refused = c.msgpack();
    assert_eq!(refused[2][1], "authentication required", "{refused}");
    c.send(&mp(&json!([0, 2, "system.auth", ["s3cret"]])));
    assert_eq!(c.msgpack()[3], true);
    c.send(&mp(&json!([
        0,
        3,
        "daemon.subscribe",
        [["examples.*", "daemon.call.*"]]
    ])));
    let sub = c.msgpack()[3].as_u64().expect("a subscription id");
    c.send(&mp(&json!([0, 4, "examples.note", ["over tcp"]])));
    let mut got = Vec::new();
    while got.len() < 3 {
        got.push(c.msgpack());
    }
    assert_eq!(got[0], json!([1, 4, null, true]));
    let events: Vec<&Value> = got[1..].iter().collect();
    for e in &events {
        assert_eq!(e[0], 2, "a notification: {e}");
        assert_eq!(e[1], "daemon.event");
        assert_eq!(e[2][0]["subscription"], sub);
    }
    let names: Vec<&Value> = events.iter().map(|e| &e[2][0]["name"]).collect();
    assert!(names.contains(&&json!("examples.noted")), "{names:?}");
    assert!(
        names.contains(&&json!("daemon.call.examples.note")),
        "{names:?}"
    );
    let noted = events
        .iter()
        .find(|e| e[2][0]["name"] == "examples.noted")
        .unwrap();
    assert_eq!(
        noted[2][0]["data"],
        json!({"text": "over tcp", "length": 8})
    );
    // Another tcp client without the secret: its refused call is audited.
    let mut stranger = Conn::new(TcpStream::connect(("127.0.0.1", port)).unwrap());
    stranger.send(&request("worker.list", json!([]), 1));
    assert_eq!(
        stranger.json()["error"]["message"],
        "authentication required"
    );
    loop {
        let e = c.msgpack();
        if e[2][0]["name"] == "daemon.call.worker.list" {
            assert_eq!(e[2][0]["data"]["outcome"], "error");
            assert_eq!(
                e[2][0]["data"]["error"]["message"],
                "authentication required"
            );
            break;
        }
    }
}

#[test]
fn a_content_length_subscriber_gets_framed_events() {
    let dir = TestDir::new();
    let _daemon = start(&dir, &[], None);
    let mut c = unix(&dir);
    let framed = |v: Value| {
        let body = v.to_string();
        format!("Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    };
    c.send(&framed(json!({"jsonrpc": "2.0", "id": 1, "method": "daemon.subscribe", "params": [["examples.noted"]]})));
    assert_eq!(c.content_length()["result"], 1);
    c.send(&framed(
        json!({"jsonrpc": "2.0", "id": 2, "method": "examples.note", "params": {"text": "cl"}}),
    ));
    assert_eq!(c.content_length()["id"], 2);
    let event = c.content_length();
    assert_eq!(event["params"]["data"]["text"], "cl", "{event}");
}

/// Reads what is there within `quiet` of silence, returning the JSON lines.
fn drain_lines(c: &mut Conn<UnixStream>, quiet: Duration) -> Vec<Value> {
    c.reader.get_ref().set_timeout(quiet);
    let mut out = Vec::new();
    let mut pending = String::new();
    let mut buf = vec![0; 256 * 1024];
    loop {
        match c.reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                pending.push_str(std::str::from_utf8(&buf[..n]).expect("utf-8"));
                while let Some(i) = pending.find('\n') {
                    let line: String = pending.drain(..=i).collect();
                    out.push(serde_json::from_str(&line).expect("a JSON line"));
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("reading: {e}"),
        }
    }
    out
}

/// A subscriber that stops reading while 60 MB of events are emitted: the daemon's memory
/// stays bounded, other clients are served, and once it reads again it is told how many it
/// missed, so that what it got plus what it missed is everything.
#[test]
fn a_slow_subscriber_is_bounded_and_told_what_it_missed() {
    const BURSTS: u64 = 6;
    const COUNT: u64 = 10_000;
    let dir = TestDir::new();
    let daemon = start(&dir, &[], None);
    let mut slow = unix(&dir);
    let sub = subscribe(&mut slow, json!(["examples.burst"]), 1);
    let mut busy = unix(&dir);
    for i in 0..BURSTS {
        busy.send(&request("examples.burst", json!([COUNT, 1000]), i));
        let reply = busy.json();
        assert_eq!(reply["result"], COUNT, "{reply}");
    }
    // Everything emitted has been dispatched once a later call's event is back.
    let mut probe = unix(&dir);
    subscribe(&mut probe, json!(["examples.noted"]), 1);
    probe.send(&request("examples.note", json!(["done"]), 2));
    read_until(&mut probe, is_event);
    let peak = common::status_kib(daemon.pid(), "VmHWM");
    eprintln!("the daemon's peak RSS with a slow subscriber: {peak} KiB");
    assert!(peak < 40 * 1024, "peak RSS {peak} KiB");
    let mut got = drain_lines(&mut slow, Duration::from_millis(500));
    // One more event, so the dropped notice (sent before the next event that fits) comes.
    busy.send(&request("examples.burst", json!([1, 10]), 99));
    assert_eq!(busy.json()["result"], 1);
    got.extend(read_until(&mut slow, |v| {
        v["params"]["data"]["fill"] == "x".repeat(10)
    }));
    let bursts = got
        .iter()
        .filter(|v| v["params"]["name"] == "examples.burst")
        .count() as u64;
    let dropped: u64 = got
        .iter()
        .filter(|v| v["params"]["name"] == "daemon.events.dropped")
        .map(|v| {
            assert_eq!(v["params"]["subscription"], Value::Null);
            v["params"]["data"]["dropped"].as_u64().unwrap()
        })
        .sum();
    assert!(dropped > 0, "a 60 MB burst fit in the queue?");
    assert_eq!(
        bursts + dropped,
        BURSTS * COUNT + 1,
        "got {bursts}, dropped {dropped}"
    );
    assert!(got.iter().all(|v| is_event(v)
        && (v["params"]["subscription"] == sub || v["params"]["subscription"].is_null())));
}

/// A subscriber is never idle (`socketidletimeout` spares it), but one that reads nothing
/// while its output waits is dropped after `sockettimeout`, like any client.
#[test]
fn subscribers_are_never_idle_but_must_read() {
    let dir = TestDir::new();
    let config = json!({"socketidletimeout": 1, "sockettimeout": 1});
    let daemon = start(&dir, &[], Some(config));
    let mut quiet = unix(&dir);
    subscribe(
        &mut quiet,
        json!(["examples.noted", "daemon.socket.client.hangup"]),
        1,
    );
    let mut stalled = unix(&dir);
    subscribe(&mut stalled, json!(["examples.burst"]), 1);
    let mut idle = unix(&dir);
    idle.echo_status();
    let started = Instant::now();
    let (took, _) = idle.wait_closed(Duration::from_secs(5));
    assert!(
        took >= Duration::from_millis(900),
        "idle dropped after {took:?}"
    );
    // The subscribed one outlived the idle timeout and is served.
    let mut other = unix(&dir);
    other.send(&request("examples.burst", json!([2000, 4000]), 1));
    assert_eq!(other.json()["result"], 2000);
    other.send(&request("examples.note", json!(["still here"]), 2));
    assert_eq!(other.json()["result"], true);
    let seen = read_until(&mut quiet, |v| v["params"]["name"] == "examples.noted");
    assert_eq!(seen.last().unwrap()["params"]["data"]["text"], "still here");
    assert!(started.elapsed() >= Duration::from_secs(1));
    // The stalled one (8 MB waiting for it, never read) is dropped once its output stops
    // moving for sockettimeout.
    wait_until("the stalled subscriber to be dropped", DEADLINE, || {
        daemon.log_lines(&["client dropped", "does not read its replies"]) == 1
    });
    let (took, skipped) = stalled.wait_closed(Duration::from_secs(1));
    assert!(skipped > 0, "it was sent events before the drop");
    assert!(took < Duration::from_secs(1));
}

#[test]
fn a_user_method_replies_later_from_a_timer() {
    let dir = TestDir::new();
    let _daemon = start(&dir, &[], None);
    let mut c = unix(&dir);
    let t = Instant::now();
    c.send(&request("examples.later", json!([200, "soon"]), 1));
    // Pipelined behind it: answered after it, in order.
    c.send(&request("examples.note", json!(["after"]), 2));
    let first = c.json();
    assert_eq!(first["id"], 1);
    assert_eq!(first["result"], json!({"later": "soon"}));
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(c.json()["id"], 2);
    // In a batch, in a multicall: refused with the reason.
    c.send(br#"[{"jsonrpc":"2.0","id":3,"method":"examples.later","params":[1,1]}]"#);
    c.send(b"\n");
    let batch = c.json();
    let message = batch[0]["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("replies later"), "{batch}");
    c.send(&request(
        "system.multicall",
        json!([[{"methodName": "examples.later", "params": [1, 1]}]]),
        4,
    ));
    let multi = c.json();
    let fault = multi["result"][0]["faultString"]
        .as_str()
        .unwrap_or_default();
    assert!(fault.contains("replies later"), "{multi}");
    // Never answered in time: the timeout error, and the late answer is dropped.
    c.send(&request("examples.later", json!([5300, "late"]), 5));
    // (Due at 5 s, the reply timeout of a read: wait longer for this one.)
    c.reader.get_mut().set_timeout(DEADLINE);
    let timed_out = c.json();
    assert_eq!(timed_out["id"], 5);
    assert_eq!(timed_out["error"]["code"], -32000);
    assert!(
        timed_out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no reply within 5000 ms"),
        "{timed_out}"
    );
    wait_until("the late timer to have fired", DEADLINE, || {
        c.send(&request("examples.later", json!([0, "next"]), 6));
        let v = c.json();
        assert_eq!(v["id"], 6, "only its own reply: {v}");
        t.elapsed() > Duration::from_millis(5600)
    });
}

trait StatusCall {
    fn echo_status(&mut self);
}

impl StatusCall for Conn<UnixStream> {
    fn echo_status(&mut self) {
        self.send(&request("daemon.status", json!([]), 1));
        assert!(self.json()["result"]["pid"].is_u64());
    }
}

/// Many connections wait for deferred replies at once; answered in the reverse order of
/// the calls, each reply reaches its own connection (the server finds it by its ticket).
#[test]
fn deferred_replies_reach_their_own_connections_in_any_order() {
    let dir = TestDir::new();
    let _daemon = start(&dir, &[], Some(json!({"socketmaxconnections": 64})));
    let n = 24u64;
    let mut conns: Vec<Conn<UnixStream>> = (0..n).map(|_| unix(&dir)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        let i = i as u64;
        // The first call is answered last.
        let ms = 20 * (n - i);
        c.send(&request(
            "examples.later",
            json!([ms, format!("for {i}")]),
            100 + i,
        ));
    }
    for (i, c) in conns.iter_mut().enumerate().rev() {
        let reply = c.json();
        assert_eq!(reply["id"], 100 + i as u64, "{reply}");
        assert_eq!(
            reply["result"],
            json!({"later": format!("for {i}")}),
            "{reply}"
        );
    }
    // And each connection is served again afterwards.
    for (i, c) in conns.iter_mut().enumerate() {
        c.send(&request("examples.later", json!([0, i]), 7));
        assert_eq!(c.json()["result"], json!({"later": i}));
    }
}
