//! RPC latency and throughput of `examples.echo`, next to a minimal echo server (the floor:
//! the same socket type, the same bytes each way, no parsing at all).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use daimon::rpc::msgpack::{Scan, Scanner};
use serde_json::json;

use crate::procs::{Daemon, Scratch, example};
use crate::{Results, Scale, percentile, us};

const JSON_CALL: &[u8] =
    b"{\"jsonrpc\":\"2.0\",\"method\":\"examples.echo\",\"params\":[\"hello\"],\"id\":1}\n";

fn msgpack_call() -> Vec<u8> {
    rmp_serde::to_vec(&(0u8, 1u32, "examples.echo", ("hello",))).expect("encodes")
}

/// Reads one reply (a JSON line, or one MessagePack value) into `buf`.
fn read_reply(stream: &mut (impl Read + ?Sized), buf: &mut Vec<u8>, msgpack: bool) {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).expect("reading a reply");
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        let done = if msgpack {
            matches!(Scanner::default().scan(buf, 1 << 20), Scan::Complete(_))
        } else {
            buf.ends_with(b"\n")
        };
        if done {
            return;
        }
    }
}

/// `n` sequential round trips of `request` to `ours` and to `floor`, interleaved one by one
/// so both see the same machine (CPU placement and idle states change from second to
/// second on a shared VM); the two sets of samples.
fn latencies(
    ours: &mut (impl Read + Write),
    floor: &mut (impl Read + Write),
    request: &[u8],
    msgpack: bool,
    n: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut buf = Vec::new();
    let mut one = |stream: &mut dyn ReadWrite| {
        let t = Instant::now();
        stream.write_all(request).unwrap();
        read_reply(stream, &mut buf, msgpack);
        t.elapsed()
    };
    for _ in 0..n / 10 {
        one(ours);
        one(floor);
    }
    (0..n).map(|_| (one(ours), one(floor))).unzip()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The floor: writes back whatever it reads, until the peer hangs up.
fn echo_until_eof(mut stream: impl Read + Write) {
    let mut buf = [0u8; 65536];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 || stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// An echo server in a process of its own (as a daemon is), serving one connection at a
/// time; killed on drop.
struct Floor(nix::unistd::Pid);

impl Floor {
    fn fork(serve: impl FnOnce()) -> Floor {
        // SAFETY: called before the harness starts any thread (see `run`).
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                serve();
                // SAFETY: _exit is always safe; the child must not run the parent's destructors.
                unsafe { nix::libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => Floor(child),
        }
    }

    fn unix(path: &std::path::Path) -> Floor {
        let listener = UnixListener::bind(path).expect("binding the floor");
        Floor::fork(move || {
            for stream in listener.incoming().flatten() {
                echo_until_eof(stream);
            }
        })
    }

    fn tcp() -> (Floor, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the floor");
        let addr = listener.local_addr().unwrap();
        let floor = Floor::fork(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_nodelay(true);
                echo_until_eof(stream);
            }
        });
        (floor, addr)
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.0, None);
    }
}

/// Pins a process (0: the calling one) to one CPU.
pub fn pin(pid: i32, cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).expect("a CPU");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(pid), &set).expect("pinning");
}

/// Lets the calling process run on every CPU again.
pub fn unpin() {
    let mut set = nix::sched::CpuSet::new();
    for cpu in 0..nix::sched::CpuSet::count() {
        let _ = set.set(cpu);
    }
    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
}

fn report(results: &mut Results, name: &str, mut ours: Vec<Duration>, mut floor: Vec<Duration>) {
    let (p50, f50) = (percentile(&mut ours, 50.0), percentile(&mut floor, 50.0));
    let (p99, f99) = (percentile(&mut ours, 99.0), percentile(&mut floor, 99.0));
    results.vs(&format!("{name}_p50_us"), us(p50), "us", us(f50));
    results.vs(&format!("{name}_p99_us"), us(p99), "us", us(f99));
}

/// A daemon on a tcp port; killed on drop.
struct TcpDaemon(std::process::Child, #[allow(dead_code)] Scratch);

impl Drop for TcpDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tcp_daemon() -> (TcpDaemon, TcpStream) {
    let scratch = Scratch::new("tcp");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The latency of a call, not of system.auth: no secret, accepted explicitly.
    let config = scratch.0.join("tcp.json");
    std::fs::write(&config, r#"{"socketallowunauthenticated": true}"#).expect("a config file");
    let child = Command::new(example("echo_daemon"))
        .args(["-f", "--socket", &format!("tcp://127.0.0.1:{port}")])
        .arg("--config")
        .arg(&config)
        .arg("--pidfile")
        .arg(scratch.0.join("d.pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting echo_daemon");
    let daemon = TcpDaemon(child, scratch);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_nodelay(true).unwrap();
            return (daemon, s);
        }
        assert!(Instant::now() < deadline, "the tcp daemon did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Calls per second of `clients` threads for `window`, each calling through `connect()`
/// once (persistent) or per call, and the calls that were refused (a connection refused,
/// closed before its reply, or answered with an error).
fn throughput(daemon: &Daemon, clients: usize, window: Duration, per_call: bool) -> (f64, u64) {
    let barrier = Arc::new(Barrier::new(clients + 1));
    let socket = daemon.socket.clone();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (barrier, socket) = (barrier.clone(), socket.clone());
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut stream = UnixStream::connect(&socket).unwrap();
                barrier.wait();
                let (start, mut calls, mut refused) = (Instant::now(), 0u64, 0u64);
                while start.elapsed() < window {
                    if per_call {
                        match UnixStream::connect(&socket) {
                            Ok(s) => stream = s,
                            Err(_) => {
                                refused += 1;
                                continue;
                            }
                        }
                    }
                    let answered = stream.write_all(JSON_CALL).is_ok()
                        && try_read_reply(&mut stream, &mut buf)
                        && buf.starts_with(b"{\"id\":1,\"jsonrpc\":\"2.0\",\"result\":\"hello\"}");
                    if answered {
                        calls += 1;
                    } else {
                        assert!(per_call, "a persistent connection's call failed");
                        refused += 1;
                    }
                }
                (calls as f64 / start.elapsed().as_secs_f64(), refused)
            })
        })
        .collect();
    barrier.wait();
    threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .fold((0.0, 0), |(r, n), (rate, refused)| (r + rate, n + refused))
}

/// Reads one JSON reply line into `buf`; false if the connection ends first.
fn try_read_reply(stream: &mut UnixStream, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    let mut chunk = [0u8; 4096];
    while !buf.ends_with(b"\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

pub fn run(scale: Scale, results: &mut Results) {
    let n = scale.pick(20_000, 2_000);
    // Where a process wakes up decides a round trip on a VM far more than any code path
    // (a halted vCPU takes tens of microseconds to wake): every latency is measured with
    // explicit placement, the same for daimon and its floor. Client on CPU 0, server on
    // CPU 1; then everything on CPU 0.
    let server_cpu = usize::from(std::thread::available_parallelism().map_or(1, |n| n.get()) > 1);
    pin(0, 0);
    let scratch = Scratch::new("floors");
    // The floors fork: before any thread.
    let unix_floor = Floor::unix(&scratch.0.join("floor.sock"));
    let (tcp_floor, tcp_addr) = Floor::tcp();
    let config = json!({"socketmaxconnections": 256});
    let (daemon, _) = Daemon::start("echo_daemon", &[], Some(config));
    let (tcp, mut stream) = tcp_daemon();
    for pid in [
        unix_floor.0.as_raw(),
        tcp_floor.0.as_raw(),
        daemon.pid(),
        tcp.0.id() as i32,
    ] {
        pin(pid, server_cpu);
    }
    let floor = || UnixStream::connect(scratch.0.join("floor.sock")).expect("the floor");

    let (ours, base) = latencies(&mut daemon.connect(), &mut floor(), JSON_CALL, false, n);
    report(results, "rpc_unix_json", ours, base);
    let call = msgpack_call();
    let (ours, base) = latencies(&mut daemon.connect(), &mut floor(), &call, true, n);
    report(results, "rpc_unix_msgpack", ours, base);
    let mut to_floor = TcpStream::connect(tcp_addr).expect("the tcp floor");
    to_floor.set_nodelay(true).unwrap();
    let (ours, base) = latencies(&mut stream, &mut to_floor, JSON_CALL, false, n);
    report(results, "rpc_tcp_json", ours, base);
    drop((tcp, tcp_floor));

    // Everything on one CPU: no cross-CPU wake-ups, only the code paths.
    pin(daemon.pid(), 0);
    pin(unix_floor.0.as_raw(), 0);
    let (mut ours, mut base) = latencies(&mut daemon.connect(), &mut floor(), JSON_CALL, false, n);
    results.vs(
        "rpc_unix_json_1cpu_p50_us",
        us(percentile(&mut ours, 50.0)),
        "us",
        us(percentile(&mut base, 50.0)),
    );
    drop(unix_floor);

    // Throughput: no pinning, the scheduler spreads the clients and the daemon.
    unpin();
    let all = nix::sched::CpuSet::count();
    let mut set = nix::sched::CpuSet::new();
    for cpu in 0..all {
        let _ = set.set(cpu);
    }
    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(daemon.pid()), &set);
    let window = scale.pick(Duration::from_secs(3), Duration::from_millis(500));
    let (persistent, _) = throughput(&daemon, 8, window, false);
    results.add("rpc_unix_json_8c_calls_per_s", persistent, "calls/s");
    daemon.stop();
    // A new connection per call, at the default limits (10 connections): none refused.
    let (daemon, _) = Daemon::start("echo_daemon", &[], None);
    let (rate, refused) = throughput(&daemon, 8, window, true);
    results.vs(
        "rpc_unix_json_percall_8c_calls_per_s",
        rate,
        "calls/s",
        persistent,
    );
    results.add("rpc_unix_json_percall_8c_refused", refused as f64, "calls");
    daemon.stop();
}
