//! The control socket against clients that try to lock everyone else out, or to wear the
//! daemon down: slow requests, idle unauthenticated connections, connection churn, running
//! out of descriptors, guessing the secret. Each case runs a real daemon (the `echo_daemon`
//! example) on a unix socket or a loopback tcp port, asserts it survives and serves a good
//! client, and kills it at the end whatever happens.
//!
//! Every wait is bounded polling; the only fixed pauses are the attackers' own pacing.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::conn::start_tcp;
use common::{DEADLINE, Foreground, TestDir, free_tcp_port, path_str, wait_until};
use serde_json::{Value, json};

/// How long a read may wait for a reply before the test fails.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

fn request(method: &str, params: Value, id: u64) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(&json!({
        "jsonrpc": "2.0", "method": method, "params": params, "id": id,
    }))
    .unwrap();
    bytes.push(b'\n');
    bytes
}

/// Reads one reply line; `None` on end of file or a reset.
fn reply<R: Read>(reader: &mut BufReader<R>) -> Option<Value> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => None,
        Ok(_) => Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => None,
        Err(e) => panic!("reading a reply: {e}"),
    }
}

/// Sends one call on a fresh unix connection and returns the reply.
fn call_unix(dir: &TestDir, method: &str, params: Value) -> Value {
    let stream = UnixStream::connect(dir.socket()).expect("connecting");
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    (&stream).write_all(&request(method, params, 1)).unwrap();
    reply(&mut BufReader::new(stream)).expect("a reply")
}

fn echo_result(reply: &Value) -> Option<&str> {
    reply["result"].as_str()
}

fn start(dir: &TestDir, config: Value) -> Foreground {
    let file = path_str(&dir.write_config("config.json", &config));
    Foreground::start(dir, &["--config", &file])
}

fn tcp(port: u16) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    BufReader::new(stream)
}

/// User plus system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: i32) -> i64 {
    common::proc_stat_field(pid, 14) + common::proc_stat_field(pid, 15)
}

// ---------------------------------------------------------------------------------------
// Deadlines that hold however the bytes trickle in

/// A connection that sends one byte of a valid request every 100 ms is dropped by the
/// deadline of the whole request, and a cap full of them does not lock out a good client.
#[test]
fn slowloris_is_dropped_by_the_whole_request_deadline() {
    let dir = TestDir::new();
    let daemon = start(
        &dir,
        json!({"sockettimeout": 0.5, "socketmaxconnections": 2}),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for _ in 0..2 {
        let stream = UnixStream::connect(dir.socket()).expect("connecting");
        let (stop, dropped) = (stop.clone(), dropped.clone());
        threads.push(thread::spawn(move || {
            let body = request("examples.echo", json!(["a slow one".repeat(10)]), 1);
            let started = Instant::now();
            for byte in &body[..body.len() - 1] {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(8) {
                    return;
                }
                if (&stream).write_all(std::slice::from_ref(byte)).is_err() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }));
    }
    wait_until(
        "both slow connections to be dropped",
        Duration::from_secs(6),
        || dropped.load(Ordering::Relaxed) == 2,
    );
    let reply = call_unix(&dir, "examples.echo", json!(["after the slow ones"]));
    assert_eq!(echo_result(&reply), Some("after the slow ones"), "{reply}");
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        daemon
            .stderr()
            .contains("request not complete within sockettimeout"),
        "{}",
        daemon.stderr()
    );
}

// ---------------------------------------------------------------------------------------
// Unauthenticated tcp connections

/// Idle connections that never authenticate cannot keep the administrator out: at the cap
/// the oldest unauthenticated one makes room, and each has a short deadline of its own.
#[test]
fn unauthenticated_connections_do_not_hold_the_slots() {
    let dir = TestDir::new();
    let (daemon, port) = start_tcp(
        &dir,
        json!({"socketsecret": "s3cret", "socketmaxconnections": 3, "socketauthtimeout": 1}),
    );
    // Three strangers, each admitted (a call tells "authentication required"), then idle.
    let idle: Vec<_> = (0..3)
        .map(|i| {
            let mut conn = tcp(port);
            conn.get_mut()
                .write_all(&request("examples.echo", json!(["let me in"]), i))
                .unwrap();
            let r = reply(&mut conn).expect("a reply");
            assert_eq!(r["error"]["message"], "authentication required", "{r}");
            conn
        })
        .collect();
    let mut admin = tcp(port);
    admin
        .get_mut()
        .write_all(&request("system.auth", json!(["s3cret"]), 1))
        .unwrap();
    let r = reply(&mut admin).expect("a reply to system.auth");
    assert_eq!(r["result"], true, "{r}");
    admin
        .get_mut()
        .write_all(&request("examples.echo", json!(["in"]), 2))
        .unwrap();
    let r = reply(&mut admin).expect("a reply to the call");
    assert_eq!(echo_result(&r), Some("in"), "{r}");
    // The others are closed by socketauthtimeout, well before socketidletimeout.
    for mut conn in idle {
        conn.get_ref()
            .set_read_timeout(Some(Duration::from_secs(4)))
            .unwrap();
        assert!(
            reply(&mut conn).is_none(),
            "an idle unauthenticated connection got a reply"
        );
    }
    // The authenticated administrator stays.
    admin
        .get_mut()
        .write_all(&request("examples.echo", json!(["still in"]), 3))
        .unwrap();
    let r = reply(&mut admin).expect("a reply after the others left");
    assert_eq!(echo_result(&r), Some("still in"), "{r}");
    drop(daemon);
}

/// A wrong secret is answered only after a fixed delay (so guesses are bounded by the cap
/// over the delay), and the daemon serves others meanwhile.
#[test]
fn a_wrong_secret_is_answered_late_and_others_are_served_meanwhile() {
    let dir = TestDir::new();
    let (_daemon, port) = start_tcp(&dir, json!({"socketsecret": "s3cret"}));
    let mut guesser = tcp(port);
    let sent = Instant::now();
    guesser
        .get_mut()
        .write_all(&request("system.auth", json!(["wrong"]), 1))
        .unwrap();
    // Meanwhile an administrator is served at once.
    let mut admin = tcp(port);
    admin
        .get_mut()
        .write_all(&request("system.auth", json!(["s3cret"]), 1))
        .unwrap();
    admin
        .get_mut()
        .write_all(&request("examples.echo", json!(["meanwhile"]), 2))
        .unwrap();
    assert_eq!(reply(&mut admin).expect("auth")["result"], true);
    let r = reply(&mut admin).expect("echo");
    assert_eq!(echo_result(&r), Some("meanwhile"), "{r}");
    let admin_done = sent.elapsed();
    let r = reply(&mut guesser).expect("the refusal");
    let waited = sent.elapsed();
    assert_eq!(r["error"]["message"], "authentication failed", "{r}");
    assert!(
        waited >= Duration::from_secs(1),
        "a wrong secret was answered after {waited:?}"
    );
    assert!(
        admin_done < waited,
        "the administrator waited for the guesser"
    );
    assert!(
        reply(&mut guesser).is_none(),
        "the guesser's connection stays open"
    );
}

/// Without socketsecret a tcp socket is refused unless the configuration accepts
/// unauthenticated local users in so many words, and then the daemon warns.
#[test]
fn tcp_without_a_secret_needs_the_explicit_key() {
    let dir = TestDir::new();
    let port = free_tcp_port();
    let args = |config: &std::path::Path| {
        vec![
            "-f".to_string(),
            "--config".into(),
            path_str(config),
            "--pidfile".into(),
            path_str(&dir.pidfile()),
            "--socket".into(),
            format!("tcp://127.0.0.1:{port}"),
        ]
    };
    let plain = dir.write_config("plain.json", &json!({}));
    dir.run(&args(&plain))
        .assert_code(1)
        .assert_stderr_has("socketsecret")
        .assert_stderr_has("socketallowunauthenticated");
    assert!(!dir.pidfile().exists(), "a refused start left a pid file");

    let (daemon, port) = start_tcp(&dir, json!({"socketallowunauthenticated": true}));
    let mut conn = tcp(port);
    conn.get_mut()
        .write_all(&request("examples.echo", json!(["open"]), 1))
        .unwrap();
    assert_eq!(echo_result(&reply(&mut conn).unwrap()), Some("open"));
    assert!(
        daemon.stderr().contains("without socketsecret"),
        "no warning: {}",
        daemon.stderr()
    );
}

// ---------------------------------------------------------------------------------------
// Connection churn

/// Clients that connect, call and close, never more than the cap open at once, are never
/// refused: connections already closed stop counting before an accept is refused.
#[test]
fn closed_connections_stop_counting_before_a_refusal() {
    let dir = TestDir::new();
    let _daemon = start(&dir, json!({"socketmaxconnections": 4}));
    let refused = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let socket = dir.socket();
            let refused = refused.clone();
            thread::spawn(move || {
                for i in 0..600 {
                    let stream = UnixStream::connect(&socket).expect("connecting");
                    stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
                    (&stream)
                        .write_all(&request("examples.echo", json!([format!("{t}-{i}")]), 1))
                        .unwrap();
                    let r = reply(&mut BufReader::new(&stream)).expect("a reply");
                    if r["error"]["message"] == "too many connections" {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(refused.load(Ordering::Relaxed), 0, "calls refused");
}

/// Thousands of short connections behind one long-lived one leave the daemon's memory flat:
/// the deadlines of closed connections are removed with them.
#[test]
fn connection_churn_keeps_memory_flat() {
    let dir = TestDir::new();
    let daemon = start(&dir, json!({"socketidletimeout": 600}));
    let long = UnixStream::connect(dir.socket()).expect("connecting");
    long.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    let churn = |n: usize| {
        for i in 0..n {
            let stream = UnixStream::connect(dir.socket()).expect("connecting");
            stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
            let body = request("examples.echo", json!([i.to_string()]), 1);
            // Half a request first, so each connection arms more than one deadline.
            (&stream).write_all(&body[..10]).unwrap();
            thread::sleep(Duration::from_micros(50));
            (&stream).write_all(&body[10..]).unwrap();
            reply(&mut BufReader::new(&stream)).expect("a reply");
        }
    };
    churn(1_000);
    let before = common::status_kib(daemon.pid(), "VmRSS");
    churn(10_000);
    let after = common::status_kib(daemon.pid(), "VmRSS");
    (&long)
        .write_all(&request("examples.echo", json!(["long"]), 1))
        .unwrap();
    assert_eq!(
        echo_result(&reply(&mut BufReader::new(&long)).unwrap()),
        Some("long")
    );
    assert!(
        after <= before + 128,
        "RSS grew from {before} kB to {after} kB over 10,000 connections"
    );
}

// ---------------------------------------------------------------------------------------
// Out of descriptors

/// With its descriptors exhausted, the daemon pauses accepting instead of spinning, logs
/// the episode once, and serves again once the flood is gone.
#[test]
fn out_of_descriptors_pauses_accepting_without_spinning() {
    let dir = TestDir::new();
    let config = dir.write_config("config.json", &json!({"socketmaxconnections": 1000}));
    let mut cmd = dir.command(&[
        "-f".to_string(),
        "--config".into(),
        path_str(&config),
        "--pidfile".into(),
        path_str(&dir.pidfile()),
        "--socket".into(),
        common::unix_addr(&dir.socket()),
    ]);
    // SAFETY: setrlimit is async-signal-safe, allocates nothing and touches no lock; it is
    // all the child does between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc_rlimit(48);
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, limit, limit)
                .map_err(std::io::Error::from)
        });
    }
    let mut daemon = Foreground::spawn_cmd(&dir, cmd);
    daemon.wait_ready_std(&dir);
    let flood: Vec<UnixStream> = (0..100)
        .map(|_| UnixStream::connect(dir.socket()).expect("connecting"))
        .collect();
    // Let it reach the limit, then measure a quiet while.
    wait_until("the daemon to run out of descriptors", DEADLINE, || {
        daemon.stderr().contains("accept")
    });
    // It has stopped accepting: a good client's connection waits in the backlog.
    let cpu_before = cpu_ticks(daemon.pid());
    let started = Instant::now();
    wait_until("two seconds to pass", Duration::from_secs(4), || {
        started.elapsed() >= Duration::from_secs(2)
    });
    let cpu = cpu_ticks(daemon.pid()) - cpu_before;
    let log = daemon.stderr().len();
    assert!(
        cpu < 50,
        "{cpu} ticks of CPU in 2 s while out of descriptors"
    );
    assert!(
        log < 16 * 1024,
        "{log} bytes of log while out of descriptors"
    );
    drop(flood);
    wait_until("the daemon to serve again", DEADLINE, || {
        let Ok(stream) = UnixStream::connect(dir.socket()) else {
            return false;
        };
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        (&stream)
            .write_all(&request("examples.echo", json!(["back"]), 1))
            .is_ok()
            && reply(&mut BufReader::new(&stream)).is_some_and(|r| echo_result(&r) == Some("back"))
    });
    assert!(daemon.try_status().is_none(), "the daemon ended");
    let log = daemon.stderr();
    assert_eq!(
        log.matches("cannot accept connections").count(),
        1,
        "one line for the episode: {log}"
    );
    wait_until("the end of the episode to be logged", DEADLINE, || {
        daemon.stderr().contains("accepting connections again")
    });
}

/// Both limits of `RLIMIT_NOFILE` at `n`.
fn libc_rlimit(n: u64) -> nix::sys::resource::rlim_t {
    n as nix::sys::resource::rlim_t
}

/// A flood of connections over the cap is answered, each, but logged in a few lines, not
/// one per connection: an attacker cannot fill the disk through the log.
#[test]
fn a_flood_of_refused_connections_is_logged_in_a_few_lines() {
    let dir = TestDir::new();
    let daemon = start(&dir, json!({"socketmaxconnections": 1}));
    let holder = UnixStream::connect(dir.socket()).expect("connecting");
    (&holder)
        .write_all(&request("examples.echo", json!(["holding"]), 1))
        .unwrap();
    reply(&mut BufReader::new(&holder)).expect("the holder is served");
    for i in 0..300 {
        let r = call_unix(&dir, "examples.echo", json!([i]));
        assert_eq!(r["error"]["message"], "too many connections", "{r}");
    }
    let log = daemon.stderr();
    let lines = log.matches("too many connections").count();
    assert!(lines < 20, "{lines} log lines for 300 refusals");
    assert!(
        log.contains("suppressed"),
        "the held-back lines are not counted: {log}"
    );
}

/// Unix peers that `socketpeers` lets in but that are neither root nor the daemon's user
/// cannot keep the owner out: at the cap, the oldest idle one makes room for an owner. An
/// owner never evicts an owner.
#[test]
fn idle_guests_make_room_for_the_owner() {
    let dir = TestDir::new();
    let _daemon = start(
        &dir,
        json!({"socketmaxconnections": 2, "socketpeers": "any", "socketmode": "0666"}),
    );
    let hold = |stream: &UnixStream, what: &str| {
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        (&*stream)
            .write_all(&request("examples.echo", json!([what]), 1))
            .unwrap();
        let r = reply(&mut BufReader::new(stream)).expect("a reply");
        assert_eq!(echo_result(&r), Some(what), "{r}");
    };
    if !nix::unistd::getuid().is_root() {
        // Only root can connect as another user here: check the other half of the rule.
        let owners: Vec<_> = (0..2)
            .map(|_| UnixStream::connect(dir.socket()).unwrap())
            .collect();
        for o in &owners {
            hold(o, "owner");
        }
        let r = call_unix(&dir, "examples.echo", json!(["third"]));
        assert_eq!(r["error"]["message"], "too many connections", "{r}");
        return;
    }
    let socket = dir.socket();
    let guests: Vec<UnixStream> = thread::spawn(move || {
        // SAFETY: a raw syscall with integer arguments. Unlike the libc wrapper it changes
        // the credentials of this thread only, which ends right after connecting.
        let rc = unsafe { nix::libc::syscall(nix::libc::SYS_setresuid, 65534, 65534, 65534) };
        assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
        (0..2)
            .map(|_| UnixStream::connect(&socket).expect("a guest connects"))
            .collect()
    })
    .join()
    .unwrap();
    for g in &guests {
        hold(g, "guest");
    }
    let r = call_unix(&dir, "examples.echo", json!(["owner"]));
    assert_eq!(echo_result(&r), Some("owner"), "{r}");
    // The oldest guest made room; the other stays.
    assert!(
        reply(&mut BufReader::new(&guests[0])).is_none(),
        "the oldest guest is still open"
    );
    hold(&guests[1], "still here");
}
