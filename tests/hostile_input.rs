//! Memory after parsing, against real daemons: the worst single requests we know of (huge
//! batches of non-requests, of cheap calls, of invalid elements, wide params, replies past
//! `socketmaxoutput`) leave the daemon's peak RSS under 16 MiB, get one complete error reply
//! (never a truncated one), and never cost a client that reads its replies its connection.
//!
//! The peak is the kernel's own high-water mark (`VmHWM` in `/proc/<pid>/status`), so a
//! spike between two samples cannot hide.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::conn::*;
use common::{DEADLINE, Foreground, TestDir, example_named, wait_until};
use serde_json::{Value, json};

/// The bound the issue sets for the daemon's peak RSS under any one hostile request.
const PEAK_RSS_KIB: u64 = 16 * 1024;

fn assert_peak_bounded(daemon: &Foreground, what: &str) {
    let peak = common::status_kib(daemon.pid(), "VmHWM");
    assert!(
        peak < PEAK_RSS_KIB,
        "{what}: the daemon's peak RSS is {peak} KiB (bound {PEAK_RSS_KIB} KiB)"
    );
}

/// After an attack: the daemon is within its bound, serves a good client that was connected
/// before the attack and a new one, stops cleanly and leaves no pid file or socket behind.
fn assert_survived(
    mut daemon: Foreground,
    dir: &TestDir,
    mut before: Conn<UnixStream>,
    what: &str,
) {
    assert_peak_bounded(&daemon, what);
    before.echo("connected before the attack", 100);
    assert_serves(dir);
    daemon.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert!(!dir.pidfile().exists(), "{what}: the pid file is left");
    assert!(!dir.socket().exists(), "{what}: the socket file is left");
}

/// A JSON batch of `element` repeated until the line is about `size` bytes.
fn batch_of(element: &str, size: usize) -> Vec<u8> {
    let n = size / (element.len() + 1);
    let mut line = Vec::with_capacity(size + 2);
    line.push(b'[');
    for i in 0..n {
        if i > 0 {
            line.push(b',');
        }
        line.extend_from_slice(element.as_bytes());
    }
    line.extend_from_slice(b"]\n");
    line
}

/// Asserts `reply` is one JSON-RPC error object (not a batch) with `code`, id null.
fn assert_one_error(reply: &Value, code: i64) {
    assert!(reply.is_object(), "not one reply object: {reply:.200}");
    assert_eq!(reply["error"]["code"], code, "{reply}");
    assert_eq!(reply["id"], Value::Null, "{reply}");
}

#[test]
fn megabyte_batch_of_non_requests_gets_one_error_and_little_memory() {
    let dir = TestDir::new();
    let daemon = start(&dir, json!({}));
    let good = unix(&dir);
    let mut conn = unix(&dir);
    conn.send(&batch_of("1", 1024 * 1024 - 64));
    let reply = conn.json();
    assert_one_error(&reply, -32600);
    // The connection goes on: the framing was intact.
    conn.echo("after the batch", 2);
    drop(conn);
    assert_survived(daemon, &dir, good, "a 1 MiB batch of numbers");
}

#[test]
fn refused_peer_gets_one_error_for_a_whole_batch() {
    let dir = TestDir::new();
    let daemon = start(&dir, json!({"socketmaxconnections": 1}));
    // The readiness probe's connection may still count for a moment: wait for the slot.
    let mut first = None;
    wait_until("the only slot", DEADLINE, || {
        let mut conn = unix(&dir);
        conn.send(&request("examples.echo", json!(["holds the only slot"]), 1));
        let ok = conn.json()["result"] == "holds the only slot";
        first = ok.then_some(conn);
        ok
    });
    let mut refused = unix(&dir);
    refused.send(&batch_of("{}", 1024 * 1024 - 64));
    let reply = refused.json();
    assert_eq!(reply["error"]["message"], "too many connections", "{reply}");
    refused.assert_closed(DEADLINE);
    assert_peak_bounded(&daemon, "a refused peer's 1 MiB batch");
}

#[test]
fn batch_of_invalid_elements_gets_one_complete_error_and_the_connection_lives() {
    let dir = TestDir::new();
    let daemon = start(&dir, json!({}));
    let good = unix(&dir);
    let mut conn = unix(&dir);
    // 100,000 elements that are not requests, in 300 KB.
    conn.send(&batch_of("{}", 300_000));
    let reply = conn.json();
    assert_one_error(&reply, -32600);
    let message = reply["error"]["data"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
        + reply["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("batch"), "{reply}");
    conn.echo("after the batch", 3);
    drop(conn);
    assert_survived(daemon, &dir, good, "a batch of 100,000 invalid elements");
}

#[test]
fn batch_under_the_cap_is_served_whole() {
    let dir = TestDir::new();
    let _daemon = start(&dir, json!({"socketmaxbatch": 5}));
    let mut conn = unix(&dir);
    let calls: Vec<Value> = (0..5)
        .map(|i| json!({"jsonrpc": "2.0", "method": "examples.echo", "params": [format!("m{i}")], "id": i}))
        .collect();
    conn.send(format!("{}\n", Value::Array(calls.clone())).as_bytes());
    let reply = conn.json();
    let replies = reply
        .as_array()
        .unwrap_or_else(|| panic!("a batch reply: {reply}"));
    assert_eq!(replies.len(), 5, "{reply}");
    for (i, one) in replies.iter().enumerate() {
        assert_eq!(one["result"], format!("m{i}"), "{reply}");
    }
    // One more is over the cap: one error, id null, code -32600.
    let mut over = calls;
    over.push(json!({"jsonrpc": "2.0", "method": "examples.echo", "params": ["x"], "id": 9}));
    conn.send(format!("{}\n", Value::Array(over)).as_bytes());
    assert_one_error(&conn.json(), -32600);
    conn.echo("still served", 10);
}

#[test]
fn megabyte_batch_of_cheap_calls_with_twenty_workers_stays_small() {
    let dir = TestDir::new();
    let mut cmd = Command::new(example_named("worker_daemon"));
    cmd.arg("-f")
        .args(["--workers", "20"])
        .args(dir.std_args())
        .current_dir(dir.path());
    let mut daemon = Foreground::spawn_cmd(&dir, cmd);
    daemon.wait_ready_std(&dir);
    let good = unix(&dir);
    let mut conn = unix(&dir);
    let call = r#"{"jsonrpc":"2.0","method":"worker.list","id":1}"#;
    conn.send(&batch_of(call, 1024 * 1024 - 64));
    assert_one_error(&conn.json(), -32600);
    // A batch under the cap is served whole, each reply 20 workers long.
    conn.send(&batch_of(call, 99 * (call.len() + 1)));
    let reply = conn.json();
    assert_eq!(reply.as_array().map(Vec::len), Some(99), "{reply:.300}");
    drop(conn);
    let mut good = good;
    good.send(&request("worker.list", json!([]), 5));
    let reply = good.json();
    assert_eq!(
        reply["result"].as_array().map(Vec::len),
        Some(20),
        "{reply:.300}"
    );
    assert_peak_bounded(&daemon, "a 1 MiB batch of worker.list with 20 workers");
    daemon.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert!(!dir.socket().exists(), "the socket file is left");
}

#[test]
fn wide_params_are_refused_before_they_grow() {
    let dir = TestDir::new();
    let daemon = start(&dir, json!({}));
    // One request whose params are 500,000 numbers: 1 MiB on the wire, 16 MiB as values.
    let mut params = batch_of("0", 1024 * 1024 - 128);
    params.pop();
    let mut line = br#"{"jsonrpc":"2.0","method":"examples.echo","id":4,"params":"#.to_vec();
    line.extend_from_slice(&params);
    line.extend_from_slice(b"}\n");
    let mut conn = unix(&dir);
    conn.send(&line);
    let reply = conn.json();
    assert_eq!(reply["error"]["code"], -32600, "{reply}");
    assert_eq!(reply["id"], 4, "{reply}");
    conn.echo("after the wide request", 5);

    // The same in MessagePack: a million nils in one request.
    let mut msg = vec![0x94, 0x00, 0x07, 0xad];
    msg.extend_from_slice(b"examples.echo");
    msg.push(0xdd);
    msg.extend_from_slice(&1_000_000u32.to_be_bytes());
    msg.extend(std::iter::repeat_n(0xc0, 1_000_000));
    let daemon2 = start_in(&dir, "mp", json!({"maxrequestsize": 2 * 1024 * 1024}));
    let mut conn = Conn::new(UnixStream::connect(dir.join("mp.sock")).expect("connecting"));
    conn.send(&msg);
    let reply = conn.msgpack();
    assert_eq!(reply[1], 7, "{reply}");
    assert_eq!(reply[2][0], -32600, "{reply}");
    assert_peak_bounded(&daemon, "a request with 500,000 params");
    assert_peak_bounded(&daemon2, "a MessagePack request with a million params");
}

#[test]
fn reply_larger_than_socketmaxoutput_is_an_error_reply_not_a_truncated_one() {
    let dir = TestDir::new();
    let _daemon = start(&dir, json!({"socketmaxoutput": 4096}));
    let mut conn = unix(&dir);
    let calls: Vec<Value> = (0..50)
        .map(|i| json!({"jsonrpc": "2.0", "method": "system.listMethods", "id": i}))
        .collect();
    conn.send(format!("{}\n", Value::Array(calls)).as_bytes());
    let reply = conn.json();
    assert_one_error(&reply, -32000);
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("socketmaxoutput")),
        "{reply}"
    );
    // A single reply too large for the cap: an error with the request's id.
    conn.send(&request("examples.echo", json!(["z".repeat(5000)]), 6));
    let reply = conn.json();
    assert_eq!(reply["error"]["code"], -32000, "{reply}");
    assert_eq!(reply["id"], 6, "{reply}");
    conn.echo("fits", 7);
}

#[test]
fn client_that_reads_late_gets_every_reply() {
    let dir = TestDir::new();
    let daemon = start(&dir, json!({"socketmaxoutput": 65536, "sockettimeout": 5}));
    let stream = UnixStream::connect(dir.socket()).expect("connecting");
    stream
        .set_write_timeout(Some(DEADLINE))
        .expect("a write timeout");
    let mut reader = Conn::new(stream.try_clone().expect("cloning the socket"));
    let sent = Arc::new(AtomicUsize::new(0));
    let count = sent.clone();
    const N: usize = 400;
    let writer = thread::spawn(move || {
        let mut stream = stream;
        for i in 0..N {
            let request = request("examples.echo", json!(["y".repeat(8192)]), i as u64);
            stream.write_all(&request)?;
            count.fetch_add(1, Ordering::Relaxed);
        }
        Ok::<(), std::io::Error>(())
    });
    // The client reads only once its writes stall (the daemon holds back while 3 MB of
    // replies are due, far past socketmaxoutput) or all are sent.
    let (mut last, mut since) = (0, Instant::now());
    wait_until("the writer to stall or finish", DEADLINE, || {
        let now = sent.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, Instant::now());
        }
        writer.is_finished() || since.elapsed() > Duration::from_millis(300)
    });
    for i in 0..N {
        let reply = reader.json();
        assert_eq!(reply["id"], i, "{reply:.200}");
    }
    writer
        .join()
        .expect("the writer thread")
        .expect("the daemon took every request");
    assert!(
        !daemon.stderr().contains("does not read its replies"),
        "a reading client was called a non-reader: {}",
        daemon.stderr()
    );
}

/// Starts another echo daemon in `dir` on `<name>.sock` / `<name>.pid`.
fn start_in(dir: &TestDir, name: &str, config: Value) -> Foreground {
    let file = common::path_str(&dir.write_config(&format!("{name}.json"), &config));
    let pid = dir.join(&format!("{name}.pid"));
    let sock = dir.join(&format!("{name}.sock"));
    let args = [
        "-f".to_string(),
        "--config".into(),
        file,
        "--pidfile".into(),
        common::path_str(&pid),
        "--socket".into(),
        format!("unix://{}", common::path_str(&sock)),
    ];
    let mut daemon = Foreground::spawn(dir, &args);
    daemon.wait_ready(&pid, &sock);
    daemon
}

#[test]
fn a_multicall_is_capped_like_a_batch() {
    let dir = TestDir::new();
    let daemon = start(&dir, json!({"socketmaxbatch": 5}));
    let good = unix(&dir);
    let call = json!({"methodName": "system.listMethods", "params": []});
    let mut conn = unix(&dir);
    conn.send(&request(
        "system.multicall",
        json!([vec![call.clone(); 5]]),
        1,
    ));
    let reply = conn.json();
    assert_eq!(
        reply["result"].as_array().map(Vec::len),
        Some(5),
        "{reply:.300}"
    );
    conn.send(&request("system.multicall", json!([vec![call; 10_000]]), 2));
    let reply = conn.json();
    assert_eq!(reply["error"]["code"], -32600, "{reply:.300}");
    assert_eq!(reply["id"], 2, "{reply:.300}");
    drop(conn);
    assert_survived(daemon, &dir, good, "a multicall of 10,000 calls");
}

#[test]
fn many_small_objects_are_weighed_before_they_grow() {
    let dir = TestDir::new();
    let daemon = start(&dir, json!({}));
    let good = unix(&dir);
    // 60,000 one-key objects: under maxrequestvalues counted one per value, but each is a
    // map several hundred bytes large.
    let objects = vec![r#"{"a":0}"#; 60_000].join(",");
    let line = format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"examples.echo\",\"id\":3,\"params\":[{objects}]}}\n"
    );
    let mut conn = unix(&dir);
    conn.send(line.as_bytes());
    let reply = conn.json();
    assert_eq!(reply["error"]["code"], -32600, "{reply:.300}");
    assert_eq!(reply["id"], 3, "{reply:.300}");
    drop(conn);
    assert_survived(daemon, &dir, good, "60,000 small objects");
}
