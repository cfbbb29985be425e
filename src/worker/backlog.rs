//! What workers' messages waiting on the daemon's bus hold in memory: a counter shared by
//! the supervisor, which stops reading rings above a high-water mark, and each message's
//! charge, given back when the bus drops it.

use std::cell::Cell;
use std::rc::Rc;

/// The memory that workers' messages may hold while they wait on the daemon's bus (their
/// decoded payloads, estimated): above it, no worker's ring is read until the bus has
/// dispatched them. The rings then fill, and a worker's `send` gets a full ring.
pub(crate) const BACKLOG_HIGH_WATER: usize = 2 * 1024 * 1024;

/// The bytes of memory that undispatched worker messages hold, shared with each message's
/// [`Charge`], which gives its share back when the bus drops the message.
#[derive(Debug, Default, Clone)]
pub(crate) struct Backlog(Rc<Cell<usize>>);

impl Backlog {
    pub(crate) fn bytes(&self) -> usize {
        self.0.get()
    }

    pub(crate) fn charge(&self, bytes: usize) -> Charge {
        self.0.set(self.0.get().saturating_add(bytes));
        Charge {
            backlog: self.0.clone(),
            bytes,
        }
    }
}

/// A message's share of the [`Backlog`], given back when it is dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    backlog: Rc<Cell<usize>>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.backlog
            .set(self.backlog.get().saturating_sub(self.bytes));
    }
}
