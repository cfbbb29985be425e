//! `daimonctl top` in a real terminal: tmux, with a fixed size, against the `log_daemon`
//! example. tmux comes from `scripts/install-test-deps`.
//!
//! Each `top` runs in a tmux server of its own (`-S <test dir>/tmux-N.sock`), killed when
//! the test ends.
//! After `top` ends, the pane's shell records its exit code and `stty -a`: a terminal
//! given back has `icanon` and `echo` on again, and tmux reports the alternate screen left.

#[path = "../../tests/common/mod.rs"]
mod common;
mod ctl;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{DEADLINE, TestDir, unix_addr, wait_until};
use ctl::{ctl, daemon, wait_looping, worker};
use nix::sys::signal::Signal;

/// A tmux server of the test's own, with one session of 110x24 running `top`.
struct Tmux {
    socket: PathBuf,
    rc: PathBuf,
    stty: PathBuf,
}

impl Tmux {
    /// Starts `daimonctl -s <dir's socket> top` in a new detached session.
    fn top(dir: &TestDir) -> Tmux {
        common::install_test_deps();
        // A server of its own each time: a killed one may still hold its socket a moment.
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let tmux = Tmux {
            socket: dir.join(&format!("tmux-{n}.sock")),
            rc: dir.join(&format!("top-{n}.rc")),
            stty: dir.join(&format!("top-{n}.stty")),
        };
        let script = format!(
            "'{}' -s '{}' top; echo $? > '{}'; stty -a > '{}'; exec sleep 600",
            env!("CARGO_BIN_EXE_daimonctl"),
            unix_addr(&dir.socket()),
            tmux.rc.display(),
            tmux.stty.display(),
        );
        let out = tmux.run(&["new-session", "-d", "-x", "110", "-y", "24", &script]);
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["-f", "/dev/null"])
            .args(args)
            .env_remove("TMUX")
            .stdin(Stdio::null())
            .output()
            .expect("running tmux")
    }

    /// What the pane shows now, a line per row.
    fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen has a row for which `row` holds; returns the screen.
    fn wait_row(&self, what: &str, row: impl Fn(&[&str]) -> bool) -> String {
        let mut screen = String::new();
        let found = std::cell::Cell::new(false);
        let deadline = std::time::Instant::now() + DEADLINE;
        while std::time::Instant::now() < deadline {
            screen = self.screen();
            if screen
                .lines()
                .any(|l| row(&l.split_whitespace().collect::<Vec<_>>()))
            {
                found.set(true);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            found.get(),
            "timed out waiting for {what}; the screen:\n{screen}"
        );
        screen
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys"];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success());
    }

    /// Waits for `top` to end and returns its exit code.
    fn exit_code(&self) -> i32 {
        wait_until("top to end", DEADLINE, || {
            fs::read_to_string(&self.rc).is_ok_and(|s| s.ends_with('\n'))
        });
        fs::read_to_string(&self.rc)
            .unwrap()
            .trim()
            .parse()
            .expect("an exit code")
    }

    /// Asserts the terminal was given back: line discipline on, main screen, cursor shown.
    fn assert_restored(&self) {
        wait_until("stty -a after top", DEADLINE, || {
            fs::read_to_string(&self.stty).is_ok_and(|s| s.contains("icanon"))
        });
        let stty = fs::read_to_string(&self.stty).unwrap();
        let flags: Vec<&str> = stty.split_whitespace().collect();
        for flag in ["icanon", "echo", "isig"] {
            assert!(flags.contains(&flag), "{flag} off after top: {stty}");
        }
        let out = self.run(&["display-message", "-p", "#{alternate_on} #{cursor_flag}"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "0 1",
            "alternate screen, cursor"
        );
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn top_shows_the_workers_follows_a_restart_and_quits_on_q() {
    let dir = TestDir::new();
    let daemon = daemon(&dir, "log_daemon", &["--workers", "2"]);
    wait_looping(&dir, &["w0", "w1"]);
    let tmux = Tmux::top(&dir);
    let pid = |name: &str| worker(&dir, name)["pid"].to_string();
    let (w0, w1) = (pid("w0"), pid("w1"));
    let screen = tmux.wait_row("both workers", |r| {
        r.starts_with(&["w1", "LOOPING", &w1, "0"])
    });
    let rows: Vec<&str> = screen.lines().collect();
    assert!(rows[0].starts_with("Log Daemon (daimon "), "{screen}");
    assert!(
        rows[1].starts_with(&format!("pid {}  up ", daemon.pid())),
        "{screen}"
    );
    let header = rows
        .iter()
        .position(|l| l.starts_with("NAME"))
        .unwrap_or_else(|| panic!("{screen}"));
    assert_eq!(
        rows[header].split_whitespace().collect::<Vec<_>>(),
        [
            "NAME", "STATE", "PID", "RESTARTS", "UPTIME", "CPU%", "RSS", "LAST", "LINE"
        ]
    );
    let w0_row: Vec<&str> = rows[header + 1].split_whitespace().collect();
    assert_eq!(w0_row[..4], ["w0", "LOOPING", &w0, "0"], "{screen}");
    // The last line: what the worker printed at spinup (worker.log).
    assert!(rows[header + 1].contains("w0 hello"), "{screen}");
    // Its memory, read in /proc: a number of K or M.
    assert!(
        w0_row[6].ends_with('M') || w0_row[6].ends_with('K'),
        "{screen}"
    );
    assert!(screen.contains("q quit"), "{screen}");

    // A restart reaches the screen through the worker's events, not a poll of the list.
    let out = ctl(&dir, &["restart", "w1"]);
    out.assert_code(0);
    let w1_new = pid("w1");
    assert_ne!(w1, w1_new);
    tmux.wait_row("w1's new pid", |r| {
        r.starts_with(&["w1", "LOOPING", &w1_new, "1"])
    });

    tmux.keys(&["q"]);
    assert_eq!(tmux.exit_code(), 0, "{}", tmux.screen());
    tmux.assert_restored();
}

#[test]
fn top_quits_on_ctrl_c_and_esc() {
    let dir = TestDir::new();
    let _daemon = daemon(&dir, "log_daemon", &[]);
    wait_looping(&dir, &["w0"]);
    for key in ["C-c", "Escape"] {
        let tmux = Tmux::top(&dir);
        tmux.wait_row("w0", |r| r.starts_with(&["w0", "LOOPING"]));
        tmux.keys(&[key]);
        assert_eq!(tmux.exit_code(), 0, "{key}: {}", tmux.screen());
        tmux.assert_restored();
    }
}

#[test]
fn top_gives_the_terminal_back_when_the_daemon_goes_away() {
    let dir = TestDir::new();
    let mut daemon = daemon(&dir, "log_daemon", &[]);
    wait_looping(&dir, &["w0"]);
    let tmux = Tmux::top(&dir);
    tmux.wait_row("w0", |r| r.starts_with(&["w0", "LOOPING"]));
    daemon.stop_with(Signal::SIGTERM);
    assert_eq!(tmux.exit_code(), 1, "{}", tmux.screen());
    tmux.assert_restored();
    // The error is on the main screen, for the user to read.
    let screen = tmux.screen();
    assert!(screen.contains("error: the daemon went away"), "{screen}");
}

#[test]
fn top_without_a_terminal_is_a_usage_error() {
    let dir = TestDir::new();
    let _daemon = daemon(&dir, "log_daemon", &[]);
    ctl(&dir, &["top"])
        .assert_code(2)
        .assert_stderr_has("needs a terminal");
    ctl(&dir, &["watch"]).assert_code(2);
}

/// The count in a `log_daemon` count line on the screen (`w0 00000012 the quick...`).
fn count_on(screen: &str) -> Option<u64> {
    let row = screen.lines().find(|l| l.starts_with("w0 "))?;
    row.split_whitespace()
        .find(|w| w.len() == 8 && w.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()
}

/// The last line is the one `worker.log` had when top started, then each
/// `daemon.log.<worker>` event's.
#[test]
fn top_follows_each_workers_last_output_line() {
    let dir = TestDir::new();
    let _daemon = daemon(
        &dir,
        "log_daemon",
        &["--mode", "count", "--looptime", "0.05"],
    );
    wait_looping(&dir, &["w0"]);
    wait_until("w0 printing", DEADLINE, || {
        !ctl(&dir, &["log", "w0", "-n", "1"]).stdout.is_empty()
    });
    let tmux = Tmux::top(&dir);
    let screen = tmux.wait_row("w0 with a line", |r| {
        r.first() == Some(&"w0") && count_on(&r.join(" ")).is_some()
    });
    let first = count_on(&screen).expect("just seen");
    tmux.wait_row("a later line", |r| {
        r.first() == Some(&"w0") && count_on(&r.join(" ")).is_some_and(|n| n > first + 5)
    });
    tmux.keys(&["q"]);
    assert_eq!(tmux.exit_code(), 0);
}
