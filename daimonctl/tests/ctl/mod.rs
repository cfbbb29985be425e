//! What daimonctl's live tests share: running daimonctl against a test dir's daemon, in the
//! foreground or in the background, and the example daemons with workers.

#![allow(dead_code)]

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use crate::common::{self, DEADLINE, Foreground, Output, TestDir, unix_addr, wait_until};

/// `daimonctl -s unix://<dir>/daemon.sock`, run in the test dir, without `DAIMON_SOCKET`.
pub fn command(dir: &TestDir) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_daimonctl"));
    cmd.current_dir(dir.path())
        .env_remove("DAIMON_SOCKET")
        .arg("-s")
        .arg(unix_addr(&dir.socket()));
    cmd
}

/// `daimonctl -s ... ARGS...`, run to its end.
pub fn ctl(dir: &TestDir, args: &[&str]) -> Output {
    let mut cmd = command(dir);
    cmd.args(args);
    dir.run_cmd(cmd)
}

/// A foreground example daemon `name` with `args` and the test dir's standard paths, ready.
pub fn daemon(dir: &TestDir, name: &str, args: &[&str]) -> Foreground {
    let mut cmd = Command::new(common::example_named(name));
    cmd.arg("-f")
        .args(args)
        .args(dir.std_args())
        .current_dir(dir.path())
        .stdin(Stdio::null());
    let mut daemon = Foreground::spawn_cmd(dir, cmd);
    daemon.wait_ready_std(dir);
    daemon
}

/// The `worker.list` entry of `name`.
pub fn worker(dir: &TestDir, name: &str) -> Value {
    let out = ctl(dir, &["--json", "workers"]);
    out.assert_code(0);
    let list: Value = serde_json::from_str(&out.stdout).expect("workers as JSON");
    list.as_array()
        .and_then(|l| l.iter().find(|w| w["name"] == name))
        .unwrap_or_else(|| panic!("no worker {name} in {list}"))
        .clone()
}

/// Waits until every one of `names` is LOOPING.
pub fn wait_looping(dir: &TestDir, names: &[&str]) {
    wait_until("the workers looping", DEADLINE, || {
        names
            .iter()
            .all(|w| worker(dir, w)["statename"] == "LOOPING")
    });
}

/// A `daimonctl` in the background, its output in files; killed when the test ends.
pub struct Background {
    child: Child,
    status: Option<ExitStatus>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Background {
    /// Starts `daimonctl -s ... ARGS...`.
    pub fn spawn(dir: &TestDir, args: &[&str]) -> Background {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let stdout = dir.join(&format!("bg-{n}.stdout"));
        let stderr = dir.join(&format!("bg-{n}.stderr"));
        let mut cmd = command(dir);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap());
        Background {
            child: cmd.spawn().expect("spawning daimonctl"),
            status: None,
            stdout,
            stderr,
        }
    }

    /// What it printed so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until its output has a line containing `needle`, and returns that line.
    pub fn wait_line(&self, needle: &str) -> String {
        let mut found = None;
        wait_until(&format!("a line with {needle:?}"), DEADLINE, || {
            found = self
                .stdout()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_owned);
            found.is_some()
        });
        found.expect("just found")
    }

    /// Sends `sig`.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("signalling daimonctl");
    }

    /// Waits (at most [`DEADLINE`]) for it to end.
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_until("daimonctl to end", DEADLINE, || {
            self.status = self.child.try_wait().expect("waiting for daimonctl");
            self.status.is_some()
        });
        self.status.expect("just reaped")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
