//! A worker's standard output and standard error: a pipe each, made at the fork, whose read
//! ends the daemon's reactor watches; every line is logged with the worker's name and the
//! stream, and kept in the worker's ring (which outlives its processes).
//!
//! Bounded everywhere: at most [`BYTES_PER_TURN`] read from a pipe per turn (level-triggered
//! readiness brings the daemon back for the rest), so a flooding worker never starves the
//! loop; a line longer than [`MAX_LINE`] is cut there and the rest discarded and counted;
//! and the daemon never buffers more than one partial line per pipe. A worker that writes
//! faster than the daemon logs fills its pipe and blocks in its own `write` (backpressure):
//! nothing grows without limit in the daemon.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use slog::{Logger, info};

use super::Workers;
use super::tap::LogTap;
use crate::bus::Event;
use crate::log::ring::Ring;
use crate::log::{MAX_LINE, Stream};
use crate::reactor::{Handle, Interest, Source, Token};
use crate::worker::Output;

/// Bytes read from one pipe per turn at most.
pub(crate) const BYTES_PER_TURN: usize = 64 * 1024;

/// Bytes read from a gone worker's pipe at most, when it is reaped (what it wrote last; a
/// process it left behind that goes on writing cannot hold the daemon).
const BYTES_AT_EXIT: usize = 1024 * 1024;

/// The read end of one of a worker's output pipes, and the line it is in the middle of.
pub(super) struct Pipe {
    source: Source<OwnedFd>,
    stream: Stream,
    partial: Vec<u8>,
    /// The current line was cut at [`MAX_LINE`]: its rest is discarded up to its newline.
    cutting: bool,
}

/// What the child puts on its fds 1 and 2, and the read ends the daemon keeps (as the
/// worker's [`Output`] says: two pipes, one for both, or none and `/dev/null`).
pub(super) struct Pipes {
    /// Stdout's and stderr's read ends; none for a stream merged into stdout or discarded.
    pub(super) read: [Option<OwnedFd>; 2],
    pub(super) write: [OwnedFd; 2],
}

impl Pipes {
    /// The descriptors `output` needs, close-on-exec; the read ends non-blocking (the write
    /// ends stay blocking: a worker that writes faster than the daemon reads waits in its
    /// `write`).
    pub(super) fn new(output: Output) -> io::Result<Pipes> {
        let pipe = || -> io::Result<(OwnedFd, OwnedFd)> {
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
            fcntl(&r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
            Ok((r, w))
        };
        Ok(match output {
            Output::Separate => {
                let ((out_r, out_w), (err_r, err_w)) = (pipe()?, pipe()?);
                Pipes {
                    read: [Some(out_r), Some(err_r)],
                    write: [out_w, err_w],
                }
            }
            Output::Merged => {
                let (r, w) = pipe()?;
                let w2 = w.try_clone()?;
                Pipes {
                    read: [Some(r), None],
                    write: [w, w2],
                }
            }
            Output::Discard => {
                let null: OwnedFd = std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/null")?
                    .into();
                let null2 = null.try_clone()?;
                Pipes {
                    read: [None, None],
                    write: [null, null2],
                }
            }
        })
    }

    /// In the forked child, before the worker runs: the write ends become fds 1 and 2, and
    /// every other end of these pipes is closed. Only dup2(2) and close(2) on descriptors
    /// (async-signal-safe, and the daemon was single-threaded at the fork anyway); dup2
    /// clears close-on-exec on 1 and 2, so a program the worker execs writes there too.
    pub(super) fn install_in_child(&self) {
        let [out_w, err_w] = [self.write[0].as_raw_fd(), self.write[1].as_raw_fd()];
        // SAFETY: dup2 and close on descriptors this process holds; 1 and 2 are replaced
        // atomically, and the originals are not used again in the child (their owners are
        // never dropped there: the child ends in `_exit`).
        unsafe {
            nix::libc::dup2(out_w, 1);
            nix::libc::dup2(err_w, 2);
            for fd in self.fds().into_iter().flatten() {
                nix::libc::close(fd);
            }
        }
    }

    /// What the child's fds 1 and 2 become.
    pub(super) fn stdio(&self) -> [RawFd; 2] {
        [self.write[0].as_raw_fd(), self.write[1].as_raw_fd()]
    }

    fn fds(&self) -> [Option<RawFd>; 4] {
        [
            self.read[0].as_ref().map(AsRawFd::as_raw_fd),
            self.read[1].as_ref().map(AsRawFd::as_raw_fd),
            Some(self.write[0].as_raw_fd()),
            Some(self.write[1].as_raw_fd()),
        ]
    }

    /// In the daemon after the fork: the write ends close (the child has its copies, so the
    /// read ends see EOF when it and what it started are gone); the read ends are
    /// registered.
    pub(super) fn register(self, handle: &Handle) -> io::Result<[Option<Pipe>; 2]> {
        let Pipes { read, write } = self;
        drop(write);
        let [out, err] = read;
        let pipe = |fd: Option<OwnedFd>, stream| -> io::Result<Option<Pipe>> {
            let Some(fd) = fd else {
                return Ok(None);
            };
            Ok(Some(Pipe {
                source: handle.register(fd, Interest::READ)?,
                stream,
                partial: Vec::new(),
                cutting: false,
            }))
        };
        Ok([pipe(out, Stream::Stdout)?, pipe(err, Stream::Stderr)?])
    }
}

impl Pipe {
    pub(super) fn token(&self) -> Token {
        self.source.token()
    }
}

/// Where lines go: the daemon's logger, the worker's ring, and (for listeners) the bus.
pub(super) struct Sink<'a> {
    pub(super) logger: &'a Logger,
    pub(super) name: &'a str,
    pub(super) ring: &'a mut Ring,
    pub(super) cap: usize,
    /// The tap and the outbox's events, for `daemon.log.<worker>` events.
    pub(super) tap: Option<(&'a mut LogTap, &'a mut Vec<Box<dyn Event>>)>,
}

impl Sink<'_> {
    fn line(&mut self, stream: Stream, bytes: &[u8]) {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let text = String::from_utf8_lossy(bytes);
        info!(self.logger, "{}", text; "worker" => self.name, "stream" => stream.name());
        self.ring.push(self.cap, stream, None, &text);
        if let Some((tap, events)) = &mut self.tap {
            tap.line(self.logger, events, self.name, stream, &text);
        }
    }
}

/// Reads at most `budget` bytes from `pipe` into `buffer` and hands its complete lines to
/// `sink`. Returns true at EOF (the partial line then flushed) or on a read error.
pub(super) fn read(pipe: &mut Pipe, buffer: &mut [u8], budget: usize, sink: &mut Sink<'_>) -> bool {
    let mut read = 0;
    while read < budget {
        let want = buffer.len().min(budget - read);
        match nix::unistd::read(pipe.source.fd(), &mut buffer[..want]) {
            Ok(0) => {
                flush(pipe, sink);
                return true;
            }
            Ok(n) => {
                read += n;
                split(pipe, &buffer[..n], sink);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => return false,
            Err(_) => {
                flush(pipe, sink);
                return true;
            }
        }
    }
    false
}

/// Reads what a gone worker left in its pipe (bounded) and flushes its partial line.
pub(super) fn finish(pipe: &mut Pipe, buffer: &mut [u8], sink: &mut Sink<'_>) {
    read(pipe, buffer, BYTES_AT_EXIT, sink);
    flush(pipe, sink);
}

fn flush(pipe: &mut Pipe, sink: &mut Sink<'_>) {
    if !pipe.partial.is_empty() {
        sink.line(pipe.stream, &pipe.partial);
        pipe.partial.clear();
    }
    pipe.cutting = false;
}

fn split(pipe: &mut Pipe, data: &[u8], sink: &mut Sink<'_>) {
    for chunk in data.split_inclusive(|&b| b == b'\n') {
        let (body, ended) = match chunk.strip_suffix(b"\n") {
            Some(body) => (body, true),
            None => (chunk, false),
        };
        if pipe.cutting {
            pipe.cutting = !ended;
            continue;
        }
        let room = MAX_LINE - pipe.partial.len();
        if body.len() > room {
            pipe.partial.extend_from_slice(&body[..room]);
            sink.line(pipe.stream, &pipe.partial);
            pipe.partial.clear();
            sink.ring.lost(1);
            pipe.cutting = !ended;
            continue;
        }
        pipe.partial.extend_from_slice(body);
        if ended {
            sink.line(pipe.stream, &pipe.partial);
            pipe.partial.clear();
        }
    }
    if pipe.partial.capacity() > 2 * MAX_LINE {
        pipe.partial.shrink_to(MAX_LINE);
    }
}

impl Workers {
    /// Handles readiness of a worker's output pipe; false for a token that is not one.
    pub(super) fn output_ready(&mut self, token: Token) -> bool {
        let Some(&(i, which)) = self.by_pipe.get(&token) else {
            return false;
        };
        let cap = self.log_control.lines();
        let mut buffer = std::mem::take(&mut self.pipe_buffer);
        buffer.resize(BYTES_PER_TURN, 0);
        let entry = &mut self.entries[i];
        let mut sink = Sink {
            logger: &self.logger,
            name: &entry.name,
            ring: &mut entry.ring,
            cap,
            tap: Some((&mut self.tap, &mut self.out.events)),
        };
        let eof = match entry.run.as_mut().and_then(|r| r.output[which].as_mut()) {
            Some(pipe) => read(pipe, &mut buffer, BYTES_PER_TURN, &mut sink),
            None => true,
        };
        if eof {
            // Closed: what the worker (and what it started) wrote is all read.
            self.by_pipe.remove(&token);
            if let Some(run) = entry.run.as_mut() {
                run.output[which] = None;
            }
        }
        self.pipe_buffer = buffer;
        true
    }

    /// At the reap: the last of a gone worker's output, then its pipes close.
    pub(super) fn finish_output(&mut self, i: usize) {
        let cap = self.log_control.lines();
        let mut buffer = std::mem::take(&mut self.pipe_buffer);
        buffer.resize(BYTES_PER_TURN, 0);
        let entry = &mut self.entries[i];
        if let Some(run) = entry.run.as_mut() {
            for slot in &mut run.output {
                if let Some(mut pipe) = slot.take() {
                    let mut sink = Sink {
                        logger: &self.logger,
                        name: &entry.name,
                        ring: &mut entry.ring,
                        cap,
                        tap: Some((&mut self.tap, &mut self.out.events)),
                    };
                    finish(&mut pipe, &mut buffer, &mut sink);
                    self.by_pipe.remove(&pipe.token());
                }
            }
        }
        self.pipe_buffer = buffer;
    }

    /// The reply of `worker.log`: the worker's last lines (its stdout, stderr and own log).
    ///
    /// # Errors
    ///
    /// [`Error::Worker`](crate::Error::Worker) if there is no such worker.
    pub(crate) fn log(
        &mut self,
        name: &str,
        count: usize,
        after: Option<u64>,
    ) -> crate::Result<serde_json::Value> {
        let i = self.index(name)?;
        let cap = self.log_control.lines();
        let ring = &mut self.entries[i].ring;
        ring.trim(cap);
        Ok(ring.query(count, after))
    }
}

/// Whether a descriptor is one of these (for tests).
#[cfg(test)]
pub(super) fn is_pipe(fd: impl std::os::fd::AsFd) -> bool {
    nix::sys::stat::fstat(fd.as_fd())
        .is_ok_and(|s| s.st_mode & nix::libc::S_IFMT == nix::libc::S_IFIFO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe_and_ring() -> (Pipe, OwnedFd, Ring, crate::reactor::Reactor<()>) {
        let reactor = crate::reactor::Reactor::<()>::new().unwrap();
        let pipes = Pipes::new(Output::Separate).unwrap();
        assert!(pipes.read.iter().flatten().all(is_pipe));
        let Pipes { read, write } = pipes;
        let [out_r, _err_r] = read;
        let [out_w, _err_w] = write;
        let pipe = Pipe {
            source: reactor
                .handle()
                .register(out_r.unwrap(), Interest::READ)
                .unwrap(),
            stream: Stream::Stdout,
            partial: Vec::new(),
            cutting: false,
        };
        (pipe, out_w, Ring::default(), reactor)
    }

    fn texts(ring: &Ring) -> Vec<String> {
        ring.query(1000, None)["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["text"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn lines_split_cut_and_the_partial_flushed_at_eof() {
        let (mut pipe, w, mut ring, _reactor) = pipe_and_ring();
        let logger = crate::log::discard();
        let mut buffer = vec![0u8; 16];
        let long = "x".repeat(MAX_LINE + 100);
        let data = format!("one\r\ntwo\n{long}\nthree\npart");
        nix::unistd::write(&w, data.as_bytes()).unwrap();
        let mut sink = Sink {
            logger: &logger,
            name: "w",
            ring: &mut ring,
            cap: 100,
            tap: None,
        };
        assert!(
            !read(&mut pipe, &mut buffer, 1 << 20, &mut sink),
            "not at EOF"
        );
        drop(w);
        assert!(read(&mut pipe, &mut buffer, 1 << 20, &mut sink), "EOF");
        let got = texts(&ring);
        assert_eq!(
            got.len(),
            5,
            "{:?}",
            got.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(&got[..2], ["one", "two"]);
        assert_eq!(got[2].len(), MAX_LINE);
        assert_eq!(&got[3..], ["three", "part"]);
        assert_eq!(ring.query(1, None)["dropped"], 1, "the cut line is counted");
    }

    #[test]
    fn lines_become_log_events_for_listeners() {
        let (mut pipe, w, mut ring, _reactor) = pipe_and_ring();
        let logger = crate::log::discard();
        let mut buffer = vec![0u8; 64];
        let mut tap = LogTap::default();
        tap.listening = true;
        let mut events = Vec::new();
        nix::unistd::write(&w, b"one\r\ntwo\n").unwrap();
        let mut sink = Sink {
            logger: &logger,
            name: "w7",
            ring: &mut ring,
            cap: 100,
            tap: Some((&mut tap, &mut events)),
        };
        read(&mut pipe, &mut buffer, 1 << 20, &mut sink);
        let data: Vec<_> = events.iter().map(|e| e.data().unwrap()).collect();
        assert_eq!(
            data,
            [
                serde_json::json!({"worker": "w7", "stream": "stdout", "line": "one"}),
                serde_json::json!({"worker": "w7", "stream": "stdout", "line": "two"}),
            ]
        );
        assert_eq!(events[0].name(), "daemon.log.w7");
    }

    #[test]
    fn merged_output_is_one_pipe_and_discarded_output_none() {
        let merged = Pipes::new(Output::Merged).unwrap();
        let [Some(r), None] = &merged.read else {
            panic!("one read end")
        };
        // Both write ends are the one pipe: what either writes is read from it.
        nix::unistd::write(&merged.write[0], b"out\n").unwrap();
        nix::unistd::write(&merged.write[1], b"err\n").unwrap();
        let mut buf = [0u8; 16];
        let n = nix::unistd::read(r, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"out\nerr\n");
        let discard = Pipes::new(Output::Discard).unwrap();
        assert!(discard.read.iter().all(Option::is_none));
        for w in &discard.write {
            assert!(!is_pipe(w));
            assert_eq!(nix::unistd::write(w, b"gone").unwrap(), 4);
        }
    }

    #[test]
    fn a_turn_reads_at_most_its_budget() {
        let (mut pipe, w, mut ring, _reactor) = pipe_and_ring();
        let logger = crate::log::discard();
        let mut buffer = vec![0u8; 64];
        nix::unistd::write(&w, "a\n".repeat(1000).as_bytes()).unwrap();
        let mut sink = Sink {
            logger: &logger,
            name: "w",
            ring: &mut ring,
            cap: 10_000,
            tap: None,
        };
        read(&mut pipe, &mut buffer, 100, &mut sink);
        assert_eq!(texts(&ring).len(), 50);
    }
}
