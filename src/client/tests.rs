use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::UNIX_EPOCH;

use serde_json::json;

use super::*;

/// A socket in a temp dir of its own, removed on drop.
struct Sock {
    dir: PathBuf,
    address: Address,
}

impl Drop for Sock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sock() -> Sock {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("daimon-client-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let address = Address::Unix(dir.join("s.sock"));
    Sock { dir, address }
}

/// Serves one connection: for each exchange, reads that many request bytes and writes
/// the canned reply; then waits for the client to close. Returns all request bytes.
fn serve(exchanges: Vec<(usize, Vec<u8>)>) -> (Sock, JoinHandle<Vec<u8>>) {
    let sock = sock();
    let listener = UnixListener::bind(sock.address.unix_path().unwrap()).unwrap();
    let handle = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut requests = Vec::new();
        for (len, reply) in exchanges {
            let mut request = vec![0; len];
            stream.read_exact(&mut request).unwrap();
            requests.extend_from_slice(&request);
            stream.write_all(&reply).unwrap();
        }
        let _ = stream.read_to_end(&mut requests);
        requests
    });
    (sock, handle)
}

fn client(sock: &Sock, protocol: Protocol) -> Client {
    Client::connect_with(&sock.address, protocol, Duration::from_secs(5)).unwrap()
}

/// Runs `f` on a client of `protocol` against a server answering `exchanges`, and
/// returns what the server received.
fn exchange(
    protocol: Protocol,
    exchanges: Vec<(usize, Vec<u8>)>,
    f: impl FnOnce(&mut Client),
) -> Vec<u8> {
    let (sock, server) = serve(exchanges);
    let mut c = client(&sock, protocol);
    f(&mut c);
    drop(c);
    server.join().unwrap()
}

/// A reader that hands out one byte per read.
struct ByteByByte<'a>(&'a [u8]);

impl Read for ByteByByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((&b, rest)), Some(slot)) => {
                *slot = b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

fn rpc(e: Error) -> (i64, String, Option<Value>) {
    match e {
        Error::Rpc {
            code,
            message,
            data,
        } => (code, message, data),
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

fn io_kind(e: &Error) -> ErrorKind {
    match e {
        Error::Io(e) => e.kind(),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn json_calls_are_byte_exact() {
    let first =
        b"{\"jsonrpc\":\"2.0\",\"method\":\"examples.echo\",\"params\":[\"hi\"],\"id\":1}\n";
    let second = b"{\"jsonrpc\":\"2.0\",\"method\":\"system.listMethods\",\"id\":2}\n";
    let third = b"{\"jsonrpc\":\"2.0\",\"method\":\"n\",\"params\":{\"a\":1}}\n";
    let sent = exchange(
        Protocol::Json,
        vec![
            (
                first.len(),
                b"{\"jsonrpc\":\"2.0\",\"result\":\"hi\",\"id\":1}\n".to_vec(),
            ),
            (
                second.len(),
                b"\n{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":[\"a\"]}\n".to_vec(),
            ),
        ],
        |c| {
            assert_eq!(c.protocol(), Protocol::Json);
            assert_eq!(c.call("examples.echo", json!(["hi"])).unwrap(), "hi");
            assert_eq!(
                c.call("system.listMethods", Value::Null).unwrap(),
                json!(["a"])
            );
            c.notify("n", json!({"a": 1})).unwrap();
        },
    );
    assert_eq!(sent, [&first[..], second, third].concat());
}

#[test]
fn content_length_call_is_byte_exact() {
    let body = br#"{"jsonrpc":"2.0","method":"examples.echo","params":["hi"],"id":1}"#;
    let request = [
        format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
        body,
    ]
    .concat();
    let reply = br#"{"jsonrpc":"2.0","result":"hi","id":1}"#;
    let reply = [
        format!(
            "content-length: {}\r\nContent-Type: application/json\r\n\r\n",
            reply.len()
        )
        .as_bytes(),
        reply,
    ]
    .concat();
    let sent = exchange(Protocol::ContentLength, vec![(request.len(), reply)], |c| {
        assert_eq!(c.call("examples.echo", json!("hi")).unwrap(), "hi");
    });
    assert_eq!(sent, request);
}

#[test]
fn msgpack_calls_are_byte_exact() {
    let first = [
        &[0x94, 0x00, 0x00, 0xad][..],
        b"examples.echo",
        &[0x91, 0xa2],
        b"hi",
    ]
    .concat();
    let second = [0x94, 0x00, 0x01, 0xa1, b'm', 0x81, 0xa1, b'a', 0x01];
    let notification = [0x93, 0x02, 0xa1, b'n', 0x90];
    let reply_1 = [0x94, 0x01, 0x00, 0xc0, 0xa2, b'h', b'i'].to_vec();
    let reply_2 = rmp_serde::to_vec(&(1, 1, (-32601, "Method not found"), ())).unwrap();
    let sent = exchange(
        Protocol::MessagePack,
        vec![(first.len(), reply_1), (second.len(), reply_2)],
        |c| {
            assert_eq!(c.call("examples.echo", json!(["hi"])).unwrap(), "hi");
            let (code, message, data) = rpc(c.call("m", json!({"a": 1})).unwrap_err());
            assert_eq!(
                (code, message.as_str(), data),
                (-32601, "Method not found", None)
            );
            c.notify("n", Value::Null).unwrap();
        },
    );
    assert_eq!(sent, [&first[..], &second, &notification].concat());
}

#[test]
fn error_replies_carry_code_message_and_data() {
    let reply = br#"{"jsonrpc":"2.0","error":{"code":-32602,"message":"Invalid params","data":"string examples.echo(string)"},"id":1}
{"jsonrpc":"2.0","result":true,"id":2}
"#;
    let (first, second) = reply.split_at(reply.iter().position(|&b| b == b'\n').unwrap() + 1);
    let req_1 = br#"{"jsonrpc":"2.0","method":"examples.echo","params":[5],"id":1}"#.len() + 1;
    let req_2 = br#"{"jsonrpc":"2.0","method":"system.auth","params":["s"],"id":2}"#.len() + 1;
    exchange(
        Protocol::Json,
        vec![(req_1, first.to_vec()), (req_2, second.to_vec())],
        |c| {
            let e = c.call("examples.echo", json!([5])).unwrap_err();
            assert_eq!(
                e.to_string(),
                "Invalid params (-32602): string examples.echo(string)"
            );
            let (code, message, data) = rpc(e);
            assert_eq!(code, -32602);
            assert_eq!(message, "Invalid params");
            assert_eq!(data, Some(json!("string examples.echo(string)")));
            // The connection stays usable after an error reply.
            c.auth("s").unwrap();
        },
    );
}

#[test]
fn msgpack_error_as_a_map_and_null_msgid() {
    let reply = rmp_serde::to_vec_named(&(
        1,
        (),
        json!({"code": -32000, "message": "too many connections"}),
        (),
    ))
    .unwrap();
    exchange(Protocol::MessagePack, vec![(1, reply)], |c| {
        let (code, message, _) = rpc(c.call("x", Value::Null).unwrap_err());
        assert_eq!((code, message.as_str()), (-32000, "too many connections"));
    });
}

#[test]
fn id_mismatch_is_a_protocol_error_and_breaks_the_connection() {
    let reply = b"{\"jsonrpc\":\"2.0\",\"result\":\"hi\",\"id\":7}\n".to_vec();
    exchange(Protocol::Json, vec![(1, reply)], |c| {
        let e = c.call("examples.echo", json!(["hi"])).unwrap_err();
        assert!(
            matches!(&e, Error::Protocol(m) if m.contains("id 7")),
            "{e:?}"
        );
        let e = c.call("examples.echo", json!(["hi"])).unwrap_err();
        assert_eq!(io_kind(&e), ErrorKind::NotConnected);
        assert!(e.to_string().contains("connect again"), "{e}");
    });
    let reply = rmp_serde::to_vec(&(1, 3, (), "hi")).unwrap();
    exchange(Protocol::MessagePack, vec![(1, reply)], |c| {
        let e = c.call("examples.echo", json!(["hi"])).unwrap_err();
        assert!(
            matches!(&e, Error::Protocol(m) if m.contains("id 3")),
            "{e:?}"
        );
    });
}

#[test]
fn malformed_replies_are_protocol_errors() {
    for reply in [
        &b"not json\n"[..],
        b"[1,2]\n",
        b"{\"jsonrpc\":\"2.0\",\"id\":1}\n",
        b"{\"jsonrpc\":\"2.0\",\"error\":{\"code\":\"x\"},\"id\":1}\n",
    ] {
        exchange(Protocol::Json, vec![(1, reply.to_vec())], |c| {
            let e = c.call("m", Value::Null).unwrap_err();
            assert!(matches!(e, Error::Protocol(_)), "{reply:?}: {e:?}");
        });
    }
    for reply in [
        vec![0xc1],
        vec![0x93, 1, 0, 0xc0],
        vec![0xdb, 0xff, 0xff, 0xff, 0xff],
    ] {
        exchange(Protocol::MessagePack, vec![(1, reply.clone())], |c| {
            let e = c.call("m", Value::Null).unwrap_err();
            assert!(matches!(e, Error::Protocol(_)), "{reply:?}: {e:?}");
        });
    }
    let huge = b"Content-Length: 999999999\r\n\r\n".to_vec();
    exchange(Protocol::ContentLength, vec![(1, huge)], |c| {
        let e = c.call("m", Value::Null).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    });
}

#[test]
fn a_silent_daemon_times_out_in_bounded_time() {
    exchange(Protocol::Json, vec![(1, Vec::new())], |c| {
        c.set_timeout(Duration::from_millis(200));
        let started = Instant::now();
        let e = c.call("examples.echo", json!(["hi"])).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(io_kind(&e), ErrorKind::TimedOut);
        assert!(e.to_string().contains("examples.echo"), "{e}");
    });
}

#[test]
fn a_closed_connection_is_unexpected_eof() {
    let s = sock();
    let listener = UnixListener::bind(s.address.unix_path().unwrap()).unwrap();
    let mut c = client(&s, Protocol::MessagePack);
    drop(listener.accept().unwrap());
    let e = c.call("m", Value::Null).unwrap_err();
    assert!(
        matches!(
            io_kind(&e),
            ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe
        ),
        "{e}"
    );
}

#[test]
fn connecting_to_nothing_names_the_address() {
    let s = sock();
    let e = Client::connect(&s.address.to_string()).unwrap_err();
    assert_eq!(io_kind(&e), ErrorKind::NotFound);
    assert!(e.to_string().contains(&s.address.to_string()), "{e}");
    assert!(matches!(
        Client::connect("nope://x"),
        Err(Error::Config { .. })
    ));
}

#[test]
fn msgpack_frames_are_found_byte_by_byte() {
    let values = [
        json!(null),
        json!([
            1,
            -1,
            300,
            -300,
            70000,
            -70000,
            5_000_000_000_u64,
            1.5,
            true
        ]),
        json!({"a": [{}, []], "b": "x".repeat(40), "c": "y".repeat(300)}),
        json!("z".repeat(70000)),
        json!((0..20).collect::<Vec<_>>()),
    ];
    let mut stream = Vec::new();
    for v in &values {
        stream.extend(rmp_serde::to_vec(v).unwrap());
    }
    stream.extend([0xc4, 2, 0xff, 0x00, 0xd6, 0xff, 0, 0, 0, 1]);
    let mut reader = ByteByByte(&stream[..]);
    let mut framer = Framer::new(Protocol::MessagePack);
    for v in &values {
        let frame = framer.read(&mut reader).unwrap();
        let got = crate::rpc::msgpack::decode_value(&frame).unwrap();
        assert_eq!(&got, v);
    }
    let frame = framer.read(&mut reader).unwrap();
    let got = crate::rpc::msgpack::decode_value(&frame).unwrap();
    assert_eq!(got, "/wA=");
    // A timestamp ext: framed whole even though it does not decode to JSON.
    let frame = framer.read(&mut reader).unwrap();
    assert_eq!(frame.len(), 6);
    let e = framer.read(&mut reader).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
}

mod events;
