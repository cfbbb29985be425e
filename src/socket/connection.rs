//! One connection's protocol state machine: bytes in, replies out, no I/O.
//!
//! The server feeds it what it reads and writes what it produces; tests and the fuzz targets
//! drive it directly. Every limit of a connection is enforced here: the request size (before
//! buffering past it), its size once parsed (values, batch length), the size of a reply and of
//! what waits unsent, garbage, the admission refusal of a connection over the cap or from a
//! refused peer, and the shared secret.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::framing::{self, Detected, Headers, JsonScan, JsonScanner, Protocol};
use crate::rpc::bounded::{self, Bounds, Parsed, Refusal};
use crate::rpc::jsonrpc;
use crate::rpc::msgpack::{self, Message, Peek, Refused, Scan};
use crate::rpc::{ConnectionId, Engine, Meta, RpcError, Ticket};

mod gate;
mod notify;
mod output;

use gate::{Gate, refusal};
use output::{Framing, Output};

/// The limits of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest request, in bytes.
    pub max_request: usize,
    /// The largest reply, in bytes, and the unsent bytes past which the connection takes no
    /// new request until they drain.
    pub max_output: usize,
    /// The most requests in a batch.
    pub max_batch: usize,
    /// The most values in one request (or batch) once parsed.
    pub max_values: usize,
}

impl Limits {
    fn bounds(&self) -> Bounds {
        Bounds {
            max_values: self.max_values,
            max_batch: self.max_batch,
        }
    }
}

/// Whether a connection is served.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Served.
    Open,
    /// Its first request is answered with this error, then it is closed (over the connection
    /// cap, or a peer the credentials check refused).
    Refused(RpcError),
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Connection {
    peer: String,
    /// Its id in the daemon, once the server gave it one.
    id: Option<ConnectionId>,
    limits: Limits,
    admission: Admission,
    /// The secret still to present, `None` once presented or when none is needed.
    secret: Option<Arc<str>>,
    protocol: Option<Protocol>,
    input: Vec<u8>,
    json: JsonScanner,
    msgpack: msgpack::Scanner,
    /// The body length announced by Content-Length headers already read.
    body: Option<usize>,
    output: Output,
    closing: bool,
    /// A request whose reply comes later; nothing more is processed until it is written.
    pending: Option<Pending>,
    /// Events not sent since the output was last too full for them.
    dropped_events: u64,
    /// Takes no more requests: the daemon is stopping (see [`Connection::stop_requests`]).
    draining: bool,
    /// Set by the gate when a call's reply was deferred (with how long it may take, when
    /// the connection times it out).
    deferred: Option<(Ticket, Option<Duration>)>,
}

/// Who a deferred reply goes to.
#[derive(Debug)]
struct Pending {
    ticket: Ticket,
    to: ReplyTo,
    /// When the caller gets a timeout error instead, and after how long, if the connection
    /// times it out.
    deadline: Option<(Instant, Duration)>,
}

impl Pending {
    fn new((ticket, timeout): (Ticket, Option<Duration>), to: ReplyTo) -> Pending {
        Pending {
            ticket,
            to,
            deadline: timeout.map(|t| (Instant::now() + t, t)),
        }
    }
}

#[derive(Debug)]
enum ReplyTo {
    Json(Value),
    MessagePack(u32),
}

impl Connection {
    /// A connection from `peer`. With `secret`, every call but `system.auth(secret)` is
    /// refused until the secret is presented.
    pub fn new(
        peer: String,
        limits: Limits,
        admission: Admission,
        secret: Option<Arc<str>>,
    ) -> Connection {
        Connection {
            peer,
            id: None,
            limits,
            admission,
            secret,
            protocol: None,
            input: Vec::new(),
            json: JsonScanner::default(),
            msgpack: msgpack::Scanner::default(),
            body: None,
            output: Output::new(limits.max_output),
            closing: false,
            pending: None,
            deferred: None,
            dropped_events: 0,
            draining: false,
        }
    }

    /// Refuses the connection before its first request: every call gets `error`, then it
    /// closes (a connection accepted at the cap that still finds no slot).
    pub(crate) fn refuse_admission(&mut self, error: RpcError) {
        self.admission = Admission::Refused(error);
    }

    /// The peer.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Gives the connection its id, which calls see in their [`Meta`].
    pub(crate) fn set_id(&mut self, id: ConnectionId) {
        self.id = Some(id);
    }

    /// Its id, once given.
    pub(crate) fn id(&self) -> Option<ConnectionId> {
        self.id
    }

    #[cfg(any(fuzzing, feature = "internals"))]
    /// The protocol, once the first bytes chose it.
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }

    /// Takes bytes read from the peer and answers every whole request among them.
    /// `connections` is the number of open connections, for `daemon.status`.
    pub fn receive(&mut self, data: &[u8], engine: &mut dyn Engine, connections: usize) {
        if self.closing || self.draining {
            return;
        }
        self.input.extend_from_slice(data);
        let mut start = 0;
        while !self.closing
            && self.pending.is_none()
            && !self.output.is_full()
            && start < self.input.len()
        {
            match self.next_frame(start, engine, connections) {
                Some(consumed) => start += consumed,
                None => break,
            }
        }
        self.input.drain(..start);
        if self.input.is_empty() && self.input.capacity() > output::IDLE_CAPACITY {
            // A large request is answered: an idle connection holds no large buffer.
            self.input = Vec::new();
        }
        // (With the output full, what is buffered is whole requests waiting their turn, at
        // most one read's worth: the server reads nothing more until the output drains.)
        if !self.closing
            && !self.output.is_full()
            && self.input.len() > self.limits.max_request + framing::MAX_HEADERS
        {
            if self.pending.is_some() {
                // Pipelined past the limit while a reply is pending: an error reply now would
                // come before the pending one. Close instead.
                self.closing = true;
            } else {
                // A frame still incomplete past the limit (whitespace, an unterminated string).
                self.too_large();
            }
        }
    }

    /// Handles at most one frame starting at `start`; returns how many bytes it consumed,
    /// or `None` when more bytes are needed.
    fn next_frame(
        &mut self,
        start: usize,
        engine: &mut dyn Engine,
        connections: usize,
    ) -> Option<usize> {
        let protocol = match self.protocol {
            Some(p) => p,
            None => match framing::detect(&self.input[start..]) {
                Detected::Is(p) => {
                    self.protocol = Some(p);
                    p
                }
                Detected::NeedMore => return None,
                Detected::Garbage => {
                    self.protocol = Some(Protocol::Json);
                    self.fail(RpcError::parse_error(
                        "the bytes are neither JSON-RPC nor MessagePack-RPC",
                    ));
                    return None;
                }
            },
        };
        let max = self.limits.max_request;
        let meta_connections = connections;
        match protocol {
            Protocol::Json => match self.json.scan(&self.input[start..]) {
                JsonScan::Complete(n) => {
                    if n > max {
                        self.too_large();
                        return None;
                    }
                    match bounded::parse(&self.input[start..start + n], self.limits.bounds()) {
                        Ok(parsed) => self.json_request(parsed, engine, meta_connections),
                        Err(Refusal::Syntax(e)) => self.fail(RpcError::parse_error(e)),
                        // The value is whole: refuse it and go on with the next.
                        Err(bound) => self.refuse(start, n, &bound),
                    }
                    Some(n)
                }
                JsonScan::Skip(n) => Some(n),
                JsonScan::Incomplete => {
                    if self.input.len() - start > max {
                        self.too_large();
                    }
                    None
                }
                JsonScan::Invalid => {
                    self.fail(RpcError::parse_error("not a JSON value"));
                    None
                }
            },
            Protocol::ContentLength => {
                let Some(body) = self.body else {
                    match framing::content_length(&self.input[start..]) {
                        Headers::Complete { header, body } => {
                            if body > max {
                                self.too_large();
                                return None;
                            }
                            self.body = Some(body);
                            return Some(header);
                        }
                        Headers::Incomplete => return None,
                        Headers::Invalid(why) => {
                            self.fail(RpcError::parse_error(why));
                            return None;
                        }
                    }
                };
                let frame = self.input.get(start..start + body)?;
                let parsed = bounded::parse(frame, self.limits.bounds());
                self.body = None;
                match parsed {
                    Ok(parsed) => self.json_request(parsed, engine, meta_connections),
                    // The framing is intact: answer and go on.
                    Err(refusal) => self.refuse(start, body, &refusal),
                }
                Some(body)
            }
            Protocol::MessagePack => match self.msgpack.scan(&self.input[start..], max) {
                Scan::Complete(n) if self.msgpack.items() > self.limits.max_values => {
                    let error = RpcError::invalid_request(
                        Refusal::Values(self.limits.max_values).to_string(),
                    );
                    match msgpack::peek(&self.input[start..start + n]) {
                        Peek::Request(msgid) => self.answer_msgpack(Some(msgid), &Err(error)),
                        Peek::Notification => {}
                        Peek::Other => self.answer_msgpack(None, &Err(error)),
                    }
                    self.after_request();
                    Some(n)
                }
                Scan::Complete(n) => {
                    let decoded = msgpack::decode(&self.input[start..start + n]);
                    self.msgpack_message(decoded, engine, meta_connections);
                    Some(n)
                }
                Scan::Incomplete => None,
                Scan::TooLarge => {
                    self.too_large();
                    None
                }
                Scan::Invalid(why) => {
                    self.fail(RpcError::parse_error(why));
                    None
                }
            },
        }
    }

    /// The caller's identity, the gate every call passes, and the output, borrowed apart.
    fn split<'a>(
        &'a mut self,
        engine: &'a mut dyn Engine,
        connections: usize,
        deferrable: bool,
    ) -> (Meta<'a>, Gate<'a>, &'a mut Output) {
        let meta = Meta {
            peer: &self.peer,
            connections,
            deferrable,
            connection: self.id,
        };
        let gate = Gate {
            engine,
            admission: &self.admission,
            secret: &mut self.secret,
            close: &mut self.closing,
            deferred: &mut self.deferred,
        };
        (meta, gate, &mut self.output)
    }

    fn json_request(&mut self, parsed: Parsed, engine: &mut dyn Engine, connections: usize) {
        let framing = self.json_framing();
        match parsed {
            Parsed::Batch(batch) if batch.is_empty() => {
                self.answer_json(
                    &Value::Null,
                    &Err(RpcError::invalid_request("an empty batch")),
                );
            }
            Parsed::Batch(batch) => {
                let (meta, mut gate, output) = self.split(engine, connections, false);
                let max = output.max();
                let written = match gate.refusal() {
                    // One error for the whole batch, not one per element.
                    Some(error) => Err(error),
                    None => output
                        .reply(framing, |w| {
                            jsonrpc::write_batch(batch, &mut gate, &meta, w)
                        })
                        .map_err(|_| reply_too_large(max)),
                };
                if let Err(error) = written {
                    output.small(framing, |b| {
                        jsonrpc::write_reply(b, &Value::Null, &Err(error))
                    });
                }
            }
            Parsed::One(value) => {
                let single = value.is_object();
                let (meta, mut gate, _) = self.split(engine, connections, single);
                let reply = jsonrpc::call(value, &mut gate, &meta);
                match (self.deferred.take(), reply) {
                    (Some(deferred), Some((id, _))) => {
                        self.pending = Some(Pending::new(deferred, ReplyTo::Json(id)));
                    }
                    (_, Some((id, outcome))) => self.answer_json(&id, &outcome),
                    (_, None) => {}
                }
            }
        }
        self.after_request();
    }

    /// Answers a whole JSON value that passed a bound (or, in Content-Length framing, is not
    /// JSON): with the request's id when it has a plain one.
    /// A connection that may not call anything gets that error instead.
    fn refuse(&mut self, start: usize, n: usize, why: &Refusal) {
        let id = match why {
            Refusal::Values(_) => bounded::id_of(&self.input[start..start + n]),
            _ => Value::Null,
        };
        let error = refusal(&self.admission, &self.secret).unwrap_or_else(|| why.to_rpc());
        self.answer_json(&id, &Err(error));
        self.after_request();
    }

    fn json_framing(&self) -> Framing {
        match self.protocol {
            Some(Protocol::ContentLength) => Framing::ContentLength,
            _ => Framing::Line,
        }
    }

    /// Writes one JSON-RPC reply; one larger than the cap becomes an error with the same id.
    fn answer_json(&mut self, id: &Value, outcome: &Result<Value, RpcError>) {
        let framing = self.json_framing();
        let max = self.output.max();
        let fits = self.output.reply(framing, |w| {
            jsonrpc::write_reply(w, id, outcome);
            true
        });
        if fits.is_err() {
            let error = Err(reply_too_large(max));
            self.output
                .small(framing, |b| jsonrpc::write_reply(b, id, &error));
        }
    }

    /// Writes one MessagePack-RPC response; one larger than the cap becomes an error.
    fn answer_msgpack(&mut self, msgid: Option<u32>, outcome: &Result<Value, RpcError>) {
        let max = self.output.max();
        let fits = self.output.reply(Framing::Bare, |w| {
            msgpack::encode_response(w, msgid, outcome);
            true
        });
        if fits.is_err() {
            let error = Err(reply_too_large(max));
            self.output.small(Framing::Bare, |b| {
                msgpack::encode_response(b, msgid, &error)
            });
        }
    }

    /// Writes the reply a deferred call was waiting for, then goes on with the requests
    /// buffered meanwhile. Returns false if this connection was not waiting for `ticket`.
    pub fn complete(
        &mut self,
        ticket: Ticket,
        outcome: Result<Value, RpcError>,
        engine: &mut dyn Engine,
        connections: usize,
    ) -> bool {
        match &self.pending {
            Some(p) if p.ticket == ticket => {}
            _ => return false,
        }
        let pending = self.pending.take().expect("matched above");
        match pending.to {
            ReplyTo::Json(id) => self.answer_json(&id, &outcome),
            ReplyTo::MessagePack(msgid) => self.answer_msgpack(Some(msgid), &outcome),
        }
        self.receive(&[], engine, connections);
        true
    }

    /// The ticket of the reply this connection waits for, if any.
    pub fn waiting_for(&self) -> Option<Ticket> {
        self.pending.as_ref().map(|p| p.ticket)
    }

    /// When the reply this connection waits for times out, and the timeout it was given,
    /// if the connection times it out.
    pub fn reply_deadline(&self) -> Option<(Instant, Duration)> {
        self.pending.as_ref().and_then(|p| p.deadline)
    }

    fn msgpack_message(
        &mut self,
        decoded: Result<Message, Refused>,
        engine: &mut dyn Engine,
        connections: usize,
    ) {
        let deferrable = matches!(decoded, Ok(Message::Request { .. }));
        let (meta, mut gate, _) = self.split(engine, connections, deferrable);
        match decoded {
            Ok(Message::Request {
                msgid,
                method,
                params,
            }) => {
                let outcome = gate.call(&meta, &method, params);
                match self.deferred.take() {
                    Some(deferred) => {
                        self.pending = Some(Pending::new(deferred, ReplyTo::MessagePack(msgid)));
                    }
                    None => self.answer_msgpack(Some(msgid), &outcome),
                }
            }
            Ok(Message::Notification { method, params }) => {
                let _ = gate.call(&meta, &method, params);
            }
            Ok(Message::Response) => {}
            Err(Refused::Invalid(msgid, why)) => {
                self.answer_msgpack(Some(msgid), &Err(RpcError::invalid_request(why)));
            }
            Err(Refused::Parse(why)) => self.fail(RpcError::parse_error(why)),
        }
        self.after_request();
    }

    fn after_request(&mut self) {
        if matches!(self.admission, Admission::Refused(_)) {
            self.closing = true;
        }
    }

    /// Answers `error` with id null in the connection's framing, then closes.
    fn fail(&mut self, error: RpcError) {
        match self.protocol {
            Some(Protocol::MessagePack) => self.answer_msgpack(None, &Err(error)),
            _ => self.answer_json(&Value::Null, &Err(error)),
        }
        self.closing = true;
    }

    fn too_large(&mut self) {
        let max = self.limits.max_request;
        self.fail(RpcError::invalid_request(format!(
            "request larger than maxrequestsize ({max} bytes)"
        )));
    }

    /// The replies not yet written.
    pub fn output(&self) -> &[u8] {
        self.output.unsent()
    }

    /// Records that the first `n` bytes of [`Connection::output`] were written.
    pub fn consume_output(&mut self, n: usize) {
        self.output.consume(n);
    }

    /// Whether the connection takes more bytes: not while it closes, nor while a whole
    /// `max_output` of replies waits unsent (the client is slow to read; it gets the rest of
    /// its answers once it catches up), nor once it takes no more requests.
    pub fn wants_input(&self) -> bool {
        !self.closing && !self.draining && !self.output.is_full()
    }

    /// Takes no more requests (what arrives is ignored), but still writes its pending
    /// replies and the events it is sent: a subscriber while the daemon stops.
    pub(crate) fn stop_requests(&mut self) {
        self.draining = true;
    }

    /// Answers the requests buffered while the output was full, now that it drained; returns
    /// whether it consumed any input (false: nothing to do, or only part of a request).
    pub fn resume(&mut self, engine: &mut dyn Engine, connections: usize) -> bool {
        if !self.wants_input() || self.pending.is_some() || self.input.is_empty() {
            return false;
        }
        let before = self.input.len();
        self.receive(&[], engine, connections);
        self.input.len() != before || self.closing
    }

    /// Whether the connection is done: close it once its output is written.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// How many bytes of unanswered input are buffered (at most `max_request` plus a header
    /// block, or the connection is closing).
    pub fn pending_input(&self) -> usize {
        self.input.len()
    }

    /// Whether the peer must still present the secret (a tcp peer that has not
    /// authenticated yet).
    pub fn needs_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// Whether part of a request is buffered.
    pub fn has_partial_input(&self) -> bool {
        !self.input.is_empty() || self.body.is_some()
    }

    /// The peer closed its side: answer nothing more, finish writing.
    pub fn hangup(&mut self) {
        self.closing = true;
    }
}

/// The error that replaces a reply larger than `max` bytes.
fn reply_too_large(max: usize) -> RpcError {
    RpcError::server_error(format!("reply larger than socketmaxoutput ({max} bytes)"))
}

#[cfg(test)]
mod tests;
