//! Subscriptions: the daemon's bus events on the control socket (`daemon.subscribe`), as
//! notifications between the replies, kept in order for [`Client::next_event`].

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::Client;
use super::wire::Incoming;
use crate::error::{Error, Result};

/// How many events a client keeps while calls wait for their replies; past that they are
/// counted and reported as one `daemon.events.dropped` event.
pub(super) const MAX_KEPT: usize = 1024;

/// The method of the notifications that carry events.
const EVENT_METHOD: &str = "daemon.event";

/// The name of the event that reports dropped events, the daemon's and the client's.
const DROPPED: &str = "daemon.events.dropped";

/// One event of the daemon's bus, as a subscription delivers it (see `PROTOCOL.md`).
///
/// Not to be confused with the bus's own [`crate::Event`] trait, which the daemon's
/// listeners see: this is its form on the wire.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
///
/// let mut client = daimon::Client::connect("unix://daemon.sock")?;
/// client.subscribe(&["daemon.worker.*"])?;
/// while let Some(event) = client.next_event(Duration::from_secs(1))? {
///     println!("{} {}", event.name, event.data);
/// }
/// # Ok::<(), daimon::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The subscription it matched, `None` for `daemon.events.dropped` (which reports
    /// events dropped for the whole connection, or by this client).
    pub subscription: Option<u64>,
    /// The event's name: `daemon.worker.started`, `daemon.log.w0`...
    pub name: String,
    /// When it happened, in seconds since the Unix epoch (to the microsecond).
    pub time: f64,
    /// Its data (`null` when it has none): `{"worker": "w0", "pid": 42, "restarts": 0}`...
    pub data: Value,
}

impl Event {
    /// [`Event::time`] as a [`SystemTime`] (the epoch itself for a time out of range).
    pub fn system_time(&self) -> SystemTime {
        Duration::try_from_secs_f64(self.time)
            .ok()
            .and_then(|d| UNIX_EPOCH.checked_add(d))
            .unwrap_or(UNIX_EPOCH)
    }

    /// The event of a `daemon.event` notification's params: the object itself, or an array
    /// holding it (MessagePack-RPC's form).
    fn from_params(params: Value) -> Result<Event> {
        let bad = |params: &Value| {
            Error::Protocol(format!(
                "event: expected {{subscription, name, time, data}}, got {params}"
            ))
        };
        let mut map = match params {
            Value::Object(map) => map,
            Value::Array(mut items) if items.len() == 1 && items[0].is_object() => {
                let Some(Value::Object(map)) = items.pop() else {
                    unreachable!("checked above")
                };
                map
            }
            other => return Err(bad(&other)),
        };
        let subscription = match map.get("subscription") {
            None | Some(Value::Null) => None,
            Some(s) => Some(s.as_u64().ok_or_else(|| bad(&Value::Object(map.clone())))?),
        };
        let (Some(Value::String(name)), Some(time)) =
            (map.remove("name"), map.get("time").and_then(Value::as_f64))
        else {
            return Err(bad(&Value::Object(map)));
        };
        Ok(Event {
            subscription,
            name,
            time,
            data: map.remove("data").unwrap_or_default(),
        })
    }
}

/// The events read while a call waited for its reply, bounded.
#[derive(Debug, Default)]
pub(super) struct Queue {
    kept: VecDeque<Event>,
    /// Events not kept since the queue was last empty.
    dropped: u64,
}

impl Queue {
    /// Keeps the event a notification carries; other notifications are ignored.
    ///
    /// Once one event was dropped, every later one is too until the queue is empty again,
    /// so the `daemon.events.dropped` event stands where the gap is.
    pub(super) fn push_notification(&mut self, method: &str, params: Value) -> Result<()> {
        if method != EVENT_METHOD {
            return Ok(());
        }
        let event = Event::from_params(params)?;
        if self.dropped > 0 || self.kept.len() >= MAX_KEPT {
            self.dropped += 1;
        } else {
            self.kept.push_back(event);
        }
        Ok(())
    }

    /// The oldest event kept, then the report of those dropped.
    fn pop(&mut self) -> Option<Event> {
        if let Some(event) = self.kept.pop_front() {
            return Some(event);
        }
        if self.dropped == 0 {
            return None;
        }
        let dropped = std::mem::take(&mut self.dropped);
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Some(Event {
            subscription: None,
            name: DROPPED.to_owned(),
            time,
            data: json!({ "dropped": dropped }),
        })
    }

    /// Forgets the kept events of `subscription`.
    fn forget(&mut self, subscription: u64) {
        self.kept.retain(|e| e.subscription != Some(subscription));
    }
}

/// The events of a client's subscriptions, waiting for each without a deadline: see
/// [`Client::events`]. It ends after the first error.
#[derive(Debug)]
pub struct Events<'c> {
    client: &'c mut Client,
    done: bool,
}

impl Iterator for Events<'_> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        if self.done {
            return None;
        }
        match self.client.wait_event(None) {
            Ok(Some(event)) => Some(Ok(event)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl Client {
    /// Subscribes to the daemon's events whose names match `patterns` (exact names, or
    /// prefixes ending in `*`: `daemon.worker.*`, `*`), and returns the subscription's id.
    /// Read the events with [`Client::next_event`] or [`Client::events`]; calls go on
    /// working meanwhile.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let mut client = daimon::Client::connect("unix://daemon.sock")?;
    /// let workers = client.subscribe(&["daemon.worker.*"])?;
    /// let logs = client.subscribe(&["daemon.log.w0"])?;
    /// client.unsubscribe(logs)?;
    /// # Ok::<(), daimon::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Rpc`] `-32602` naming a bad pattern, `-32601` from a daemon without
    /// subscriptions; [`Error::Protocol`] if the result is not an id; and the errors of
    /// [`Client::call`].
    pub fn subscribe(&mut self, patterns: &[&str]) -> Result<u64> {
        let result = self.call("daemon.subscribe", json!([patterns]))?;
        result.as_u64().filter(|&id| id > 0).ok_or_else(|| {
            Error::Protocol(format!(
                "daemon.subscribe returned {result}, expected a subscription id"
            ))
        })
    }

    /// Ends a subscription; its events not yet read are forgotten.
    ///
    /// # Errors
    ///
    /// [`Error::Rpc`] `-32000` for an unknown subscription, and the errors of
    /// [`Client::call`].
    pub fn unsubscribe(&mut self, subscription: u64) -> Result<()> {
        self.call("daemon.unsubscribe", json!([subscription]))?;
        self.events.forget(subscription);
        Ok(())
    }

    /// The next event of the client's subscriptions: one kept while a call waited, else the
    /// next to arrive within `timeout` (a zero timeout takes only what has arrived already);
    /// `Ok(None)` when none came in time. A timeout leaves the connection usable.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// let mut client = daimon::Client::connect("unix://daemon.sock")?;
    /// client.subscribe(&["daemon.worker.exited"])?;
    /// client.call("worker.restart", serde_json::json!(["w0"]))?;
    /// match client.next_event(Duration::from_secs(5))? {
    ///     Some(event) => println!("{} exited with {}", event.data["worker"], event.data["code"]),
    ///     None => println!("not yet"),
    /// }
    /// # Ok::<(), daimon::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] of kind [`ErrorKind::UnexpectedEof`] when the daemon closes the
    /// connection (it stopped), another I/O error, or [`Error::Protocol`] for a malformed
    /// message or a reply no call waits for; after which the connection is unusable.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>> {
        self.wait_event(Some(timeout.max(Duration::from_millis(1))))
    }

    /// The events of the client's subscriptions as an iterator that waits for each without
    /// a deadline (see [`Client::next_event`] for one with a deadline). It ends after the
    /// first error.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let mut client = daimon::Client::connect("unix://daemon.sock")?;
    /// client.subscribe(&["*"])?;
    /// for event in client.events() {
    ///     let event = event?;
    ///     println!("{:.3} {} {}", event.time, event.name, event.data);
    /// }
    /// # Ok::<(), daimon::Error>(())
    /// ```
    pub fn events(&mut self) -> Events<'_> {
        Events {
            client: self,
            done: false,
        }
    }

    /// Calls a worker's command and returns its answer (`worker.call`): the worker's
    /// `command` handler gets `payload`, and its result (or its error, as [`Error::Rpc`])
    /// comes back. The daemon waits `timeout` for the worker; this client waits that long
    /// plus its own timeout.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use serde_json::json;
    ///
    /// let mut client = daimon::Client::connect("unix://daemon.sock")?;
    /// let answer = client.call_worker("w0", "stats", Some(json!({"reset": true})), Duration::from_secs(2))?;
    /// # Ok::<(), daimon::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Rpc`] when there is no such worker, it is not running, it answered with an
    /// error or not in time; and the errors of [`Client::call`].
    pub fn call_worker(
        &mut self,
        worker: &str,
        command: &str,
        payload: Option<Value>,
        timeout: Duration,
    ) -> Result<Value> {
        let params = json!([
            worker,
            command,
            payload.unwrap_or(Value::Null),
            timeout.as_secs_f64()
        ]);
        let wait = self.timeout.map(|t| t.saturating_add(timeout));
        self.call_within("worker.call", params, wait)
    }

    /// Waits for the next event until `timeout` (`None`: forever).
    pub(super) fn wait_event(&mut self, timeout: Option<Duration>) -> Result<Option<Event>> {
        if let Some(event) = self.events.pop() {
            return Ok(Some(event));
        }
        self.usable()?;
        self.start_deadline(timeout);
        loop {
            let result = self.receive("event").and_then(|incoming| match incoming {
                Incoming::Notification { method, params } => {
                    self.events.push_notification(&method, params)
                }
                Incoming::Reply(reply) => Err(Error::Protocol(format!(
                    "a reply no call waits for: {reply}"
                ))),
            });
            match result {
                Ok(()) => {
                    if let Some(event) = self.events.pop() {
                        return Ok(Some(event));
                    }
                }
                Err(Error::Io(e)) if e.kind() == ErrorKind::TimedOut => return Ok(None),
                Err(e) => {
                    self.broken = Some(e.to_string());
                    return Err(e);
                }
            }
        }
    }
}
