//! Log throughput: 10 workers writing lines to their stdout as fast as they can, through the
//! daemon (pipes, line splitting, its logger) into its `logfile` (detached); against `cat`
//! copying the same bytes into a file, in the same run; and the daemon's peak RSS meanwhile.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs::{Scratch, example, proc_kib};
use crate::{Results, Scale};

const WORKERS: usize = 10;

/// Lines of `path` from `offset` on that are worker output, and the new offset.
fn count_new(file: &mut File, offset: u64, carry: &mut Vec<u8>) -> (usize, u64) {
    let mut buf = Vec::new();
    let _ = file.seek(SeekFrom::Start(offset));
    let _ = file.read_to_end(&mut buf);
    let read = buf.len() as u64;
    carry.extend_from_slice(&buf);
    let mut n = 0;
    let mut last = 0;
    for (i, &b) in carry.iter().enumerate() {
        if b == b'\n' {
            if carry[last..i].windows(14).any(|w| w == b"stream: stdout") {
                n += 1;
            }
            last = i + 1;
        }
    }
    carry.drain(..last);
    (n, offset + read)
}

/// A detached daemon (not our child), killed on drop.
struct Killed(i32);

impl Drop for Killed {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while nix::sys::signal::kill(pid, None).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

pub fn run(scale: Scale, results: &mut Results) {
    let per_worker: u64 = scale.pick(100_000, 10_000);
    let total = per_worker as usize * WORKERS;
    let scratch = Scratch::new("logs");
    let out_path = scratch.0.join("daemon.log");
    File::create(&out_path).expect("creating the log file");
    let config = scratch.0.join("config.json");
    let logfile = serde_json::json!({"logfile": out_path.display().to_string()});
    std::fs::write(&config, logfile.to_string()).expect("writing the config");
    let pidfile = scratch.0.join("d.pid");
    let started = Instant::now();
    // The launcher exits once the daemon is ready; the workers print from their first tick.
    let status = Command::new(example("log_daemon"))
        .arg("-d")
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(format!("unix://{}", scratch.0.join("d.sock").display()))
        .arg("--pidfile")
        .arg(&pidfile)
        .args(["--workers", &WORKERS.to_string(), "--mode", "count"])
        .args(["--lines", &per_worker.to_string(), "--batch", "1000"])
        .args(["--looptime", "0.001"])
        .current_dir(&scratch.0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("starting log_daemon");
    assert!(status.success(), "log_daemon -d failed");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .expect("the daemon's pid");
    let guard = Killed(pid);
    let mut reader = File::open(&out_path).expect("opening the log file");
    let (mut seen, mut offset, mut carry) = (0usize, 0u64, Vec::new());
    let deadline = started + Duration::from_secs(120);
    while seen < total {
        assert!(
            Instant::now() < deadline,
            "only {seen} of {total} lines in 120 s"
        );
        std::thread::sleep(Duration::from_millis(5));
        let (n, next) = count_new(&mut reader, offset, &mut carry);
        seen += n;
        offset = next;
    }
    let took = started.elapsed();
    let peak = proc_kib(pid, "status", "VmHWM:");
    drop(guard);

    // The floor: the same lines, as the workers write them, copied by cat into a file.
    let src = scratch.0.join("lines.txt");
    {
        let mut f = std::io::BufWriter::new(File::create(&src).expect("creating the lines"));
        for w in 0..WORKERS {
            for n in 1..=per_worker {
                let _ = writeln!(f, "w{w} {n:08} the quick brown fox jumps over the lazy dog");
            }
        }
    }
    let dst = File::create(scratch.0.join("copy.txt")).expect("creating the copy");
    let t = Instant::now();
    let status = Command::new("cat")
        .arg(&src)
        .stdout(dst)
        .status()
        .expect("running cat");
    assert!(status.success());
    let floor = t.elapsed();
    let ours = total as f64 / took.as_secs_f64();
    let cat = total as f64 / floor.as_secs_f64();
    results.vs("log_lines_per_s_10_workers", ours, "lines/s", cat);
    results.add("log_flood_peak_rss", peak, "KiB");
}
