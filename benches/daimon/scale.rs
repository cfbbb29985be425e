//! Scale: a fleet of workers (spawn time, the daemon's RSS, `worker.list`, SIGTERM to exit)
//! and a crowd of idle connections (the daemon's RSS per connection), as curves: one row
//! per count, so a chart can plot them against the count.
//!
//! The full run goes to 10,000 workers and 10,000 connections, the quick one to 2,000. The
//! descriptor limit is raised as far as this process may. A worker costs the daemon three
//! descriptors with its output separate (two pipes and its channel), one with its output
//! discarded: where the hard limit is too low for the whole curve with separate output, the
//! curve runs with `--output discard` (a `#` line says so, and `workers_output_discard` is
//! 1), and one fleet with separate output runs at the largest count that fits
//! (`workers_separate_<N>_*`).
//!
//! Each spawn and stop time has a floor measured just before it: as many processes forked
//! by a fresh process of this binary, each waiting on a pipe and exiting when it closes (the
//! time to fork them all until each is blocked; from just before the pipe is closed to the
//! last one reaped). The largest fleet is also measured against a second floor, right after
//! it stops, whose processes are each as big as one of its workers (`*_sized_floor`): as
//! much anonymous memory, and as many pages of a file mapped (a worker's binary and
//! libraries): how much of a stop is the kernel ending processes of that size. That fleet
//! runs three times in a full run (each with its floors), and its time figures are the
//! medians.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::json;

use crate::procs::{Daemon, proc_kib};
use crate::{Results, Scale, ms, percentile};

/// Descriptors the daemon keeps besides its workers' (poller, sockets, log, slack).
const FD_RESERVE: u64 = 64;

/// The page size the floors read files by.
const PAGE: usize = 4096;

/// How often the largest fleet of a full run is started and stopped (its figures are the
/// medians).
const TOP_RUNS: usize = 3;

/// The descriptors open in `pid`.
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Raises `resource` to at least `want` (the hard limit too where this process may);
/// returns the soft limit now in force.
fn raise(resource: Resource, want: u64) -> u64 {
    let Ok((soft, hard)) = getrlimit(resource) else {
        return 0;
    };
    if soft >= want {
        return soft;
    }
    if hard < want && setrlimit(resource, want, want).is_ok() {
        return want;
    }
    let _ = setrlimit(resource, hard.min(want), hard);
    getrlimit(resource).map_or(soft, |(s, _)| s)
}

/// A worker daemon with `n` workers; every process of it is killed when it is dropped,
/// whatever happened (its workers die with it by their parent-death signal too).
struct Fleet(Option<Daemon>);

impl Fleet {
    fn start(n: usize, output: &str) -> (Fleet, Duration) {
        let count = n.to_string();
        let (daemon, took) = Daemon::start_within(
            "worker_daemon",
            &[
                "--workers",
                &count,
                "--looptime",
                "3600",
                "--output",
                output,
            ],
            None,
            Duration::from_secs(300),
        );
        (Fleet(Some(daemon)), took)
    }

    fn daemon(&self) -> &Daemon {
        self.0.as_ref().expect("running")
    }

    /// SIGTERM until the daemon exited.
    fn stop(mut self) -> Duration {
        self.0.take().expect("running").stop()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let Some(daemon) = self.0.take() else {
            return;
        };
        let pid = daemon.pid();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        drop(daemon);
        // Each worker leads a process group: it and whatever it started.
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            let _ = killpg(Pid::from_raw(child), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
        }
    }
}

/// The states of every worker and how long `worker.list` took.
fn list(stream: &mut UnixStream) -> (Vec<u64>, Duration) {
    let t = Instant::now();
    let list = crate::procs::call(stream, "worker.list", json!([])).expect("worker.list");
    let took = t.elapsed();
    let states = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|w| w["state"].as_u64().unwrap_or(9))
        .collect();
    (states, took)
}

/// The floor of a fleet of `n`: as many processes forked by a fresh, small process of this
/// binary (not by the harness itself, whose size grows over a run), each blocked reading a
/// pipe and exiting when it closes, and each holding `size` from its parent (none: nothing
/// more than the small process has; a worker's size: what a process as big as a worker
/// costs to fork and to end on this machine). The time to fork them all until every one
/// is blocked (as a fleet's spawn lasts until every worker loops), and from just before the
/// pipe is closed to the last one reaped.
fn floor(n: usize, size: Size) -> (Duration, Duration) {
    let exe = std::env::current_exe().expect("the bench binary");
    let out = std::process::Command::new(exe)
        .args([
            "--floor-fleet",
            &n.to_string(),
            "--floor-kib",
            &size.anon_kib.to_string(),
            "--floor-file-kib",
            &size.file_kib.to_string(),
            "--floor-file",
        ])
        .arg(crate::procs::example("worker_daemon"))
        .output()
        .expect("running the floor");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut nanos = text
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok());
    match (nanos.next(), nanos.next()) {
        (Some(spawn), Some(stop)) => (Duration::from_nanos(spawn), Duration::from_nanos(stop)),
        _ => panic!("the floor printed {text:?}"),
    }
}

/// What a floor's process holds besides what its small parent has: anonymous memory
/// (written by the parent, so each child maps every page of it) and pages of a file (the
/// workers' binary, read by each child, so each maps them as a worker maps its binary and
/// its libraries).
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    anon_kib: u64,
    file_kib: u64,
}

/// The value after `flag` on the command line, if there is one that parses.
fn arg_after<T: std::str::FromStr>(flag: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1)?.parse().ok()
}

/// `--floor-fleet N` on the command line: this process is the floor's.
pub fn floor_fleet_arg() -> Option<usize> {
    arg_after("--floor-fleet")
}

/// Forks `n` children that wait on a pipe, waits until each is blocked on it, closes it,
/// reaps them, and prints the two times in nanoseconds.
///
/// The stop is timed from before the close: the close wakes every child, and the children
/// run (and most of them end) before the closing process is given the processor back, so
/// a clock started after it missed most of the stop.
pub fn floor_fleet(n: usize) {
    use nix::sys::mman::{MapFlags, MmapAdvise, ProtFlags, madvise, mmap_anonymous};
    use nix::unistd::{ForkResult, fork};
    use std::os::fd::AsRawFd;
    // Written, so that every page is there for the children to inherit; in small pages, as
    // a worker's (a huge page would be one entry to copy at each fork).
    // `--floor-kib K`: K KiB each (none without).
    let held = arg_after::<usize>("--floor-kib").unwrap_or(0) * 1024;
    if let Some(len) = std::num::NonZeroUsize::new(held) {
        // SAFETY: a fresh private anonymous mapping of `len` bytes, written only here and
        // never unmapped (this process ends after the floor).
        unsafe {
            let p = mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
            .expect("the floor's memory");
            let _ = madvise(p, held, MmapAdvise::MADV_NOHUGEPAGE);
            std::ptr::write_bytes(p.as_ptr().cast::<u8>(), 1, held);
        }
    }
    // `--floor-file-kib F --floor-file PATH`: F KiB of the file (at most its size), read by
    // each child, page by page (none without both).
    let want = arg_after::<usize>("--floor-file-kib").unwrap_or(0) * 1024;
    let file = arg_after::<std::path::PathBuf>("--floor-file")
        .filter(|_| want > 0)
        .and_then(|path| map_file(&path, want));
    let (r, w) = nix::unistd::pipe().expect("a pipe");
    let (ready_r, ready_w) = nix::unistd::pipe().expect("a pipe");
    let t = Instant::now();
    let mut pids = Vec::with_capacity(n);
    for _ in 0..n {
        // SAFETY: this process is single-threaded, and the child only reads its own memory,
        // closes, reads, writes and exits (async-signal-safe calls).
        match unsafe { fork() }.expect("fork") {
            // SAFETY: the child's own copies of the pipes' descriptors, of the mapped file
            // (`len` readable bytes) and a byte on its stack; `_exit` ends it without
            // running anything of the parent's.
            ForkResult::Child => unsafe {
                nix::libc::close(w.as_raw_fd());
                if let Some((p, len)) = file {
                    for at in (0..len).step_by(PAGE) {
                        std::ptr::read_volatile(p.add(at));
                    }
                }
                let mut byte = 0u8;
                nix::libc::write(ready_w.as_raw_fd(), std::ptr::from_ref(&byte).cast(), 1);
                nix::libc::read(r.as_raw_fd(), std::ptr::from_mut(&mut byte).cast(), 1);
                nix::libc::_exit(0)
            },
            ForkResult::Parent { child } => pids.push(child),
        }
    }
    drop(ready_w);
    // Every child says it is about to block (end of file: every child has ended).
    let mut ready = std::fs::File::from(ready_r);
    let mut buf = [0u8; 4096];
    let mut told = 0;
    while told < n {
        match ready.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => told += k,
        }
    }
    let spawn = t.elapsed();
    let t = Instant::now();
    drop(w);
    for pid in pids {
        let _ = nix::sys::wait::waitpid(pid, None);
    }
    println!("{} {}", spawn.as_nanos(), t.elapsed().as_nanos());
}

/// `path` mapped read-only, `want` bytes of it at most (whole pages): where, and how many
/// bytes; none when it is empty. Never unmapped (the floor's process ends after the floor).
fn map_file(path: &std::path::Path, want: usize) -> Option<(*const u8, usize)> {
    use nix::sys::mman::{MapFlags, ProtFlags, mmap};
    let file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let size = file.metadata().map_or(0, |m| m.len() as usize) / PAGE * PAGE;
    let len = std::num::NonZeroUsize::new(want.min(size))?;
    // SAFETY: a fresh private read-only mapping of the file, only ever read.
    let p = unsafe {
        mmap(
            None,
            len,
            ProtFlags::PROT_READ,
            MapFlags::MAP_PRIVATE,
            &file,
            0,
        )
    }
    .expect("mapping the floor's file");
    Some((p.as_ptr().cast::<u8>().cast_const(), len.get()))
}

/// What one fleet measured.
struct Sample {
    spawn: Duration,
    stop: Duration,
    /// The floors measured just before it (none without a prefix).
    floors: Option<(Duration, Duration)>,
    rss: f64,
    fds: usize,
    list: Duration,
    /// A worker's own anonymous memory (the last one's: they are alike).
    worker_anon: f64,
    /// The pages of files a worker maps (its binary's and its libraries'; the last one's).
    worker_file: f64,
}

/// Starts a fleet of `n` with `output`, waits until every worker loops, reads its figures
/// and stops it; `floors`: first measure the floor of `n` (just before the fleet).
fn sample(n: usize, output: &str, floors: bool) -> Sample {
    let floors = floors.then(|| floor(n, Size::default()));
    let (fleet, took) = Fleet::start(n, output);
    let mut stream = fleet.daemon().connect();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !list(&mut stream).0.iter().all(|&s| s == 1) {
        assert!(
            Instant::now() < deadline,
            "{n} workers did not all reach LOOPING"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = fleet.daemon().pid();
    let rss = proc_kib(pid, "status", "VmRSS:");
    let fds = open_fds(pid);
    let mut lists: Vec<Duration> = (0..5).map(|_| list(&mut stream).1).collect();
    drop(stream);
    let worker: Option<i32> = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .last()
        .and_then(|w| w.parse().ok());
    let worker_anon = worker.map_or(f64::NAN, |w| proc_kib(w, "smaps_rollup", "Anonymous:"));
    let worker_file = worker.map_or(f64::NAN, |w| proc_kib(w, "status", "RssFile:"));
    let stop = fleet.stop();
    Sample {
        spawn: took,
        stop,
        floors,
        rss,
        fds,
        list: percentile(&mut lists, 50.0),
        worker_anon,
        worker_file,
    }
}

/// The median of `samples` by `key`.
fn median_by(samples: &[Sample], key: impl Fn(&Sample) -> Duration) -> Duration {
    let mut all: Vec<Duration> = samples.iter().map(key).collect();
    percentile(&mut all, 50.0)
}

/// One fleet of `n` with `output`: its figures as `PREFIX_<n>_*` (none for 0 workers, or
/// without a prefix), and the daemon's RSS and descriptors. With `top` (the largest fleet of
/// a full run) it is started `TOP_RUNS` times and each time figure is the median of the
/// runs (as is its floor: each run has its own), the stop also against the floor of
/// processes of a worker's anonymous size; a `#` line gives every run. One stop of
/// thousands varies by a fifth from run to run on a shared machine.
fn fleet(
    n: usize,
    output: &str,
    prefix: Option<&str>,
    top: bool,
    scale: Scale,
    results: &mut Results,
) -> (f64, usize) {
    let floors = n > 0 && prefix.is_some();
    let runs = if top { scale.pick(TOP_RUNS, 1) } else { 1 };
    let mut samples = Vec::with_capacity(runs);
    let mut sized = Vec::with_capacity(runs);
    for _ in 0..runs {
        let s = sample(n, output, floors);
        if top && s.worker_anon.is_finite() && s.worker_file.is_finite() {
            // The same fleet of plain processes, each of a worker's size.
            let size = Size {
                anon_kib: s.worker_anon as u64,
                file_kib: s.worker_file as u64,
            };
            sized.push(floor(n, size));
        }
        samples.push(s);
    }
    if runs > 1 {
        let each = |f: &dyn Fn(&Sample) -> Duration| {
            samples
                .iter()
                .map(|s| format!("{:.0}", ms(f(s))))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "# {n} workers, {runs} runs: spawn {} ms; stop {} ms; the floors' stops {} ms",
            each(&|s| s.spawn),
            each(&|s| s.stop),
            each(&|s| s.floors.map_or(Duration::ZERO, |f| f.1)),
        );
    }
    let last = samples.last().expect("one run at least");
    let (rss, fds, worker_anon, worker_file) =
        (last.rss, last.fds, last.worker_anon, last.worker_file);
    if let (Some(prefix), true) = (prefix, floors) {
        let name = |what: &str| format!("{prefix}_{n}_{what}");
        let floor_spawn = median_by(&samples, |s| s.floors.map_or(Duration::ZERO, |f| f.0));
        let floor_stop = median_by(&samples, |s| s.floors.map_or(Duration::ZERO, |f| f.1));
        results.vs(
            &name("spawn_ms"),
            ms(median_by(&samples, |s| s.spawn)),
            "ms",
            ms(floor_spawn),
        );
        results.add(&name("daemon_rss_kib"), rss, "KiB");
        results.add(&name("list_ms"), ms(median_by(&samples, |s| s.list)), "ms");
        let stop = median_by(&samples, |s| s.stop);
        results.vs(&name("stop_ms"), ms(stop), "ms", ms(floor_stop));
        results.add(&name("worker_anon_kib"), worker_anon, "KiB");
        results.add(&name("worker_file_kib"), worker_file, "KiB");
        if !sized.is_empty() {
            let mut spawns: Vec<Duration> = sized.iter().map(|f| f.0).collect();
            let mut stops: Vec<Duration> = sized.iter().map(|f| f.1).collect();
            results.vs(
                &name("spawn_ms_sized_floor"),
                ms(median_by(&samples, |s| s.spawn)),
                "ms",
                ms(percentile(&mut spawns, 50.0)),
            );
            results.vs(
                &name("stop_ms_sized_floor"),
                ms(stop),
                "ms",
                ms(percentile(&mut stops, 50.0)),
            );
        }
    }
    (rss, fds)
}

/// The fleet curve: 1,000, 3,000 and 10,000 workers (1,000 and 2,000 in a quick run), with
/// separate output where the descriptor limit allows it at the top, discarded otherwise.
fn workers(scale: Scale, results: &mut Results) {
    let top = scale.pick(10_000, 2_000);
    let _ = raise(Resource::RLIMIT_NPROC, 4 * top as u64);
    let (rss0, fds0) = fleet(0, "separate", None, false, scale, results);
    results.add("workers_0_daemon_rss_kib", rss0, "KiB");
    // What one worker costs the daemon in descriptors decides how far the limit lets us go.
    let (_, fds1k) = fleet(1000, "separate", None, false, scale, results);
    let per_worker = (fds1k.saturating_sub(fds0) as f64 / 1000.0).max(1.0);
    results.add("workers_fds_per_worker", per_worker, "fds");
    let want = fds0 as u64 + (per_worker * top as f64).ceil() as u64 + FD_RESERVE;
    let limit = raise(Resource::RLIMIT_NOFILE, want);
    let room = limit.saturating_sub(fds0 as u64 + FD_RESERVE) as f64;
    let fits = (room / per_worker) as usize / 100 * 100;
    let output = if fits >= top { "separate" } else { "discard" };
    if fits < top {
        println!(
            "# RLIMIT_NOFILE is {limit} here (hard): {per_worker:.1} descriptors per worker \
             fit {fits} workers with separate output, not {top}; the curve runs with \
             --output discard (one descriptor per worker)"
        );
        fleet(
            fits,
            "separate",
            Some("workers_separate"),
            false,
            scale,
            results,
        );
    }
    results.add(
        "workers_output_discard",
        f64::from(u8::from(fits < top)),
        "bool",
    );
    let mut top_rss = rss0;
    for n in scale.pick(vec![1000, 3000, top], vec![1000, top]) {
        top_rss = fleet(n, output, Some("workers"), n == top, scale, results).0;
    }
    results.add("workers_max", top as f64, "workers");
    results.add(
        "workers_daemon_kib_per_worker",
        (top_rss - rss0) / top as f64,
        "KiB",
    );
}

/// Opens connections up to each count of the curve, each making one call, and the daemon's
/// RSS with all of them idle; every call must be answered.
fn connections(scale: Scale, results: &mut Results) {
    let top = scale.pick(10_000, 2_000);
    let _ = raise(Resource::RLIMIT_NOFILE, 2 * top as u64 + FD_RESERVE);
    let (daemon, _) = Daemon::start(
        "echo_daemon",
        &[],
        Some(json!({"socketmaxconnections": top + 100})),
    );
    let rss0 = proc_kib(daemon.pid(), "status", "VmRSS:");
    results.add("connections_0_daemon_rss_kib", rss0, "KiB");
    let call = b"{\"jsonrpc\":\"2.0\",\"method\":\"examples.echo\",\"params\":[\"x\"],\"id\":7}\n";
    let expected = b"{\"id\":7,\"jsonrpc\":\"2.0\",\"result\":\"x\"}\n";
    let mut streams: Vec<UnixStream> = Vec::with_capacity(top);
    let mut ok = 0;
    let mut rss = rss0;
    for n in scale.pick(vec![1000, 3000, top], vec![1000, top]) {
        let batch: Vec<UnixStream> = (streams.len()..n).map(|_| daemon.connect()).collect();
        for mut s in &batch {
            s.write_all(call).expect("sending");
        }
        for mut s in &batch {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut reply = [0u8; 64];
            let mut got = 0;
            while got < expected.len() {
                match s.read(&mut reply[got..]) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => got += k,
                }
            }
            ok += usize::from(&reply[..got] == expected);
        }
        streams.extend(batch);
        // Let the last replies' writes settle before reading the RSS.
        std::thread::sleep(Duration::from_millis(100));
        rss = proc_kib(daemon.pid(), "status", "VmRSS:");
        results.add(&format!("connections_{n}_daemon_rss_kib"), rss, "KiB");
    }
    results.add(&format!("connections_{top}_ok"), ok as f64, "ok");
    results.add(
        "connection_idle_rss_bytes",
        (rss - rss0) * 1024.0 / top as f64,
        "B",
    );
    drop(streams);
    daemon.stop();
}

pub fn run(scale: Scale, results: &mut Results) {
    workers(scale, results);
    connections(scale, results);
}
