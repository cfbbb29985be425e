//! Subscriptions against a scripted fake daemon: events between replies, in order, in every
//! protocol; timeouts that lose nothing; the bounded buffer; `worker.call`.

use super::*;
use crate::client::events::MAX_KEPT;

/// What a scripted fake daemon does, in order.
enum Step {
    /// Reads this many request bytes.
    Read(usize),
    /// Writes these bytes.
    Write(Vec<u8>),
    /// Waits before the next step (the fake daemon's pace, not a test's wait).
    Pause(Duration),
}

/// Serves one connection by `steps`, then closes it; returns the request bytes read.
fn script(steps: Vec<Step>) -> (Sock, JoinHandle<Vec<u8>>) {
    let sock = sock();
    let listener = UnixListener::bind(sock.address.unix_path().unwrap()).unwrap();
    let handle = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut requests = Vec::new();
        for step in steps {
            match step {
                Step::Read(len) => {
                    let mut request = vec![0; len];
                    stream.read_exact(&mut request).unwrap();
                    requests.extend_from_slice(&request);
                }
                Step::Write(bytes) => stream.write_all(&bytes).unwrap(),
                Step::Pause(d) => thread::sleep(d),
            }
        }
        requests
    });
    (sock, handle)
}

/// A `daemon.event` notification framed for `protocol`.
fn notification(protocol: Protocol, subscription: u64, name: &str, data: Value) -> Vec<u8> {
    let event = json!({"subscription": subscription, "name": name, "time": 1764744000.123456, "data": data});
    match protocol {
        Protocol::MessagePack => rmp_serde::to_vec_named(&(2, "daemon.event", [event])).unwrap(),
        _ => {
            let body = json!({"jsonrpc": "2.0", "method": "daemon.event", "params": event});
            frame(protocol, &body)
        }
    }
}

/// A successful reply framed for `protocol`.
fn reply(protocol: Protocol, id: u64, result: Value) -> Vec<u8> {
    match protocol {
        Protocol::MessagePack => rmp_serde::to_vec_named(&(1, id, (), result)).unwrap(),
        _ => frame(
            protocol,
            &json!({"jsonrpc": "2.0", "result": result, "id": id}),
        ),
    }
}

fn frame(protocol: Protocol, body: &Value) -> Vec<u8> {
    let body = body.to_string();
    match protocol {
        Protocol::ContentLength => format!("Content-Length: {}\r\n\r\n{body}", body.len()),
        _ => format!("{body}\n"),
    }
    .into_bytes()
}

/// The length of the request `encode` makes, for the fake daemon's reads.
fn request_len(protocol: Protocol, method: &str, params: Value, id: u64) -> usize {
    wire::encode(protocol, method, params, Some(id))
        .unwrap()
        .len()
}

fn names(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.name.as_str()).collect()
}

#[test]
fn events_between_replies_come_in_order_in_every_protocol() {
    for protocol in [
        Protocol::Json,
        Protocol::ContentLength,
        Protocol::MessagePack,
    ] {
        let first = if protocol == Protocol::MessagePack {
            0
        } else {
            1
        };
        let patterns = json!([["daemon.worker.*", "daemon.log.w0"]]);
        let ev = |name: &str, n: u64| notification(protocol, 1, name, json!({"n": n}));
        let (sock, server) = script(vec![
            Step::Read(request_len(
                protocol,
                "daemon.subscribe",
                patterns.clone(),
                first,
            )),
            Step::Write(reply(protocol, first, json!(1))),
            Step::Read(request_len(protocol, "m", json!(["x"]), first + 1)),
            // Two events, then the reply, one of them before the reply in the same write.
            Step::Write(ev("daemon.worker.started", 1)),
            Step::Write(
                [
                    ev("daemon.log.w0", 2),
                    reply(protocol, first + 1, json!("x")),
                ]
                .concat(),
            ),
            Step::Pause(Duration::from_millis(50)),
            Step::Write(ev("daemon.worker.exited", 3)),
        ]);
        let mut c = client(&sock, protocol);
        assert_eq!(
            c.subscribe(&["daemon.worker.*", "daemon.log.w0"]).unwrap(),
            1
        );
        assert_eq!(c.call("m", json!(["x"])).unwrap(), "x", "{protocol:?}");
        let mut got = Vec::new();
        while got.len() < 3 {
            got.push(
                c.next_event(Duration::from_secs(5))
                    .unwrap()
                    .expect("an event"),
            );
        }
        assert_eq!(
            names(&got),
            [
                "daemon.worker.started",
                "daemon.log.w0",
                "daemon.worker.exited"
            ],
            "{protocol:?}"
        );
        assert_eq!(got[1].subscription, Some(1));
        assert_eq!(got[1].data, json!({"n": 2}));
        assert_eq!(got[1].time, 1764744000.123456);
        let secs = got[1].system_time().duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(secs.as_secs(), 1764744000);
        // Then the daemon goes away: an error, not a timeout, and the connection is done.
        let e = c.next_event(Duration::from_secs(5)).unwrap_err();
        assert_eq!(io_kind(&e), ErrorKind::UnexpectedEof, "{protocol:?}: {e}");
        assert_eq!(
            io_kind(&c.call("m", Value::Null).unwrap_err()),
            ErrorKind::NotConnected
        );
        server.join().unwrap();
    }
}

#[test]
fn subscribe_is_byte_exact_and_refusals_are_rpc_errors() {
    let request =
        br#"{"jsonrpc":"2.0","method":"daemon.subscribe","params":[["daemon.worker.*"]],"id":1}
"#;
    let refusal = br#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"bad pattern 'a*b'"},"id":2}
"#;
    let (sock, server) = script(vec![
        Step::Read(request.len()),
        Step::Write(reply(Protocol::Json, 1, json!(7))),
        Step::Read(request_len(
            Protocol::Json,
            "daemon.subscribe",
            json!([["a*b"]]),
            2,
        )),
        Step::Write(refusal.to_vec()),
        Step::Read(request_len(
            Protocol::Json,
            "daemon.subscribe",
            json!([["x"]]),
            3,
        )),
        Step::Write(reply(Protocol::Json, 3, json!("nope"))),
    ]);
    let mut c = client(&sock, Protocol::Json);
    assert_eq!(c.subscribe(&["daemon.worker.*"]).unwrap(), 7);
    let (code, _, data) = rpc(c.subscribe(&["a*b"]).unwrap_err());
    assert_eq!((code, data), (-32602, Some(json!("bad pattern 'a*b'"))));
    let e = c.subscribe(&["x"]).unwrap_err();
    assert!(
        matches!(&e, Error::Protocol(m) if m.contains("subscription id")),
        "{e:?}"
    );
    drop(c);
    assert!(server.join().unwrap().starts_with(request));
}

#[test]
fn a_timeout_in_the_middle_of_an_event_loses_nothing() {
    for protocol in [
        Protocol::Json,
        Protocol::ContentLength,
        Protocol::MessagePack,
    ] {
        let event = notification(protocol, 2, "daemon.worker.started", json!({"pid": 42}));
        let (head, tail) = event.split_at(event.len() / 2);
        let (sock, server) = script(vec![
            Step::Write(head.to_vec()),
            Step::Pause(Duration::from_millis(300)),
            Step::Write(tail.to_vec()),
            Step::Write(notification(
                protocol,
                2,
                "daemon.worker.exited",
                Value::Null,
            )),
            Step::Pause(Duration::from_millis(100)),
        ]);
        let mut c = client(&sock, protocol);
        let started = Instant::now();
        assert_eq!(c.next_event(Duration::from_millis(50)).unwrap(), None);
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "{protocol:?}"
        );
        // Zero: only what has arrived.
        assert_eq!(c.next_event(Duration::ZERO).unwrap(), None);
        let e = c.next_event(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(
            (e.name.as_str(), &e.data),
            ("daemon.worker.started", &json!({"pid": 42}))
        );
        let e = c.next_event(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(
            (e.subscription, e.data),
            (Some(2), Value::Null),
            "{protocol:?}"
        );
        server.join().unwrap();
    }
}

#[test]
fn events_kept_during_a_call_are_bounded_and_the_gap_reported_in_place() {
    let protocol = Protocol::Json;
    let many: Vec<u8> = (0..MAX_KEPT as u64 + 76)
        .flat_map(|n| notification(protocol, 1, "e", json!(n)))
        .collect();
    let (sock, server) = script(vec![
        Step::Read(request_len(protocol, "m", Value::Null, 1)),
        Step::Write(many),
        Step::Write(reply(protocol, 1, json!(true))),
        Step::Write(notification(protocol, 1, "after", Value::Null)),
        Step::Pause(Duration::from_millis(100)),
    ]);
    let mut c = client(&sock, protocol);
    assert_eq!(c.call("m", Value::Null).unwrap(), true);
    for n in 0..MAX_KEPT as u64 {
        let e = c.next_event(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!((e.name.as_str(), e.data), ("e", json!(n)));
    }
    let gap = c.next_event(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(gap.name, "daemon.events.dropped");
    assert_eq!((gap.subscription, gap.data), (None, json!({"dropped": 76})));
    assert_eq!(
        c.next_event(Duration::from_secs(5)).unwrap().unwrap().name,
        "after"
    );
    server.join().unwrap();
}

#[test]
fn unsubscribe_forgets_the_kept_events_of_that_subscription() {
    let protocol = Protocol::MessagePack;
    let (sock, server) = script(vec![
        Step::Read(request_len(protocol, "daemon.unsubscribe", json!([1]), 0)),
        Step::Write(
            [
                notification(protocol, 1, "one", Value::Null),
                notification(protocol, 2, "two", Value::Null),
                // Another notification than daemon.event: ignored.
                rmp_serde::to_vec(&(2, "daemon.other", [1])).unwrap(),
                reply(protocol, 0, json!(true)),
            ]
            .concat(),
        ),
        Step::Write(b"\x94\x01\x05\xc0\xc3".to_vec()),
    ]);
    let mut c = client(&sock, protocol);
    c.unsubscribe(1).unwrap();
    let e = c.next_event(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!((e.name.as_str(), e.subscription), ("two", Some(2)));
    // A reply no call waits for breaks the connection.
    let e = c.next_event(Duration::from_secs(5)).unwrap_err();
    assert!(
        matches!(&e, Error::Protocol(m) if m.contains("no call waits")),
        "{e:?}"
    );
    server.join().unwrap();
}

#[test]
fn the_events_iterator_ends_after_the_daemon_goes_away() {
    let protocol = Protocol::Json;
    let (sock, server) = script(vec![
        Step::Write(notification(protocol, 1, "a", Value::Null)),
        Step::Write(notification(protocol, 1, "b", Value::Null)),
        // A malformed event is a protocol error.
        Step::Write(
            b"{\"jsonrpc\":\"2.0\",\"method\":\"daemon.event\",\"params\":{\"name\":5}}\n".to_vec(),
        ),
    ]);
    let mut c = client(&sock, protocol);
    let got: Vec<Result<Event>> = c.events().collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].as_ref().unwrap().name, "a");
    assert_eq!(got[1].as_ref().unwrap().name, "b");
    assert!(
        matches!(&got[2], Err(Error::Protocol(m)) if m.contains("event")),
        "{got:?}"
    );
    server.join().unwrap();
}

#[test]
fn call_worker_sends_worker_call_and_waits_past_the_client_timeout() {
    let protocol = Protocol::Json;
    let request =
        br#"{"jsonrpc":"2.0","method":"worker.call","params":["w0","stats",{"k":1},0.5],"id":1}
"#;
    let (sock, server) = script(vec![
        Step::Read(request.len()),
        // Longer than the client's timeout, shorter than it plus the worker's.
        Step::Pause(Duration::from_millis(400)),
        Step::Write(reply(protocol, 1, json!({"calls": 3}))),
        Step::Read(request_len(
            protocol,
            "worker.call",
            json!(["w0", "x", null, 1.0]),
            2,
        )),
    ]);
    let mut c = client(&sock, protocol);
    c.set_timeout(Duration::from_millis(300));
    let answer = c
        .call_worker(
            "w0",
            "stats",
            Some(json!({"k": 1})),
            Duration::from_millis(500),
        )
        .unwrap();
    assert_eq!(answer, json!({"calls": 3}));
    // Without a payload: null in its place. The fake daemon closes instead of answering.
    let e = c
        .call_worker("w0", "x", None, Duration::from_secs(1))
        .unwrap_err();
    assert_eq!(io_kind(&e), ErrorKind::UnexpectedEof, "{e}");
    drop(c);
    assert!(server.join().unwrap().starts_with(request));
}
