//! One-shot and periodic timers on a monotonic clock.
//!
//! A binary heap of deadlines with lazy deletion: cancelling removes the entry from the map
//! and leaves its heap slot to be skipped when it reaches the top.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
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
}

/// A set of timers, each carrying a payload of type `T` that is handed back when it fires.
pub struct Timers<T> {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    entries: HashMap<u64, Entry<T>>,
    next_id: u64,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            entries: HashMap::new(),
            next_id: 1,
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
        self.heap.push(Reverse((deadline, id)));
        self.entries.insert(
            id,
            Entry {
                deadline,
                period,
                payload,
            },
        );
        TimerId(id)
    }

    /// Disarms a timer and returns its payload, or `None` if it is not armed (a one-shot
    /// timer that already fired, or one cancelled before).
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
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

    /// The earliest deadline of an armed timer, dropping stale heap slots on the way.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((deadline, id))) = self.heap.peek() {
            match self.entries.get(&id) {
                Some(e) if e.deadline == deadline => return Some(deadline),
                _ => {
                    self.heap.pop();
                }
            }
        }
        None
    }

    /// Moves every timer due at `now` into `out`, each at most once per call.
    ///
    /// A periodic timer is re-armed at a fixed rate from its previous deadline; periods missed
    /// while the caller was busy are skipped, not delivered in a burst.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<(TimerId, T)>) {
        while let Some(deadline) = self.next_deadline() {
            if deadline > now {
                break;
            }
            let Reverse((_, id)) = self.heap.pop().expect("peeked above");
            let entry = self.entries.get_mut(&id).expect("checked by next_deadline");
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
                    entry.deadline = next;
                    self.heap.push(Reverse((next, id)));
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
