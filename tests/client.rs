//! `daimon::Client` against a real daemon, the `echo_daemon` example, in each of the three
//! protocols: calls, notifications, error replies, timeouts, a daemon that goes away.
//!
//! Every test has its own temp dir and daemon, killed when the test ends.

mod common;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{DEADLINE, Foreground, TestDir, free_tcp_port, read_pid, unix_addr, wait_until};
use daimon::client::{Client, Protocol};
use daimon::socket::Address;
use daimon::{Error, Result};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const PROTOCOLS: [Protocol; 3] = [
    Protocol::Json,
    Protocol::ContentLength,
    Protocol::MessagePack,
];

fn address(dir: &TestDir) -> Address {
    unix_addr(&dir.socket()).parse().expect("a valid address")
}

fn connect(dir: &TestDir, protocol: Protocol) -> Client {
    Client::connect_with(&address(dir), protocol, Duration::from_secs(5)).expect("connecting")
}

/// The code, message and data of an RPC error.
fn rpc_error<T: std::fmt::Debug>(result: Result<T>) -> (i64, String, Option<Value>) {
    match result {
        Err(Error::Rpc {
            code,
            message,
            data,
        }) => (code, message, data),
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

fn io_kind<T: std::fmt::Debug>(result: Result<T>) -> ErrorKind {
    match result {
        Err(Error::Io(e)) => e.kind(),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn echo_in_every_protocol() {
    let dir = TestDir::new();
    let _daemon = Foreground::start(&dir, &[]);
    for protocol in PROTOCOLS {
        let mut client = connect(&dir, protocol);
        assert_eq!(client.protocol(), protocol);
        for _ in 0..3 {
            let reply = client.call("examples.echo", json!(["hello"])).unwrap();
            assert_eq!(reply, "hello", "{protocol:?}");
        }
        let reply = client
            .call("examples.echo", json!({"message": "named"}))
            .unwrap();
        assert_eq!(reply, "named", "{protocol:?}");
        let unicode = "h\u{e9}llo \u{1f600}\n\"quoted\"";
        let reply = client.call("examples.echo", json!([unicode])).unwrap();
        assert_eq!(reply, unicode, "{protocol:?}");
    }
}

#[test]
fn introspection_in_every_protocol() {
    let dir = TestDir::new();
    let daemon = Foreground::start(&dir, &[]);
    for protocol in PROTOCOLS {
        let mut client = connect(&dir, protocol);
        let methods = client.call("system.listMethods", Value::Null).unwrap();
        for name in ["examples.echo", "system.listMethods", "daemon.status"] {
            assert!(
                methods.as_array().unwrap().contains(&json!(name)),
                "{protocol:?}: {name} missing from {methods}"
            );
        }
        let help = client
            .call("system.methodHelp", json!(["examples.echo"]))
            .unwrap();
        assert_eq!(help, "I'm here to reply your data", "{protocol:?}");
        let signatures = client
            .call("system.methodSignature", json!(["examples.echo"]))
            .unwrap();
        assert_eq!(signatures, json!([["string", "string"]]), "{protocol:?}");
        let status = client.call("daemon.status", Value::Null).unwrap();
        assert_eq!(status["pid"], daemon.pid(), "{protocol:?}: {status}");
    }
}

#[test]
fn error_replies_in_every_protocol_keep_the_connection() {
    let dir = TestDir::new();
    let _daemon = Foreground::start(&dir, &[]);
    for protocol in PROTOCOLS {
        let mut client = connect(&dir, protocol);
        let (code, message, _) = rpc_error(client.call("examples.nope", Value::Null));
        assert_eq!(code, -32601, "{protocol:?}");
        if protocol == Protocol::MessagePack {
            // [code, message] has no data: the detail follows the message (PROTOCOL.md).
            assert_eq!(message, "Method not found: no method named 'examples.nope'");
        } else {
            assert_eq!(message, "Method not found", "{protocol:?}");
        }
        let (code, message, data) = rpc_error(client.call("examples.echo", json!([5])));
        assert_eq!(code, -32602, "{protocol:?}");
        // The accepted signatures: in data, or after the message in MessagePack.
        let detail = data.map(|d| d.to_string()).unwrap_or(message);
        assert!(
            detail.contains("string examples.echo(string message)"),
            "{protocol:?}: {detail}"
        );
        let reply = client.call("examples.echo", json!(["still here"])).unwrap();
        assert_eq!(reply, "still here", "{protocol:?}");
    }
}

#[test]
fn notifications_get_no_reply_in_every_protocol() {
    let dir = TestDir::new();
    let _daemon = Foreground::start(&dir, &[]);
    for protocol in PROTOCOLS {
        let mut client = connect(&dir, protocol);
        client.notify("examples.echo", json!(["ignored"])).unwrap();
        client.notify("examples.nope", Value::Null).unwrap();
        // Had either notification been answered, this reply would carry the wrong id.
        let reply = client.call("examples.echo", json!(["after"])).unwrap();
        assert_eq!(reply, "after", "{protocol:?}");
    }
}

#[test]
fn auth_over_unix_is_accepted() {
    let dir = TestDir::new();
    let _daemon = Foreground::start(&dir, &[]);
    for protocol in PROTOCOLS {
        let mut client = connect(&dir, protocol);
        client.auth("anything").unwrap();
        assert_eq!(client.call("examples.echo", json!(["ok"])).unwrap(), "ok");
    }
}

#[test]
fn connect_parses_the_address_and_speaks_json() {
    let dir = TestDir::new();
    let _daemon = Foreground::start(&dir, &[]);
    let mut client = Client::connect(&unix_addr(&dir.socket())).unwrap();
    assert_eq!(client.protocol(), Protocol::Json);
    assert_eq!(client.call("examples.echo", json!(["hi"])).unwrap(), "hi");
    assert!(matches!(
        Client::connect("daemon.sock"),
        Err(Error::Config { .. })
    ));
}

#[test]
fn tcp_in_every_protocol() {
    let dir = TestDir::new();
    let port = free_tcp_port();
    let socket = format!("tcp://127.0.0.1:{port}");
    let pidfile = common::path_str(&dir.pidfile());
    let config =
        common::path_str(&dir.write_config("tcp.json", &json!({"socketsecret": "s3cret"})));
    let mut daemon = Foreground::spawn(
        &dir,
        &[
            "-f",
            "--config",
            config.as_str(),
            "--pidfile",
            pidfile.as_str(),
            "--socket",
            socket.as_str(),
        ],
    );
    wait_until("the tcp daemon to accept", DEADLINE, || {
        assert!(
            daemon.try_status().is_none(),
            "the daemon exited: {}",
            daemon.stderr()
        );
        read_pid(&dir.pidfile()) == Some(daemon.pid())
            && TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let address: Address = socket.parse().unwrap();
    for protocol in PROTOCOLS {
        let mut client = Client::connect_with(&address, protocol, Duration::from_secs(5)).unwrap();
        client.auth("s3cret").unwrap();
        assert_eq!(client.call("examples.echo", json!(["tcp"])).unwrap(), "tcp");
    }
}

#[test]
fn a_stopped_daemon_times_out() {
    let dir = TestDir::new();
    let daemon = Foreground::start(&dir, &[]);
    for protocol in PROTOCOLS {
        let mut client = connect(&dir, protocol);
        // The first call makes sure the connection is accepted before the daemon stops.
        assert_eq!(client.call("examples.echo", json!(["up"])).unwrap(), "up");
        daemon.signal(Signal::SIGSTOP);
        client.set_timeout(Duration::from_millis(300));
        let started = Instant::now();
        let result = client.call("examples.echo", json!(["down"]));
        let elapsed = started.elapsed();
        daemon.signal(Signal::SIGCONT);
        let message = format!("{result:?}");
        assert_eq!(io_kind(result), ErrorKind::TimedOut, "{protocol:?}");
        assert!(message.contains("examples.echo"), "{message}");
        assert!(
            elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
            "{protocol:?}: timed out after {elapsed:?}"
        );
        // The late reply would be out of step: the client refuses further calls.
        assert_eq!(
            io_kind(client.call("examples.echo", json!(["again"]))),
            ErrorKind::NotConnected
        );
    }
}

#[test]
fn after_shutdown_calls_fail_with_io_errors() {
    let dir = TestDir::new();
    let mut daemon = Foreground::start(&dir, &[]);
    let mut client = connect(&dir, Protocol::MessagePack);
    assert_eq!(client.call("daemon.shutdown", Value::Null).unwrap(), 0);
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "stderr: {}", daemon.stderr());
    let kind = io_kind(client.call("examples.echo", json!(["gone"])));
    assert!(
        matches!(
            kind,
            ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
        ),
        "{kind:?}"
    );
    let kind = io_kind(Client::connect(&unix_addr(&dir.socket())));
    assert!(
        matches!(kind, ErrorKind::NotFound | ErrorKind::ConnectionRefused),
        "{kind:?}"
    );
}
