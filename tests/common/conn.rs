//! A raw client connection for the socket tests: bytes out, replies in, in each of the three
//! framings, every read bounded by a deadline; and the requests and assertions they share.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::{DEADLINE, Foreground, TestDir, free_tcp_port, path_str, wait_until};
use serde_json::{Value, json};

/// How long a read may wait for a reply before the test fails.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The bound on "closed within a bounded time" for the sub-second timeouts used here.
pub const CLOSE_BOUND: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// Helpers

/// A socket a [`Conn`] can run over.
pub trait Stream: Read + Write {
    fn set_timeout(&self, timeout: Duration);
}

impl Stream for UnixStream {
    fn set_timeout(&self, timeout: Duration) {
        self.set_read_timeout(Some(timeout))
            .expect("a read timeout");
    }
}

impl Stream for TcpStream {
    fn set_timeout(&self, timeout: Duration) {
        self.set_read_timeout(Some(timeout))
            .expect("a read timeout");
    }
}

/// A raw client connection: bytes out, replies in (in one of the three framings), every
/// read bounded by [`REPLY_TIMEOUT`] unless said otherwise.
pub struct Conn<S: Stream> {
    pub reader: BufReader<S>,
}

impl<S: Stream> Conn<S> {
    pub fn new(stream: S) -> Self {
        stream.set_timeout(REPLY_TIMEOUT);
        Conn {
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("sending");
    }

    /// One newline-terminated JSON reply.
    pub fn json(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("reading a reply");
        assert!(line.ends_with('\n'), "no complete reply line: {line:?}");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?}: {e}"))
    }

    /// One MessagePack reply.
    pub fn msgpack(&mut self) -> Value {
        rmp_serde::from_read(&mut self.reader).expect("a MessagePack reply")
    }

    /// One reply in Content-Length framing.
    pub fn content_length(&mut self) -> Value {
        let mut header = String::new();
        self.reader.read_line(&mut header).expect("a reply header");
        let len: usize = header
            .strip_prefix("Content-Length: ")
            .and_then(|h| h.strip_suffix("\r\n"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a Content-Length header: {header:?}"));
        let mut blank = String::new();
        self.reader.read_line(&mut blank).expect("the blank line");
        assert_eq!(blank, "\r\n", "after {header:?}");
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).expect("a reply body");
        serde_json::from_slice(&body).expect("a JSON reply body")
    }

    /// `examples.echo(message)` in JSON-RPC; asserts the reply echoes it with the id.
    pub fn echo(&mut self, message: &str, id: u64) {
        self.send(&request("examples.echo", json!([message]), id));
        let reply = self.json();
        assert_eq!(reply["id"], id, "{reply}");
        assert_eq!(reply["result"], message, "{reply}");
    }

    /// Reads until the daemon closes the connection (end of file, or a reset) and returns
    /// how long that took and how many bytes came first.
    ///
    /// # Panics
    ///
    /// If it is still open after `limit`.
    pub fn wait_closed(&mut self, limit: Duration) -> (Duration, usize) {
        let start = Instant::now();
        let mut skipped = 0;
        let mut buf = [0; 64 * 1024];
        loop {
            let left = limit.saturating_sub(start.elapsed());
            assert!(
                !left.is_zero(),
                "the connection is still open after {limit:?}"
            );
            self.reader.get_ref().set_timeout(left);
            match self.reader.read(&mut buf) {
                Ok(0) => return (start.elapsed(), skipped),
                Ok(n) => skipped += n,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    return (start.elapsed(), skipped);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    panic!("the connection is still open after {limit:?}")
                }
                Err(e) => panic!("reading until the connection closes: {e}"),
            }
        }
    }

    /// [`Conn::wait_closed`], asserting nothing more came before the end.
    pub fn assert_closed(&mut self, limit: Duration) -> Duration {
        let (took, skipped) = self.wait_closed(limit);
        assert_eq!(skipped, 0, "{skipped} unexpected bytes before the end");
        took
    }

    /// Asserts nothing arrives and the connection stays open for `period`.
    pub fn assert_quiet_for(&mut self, period: Duration) {
        self.reader.get_ref().set_timeout(period);
        let mut byte = [0];
        match self.reader.read(&mut byte) {
            Err(e) if is_timeout(&e) => {}
            Ok(0) => panic!("the connection was closed within {period:?}"),
            other => panic!("expected silence for {period:?}, got {other:?}"),
        }
        self.reader.get_ref().set_timeout(REPLY_TIMEOUT);
    }
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// A JSON-RPC request, newline-terminated.
pub fn request(method: &str, params: Value, id: u64) -> Vec<u8> {
    let mut line = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id})
        .to_string()
        .into_bytes();
    line.push(b'\n');
    line
}

/// `examples.echo` in JSON-RPC, its message padded so the request is exactly `size` bytes
/// (without its newline); returns the request and the message.
pub fn sized_request(size: usize) -> (Vec<u8>, String) {
    let overhead = request("examples.echo", json!([""]), 1).len() - 1;
    let message = "x".repeat(size - overhead);
    let request = request("examples.echo", json!([message]), 1);
    assert_eq!(request.len(), size + 1);
    (request, message)
}

/// A MessagePack-RPC request `[0, msgid, method, params]`.
pub fn msgpack_request(msgid: u32, method: &str, params: Value) -> Vec<u8> {
    rmp_serde::to_vec(&(0, msgid, method, params)).expect("encoding a request")
}

/// Asserts `reply` is a JSON-RPC error with `code`, `message` and `id`.
pub fn assert_json_error(reply: &Value, code: i64, message: &str, id: Value) {
    assert_eq!(reply["jsonrpc"], "2.0", "{reply}");
    assert_eq!(reply["error"]["code"], code, "{reply}");
    assert_eq!(reply["error"]["message"], message, "{reply}");
    assert_eq!(reply["id"], id, "{reply}");
}

/// Asserts `reply` is a MessagePack-RPC error response `[1, msgid, [code, _], nil]` and
/// returns its message.
pub fn assert_msgpack_error(reply: &Value, msgid: Value, code: i64) -> String {
    assert_eq!(reply[0], 1, "{reply}");
    assert_eq!(reply[1], msgid, "{reply}");
    assert_eq!(reply[2][0], code, "{reply}");
    assert_eq!(reply[3], Value::Null, "{reply}");
    assert_eq!(reply.as_array().map(Vec::len), Some(4), "{reply}");
    reply[2][1]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {reply}"))
        .to_string()
}

/// Starts a foreground daemon with `config` on the test dir's standard paths.
pub fn start(dir: &TestDir, config: Value) -> Foreground {
    let file = path_str(&dir.write_config("config.json", &config));
    Foreground::start(dir, &["--config", &file])
}

/// Starts a foreground daemon with `config` on a tcp port of 127.0.0.1.
pub fn start_tcp(dir: &TestDir, config: Value) -> (Foreground, u16) {
    let file = dir.write_config("config.json", &config);
    let port = free_tcp_port();
    let args = [
        "-f".to_string(),
        "--config".into(),
        path_str(&file),
        "--pidfile".into(),
        path_str(&dir.pidfile()),
        "--socket".into(),
        format!("tcp://127.0.0.1:{port}"),
    ];
    let mut daemon = Foreground::spawn(dir, &args);
    let want = format!("{}\n", daemon.pid());
    wait_until("the daemon to be ready on tcp", DEADLINE, || {
        if let Some(status) = daemon.try_status() {
            panic!("the daemon exited ({status}); stderr: {}", daemon.stderr());
        }
        std::fs::read_to_string(dir.pidfile()).is_ok_and(|s| s == want)
            && TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (daemon, port)
}

pub fn unix(dir: &TestDir) -> Conn<UnixStream> {
    Conn::new(UnixStream::connect(dir.socket()).expect("connecting to the daemon"))
}

pub fn tcp(port: u16) -> Conn<TcpStream> {
    Conn::new(TcpStream::connect(("127.0.0.1", port)).expect("connecting to the daemon"))
}

/// Asserts the daemon serves a new client.
pub fn assert_serves(dir: &TestDir) {
    unix(dir).echo("still serving", 99);
}
