//! Keeping each worker's shared region out of the forks that follow its own, and the
//! daemon's tables out of the workers the fork server forks (`keep_pages_out_of_forks`).
//! (Workers are forked by the fork server, which never maps the regions; they matter where
//! the daemon forks its workers itself: no server, or a worker installed after it started.)
//!
//! A worker needs its own channel's region and nobody else's. Without care, the fork of the
//! n-th worker copies the n − 1 regions before it into the child, which must then unmap
//! them one by one: n syscalls per fork, n² over a fleet, and every child's exit tearing
//! down what it unmapped or kept. So right after a worker is forked, the daemon marks its
//! region `MADV_DONTFORK`: the kernel leaves it out of every later fork, and a child has
//! nothing of the others' regions to unmap.
//!
//! `madvise` wants the region's exact extent, which the channel does not expose: it is
//! found once, from `/proc/self/maps`, as the mapping that starts at the channel's header
//! (every region has the same size, the rings' capacity being a constant). Where that
//! cannot be found (no `/proc`, a layout whose header is not where its mapping starts), no
//! region is marked and each child unmaps the others as before.

use std::sync::OnceLock;

use nix::libc;

use crate::worker::Channel;

/// The size of a channel's mapping, found from the first one: `None` if it cannot be.
static REGION_LEN: OnceLock<Option<usize>> = OnceLock::new();

/// Marks `channel`'s region so that no later fork copies it; true if it is marked.
pub(super) fn keep_out_of_forks(channel: &Channel) -> bool {
    let start = std::ptr::from_ref(channel.header()) as usize;
    if start % page_size() != 0 {
        return false;
    }
    let Some(len) = *REGION_LEN.get_or_init(|| mapping_len(start)) else {
        return false;
    };
    // SAFETY: `[start, start + len)` is exactly one mapping, the channel's region (the
    // mapping found at its header has this size, and every region is the same size), whole
    // pages. No later fork needs another worker's region, and the region is never given out
    // again while marked: it is unmapped with the channel, which takes the mark with it.
    unsafe { keep_pages_out_of_forks(start, len) }
}

/// Marks the whole pages within `[start, start + len)` so that no later fork copies them;
/// true if there were any and they are marked. For tables of this process that no child
/// reads: the pages at either end, shared with whatever lies beside the table, are kept.
///
/// # Safety
///
/// No process forked from now on reads or writes memory within the range (there it is not
/// mapped), and this process never gives memory of the range out again while the pages
/// keep the mark (what the allocator handed out there would be missing from every later
/// child; unmapping the range takes the mark away).
pub(super) unsafe fn keep_pages_out_of_forks(start: usize, len: usize) -> bool {
    let page = page_size();
    let low = start.div_ceil(page) * page;
    let high = start.saturating_add(len) / page * page;
    if high <= low {
        return false;
    }
    // SAFETY: whole pages of this process's own memory (the caller's table). MADV_DONTFORK
    // changes nothing here: the pages stay mapped in this process; only the processes
    // forked from now on go without them, which the caller says never touch them.
    let rc = unsafe { libc::madvise(low as *mut libc::c_void, high - low, libc::MADV_DONTFORK) };
    rc == 0
}

/// The whole pages that `[start, start + len)` overlaps (address and length; none for an
/// empty range).
pub(super) fn pages_over(start: usize, len: usize) -> (usize, usize) {
    if len == 0 {
        return (start, 0);
    }
    let page = page_size();
    let low = start / page * page;
    (low, (start + len).div_ceil(page) * page - low)
}

/// Lets the whole pages `[start, start + len)` into the forks that follow again (kept out
/// by [`keep_pages_out_of_forks`]); true if they are.
pub(super) fn let_pages_into_forks(start: usize, len: usize) -> bool {
    // SAFETY: MADV_DOFORK on pages of this process changes nothing in it: the processes
    // forked from now on get a copy of them, as of any other page.
    len > 0 && unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DOFORK) } == 0
}

pub(super) fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the system.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

/// The length of the mapping that starts at `start`, by `/proc/self/maps`.
fn mapping_len(start: usize) -> Option<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let (low, high) = line.split_whitespace().next()?.split_once('-')?;
        let low = usize::from_str_radix(low, 16).ok()?;
        let high = usize::from_str_radix(high, 16).ok()?;
        (low == start).then(|| high - low)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_is_found_and_marked_whole() {
        let channel = Channel::new().unwrap();
        assert!(
            keep_out_of_forks(&channel),
            "the region is found and marked"
        );
        let start = std::ptr::from_ref(channel.header()) as usize;
        let len = REGION_LEN.get().copied().flatten().expect("probed");
        assert!(len >= 2 * crate::worker::channel::RING_CAPACITY);
        // The same mapping, one line, marked `dd` (dontcopy) in smaps.
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let header = format!("{start:x}-{:x} ", start + len);
        let entry = smaps.split_once(&header).expect("the mapping").1;
        let flags = entry
            .lines()
            .find(|l| l.starts_with("VmFlags:"))
            .expect("its flags");
        assert!(flags.contains(" dc"), "MADV_DONTFORK shows as dc: {flags}");
        // Still mapped and working here.
        let worker = channel.worker_end();
        channel.send_frame(b"still here").unwrap();
        let mut buf = Vec::new();
        assert!(worker.receive_frame(&mut buf).unwrap());
        assert_eq!(buf, b"still here");
    }
}
