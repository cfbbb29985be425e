//! Starting, watching and stopping the daemons under test.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// `<target>/release` (the bench binary lives in `<target>/release/deps`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the bench binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("<target>/<profile>/deps")
        .to_path_buf()
}

/// `<target>`.
pub fn target_dir() -> PathBuf {
    profile_dir().parent().expect("<target>").to_path_buf()
}

/// An example built in the bench's profile.
pub fn example(name: &str) -> PathBuf {
    let path = profile_dir().join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the benchmarks with scripts/bench, which builds the examples",
        path.display()
    );
    path
}

/// Raises the soft descriptor limit to the hard one (children inherit it).
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// A scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A new empty directory.
    pub fn new(tag: &str) -> Scratch {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("daimon-bench-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A daemon started in the foreground; killed on drop if still running.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    /// Holds the daemon's files until it is dropped.
    #[allow(dead_code)]
    pub scratch: Scratch,
}

impl Daemon {
    /// Starts `example -f` on a unix socket in a scratch dir, with `extra` arguments, and
    /// waits until it answers. Returns it and the time from launch to the first answer.
    pub fn start(example_name: &str, extra: &[&str], config: Option<Value>) -> (Daemon, Duration) {
        Daemon::start_within(example_name, extra, config, Duration::from_secs(30))
    }

    /// As [`Daemon::start`], waiting up to `patience` for the first answer (a fleet of
    /// workers is all forked before the daemon answers).
    pub fn start_within(
        example_name: &str,
        extra: &[&str],
        config: Option<Value>,
        patience: Duration,
    ) -> (Daemon, Duration) {
        let scratch = Scratch::new(example_name);
        let socket = scratch.0.join("d.sock");
        let mut cmd = Command::new(example(example_name));
        cmd.arg("-f")
            .arg("--socket")
            .arg(format!("unix://{}", socket.display()))
            .arg("--pidfile")
            .arg(scratch.0.join("d.pid"))
            .args(extra)
            .current_dir(&scratch.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(config) = config {
            let file = scratch.0.join("config.json");
            std::fs::write(&file, config.to_string()).expect("writing config");
            cmd.arg("--config").arg(file);
        }
        let launched = Instant::now();
        let child = cmd.spawn().expect("starting the daemon");
        let daemon = Daemon {
            child,
            socket,
            scratch,
        };
        let deadline = launched + patience;
        loop {
            if let Ok(mut c) = UnixStream::connect(&daemon.socket) {
                if call(&mut c, "daemon.status", json!([])).is_some() {
                    return (daemon, launched.elapsed());
                }
            }
            assert!(
                Instant::now() < deadline,
                "{example_name} did not answer in {patience:?}"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A new connection.
    pub fn connect(&self) -> UnixStream {
        UnixStream::connect(&self.socket).expect("connecting")
    }

    /// One call on a new connection.
    pub fn call(&self, method: &str, params: Value) -> Value {
        call(&mut self.connect(), method, params).unwrap_or_else(|| panic!("{method} failed"))
    }

    /// SIGTERM, then waits for the exit; returns how long it took.
    pub fn stop(mut self) -> Duration {
        let t = Instant::now();
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGTERM);
        let _ = self.child.wait();
        t.elapsed()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JSON-RPC call on `stream`; the result, or `None` on an error reply or a broken stream.
pub fn call(stream: &mut UnixStream, method: &str, params: Value) -> Option<Value> {
    let request = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
    let mut line = request.to_string();
    line.push('\n');
    stream.write_all(line.as_bytes()).ok()?;
    let mut reply = Vec::new();
    BufReader::new(stream.try_clone().ok()?)
        .read_until(b'\n', &mut reply)
        .ok()?;
    let mut reply: Value = serde_json::from_slice(&reply).ok()?;
    reply.get_mut("result").map(Value::take)
}

/// A field of `/proc/<pid>/status` or `smaps_rollup` in kB.
pub fn proc_kib(pid: i32, file: &str, field: &str) -> f64 {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(format!("/proc/{pid}/{file}")) {
        let _ = f.read_to_string(&mut text);
    }
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The daemon's workers from `worker.list`: (name, pid, state).
pub fn workers(daemon: &Daemon) -> Vec<(String, Option<i32>, u64)> {
    daemon
        .call("worker.list", json!([]))
        .as_array()
        .expect("a list")
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap_or_default().to_owned(),
                w["pid"].as_i64().map(|p| p as i32),
                w["state"].as_u64().unwrap_or(9),
            )
        })
        .collect()
}

/// Waits until every worker is LOOPING.
pub fn wait_looping(daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !workers(daemon).iter().all(|w| w.2 == 1) {
        assert!(
            Instant::now() < deadline,
            "workers did not all reach LOOPING"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}
