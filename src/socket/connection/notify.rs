//! A connection's share of the bus: the events its subscriptions receive, written as
//! notifications between its replies, within a bound.

use super::Connection;
use super::output::Framing;
use crate::socket::framing::Protocol;
use crate::socket::subscribers::Published;

impl Connection {
    /// Writes an event for `subscription` as a notification, unless `cap` bytes already wait
    /// unsent (then it is dropped and counted, and the count is told before the next event
    /// that fits). Returns whether it was written.
    pub(crate) fn push_event(&mut self, event: &Published, subscription: u64, cap: usize) -> bool {
        if self.closing {
            return false;
        }
        let cap = cap.min(self.output.max());
        if self.output.unsent().len() >= cap {
            self.dropped_events += 1;
            return false;
        }
        if self.dropped_events > 0 {
            let notice = Published::dropped(std::mem::take(&mut self.dropped_events));
            self.write_event(&notice, None);
        }
        if !self.write_event(event, Some(subscription)) {
            self.dropped_events += 1;
            return false;
        }
        true
    }

    /// Writes one notification in the connection's protocol; false if it was larger than
    /// a reply may be.
    fn write_event(&mut self, event: &Published, subscription: Option<u64>) -> bool {
        let written = match self.protocol {
            Some(Protocol::MessagePack) => self.output.reply(Framing::Bare, |w| {
                event.write_msgpack(w, subscription);
                true
            }),
            _ => {
                let framing = self.json_framing();
                self.output.reply(framing, |w| {
                    event.write_json(w, subscription);
                    true
                })
            }
        };
        written.is_ok()
    }
}
