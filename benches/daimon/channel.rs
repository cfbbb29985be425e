//! The worker channel between two processes: round trip, next to a pipe ping-pong between
//! two processes (the floor); one-way rates of raw frames (16 bytes: messages per second;
//! 4 KiB: bytes per second, next to a `memcpy` of the same bytes in this process, the floor)
//! and of small frames decoded as a worker decodes them, each the median of three runs; and
//! the round trip of one cache line between the same two CPUs (`cpu_line_rtt_ns`), which
//! the rates across CPUs follow on a shared machine.
//!
//! Runs first: it forks, and the harness has a single thread until the RPC figures start.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use daimon::worker::{Channel, ChannelError, Down, Up};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork, pipe, read, write};
use serde_json::json;

use crate::{Results, Scale, percentile, us};

fn wait_readable(fd: std::os::fd::BorrowedFd<'_>) {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::NONE);
}

/// Runs `child` in a forked process; the parent runs `parent` and reaps the child. Each
/// side gets `state` (its own copy, after the fork).
fn with_child<S, T>(state: S, child: impl FnOnce(S), parent: impl FnOnce(S) -> T) -> T {
    // SAFETY: the harness is single-threaded while this runs (channel figures come first).
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            // The other side of the machine, as a worker usually is.
            crate::rpc::pin(0, SERVER_CPU.load(std::sync::atomic::Ordering::Relaxed));
            child(state);
            // SAFETY: _exit is always safe; the child must not run the parent's destructors.
            unsafe { nix::libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            let out = parent(state);
            let _ = waitpid(child, None);
            out
        }
    }
}

/// Waits for the next frame into `buf`.
fn receive_one(channel: &Channel, buf: &mut Vec<u8>) {
    loop {
        if channel.receive_frame(buf).expect("a sane channel") {
            return;
        }
        wait_readable(channel.incoming_fd());
        channel.clear_wakeup();
    }
}

fn send(channel: &Channel, frame: &[u8]) {
    loop {
        match channel.send_frame(frame) {
            Ok(()) => return,
            Err(ChannelError::Full(_)) => std::hint::spin_loop(),
            Err(e) => panic!("{e}"),
        }
    }
}

fn channel_rtt(n: usize) -> Vec<Duration> {
    let payload = Some(json!("0123456789abcdef"));
    let message = Down::Command("m".into(), payload.clone()).encode();
    with_child(
        Channel::new().expect("a channel"),
        |channel| {
            let worker = channel.worker_end();
            let mut buf = Vec::new();
            loop {
                receive_one(&worker, &mut buf);
                match Down::decode(&buf).expect("a frame") {
                    Down::Command(c, p) => send(&worker, &Up::Message(c, p).encode()),
                    _ => return,
                }
            }
        },
        |channel| {
            let mut buf = Vec::new();
            let samples = (0..n + n / 10)
                .map(|_| {
                    let t = Instant::now();
                    send(&channel, &message);
                    receive_one(&channel, &mut buf);
                    let reply = Up::decode(&buf).expect("a frame");
                    debug_assert_eq!(reply, Up::Message("m".into(), payload.clone()));
                    t.elapsed()
                })
                .collect::<Vec<_>>();
            send(&channel, &Down::Stop.encode());
            samples[n / 10..].to_vec()
        },
    )
}

fn pipe_rtt(n: usize) -> Vec<Duration> {
    let (down_r, down_w): (OwnedFd, OwnedFd) = pipe().expect("pipe");
    let (up_r, up_w): (OwnedFd, OwnedFd) = pipe().expect("pipe");
    with_child(
        (down_r, down_w, up_r, up_w),
        |(down_r, down_w, up_r, up_w)| {
            // The parent's ends, closed here so the parent's close of down_w ends the loop.
            drop((down_w, up_r));
            let mut buf = [0u8; 16];
            while read(down_r.as_fd(), &mut buf).is_ok_and(|k| k == 16) {
                let _ = write(&up_w, &buf);
            }
        },
        |(_, down_w, up_r, _)| {
            let mut buf = [0u8; 16];
            let samples = (0..n + n / 10)
                .map(|_| {
                    let t = Instant::now();
                    write(&down_w, b"0123456789abcdef").expect("write");
                    read(up_r.as_fd(), &mut buf).expect("read");
                    t.elapsed()
                })
                .collect::<Vec<_>>();
            drop(down_w);
            samples[n / 10..].to_vec()
        },
    )
}

/// Frames of `size` bytes per second, one way, `count` of them: raw frames (the channel
/// alone), or with `decoded`, a `Down::Command` carrying a string of `size` bytes that the
/// worker's side decodes, as a worker does.
fn channel_rate(count: usize, size: usize, decoded: bool) -> f64 {
    let message = if decoded {
        Down::Command("m".into(), Some(json!("x".repeat(size)))).encode()
    } else {
        vec![0x5a; size]
    };
    with_child(
        Channel::new().expect("a channel"),
        |channel| {
            let worker = channel.worker_end();
            let mut buf = Vec::new();
            let mut seen = 0;
            while seen < count {
                while worker.receive_frame(&mut buf).expect("a sane channel") {
                    if decoded {
                        Down::decode(&buf).expect("a frame");
                    } else {
                        assert_eq!(buf.len(), size);
                    }
                    seen += 1;
                }
                if seen < count {
                    wait_readable(worker.incoming_fd());
                    worker.clear_wakeup();
                }
            }
            send(&worker, &Up::Message("done".into(), None).encode());
        },
        |channel| {
            let t = Instant::now();
            for _ in 0..count {
                send(&channel, &message);
            }
            let mut buf = Vec::new();
            receive_one(&channel, &mut buf);
            assert_eq!(Up::decode(&buf), Ok(Up::Message("done".into(), None)));
            count as f64 / t.elapsed().as_secs_f64()
        },
    )
}

/// The floor of the channel's bytes per second: the same `count` messages of `size` bytes
/// copied (`copy_from_slice`) into a buffer of the ring's size, slot after slot, in this
/// process, on one CPU. Bytes per second.
fn memcpy_rate(count: usize, size: usize) -> f64 {
    let message = vec![0x5a_u8; size];
    let mut ring = vec![0u8; daimon::worker::RING_CAPACITY];
    let slots = ring.len() / size;
    let t = Instant::now();
    for i in 0..count {
        let at = (i % slots) * size;
        ring[at..at + size].copy_from_slice(std::hint::black_box(&message));
        std::hint::black_box(&mut ring);
    }
    (count * size) as f64 / t.elapsed().as_secs_f64()
}

/// The round trip of one cache line between the two CPUs the channel figures run on: two
/// processes take turns to write a word of shared memory, `rounds` times each (at least
/// 2). What each frame's crossing costs at least, and what a shared machine changes from
/// hour to hour (its two vCPUs on one core complex, or on two): the channel's rates across
/// CPUs follow it, where the `memcpy` floor, on one CPU, does not. Nanoseconds a round
/// trip.
fn line_rtt(rounds: u64) -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};

    use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};
    let len = std::num::NonZeroUsize::new(4096).expect("not zero");
    // SAFETY: a fresh shared anonymous mapping of one page (zeroed), used only as the one
    // `AtomicU64` below by both processes (the child gets the same mapping at the fork), and
    // unmapped once the child is reaped and `word` is no longer used.
    let page = unsafe {
        mmap_anonymous(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
        )
    }
    .expect("a shared page");
    // SAFETY: the page is mapped, aligned and zeroed, and only ever accessed atomically.
    let word = unsafe { page.cast::<AtomicU64>().as_ref() };
    let took = with_child(
        word,
        |word| {
            for i in 0..rounds {
                while word.load(Ordering::Acquire) != 2 * i + 1 {
                    std::hint::spin_loop();
                }
                word.store(2 * i + 2, Ordering::Release);
            }
        },
        |word| {
            // Timed from the first round trip's end: the child may not run at once.
            let mut t = Instant::now();
            for i in 0..rounds {
                word.store(2 * i + 1, Ordering::Release);
                while word.load(Ordering::Acquire) != 2 * i + 2 {
                    std::hint::spin_loop();
                }
                if i == 0 {
                    t = Instant::now();
                }
            }
            t.elapsed()
        },
    );
    // SAFETY: the child was reaped, and `word` is not used after this.
    unsafe { munmap(page, len.get()) }.expect("unmapping");
    took.as_nanos() as f64 / (rounds - 1) as f64
}

/// The CPU the forked side runs on (see `rpc::run` on why placement is explicit).
static SERVER_CPU: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Returns the round trip's p50 and p99, the floor of `worker.call`'s middle hop.
pub fn run(scale: Scale, results: &mut Results) -> (Duration, Duration) {
    let n = scale.pick(20_000, 2_000);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    SERVER_CPU.store(usize::from(cpus > 1), std::sync::atomic::Ordering::Relaxed);
    crate::rpc::pin(0, 0);
    let (mut ours, mut floor) = (channel_rtt(n), pipe_rtt(n));
    let (p50, f50) = (percentile(&mut ours, 50.0), percentile(&mut floor, 50.0));
    results.vs("channel_rtt_p50_us", us(p50), "us", us(f50));
    let (p99, f99) = (percentile(&mut ours, 99.0), percentile(&mut floor, 99.0));
    results.vs("channel_rtt_p99_us", us(p99), "us", us(f99));
    // Each rate is the median of `runs`, and a `#` line gives every run; the cache line's
    // round trip says how far apart the host placed the two CPUs for this run (the rates
    // across CPUs fell to a quarter, in all three runs alike, where it took 324 ns, not 55).
    let runs = scale.pick(RATE_RUNS, 1);
    results.add(
        "cpu_line_rtt_ns",
        line_rtt(scale.pick(1_000_000, 100_000)),
        "ns",
    );
    let count = scale.pick(10_000_000, 1_000_000);
    let small = median_of(runs, || channel_rate(count, 16, false));
    let decoded = median_of(runs, || channel_rate(count / 5, 16, true));
    let count_4k = scale.pick(1_000_000, 100_000);
    let floor = median_of(runs, || memcpy_rate(count_4k, 4096) / 1e9);
    let big = median_of(runs, || channel_rate(count_4k, 4096, false) * 4096.0 / 1e9);
    if runs > 1 {
        let each = |(_, all): &(f64, Vec<f64>), scale: f64| {
            let all: Vec<_> = all.iter().map(|v| format!("{:.2}", v / scale)).collect();
            all.join(", ")
        };
        println!(
            "# channel rates, {runs} runs: 16 B {} M msgs/s; decoded {} M msgs/s; 4 KiB {} GB/s (memcpy {})",
            each(&small, 1e6),
            each(&decoded, 1e6),
            each(&big, 1.0),
            each(&floor, 1.0),
        );
    }
    results.add("channel_msgs_per_s_16b", small.0, "msgs/s");
    results.add("channel_decoded_msgs_per_s_16b", decoded.0, "msgs/s");
    results.vs("channel_bytes_per_s_4k", big.0, "GB/s", floor.0);
    (p50, p99)
}

/// How many times a full run measures each of the channel's rates.
const RATE_RUNS: usize = 3;

/// The median of `runs` measurements, and each of them in order.
fn median_of(runs: usize, mut measure: impl FnMut() -> f64) -> (f64, Vec<f64>) {
    let all: Vec<f64> = (0..runs).map(|_| measure()).collect();
    let mut sorted = all.clone();
    sorted.sort_by(f64::total_cmp);
    (sorted[sorted.len() / 2], all)
}
