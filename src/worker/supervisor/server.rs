//! The fork server: a small process, forked from the daemon before its first worker, that
//! forks every worker after it.
//!
//! A process forked from the daemon starts as a copy of it: its page tables and its
//! descriptor table. Both grow with the fleet (each worker costs the daemon a few
//! descriptors and a few KiB), so forking the n-th worker from the daemon costs O(n), and so
//! does every exit (the kernel tears the copy down): spawning a fleet was quadratic, and its
//! stop slow. The server was forked while the daemon was small and stays small, so a worker
//! forked from it costs the same whatever the size of the fleet.
//!
//! A worker must still be the daemon's child (the daemon waits for it, and it dies with the
//! daemon): the server forks it with `clone(CLONE_PARENT)`, which makes the new process
//! its parent's child, the daemon's, from the start. (Only with glibc: see `fork_worker`
//! for what the raw `clone` skips; elsewhere the daemon forks its workers itself.)
//!
//! The protocol, on a `SOCK_SEQPACKET` socket pair: the daemon sends one request, a JSON
//! object (the entry and the job), with [`FDS`] descriptors (the region's memfd, the
//! worker's wake-up socket, the worker's stdout and stderr); the server
//! answers `{"pid": N}` or `{"error": "..."}`. One request at a time: the daemon waits for
//! the answer, [`ANSWER_WITHIN`] at most, and on any failure stops using the server and
//! forks from itself as before. Entries installed after the server started are forked by
//! the daemon too.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recv,
    recvmsg, send, sendmsg, socketpair,
};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork, getppid, setpgid};
use serde_json::{Value, json};

use super::template::Template;
use crate::worker::job::{Job, Spawn};
use crate::worker::{Channel, Exit, Process, Restart, child};

/// How long the daemon waits for the server's answer before it forks by itself.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// The descriptors a request carries: memfd, worker's socket, stdout, stderr.
const FDS: usize = 4;

/// The largest request (a job's process settings are small; an environment could be
/// large).
const MAX_REQUEST: usize = 256 * 1024;

/// Why the fork server did not start a worker.
#[derive(Debug)]
pub(super) enum Failed {
    /// It could not fork (a limit, memory): the daemon could not have either.
    Fork(io::Error),
    /// It is gone, stuck or confused: not to be used again.
    Server(io::Error),
}

/// The daemon's handle on its fork server.
pub(super) struct ForkServer {
    socket: OwnedFd,
    pid: Pid,
    /// Entries `0..templates` were installed before the server started: it has them.
    templates: usize,
    /// It holds the stop line's read end, and so does every worker it forks.
    on_line: bool,
}

impl ForkServer {
    /// Forks the server, which keeps `templates` (entry `i` is `templates[i]`) and the
    /// descriptors the daemon's user opened, and closes the daemon's own. The whole pages
    /// of `unneeded` (address and length: the daemon's tables, which no worker reads) are
    /// left out of every worker it forks; of `placed` (the mappings the templates are in),
    /// each worker gets the pages of its own template only. `line`: the read end of the
    /// stop line, which the server keeps (and its workers inherit), if there is one.
    pub(super) fn start(
        templates: &mut [&mut dyn Template],
        unneeded: &[(usize, usize)],
        placed: &[(usize, usize)],
        line: Option<RawFd>,
    ) -> io::Result<ForkServer> {
        if !cfg!(target_env = "gnu") {
            return Err(io::Error::other(
                "a fork server needs glibc (see fork_worker)",
            ));
        }
        crate::process::ensure_single_threaded().map_err(io::Error::other)?;
        // Read before the fork, for the titles of the server and of its workers (see
        // `arg_area`).
        let _ = crate::worker::process::arg_area();
        let (daemon_end, server_end) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        // The daemon's end is daimon's: the server closes it with the daemon's others.
        crate::sys::own(daemon_end.as_raw_fd());
        let parent = crate::process::pid();
        let blocked = crate::reactor::BlockedSignals::new()?;
        // SAFETY: the daemon is single-threaded (checked above), so the child's copy of the
        // address space has no lock held by a thread that does not exist there: it may run
        // ordinary Rust. It never returns into the daemon's code: `serve` ends in `_exit`.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // Its own group: a terminal's Ctrl-C reaches the daemon only.
                let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
                crate::reactor::reset_after_fork();
                // SAFETY: this child has one thread (the daemon was single-threaded).
                unsafe { crate::daemon::notify::forget_in_worker() };
                drop(blocked);
                let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
                if getppid().as_raw() != parent {
                    child::exit_now(child::exit::ORPHAN);
                }
                // The line's write end goes with the daemon's others: the daemon holds the
                // only one (see `line`).
                let keep: Vec<RawFd> = [server_end.as_raw_fd()].into_iter().chain(line).collect();
                crate::sys::close_owned_except(&keep);
                crate::worker::process::set_title("daimon: fork server");
                // A worker copies the server's page tables at its fork and tears them down
                // at its exit: what it does not need stays out. With 10,000 entries, the
                // daemon's table of them is 10 MB, which every worker copied.
                // (So is the list of the templates: 16 bytes an entry; each worker is handed
                // its own template's address, read before its fork; see `fork_worker`.)
                for &(start, len) in unneeded {
                    // SAFETY: no worker this process forks reads these, nor does this process
                    // free them (so nothing new is put there): they are the daemon's tables,
                    // of frames of the daemon that this process never returns to (`serve`
                    // ends in `_exit`, and a panic is caught below rather than unwound into
                    // them), and nothing reached from the templates points into them.
                    unsafe { super::unshared::keep_pages_out_of_forks(start, len) };
                }
                // The templates' mappings too, but for the pages of the template each fork
                // runs (see `fork_worker`). Were they not all kept out, every worker would
                // just have them all, as before.
                let placed: Vec<(usize, usize)> = placed
                    .iter()
                    .copied()
                    // SAFETY: mappings of the arena, which only the templates are placed in,
                    // and this process places none (it installs no worker). A worker reads
                    // its own template only, whose pages are let into its fork, and nothing
                    // reached from a template points into another template.
                    .filter(|&(start, len)| unsafe {
                        super::unshared::keep_pages_out_of_forks(start, len)
                    })
                    .collect();
                // And the heap's free pages: what the daemon freed as it grew (the smaller
                // tables of entries before the last, a KiB an entry each) was written, and
                // every worker would copy it. glibc gives the whole pages of its free chunks
                // back (`MADV_DONTNEED`); they come back as zeroes if used again.
                #[cfg(target_env = "gnu")]
                // SAFETY: glibc's own call on its own heap, in this single-threaded process.
                unsafe {
                    nix::libc::malloc_trim(0);
                }
                // A panic must not unwind into the daemon's frames (their destructors would
                // run here, the pid file's and the socket's among them).
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    serve(&server_end, templates, &placed, parent, line)
                }));
                child::exit_now(child::exit::PANIC)
            }
            Ok(ForkResult::Parent { child }) => {
                drop(blocked);
                let _ = setpgid(child, child);
                drop(server_end);
                Ok(ForkServer {
                    socket: daemon_end,
                    pid: child,
                    templates: templates.len(),
                    on_line: line.is_some(),
                })
            }
            Err(e) => {
                crate::sys::disown(daemon_end.as_raw_fd());
                Err(e.into())
            }
        }
    }

    /// The server's pid.
    pub(super) fn pid(&self) -> Pid {
        self.pid
    }

    /// Whether the workers it forks hold the stop line.
    pub(super) fn on_line(&self) -> bool {
        self.on_line
    }

    /// Whether the server has entry `i`'s template.
    pub(super) fn has(&self, i: usize) -> bool {
        i < self.templates
    }

    /// Has the server fork entry `entry`'s worker for `job`, with `stdio` as its fds 1
    /// and 2; the worker's pid, once it is the daemon's child.
    ///
    /// # Errors
    ///
    /// [`Failed::Fork`] when the server could not fork the worker (it goes on serving);
    /// [`Failed::Server`] for a failure to send, a late or bad answer: the server should
    /// not be used again.
    pub(super) fn spawn(
        &mut self,
        entry: usize,
        job: &Job,
        stdio: [RawFd; 2],
    ) -> Result<Pid, Failed> {
        self.ask(entry, job, stdio)
            .map_err(Failed::Server)?
            .map_err(Failed::Fork)
    }

    /// Sends the request and reads the answer: the worker's pid, or the server's error.
    fn ask(&mut self, entry: usize, job: &Job, stdio: [RawFd; 2]) -> io::Result<io::Result<Pid>> {
        let [memfd, worker] = job
            .channel
            .parts_for_worker()
            .ok_or_else(|| io::Error::other("the channel was released"))?;
        let request = serde_json::to_vec(&request(entry, job)).map_err(io::Error::other)?;
        let fds = [memfd.as_raw_fd(), worker.as_raw_fd(), stdio[0], stdio[1]];
        let rights = [ControlMessage::ScmRights(&fds)];
        let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
        sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[IoSlice::new(&request)],
            &rights,
            flags,
            None,
        )?;
        let answer = self.answer()?;
        match (answer["pid"].as_i64(), answer["error"].as_str()) {
            (Some(pid), _) if pid > 0 && pid <= i64::from(i32::MAX) => {
                Ok(Ok(Pid::from_raw(pid as i32)))
            }
            (_, Some(error)) => Ok(Err(io::Error::other(format!("the fork server: {error}")))),
            _ => Err(io::Error::other(format!(
                "the fork server answered {answer}"
            ))),
        }
    }

    /// The server's answer to the request just sent, within [`ANSWER_WITHIN`].
    fn answer(&self) -> io::Result<Value> {
        let deadline = Instant::now() + ANSWER_WITHIN;
        let mut buf = [0u8; 512];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the fork server did not answer",
                ));
            }
            let mut fds = [nix::poll::PollFd::new(
                self.socket.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let timeout = nix::poll::PollTimeout::try_from(left.as_millis().max(1) as u64)
                .unwrap_or(nix::poll::PollTimeout::MAX);
            match nix::poll::poll(&mut fds, timeout) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
            return match recv(self.socket.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => Err(io::Error::other("the fork server is gone")),
                Ok(n) => serde_json::from_slice(&buf[..n]).map_err(io::Error::other),
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => Err(e.into()),
            };
        }
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        crate::sys::disown(self.socket.as_raw_fd());
        // It would exit at the end of file of its socket; SIGKILL makes it sure, and the
        // wait is short (nor can it be reaped as a worker).
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = waitpid(self.pid, None);
    }
}

/// The request for `job` of entry `entry`.
fn request(entry: usize, job: &Job) -> Value {
    let previous = job.spawn.previous.as_ref().map(|e| {
        json!({
            "name": e.name, "pid": e.pid, "code": e.code, "signal": e.signal,
            "restart": e.restart.name(), "requested": e.requested,
            "ran_for": e.ran_for.as_nanos() as u64,
        })
    });
    json!({
        "entry": entry,
        "name": job.name,
        "looptime": job.looptime.as_nanos() as u64,
        "level": job.level.as_usize(),
        "restarts": job.spawn.restarts,
        "previous": previous,
        "process": job.process.to_json(),
    })
}

/// A job's fields, read back from a request (`None`: not one the daemon sends).
struct Fields {
    entry: usize,
    name: String,
    looptime: Duration,
    level: slog::Level,
    spawn: Spawn,
    process: Process,
}

fn fields(request: &Value) -> Option<Fields> {
    let nanos = |v: &Value| v.as_u64().map(Duration::from_nanos);
    let previous = match &request["previous"] {
        Value::Null => None,
        e => Some(Exit {
            name: e["name"].as_str()?.to_owned(),
            pid: i32::try_from(e["pid"].as_i64()?).ok()?,
            code: e["code"].as_i64().and_then(|c| i32::try_from(c).ok()),
            signal: e["signal"].as_i64().and_then(|s| i32::try_from(s).ok()),
            restart: [Restart::Permanent, Restart::Transient, Restart::Temporary]
                .into_iter()
                .find(|r| e["restart"].as_str() == Some(r.name()))?,
            requested: e["requested"].as_bool()?,
            ran_for: nanos(&e["ran_for"])?,
        }),
    };
    Some(Fields {
        entry: usize::try_from(request["entry"].as_u64()?).ok()?,
        name: request["name"].as_str()?.to_owned(),
        looptime: nanos(&request["looptime"])?,
        level: slog::Level::from_usize(usize::try_from(request["level"].as_u64()?).ok()?)?,
        spawn: Spawn {
            restarts: u32::try_from(request["restarts"].as_u64()?).ok()?,
            previous,
        },
        process: Process::from_json("", &request["process"]).ok()?,
    })
}

/// The server's loop: a request, a worker, an answer, until the daemon closes its end.
/// `placed`: the templates' mappings, kept out of forks; `line`: the stop line's read end,
/// which every worker inherits.
fn serve(
    socket: &OwnedFd,
    templates: &mut [&mut dyn Template],
    placed: &[(usize, usize)],
    daemon: i32,
    line: Option<RawFd>,
) -> ! {
    // In a mapping of its own that the workers go without (in the heap, it grew the heap by
    // a mapping that every worker copied).
    let Ok(mut buf) = super::mapped::MapVec::zeroes(MAX_REQUEST) else {
        child::exit_now(1)
    };
    let (start, len) = buf.mapping();
    // SAFETY: the buffer is this process's own, never freed (this process ends in `_exit`),
    // and a worker forked here reads nothing of it: what it needs of the request is parsed
    // into values of its own before its fork.
    unsafe { super::unshared::keep_pages_out_of_forks(start, len) };
    loop {
        let (len, fds) = match receive(socket, &mut buf) {
            Ok(Some(got)) => got,
            // The daemon closed its end (it stops, or it gave up on the server).
            Ok(None) => child::exit_now(0),
            Err(_) => child::exit_now(1),
        };
        let forked = fork_worker(socket, templates, placed, daemon, line, &buf[..len], fds);
        let answer = match forked {
            Ok(pid) => json!({"pid": pid.as_raw()}),
            Err(e) => json!({"error": e.to_string()}),
        };
        let bytes = answer.to_string();
        if send(socket.as_raw_fd(), bytes.as_bytes(), MsgFlags::MSG_NOSIGNAL).is_err() {
            child::exit_now(1);
        }
    }
}

/// One request: its bytes and its descriptors; `None` at the end of file.
fn receive(socket: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut space = nix::cmsg_space!([RawFd; FDS]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                // SAFETY: the kernel installed these descriptors in this process for this
                // message: nothing else owns them.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let (bytes, truncated) = (
            msg.bytes,
            msg.flags
                .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC),
        );
        if bytes == 0 && fds.is_empty() {
            return Ok(None);
        }
        if truncated {
            return Err(io::Error::other("a request too large"));
        }
        return Ok(Some((bytes, fds)));
    }
}

/// Forks the worker of `request` as the daemon's child (`CLONE_PARENT`) and returns its
/// pid; of `placed` (the templates' mappings, kept out of forks), the worker gets the pages
/// of its own template; `line`, the stop line's read end, is inherited.
fn fork_worker(
    socket: &OwnedFd,
    templates: &mut [&mut dyn Template],
    placed: &[(usize, usize)],
    daemon: i32,
    line: Option<RawFd>,
    request: &[u8],
    fds: Vec<OwnedFd>,
) -> io::Result<Pid> {
    let fields = serde_json::from_slice(request)
        .ok()
        .as_ref()
        .and_then(fields)
        .ok_or_else(|| io::Error::other("not a request"))?;
    let fds: [OwnedFd; FDS] = fds
        .try_into()
        .map_err(|_| io::Error::other("a request without its descriptors"))?;
    let slot: &mut &mut dyn Template = templates
        .get_mut(fields.entry)
        .ok_or_else(|| io::Error::other("no such entry"))?;
    // The list of templates is left out of the workers (see `start`): the worker must be
    // handed its template's address as a value read here, before the fork, and never read
    // it from the list, which it does not have. A volatile read is one the compiler can
    // neither repeat nor move after the fork.
    // SAFETY: `slot` is a valid, aligned reference to a `&mut dyn Template`, read as the raw
    // pointer of the same layout; that reference is not used again while this one is (the
    // next request reads its own slot).
    let template: *mut dyn Template =
        unsafe { std::ptr::read_volatile(std::ptr::from_mut(slot).cast::<*mut dyn Template>()) };
    // SAFETY: the template the slot refers to, valid for as long as the server runs (the
    // daemon's entries, in this process's copy, are never dropped here).
    let template: &mut dyn Template = unsafe { &mut *template };
    // The template's pages, for this fork only (a zero-sized one has none).
    let at = std::ptr::from_mut(template).cast::<u8>() as usize;
    let size = std::mem::size_of_val(template);
    let (pages, len) = super::unshared::pages_over(at, size);
    let kept_out = len > 0
        && placed
            .iter()
            .any(|&(start, n)| start <= pages && pages + len <= start + n);
    if kept_out && !super::unshared::let_pages_into_forks(pages, len) {
        // The worker would not have its template.
        return Err(io::Error::last_os_error());
    }
    // SAFETY: clone(2) without CLONE_VM is a fork: the child gets a copy of this address
    // space, as fork(2) makes, and CLONE_PARENT makes it the daemon's child (SIGCHLD goes
    // to the daemon, which waits for it). The server is single-threaded (forked from the
    // single-threaded daemon, it starts no thread), so no lock is held in the copy. What
    // glibc's fork() wrapper would add is not needed here: its atfork handlers reset locks
    // that no other thread can hold; the child's thread descriptor keeps the server's
    // thread id, which glibc (2.34 and later, `target_env = "gnu"` only, see `start`) does
    // not use for the calling thread's own signals (`raise`, `abort` ask the kernel), and no
    // robust-futex list is registered for the child's main thread (a robust mutex it holds
    // is not marked when it dies). The child ends in `_exit`.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_clone,
            nix::libc::CLONE_PARENT | nix::libc::SIGCHLD,
            0,
            0,
            0,
            0,
        )
    };
    let failed = (rc < 0).then(io::Error::last_os_error);
    if rc != 0 && kept_out {
        // SAFETY: as at `start`: the pages of one template, which the next workers do not
        // read (each gets its own let in).
        unsafe { super::unshared::keep_pages_out_of_forks(pages, len) };
    }
    match rc {
        0 => {
            // As in the server: nothing unwinds into the frames below (see `start`).
            let _ = catch_unwind(AssertUnwindSafe(move || {
                become_worker(socket, template, fields, fds, daemon, line)
            }));
            child::exit_now(child::exit::PANIC)
        }
        pid if pid > 0 => {
            // The worker has its copies.
            drop(fds);
            Ok(Pid::from_raw(pid as i32))
        }
        _ => Err(failed.unwrap_or_else(|| io::Error::other("clone failed"))),
    }
}

/// In the worker's process (the daemon's child): puts its output in place and becomes the
/// worker.
fn become_worker(
    socket: &OwnedFd,
    template: &mut dyn Template,
    fields: Fields,
    fds: [OwnedFd; FDS],
    daemon: i32,
    line: Option<RawFd>,
) -> ! {
    // Its own group at once; the daemon sets it too once it has the pid (see
    // `Fork::spawn`), whichever comes first.
    let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
    // SAFETY: the server's socket is not this process's business; nothing here uses it
    // again (its owner is never dropped: this process ends in `_exit`).
    unsafe { nix::libc::close(socket.as_raw_fd()) };
    if getppid().as_raw() != daemon {
        child::exit_now(child::exit::ORPHAN);
    }
    let [memfd, worker, out, err] = fds;
    // SAFETY: dup2 on descriptors this process holds; 1 and 2 are replaced atomically.
    unsafe {
        nix::libc::dup2(out.as_raw_fd(), 1);
        nix::libc::dup2(err.as_raw_fd(), 2);
    }
    drop((out, err));
    let Ok(channel) = Channel::worker_from_parts(memfd, worker) else {
        child::exit_now(child::exit::SETUP)
    };
    let job = Job {
        name: fields.name,
        channel,
        looptime: fields.looptime,
        parent: daemon,
        level: fields.level,
        spawn: fields.spawn,
        process: fields.process,
        line,
    };
    let code = catch_unwind(AssertUnwindSafe(|| template.run(job))).unwrap_or(child::exit::PANIC);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    child::exit_now(code)
}
