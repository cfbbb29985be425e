//! Supervision with many workers (the `worker_daemon` example): a crash of a worker that is
//! not restarted stops the daemon when its policy says so, SIGTERM stops 50 workers in
//! parallel, and daimonctl drives the workers. (A worker that writes garbage into its channel
//! is killed: the supervisor's unit tests show it.)

mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    DEADLINE, Foreground, TestDir, alive, example_named, fd_count, path_str, proc_kib,
    proc_stat_field, unix_addr, wait_until,
};
use daimon::client::{Client, Protocol};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// Starts `worker_daemon -f` with `extra` on the test dir's standard paths; waits until ready.
fn start(dir: &TestDir, extra: &[&str]) -> Foreground {
    let mut cmd = Command::new(example_named("worker_daemon"));
    cmd.arg("-f")
        .args(extra)
        .args(dir.std_args())
        .current_dir(dir.path());
    let mut daemon = Foreground::spawn_cmd(dir, cmd);
    daemon.wait_ready_std(dir);
    daemon
}

/// As [`start`], with `--dir` on a fresh `marks` directory in the test dir, where each
/// worker leaves its marks (`NAME.up`, `NAME.down`...): the daemon and that directory.
fn start_marked(dir: &TestDir, extra: &[&str]) -> (Foreground, std::path::PathBuf) {
    let marks = dir.join("marks");
    std::fs::create_dir(&marks).unwrap();
    let marks_arg = path_str(&marks);
    let args: Vec<&str> = extra.iter().copied().chain(["--dir", &marks_arg]).collect();
    (start(dir, &args), marks)
}

fn client(dir: &TestDir) -> Client {
    let address = unix_addr(&dir.socket()).parse().expect("an address");
    Client::connect_with(&address, Protocol::Json, Duration::from_secs(5)).expect("connecting")
}

/// `worker.list` by name: (pid, state, restarts).
fn workers(dir: &TestDir) -> Vec<(String, Option<i32>, u64, u64)> {
    let list = client(dir)
        .call("worker.list", Value::Null)
        .expect("worker.list");
    list.as_array()
        .expect("a list")
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_owned(),
                w["pid"].as_i64().map(|p| p as i32),
                w["state"].as_u64().unwrap(),
                w["restarts"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn pid_of(dir: &TestDir, name: &str) -> Option<i32> {
    workers(dir)
        .into_iter()
        .find(|w| w.0 == name)
        .and_then(|w| w.1)
}

#[test]
fn a_crashed_worker_that_is_not_forever_stops_the_daemon_cleanly() {
    let dir = TestDir::new();
    let (mut daemon, marks) = start_marked(&dir, &["--once", "--workers", "3"]);
    wait_until("three workers looping", DEADLINE, || {
        workers(&dir).iter().all(|w| w.1.is_some() && w.2 == 1)
    });
    let victim = pid_of(&dir, "w1").unwrap();
    let others = [pid_of(&dir, "w0").unwrap(), pid_of(&dir, "w2").unwrap()];
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let status = daemon.wait_exit();
    assert_eq!(
        status.code(),
        Some(1),
        "a controlled shutdown, exit 1: {}",
        daemon.stderr()
    );
    assert!(
        !dir.pidfile().exists() && !dir.socket().exists(),
        "files removed"
    );
    for pid in others {
        wait_until("the other workers gone", DEADLINE, || !alive(pid));
    }
    // The other two spun down (their marks), the crashed one did not.
    assert!(marks.join("w0.down").exists() && marks.join("w2.down").exists());
    assert!(!marks.join("w1.down").exists());
    assert!(
        daemon.stderr().contains("cannot go on without the worker"),
        "{}",
        daemon.stderr()
    );
}

#[test]
fn sigterm_stops_fifty_workers_in_parallel() {
    let dir = TestDir::new();
    let (mut daemon, marks) = start_marked(&dir, &["--workers", "50"]);
    wait_until("fifty workers up", DEADLINE, || {
        std::fs::read_dir(&marks)
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "up"))
                })
                .count()
            })
            .unwrap_or(0)
            == 50
    });
    let pids: Vec<i32> = workers(&dir).iter().filter_map(|w| w.1).collect();
    assert_eq!(pids.len(), 50);
    daemon.stop_with(Signal::SIGTERM);
    for i in 0..50 {
        assert!(
            marks.join(format!("w{i}.down")).exists(),
            "w{i} did not spin down"
        );
        // The worker's value is dropped at the end of its process (its `Drop` runs, as the
        // user's code expects), even though the rest of the process is left to the kernel.
        assert!(
            marks.join(format!("w{i}.dropped")).exists(),
            "w{i}'s value was not dropped"
        );
    }
    for pid in pids {
        assert!(!alive(pid), "worker {pid} outlived the daemon");
    }
    assert!(!dir.pidfile().exists() && !dir.socket().exists());
}

/// A worker's stop costs it no page fault: its receiving path (code, buffer, the stack it
/// decodes on) and stdout's buffer (flushed as the process ends) are in place after its
/// first tick, so a stop of thousands of workers at once is not thousands of faults each
/// (it was one to four per worker: the ring's and the decoder's code, the buffer, the
/// stack). Each worker writes `NAME.stop-faults`: its minor faults from its last tick to
/// its spindown, the stop's whole way through the worker.
#[test]
fn a_stop_costs_a_worker_no_page_fault() {
    let dir = TestDir::new();
    let (mut daemon, marks) = start_marked(&dir, &["--workers", "4", "--looptime", "0.1"]);
    // Three turns at least: the first tick, the turn it wakes to warm up, a tick after it.
    wait_until("four workers past their warm-up", DEADLINE, || {
        let list = client(&dir)
            .call("worker.list", Value::Null)
            .expect("worker.list");
        let list = list.as_array().expect("a list").clone();
        list.len() == 4 && list.iter().all(|w| w["heartbeat"].as_u64() >= Some(4))
    });
    daemon.stop_with(Signal::SIGTERM);
    for i in 0..4 {
        let faults = std::fs::read_to_string(marks.join(format!("w{i}.stop-faults")))
            .unwrap_or_else(|e| panic!("w{i} left no stop-faults mark: {e}"));
        assert_eq!(
            faults.trim(),
            "0",
            "w{i}'s page faults from its last tick to its spindown"
        );
    }
}

#[test]
fn a_hung_worker_is_killed_and_restarted_when_hang_detection_is_on() {
    let dir = TestDir::new();
    let _daemon = start(
        &dir,
        &[
            "--workers",
            "2",
            "--looptime",
            "0.05",
            "--hang-timeout",
            "0.3",
        ],
    );
    wait_until("workers looping", DEADLINE, || {
        workers(&dir).iter().all(|w| w.1.is_some() && w.2 == 1)
    });
    let before = pid_of(&dir, "w1").unwrap();
    assert_eq!(
        client(&dir)
            .call("worker.send", json!(["w1", "hang"]))
            .unwrap(),
        json!(true)
    );
    wait_until("the hung worker replaced", DEADLINE, || {
        pid_of(&dir, "w1").is_some_and(|p| p != before)
    });
    assert!(!alive(before));
    // The other worker kept ticking and was left alone.
    assert_eq!(workers(&dir)[0].3, 0);
}

#[test]
fn daimonctl_drives_the_workers() {
    let dir = TestDir::new();
    let _daemon = start(&dir, &["--workers", "2"]);
    let ctl = |args: &[&str]| {
        let out = Command::new(common::daimonctl())
            .arg("-s")
            .arg(unix_addr(&dir.socket()))
            .args(args)
            .output()
            .expect("running daimonctl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "daimonctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    wait_until("workers looping", DEADLINE, || {
        ctl(&["workers"]).matches("LOOPING").count() == 2
    });
    let table = ctl(&["workers"]);
    assert!(
        table.starts_with("NAME") && table.contains("w0") && table.contains("w1"),
        "{table}"
    );
    assert_eq!(ctl(&["pause", "w0"]), "PAUSED\n");
    assert_eq!(ctl(&["--json", "resume", "w0"]), "1\n");
    let before = pid_of(&dir, "w1").unwrap();
    // --no-wait: answered once the daemon took it.
    assert_eq!(ctl(&["restart", "--no-wait", "w1"]), "ok\n");
    wait_until("w1 restarted", DEADLINE, || {
        pid_of(&dir, "w1").is_some_and(|p| p != before)
    });
    assert_eq!(ctl(&["send", "w0", "custom", "{\"k\": 1}"]), "ok\n");
    // By default stop and start wait for the outcome (daimonctl's tests cover the waiting).
    assert_eq!(ctl(&["stop", "w0"]), "w0 stopped (EXITED)\n");
    assert_eq!(pid_of(&dir, "w0"), None);
    let started = ctl(&["start", "w0"]);
    let pid = pid_of(&dir, "w0").expect("w0 running once start returned");
    assert_eq!(started, format!("w0 started (LOOPING, pid {pid})\n"));
    let missing = Command::new(common::daimonctl())
        .args(["-s", &unix_addr(&dir.socket()), "pause", "nope"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no worker named 'nope'"));
}

#[test]
fn a_factory_builds_each_process_of_a_worker_and_learns_of_the_last_one() {
    let dir = TestDir::new();
    let (_daemon, marks) = start_marked(&dir, &[]);
    let spawn = marks.join("w0.spawn");
    wait_until("the first process built", DEADLINE, || {
        std::fs::read_to_string(&spawn).is_ok_and(|s| s == "0 first")
    });
    let pid = pid_of(&dir, "w0").unwrap();
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    wait_until(
        "the second built, knowing the first crashed",
        DEADLINE,
        || std::fs::read_to_string(&spawn).is_ok_and(|s| s == "1 crashed"),
    );
    client(&dir)
        .call("worker.restart", json!(["w0"]))
        .expect("worker.restart");
    wait_until(
        "the third built, knowing the second ended",
        DEADLINE,
        || std::fs::read_to_string(&spawn).is_ok_and(|s| s == "2 ended"),
    );
}

/// A daemon of `n` workers with `--output output`, once all of them loop, and the
/// descriptors it holds then, with one connection open (the one that asked).
/// The parent pid of `pid` (field 4 of its stat).
fn ppid(pid: i32) -> i32 {
    proc_stat_field(pid, 4) as i32
}

fn fleet(dir: &TestDir, n: usize, output: &str) -> (Foreground, usize) {
    let count = n.to_string();
    let daemon = start(
        dir,
        &[
            "--workers",
            &count,
            "--looptime",
            "3600",
            "--output",
            output,
        ],
    );
    let mut client = client(dir);
    let mut looping = || -> bool {
        let list = client
            .call("worker.list", Value::Null)
            .expect("worker.list");
        let list = list.as_array().expect("a list");
        list.len() == n && list.iter().all(|w| w["state"] == 1)
    };
    wait_until("every worker looping", DEADLINE, &mut looping);
    // Earlier connections hung up before this call was sent: the daemon has seen them go
    // by the time it answers.
    looping();
    let fds = fd_count(daemon.pid());
    (daemon, fds)
}

/// What `w0` printed and logged after its `print` command, as (stream, text) pairs.
fn printed(dir: &TestDir, text: &str) -> Vec<(String, String)> {
    let reply = client(dir)
        .call("worker.call", json!(["w0", "print", text]))
        .expect("worker.call print");
    assert_eq!(reply, json!(true));
    let mut seen = Vec::new();
    wait_until("w0's log line", DEADLINE, || {
        let log = client(dir)
            .call("worker.log", json!({"name": "w0", "lines": 100}))
            .expect("worker.log");
        seen = log["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .filter(|l| l["text"].as_str().is_some_and(|t| t.ends_with(text)))
            .map(|l| {
                let field = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
                (field("stream"), field("text"))
            })
            .collect();
        seen.iter().any(|(_, t)| t.starts_with("log:"))
    });
    seen
}

#[test]
fn a_worker_costs_the_daemon_one_descriptor_per_output_pipe_and_one_for_its_channel() {
    for (output, per_worker, streams) in [
        ("separate", 3, &["stdout", "stderr", "log"][..]),
        ("merged", 2, &["stdout", "stdout", "log"][..]),
        ("discard", 1, &["log"][..]),
    ] {
        let (one, many) = (TestDir::new(), TestDir::new());
        let (daemon1, fds1) = fleet(&one, 1, output);
        let (daemon11, fds11) = fleet(&many, 11, output);
        assert_eq!(
            fds11 - fds1,
            10 * per_worker,
            "{output}: 1 worker, {fds1} descriptors; 11 workers, {fds11}"
        );
        // Where the worker's stdout and stderr went (all three lines are logged, merged ones
        // as stdout; a discarded output leaves only the logger's line).
        let mut got: Vec<String> = printed(&one, output).into_iter().map(|(s, _)| s).collect();
        // Pipes and the channel are read in turn: the order between them is not kept.
        wait_until("all of w0's lines", DEADLINE, || {
            got = printed(&one, output).into_iter().map(|(s, _)| s).collect();
            got.len() >= 2 * streams.len()
        });
        got.sort();
        let mut want: Vec<String> = streams
            .iter()
            .chain(streams)
            .map(|s| s.to_string())
            .collect();
        want.sort();
        assert_eq!(got, want, "{output}");
        drop((daemon1, daemon11));
    }
}

/// The soft and hard "Max open files" of `pid`.
fn nofile(pid: i32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("the nofile line");
    let mut numbers = line.split_whitespace().filter_map(|w| w.parse().ok());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

#[test]
fn the_daemon_raises_its_descriptor_limit_and_its_workers_get_the_old_one_back() {
    use std::os::unix::process::CommandExt;
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    assert!(hard > 256, "a hard limit above 256 here: {hard}");
    let dir = TestDir::new();
    let mut cmd = Command::new(example_named("worker_daemon"));
    cmd.args(["-f", "--workers", "1"])
        .args(dir.std_args())
        .current_dir(dir.path());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 256, hard)
                .map_err(std::io::Error::from)
        });
    }
    let mut daemon = Foreground::spawn_cmd(&dir, cmd);
    daemon.wait_ready_std(&dir);
    assert_eq!(nofile(daemon.pid()), (hard.min(1 << 20), hard));
    let mut worker = None;
    // Looping: past its set-up, where the limit is given back.
    wait_until("w0 looping", DEADLINE, || {
        worker = workers(&dir).first().filter(|w| w.2 == 1).and_then(|w| w.1);
        worker.is_some()
    });
    assert_eq!(
        nofile(worker.unwrap()),
        (256, hard),
        "the worker's is the old one"
    );
}

/// The daemon's children that are not workers.
fn other_children(daemon: i32, workers: &[i32]) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{daemon}/task/{daemon}/children"))
        .expect("children")
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|p| !workers.contains(p))
        .collect()
}

#[test]
fn workers_are_forked_by_the_fork_server_so_the_last_inherits_no_more_than_the_first() {
    let dir = TestDir::new();
    let n = 600;
    let (daemon, _) = fleet(&dir, n, "discard");
    let pids: Vec<i32> = workers(&dir).iter().filter_map(|w| w.1).collect();
    assert_eq!(pids.len(), n);
    // Every worker is the daemon's child; the one other child is the fork server.
    for &pid in [pids[0], pids[n - 1]].iter() {
        assert_eq!(ppid(pid), daemon.pid(), "worker {pid}'s parent");
    }
    // Forked from the daemon, the 600th worker would start as a copy of a daemon that holds
    // 599 more workers (some 170 KiB more of anonymous memory here); from the server, as
    // the first did.
    let (first, last) = (
        proc_kib(pids[0], "smaps_rollup", "Anonymous"),
        proc_kib(pids[n - 1], "smaps_rollup", "Anonymous"),
    );
    assert!(
        last <= first + 64,
        "the first worker has {first} KiB of anonymous memory, the last {last} KiB"
    );
    let server = other_children(daemon.pid(), &pids);
    assert_eq!(server.len(), 1, "one fork server: {server:?}");
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", server[0])).unwrap();
    assert!(comm.starts_with("daimon: fork"), "{comm}");
}

#[test]
fn a_worker_does_not_copy_the_daemons_table_of_workers() {
    // The daemon keeps a KiB or so for each installed worker. The fork server, forked from
    // the daemon once every worker was installed, has all of it; the workers it forks do
    // not: not the table of entries (where a worker of 600 had some 600 KiB more than the
    // one worker of a fleet of 1), nor the index of names, nor the others' templates (where
    // a worker of 2,000 had 470 KiB more, all of it copied at its fork and torn down at its
    // exit), nor the names and the server's list of the templates, which sat in the heap (53
    // bytes an entry more, with the heap around the tables, until they were mappings of
    // their own). A worker of 2,000 has what a worker alone has.
    let anonymous = |n: usize| {
        let dir = TestDir::new();
        let (daemon, _) = fleet(&dir, n, "discard");
        let pids: Vec<i32> = workers(&dir).iter().filter_map(|w| w.1).collect();
        let server = other_children(daemon.pid(), &pids);
        assert_eq!(server.len(), 1, "one fork server: {server:?}");
        let worker = pids[n - 1];
        // Directly: the server has the table marked left out of its forks (`dc` in smaps),
        // and the worker has nothing mapped there.
        // (A table of one entry holds no whole page: nothing to leave out.)
        if n > 1 {
            let (low, high) = dont_copy(server[0]).expect("a range the server keeps out");
            assert!(
                high - low >= 128 * 1024,
                "the table of {n}: {low:#x}-{high:#x}"
            );
            let maps = std::fs::read_to_string(format!("/proc/{worker}/maps")).unwrap();
            for (start, end) in ranges(&maps) {
                assert!(
                    end <= low || start >= high,
                    "the worker maps {start:#x}-{end:#x}, inside the table {low:#x}-{high:#x}"
                );
            }
        }
        proc_kib(worker, "smaps_rollup", "Anonymous")
    };
    let alone = anonymous(1);
    let n = 2000;
    let worker = anonymous(n);
    let per_entry = worker.saturating_sub(alone) as f64 * 1024.0 / n as f64;
    assert!(
        per_entry <= 16.0,
        "a worker of 1 has {alone} KiB of anonymous memory, one of {n} {worker} KiB: \
         {per_entry:.0} bytes for each other entry"
    );
}

/// The address ranges of `/proc/PID/maps` text.
fn ranges(maps: &str) -> Vec<(u64, u64)> {
    maps.lines()
        .filter_map(|l| {
            let (low, high) = l.split_whitespace().next()?.split_once('-')?;
            Some((
                u64::from_str_radix(low, 16).ok()?,
                u64::from_str_radix(high, 16).ok()?,
            ))
        })
        .collect()
}

/// The largest mapping of `pid` marked `MADV_DONTFORK` (`dc` in its smaps `VmFlags`).
fn dont_copy(pid: i32) -> Option<(u64, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut current = None;
    let mut best: Option<(u64, u64)> = None;
    for line in smaps.lines() {
        if let Some(&range) = ranges(line).first() {
            current = Some(range);
        } else if let (Some(flags), Some((low, high))) = (line.strip_prefix("VmFlags:"), current) {
            if flags.split_whitespace().any(|f| f == "dc")
                && best.is_none_or(|(l, h)| high - low > h - l)
            {
                best = Some((low, high));
            }
        }
    }
    best
}

#[test]
fn without_its_fork_server_the_daemon_forks_its_workers_itself() {
    let dir = TestDir::new();
    let (daemon, _) = fleet(&dir, 2, "separate");
    let pids: Vec<i32> = workers(&dir).iter().filter_map(|w| w.1).collect();
    let server = other_children(daemon.pid(), &pids);
    assert_eq!(server.len(), 1, "{server:?}");
    kill(Pid::from_raw(server[0]), Signal::SIGKILL).unwrap();
    // Reaped (not left a zombie, nor taken for a worker), and the workers go on.
    wait_until("the fork server reaped", DEADLINE, || !alive(server[0]));
    let old = pid_of(&dir, "w0").unwrap();
    client(&dir)
        .call("worker.restart", json!(["w0"]))
        .expect("worker.restart");
    wait_until("w0 restarted and looping", DEADLINE, || {
        workers(&dir)
            .iter()
            .any(|w| w.0 == "w0" && w.1.is_some_and(|p| p != old) && w.2 == 1)
    });
    let new = pid_of(&dir, "w0").unwrap();
    assert_eq!(ppid(new), daemon.pid());
    assert_eq!(
        client(&dir)
            .call("worker.call", json!(["w0", "echo", "still here"]))
            .unwrap(),
        json!("still here")
    );
    let log = client(&dir)
        .call("daemon.log", json!({"lines": 1000}))
        .expect("daemon.log");
    assert!(
        log.to_string().contains("the fork server is given up"),
        "the daemon says why: {log}"
    );
    assert!(workers(&dir).iter().all(|w| w.1.is_some()));
}

#[test]
fn a_worker_installed_at_run_time_is_forked_by_the_daemon_and_works() {
    let dir = TestDir::new();
    let (daemon, _) = fleet(&dir, 1, "separate");
    let early: Vec<i32> = workers(&dir).iter().filter_map(|w| w.1).collect();
    let server = other_children(daemon.pid(), &early);
    assert_eq!(server.len(), 1, "{server:?}");
    let mut c = client(&dir);
    assert_eq!(
        c.call("example.install", json!(["late"])).unwrap(),
        json!(true)
    );
    c.call("worker.start", json!(["late"]))
        .expect("worker.start");
    wait_until("late looping", DEADLINE, || {
        workers(&dir).iter().any(|w| w.0 == "late" && w.2 == 1)
    });
    let late = pid_of(&dir, "late").unwrap();
    assert_eq!(ppid(late), daemon.pid());
    assert_eq!(
        c.call("worker.call", json!(["late", "echo", "late and well"]))
            .unwrap(),
        json!("late and well")
    );
    // The fork server is still there, and still forks the ones it has.
    let all: Vec<i32> = workers(&dir).iter().filter_map(|w| w.1).collect();
    assert_eq!(other_children(daemon.pid(), &all), server);
    let old = pid_of(&dir, "w0").unwrap();
    c.call("worker.restart", json!(["w0"]))
        .expect("worker.restart");
    wait_until("w0 restarted", DEADLINE, || {
        workers(&dir)
            .iter()
            .any(|w| w.0 == "w0" && w.1.is_some_and(|p| p != old) && w.2 == 1)
    });
    let log = c
        .call("daemon.log", json!({"lines": 1000}))
        .expect("daemon.log");
    assert!(
        !log.to_string().contains("the fork server is given up"),
        "{log}"
    );
}

/// The epoll instances `pid` holds open.
fn epolls(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy() == "anon_inode:[eventpoll]")
        .count()
}

/// Neither the fork server nor a worker holds the daemon's epoll instance. One that did could
/// add, modify or remove the daemon's registrations (`epoll_ctl` on it, with descriptors of
/// its own or copies of the daemon's), or take its one-shot wake-ups: it held it because the
/// daemon, listing its descriptors before and after making its poller to know which were the
/// poller's, counted the listing's own directory descriptor, whose number the poller's epoll
/// then took.
#[test]
fn no_worker_holds_the_daemons_poller() {
    let dir = TestDir::new();
    let (daemon, _) = fleet(&dir, 3, "separate");
    let pids: Vec<i32> = workers(&dir).iter().filter_map(|w| w.1).collect();
    assert_eq!(pids.len(), 3);
    assert_eq!(epolls(daemon.pid()), 1, "the daemon's own poller");
    let server = other_children(daemon.pid(), &pids);
    assert_eq!(server.len(), 1, "one fork server: {server:?}");
    assert_eq!(
        epolls(server[0]),
        0,
        "the fork server polls no epoll instance"
    );
    for pid in pids {
        assert_eq!(epolls(pid), 1, "worker {pid}: its own poller only");
    }
}

/// The pipes `pid` holds: (descriptor, pipe inode, open for writing, close-on-exec).
fn pipes(pid: i32) -> Vec<(i32, u64, bool, bool)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let inode = target
                .to_str()?
                .strip_prefix("pipe:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())?;
            Some((fd, inode, flags & 3 != 0, flags & 0o2_000_000 != 0))
        })
        .collect()
}

/// The daemon's shutdown reaches every worker through one pipe, the stop line: every worker
/// (forked by the fork server or, installed late, by the daemon) and the fork server hold
/// its read end, close-on-exec; the daemon alone holds its write end, so that closing it is
/// the end of file for all. Then SIGTERM stops every one of them through their spindown.
#[test]
fn the_stop_line_is_read_by_every_worker_and_written_by_the_daemon_alone() {
    let dir = TestDir::new();
    let (mut daemon, marks) = start_marked(&dir, &["--workers", "2", "--looptime", "3600"]);
    wait_until("two workers looping", DEADLINE, || {
        workers(&dir).iter().all(|w| w.1.is_some() && w.2 == 1)
    });
    let early: Vec<i32> = workers(&dir).iter().filter_map(|w| w.1).collect();
    let server = other_children(daemon.pid(), &early);
    assert_eq!(server.len(), 1, "one fork server: {server:?}");
    let mut c = client(&dir);
    c.call("example.install", json!(["late"]))
        .expect("example.install");
    c.call("worker.start", json!(["late"]))
        .expect("worker.start");
    wait_until("late looping", DEADLINE, || {
        workers(&dir).iter().any(|w| w.0 == "late" && w.2 == 1)
    });
    let all: Vec<i32> = workers(&dir).iter().filter_map(|w| w.1).collect();
    assert_eq!(all.len(), 3);
    // The line: the one pipe the daemon writes that every worker holds (of the daemon's
    // own: not one it inherited from this test's environment).
    let inherited: Vec<u64> = pipes(std::process::id() as i32)
        .iter()
        .map(|p| p.1)
        .collect();
    let written: Vec<u64> = pipes(daemon.pid())
        .iter()
        .filter(|p| p.2 && !inherited.contains(&p.1))
        .map(|p| p.1)
        .collect();
    let lines: Vec<u64> = written
        .iter()
        .copied()
        .filter(|&inode| all.iter().all(|&w| pipes(w).iter().any(|p| p.1 == inode)))
        .collect();
    let [line] = lines[..] else {
        panic!("one pipe written by the daemon and held by every worker: {lines:?}")
    };
    let daemon_ends: Vec<_> = pipes(daemon.pid())
        .into_iter()
        .filter(|p| p.1 == line)
        .collect();
    assert_eq!(
        daemon_ends.len(),
        2,
        "its read and write ends: {daemon_ends:?}"
    );
    assert!(
        daemon_ends.iter().all(|p| p.3),
        "close-on-exec: {daemon_ends:?}"
    );
    for pid in all.iter().chain(&server) {
        let ends: Vec<_> = pipes(*pid).into_iter().filter(|p| p.1 == line).collect();
        assert_eq!(ends.len(), 1, "process {pid}: {ends:?}");
        assert!(
            !ends[0].2,
            "process {pid} holds the read end only: {ends:?}"
        );
        assert!(ends[0].3, "process {pid}: close-on-exec: {ends:?}");
    }
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", daemon.stderr());
    // Stopped by the line, not by the SIGTERM that follows at half the shutdown timeout
    // (which would end them through their spindown too).
    assert!(
        !daemon.stderr().contains("did not stop"),
        "{}",
        daemon.stderr()
    );
    for name in ["w0", "w1", "late"] {
        assert!(
            marks.join(format!("{name}.down")).exists(),
            "{name} ran its spindown"
        );
    }
    for pid in all {
        assert!(!alive(pid), "worker {pid} ended");
    }
}
