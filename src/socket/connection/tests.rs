use serde_json::json;

use super::*;

/// Echoes its first param; `boom` fails; counts calls.
#[derive(Default)]
struct Echo {
    calls: usize,
}

impl Engine for Echo {
    fn call(&mut self, _: &Meta<'_>, method: &str, params: Value) -> Result<Value, RpcError> {
        self.calls += 1;
        match method {
            "echo" => Ok(params.get(0).cloned().unwrap_or(Value::Null)),
            _ => Err(RpcError::method_not_found(method)),
        }
    }
}

const LIMITS: Limits = Limits {
    max_request: 1024,
    max_output: 4096,
    max_batch: 100,
    max_values: 10_000,
};

fn conn() -> Connection {
    Connection::new("test".into(), LIMITS, Admission::Open, None)
}

/// Feeds `chunks` one by one and returns the output as JSON lines.
fn json_lines(c: &mut Connection, chunks: &[&[u8]]) -> Vec<Value> {
    let mut engine = Echo::default();
    for chunk in chunks {
        c.receive(chunk, &mut engine, 1);
    }
    let out = String::from_utf8(c.output().to_vec()).unwrap();
    assert!(out.is_empty() || out.ends_with('\n'), "{out:?}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn newline_delimited_concatenated_and_split_requests() {
    let a = br#"{"jsonrpc":"2.0","method":"echo","params":["a"],"id":1}"#;
    let b = br#"{"jsonrpc":"2.0","method":"echo","params":["b"],"id":2}"#;
    let mut both = a.to_vec();
    both.push(b'\n');
    both.extend_from_slice(b);
    let mut c = conn();
    let replies = json_lines(&mut c, &[&both]);
    assert_eq!(
        replies,
        [
            json!({"jsonrpc":"2.0","result":"a","id":1}),
            json!({"jsonrpc":"2.0","result":"b","id":2})
        ]
    );
    // Byte by byte, concatenated with no delimiter.
    let mut c = conn();
    let mut engine = Echo::default();
    let stream = [&a[..], &b[..]].concat();
    for byte in &stream {
        c.receive(std::slice::from_ref(byte), &mut engine, 1);
    }
    assert_eq!(engine.calls, 2);
    assert_eq!(String::from_utf8_lossy(c.output()).lines().count(), 2);
    assert!(!c.has_partial_input());
}

#[test]
fn replies_are_compact_and_end_with_a_newline() {
    let mut c = conn();
    json_lines(&mut c, &[b"{ \"jsonrpc\" : \"2.0\", \"method\" : \"echo\", \"params\" : [ {\"k\" : [1, 2]} ], \"id\" : \"x\" }"]);
    assert_eq!(
        String::from_utf8_lossy(c.output()),
        "{\"id\":\"x\",\"jsonrpc\":\"2.0\",\"result\":{\"k\":[1,2]}}\n"
    );
}

#[test]
fn garbage_gets_a_parse_error_and_closes() {
    for garbage in [&b"GET / HTTP/1.1\r\n"[..], b"\xc1\xc1", b"{\"a\": 1]"] {
        let mut c = conn();
        let replies = json_lines(&mut c, &[garbage]);
        assert_eq!(replies.len(), 1, "{garbage:?}");
        assert_eq!(replies[0]["error"]["code"], -32700);
        assert_eq!(replies[0]["id"], Value::Null);
        assert!(c.is_closing());
        // Nothing more is answered.
        let before = c.output().len();
        json_lines(
            &mut c,
            &[b"{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":1}"],
        );
        assert_eq!(c.output().len(), before);
    }
}

#[test]
fn a_raw_newline_inside_a_string_is_a_parse_error() {
    let mut c = conn();
    let replies = json_lines(
        &mut c,
        &[b"{\"jsonrpc\":\"2.0\",\"method\":\"ec\nho\",\"id\":1}"],
    );
    assert_eq!(replies[0]["error"]["code"], -32700);
}

#[test]
fn oversized_requests_are_refused_before_buffering_them() {
    // A JSON value that keeps growing.
    let mut c = conn();
    let mut engine = Echo::default();
    c.receive(
        b"{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":[\"",
        &mut engine,
        1,
    );
    for _ in 0..20 {
        c.receive(&[b'x'; 100], &mut engine, 1);
    }
    let reply: Value = serde_json::from_slice(c.output().strip_suffix(b"\n").unwrap()).unwrap();
    assert_eq!(reply["error"]["code"], -32600);
    assert!(
        reply["error"]["data"]
            .as_str()
            .unwrap()
            .contains("maxrequestsize (1024 bytes)")
    );
    assert!(c.is_closing());
    assert!(c.input.capacity() < 4096, "input stopped growing");
    // A Content-Length announcing more than the limit, refused from the header alone.
    let mut c = conn();
    c.receive(b"Content-Length: 99999999\r\n\r\n", &mut engine, 1);
    assert!(c.is_closing());
    assert!(String::from_utf8_lossy(c.output()).starts_with("Content-Length: "));
    // A MessagePack str32 announcing 4 GiB.
    let mut c = conn();
    c.receive(
        &[0x94, 0x00, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff],
        &mut engine,
        1,
    );
    assert!(c.is_closing());
    let (kind, msgid, (code, _), ()): (u8, Option<u32>, (i64, String), ()) =
        rmp_serde::from_slice(c.output()).unwrap();
    assert_eq!((kind, msgid, code), (1, None, -32600));
    assert_eq!(engine.calls, 0);
}

#[test]
fn content_length_framing_round_trip() {
    let body = br#"{"jsonrpc":"2.0","method":"echo","params":["hi"],"id":0}"#;
    let head = format!("content-LENGTH: {}\r\n\r\n", body.len());
    let mut c = conn();
    let mut engine = Echo::default();
    c.receive(head.as_bytes(), &mut engine, 1);
    c.receive(&body[..10], &mut engine, 1);
    assert!(c.output().is_empty() && c.has_partial_input());
    c.receive(&body[10..], &mut engine, 1);
    c.receive(head.as_bytes(), &mut engine, 1);
    c.receive(body, &mut engine, 1);
    let reply = br#"{"id":0,"jsonrpc":"2.0","result":"hi"}"#;
    let one = [
        format!("Content-Length: {}\r\n\r\n", reply.len()).as_bytes(),
        reply,
    ]
    .concat();
    assert_eq!(c.output(), [one.clone(), one].concat());
    assert!(!c.is_closing());
}

#[test]
fn msgpack_requests_notifications_and_bad_shapes() {
    let mut c = conn();
    let mut engine = Echo::default();
    let mut stream = rmp_serde::to_vec(&(0, 0u32, "echo", ("hello",))).unwrap();
    stream.extend(rmp_serde::to_vec(&(2, "echo", ("ignored",))).unwrap());
    stream.extend(rmp_serde::to_vec(&(0, 7u32, 123, ())).unwrap());
    stream.extend(rmp_serde::to_vec(&(0, u32::MAX, "nope", ())).unwrap());
    c.receive(&stream, &mut engine, 1);
    assert_eq!(engine.calls, 3, "two requests and the notification");
    let mut rest = c.output();
    let mut replies = Vec::new();
    while !rest.is_empty() {
        let mut de = rmp_serde::Deserializer::new(&mut rest);
        let v: (u8, u32, Option<(i64, String)>, Option<String>) =
            serde::Deserialize::deserialize(&mut de).unwrap();
        replies.push(v);
    }
    assert_eq!(replies[0], (1, 0, None, Some("hello".into())));
    assert_eq!(replies[1].1, 7);
    assert_eq!(replies[1].2.as_ref().unwrap().0, -32600);
    assert_eq!(
        (replies[2].1, replies[2].2.as_ref().unwrap().0),
        (u32::MAX, -32601)
    );
    assert!(!c.is_closing());
}

#[test]
fn over_the_cap_the_first_request_is_answered_with_its_id_then_closed() {
    let refusal = RpcError::server_error("too many connections");
    let mut c = Connection::new(
        "t".into(),
        LIMITS,
        Admission::Refused(refusal.clone()),
        None,
    );
    let replies = json_lines(&mut c, &[b"{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":[1],\"id\":42}\n{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"id\":43}"]);
    assert_eq!(
        replies,
        [json!({"jsonrpc":"2.0","error":{"code":-32000,"message":"too many connections"},"id":42})]
    );
    assert!(c.is_closing());
    // In MessagePack framing too.
    let mut c = Connection::new("t".into(), LIMITS, Admission::Refused(refusal), None);
    let mut engine = Echo::default();
    c.receive(
        &rmp_serde::to_vec(&(0, 9u32, "echo", (1,))).unwrap(),
        &mut engine,
        1,
    );
    let reply: (u8, u32, (i64, String), ()) = rmp_serde::from_slice(c.output()).unwrap();
    assert_eq!(reply, (1, 9, (-32000, "too many connections".into()), ()));
    assert_eq!(engine.calls, 0);
}

#[test]
fn a_secret_must_be_presented_first() {
    let secret: Arc<str> = Arc::from("s3cret");
    let call = |c: &mut Connection, line: &str| {
        let before = c.output().len();
        let mut engine = Echo::default();
        c.receive(line.as_bytes(), &mut engine, 1);
        serde_json::from_slice::<Value>(&c.output()[before..]).unwrap()
    };
    let mut c = Connection::new("t".into(), LIMITS, Admission::Open, Some(secret.clone()));
    let r = call(
        &mut c,
        r#"{"jsonrpc":"2.0","method":"echo","params":[1],"id":1}"#,
    );
    assert_eq!(r["error"]["message"], "authentication required");
    assert!(!c.is_closing());
    let r = call(
        &mut c,
        r#"{"jsonrpc":"2.0","method":"system.auth","params":["s3cret"],"id":2}"#,
    );
    assert_eq!(r["result"], true);
    let r = call(
        &mut c,
        r#"{"jsonrpc":"2.0","method":"echo","params":[1],"id":3}"#,
    );
    assert_eq!(r["result"], 1);
    let mut c = Connection::new("t".into(), LIMITS, Admission::Open, Some(secret));
    let r = call(
        &mut c,
        r#"{"jsonrpc":"2.0","method":"system.auth","params":{"secret":"nope"},"id":1}"#,
    );
    assert_eq!(r["error"]["message"], "authentication failed");
    assert!(c.is_closing());
}

#[test]
fn a_full_output_holds_the_next_requests_until_it_drains() {
    let mut c = conn();
    let mut engine = Echo::default();
    let big = format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":[\"{}\"],\"id\":1}}",
        "x".repeat(900)
    );
    for _ in 0..4 {
        c.receive(big.as_bytes(), &mut engine, 1);
    }
    assert!(c.wants_input());
    c.receive(big.as_bytes(), &mut engine, 1);
    assert!(!c.wants_input(), "{} unsent bytes", c.output().len());
    assert_eq!(engine.calls, 5);
    // Held, not answered, not refused.
    c.receive(big.as_bytes(), &mut engine, 1);
    assert_eq!(engine.calls, 5);
    assert!(!c.resume(&mut engine, 1), "nothing resumes while full");
    let n = c.output().len();
    c.consume_output(n - 10);
    assert_eq!(c.output().len(), 10);
    c.consume_output(10);
    assert!(c.output().is_empty() && c.wants_input());
    assert!(c.resume(&mut engine, 1));
    assert_eq!(engine.calls, 6);
    assert!(!c.output().is_empty() && !c.is_closing());
    c.consume_output(c.output().len());
    assert!(!c.resume(&mut engine, 1), "nothing left");
}

#[test]
fn a_batch_past_socketmaxbatch_gets_one_error_and_no_call_runs() {
    let limits = Limits {
        max_batch: 3,
        ..LIMITS
    };
    let mut c = Connection::new("t".into(), limits, Admission::Open, None);
    let call = r#"{"jsonrpc":"2.0","method":"echo","params":[1],"id":1}"#;
    let three = format!("[{call},{call},{call}]");
    let four = format!("[{call},{call},{call},{call}]");
    let mut engine = Echo::default();
    c.receive(three.as_bytes(), &mut engine, 1);
    c.receive(four.as_bytes(), &mut engine, 1);
    assert_eq!(engine.calls, 3);
    let out = String::from_utf8(c.output().to_vec()).unwrap();
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0].as_array().map(Vec::len), Some(3), "{out}");
    assert_eq!(lines[1]["error"]["code"], -32600, "{out}");
    assert_eq!(lines[1]["id"], Value::Null, "{out}");
    assert!(!c.is_closing());
}

#[test]
fn a_batch_whose_replies_pass_the_cap_is_one_error_not_a_truncated_array() {
    let call = format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":[\"{}\"],\"id\":1}}",
        "y".repeat(200)
    );
    let batch = format!("[{}]\n", vec![call; 30].join(","));
    let limits = Limits {
        max_request: 64 * 1024,
        ..LIMITS
    };
    let mut c2 = Connection::new("t".into(), limits, Admission::Open, None);
    let replies = json_lines(&mut c2, &[batch.as_bytes()]);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["error"]["code"], -32000, "{}", replies[0]);
    assert!(
        replies[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("socketmaxoutput (4096 bytes)")
    );
    // A single reply too large keeps its id.
    let one = format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":[\"{}\"],\"id\":7}}",
        "z".repeat(5000)
    );
    let limits = Limits {
        max_request: 64 * 1024,
        ..LIMITS
    };
    let mut c = Connection::new("t".into(), limits, Admission::Open, None);
    let replies = json_lines(&mut c, &[one.as_bytes()]);
    assert_eq!(replies[0]["id"], 7);
    assert_eq!(replies[0]["error"]["code"], -32000);
}

#[test]
fn refused_and_unauthenticated_connections_answer_a_batch_once() {
    let call = r#"{"jsonrpc":"2.0","method":"echo","params":[1],"id":1}"#;
    let batch = format!("[{call},{call},{call}]\n");
    let refusal = RpcError::server_error("too many connections");
    let mut c = Connection::new("t".into(), LIMITS, Admission::Refused(refusal), None);
    let replies = json_lines(&mut c, &[batch.as_bytes()]);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["error"]["message"], "too many connections");
    assert!(c.is_closing());

    let mut c = Connection::new("t".into(), LIMITS, Admission::Open, Some("s".into()));
    let replies = json_lines(&mut c, &[batch.as_bytes()]);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(replies[0].is_object());
    assert_eq!(replies[0]["error"]["message"], "authentication required");
}

#[test]
fn a_request_of_too_many_values_is_refused_with_its_id() {
    let limits = Limits {
        max_values: 100,
        ..LIMITS
    };
    let params = vec!["0"; 200].join(",");
    let wide = format!(r#"{{"jsonrpc":"2.0","id":"w","method":"echo","params":[{params}]}}"#);
    let mut c = Connection::new("t".into(), limits, Admission::Open, None);
    let replies = json_lines(&mut c, &[wide.as_bytes()]);
    assert_eq!(replies[0]["id"], "w");
    assert_eq!(replies[0]["error"]["code"], -32600);
    assert!(!c.is_closing());

    // MessagePack: counted by the scanner, answered for the msgid.
    let msg = rmp_serde::to_vec(&(0, 9, "echo", vec![0u8; 200])).unwrap();
    let mut c = Connection::new("t".into(), limits, Admission::Open, None);
    let mut engine = Echo::default();
    c.receive(&msg, &mut engine, 1);
    assert_eq!(engine.calls, 0);
    let reply: (u8, u32, (i64, String), ()) = rmp_serde::from_slice(c.output()).unwrap();
    assert_eq!((reply.1, reply.2.0), (9, -32600));
}

#[test]
fn notifications_and_notification_batches_produce_no_bytes() {
    let mut c = conn();
    let replies = json_lines(&mut c, &[b"{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":[1]}[{\"jsonrpc\":\"2.0\",\"method\":\"nope\"},{\"jsonrpc\":\"2.0\",\"method\":\"echo\"}]"]);
    assert!(replies.is_empty());
    assert!(c.output().is_empty());
}

#[test]
fn a_refused_connection_closes_after_a_bad_content_length_body_too() {
    // Found by fuzzing: this path used to answer and stay open.
    let refusal = RpcError::server_error("too many connections");
    let mut c = Connection::new("t".into(), LIMITS, Admission::Refused(refusal), None);
    let mut engine = Echo::default();
    c.receive(b"Content-Length: 1\r\n\r\nx", &mut engine, 1);
    assert!(c.is_closing());
    assert_eq!(c.pending_input(), 0);
}

#[test]
fn events_past_the_queue_are_dropped_counted_and_told() {
    use crate::bus::DaemonEvent;
    use crate::rpc::ConnectionId;
    use crate::socket::subscribers::Subscribers;
    let mut c = conn();
    json_lines(
        &mut c,
        &[br#"{"jsonrpc":"2.0","method":"echo","params":[1],"id":1}"#],
    );
    let mut subs = Subscribers::default();
    subs.subscribe(ConnectionId::new(crate::reactor::Token(1)), &["*".into()])
        .unwrap();
    for _ in 0..100 {
        subs.publish(&DaemonEvent::Ready);
    }
    let events = subs.take_published();
    let cap = 1000;
    let written = events.iter().filter(|e| c.push_event(e, 7, cap)).count();
    assert!(written > 0 && written < 100, "{written}");
    // Unsent output stays under the cap plus one event.
    assert!(c.output().len() < cap + 300, "{}", c.output().len());
    let n = c.output().len();
    c.consume_output(n);
    assert!(c.push_event(&events[0], 7, cap));
    let out = String::from_utf8(c.output().to_vec()).unwrap();
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["params"]["name"], "daemon.events.dropped");
    assert_eq!(lines[0]["params"]["subscription"], Value::Null);
    assert_eq!(lines[0]["params"]["data"]["dropped"], 100 - written as u64);
    assert_eq!(lines[1]["params"]["subscription"], 7);
    // A closing connection takes no event.
    c.hangup();
    assert!(!c.push_event(&events[0], 7, cap));
}
