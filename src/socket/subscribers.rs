//! The control socket's event subscriptions (`daemon.subscribe`): which connection wants
//! which events, and the events on their way to them.
//!
//! The daemon's bus hands every event some subscription matches to [`Subscribers::publish`]
//! (one listener, subscribed first of all, so no listener can hide an event from the
//! subscribers); once the turn's events are dispatched, the server writes them to the
//! connections as notifications, interleaved with their replies. What waits for one
//! connection is bounded (see [`EVENT_QUEUE`]): past it, events are dropped and counted, and
//! the connection gets one `daemon.events.dropped` event with the count once it has room.

use std::cell::OnceCell;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::bus::{Event, Pattern};
use crate::error::{Error, Result};
use crate::rpc::ConnectionId;

/// The most subscriptions one connection may hold.
pub const MAX_SUBSCRIPTIONS: usize = 64;
/// The most patterns in one subscription.
pub const MAX_PATTERNS: usize = 64;
/// The most bytes of replies and events that may wait unsent on a subscribed connection
/// before its events are dropped (counted, and told once it catches up); `socketmaxoutput`
/// if that is smaller.
pub const EVENT_QUEUE: usize = 256 * 1024;
/// The name of the event that tells a subscriber how many events it missed.
pub const DROPPED: &str = "daemon.events.dropped";

struct Subscription {
    id: u64,
    conn: ConnectionId,
    patterns: Vec<Pattern>,
}

/// Every subscription of every connection, and the events published to them this turn.
#[derive(Default)]
pub struct Subscribers {
    subs: Vec<Subscription>,
    next_id: u64,
    published: Vec<Published>,
    /// The subscriptions changed since the daemon last renewed its bus listener.
    changed: bool,
    /// Connections that gained their first subscription or lost their last one.
    touched: Vec<ConnectionId>,
    /// The daemon's bus listener that feeds these subscriptions (see `daemon::subscribe`).
    pub(crate) forward: Option<crate::bus::SubscriptionId>,
}

impl Subscribers {
    /// Subscribes `conn` to the events named by `patterns`; returns the subscription's id.
    ///
    /// # Errors
    ///
    /// [`Error::BadPattern`] for a malformed pattern (or none), [`Error::Config`]-like
    /// refusals past [`MAX_SUBSCRIPTIONS`] or [`MAX_PATTERNS`].
    pub fn subscribe(&mut self, conn: ConnectionId, patterns: &[String]) -> Result<u64> {
        if patterns.is_empty() {
            return Err(Error::BadPattern(String::new()));
        }
        if patterns.len() > MAX_PATTERNS {
            return Err(Error::Rpc {
                code: crate::rpc::RpcError::INVALID_PARAMS,
                message: format!("at most {MAX_PATTERNS} patterns in one subscription"),
                data: None,
            });
        }
        let patterns = patterns
            .iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<Vec<_>>>()?;
        let held = self.subs.iter().filter(|s| s.conn == conn).count();
        if held >= MAX_SUBSCRIPTIONS {
            return Err(Error::Rpc {
                code: crate::rpc::RpcError::SERVER_ERROR,
                message: format!("at most {MAX_SUBSCRIPTIONS} subscriptions on one connection"),
                data: None,
            });
        }
        if held == 0 {
            self.touched.push(conn);
        }
        self.next_id += 1;
        self.subs.push(Subscription {
            id: self.next_id,
            conn,
            patterns,
        });
        self.changed = true;
        Ok(self.next_id)
    }

    /// Ends `conn`'s subscription `id`; false if it holds none of that id.
    pub fn unsubscribe(&mut self, conn: ConnectionId, id: u64) -> bool {
        let Some(i) = self.subs.iter().position(|s| s.id == id && s.conn == conn) else {
            return false;
        };
        self.subs.remove(i);
        self.changed = true;
        if !self.is_subscribed(conn) {
            self.touched.push(conn);
        }
        true
    }

    /// Forgets every subscription of a connection that closed.
    pub fn forget(&mut self, conn: ConnectionId) {
        let before = self.subs.len();
        self.subs.retain(|s| s.conn != conn);
        if self.subs.len() != before {
            self.changed = true;
        }
    }

    /// Whether `conn` holds a subscription.
    pub fn is_subscribed(&self, conn: ConnectionId) -> bool {
        self.subs.iter().any(|s| s.conn == conn)
    }

    /// Whether nothing is subscribed.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// The patterns of every subscription, once each, if they changed since the last call:
    /// what the daemon's forwarding listener must be subscribed to.
    pub(crate) fn take_change(&mut self) -> Option<Vec<Pattern>> {
        if !std::mem::take(&mut self.changed) {
            return None;
        }
        let mut all: Vec<Pattern> = Vec::new();
        for p in self.subs.iter().flat_map(|s| &s.patterns) {
            if !all.contains(p) {
                all.push(p.clone());
            }
        }
        Some(all)
    }

    /// Records `event` for every subscription it matches (its data built once).
    pub fn publish(&mut self, event: &dyn Event) {
        let targets: Vec<(ConnectionId, u64)> = self
            .subs
            .iter()
            .filter(|s| s.patterns.iter().any(|p| p.matches(event)))
            .map(|s| (s.conn, s.id))
            .collect();
        if targets.is_empty() {
            return;
        }
        self.published.push(Published {
            name: event.name().to_owned(),
            time: now(),
            data: event.data(),
            targets,
            json: OnceCell::new(),
        });
    }

    /// The events published since the last call.
    pub(crate) fn take_published(&mut self) -> Vec<Published> {
        std::mem::take(&mut self.published)
    }

    /// The connections whose subscribed state changed since the last call.
    pub(crate) fn take_touched(&mut self) -> Vec<ConnectionId> {
        std::mem::take(&mut self.touched)
    }
}

/// Seconds since the Unix epoch, with microseconds.
fn now() -> f64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (since.as_micros() as f64) / 1e6
}

/// An event on its way to the subscriptions it matched.
pub(crate) struct Published {
    pub(crate) name: String,
    pub(crate) time: f64,
    pub(crate) data: Option<Value>,
    pub(crate) targets: Vec<(ConnectionId, u64)>,
    /// The data as JSON text, built for the first JSON subscriber.
    json: OnceCell<Vec<u8>>,
}

impl Published {
    /// The notice of `dropped` missed events.
    pub(crate) fn dropped(dropped: u64) -> Published {
        Published {
            name: DROPPED.to_owned(),
            time: now(),
            data: Some(serde_json::json!({ "dropped": dropped })),
            targets: Vec::new(),
            json: OnceCell::new(),
        }
    }

    /// Writes the JSON-RPC notification for `subscription` (none: the dropped notice).
    pub(crate) fn write_json(&self, w: &mut impl std::io::Write, subscription: Option<u64>) {
        let data = self.json.get_or_init(|| match &self.data {
            Some(v) => serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec()),
            None => b"null".to_vec(),
        });
        let mut write = || -> std::io::Result<()> {
            w.write_all(br#"{"jsonrpc":"2.0","method":"daemon.event","params":{"subscription":"#)?;
            match subscription {
                Some(id) => write!(w, "{id}")?,
                None => w.write_all(b"null")?,
            }
            w.write_all(br#","name":"#)?;
            serde_json::to_writer(&mut *w, &self.name)?;
            write!(w, r#","time":{:.6},"data":"#, self.time)?;
            w.write_all(data)?;
            w.write_all(b"}}")
        };
        // Writing into memory (a connection's capped output) cannot fail.
        let written = write();
        debug_assert!(written.is_ok());
    }

    /// Writes the MessagePack-RPC notification `[2, "daemon.event", [{...}]]`.
    pub(crate) fn write_msgpack(&self, w: &mut impl std::io::Write, subscription: Option<u64>) {
        let params = Params {
            event: self,
            subscription,
        };
        let written = rmp_serde::encode::write(w, &(2u8, "daemon.event", [params]));
        debug_assert!(written.is_ok());
    }
}

/// The params map of a MessagePack notification (a map, not rmp-serde's struct array).
struct Params<'a> {
    event: &'a Published,
    subscription: Option<u64>,
}

impl Serialize for Params<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(4))?;
        map.serialize_entry("subscription", &self.subscription)?;
        map.serialize_entry("name", &self.event.name)?;
        map.serialize_entry("time", &self.event.time)?;
        map.serialize_entry("data", &self.event.data)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::DaemonEvent;
    use crate::reactor::Token;

    fn conn(n: usize) -> ConnectionId {
        ConnectionId::new(Token(n))
    }

    #[test]
    fn events_go_to_the_subscriptions_they_match() {
        let mut s = Subscribers::default();
        let (a, b) = (conn(1), conn(2));
        let sa = s.subscribe(a, &["daemon.*".into()]).unwrap();
        let sb = s.subscribe(b, &["daemon.ready".into()]).unwrap();
        assert!(s.take_change().is_some_and(|p| p.len() == 2));
        assert!(s.take_change().is_none());
        s.publish(&DaemonEvent::Stop);
        s.publish(&DaemonEvent::Ready);
        let out = s.take_published();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].targets, vec![(a, sa)]);
        assert_eq!(out[1].targets, vec![(a, sa), (b, sb)]);
        assert!(!s.unsubscribe(b, sa), "b cannot end a's subscription");
        assert!(s.unsubscribe(a, sa));
        s.forget(b);
        assert!(s.is_empty());
        assert_eq!(s.take_touched(), vec![a, b, a]);
    }

    #[test]
    fn bad_patterns_and_too_many_subscriptions_are_refused() {
        let mut s = Subscribers::default();
        let a = conn(1);
        assert!(s.subscribe(a, &[]).is_err());
        assert!(s.subscribe(a, &["a*b".into()]).is_err());
        for _ in 0..MAX_SUBSCRIPTIONS {
            s.subscribe(a, &["x".into()]).unwrap();
        }
        assert!(s.subscribe(a, &["x".into()]).is_err());
        assert!(s.subscribe(conn(2), &["x".into()]).is_ok());
    }

    #[test]
    fn notifications_in_both_protocols() {
        let mut s = Subscribers::default();
        s.subscribe(conn(1), &["*".into()]).unwrap();
        s.publish(&DaemonEvent::Ready);
        let p = s.take_published().pop().unwrap();
        let mut json = Vec::new();
        p.write_json(&mut json, Some(7));
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["method"], "daemon.event");
        assert_eq!(v["params"]["subscription"], 7);
        assert_eq!(v["params"]["name"], "daemon.ready");
        assert_eq!(v["params"]["data"], serde_json::json!({}));
        assert!(v["params"]["time"].as_f64().unwrap() > 1.7e9);
        let mut mp = Vec::new();
        p.write_msgpack(&mut mp, None);
        let v = crate::rpc::msgpack::decode_value(&mp).unwrap();
        assert_eq!(v[0], 2);
        assert_eq!(v[1], "daemon.event");
        assert_eq!(v[2][0]["name"], "daemon.ready");
        assert_eq!(v[2][0]["subscription"], Value::Null);
    }
}
