//! Whole-daemon figures: readiness, restart, shutdown, memory, idle wakeups (scale is in
//! `scale`).

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

use crate::procs::{Daemon, proc_kib, wait_looping, workers};
use crate::{Results, Scale, ms, percentile};

fn median(mut samples: Vec<Duration>) -> Duration {
    percentile(&mut samples, 50.0)
}

/// Launch until the socket answers, next to launching `/bin/true` until it exits.
fn ready(scale: Scale, results: &mut Results) {
    let n = scale.pick(15, 3);
    let ours = (0..n)
        .map(|_| {
            let (daemon, took) = Daemon::start("echo_daemon", &[], None);
            daemon.stop();
            took
        })
        .collect();
    let floor = (0..n)
        .map(|_| {
            let t = Instant::now();
            Command::new("true").status().expect("running true");
            t.elapsed()
        })
        .collect();
    results.vs("ready_p50_ms", ms(median(ours)), "ms", ms(median(floor)));
}

/// Kill to LOOPING again: a worker that crashes after running stably (longer than its
/// stable time, here 20 ms) is restarted at once; one that crash-loops (the default stable
/// time of 1 s, crashes every 30 ms) gets its backoff (0, 100, 200, 400 ms...).
fn restart(scale: Scale, results: &mut Results) {
    let n = scale.pick(20, 5);
    let stable = restart_samples(n, &["--stable-after", "0.02"]);
    results.add("restart_p50_ms", ms(median(stable)), "ms");
    let looping = restart_samples(n.min(6), &[]);
    results.add("restart_crashloop_p50_ms", ms(median(looping)), "ms");
}

fn restart_samples(n: usize, extra: &[&str]) -> Vec<Duration> {
    let mut args = vec![
        "--workers",
        "1",
        "--looptime",
        "3600",
        "--max-restarts",
        "1000",
    ];
    args.extend_from_slice(extra);
    let (daemon, _) = Daemon::start("worker_daemon", &args, None);
    wait_looping(&daemon);
    let mut stream = daemon.connect();
    let samples = (0..n)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(30));
            let old = workers(&daemon)[0].1.expect("running");
            let t = Instant::now();
            kill(Pid::from_raw(old), Signal::SIGKILL).expect("kill");
            loop {
                let list =
                    crate::procs::call(&mut stream, "worker.list", json!([])).expect("worker.list");
                let w = &list[0];
                if w["pid"].as_i64().is_some_and(|p| p as i32 != old) && w["state"] == 1 {
                    return t.elapsed();
                }
            }
        })
        .collect();
    daemon.stop();
    samples
}

/// SIGTERM with 100 workers until the daemon exits.
fn shutdown(scale: Scale, results: &mut Results) {
    let n = scale.pick(5, 2);
    let samples = (0..n)
        .map(|_| {
            let (daemon, _) = Daemon::start(
                "worker_daemon",
                &["--workers", "100", "--looptime", "3600"],
                None,
            );
            wait_looping(&daemon);
            daemon.stop()
        })
        .collect();
    results.add("shutdown_100w_p50_ms", ms(median(samples)), "ms");
}

/// The daemon's peak RSS (the kernel's high-water mark) after the worst single requests we
/// know of, one after the other on one daemon, next to its peak before them: a 1 MiB batch of
/// numbers, of `worker.list` (20 workers), of invalid elements; 1 MiB of wide params, in
/// JSON and in MessagePack; a batch whose replies pass `socketmaxoutput`. Target: under
/// 16 MiB.
fn hostile(results: &mut Results) {
    let (daemon, _) = Daemon::start(
        "worker_daemon",
        &["--workers", "20", "--looptime", "3600"],
        None,
    );
    wait_looping(&daemon);
    let floor = proc_kib(daemon.pid(), "status", "VmHWM:");
    let batch = |element: &str, size: usize| {
        let n = size / (element.len() + 1);
        let mut line = format!("[{}]", vec![element; n].join(",")).into_bytes();
        line.push(b'\n');
        line
    };
    let wide = {
        let mut line = br#"{"jsonrpc":"2.0","method":"worker.list","id":1,"params":["#.to_vec();
        line.extend(vec!["0"; 500_000].join(",").into_bytes());
        line.extend_from_slice(b"]}\n");
        line
    };
    let mut nils = vec![0x94, 0x00, 0x01, 0xab];
    nils.extend_from_slice(b"worker.list");
    nils.push(0xdd);
    nils.extend_from_slice(&1_000_000u32.to_be_bytes());
    nils.extend(std::iter::repeat_n(0xc0, 1_000_000));
    let mut attacks = vec![
        batch("1", 1 << 20),
        batch(
            r#"{"jsonrpc":"2.0","method":"worker.list","id":1}"#,
            1 << 20,
        ),
        batch("{}", 300_000),
        wide,
        batch(
            r#"{"jsonrpc":"2.0","method":"system.listMethods","id":1}"#,
            5000,
        ),
    ];
    attacks.push(nils);
    for attack in &attacks {
        let mut stream = daemon.connect();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a read timeout");
        stream.write_all(attack).expect("sending an attack");
        let mut reply = [0; 4096];
        let _ = std::io::Read::read(&mut stream, &mut reply).expect("a reply");
    }
    results.vs(
        "hostile_peak_rss_kib",
        proc_kib(daemon.pid(), "status", "VmHWM:"),
        "KiB",
        floor,
    );
    daemon.stop();
}

/// Memory of an idle daemon and its workers, and its wakeups over a window.
fn idle(scale: Scale, results: &mut Results) {
    let (echo, _) = Daemon::start("echo_daemon", &[], None);
    results.add(
        "daemon_rss_kib",
        proc_kib(echo.pid(), "status", "VmRSS:"),
        "KiB",
    );
    results.add(
        "daemon_pss_kib",
        proc_kib(echo.pid(), "smaps_rollup", "Pss:"),
        "KiB",
    );
    echo.stop();
    let (daemon, _) = Daemon::start(
        "worker_daemon",
        &["--workers", "4", "--looptime", "3600"],
        None,
    );
    wait_looping(&daemon);
    let worker = workers(&daemon)[0].1.expect("running");
    results.add(
        "worker_pss_kib",
        proc_kib(worker, "smaps_rollup", "Pss:"),
        "KiB",
    );
    // Let the start-up settle, then count the daemon's voluntary context switches.
    std::thread::sleep(Duration::from_millis(200));
    let window = scale.pick(Duration::from_secs(10), Duration::from_secs(2));
    let switches = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("voluntary_ctxt_switches:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    let before = switches(daemon.pid());
    std::thread::sleep(window);
    let after = switches(daemon.pid());
    results.add(
        "idle_wakeups_per_s",
        (after - before) as f64 / window.as_secs_f64(),
        "1/s",
    );
    daemon.stop();
}

pub fn run(scale: Scale, results: &mut Results) {
    ready(scale, results);
    hostile(results);
    restart(scale, results);
    shutdown(scale, results);
    idle(scale, results);
}
