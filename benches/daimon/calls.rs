//! `worker.call` round trip: a client calls a worker that returns its payload (client to
//! daemon, daemon to worker over the channel, and back), next to the channel's own round
//! trip measured at the start of the same run (the floor of the middle hop).

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::procs::{Daemon, wait_looping, workers};
use crate::rpc::{pin, unpin};
use crate::{Results, Scale, percentile, us};

const CALL: &[u8] = b"{\"jsonrpc\":\"2.0\",\"method\":\"worker.call\",\"params\":[\"w0\",\"echo\",\"0123456789abcdef\"],\"id\":1}\n";

/// `n` sequential `worker.call`s after a warm-up of a tenth as many.
fn samples(daemon: &Daemon, n: usize) -> Vec<Duration> {
    let stream = daemon.connect();
    let mut writer = stream.try_clone().expect("a second handle");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut one = || {
        let t = Instant::now();
        writer.write_all(CALL).expect("sending a call");
        line.clear();
        reader.read_line(&mut line).expect("reading a reply");
        let took = t.elapsed();
        debug_assert!(
            serde_json::from_str::<Value>(&line).is_ok_and(|r| r["result"] == "0123456789abcdef"),
            "{line}"
        );
        took
    };
    for _ in 0..n / 10 {
        one();
    }
    (0..n).map(|_| one()).collect()
}

/// `channel`: the channel's round trip (p50, p99) measured earlier in this run.
pub fn run(scale: Scale, results: &mut Results, channel: (Duration, Duration)) {
    let n = scale.pick(10_000, 1_000);
    let (daemon, _) = Daemon::start(
        "worker_daemon",
        &["--workers", "1", "--looptime", "3600"],
        None,
    );
    wait_looping(&daemon);
    let reply = daemon.call("worker.call", json!(["w0", "echo", "check"]));
    assert_eq!(reply, json!("check"), "worker.call answers");
    // As the channel's figure was measured: client and worker on CPU 0, the daemon on the
    // other CPU (every hop crosses CPUs, as the channel's did).
    let other = usize::from(std::thread::available_parallelism().map_or(1, |n| n.get()) > 1);
    pin(0, 0);
    pin(daemon.pid(), other);
    if let Some(worker) = workers(&daemon)[0].1 {
        pin(worker, 0);
    }
    let mut ours = samples(&daemon, n);
    unpin();
    let p50 = percentile(&mut ours, 50.0);
    results.vs("worker_call_rtt_p50_us", us(p50), "us", us(channel.0));
    let p99 = percentile(&mut ours, 99.0);
    results.vs("worker_call_rtt_p99_us", us(p99), "us", us(channel.1));
    daemon.stop();
}
