//! Many clients at once against a real daemon (the `echo_daemon` example): every reply goes to
//! the client that asked, with its id, in its own protocol, and none is lost.
//!
//! The clients talk raw bytes over unix connections, every read bounded by a timeout.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use common::{Foreground, TestDir, path_str};
use serde_json::{Value, json};

/// Long-lived clients, each making [`CALLS`] calls on one connection.
const CLIENTS: usize = 200;
const CALLS: usize = 50;
/// Short-lived clients, each making [`ROUNDS`] calls, one per connection.
const CHURNERS: usize = 20;
const ROUNDS: usize = 20;

/// How long one read may wait for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The whole run should take a few seconds; this bound only catches a pathology.
const RUN_BOUND: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
enum Protocol {
    Json,
    MessagePack,
}

/// One raw client connection.
struct Client {
    reader: BufReader<UnixStream>,
    protocol: Protocol,
}

impl Client {
    fn connect(socket: &Path, protocol: Protocol) -> Client {
        let stream = UnixStream::connect(socket).expect("connecting to the daemon");
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .expect("a read timeout");
        Client {
            reader: BufReader::new(stream),
            protocol,
        }
    }

    /// Calls `method(params)` with `id` and returns the result, asserting the reply is a
    /// success that carries `id`.
    fn call(&mut self, id: u32, method: &str, params: Value) -> Value {
        let what = format!("{:?} call {id} of {method}{params}", self.protocol);
        match self.protocol {
            Protocol::Json => {
                let request =
                    json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id});
                let mut line = request.to_string();
                line.push('\n');
                self.send(line.as_bytes());
                let mut line = String::new();
                self.reader
                    .read_line(&mut line)
                    .unwrap_or_else(|e| panic!("{what}: reading the reply: {e}"));
                let mut reply: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("{what}: reply {line:?}: {e}"));
                assert_eq!(reply["id"], id, "{what}: {reply}");
                assert!(reply.get("error").is_none(), "{what}: {reply}");
                reply["result"].take()
            }
            Protocol::MessagePack => {
                let request = rmp_serde::to_vec(&(0, id, method, &params)).expect("encoding");
                self.send(&request);
                let mut reply: Value = rmp_serde::from_read(&mut self.reader)
                    .unwrap_or_else(|e| panic!("{what}: reading the reply: {e}"));
                assert_eq!(reply[0], 1, "{what}: {reply}");
                assert_eq!(reply[1], id, "{what}: {reply}");
                assert_eq!(reply[2], Value::Null, "{what}: {reply}");
                reply[3].take()
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("sending");
    }

    /// `examples.echo(message)`, asserting it comes back.
    fn echo(&mut self, id: u32, message: &str) {
        let result = self.call(id, "examples.echo", json!([message]));
        assert_eq!(result, message, "{:?} call {id}", self.protocol);
    }
}

fn protocol_of(client: usize) -> Protocol {
    if client % 2 == 0 {
        Protocol::Json
    } else {
        Protocol::MessagePack
    }
}

#[test]
fn hundreds_of_clients_each_get_their_own_replies() {
    let dir = TestDir::new();
    let file = dir.write_config("config.json", &json!({"socketmaxconnections": 256}));
    let mut args = vec!["-f".to_string(), "--config".into(), path_str(&file)];
    args.extend(dir.std_args());
    let mut daemon = Foreground::spawn(&dir, &args);
    daemon.wait_ready_std(&dir);

    let socket = dir.socket();
    let start = Barrier::new(CLIENTS + CHURNERS);
    let started = Instant::now();
    thread::scope(|scope| {
        for client in 0..CLIENTS {
            let (socket, start) = (&socket, &start);
            scope.spawn(move || {
                start.wait();
                let mut conn = Client::connect(socket, protocol_of(client));
                for i in 0..CALLS {
                    conn.echo(i as u32, &format!("c{client}-{i}"));
                }
            });
        }
        for churner in 0..CHURNERS {
            let (socket, start) = (&socket, &start);
            scope.spawn(move || {
                start.wait();
                for round in 0..ROUNDS {
                    let mut conn = Client::connect(socket, protocol_of(churner));
                    conn.echo(round as u32, &format!("x{churner}-{round}"));
                }
            });
        }
    });
    let took = started.elapsed();
    assert!(took < RUN_BOUND, "{} calls took {took:?}", CLIENTS * CALLS);

    let status = Client::connect(&socket, Protocol::Json).call(0, "daemon.status", json!([]));
    let calls = status["calls"]
        .as_u64()
        .unwrap_or_else(|| panic!("{status}"));
    let made = (CLIENTS * CALLS + CHURNERS * ROUNDS) as u64;
    assert!(
        calls >= made,
        "daemon.status counts {calls} calls, {made} were made"
    );
    assert!(daemon.try_status().is_none(), "{}", daemon.stderr());
}
