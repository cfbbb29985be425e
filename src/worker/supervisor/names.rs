//! The entry of each worker's name: a table of entry numbers, open addressing over the
//! names the entries hold.
//!
//! A `HashMap<String, usize>` keeps a copy of every name and buckets of 33 bytes: 850 KiB
//! with 10,000 workers, in the fork server's memory, so in every worker it forks (their
//! page tables copied at each fork and torn down at each exit), though neither ever looks
//! a name up. This table is one mapping of 4 bytes a slot, at most half of them used,
//! which the server leaves out of its workers with the table of entries (see
//! `Workers::start_all`): 128 KiB with 10,000 workers, none of it in a worker.

use std::hash::{BuildHasher, RandomState};
use std::io;

use super::mapped::MapVec;

/// A free slot.
const FREE: u32 = u32::MAX;

/// The entry numbers of the names, by the names' hashes.
pub(super) struct NameIndex {
    /// A power of two of slots (or none), each an entry number or [`FREE`].
    slots: MapVec<u32>,
    len: usize,
    hasher: RandomState,
}

impl Default for NameIndex {
    fn default() -> NameIndex {
        NameIndex {
            slots: MapVec::new(),
            len: 0,
            hasher: RandomState::new(),
        }
    }
}

impl NameIndex {
    /// The entry named `name`, `name_of` giving each entry's name.
    pub(super) fn find<'a>(&self, name: &str, name_of: impl Fn(usize) -> &'a str) -> Option<usize> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut at = self.hasher.hash_one(name) as usize & mask;
        loop {
            match self.slots[at] {
                FREE => return None,
                i if name_of(i as usize) == name => return Some(i as usize),
                _ => at = (at + 1) & mask,
            }
        }
    }

    /// Makes room for one more entry, `name_of` giving the name of each entry in the index.
    ///
    /// # Errors
    ///
    /// The error of `mmap` when the table must grow and cannot; the index is as it was.
    pub(super) fn reserve_one<'a>(&mut self, name_of: impl Fn(usize) -> &'a str) -> io::Result<()> {
        if 2 * (self.len + 1) <= self.slots.len() {
            return Ok(());
        }
        let grown = MapVec::filled((2 * (self.len + 1)).next_power_of_two().max(16), FREE)?;
        let old = std::mem::replace(&mut self.slots, grown);
        for &i in old.iter().filter(|&&i| i != FREE) {
            self.place(self.hasher.hash_one(name_of(i as usize)), i);
        }
        Ok(())
    }

    /// Adds entry `entry`, named `name` (not in the index yet), in the room
    /// [`reserve_one`](Self::reserve_one) made.
    pub(super) fn insert(&mut self, name: &str, entry: usize) {
        let entry = u32::try_from(entry)
            .ok()
            .filter(|&e| e != FREE)
            .expect("fewer than 2^32 - 1 workers");
        assert!(
            2 * (self.len + 1) <= self.slots.len(),
            "room for the entry was reserved"
        );
        self.place(self.hasher.hash_one(name), entry);
        self.len += 1;
    }

    fn place(&mut self, hash: u64, entry: u32) {
        let mask = self.slots.len() - 1;
        let mut at = hash as usize & mask;
        while self.slots[at] != FREE {
            at = (at + 1) & mask;
        }
        self.slots[at] = entry;
    }

    /// The table's mapping: its address and length in bytes.
    pub(super) fn table(&self) -> (usize, usize) {
        self.slots.mapping()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_found_and_no_other_as_the_table_grows() {
        let names: Vec<String> = (0..5000).map(|i| format!("w{i}")).collect();
        let mut index = NameIndex::default();
        for (i, name) in names.iter().enumerate() {
            assert_eq!(index.find(name, |e| &names[e]), None);
            index.reserve_one(|e| &names[e]).unwrap();
            index.insert(name, i);
            // Every name so far, through every growth of the table.
            if i.is_power_of_two() || i == names.len() - 1 {
                for (j, n) in names[..=i].iter().enumerate() {
                    assert_eq!(index.find(n, |e| &names[e]), Some(j), "{n} after {i}");
                }
            }
        }
        assert_eq!(index.find("w5000", |e| &names[e]), None);
        assert_eq!(index.find("", |e| &names[e]), None);
        // At most half full, in a power of two of 4-byte slots.
        let (_, bytes) = index.table();
        assert_eq!(bytes, 16384 * 4);
    }

    #[test]
    fn an_empty_index_finds_nothing() {
        let index = NameIndex::default();
        assert_eq!(index.find("w0", |_| unreachable!()), None);
        assert_eq!(index.table().1, 0);
    }
}
