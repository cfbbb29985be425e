//! Shared helpers for the process tests: a temp dir per test, the `echo_daemon` example,
//! bounded polling, and guards that kill what a test started even when it fails.
//!
//! Every wait here polls with a deadline; the only sleeps are the 10 ms poll steps.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::cell::Cell;
use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub mod conn;

/// How long any single wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The step between two polls.
const STEP: Duration = Duration::from_millis(10);

/// Unix socket paths (with their NUL) must fit in `sockaddr_un.sun_path`.
const SUN_PATH_MAX: usize = 107;

/// The `echo_daemon` example, built by `cargo test` next to the test binaries.
///
/// # Panics
///
/// If the example was not built: the tests never skip.
pub fn example() -> PathBuf {
    example_named("echo_daemon")
}

/// The example `name`, built by `cargo test` next to the test binaries.
///
/// # Panics
///
/// If the example was not built: the tests never skip.
pub fn example_named(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/debug/deps/lifecycle-xxxx -> <target>/debug/examples/<name>
    let debug = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps");
    let path = debug.join("examples").join(name);
    assert!(
        path.is_file(),
        "the example binary {} is missing: a plain `cargo test` builds it, but a filtered run \
         (`cargo test --test lifecycle`) does not; run `cargo build --examples` first",
        path.display()
    );
    path
}

/// The `daimonctl` binary of the workspace's `daimonctl` crate, built once per test binary
/// (`cargo build -q -p daimonctl`; cargo's own lock serialises concurrent builds), in the
/// workspace's target dir (`CARGO_TARGET_DIR` when set).
///
/// `env!("CARGO_BIN_EXE_daimonctl")` names the binaries of the test's own package only, and
/// daimonctl is a crate of its own, so the root's tests find it here.
///
/// # Panics
///
/// If the build fails: the tests never skip.
pub fn daimonctl() -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    // In daimonctl's own tests cargo names the binary it built for them.
    if let Some(path) = option_env!("CARGO_BIN_EXE_daimonctl") {
        return PathBuf::from(path);
    }
    let built = BUILT.get_or_init(|| {
        let root = workspace_root();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "-q", "-p", "daimonctl"])
            .current_dir(root)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running cargo build -p daimonctl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo build -p daimonctl failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|t| if t.is_absolute() { t } else { root.join(t) })
            .unwrap_or_else(|| root.join("target"));
        let path = target.join("debug").join("daimonctl");
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "cargo built daimonctl, but {} is missing",
                path.display()
            ))
        }
    });
    match built {
        Ok(path) => path.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// Polls `cond` every 10 ms until it holds.
///
/// # Panics
///
/// With `what` in the message when `timeout` passes first.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        thread::sleep(STEP);
    }
}

/// A directory of its own for one test, removed on drop.
pub struct TestDir {
    path: PathBuf,
    /// Numbers the output files of [`TestDir::run`].
    runs: Cell<u32>,
}

impl TestDir {
    /// Creates `$TMPDIR/daimon-test-<pid>-<counter>-<nanos>`.
    pub fn new() -> TestDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("daimon-test-{}-{n}-{nanos}", std::process::id());
        let path = std::env::temp_dir().join(name);
        fs::create_dir_all(&path).expect("creating the test dir");
        // The temp dir may be a symlink (macOS /tmp): use the real path, so paths the
        // daemon reports and paths the test compares are the same.
        let path = fs::canonicalize(&path).expect("canonicalizing the test dir");
        let dir = TestDir {
            path,
            runs: Cell::new(0),
        };
        assert!(
            dir.join("daemon.sock").as_os_str().len() < SUN_PATH_MAX - 8,
            "the temp dir {} is too long for unix socket paths; set TMPDIR shorter",
            dir.path.display()
        );
        dir
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The standard pid file of a test: `<dir>/daemon.pid`.
    pub fn pidfile(&self) -> PathBuf {
        self.join("daemon.pid")
    }

    /// The standard socket of a test: `<dir>/daemon.sock`.
    pub fn socket(&self) -> PathBuf {
        self.join("daemon.sock")
    }

    /// `--pidfile <dir>/daemon.pid --socket unix://<dir>/daemon.sock`.
    pub fn std_args(&self) -> Vec<String> {
        vec![
            "--pidfile".into(),
            path_str(&self.pidfile()),
            "--socket".into(),
            unix_addr(&self.socket()),
        ]
    }

    /// Writes `value` as JSON to `<dir>/name` and returns the path.
    pub fn write_config(&self, name: &str, value: &serde_json::Value) -> PathBuf {
        let path = self.join(name);
        fs::write(&path, value.to_string()).expect("writing a config file");
        path
    }

    /// A command for the example, run in this directory with stdin closed.
    pub fn command<S: AsRef<str>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(example());
        cmd.args(args.iter().map(AsRef::as_ref))
            .current_dir(&self.path)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs the example to its end (at most [`DEADLINE`]), its output captured in files so a
    /// daemon that keeps them open can never block the test.
    ///
    /// # Panics
    ///
    /// If it does not exit in time (it is killed first).
    pub fn run<S: AsRef<str>>(&self, args: &[S]) -> Output {
        self.run_cmd(self.command(args))
    }

    /// [`TestDir::run`] for a prepared command.
    pub fn run_cmd(&self, mut cmd: Command) -> Output {
        let n = self.runs.get();
        self.runs.set(n + 1);
        let out_path = self.join(&format!("run-{n}.stdout"));
        let err_path = self.join(&format!("run-{n}.stderr"));
        cmd.stdout(File::create(&out_path).expect("creating a stdout file"))
            .stderr(File::create(&err_path).expect("creating a stderr file"));
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawning the example");
        let pid = child.id();
        let mut status = None;
        let deadline = started + DEADLINE;
        while status.is_none() && Instant::now() < deadline {
            status = child.try_wait().expect("waiting for the example");
            if status.is_none() {
                thread::sleep(STEP);
            }
        }
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not exit within {DEADLINE:?}; stderr: {}",
                read_lossy(&err_path)
            );
        };
        Output {
            status,
            pid,
            elapsed: started.elapsed(),
            stdout: read_lossy(&out_path),
            stderr: read_lossy(&err_path),
        }
    }

    /// Runs a detaching launch (`-d` is added) and adopts the daemon named by `pidfile`, if
    /// any, so it is killed when the test ends whatever happened.
    pub fn launch<S: AsRef<str>>(&self, args: &[S], pidfile: &Path) -> (Output, Option<Detached>) {
        let mut all = vec!["-d".to_string()];
        all.extend(args.iter().map(|a| a.as_ref().to_string()));
        let out = self.run(&all);
        let daemon = read_pid(pidfile).filter(|&p| alive(p)).map(Detached::adopt);
        (out, daemon)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// What a finished run of the example produced.
#[derive(Debug)]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// The pid it ran as.
    pub pid: u32,
    /// How long it took.
    pub elapsed: Duration,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl Output {
    /// Panics, showing the output, unless the exit code is `code`.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.status.code(),
            Some(code),
            "expected exit code {code}, got {:?}\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless stderr has a line starting with `error: `.
    pub fn assert_error_line(&self) -> &Self {
        assert!(
            self.stderr.lines().any(|l| l.starts_with("error: ")),
            "no line starting with 'error: ' on stderr: {:?}",
            self.stderr
        );
        self
    }

    /// Panics unless stderr contains `needle`.
    pub fn assert_stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr does not contain {needle:?}: {:?}",
            self.stderr
        );
        self
    }
}

/// A daemon running in the foreground (`-f`), our child; SIGKILLed and reaped on drop if it
/// still runs. Its stderr goes to a file so a full pipe can never stall it.
pub struct Foreground {
    child: Child,
    status: Option<ExitStatus>,
    stderr_path: PathBuf,
}

impl Foreground {
    /// Starts the example with `-f` and `args`.
    pub fn spawn<S: AsRef<str>>(dir: &TestDir, args: &[S]) -> Foreground {
        Foreground::spawn_cmd(dir, dir.command(args))
    }

    /// Starts a prepared command (which should carry `-f`).
    pub fn spawn_cmd(dir: &TestDir, mut cmd: Command) -> Foreground {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let stderr_path = dir.join(&format!("fg-{n}.stderr"));
        let stdout_path = dir.join(&format!("fg-{n}.stdout"));
        cmd.stdout(File::create(&stdout_path).expect("creating a stdout file"))
            .stderr(File::create(&stderr_path).expect("creating a stderr file"));
        let child = cmd.spawn().expect("spawning the example");
        Foreground {
            child,
            status: None,
            stderr_path,
        }
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Its exit status if it has ended (reaping it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("waiting for the daemon");
        }
        self.status
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// Waits until `pidfile` holds this daemon's pid and a newline and `socket` accepts.
    ///
    /// # Panics
    ///
    /// If the daemon exits first (showing its stderr), or on timeout.
    pub fn wait_ready(&mut self, pidfile: &Path, socket: &Path) {
        let want = format!("{}\n", self.pid());
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.try_status() {
                panic!(
                    "the daemon exited before it was ready ({status}); stderr: {}",
                    self.stderr()
                );
            }
            let pid_ok = fs::read_to_string(pidfile).is_ok_and(|s| s == want);
            if pid_ok && UnixStream::connect(socket).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {DEADLINE:?} waiting for the daemon to be ready \
                 (pid file {} = {:?}, want {want:?}; socket connects: {:?}); stderr: {}",
                pidfile.display(),
                fs::read_to_string(pidfile).ok(),
                UnixStream::connect(socket).map(drop).map_err(|e| e.kind()),
                self.stderr()
            );
            thread::sleep(STEP);
        }
    }

    /// [`Foreground::wait_ready`] on the test dir's standard paths.
    pub fn wait_ready_std(&mut self, dir: &TestDir) {
        self.wait_ready(&dir.pidfile(), &dir.socket());
    }

    /// Starts the example with `-f`, `extra`, and the test dir's standard pid file and
    /// socket, and waits until it is ready.
    pub fn start(dir: &TestDir, extra: &[&str]) -> Foreground {
        let mut args: Vec<String> = vec!["-f".into()];
        args.extend(extra.iter().map(|a| a.to_string()));
        args.extend(dir.std_args());
        let mut daemon = Foreground::spawn(dir, &args);
        daemon.wait_ready_std(dir);
        daemon
    }

    /// The lines of its stderr that contain every one of `needles`.
    pub fn log_lines(&self, needles: &[&str]) -> usize {
        self.stderr()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// Sends `sig`.
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).expect("signalling the daemon");
    }

    /// Waits (at most [`DEADLINE`]) for it to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let what = format!("the daemon (pid {}) to exit", self.pid());
        wait_until(&what, DEADLINE, || self.try_status().is_some());
        self.status.expect("just reaped")
    }

    /// Sends `sig`, waits for the exit and asserts it was a clean exit 0.
    pub fn stop_with(&mut self, sig: Signal) {
        self.signal(sig);
        let status = self.wait_exit();
        assert_eq!(
            status.code(),
            Some(0),
            "after {sig} the daemon ended with {status} (signal {:?}); stderr: {}",
            status.signal(),
            self.stderr()
        );
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A detached daemon, not our child; SIGKILLed on drop if it still runs.
pub struct Detached {
    pid: i32,
}

impl Detached {
    /// Takes charge of `pid`.
    pub fn adopt(pid: i32) -> Detached {
        Detached { pid }
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `sig`.
    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid), sig).expect("signalling the daemon");
    }

    /// Waits (at most [`DEADLINE`]) until the process is gone.
    pub fn wait_gone(&self) {
        let what = format!("the detached daemon (pid {}) to exit", self.pid);
        wait_until(&what, DEADLINE, || !alive(self.pid));
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        if alive(self.pid) {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }
}

/// Whether `pid` is a running process (a zombie counts as gone).
pub fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match proc_stat(pid) {
        Some(fields) => !matches!(fields[0].as_str(), "Z" | "X" | "x"),
        None => false,
    }
}

/// The fields of `/proc/PID/stat` after the `)` closing the command name: index 0 is field 3
/// (state), so field `n` of proc(5) is index `n - 3`.
pub fn proc_stat(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(String::from).collect())
}

/// Field `n` (1-based, as proc(5) numbers them, `n >= 3`) of `/proc/PID/stat`.
pub fn proc_stat_field(pid: i32, n: usize) -> i64 {
    let fields = proc_stat(pid).unwrap_or_else(|| panic!("no /proc/{pid}/stat"));
    fields[n - 3]
        .parse()
        .unwrap_or_else(|e| panic!("field {n} of /proc/{pid}/stat: {e}"))
}

/// The pid in a pid file, if it holds one.
pub fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether a unix socket accepts a connection now.
pub fn accepts(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

/// Whether `haystack` names `pid` as a number of its own (not inside a longer number).
pub fn names_pid(haystack: &str, pid: i32) -> bool {
    let pid = pid.to_string();
    haystack.match_indices(&pid).any(|(i, _)| {
        let before = haystack[..i].chars().next_back();
        let after = haystack[i + pid.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

/// A TCP port on 127.0.0.1 that is free now and outside the kernel's ephemeral range, so
/// no outgoing connection (nor a test's own connect racing the daemon's bind, which can
/// connect a socket to itself) can take it before the daemon binds it.
pub fn free_tcp_port() -> u16 {
    let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut bounds = range
        .split_whitespace()
        .filter_map(|n| n.parse::<u32>().ok());
    let (lo, hi) = (
        bounds.next().unwrap_or(32768),
        bounds.next().unwrap_or(60999),
    );
    let (start, span) = if lo > 11024 {
        (lo - 10000, 10000)
    } else {
        (hi + 1, 65535 - hi)
    };
    static N: AtomicUsize = AtomicUsize::new(0);
    let seed = std::process::id() as usize * 7919 + N.fetch_add(1, Ordering::Relaxed) * 104729;
    (0..span as usize)
        .map(|i| start + ((seed + i) % span as usize) as u32)
        .filter_map(|port| u16::try_from(port).ok())
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free TCP port on 127.0.0.1")
}

/// `unix://` + the path.
pub fn unix_addr(path: &Path) -> String {
    format!("unix://{}", path.display())
}

/// A path as a `String` (test paths are UTF-8).
pub fn path_str(path: &Path) -> String {
    path.to_str().expect("test paths are UTF-8").to_string()
}

/// The file's inode, to tell "untouched" from "removed and made again"; `None` if it is gone.
pub fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| m.ino())
}

/// Reads everything from `reader` on a thread; `true` if it reaches end of file within
/// `timeout` (the thread is left behind otherwise, and ends when the writer closes).
pub fn reaches_eof(mut reader: impl Read + Send + 'static, timeout: Duration) -> bool {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = tx.send(reader.read_to_end(&mut sink).map(drop));
    });
    matches!(rx.recv_timeout(timeout), Ok(Ok(())))
}

/// A file's content, lossily, or an empty string if it cannot be read.
fn read_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, or `VmHWM`: the peak resident set).
///
/// # Panics
///
/// If the process or the field is not there.
pub fn status_kib(pid: i32, field: &str) -> u64 {
    proc_kib(pid, "status", field)
}

/// A `FIELD:  N kB` line of `/proc/PID/FILE` (`status`, `smaps_rollup`), in KiB.
///
/// # Panics
///
/// If the process, the file or the field is not there.
pub fn proc_kib(pid: i32, file: &str, field: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/{file}")).expect("a /proc file");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/{file}"))
}

/// The descriptors open in `pid`.
///
/// # Panics
///
/// If its `/proc/PID/fd` cannot be read.
pub fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("reading /proc/PID/fd")
        .count()
}

/// The workspace's root: the root crate's directory, also from the tests of a member crate
/// (`daimonctl/tests/` reaches this module by path).
pub fn workspace_root() -> &'static Path {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    dir.ancestors()
        .find(|d| d.join("scripts/install-test-deps").is_file())
        .unwrap_or(dir)
}

/// Runs `scripts/install-test-deps` once per test binary (quick when all is there): Debian's
/// systemd and logrotate, and the Python venv at `target/pyenv`.
///
/// # Panics
///
/// When the script fails: a test that needs these tools never skips.
pub fn install_test_deps() {
    static INSTALLED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let root = workspace_root();
    let installed = INSTALLED.get_or_init(|| {
        let out = Command::new(root.join("scripts/install-test-deps"))
            .output()
            .map_err(|e| format!("running scripts/install-test-deps: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "scripts/install-test-deps failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = installed {
        panic!("{e}");
    }
}
