//! Logs: a worker's stdout and stderr captured and logged with its name, the rings behind
//! `worker.log` and `daemon.log`, the JSON and journal formats, reopening for logrotate (with
//! logrotate itself), and what a detached daemon says about where its log goes. Against the
//! `log_daemon` example.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::conn::{request, unix};
use common::{DEADLINE, Detached, Foreground, TestDir, fd_count, path_str, read_pid, wait_until};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// The `log_daemon` example with `args`, run in `dir` on its standard paths.
fn command(dir: &TestDir, args: &[&str]) -> Command {
    let mut cmd = Command::new(common::example_named("log_daemon"));
    cmd.args(args)
        .args(dir.std_args())
        .current_dir(dir.path())
        .stdin(Stdio::null());
    cmd
}

/// A foreground `log_daemon` with `config` and `args`, ready.
fn foreground(dir: &TestDir, config: Value, args: &[&str]) -> Foreground {
    let file = path_str(&dir.write_config("config.json", &config));
    let mut all = vec!["-f", "--config", &file];
    all.extend_from_slice(args);
    let mut daemon = Foreground::spawn_cmd(dir, command(dir, &all));
    daemon.wait_ready_std(dir);
    daemon
}

/// A detached `log_daemon` with `config` and `args`: what the launcher printed, and the
/// daemon.
fn detached(dir: &TestDir, config: Value, args: &[&str]) -> (String, Detached) {
    let file = path_str(&dir.write_config("config.json", &config));
    let mut all = vec!["-d", "--config", &file];
    all.extend_from_slice(args);
    let out = dir.run_cmd(command(dir, &all));
    let pid = read_pid(&dir.pidfile())
        .unwrap_or_else(|| panic!("no daemon ({}): {} {}", out.status, out.stdout, out.stderr));
    let daemon = Detached::adopt(pid);
    assert!(out.status.success(), "{}", out.stderr);
    (out.stdout, daemon)
}

/// One call over the control socket; the result (panics on an error reply).
fn call(dir: &TestDir, method: &str, params: Value) -> Value {
    let reply = call_raw(dir, method, params);
    assert!(reply.get("error").is_none(), "{method}: {reply}");
    reply["result"].clone()
}

fn call_raw(dir: &TestDir, method: &str, params: Value) -> Value {
    let mut conn = unix(dir);
    conn.send(&request(method, params, 1));
    conn.json()
}

fn texts(log: &Value) -> Vec<String> {
    log["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("no lines: {log}"))
        .iter()
        .map(|l| l["text"].as_str().expect("a text").to_owned())
        .collect()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn stdout_and_stderr_reach_the_log_file_with_the_worker_name() {
    // Before: a worker's stdout and stderr went to /dev/null in a detached daemon (and
    // straight to the terminal, unnamed, in the foreground).
    let dir = TestDir::new();
    let logfile = dir.join("daemon.log");
    let config = json!({"logfile": path_str(&logfile)});
    let (_, daemon) = detached(&dir, config, &["--workers", "2", "--mode", "hello"]);
    wait_until("both workers' lines in the log file", DEADLINE, || {
        let text = read(&logfile);
        ["w0", "w1"].iter().all(|w| {
            text.lines().any(|l| {
                l.contains(&format!("{w} hello stdout"))
                    && l.contains(&format!("worker: {w}"))
                    && l.contains("stream: stdout")
            }) && text
                .lines()
                .any(|l| l.contains(&format!("{w} hello stderr")) && l.contains("stream: stderr"))
        })
    });
    daemon.signal(Signal::SIGTERM);
    daemon.wait_gone();
}

#[test]
fn worker_log_returns_the_streams_and_follows_with_after() {
    let dir = TestDir::new();
    let _daemon = foreground(&dir, json!({}), &["--mode", "hello"]);
    wait_until("three lines in w0's ring", DEADLINE, || {
        texts(&call(&dir, "worker.log", json!({"name": "w0"}))).len() >= 3
    });
    let log = call(&dir, "worker.log", json!({"name": "w0"}));
    let lines = log["lines"].as_array().unwrap();
    let stream_of = |text: &str| {
        lines
            .iter()
            .find(|l| l["text"] == text)
            .map(|l| (l["stream"].clone(), l["level"].clone()))
            .unwrap_or_else(|| panic!("no {text:?} in {log}"))
    };
    assert_eq!(stream_of("w0 hello stdout"), (json!("stdout"), Value::Null));
    assert_eq!(stream_of("w0 hello stderr"), (json!("stderr"), Value::Null));
    assert_eq!(stream_of("w0 hello log"), (json!("log"), json!("INFO")));
    assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'), "{log}");
    assert_eq!(log["dropped"], 0);
    // Following: nothing past `next`; then by position.
    let next = log["next"].as_u64().unwrap();
    let tail = call(&dir, "worker.log", json!({"name": "w0", "after": next}));
    assert!(texts(&tail).is_empty(), "{tail}");
    assert_eq!(tail["next"], next);
    let first = call(&dir, "worker.log", json!(["w0", 1, 0]));
    assert_eq!(first["lines"][0]["seq"], 1, "{first}");
    assert_eq!(first["next"], 1);
    // An unknown worker: -32000 naming it.
    let reply = call_raw(&dir, "worker.log", json!({"name": "nope"}));
    assert_eq!(reply["error"]["code"], -32000, "{reply}");
    assert!(
        reply["error"]["message"].as_str().unwrap().contains("nope"),
        "{reply}"
    );
}

#[test]
fn daemon_log_keeps_the_daemons_own_lines() {
    let dir = TestDir::new();
    let _daemon = foreground(&dir, json!({}), &["--mode", "hello"]);
    wait_until("the ready line in daemon.log", DEADLINE, || {
        texts(&call(&dir, "daemon.log", json!({})))
            .iter()
            .any(|t| t.starts_with("ready"))
    });
    let log = call(&dir, "daemon.log", json!({"lines": 1000}));
    let all = texts(&log);
    assert!(all.iter().any(|t| t.starts_with("worker started")), "{log}");
    // A worker's output lines are in its own ring, not the daemon's.
    assert!(!all.iter().any(|t| t.contains("hello stdout")), "{log}");
    let next = log["next"].as_u64().unwrap();
    call(&dir, "worker.restart", json!({"name": "w0"}));
    wait_until("new lines past the cursor", DEADLINE, || {
        let tail = call(&dir, "daemon.log", json!({"after": next}));
        texts(&tail).iter().any(|t| t.starts_with("worker started"))
            && tail["lines"][0]["seq"].as_u64().unwrap() == next + 1
    });
}

#[test]
fn a_partial_last_line_is_flushed_when_the_worker_exits() {
    let dir = TestDir::new();
    let daemon = foreground(&dir, json!({}), &["--mode", "partial"]);
    wait_until("the partial line in w0's ring", DEADLINE, || {
        texts(&call(&dir, "worker.log", json!({"name": "w0"})))
            .iter()
            .any(|t| t == "w0 partial")
    });
    wait_until("the partial line in the log", DEADLINE, || {
        daemon.log_lines(&["w0 partial", "stream: stdout"]) == 1
    });
}

#[test]
fn the_ring_keeps_loglines_and_counts_the_rest() {
    let dir = TestDir::new();
    let args = ["--mode", "count", "--lines", "50", "--batch", "50"];
    let _daemon = foreground(&dir, json!({"loglines": 5}), &args);
    wait_until("line 50 in the ring", DEADLINE, || {
        texts(&call(&dir, "worker.log", json!({"name": "w0"})))
            .last()
            .is_some_and(|t| t.starts_with("w0 00000050"))
    });
    let log = call(&dir, "worker.log", json!({"name": "w0", "lines": 100}));
    let got = texts(&log);
    assert_eq!(got.len(), 5, "{log}");
    assert!(got[0].starts_with("w0 00000046"), "{log}");
    assert_eq!(log["dropped"], 45, "{log}");
    let bad = call_raw(&dir, "worker.log", json!({"name": "w0", "lines": -1}));
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
}

#[test]
fn json_lines_parse_with_their_fields() {
    let dir = TestDir::new();
    let logfile = dir.join("daemon.log");
    let config = json!({"logfile": path_str(&logfile), "logformat": "json"});
    let (_, daemon) = detached(&dir, config, &["--mode", "hello"]);
    wait_until("w0's stdout line in the log", DEADLINE, || {
        read(&logfile).contains("w0 hello stdout")
    });
    // The daemon's ring has its lines in the JSON format too.
    let own = texts(&call(&dir, "daemon.log", json!({})));
    assert!(own.iter().any(|t| t.starts_with("ready")), "{own:?}");
    daemon.signal(Signal::SIGTERM);
    daemon.wait_gone();
    let text = read(&logfile);
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    for r in &records {
        assert!(r["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{r}");
        assert!(r["level"].is_string() && r["msg"].is_string(), "{r}");
    }
    let line = records
        .iter()
        .find(|r| r["msg"] == "w0 hello stdout")
        .unwrap_or_else(|| panic!("no stdout line: {text}"));
    assert_eq!(line["worker"], "w0");
    assert_eq!(line["stream"], "stdout");
    assert_eq!(line["level"], "INFO");
    assert!(
        records
            .iter()
            .any(|r| r["msg"] == "ready" && r["pid"].is_number())
    );
    // The daemon's ring works in the JSON format too (it kept running: shown by daemon.log
    // in the foreground test; here the file had every line).
    assert!(records.iter().any(|r| r["msg"] == "stopped"), "{text}");
}

#[test]
fn under_the_journal_lines_have_priority_prefixes_and_no_timestamps() {
    use std::os::unix::fs::MetadataExt;
    let dir = TestDir::new();
    let file = path_str(&dir.write_config("config.json", &json!({})));
    let stderr = dir.join("journal.stderr");
    let run = |journal_stream: &dyn Fn(&fs::Metadata) -> String| -> String {
        let out = fs::File::create(&stderr).unwrap();
        let meta = out.metadata().unwrap();
        let mut cmd = command(&dir, &["-f", "--config", &file, "--mode", "hello"]);
        cmd.env("JOURNAL_STREAM", journal_stream(&meta))
            .stdout(Stdio::null())
            .stderr(out);
        let mut child = cmd.spawn().expect("spawning the daemon");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        wait_until("w0's stderr line", DEADLINE, || {
            read(&stderr).contains("w0 hello stderr")
        });
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        let status = child.wait().expect("waiting for the daemon");
        assert!(status.success(), "{status}");
        read(&stderr)
    };
    // stderr is the stream JOURNAL_STREAM names (DEVICE:INODE): journal lines.
    let text = run(&|m| format!("{}:{}", m.dev(), m.ino()));
    for line in text.lines() {
        assert!(
            line.starts_with("<6>") || line.starts_with("<4>") || line.starts_with("<7>"),
            "{line:?} in {text}"
        );
    }
    assert!(text.lines().any(|l| l.starts_with("<6>ready ")), "{text}");
    assert!(
        text.contains("<6>w0 hello stdout stream=stdout worker=w0"),
        "{text}"
    );
    // Another stream (stderr redirected away from the journal): the usual text.
    let text = run(&|m| format!("{}:{}", m.dev(), m.ino() + 1));
    assert!(!text.contains("<6>"), "{text}");
    assert!(text.contains("INFO w0 hello stdout"), "{text}");
}

#[test]
fn reopenlogs_moves_to_a_new_file_at_the_path() {
    let dir = TestDir::new();
    let logfile = dir.join("daemon.log");
    let config = json!({"logfile": path_str(&logfile)});
    let (_, daemon) = detached(&dir, config, &["--mode", "hello"]);
    wait_until("the ready line", DEADLINE, || {
        read(&logfile).contains("ready")
    });
    fs::rename(&logfile, dir.join("daemon.log.1")).unwrap();
    let reply = call(&dir, "daemon.reopenlogs", json!([]));
    assert_eq!(reply, json!({"reopened": true, "path": path_str(&logfile)}));
    call(&dir, "worker.restart", json!({"name": "w0"}));
    wait_until(
        "the restarted worker's line in the new file",
        DEADLINE,
        || read(&logfile).contains("w0 hello stdout"),
    );
    assert!(!read(&dir.join("daemon.log.1")).contains("worker restarted"));
    daemon.signal(Signal::SIGTERM);
    daemon.wait_gone();
    // In the foreground there is no file of its own to reopen.
    let dir = TestDir::new();
    let _daemon = foreground(&dir, json!({}), &["--mode", "hello"]);
    let reply = call(&dir, "daemon.reopenlogs", json!([]));
    assert_eq!(reply, json!({"reopened": false, "path": null}));
}

#[test]
fn a_detached_daemon_says_where_its_log_goes() {
    // Before: a detached daemon without a logfile logged nowhere and said nothing.
    let dir = TestDir::new();
    let (stdout, daemon) = detached(&dir, json!({}), &["--mode", "hello"]);
    if Path::new("/dev/log").exists() {
        assert!(
            stdout.contains("logging to syslog (ident Log Daemon)"),
            "{stdout}"
        );
    } else {
        assert!(
            stdout.contains("no logfile and no syslog (/dev/log): logs are discarded; set logfile"),
            "{stdout}"
        );
    }
    daemon.signal(Signal::SIGTERM);
    daemon.wait_gone();
    let dir = TestDir::new();
    let logfile = dir.join("d.log");
    let (stdout, daemon) = detached(&dir, json!({"logfile": path_str(&logfile)}), &[]);
    assert!(
        stdout.contains(&format!("logging to {}", logfile.display())),
        "{stdout}"
    );
    daemon.signal(Signal::SIGTERM);
    daemon.wait_gone();
}

#[test]
fn restarts_leak_no_descriptor() {
    let dir = TestDir::new();
    let daemon = foreground(&dir, json!({}), &["--workers", "2", "--mode", "hello"]);
    let pid = daemon.pid();
    let started = |n: usize| {
        texts(&call(&dir, "daemon.log", json!({"lines": 1000})))
            .iter()
            .filter(|t| t.starts_with("worker started"))
            .count()
            >= n
    };
    wait_until("both workers started", DEADLINE, || started(2));
    let before = fd_count(pid);
    for round in 0..5 {
        call(&dir, "worker.restart", json!({"name": "w0"}));
        wait_until("the restart", DEADLINE, || started(3 + round));
    }
    wait_until("w0's sixth hello", DEADLINE, || {
        texts(&call(
            &dir,
            "worker.log",
            json!({"name": "w0", "lines": 1000}),
        ))
        .iter()
        .filter(|t| *t == "w0 hello stdout")
        .count()
            == 6
    });
    // The test's own connections close soon after each call: wait for them, then no more
    // descriptors than before (each start opens two pipes and a channel: a leak would show).
    wait_until(
        "no more descriptors than before the restarts",
        DEADLINE,
        || fd_count(pid) <= before,
    );
}

#[test]
fn a_flooding_worker_is_bounded_and_the_daemon_serves() {
    let dir = TestDir::new();
    let file = path_str(&dir.write_config("config.json", &json!({"loglines": 100})));
    let args = [
        "-f",
        "--config",
        &file,
        "--mode",
        "count",
        "--batch",
        "20000",
        "--looptime",
        "0.001",
    ];
    // Its log to /dev/null: the flood must not fill the disk.
    let mut cmd = command(&dir, &args);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawning the daemon");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = Kill(&mut child);
    let pid = guard.0.id() as i32;
    wait_until("the socket", DEADLINE, || common::accepts(&dir.socket()));
    let dropped = || {
        call(&dir, "worker.log", json!({"name": "w0", "lines": 3}))["dropped"]
            .as_u64()
            .unwrap()
    };
    wait_until("lines dropping out of the ring", DEADLINE, || {
        dropped() > 10_000
    });
    let first = dropped();
    let rss = common::status_kib(pid, "VmRSS");
    wait_until("more lines dropped", DEADLINE, || {
        dropped() > first + 10_000
    });
    // Others are served, promptly, while it floods.
    let status = call(&dir, "daemon.status", json!([]));
    assert_eq!(status["pid"], pid, "{status}");
    let log = call(&dir, "worker.log", json!({"name": "w0", "lines": 3}));
    let got = texts(&log);
    assert_eq!(got.len(), 3, "{log}");
    assert!(got.iter().all(|t| t.starts_with("w0 ")), "{log}");
    let peak = common::status_kib(pid, "VmHWM");
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} KiB (RSS {rss} KiB at first)"
    );
    drop(guard);
}

/// The venv and Debian tools the production tests need, installed once per test binary.
fn install_test_deps() {
    common::install_test_deps();
}

/// Rotates `logfile` with logrotate `times` times while the worker prints.
fn rotate(dir: &TestDir, logfile: &Path, postrotate: &str, times: usize) {
    let conf = dir.join("logrotate.conf");
    fs::write(
        &conf,
        format!(
            "{} {{\n  rotate 100\n  create 0640\n  missingok\n  postrotate\n    {postrotate}\n  endscript\n}}\n",
            logfile.display()
        ),
    )
    .unwrap();
    let state = dir.join("logrotate.state");
    for round in 1..=times {
        let before = count_lines(logfile);
        wait_until("the worker to print more", DEADLINE, || {
            count_lines(logfile) > before + 20
        });
        let out = Command::new("/usr/sbin/logrotate")
            .arg("-s")
            .arg(&state)
            .arg("-f")
            .arg(&conf)
            .output()
            .expect("running logrotate");
        assert!(
            out.status.success(),
            "logrotate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rotated = PathBuf::from(format!("{}.1", logfile.display()));
        assert!(rotated.exists(), "round {round}: no {}", rotated.display());
    }
}

fn count_lines(path: &Path) -> usize {
    read(path).lines().count()
}

/// The numbers of w0's `count` lines across the rotated files (oldest first) and the
/// current one.
fn numbers(logfile: &Path, rotations: usize) -> Vec<u64> {
    let mut files: Vec<PathBuf> = (1..=rotations)
        .rev()
        .map(|n| PathBuf::from(format!("{}.{n}", logfile.display())))
        .collect();
    files.push(logfile.to_owned());
    let mut out = Vec::new();
    for f in files {
        for line in read(&f).lines() {
            if let Some(rest) = line.split(" w0 ").nth(1) {
                if let Some(n) = rest.split_whitespace().next().and_then(|n| n.parse().ok()) {
                    if line.contains("stream: stdout") {
                        out.push(n);
                    }
                }
            }
        }
    }
    out
}

fn no_line_lost(postrotate: impl Fn(&TestDir) -> String) {
    install_test_deps();
    let dir = TestDir::new();
    let logfile = dir.join("daemon.log");
    let config = json!({"logfile": path_str(&logfile)});
    let args = ["--mode", "count", "--batch", "5", "--looptime", "0.002"];
    let (_, daemon) = detached(&dir, config, &args);
    let rotations = 4;
    rotate(&dir, &logfile, &postrotate(&dir), rotations);
    // Let it write a little into the last file, then stop it (the worker stops first, so
    // its last line is logged before the daemon exits).
    let before = count_lines(&logfile);
    wait_until("lines after the last rotation", DEADLINE, || {
        count_lines(&logfile) > before + 20
    });
    daemon.signal(Signal::SIGTERM);
    daemon.wait_gone();
    let got = numbers(&logfile, rotations);
    assert!(got.len() > 100, "{} lines", got.len());
    let want: Vec<u64> = (1..=got.len() as u64).collect();
    if got != want {
        let first_bad = got.iter().zip(&want).position(|(a, b)| a != b);
        panic!(
            "lines lost or repeated near index {first_bad:?} of {}",
            got.len()
        );
    }
    for n in 1..=rotations {
        let f = PathBuf::from(format!("{}.{n}", logfile.display()));
        assert!(numbers_in(&f) > 0, "{} has no line", f.display());
    }
}

fn numbers_in(path: &Path) -> usize {
    read(path)
        .lines()
        .filter(|l| l.contains("stream: stdout"))
        .count()
}

#[test]
fn logrotate_with_sigusr1_loses_no_line() {
    no_line_lost(|dir| format!("kill -USR1 $(cat {})", dir.pidfile().display()));
}

#[test]
fn logrotate_with_daemon_reopenlogs_loses_no_line() {
    no_line_lost(|dir| {
        format!(
            "{} --socket {} call daemon.reopenlogs",
            common::daimonctl().display(),
            common::unix_addr(&dir.socket())
        )
    });
}
