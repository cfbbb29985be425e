//! One-shot and periodic timers on a monotonic clock.
//!
//! An indexed binary heap: every entry knows its slot in the heap, so cancelling removes it
//! at once and the storage is proportional to the armed timers, however many come and go
//! behind a long-lived one at the top.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The longest delay a timer is armed for: later deadlines are capped to it, so a huge
/// duration (a looptime of `u64::MAX` seconds) can never overflow the clock.
pub const LONGEST_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The instant `delay` from now, with the delay capped to [`LONGEST_DELAY`].
pub fn after(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay.min(LONGEST_DELAY)).unwrap_or(now)
}

/// Identifies an armed timer. Ids are never reused, so a stale id is detected, not misapplied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(pub(crate) u64);

impl TimerId {
    /// The id as a number, for logs and wire formats.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

struct Entry<T> {
    deadline: Instant,
    period: Option<Duration>,
    payload: T,
    /// Its slot in [`Timers::heap`].
    slot: usize,
}

/// A set of timers, each carrying a payload of type `T` that is handed back when it fires.
pub struct Timers<T> {
    /// A min-heap of `(deadline, id)`: ties fire in the order they were armed.
    heap: Vec<(Instant, u64)>,
    /// # Invariant
    ///
    /// Exactly the ids in `heap`, each with `slot` its index there and `deadline` its key.
    entries: HashMap<u64, Entry<T>>,
    next_id: u64,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            heap: Vec::new(),
            entries: HashMap::new(),
            next_id: 1,
        }
    }
}

impl<T> Timers<T> {
    /// Puts `heap[i]` in its place, moving it up or down, and records the slots it moved.
    fn fix(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent] <= self.heap[i] {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if l < self.heap.len() && self.heap[l] < self.heap[least] {
                least = l;
            }
            if r < self.heap.len() && self.heap[r] < self.heap[least] {
                least = r;
            }
            if least == i {
                break;
            }
            self.swap(i, least);
            i = least;
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        for i in [a, b] {
            let id = self.heap[i].1;
            self.entries
                .get_mut(&id)
                .expect("heap ids have entries")
                .slot = i;
        }
    }

    fn push(&mut self, deadline: Instant, id: u64) {
        let slot = self.heap.len();
        self.heap.push((deadline, id));
        self.entries.get_mut(&id).expect("inserted first").slot = slot;
        self.fix(slot);
    }

    /// Takes the heap slot `i` out (its entry stays); the heap stays a heap.
    fn take_slot(&mut self, i: usize) {
        let last = self.heap.len() - 1;
        if i != last {
            self.swap(i, last);
        }
        self.heap.pop();
        if i < self.heap.len() {
            self.fix(i);
        }
        self.shrink();
    }

    /// Gives back memory after a burst: the storage follows the armed timers.
    fn shrink(&mut self) {
        let live = self.heap.len();
        if self.heap.capacity() > 64 && self.heap.capacity() > 4 * live {
            self.heap.shrink_to(2 * live);
            self.entries.shrink_to(2 * live);
        }
    }
}

impl<T: Clone> Timers<T> {
    /// Arms a timer that fires at `deadline`, then every `period` if one is given.
    ///
    /// A zero period is raised to one microsecond so a periodic timer can never spin, and a
    /// period longer than [`LONGEST_DELAY`] is capped to it.
    pub fn insert(&mut self, deadline: Instant, period: Option<Duration>, payload: T) -> TimerId {
        let id = self.next_id;
        self.next_id += 1;
        let period = period.map(|p| p.clamp(Duration::from_micros(1), LONGEST_DELAY));
        self.entries.insert(
            id,
            Entry {
                deadline,
                period,
                payload,
                slot: 0,
            },
        );
        self.push(deadline, id);
        TimerId(id)
    }

    /// Disarms a timer and returns its payload, or `None` if it is not armed (a one-shot
    /// timer that already fired, or one cancelled before).
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let slot = self.entries.get(&id.0)?.slot;
        self.take_slot(slot);
        self.entries.remove(&id.0).map(|e| e.payload)
    }

    /// Whether `id` is armed.
    pub fn contains(&self, id: TimerId) -> bool {
        self.entries.contains_key(&id.0)
    }

    /// The number of armed timers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no timer is armed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[cfg(test)]
    /// How many entries the queue stores, live or stale.
    fn storage(&self) -> usize {
        self.heap.len().max(self.entries.len())
    }

    /// The earliest deadline of an armed timer.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.heap.first().map(|&(deadline, _)| deadline)
    }

    /// Moves every timer due at `now` into `out`, each at most once per call.
    ///
    /// A periodic timer is re-armed at a fixed rate from its previous deadline; periods missed
    /// while the caller was busy are skipped, not delivered in a burst.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<(TimerId, T)>) {
        // Timers re-armed during this call are due later than `now`, so each fires once.
        while let Some(&(deadline, id)) = self.heap.first() {
            if deadline > now {
                break;
            }
            self.take_slot(0);
            let entry = self.entries.get(&id).expect("heap ids have entries");
            out.push((TimerId(id), entry.payload.clone()));
            match entry.period {
                Some(period) => {
                    let fallback = now + period;
                    let mut next = entry.deadline.checked_add(period).unwrap_or(fallback);
                    if next <= now {
                        let behind = now.duration_since(next).as_nanos() / period.as_nanos();
                        let skip = u32::try_from(behind + 1).unwrap_or(u32::MAX);
                        next = entry
                            .deadline
                            .checked_add(period.saturating_mul(skip.saturating_add(1)))
                            .unwrap_or(fallback);
                        if next <= now {
                            next = fallback;
                        }
                    }
                    self.entries.get_mut(&id).expect("present above").deadline = next;
                    self.push(next, id);
                }
                None => {
                    self.entries.remove(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn empty_has_no_deadline() {
        let mut t: Timers<u8> = Timers::default();
        assert_eq!(t.next_deadline(), None);
        assert!(t.is_empty());
    }

    #[test]
    fn one_shot_fires_once_in_deadline_order() {
        let now = Instant::now();
        let mut t = Timers::default();
        let b = t.insert(now + ms(20), None, "b");
        let a = t.insert(now + ms(10), None, "a");
        assert_eq!(t.next_deadline(), Some(now + ms(10)));
        let mut out = Vec::new();
        t.expire(now + ms(5), &mut out);
        assert!(out.is_empty());
        t.expire(now + ms(25), &mut out);
        assert_eq!(out, vec![(a, "a"), (b, "b")]);
        out.clear();
        t.expire(now + ms(100), &mut out);
        assert!(out.is_empty(), "one-shot timers fire once");
        assert!(t.is_empty());
    }

    #[test]
    fn cancel_removes_and_stale_cancel_is_none() {
        let now = Instant::now();
        let mut t = Timers::default();
        let a = t.insert(now + ms(10), None, 1);
        let b = t.insert(now + ms(20), None, 2);
        assert_eq!(t.cancel(a), Some(1));
        assert_eq!(t.cancel(a), None);
        assert_eq!(t.next_deadline(), Some(now + ms(20)));
        let mut out = Vec::new();
        t.expire(now + ms(30), &mut out);
        assert_eq!(out, vec![(b, 2)]);
    }

    #[test]
    fn periodic_fires_at_fixed_rate_and_skips_missed_periods() {
        let start = Instant::now();
        let mut t = Timers::default();
        let id = t.insert(start + ms(10), Some(ms(10)), ());
        let mut out = Vec::new();
        t.expire(start + ms(10), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(t.next_deadline(), Some(start + ms(20)));
        // Busy for 55 ms: one delivery, and the next deadline stays on the 10 ms grid.
        out.clear();
        t.expire(start + ms(65), &mut out);
        assert_eq!(out, vec![(id, ())]);
        assert_eq!(t.next_deadline(), Some(start + ms(70)));
        assert!(t.contains(id));
        assert_eq!(t.cancel(id), Some(()));
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn cancelled_timers_leave_no_storage_behind_a_long_lived_one() {
        // One long-lived deadline at the top (an idle connection), and churn behind it: the
        // connections that come and go cancel theirs. The storage must follow the live count.
        let now = Instant::now();
        let mut t = Timers::default();
        let long = t.insert(now + ms(1), None, 0);
        for i in 0..10_000 {
            let id = t.insert(now + ms(1000 + i), None, 1);
            assert_eq!(t.cancel(id), Some(1));
            assert!(
                t.storage() <= 8,
                "{} entries stored for 1 live timer after {i} cancels",
                t.storage()
            );
        }
        assert_eq!(t.len(), 1);
        assert_eq!(t.next_deadline(), Some(now + ms(1)));
        let mut out = Vec::new();
        t.expire(now + ms(5), &mut out);
        assert_eq!(out, vec![(long, 0)]);
    }

    #[test]
    fn cancel_in_any_position_keeps_the_order() {
        let now = Instant::now();
        let mut t = Timers::default();
        let ids: Vec<_> = (0..50u64)
            .map(|i| t.insert(now + ms((i * 37) % 50), None, i))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            if i % 3 == 0 {
                t.cancel(*id);
            }
        }
        let mut out = Vec::new();
        t.expire(now + ms(100), &mut out);
        let got: Vec<u64> = out.iter().map(|(_, p)| *p).collect();
        let mut want: Vec<u64> = (0..50u64).filter(|i| i % 3 != 0).collect();
        want.sort_by_key(|i| ((i * 37) % 50, *i));
        assert_eq!(got, want);
        assert!(t.is_empty());
        assert_eq!(t.storage(), 0);
    }

    #[test]
    fn zero_period_cannot_spin() {
        let start = Instant::now();
        let mut t = Timers::default();
        t.insert(start, Some(Duration::ZERO), ());
        let mut out = Vec::new();
        t.expire(start, &mut out);
        assert_eq!(out.len(), 1);
        assert!(t.next_deadline().unwrap() > start);
    }
}
