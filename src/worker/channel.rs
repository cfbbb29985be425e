//! The channel between the daemon and one worker: an anonymous shared region (a header and
//! two rings) and a socket pair whose bytes wake the reader, sent only when the reader
//! sleeps (see [`doorbell`](super::doorbell)).
//!
//! The region is a memfd (an anonymous file: nothing is named in `/dev/shm` or SysV, so
//! nothing outlives the processes that map it), sealed at its size so that nobody can
//! shrink it under a mapping, and mapped `MAP_SHARED` by the daemon; the worker maps it
//! again from the memfd the fork server hands it (or inherits the mapping when the daemon
//! forks it itself), and closes the memfd. The daemon trusts nothing it
//! reads from it: the header's magic, version and state are checked, every frame is measured
//! by the MessagePack scanner before it is decoded, and a violation is a [`ChannelError::Corrupt`]
//! that gets the worker killed.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use super::doorbell;
use super::ring::{Corrupt, Full, Ring, Seen, WORD};
use crossbeam_utils::CachePadded;
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use nix::sys::socket::{MsgFlags, recv, send};

const MAGIC: u64 = u64::from_le_bytes(*b"DAIMONW\x01");
const VERSION: u32 = 3;

/// The bytes of each ring.
pub const RING_CAPACITY: usize = 64 * 1024;

const _: () = assert!(RING_CAPACITY % WORD == 0, "a ring is whole words");

/// The header at the start of the region. All-zero bytes are a valid value (the kernel
/// zeroes a new memfd), and every field is atomic because two processes share it.
#[repr(C)]
pub struct Header {
    magic: AtomicU64,
    version: AtomicU32,
    /// The worker's [`State`](super::State) as a number.
    pub state: AtomicU32,
    /// The worker's pid, written by the worker.
    pub pid: AtomicI32,
    /// Advanced by the worker on every turn of its loop.
    pub heartbeat: AtomicU64,
    /// Ticks run.
    pub ticks: AtomicU64,
    /// Log lines the worker could not send because its ring was full.
    pub lost_logs: AtomicU64,
    /// Frames from the daemon the worker could not decode, and dropped.
    pub dropped: AtomicU64,
    /// Set (1) by the worker when it says it is ready before its spinup ends
    /// ([`WorkerHost::ready`](super::WorkerHost::ready)); the daemon's readiness counts it
    /// as looping.
    pub ready: AtomicU32,
}

/// One ring's shared state, each part on its own cache line: the producer writes `head`,
/// the consumer `tail` and `sleeping` (its doorbell flag, read by the producer on every
/// frame and written only when the consumer goes to sleep or wakes).
#[repr(C)]
struct Positions {
    head: CachePadded<AtomicU64>,
    tail: CachePadded<AtomicU64>,
    sleeping: CachePadded<AtomicU32>,
}

#[repr(C)]
struct Layout {
    header: CachePadded<Header>,
    down: Positions,
    up: Positions,
}

/// The mapped region.
struct Region {
    /// # Invariant
    ///
    /// Points at a `MAP_SHARED` read-write mapping of `len` bytes (of a memfd whose size is
    /// sealed), page-aligned, that starts with a [`Layout`] followed by the two rings' data;
    /// it stays mapped until `drop`.
    ptr: NonNull<u8>,
    len: usize,
}

impl Region {
    /// The region's size.
    fn len() -> usize {
        std::mem::size_of::<Layout>() + 2 * RING_CAPACITY
    }

    /// A fresh region, mapped from a sealed memfd (so that a fork server can hand it to a
    /// worker it forks), and the memfd.
    fn new() -> io::Result<(Region, OwnedFd)> {
        let len = Region::len();
        let memfd = memfd_create(
            c"daimon-channel",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?;
        nix::unistd::ftruncate(&memfd, len as i64)?;
        // Its size is fixed for good: nobody, a worker holding the memfd included, can
        // shrink it under the daemon's mapping (which would make reading it a SIGBUS).
        fcntl(
            &memfd,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        let region = Region::map(&memfd)?;
        region.layout().header.magic.store(MAGIC, Ordering::Relaxed);
        region
            .layout()
            .header
            .version
            .store(VERSION, Ordering::Relaxed);
        // Until a consumer has looked at its ring, a frame sent to it rings.
        for positions in [&region.layout().down, &region.layout().up] {
            positions
                .sleeping
                .store(doorbell::SLEEPING, Ordering::Relaxed);
        }
        Ok((region, memfd))
    }

    /// Maps the region of `memfd` (made by [`Region::new`]: sealed at its size).
    fn map(memfd: &OwnedFd) -> io::Result<Region> {
        let len = Region::len();
        let size = std::num::NonZeroUsize::new(len).expect("not zero");
        let actual = nix::sys::stat::fstat(memfd)?.st_size;
        if usize::try_from(actual).ok() != Some(len) {
            return Err(io::Error::other(format!(
                "a channel region of {actual} bytes, not {len}"
            )));
        }
        // SAFETY: a fresh shared mapping of the whole memfd, whose size is sealed (it can
        // never shrink under the mapping); no address hint is given.
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                memfd,
                0,
            )
        }?;
        Ok(Region {
            ptr: ptr.cast(),
            len,
        })
    }

    fn layout(&self) -> &Layout {
        // SAFETY: by the invariant the mapping starts with a `Layout`, is page-aligned (enough
        // for it), lives as long as `self`, and all-zero or any bytes are valid atomics.
        unsafe { self.ptr.cast::<Layout>().as_ref() }
    }

    fn data(&self, index: usize) -> &[AtomicU64] {
        const {
            assert!(std::mem::size_of::<Layout>() % std::mem::align_of::<AtomicU64>() == 0);
        }
        let offset = std::mem::size_of::<Layout>() + index * RING_CAPACITY;
        debug_assert!(offset + RING_CAPACITY <= self.len);
        // SAFETY: by the invariant the bytes at `offset..offset + RING_CAPACITY` are mapped for
        // the life of `self`, and only ever accessed through atomics. The mapping is
        // page-aligned and `offset` is a multiple of 8 (the layout's size is, as asserted
        // above, and so is `RING_CAPACITY`), the alignment of `AtomicU64`; any 8 bytes are a
        // valid `AtomicU64`, so whatever the other process wrote there is a value, not UB.
        unsafe {
            std::slice::from_raw_parts(
                self.ptr.as_ptr().add(offset).cast::<AtomicU64>(),
                RING_CAPACITY / WORD,
            )
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `Region::new` with this length and nothing borrows
        // it any more (borrows of `self` have ended).
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// Which end of the channel this process holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The daemon: sends down, receives up.
    Daemon,
    /// The worker: sends up, receives down.
    Worker,
}

/// What can go wrong on a channel.
#[derive(Debug)]
pub enum ChannelError {
    /// The ring is full: the message was not sent.
    Full(Full),
    /// The other side wrote something impossible.
    Corrupt(Corrupt),
    /// The message does not fit a ring at all.
    TooLarge(usize),
}

impl From<ChannelError> for crate::error::WorkerError {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::Full(_) => crate::error::WorkerError::Full,
            other => crate::error::WorkerError::Channel(other.to_string()),
        }
    }
}

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChannelError::Full(e) => e.fmt(f),
            ChannelError::Corrupt(e) => e.fmt(f),
            ChannelError::TooLarge(n) => {
                write!(
                    f,
                    "a message of {n} bytes does not fit the channel ({RING_CAPACITY} bytes)"
                )
            }
        }
    }
}

impl std::error::Error for ChannelError {}

// The wake-ups of a channel are one Unix socket pair: a byte sent on one socket makes the
// other readable. Each end keeps its own socket only (readable when it is woken, and what
// it sends on to wake the other end); a worker that must read again without a wake-up
// comes back to its ring on its next turn by itself. The daemon releases the worker's
// socket once the worker is forked ([`Channel::release_peer`]), so a worker costs it one
// descriptor here, and the worker holds one.
//
// The worker shares the sockets' open file descriptions: it can change their flags
// (`O_NONBLOCK`) or fill their buffers. Every send and receive here therefore passes
// `MSG_DONTWAIT` (non-blocking whatever the flags; `MSG_NOSIGNAL` too, no SIGPIPE should a
// worker shut a socket down), and a wake-up that does not fit is dropped: the receiver has
// unread bytes then, and is readable anyway. (Eventfds, used before, can only be read and
// written with the description's own flags: a worker that cleared `O_NONBLOCK` could block
// the daemon in a `read` or a `write`.)

/// A region's memfd, recorded as daimon's (see `sys`) for its life.
struct Memfd(OwnedFd);

impl Drop for Memfd {
    fn drop(&mut self) {
        crate::sys::disown(self.0.as_raw_fd());
    }
}

/// A socket recorded as daimon's (see `sys`) for its life.
struct OwnedSocket(std::os::unix::net::UnixStream);

/// A channel end's socket as a poller's source: it shares the end's descriptor, so that a
/// worker registers no copy of it.
pub(crate) struct Wakeup(Arc<OwnedSocket>);

impl AsFd for Wakeup {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.fd()
    }
}

impl OwnedSocket {
    fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Sends one wake-up byte (to the other end of the pair); never blocks, never signals.
    fn wake_peer(&self) {
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        let _ = send(self.0.as_raw_fd(), &[1], flags);
    }

    /// Takes the wake-ups waiting on this end; never blocks. Bounded: a peer that keeps
    /// sending leaves this end readable, to be cleared again next turn. False when the
    /// pair was shut down (end of file: readable for ever, so a worker that does this
    /// would keep the daemon's loop busy).
    fn clear(&self) -> bool {
        let mut buf = [0u8; 256];
        for _ in 0..16 {
            match recv(self.0.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return false,
                Ok(n) if n == buf.len() => {}
                _ => return true,
            }
        }
        true
    }
}

impl Drop for OwnedSocket {
    fn drop(&mut self) {
        crate::sys::disown(self.0.as_raw_fd());
    }
}

/// How long a worker's end looks again at its empty ring, after a streak of frames, before
/// it sleeps (see `Channel::linger`).
const LINGER: std::time::Duration = std::time::Duration::from_micros(2);

/// A channel: the shared region and the wake-up sockets, as held by one end.
///
/// Both ends may live in one process (the supervisor's unit tests, the benchmarks): the
/// region and the wake-up sockets are shared, and released with the last end.
pub struct Channel {
    region: Arc<Region>,
    /// This end's socket: readable when this end is woken; sending on it wakes the other.
    own: Arc<OwnedSocket>,
    /// The daemon's end only, until the worker is forked: the worker's socket, to hand over.
    /// A worker's end never holds the daemon's socket: it can neither read the daemon's
    /// wake-ups nor keep the daemon's end open, and it reads the end of file there when the
    /// daemon's end closes.
    peer: Option<Arc<OwnedSocket>>,
    /// The region's memfd, until the worker is forked (a fork server hands it over).
    memfd: Option<Arc<Memfd>>,
    end: End,
    /// What this handle has seen of the down ring and of the up ring (this process's own
    /// memory; each handle starts afresh, the hints are checked before use).
    seen: [Seen; 2],
    /// Frames this handle took in a row since it last found its ring empty, counted up to
    /// 2 (see `linger`).
    streak: std::sync::atomic::AtomicU32,
}

// SAFETY: the region is only ever accessed through atomics (see `Region::layout` and
// `Region::data`), which are safe to share and send between threads.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Channel {
    /// Maps a region and creates the wake-up sockets, for the daemon; the forked worker
    /// takes its end with [`Channel::worker_end`].
    ///
    /// # Errors
    ///
    /// The operating system's error mapping memory or creating the sockets.
    pub fn new() -> io::Result<Channel> {
        let (region, memfd) = Region::new()?;
        crate::sys::own(memfd.as_raw_fd());
        let (region, memfd) = (Arc::new(region), Memfd(memfd));
        // Close-on-exec, as std makes every socket.
        let (daemon, worker) = std::os::unix::net::UnixStream::pair()?;
        for socket in [&daemon, &worker] {
            socket.set_nonblocking(true)?;
            crate::sys::own(socket.as_raw_fd());
        }
        Ok(Channel {
            region,
            own: Arc::new(OwnedSocket(daemon)),
            peer: Some(Arc::new(OwnedSocket(worker))),
            memfd: Some(Arc::new(memfd)),
            end: End::Daemon,
            seen: Default::default(),
            streak: Default::default(),
        })
    }

    /// The worker's end of this channel (in the forked child, or in the same process for
    /// tests and benchmarks).
    ///
    /// # Panics
    ///
    /// On a daemon end that released the worker's socket ([`Channel::release_peer`]).
    pub fn worker_end(&self) -> Channel {
        let worker = self.peer.clone().expect("the worker's socket is held");
        Channel {
            region: self.region.clone(),
            own: worker,
            peer: None,
            memfd: self.memfd.clone(),
            end: End::Worker,
            seen: Default::default(),
            streak: Default::default(),
        }
    }

    /// Closes this end's copy of the worker's socket and the region's memfd (the daemon's,
    /// once the worker is forked and holds its own).
    pub(crate) fn release_peer(&mut self) {
        self.peer = None;
        self.memfd = None;
    }

    /// What a fork server hands to the worker it forks, from the worker's end: the region's
    /// memfd and the worker's socket (see [`Channel::worker_from_parts`]). `None` without the
    /// memfd (released).
    pub(crate) fn parts_for_worker(&self) -> Option<[BorrowedFd<'_>; 2]> {
        Some([self.memfd.as_deref()?.0.as_fd(), self.own.fd()])
    }

    /// The worker's end, in a process forked by a fork server, from what the daemon handed
    /// over: the region is mapped again from its memfd (then closed).
    ///
    /// # Errors
    ///
    /// The operating system's, mapping the region; a memfd of the wrong size.
    pub(crate) fn worker_from_parts(memfd: OwnedFd, worker: OwnedFd) -> io::Result<Channel> {
        let region = Region::map(&memfd)?;
        drop(memfd);
        crate::sys::own(worker.as_raw_fd());
        Ok(Channel {
            region: Arc::new(region),
            own: Arc::new(OwnedSocket(std::os::unix::net::UnixStream::from(worker))),
            peer: None,
            memfd: None,
            end: End::Worker,
            seen: Default::default(),
            streak: Default::default(),
        })
    }

    /// Another handle on this same end (the worker's logger shares its channel).
    pub(crate) fn same_end(&self) -> Channel {
        Channel {
            region: self.region.clone(),
            own: self.own.clone(),
            peer: self.peer.clone(),
            memfd: self.memfd.clone(),
            end: self.end,
            seen: Default::default(),
            streak: Default::default(),
        }
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.region.layout().header
    }

    /// Whether the header still carries the magic and version (a worker that scribbles over
    /// the region is caught here).
    pub fn header_ok(&self) -> bool {
        let h = self.header();
        h.magic.load(Ordering::Relaxed) == MAGIC && h.version.load(Ordering::Relaxed) == VERSION
    }

    /// Ring `index` (0: down, 1: up) and its consumer's doorbell flag.
    fn ring(&self, index: usize) -> (Ring<'_>, &AtomicU32) {
        let layout = self.region.layout();
        let positions = if index == 0 { &layout.down } else { &layout.up };
        let ring = Ring::new(
            &positions.head,
            &positions.tail,
            self.region.data(index),
            &self.seen[index],
        );
        (ring, &positions.sleeping)
    }

    /// The outgoing ring with its consumer's flag.
    fn outgoing(&self) -> (Ring<'_>, &AtomicU32) {
        self.ring(match self.end {
            End::Daemon => 0,
            End::Worker => 1,
        })
    }

    /// The incoming ring with this end's flag.
    fn incoming(&self) -> (Ring<'_>, &AtomicU32) {
        self.ring(match self.end {
            End::Daemon => 1,
            End::Worker => 0,
        })
    }

    /// The descriptor that becomes readable when a message arrives at this end.
    pub fn incoming_fd(&self) -> BorrowedFd<'_> {
        self.own.fd()
    }

    /// This end's socket, shared (not a copy of its descriptor), to register with a poller.
    pub(crate) fn wakeup(&self) -> Wakeup {
        Wakeup(self.own.clone())
    }

    /// The wake-up sockets this end holds (a worker's end: its own; the daemon's end, until
    /// the worker is forked: the worker's too), for a forked child that keeps only these
    /// descriptors.
    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        std::iter::once(self.own.fd()).chain(self.peer.as_ref().map(|p| p.fd()))
    }

    /// Sends one encoded frame, and wakes the other end if it sleeps.
    ///
    /// # Errors
    ///
    /// [`ChannelError::Full`] when the ring has no room now, [`ChannelError::TooLarge`] when
    /// the frame could never fit. Nothing is sent then.
    pub fn send_frame(&self, frame: &[u8]) -> Result<(), ChannelError> {
        let (ring, sleeping) = self.outgoing();
        if frame.len() > ring.max_frame() {
            return Err(ChannelError::TooLarge(frame.len()));
        }
        ring.push(frame).map_err(ChannelError::Full)?;
        if doorbell::must_ring(sleeping) {
            // Dropped if the other end's buffer is full: it has wake-ups unread then.
            self.own.wake_peer();
        }
        Ok(())
    }

    /// Writes garbage toward the other end, for tests of its defences: a frame that is not
    /// MessagePack, or (with `header`) a header whose magic is overwritten.
    #[cfg(test)]
    pub(crate) fn scribble(&self, header: bool) {
        if header {
            self.header().magic.store(0xdead_beef, Ordering::Relaxed);
        } else {
            let _ = self.outgoing().0.push(&[0xc1, 0xc1, 0xc1]);
        }
        self.own.wake_peer();
    }

    /// Breaks the outgoing ring's positions (head far past tail), for tests of the other
    /// end's defences.
    #[cfg(test)]
    pub(crate) fn corrupt_ring(&self) {
        let layout = self.region.layout();
        let positions = match self.end {
            End::Daemon => &layout.down,
            End::Worker => &layout.up,
        };
        let tail = positions.tail.load(Ordering::Relaxed);
        positions.head.store(
            tail.wrapping_add(3 * RING_CAPACITY as u64),
            Ordering::Release,
        );
        self.own.wake_peer();
    }

    /// Says this end is awake and clears its wake-up, before draining with
    /// [`Channel::receive_frame`]: until that finds the ring empty, the other end sends no
    /// wake-up, so drain until it does (or come back to it without waiting) before waiting
    /// for the descriptor again.
    ///
    /// Returns false when the other end's socket is closed or the pair was shut down (at the
    /// daemon's end: a hostile or broken worker did that; at a worker's: the daemon's end is
    /// gone): the channel can no longer wake this end.
    pub fn clear_wakeup(&self) -> bool {
        doorbell::wake(self.incoming().1);
        self.own.clear()
    }

    /// Takes the next frame into `buffer`; false when there is none, and then this end is
    /// marked sleeping: the next frame sent wakes it (its descriptor becomes readable).
    ///
    /// # Errors
    ///
    /// [`ChannelError::Corrupt`] when the ring is not what this end's peer may write.
    pub fn receive_frame(&self, buffer: &mut Vec<u8>) -> Result<bool, ChannelError> {
        let (ring, sleeping) = self.incoming();
        let mut got = ring.pop(buffer);
        if matches!(got, Ok(false)) && self.linger(&ring) {
            got = ring.pop(buffer);
        }
        // Whatever lingering found, an empty ring goes through the doorbell's protocol.
        if matches!(got, Ok(false)) && !doorbell::sleep(sleeping, &ring) {
            got = ring.pop(buffer);
        }
        let got = got.map_err(ChannelError::Corrupt)?;
        // This handle's own count, stored only when it changes: a stream of frames costs
        // one load each, no store and no read-modify-write.
        let streak = self.streak.load(Ordering::Relaxed);
        let next = if got { (streak + 1).min(2) } else { 0 };
        if next != streak {
            self.streak.store(next, Ordering::Relaxed);
        }
        Ok(got)
    }

    /// Whether a frame arrived while this end, finding its ring empty after a streak of
    /// frames, looked again for a moment ([`LINGER`]) before it sleeps.
    ///
    /// A worker's end only, and only after two frames or more in a row: a stream of frames
    /// (4 KiB commands, say) finds its reader faster than its writer, so the reader emptied
    /// the ring and slept once a ring, and each sleep cost a wake-up from the other CPU
    /// (40–60 µs where that CPU halted): 64 KiB a wake-up. A single frame (the stop, a
    /// call) never lingers, and the daemon, which reads thousands of channels, never does.
    fn linger(&self, ring: &Ring<'_>) -> bool {
        self.linger_for(ring, LINGER)
    }

    fn linger_for(&self, ring: &Ring<'_>, time: std::time::Duration) -> bool {
        if self.end != End::Worker || self.streak.load(Ordering::Relaxed) < 2 {
            return false;
        }
        let until = std::time::Instant::now() + time;
        loop {
            // Looked at now and then only: each look takes the line the producer writes.
            for _ in 0..32 {
                std::hint::spin_loop();
            }
            if !ring.is_empty() {
                return true;
            }
            if std::time::Instant::now() >= until {
                return false;
            }
        }
    }

    /// In a forked child, unmaps another worker's region and forgets its descriptors without
    /// closing them (the child closes every inherited descriptor at once afterwards).
    pub(crate) fn forget_in_child(self) {
        let channel = std::mem::ManuallyDrop::new(self);
        // SAFETY: the mapping is this channel's own; nothing in the child uses it after this
        // (the child's copy of the `Arc` is leaked with `channel`, never dropped).
        let _ = unsafe { munmap(channel.region.ptr.cast(), channel.region.len) };
    }
}

impl AsFd for Channel {
    /// The descriptor that becomes readable when a message arrives at this end.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.incoming_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wake-up bytes waiting on `end`'s descriptor (taken).
    fn wakeups(end: &Channel) -> usize {
        let mut bytes = [0u8; 64];
        let fd = end.incoming_fd().as_raw_fd();
        recv(fd, &mut bytes, MsgFlags::MSG_DONTWAIT).unwrap_or(0)
    }

    #[test]
    fn frames_cross_in_both_directions_and_ring_only_a_sleeping_reader() {
        let daemon = Channel::new().unwrap();
        assert!(daemon.header_ok());
        let worker = daemon.worker_end();
        let mut buf = Vec::new();
        // The worker has not looked yet: it counts as sleeping, the first frame rings, the
        // second does not (the wake-up is pending).
        daemon.send_frame(b"one").unwrap();
        daemon.send_frame(b"two").unwrap();
        assert_eq!(wakeups(&worker), 1);
        assert!(worker.clear_wakeup());
        assert!(worker.receive_frame(&mut buf).unwrap());
        assert_eq!(buf, b"one");
        // Awake and draining: nothing rings.
        daemon.send_frame(b"three").unwrap();
        assert_eq!(wakeups(&worker), 0);
        for expected in [&b"two"[..], b"three"] {
            assert!(worker.receive_frame(&mut buf).unwrap());
            assert_eq!(buf, expected);
        }
        // Found empty: asleep again, and the next frame rings.
        assert!(!worker.receive_frame(&mut buf).unwrap());
        daemon.send_frame(b"four").unwrap();
        assert_eq!(wakeups(&worker), 1);
        worker.send_frame(b"up").unwrap();
        assert_eq!(wakeups(&daemon), 1);
        assert!(daemon.receive_frame(&mut buf).unwrap());
        assert_eq!(buf, b"up");
    }

    #[test]
    fn after_a_streak_a_workers_end_takes_a_frame_sent_while_it_lingers_without_a_wake_up() {
        let daemon = Channel::new().unwrap();
        let worker = daemon.worker_end();
        let mut buf = Vec::new();
        for frame in [&b"one"[..], b"two"] {
            daemon.send_frame(frame).unwrap();
        }
        assert!(worker.clear_wakeup());
        for _ in 0..2 {
            assert!(worker.receive_frame(&mut buf).unwrap());
        }
        // Empty now, after a streak of two: it looks again (here up to 10 s) before it
        // sleeps, and the frame sent meanwhile is found without ringing.
        let start = std::time::Instant::now();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            daemon.send_frame(b"three").unwrap();
            daemon
        });
        let (ring, flag) = worker.incoming();
        assert!(worker.linger_for(&ring, std::time::Duration::from_secs(10)));
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        let daemon = sender.join().unwrap();
        assert_eq!(flag.load(Ordering::Relaxed), doorbell::AWAKE);
        assert_eq!(wakeups(&worker), 0, "no wake-up was sent");
        assert!(worker.receive_frame(&mut buf).unwrap());
        assert_eq!(buf, b"three");
        // Nothing more: it sleeps after lingering, and the next frame rings as ever.
        assert!(!worker.receive_frame(&mut buf).unwrap());
        assert_eq!(flag.load(Ordering::Relaxed), doorbell::SLEEPING);
        daemon.send_frame(b"four").unwrap();
        assert_eq!(wakeups(&worker), 1);
    }

    #[test]
    fn the_daemons_end_and_a_single_frame_never_linger() {
        let daemon = Channel::new().unwrap();
        let worker = daemon.worker_end();
        let mut buf = Vec::new();
        let long = std::time::Duration::from_secs(10);
        // The daemon's end, after a streak: no lingering at all.
        for _ in 0..3 {
            worker.send_frame(b"up").unwrap();
        }
        for _ in 0..3 {
            assert!(daemon.receive_frame(&mut buf).unwrap());
        }
        let start = std::time::Instant::now();
        assert!(!daemon.linger_for(&daemon.incoming().0, long));
        // A worker's end after one frame (a stop, a call): none either.
        daemon.send_frame(b"stop").unwrap();
        assert!(worker.receive_frame(&mut buf).unwrap());
        assert!(!worker.linger_for(&worker.incoming().0, long));
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_worker_that_scribbles_over_the_flags_changes_no_frame() {
        let daemon = Channel::new().unwrap();
        let worker = daemon.worker_end();
        let layout = daemon.region.layout();
        let mut buf = Vec::new();
        for (i, garbage) in [0, 1, 2, 0xffff_ffff].into_iter().enumerate() {
            layout.down.sleeping.store(garbage, Ordering::Relaxed);
            layout.up.sleeping.store(garbage, Ordering::Relaxed);
            daemon.send_frame(&[i as u8; 9]).unwrap();
            // Any value but awake rings; the daemon's own flag decides nothing it does.
            assert_eq!(wakeups(&worker), usize::from(garbage != doorbell::AWAKE));
            assert!(worker.receive_frame(&mut buf).unwrap());
            assert_eq!(buf, [i as u8; 9]);
            worker.send_frame(&[i as u8; 3]).unwrap();
            assert!(daemon.receive_frame(&mut buf).unwrap());
            assert_eq!(buf, [i as u8; 3]);
            assert!(!daemon.receive_frame(&mut buf).unwrap());
            assert_eq!(
                layout.up.sleeping.load(Ordering::Relaxed),
                doorbell::SLEEPING
            );
            wakeups(&daemon);
        }
    }

    #[test]
    fn wake_ups_never_block_even_when_a_worker_clears_o_nonblock() {
        let daemon = Channel::new().unwrap();
        let worker = daemon.worker_end();
        // What a hostile worker can do to the descriptions it shares with the daemon.
        for fd in daemon.fds() {
            let empty = nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty());
            nix::fcntl::fcntl(fd, empty).unwrap();
        }
        // Nothing to read: clearing returns at once.
        daemon.clear_wakeup();
        // The worker never clears its wake-ups: its buffer fills, and the daemon's further
        // wake-ups are dropped, not blocked on.
        let mut buf = Vec::new();
        // (It drains its ring to empty each time: it sleeps, so every frame rings.)
        for _ in 0..200_000 {
            daemon.send_frame(b"").unwrap();
            assert!(worker.receive_frame(&mut buf).unwrap());
            assert!(!worker.receive_frame(&mut buf).unwrap());
        }
        worker.own.wake_peer();
        assert!(daemon.clear_wakeup());
        assert!(worker.clear_wakeup());
        // A worker that shuts the pair down is told apart (its end of file would keep the
        // daemon's socket readable for ever).
        let fd = worker.incoming_fd();
        nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both).unwrap();
        assert!(!daemon.clear_wakeup());
    }

    #[test]
    fn a_worker_end_holds_its_own_socket_only_and_reads_the_daemon_s_close() {
        let daemon = Channel::new().unwrap();
        let worker = daemon.worker_end();
        // What a forked worker keeps: its own socket, never the daemon's.
        let kept: Vec<_> = worker.fds().map(|fd| fd.as_raw_fd()).collect();
        assert_eq!(kept, [worker.incoming_fd().as_raw_fd()]);
        let [_, socket] = worker.parts_for_worker().unwrap();
        assert_eq!(socket.as_raw_fd(), worker.incoming_fd().as_raw_fd());
        assert!(worker.clear_wakeup());
        // The daemon's end goes: the worker is told (end of file), where it used to hold
        // the daemon's socket itself and wait for ever.
        drop(daemon);
        assert!(!worker.clear_wakeup());
    }

    #[test]
    fn full_and_oversized_frames_are_errors_to_the_sender() {
        let daemon = Channel::new().unwrap();
        let big = vec![0u8; RING_CAPACITY];
        assert!(matches!(
            daemon.send_frame(&big),
            Err(ChannelError::TooLarge(_))
        ));
        let chunk = vec![7u8; 1000];
        let mut sent = 0;
        loop {
            match daemon.send_frame(&chunk) {
                Ok(()) => sent += 1,
                Err(ChannelError::Full(_)) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(sent, RING_CAPACITY / 1004);
        // What a sender is told: a full ring is worth retrying, an oversized frame never.
        use crate::error::WorkerError;
        let full = daemon.send_frame(&chunk).unwrap_err();
        assert_eq!(WorkerError::from(full), WorkerError::Full);
        let never = daemon.send_frame(&big).unwrap_err();
        assert!(
            matches!(WorkerError::from(never), WorkerError::Channel(m) if m.contains("does not fit"))
        );
    }
}
