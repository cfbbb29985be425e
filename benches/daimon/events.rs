//! Event fan-out: the daemon's events (`examples.burst`, emitted by a method of the
//! `events_daemon` example) delivered to 1, 10 and 100 subscribers on the control socket;
//! events/s delivered in all (paced in rounds of [`ROUND`] events, each delivered to every
//! subscriber before the next), and the latency from an event's dispatch (its `time`) to a
//! subscriber's read, one event at a time. The floor of the rate: the same notification lines
//! written by one thread of this process to as many unix socket pairs, read by as many
//! threads, paced the same way.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::procs::{Daemon, call};
use crate::{Results, Scale, percentile, us};

/// Events per paced round: what 100 subscribers hold in their queues without a drop.
const ROUND: u64 = 500;
/// Bytes of filler in each event.
const FILL: i64 = 16;

fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The `time` of a notification line, without a full parse.
fn time_of(line: &[u8]) -> Option<f64> {
    let at = line.windows(7).position(|w| w == b"\"time\":")? + 7;
    let end = line[at..].iter().position(|&b| b == b',')? + at;
    std::str::from_utf8(&line[at..end]).ok()?.parse().ok()
}

/// Reads notification lines until `total` arrived, counting them in `seen` and sampling
/// the latency of every `every`th.
fn subscriber(stream: UnixStream, total: u64, every: u64, seen: Arc<AtomicU64>) -> Vec<Duration> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    let mut line = Vec::new();
    let mut samples = Vec::new();
    let mut n = 0;
    while n < total {
        line.clear();
        if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            panic!("a subscriber lost its connection after {n} of {total} events");
        }
        if line.windows(21).any(|w| w == b"daemon.events.dropped") {
            panic!("a subscriber dropped events: the rounds are too large");
        }
        n += 1;
        if n % every == 0 {
            if let Some(t) = time_of(&line) {
                samples.push(Duration::from_secs_f64((wall_now() - t).max(0.0)));
            }
        }
        seen.fetch_add(1, Ordering::Relaxed);
    }
    samples
}

/// Waits until `seen` reaches `want` (bounded).
fn wait_for(seen: &AtomicU64, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.load(Ordering::Relaxed) < want {
        assert!(Instant::now() < deadline, "fan-out stalled");
        std::hint::spin_loop();
        thread::yield_now();
    }
}

/// Delivers `rounds` rounds of `round` events through the daemon to `n` subscribers:
/// deliveries per second, and the latency of every `every`th event of each subscriber.
fn through_daemon(
    daemon: &Daemon,
    n: usize,
    rounds: u64,
    round: u64,
    every: u64,
) -> (f64, Vec<Duration>) {
    let total = rounds * round;
    let seen = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for _ in 0..n {
        let mut s = daemon.connect();
        let id = call(&mut s, "daemon.subscribe", json!([["examples.burst"]]))
            .expect("daemon.subscribe");
        assert!(id.as_u64().is_some_and(|i| i > 0), "{id}");
        let seen = seen.clone();
        threads.push(thread::spawn(move || subscriber(s, total, every, seen)));
    }
    let mut driver = daemon.connect();
    let started = Instant::now();
    for r in 1..=rounds {
        call(&mut driver, "examples.burst", json!([round, FILL])).expect("examples.burst");
        wait_for(&seen, r * round * n as u64);
    }
    let took = started.elapsed();
    let samples = threads
        .into_iter()
        .flat_map(|t| t.join().expect("a subscriber thread"))
        .collect();
    ((total * n as u64) as f64 / took.as_secs_f64(), samples)
}

/// The floor: one writer thread, `n` socket pairs, `n` reader threads, the same lines and
/// rounds.
fn through_sockets(n: usize, rounds: u64) -> f64 {
    let total = rounds * ROUND;
    let seen = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..n {
        let (a, b) = UnixStream::pair().expect("a socket pair");
        writers.push(a);
        let seen = seen.clone();
        threads.push(thread::spawn(move || subscriber(b, total, u64::MAX, seen)));
    }
    let fill = "x".repeat(FILL as usize);
    let started = Instant::now();
    let mut buf = Vec::new();
    for r in 1..=rounds {
        buf.clear();
        for i in 0..ROUND {
            let _ = writeln!(
                buf,
                r#"{{"jsonrpc":"2.0","method":"daemon.event","params":{{"subscription":1,"name":"examples.burst","time":{:.6},"data":{{"fill":"{fill}","n":{i}}}}}}}"#,
                wall_now()
            );
        }
        for w in &mut writers {
            w.write_all(&buf).expect("writing to a socket pair");
        }
        wait_for(&seen, r * ROUND * n as u64);
    }
    let took = started.elapsed();
    for t in threads {
        t.join().expect("a reader thread");
    }
    (total * n as u64) as f64 / took.as_secs_f64()
}

pub fn run(scale: Scale, results: &mut Results) {
    let config = json!({"socketmaxconnections": 200});
    let (daemon, _) = Daemon::start("events_daemon", &[], Some(config));
    for n in [1usize, 10, 100] {
        let rounds = scale.pick(40, 4) * (if n == 100 { 1 } else { 4 });
        let floor = through_sockets(n, rounds);
        let (rate, _) = through_daemon(&daemon, n, rounds, ROUND, u64::MAX);
        results.vs(&format!("event_fanout_{n}_per_s"), rate, "events/s", floor);
        let singles = scale.pick(400, 50);
        let (_, mut samples) = through_daemon(&daemon, n, singles, 1, 1);
        if !samples.is_empty() {
            let p50 = percentile(&mut samples, 50.0);
            let p99 = percentile(&mut samples, 99.0);
            results.add(&format!("event_latency_{n}_p50"), us(p50), "us");
            results.add(&format!("event_latency_{n}_p99"), us(p99), "us");
        }
    }
    daemon.stop();
}
