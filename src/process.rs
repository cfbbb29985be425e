//! The process: niceness, detaching with a readiness pipe, systemd notifications.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;

use nix::libc;
use nix::sys::stat::{Mode, umask};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, chdir, dup2_stderr, dup2_stdin, dup2_stdout, fork, setsid};

use crate::error::{Error, Result};

/// The calling process's id.
pub fn pid() -> i32 {
    std::process::id() as i32
}

/// The process's niceness.
///
/// # Errors
///
/// The operating system's error.
pub fn niceness() -> io::Result<i32> {
    // getpriority can legitimately return -1, so errno must be cleared and checked.
    nix::errno::Errno::clear();
    // SAFETY: getpriority(2) reads the calling process's priority; no memory is involved.
    let n = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    if n == -1 && nix::errno::Errno::last_raw() != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n)
}

/// Sets the process's niceness to the absolute value `value` (-20 to 19).
///
/// # Errors
///
/// [`Error::Niceness`], saying that root or `CAP_SYS_NICE` is needed when lowering it is
/// not permitted.
pub fn set_niceness(value: i32) -> Result<()> {
    if niceness().ok() == Some(value) {
        return Ok(());
    }
    // SAFETY: setpriority(2) on the calling process; no memory is involved.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, value) };
    if rc != 0 {
        return Err(Error::Niceness {
            value,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The number of threads of the calling process (Linux), or `None` where unknown.
pub fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

/// Refuses to go on when the process has more than one thread: `fork()` copies only the
/// calling thread, and the child of a threaded parent may deadlock on any lock another thread
/// held.
///
/// # Errors
///
/// [`Error::Threaded`] with the thread count.
pub fn ensure_single_threaded() -> Result<()> {
    match thread_count() {
        Some(n) if n > 1 => Err(Error::Threaded(n)),
        _ => Ok(()),
    }
}

/// The launcher's end of the readiness pipe.
pub struct Launcher {
    read: File,
}

impl Launcher {
    /// Waits until the daemon reports: its pid when ready, its error otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::Daemon`] with the daemon's own message, or saying it exited without one.
    pub fn wait(mut self) -> Result<i32> {
        let mut text = String::new();
        self.read
            .read_to_string(&mut text)
            .map_err(|e| Error::Daemon(format!("reading the daemon's readiness: {e}")))?;
        if let Some(pid) = text.strip_prefix("READY ") {
            return pid
                .trim()
                .parse()
                .map_err(|_| Error::Daemon(format!("bad readiness message {text:?}")));
        }
        match text.strip_prefix("ERROR ") {
            Some(message) => Err(Error::Daemon(message.trim_end().to_owned())),
            None => Err(Error::Daemon(
                "the daemon exited before it was ready".to_owned(),
            )),
        }
    }
}

/// The daemon's end of the readiness pipe.
pub struct Readiness {
    write: Option<File>,
}

impl Readiness {
    /// Tells the launcher the daemon is ready; it then exits 0.
    pub fn ready(&mut self) {
        self.send(&format!("READY {}\n", pid()));
    }

    /// Moves the pipe out (the daemon's notifier tells the launcher once the workers are up).
    pub(crate) fn take(&mut self) -> Readiness {
        Readiness {
            write: self.write.take(),
        }
    }

    /// Tells the launcher the daemon failed; it prints `error` and exits 1.
    pub fn failed(&mut self, error: &Error) {
        self.send(&format!("ERROR {error}"));
    }

    fn send(&mut self, message: &str) {
        if let Some(mut w) = self.write.take() {
            // The launcher may be gone (killed): nothing more to tell then.
            let _ = w.write_all(message.as_bytes());
            crate::sys::disown(std::os::fd::AsRawFd::as_raw_fd(&w));
        }
    }
}

/// What [`daemonize`] returns in each process that comes back from it.
pub enum Detached {
    /// The launching process: wait on this, then exit.
    Launcher(Launcher),
    /// The daemon: detached, in `/`, with the new umask and stdio on `/dev/null`.
    Daemon(Readiness),
}

/// Detaches: fork, `setsid`, fork again, `chdir /`, `umask`, stdio to `/dev/null`.
///
/// The launching process gets a [`Launcher`] to wait on; the intermediate process exits; the
/// daemon gets a [`Readiness`] to report through. Paths must be absolute before this.
///
/// # Errors
///
/// [`Error::Threaded`] if the process has threads; the operating system's errors.
pub fn daemonize(mask: u32) -> Result<Detached> {
    ensure_single_threaded()?;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let devnull = File::options().read(true).write(true).open("/dev/null")?;
    // SAFETY: the process is single-threaded (checked above), so the child may run any code.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => {
            drop(write);
            // The intermediate child exits right after its own fork: reap it.
            let _ = waitpid(child, None);
            Ok(Detached::Launcher(Launcher {
                read: File::from(read),
            }))
        }
        ForkResult::Child => {
            drop(read);
            let mut write = File::from(write);
            if let Err(e) = setsid() {
                let _ = write!(write, "ERROR setsid: {e}");
                exit_now(1);
            }
            // SAFETY: still single-threaded: the child of a single-threaded process.
            match unsafe { fork() } {
                Err(e) => {
                    let _ = write!(write, "ERROR second fork: {e}");
                    exit_now(1);
                }
                Ok(ForkResult::Parent { .. }) => exit_now(0),
                Ok(ForkResult::Child) => {}
            }
            crate::sys::own(std::os::fd::AsRawFd::as_raw_fd(&write));
            let mut readiness = Readiness { write: Some(write) };
            if let Err(e) = detach_stdio(mask, devnull) {
                readiness.failed(&e);
                exit_now(1);
            }
            Ok(Detached::Daemon(readiness))
        }
    }
}

fn detach_stdio(mask: u32, devnull: File) -> Result<()> {
    chdir("/").map_err(|e| Error::path("/", "changing directory to", e.into()))?;
    umask(Mode::from_bits_truncate(mask as libc::mode_t));
    let fd = OwnedFd::from(devnull);
    dup2_stdin(&fd)?;
    dup2_stdout(&fd)?;
    dup2_stderr(&fd)?;
    Ok(())
}

/// Exits at once, without running destructors or flushing buffers that belong to the parent.
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// Sends a state line of your own to systemd when `NOTIFY_SOCKET` is set (`Type=notify`
/// services), e.g. `STATUS=indexing 40%`; does nothing otherwise. The daemon sends its own
/// lines itself (`READY=1` once every worker is up, `RELOADING=1`, `STOPPING=1`, `WATCHDOG=1`,
/// `EXTEND_TIMEOUT_USEC`): do not send those. Abstract sockets (`@name`) are reached too.
///
/// # Errors
///
/// The socket's error when the variable is set but the message cannot be sent.
pub fn notify_systemd(state: &str) -> io::Result<()> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    send_notification(&target, state)
}

pub(crate) fn send_notification(target: &OsString, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = target.as_bytes();
    let socket = UnixDatagram::unbound()?;
    match bytes.first() {
        Some(b'@') => {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            {
                #[cfg(target_os = "android")]
                use std::os::android::net::SocketAddrExt;
                #[cfg(target_os = "linux")]
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(&bytes[1..])?;
                socket.send_to_addr(state.as_bytes(), &addr)?;
            }
        }
        Some(b'/') => {
            socket.send_to(state.as_bytes(), std::path::Path::new(target))?;
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET {target:?} is neither a path nor an abstract name"),
            ));
        }
    }
    Ok(())
}

/// Whether a descriptor number is open.
#[cfg(test)]
fn is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn niceness_is_readable_and_setting_the_current_value_is_a_no_op() {
        let n = niceness().unwrap();
        set_niceness(n).unwrap();
        assert_eq!(niceness().unwrap(), n);
    }

    #[test]
    fn notification_reaches_a_datagram_socket() {
        let dir = std::env::temp_dir().join(format!("daimon-notify-{}", pid()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("n.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        send_notification(&path.clone().into_os_string(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let bad = send_notification(&OsString::from("relative"), "READY=1");
        assert!(bad.is_err());
        assert!(is_open(server.as_raw_fd()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn launcher_reads_ready_and_error_messages() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut readiness = Readiness {
            write: Some(File::from(w)),
        };
        readiness.ready();
        readiness.failed(&Error::Setup("ignored once ready".into()));
        drop(readiness);
        assert_eq!(
            Launcher {
                read: File::from(r)
            }
            .wait()
            .unwrap(),
            pid()
        );

        let (r, w) = nix::unistd::pipe().unwrap();
        let mut readiness = Readiness {
            write: Some(File::from(w)),
        };
        readiness.failed(&Error::Setup("boom".into()));
        drop(readiness);
        let err = Launcher {
            read: File::from(r),
        }
        .wait()
        .unwrap_err();
        assert_eq!(err.to_string(), "setup failed: boom");

        let (r, w) = nix::unistd::pipe().unwrap();
        drop(w);
        let err = Launcher {
            read: File::from(r),
        }
        .wait()
        .unwrap_err();
        assert!(err.to_string().contains("before it was ready"));
    }
}
