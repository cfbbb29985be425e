//! The daemon's tables that no worker reads, each in a mapping of its own.
//!
//! The fork server leaves the daemon's tables out of the workers it forks (`MADV_DONTFORK`
//! on their whole pages; see `server`). A table in the general heap shares its first and
//! last pages with whatever lies beside it, and glibc's own mapping of a large block starts
//! with a page of its bookkeeping: those pages stayed in every worker, each as one more
//! mapping to copy at the fork and to tear down at the exit (about 1.5 µs an exit each), and
//! a table left out of the heap's middle split the heap in two there. A [`MapVec`] is a
//! table that is a whole mapping: nothing of it is left in a worker.
//!
//! It grows as a `Vec` does, by doubling, but with `mremap`, which moves the pages rather
//! than copying them.

use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use nix::libc;

/// A growable array in an anonymous mapping of its own (whole pages, or none while empty).
pub(super) struct MapVec<T> {
    at: NonNull<T>,
    len: usize,
    /// The mapping's length in bytes: whole pages, 0 while there is none.
    bytes: usize,
}

impl<T> MapVec<T> {
    /// Elements are placed one after the other from the mapping's start, which is page
    /// aligned; a zero-sized one would need no mapping at all.
    const FITS: () = assert!(size_of::<T>() > 0 && align_of::<T>() <= 4096);

    /// An empty array, with no mapping yet.
    pub(super) const fn new() -> MapVec<T> {
        let () = Self::FITS;
        MapVec {
            at: NonNull::dangling(),
            len: 0,
            bytes: 0,
        }
    }

    /// `n` copies of `value`.
    ///
    /// # Errors
    ///
    /// The error of `mmap` when there is no room for them.
    pub(super) fn filled(n: usize, value: T) -> io::Result<MapVec<T>>
    where
        T: Copy,
    {
        let mut table = MapVec::<T>::new();
        if n > 0 {
            table.grow(n)?;
        }
        for i in 0..n {
            // SAFETY: `i` < `n` ≤ the capacity: within the mapping, aligned (the mapping is
            // page aligned, and elements follow each other), not yet initialised.
            unsafe { table.at.as_ptr().add(i).write(value) };
        }
        table.len = n;
        Ok(table)
    }

    /// How many elements fit before the mapping must grow.
    pub(super) fn capacity(&self) -> usize {
        self.bytes / size_of::<T>()
    }

    /// Appends `value`.
    ///
    /// # Errors
    ///
    /// The error of `mmap` or `mremap` when the array is full and cannot grow; `value` is
    /// dropped then and the array is as it was.
    pub(super) fn try_push(&mut self, value: T) -> io::Result<()> {
        if self.len == self.capacity() {
            self.grow(self.len + 1)?;
        }
        // SAFETY: `len` < the capacity: within the mapping and aligned, past the initialised
        // elements.
        unsafe { self.at.as_ptr().add(self.len).write(value) };
        self.len += 1;
        Ok(())
    }

    /// Makes room for at least `wanted` elements (twice the capacity at least).
    fn grow(&mut self, wanted: usize) -> io::Result<()> {
        let page = super::unshared::page_size();
        let bytes = wanted
            .max(2 * self.capacity())
            .checked_mul(size_of::<T>())
            .and_then(|b| b.checked_next_multiple_of(page))
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        let at = if self.bytes == 0 {
            new_mapping(bytes)
        } else {
            // SAFETY: this array's own mapping, exactly (`at`, `bytes`), which nothing else
            // points into (the array owns its elements; a borrow of them cannot outlive this
            // `&mut self`). Moving it moves the elements' bytes, which is how any Rust value
            // moves; on failure the old mapping is left as it was.
            unsafe {
                libc::mremap(
                    self.at.as_ptr().cast(),
                    self.bytes,
                    bytes,
                    libc::MREMAP_MAYMOVE,
                )
            }
        };
        if at == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        self.at = NonNull::new(at.cast()).expect("a mapping is not at address 0");
        self.bytes = bytes;
        Ok(())
    }

    /// The mapping: its address and length in bytes (a length of 0 while there is none).
    pub(super) fn mapping(&self) -> (usize, usize) {
        (self.at.as_ptr() as usize, self.bytes)
    }
}

/// A new private anonymous mapping of `len` bytes (whole pages), read-write, where the
/// kernel puts it; `MAP_FAILED` when there is none.
pub(super) fn new_mapping(len: usize) -> *mut libc::c_void {
    // SAFETY: a new mapping at an address the kernel picks: nothing else is affected.
    unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    }
}

impl MapVec<u8> {
    /// `n` zero bytes, in pages not touched yet (an anonymous mapping starts zeroed).
    ///
    /// # Errors
    ///
    /// The error of `mmap` when there is no room for them.
    pub(super) fn zeroes(n: usize) -> io::Result<MapVec<u8>> {
        let mut bytes = MapVec::new();
        if n > 0 {
            bytes.grow(n)?;
        }
        // The mapping is new, so all of it reads as zeroes: `n` initialised bytes.
        bytes.len = n;
        Ok(bytes)
    }
}

impl<T> Default for MapVec<T> {
    fn default() -> MapVec<T> {
        MapVec::new()
    }
}

impl<T> Deref for MapVec<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: the first `len` elements are initialised, in the mapping (or `len` is 0 and
        // `at` is dangling and aligned, which an empty slice allows).
        unsafe { std::slice::from_raw_parts(self.at.as_ptr(), self.len) }
    }
}

impl<T> DerefMut for MapVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.at.as_ptr(), self.len) }
    }
}

impl<'a, T> IntoIterator for &'a MapVec<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a, T> IntoIterator for &'a mut MapVec<T> {
    type Item = &'a mut T;
    type IntoIter = std::slice::IterMut<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

impl<T> Drop for MapVec<T> {
    fn drop(&mut self) {
        // SAFETY: the elements are initialised and dropped once, here.
        unsafe { std::ptr::drop_in_place(&mut **self as *mut [T]) };
        if self.bytes > 0 {
            // SAFETY: this array's own mapping, whose elements were just dropped: nothing
            // points into it any more.
            unsafe { libc::munmap(self.at.as_ptr().cast(), self.bytes) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn elements_survive_every_growth_and_are_dropped_once() {
        let counter = Rc::new(());
        let mut table = MapVec::new();
        assert_eq!(table.mapping().1, 0);
        for i in 0..20_000usize {
            table.try_push((i, counter.clone())).unwrap();
        }
        assert_eq!(table.len(), 20_000);
        assert!(table.iter().enumerate().all(|(i, (j, _))| i == *j));
        assert_eq!(Rc::strong_count(&counter), 20_001);
        // One whole mapping, page aligned, holding them all.
        let (at, bytes) = table.mapping();
        let page = super::super::unshared::page_size();
        assert_eq!(at % page, 0);
        assert_eq!(bytes % page, 0);
        assert!(bytes >= 20_000 * size_of::<(usize, Rc<()>)>());
        assert_eq!(table.capacity(), bytes / size_of::<(usize, Rc<()>)>());
        table[7].0 = 70;
        assert_eq!(table.get(7).map(|e| e.0), Some(70));
        drop(table);
        assert_eq!(Rc::strong_count(&counter), 1);
    }

    #[test]
    fn a_filled_table_holds_its_copies_in_whole_pages() {
        let table = MapVec::filled(5000, u32::MAX).unwrap();
        assert_eq!(table.len(), 5000);
        assert!(table.iter().all(|&v| v == u32::MAX));
        assert_eq!(table.mapping().1, 20_480);
        let zeroes = MapVec::zeroes(10_000).unwrap();
        assert_eq!(zeroes.len(), 10_000);
        assert!(zeroes.iter().all(|&b| b == 0));
        let empty = MapVec::filled(0, 1u8).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.mapping().1, 0);
    }
}
