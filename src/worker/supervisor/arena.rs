//! The templates' memory: mappings of their own, so that the fork server can leave every
//! template but the one it forks out of each worker.
//!
//! A template (the value or factory installed for a worker) is boxed when it is installed.
//! In the general heap, 10,000 of them (80 bytes each for a small factory) sat on pages that
//! every worker the fork server forked copied at its fork and tore down at its exit, though
//! each runs only its own. Here they are placed one after the other in mappings of the
//! arena's, which the server keeps out of its forks (`MADV_DONTFORK`), letting in only the
//! pages of the template it forks, for that one fork (see `server::fork_worker`). What a
//! template owns (a `String`, an `Arc` it captured) stays in the heap, as the user's code
//! allocated it.
//!
//! The entries' names are placed here too (a name in the heap was 32 bytes there, in every
//! worker; neither the server nor a worker reads one: a worker is sent its own).
//!
//! Entries are never removed, so the arena only grows; a template is dropped in place with
//! its entry, and the arena's mappings go when it is dropped, after the entries.

use std::alloc::Layout;
use std::io;
use std::ptr::NonNull;

use nix::libc;

use super::template::{Gone, Template};

/// The first mapping's size; each next one doubles, up to [`LARGEST`] (a template larger
/// than that gets a mapping of its size).
const FIRST: usize = 64 * 1024;
const LARGEST: usize = 4 * 1024 * 1024;

/// Mappings the templates are placed in, one after the other.
#[derive(Default)]
pub(super) struct Arena {
    /// Address and length of each mapping (whole pages), the last one being filled.
    chunks: Vec<(usize, usize)>,
    /// How much of the last mapping is used.
    used: usize,
}

impl Arena {
    /// Moves `value` into the arena.
    ///
    /// # Errors
    ///
    /// The error of `mmap` when there is no room left and no new mapping can be made.
    pub(super) fn place<T: Template>(&mut self, value: T) -> io::Result<Placed> {
        let layout = Layout::new::<T>();
        let at: NonNull<T> = if layout.size() == 0 {
            NonNull::dangling()
        } else {
            self.allocate(layout)?.cast()
        };
        // SAFETY: `at` is valid for a write of a `T` and aligned for it (a fresh block of
        // `layout` in a mapping of this arena, or dangling and aligned for a zero-sized
        // `T`), and nothing else refers to it: the `Placed` owns it from here.
        unsafe { at.as_ptr().write(value) };
        Ok(Placed(at))
    }

    /// Copies `name` into the arena.
    ///
    /// # Errors
    ///
    /// The error of `mmap` when there is no room left and no new mapping can be made.
    pub(super) fn place_str(&mut self, name: &str) -> io::Result<Name> {
        let at = if name.is_empty() {
            NonNull::dangling()
        } else {
            let at = self.allocate(Layout::for_value(name.as_bytes()))?;
            // SAFETY: a fresh block of `name.len()` bytes in a mapping of this arena, which
            // nothing else refers to; `name` is elsewhere (it is not in the arena's free
            // room), so the two do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(name.as_ptr(), at.as_ptr(), name.len());
            }
            at
        };
        Ok(Name {
            at,
            len: name.len(),
        })
    }

    fn allocate(&mut self, layout: Layout) -> io::Result<NonNull<u8>> {
        if let Some(&(start, len)) = self.chunks.last() {
            let at = (start + self.used).next_multiple_of(layout.align());
            if at + layout.size() <= start + len {
                self.used = at + layout.size() - start;
                return Ok(NonNull::new(at as *mut u8).expect("within a mapping"));
            }
        }
        let next = self
            .chunks
            .last()
            .map_or(FIRST, |&(_, len)| (2 * len).min(LARGEST));
        let len = next
            .max(layout.size() + layout.align())
            .next_multiple_of(super::unshared::page_size());
        // Unmapped only when the arena is dropped.
        let start = super::mapped::new_mapping(len);
        if start == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        self.chunks.push((start as usize, len));
        self.used = 0;
        self.allocate(layout)
    }

    /// The arena's mappings: address and length.
    pub(super) fn ranges(&self) -> &[(usize, usize)] {
        &self.chunks
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        for &(start, len) in &self.chunks {
            // SAFETY: a mapping this arena made; every template placed in it was dropped
            // before (the entries, which hold them, are dropped before the arena: see
            // `Workers`), and nothing else points into it.
            unsafe { libc::munmap(start as *mut libc::c_void, len) };
        }
    }
}

/// A template placed in an [`Arena`] (or [`Placed::gone`]): it owns the value, which it
/// drops in place. It must be dropped before its arena.
pub(super) struct Placed(NonNull<dyn Template>);

impl Placed {
    /// What stands in for a template taken out for a moment (it takes no memory).
    pub(super) fn gone() -> Placed {
        Placed(NonNull::<Gone>::dangling())
    }

    pub(super) fn get(&mut self) -> &mut dyn Template {
        // SAFETY: the value was written at `place` and is owned by this `Placed` alone, which
        // lives no longer than its arena's mappings; `&mut self` makes the borrow unique.
        unsafe { self.0.as_mut() }
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        // SAFETY: the value is valid (written at `place`, never moved out: `Template`'s
        // methods take `&mut self`) and dropped once, here; the memory stays the arena's.
        unsafe { std::ptr::drop_in_place(self.0.as_ptr()) }
    }
}

/// A name placed in an [`Arena`]: read as a `str`. It must be dropped before its arena.
pub(super) struct Name {
    at: NonNull<u8>,
    len: usize,
}

impl Name {
    pub(super) fn as_str(&self) -> &str {
        // SAFETY: `len` bytes copied from a `str` at `place_str` (valid UTF-8), never written
        // again, in a mapping that lives as long as the arena, which outlives this `Name`
        // (or dangling with `len` 0).
        unsafe {
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(self.at.as_ptr(), self.len))
        }
    }
}

impl std::ops::Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl slog::Value for Name {
    fn serialize(
        &self,
        _: &slog::Record<'_>,
        key: slog::Key,
        serializer: &mut dyn slog::Serializer,
    ) -> slog::Result {
        serializer.emit_str(key, self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::job::Job;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A template that counts its drops and holds `N` bytes.
    struct Counted<const N: usize>(Rc<Cell<u32>>, [u8; N]);

    impl<const N: usize> Template for Counted<N> {
        fn run(&mut self, _: Job) -> i32 {
            i32::from(self.1[N - 1])
        }
    }

    impl<const N: usize> Drop for Counted<N> {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn templates_are_placed_within_the_arenas_mappings_and_dropped_once() {
        let drops = Rc::new(Cell::new(0));
        let mut arena = Arena::default();
        let mut placed = Vec::new();
        // Small ones over several mappings, and one larger than the next mapping would be.
        for i in 0..20_000u32 {
            let mut bytes = [0u8; 24];
            bytes[23] = i as u8;
            placed.push(arena.place(Counted(drops.clone(), bytes)).unwrap());
        }
        placed.push(
            arena
                .place(Counted(drops.clone(), [7u8; 2 * FIRST]))
                .unwrap(),
        );
        assert!(arena.ranges().len() >= 4, "{:x?}", arena.ranges());
        for (i, p) in placed.iter_mut().enumerate() {
            let at = std::ptr::from_mut(p.get()).cast::<u8>() as usize;
            let size = std::mem::size_of_val(p.get());
            assert!(
                arena
                    .ranges()
                    .iter()
                    .any(|&(s, l)| s <= at && at + size <= s + l),
                "template {i} at {at:#x} is outside the arena"
            );
            assert_eq!(at % std::mem::align_of::<Counted<24>>(), 0);
        }
        // Each reads back what it was given (no two overlap).
        let small: Vec<u8> = placed[..20_000]
            .iter_mut()
            .map(|p| {
                let t = std::ptr::from_mut(p.get()).cast::<Counted<24>>();
                // SAFETY: these are the `Counted<24>` placed above.
                unsafe { (*t).1[23] }
            })
            .collect();
        assert!(small.iter().enumerate().all(|(i, &b)| b == i as u8));
        assert_eq!(drops.get(), 0);
        drop(placed);
        assert_eq!(drops.get(), 20_001);
        drop(arena);
    }

    #[test]
    fn names_read_back_as_placed_among_the_templates() {
        let drops = Rc::new(Cell::new(0));
        let mut arena = Arena::default();
        let mut names = Vec::new();
        let mut placed = Vec::new();
        for i in 0..10_000u32 {
            names.push(arena.place_str(&format!("w{i}-\u{e9}")).unwrap());
            placed.push(arena.place(Counted(drops.clone(), [i as u8; 3])).unwrap());
        }
        let empty = arena.place_str("").unwrap();
        assert_eq!(empty.as_str(), "");
        for (i, name) in names.iter().enumerate() {
            assert_eq!(name.as_str(), format!("w{i}-\u{e9}"));
            let at = name.as_ptr() as usize;
            assert!(
                arena
                    .ranges()
                    .iter()
                    .any(|&(s, l)| s <= at && at + name.len() <= s + l)
            );
        }
        assert_eq!(
            format!("{} {:?}", names[3], names[4]),
            "w3-\u{e9} \"w4-\u{e9}\""
        );
        drop(placed);
        assert_eq!(drops.get(), 10_000);
    }

    #[test]
    fn a_zero_sized_template_takes_no_room() {
        let mut arena = Arena::default();
        let mut gone = arena.place(Gone).unwrap();
        assert!(arena.ranges().is_empty());
        let _ = gone.get();
        let _ = Placed::gone();
    }
}
