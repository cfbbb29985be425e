//! The systemd notify protocol, checked with a real datagram listener standing in for systemd:
//! the daemon runs in the foreground with `NOTIFY_SOCKET` (and `WATCHDOG_USEC`) pointing at a
//! socket the test binds, and the test reads the exact messages it sends.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Foreground, TestDir, path_str};
use nix::sys::signal::Signal;

/// A stand-in for systemd's notify socket.
struct Notify {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    got: Vec<String>,
}

impl Notify {
    fn bind(dir: &TestDir) -> Notify {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("binding the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Notify {
            socket,
            path,
            got: Vec::new(),
        }
    }

    /// Reads messages until one has a line that starts with `prefix` (at most `limit`); every
    /// message read is kept in `got`. Returns the matching message.
    fn until(&mut self, prefix: &str, limit: Duration) -> String {
        let end = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        while Instant::now() < end {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.got.push(text.clone());
                if text.lines().any(|l| l.starts_with(prefix)) {
                    return text;
                }
            }
        }
        panic!("no {prefix:?} within {limit:?}; got {:?}", self.got);
    }

    /// Every message read so far that has a line starting with `prefix`.
    fn count(&self, prefix: &str) -> usize {
        self.got
            .iter()
            .filter(|m| m.lines().any(|l| l.starts_with(prefix)))
            .count()
    }
}

fn worker_daemon(dir: &TestDir, notify: &Notify, extra: &[&str], watchdog: Option<u64>) -> Command {
    let mut cmd = Command::new(common::example_named("worker_daemon"));
    cmd.arg("-f")
        .args(dir.std_args())
        .args(["--dir", &path_str(dir.path())])
        .args(extra)
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .env("NOTIFY_SOCKET", &notify.path)
        .env_remove("WATCHDOG_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID");
    match watchdog {
        Some(usec) => cmd.env("WATCHDOG_USEC", usec.to_string()),
        None => cmd.env_remove("WATCHDOG_USEC"),
    };
    cmd
}

/// Written first, as the defect it fixes: today READY=1 is sent right after the workers are
/// forked, while their spinup still runs. A worker with a slow spinup proves the order: when
/// READY=1 arrives, it must have finished its spinup (it leaves `w0.spun` at the end).
#[test]
fn ready_comes_after_every_worker_has_spun_up() {
    let dir = TestDir::new();
    let mut notify = Notify::bind(&dir);
    let cmd = worker_daemon(
        &dir,
        &notify,
        &["--workers", "2", "--spinup-delay", "1"],
        None,
    );
    let mut daemon = Foreground::spawn_cmd(&dir, cmd);
    let ready = notify.until("READY=1", Duration::from_secs(20));
    assert!(
        dir.join("w0.spun").exists() && dir.join("w1.spun").exists(),
        "READY=1 ({ready:?}) came before the workers finished their spinup; got {:?}",
        notify.got
    );
    assert!(
        ready.lines().any(|l| l == "STATUS=2 workers looping"),
        "READY=1 carries the status: {ready:?}"
    );
    daemon.signal(Signal::SIGTERM);
    notify.until("STOPPING=1", Duration::from_secs(10));
    daemon.wait_exit();
}
