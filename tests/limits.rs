//! The control socket's limits and security, against a real daemon (the `echo_daemon`
//! example), as PROTOCOL.md states them: each limit is a clear error to the one client that
//! passed it, and the daemon goes on serving the others.
//!
//! The tests talk raw bytes so they see exactly what a client gets. Every read has a deadline;
//! nothing sleeps blindly.

mod common;

use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::conn::*;
use common::{DEADLINE, TestDir, free_tcp_port, path_str, wait_until};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// socketmaxconnections

#[test]
fn connection_over_the_cap_is_refused_in_its_own_framing() {
    let dir = TestDir::new();
    let daemon = start(
        &dir,
        json!({"socketmaxconnections": 2, "sockettimeout": 0.3}),
    );
    let mut first = unix(&dir);
    first.echo("one", 1);
    let mut second = unix(&dir);
    second.echo("two", 2);

    let mut over = unix(&dir);
    over.send(&request("examples.echo", json!(["three"]), 7));
    assert_json_error(&over.json(), -32000, "too many connections", json!(7));
    over.assert_closed(CLOSE_BOUND);

    let mut over = unix(&dir);
    let body = request("examples.echo", json!(["three"]), 8);
    over.send(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    over.send(&body);
    assert_json_error(
        &over.content_length(),
        -32000,
        "too many connections",
        json!(8),
    );
    over.assert_closed(CLOSE_BOUND);

    let mut over = unix(&dir);
    over.send(&msgpack_request(9, "examples.echo", json!(["three"])));
    let message = assert_msgpack_error(&over.msgpack(), json!(9), -32000);
    assert_eq!(message, "too many connections");
    over.assert_closed(CLOSE_BOUND);

    // Silent: closed after sockettimeout.
    let took = unix(&dir).assert_closed(CLOSE_BOUND);
    assert!(took >= Duration::from_millis(200), "closed after {took:?}");

    // The two served ones still are; once one leaves (the daemon closes its end when it
    // sees ours), a new client takes its place.
    second.echo("two again", 3);
    first
        .reader
        .get_ref()
        .shutdown(std::net::Shutdown::Write)
        .expect("half-closing");
    first.assert_closed(CLOSE_BOUND);
    assert_serves(&dir);
    assert!(
        daemon.stderr().contains("too many connections"),
        "no log line: {}",
        daemon.stderr()
    );
}

/// A client that opens its next connection before it closes the last (a new connection per
/// call) is not refused at the cap: a connection accepted while the cap is full is admitted
/// at its first request if a slot is free by then, and refused if none is.
#[test]
fn a_connection_accepted_at_the_cap_is_served_once_a_slot_frees() {
    let dir = TestDir::new();
    let _daemon = start(&dir, json!({"socketmaxconnections": 1}));
    // The readiness probe's connection may still count for a moment: wait for the slot.
    let mut first = None;
    wait_until("the only slot", DEADLINE, || {
        let mut conn = unix(&dir);
        conn.send(&request("examples.echo", json!(["holds the only slot"]), 1));
        let ok = conn.json()["result"] == "holds the only slot";
        first = ok.then_some(conn);
        ok
    });
    let mut first = first.expect("the slot");
    let mut next = unix(&dir);
    // The daemon accepted `next` at the cap by the time it answers this (it was waiting in
    // the backlog before this request was sent).
    first.echo("still the only one", 2);
    drop(first);
    next.echo("the next call's connection", 3);
    let mut over = unix(&dir);
    next.echo("still served", 4);
    over.send(&request("examples.echo", json!(["over"]), 5));
    assert_json_error(&over.json(), -32000, "too many connections", json!(5));
    over.assert_closed(CLOSE_BOUND);
    next.echo("served after the refusal", 6);
}

// ---------------------------------------------------------------------------------------
// maxrequestsize

#[test]
fn request_over_maxrequestsize_is_refused_before_it_is_read() {
    let dir = TestDir::new();
    // A long sockettimeout: an answer within REPLY_TIMEOUT did not wait for more bytes.
    let _daemon = start(&dir, json!({"maxrequestsize": 4096, "sockettimeout": 30}));
    let why = "request larger than maxrequestsize (4096 bytes)";

    let mut conn = unix(&dir);
    conn.send(&sized_request(5000).0);
    let reply = conn.json();
    assert_json_error(&reply, -32600, "Invalid Request", Value::Null);
    assert!(
        reply["error"]["data"]
            .as_str()
            .is_some_and(|d| d.contains(why)),
        "{reply}"
    );
    conn.assert_closed(CLOSE_BOUND);

    let mut conn = unix(&dir);
    conn.send(b"Content-Length: 999999999\r\n\r\n");
    let reply = conn.content_length();
    assert_json_error(&reply, -32600, "Invalid Request", Value::Null);
    assert!(
        reply["error"]["data"]
            .as_str()
            .is_some_and(|d| d.contains(why)),
        "{reply}"
    );
    conn.assert_closed(CLOSE_BOUND);

    // [0, 1, <a str32 announcing 4 GiB - 1 bytes>...]: only the header is sent.
    let mut conn = unix(&dir);
    conn.send(b"\x94\x00\x01\xdb\xff\xff\xff\xff");
    assert_msgpack_error(&conn.msgpack(), Value::Null, -32600);
    conn.assert_closed(CLOSE_BOUND);

    let mut conn = unix(&dir);
    let (request, message) = sized_request(4090);
    conn.send(&request);
    let reply = conn.json();
    assert_eq!(reply["result"], message, "{reply}");
    assert_serves(&dir);
}

// ---------------------------------------------------------------------------------------
// sockettimeout

#[test]
fn client_stalled_in_a_request_is_closed_while_others_are_served() {
    let dir = TestDir::new();
    let _daemon = start(&dir, json!({"sockettimeout": 0.3}));
    let mut stalled = unix(&dir);
    stalled.send(br#"{"jsonrpc": "2.0", "method": "examples.ec"#);
    let stalled_at = Instant::now();

    let mut other = unix(&dir);
    other.echo("meanwhile", 1);
    let served_after = stalled_at.elapsed();
    assert!(
        served_after < Duration::from_millis(250),
        "another client waited {served_after:?} while one stalled"
    );

    let took = stalled.assert_closed(CLOSE_BOUND);
    assert!(
        stalled_at.elapsed() >= Duration::from_millis(250),
        "closed after {took:?}"
    );
    other.echo("after", 2);
    assert_serves(&dir);
}

// ---------------------------------------------------------------------------------------
// socketmaxoutput

#[test]
fn client_that_does_not_read_its_replies_is_dropped() {
    let dir = TestDir::new();
    // Its replies fill socketmaxoutput: the daemon reads no more from it, and drops it once
    // nothing moved for sockettimeout.
    let daemon = start(&dir, json!({"socketmaxoutput": 65536, "sockettimeout": 1}));
    let stream = UnixStream::connect(dir.socket()).expect("connecting");
    stream
        .set_write_timeout(Some(DEADLINE))
        .expect("a write timeout");
    let reader = stream.try_clone().expect("cloning the socket");
    let sent = Arc::new(AtomicUsize::new(0));
    let count = sent.clone();
    let writer = thread::spawn(move || {
        let mut stream = stream;
        let request = request("examples.echo", json!(["y".repeat(8192)]), 1);
        for _ in 0..10_000 {
            if let Err(e) = stream.write_all(&request) {
                return Some(e);
            }
            count.fetch_add(1, Ordering::Relaxed);
        }
        None
    });

    wait_until("the greedy client to send 20 requests", DEADLINE, || {
        sent.load(Ordering::Relaxed) >= 20 || writer.is_finished()
    });
    unix(&dir).echo("meanwhile", 1);

    let error = writer.join().expect("the writer thread");
    let error = error.unwrap_or_else(|| panic!("80 MB were written to a client that never reads"));
    assert!(
        matches!(
            error.kind(),
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
        ),
        "the greedy client's write failed with {error:?}, not a closed connection"
    );
    Conn::new(reader).wait_closed(CLOSE_BOUND);
    wait_until("the log line", DEADLINE, || {
        daemon.stderr().contains("does not read its replies")
    });
    assert_serves(&dir);
}

// ---------------------------------------------------------------------------------------
// socketidletimeout

#[test]
fn idle_connection_is_closed_after_socketidletimeout() {
    let dir = TestDir::new();
    let _daemon = start(&dir, json!({"socketidletimeout": 1}));
    let mut conn = unix(&dir);
    conn.echo("once", 1);
    let took = conn.assert_closed(CLOSE_BOUND);
    assert!(took >= Duration::from_millis(500), "closed after {took:?}");
    assert_serves(&dir);
}

#[test]
fn idle_connection_stays_open_by_default() {
    let dir = TestDir::new();
    let _daemon = start(&dir, json!({}));
    let mut conn = unix(&dir);
    conn.echo("once", 1);
    conn.assert_quiet_for(Duration::from_millis(1500));
    conn.echo("twice", 2);
}

// ---------------------------------------------------------------------------------------
// Garbage

#[test]
fn garbage_gets_a_parse_error_then_the_connection_closes() {
    let dir = TestDir::new();
    let _daemon = start(&dir, json!({}));

    let mut conn = unix(&dir);
    conn.send(b"\x00\x01GET / HTTP/1.1\r\n");
    assert_json_error(&conn.json(), -32700, "Parse error", Value::Null);
    conn.assert_closed(CLOSE_BOUND);

    let mut conn = unix(&dir);
    let mut bytes = msgpack_request(0, "examples.echo", json!(["valid"]));
    bytes.push(0xc1);
    conn.send(&bytes);
    assert_eq!(conn.msgpack(), json!([1, 0, null, "valid"]));
    let message = assert_msgpack_error(&conn.msgpack(), Value::Null, -32700);
    assert!(!message.is_empty());
    conn.assert_closed(CLOSE_BOUND);

    assert_serves(&dir);
}

// ---------------------------------------------------------------------------------------
// Security

#[test]
fn unix_socket_mode_is_0600_unless_socketmode_says_otherwise() {
    for (config, want) in [(json!({}), 0o600), (json!({"socketmode": "0660"}), 0o660)] {
        let dir = TestDir::new();
        let _daemon = start(&dir, config.clone());
        let mode = std::fs::metadata(dir.socket())
            .expect("the socket file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, want, "with {config}: mode {mode:o}");
        assert_serves(&dir);
    }
}

/// Root may always connect, so as root this checks a uid list still lets root in; the
/// refusal path needs a non-root uid, and is checked when the tests run as one.
#[test]
fn socketpeers_list_refuses_other_uids_but_not_root() {
    let dir = TestDir::new();
    let daemon = start(&dir, json!({"socketpeers": [12345]}));
    let mut conn = unix(&dir);
    if nix::unistd::getuid().is_root() {
        conn.echo("root is always allowed", 1);
    } else {
        conn.send(&request("examples.echo", json!(["refused"]), 1));
        assert_json_error(&conn.json(), -32000, "permission denied", json!(1));
        conn.assert_closed(CLOSE_BOUND);
        assert!(
            daemon.stderr().contains("permission denied"),
            "no log line: {}",
            daemon.stderr()
        );
    }
}

#[test]
fn tcp_clients_must_authenticate_with_socketsecret() {
    let dir = TestDir::new();
    let (_daemon, port) = start_tcp(&dir, json!({"socketsecret": "s3cret"}));

    let mut conn = tcp(port);
    conn.send(&request("examples.echo", json!(["too early"]), 1));
    assert_json_error(&conn.json(), -32000, "authentication required", json!(1));
    conn.send(&request("system.auth", json!(["wrong"]), 2));
    assert_json_error(&conn.json(), -32000, "authentication failed", json!(2));
    conn.assert_closed(CLOSE_BOUND);

    let mut conn = tcp(port);
    conn.send(&request("system.auth", json!(["s3cret"]), 3));
    let reply = conn.json();
    assert_eq!(reply["result"], true, "{reply}");
    assert_eq!(reply["id"], 3, "{reply}");
    conn.echo("authenticated", 4);
    conn.echo("still authenticated", 5);
}

#[test]
fn non_loopback_tcp_is_refused_without_socketallowremote() {
    let dir = TestDir::new();
    let out = dir.run(&[
        "-f".to_string(),
        "--pidfile".into(),
        path_str(&dir.pidfile()),
        "--socket".into(),
        format!("tcp://0.0.0.0:{}", free_tcp_port()),
    ]);
    out.assert_code(1).assert_stderr_has("socketallowremote");
    assert!(!dir.pidfile().exists(), "a refused start left a pid file");
}
