//! A connection's unsent replies: each reply is written straight into the buffer as it is
//! built, capped as it grows, so no reply is ever held twice or truncated.
//!
//! One reply may take at most `max` bytes (`socketmaxoutput`); one that would take more is
//! rolled back and answered with an error instead. The connection takes no new request while
//! `max` bytes wait unsent, so what waits for a client that stops reading is bounded by about
//! twice the cap, however long it keeps sending.

use std::io::{self, Write};

/// The most a buffer keeps once it is empty (a small reply's worth, reused by the next):
/// past it, the allocation is given back.
pub(super) const IDLE_CAPACITY: usize = 4096;

/// The framing a reply is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// The reply, then a newline.
    Line,
    /// `Content-Length: N\r\n\r\n`, then the reply.
    ContentLength,
    /// The bare MessagePack response.
    Bare,
}

/// The unsent bytes of a connection.
#[derive(Debug)]
pub(super) struct Output {
    buf: Vec<u8>,
    written: usize,
    max: usize,
}

/// Why a reply was not written: it would have taken more than the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TooLarge;

impl Output {
    pub(super) fn new(max: usize) -> Output {
        Output {
            buf: Vec::new(),
            written: 0,
            max,
        }
    }

    /// The cap on one reply, and on what waits before the connection takes more requests.
    pub(super) fn max(&self) -> usize {
        self.max
    }

    /// The bytes not yet written to the peer.
    pub(super) fn unsent(&self) -> &[u8] {
        &self.buf[self.written..]
    }

    /// Whether a whole cap waits unsent: take no more requests until it drains.
    pub(super) fn is_full(&self) -> bool {
        self.unsent().len() >= self.max
    }

    /// Records that the first `n` unsent bytes were written.
    pub(super) fn consume(&mut self, n: usize) {
        self.written += n;
        if self.written >= self.buf.len() {
            self.buf.clear();
            self.written = 0;
            // A large reply left a large allocation: give it back once sent, so an idle
            // connection holds a small buffer at most (many idle connections stay small).
            if self.buf.capacity() > IDLE_CAPACITY {
                self.buf = Vec::new();
            }
        } else if self.written > 64 * 1024 {
            self.buf.drain(..self.written);
            self.written = 0;
        }
    }

    /// Writes one reply in `framing` with `write`, which returns whether it wrote anything (a
    /// batch of notifications writes nothing, and then nothing is sent).
    ///
    /// # Errors
    ///
    /// [`TooLarge`] if the reply would take more than the cap: nothing of it stays.
    pub(super) fn reply(
        &mut self,
        framing: Framing,
        write: impl FnOnce(&mut Capped<'_>) -> bool,
    ) -> Result<(), TooLarge> {
        let mark = self.buf.len();
        let mut capped = Capped {
            buf: &mut self.buf,
            limit: mark + self.max,
            over: false,
        };
        let wrote = write(&mut capped);
        if capped.over {
            self.buf.truncate(mark);
            return Err(TooLarge);
        }
        if !wrote {
            self.buf.truncate(mark);
            return Ok(());
        }
        self.frame(mark, framing);
        Ok(())
    }

    /// Writes a small reply (an error) without the cap: it always fits in spirit, and must be
    /// sent whatever the cap.
    pub(super) fn small(&mut self, framing: Framing, write: impl FnOnce(&mut Vec<u8>)) {
        let mark = self.buf.len();
        write(&mut self.buf);
        self.frame(mark, framing);
    }

    /// Frames the reply written since `mark`.
    fn frame(&mut self, mark: usize, framing: Framing) {
        match framing {
            Framing::Line => self.buf.push(b'\n'),
            Framing::ContentLength => {
                let header = format!("Content-Length: {}\r\n\r\n", self.buf.len() - mark);
                self.buf.splice(mark..mark, header.into_bytes());
            }
            Framing::Bare => {}
        }
    }
}

/// The writer a reply is serialized into: past its limit it stops storing and only records
/// that the reply did not fit, so a serializer never sees an error and never allocates more.
pub(super) struct Capped<'a> {
    buf: &'a mut Vec<u8>,
    limit: usize,
    over: bool,
}

impl Write for Capped<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if !self.over && self.buf.len() + data.len() <= self.limit {
            self.buf.extend_from_slice(data);
        } else {
            self.over = true;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_framed_and_a_reply_over_the_cap_leaves_nothing() {
        let mut out = Output::new(10);
        assert_eq!(
            out.reply(Framing::Line, |w| w.write_all(b"abc").is_ok()),
            Ok(())
        );
        assert_eq!(
            out.reply(Framing::ContentLength, |w| w.write_all(b"xy").is_ok()),
            Ok(())
        );
        assert_eq!(out.unsent(), b"abc\nContent-Length: 2\r\n\r\nxy");
        assert_eq!(
            out.reply(Framing::Line, |w| w.write_all(&[b'z'; 11]).is_ok()),
            Err(TooLarge)
        );
        assert_eq!(
            out.reply(Framing::Bare, |w| {
                let _ = w.write_all(b"nothing");
                false
            }),
            Ok(())
        );
        assert_eq!(out.unsent(), b"abc\nContent-Length: 2\r\n\r\nxy");
        assert!(out.is_full());
        out.consume(4);
        assert_eq!(out.unsent(), b"Content-Length: 2\r\n\r\nxy");
        out.consume(out.unsent().len());
        assert!(out.unsent().is_empty() && !out.is_full());
        out.small(Framing::Line, |b| b.extend_from_slice(&[b'e'; 20]));
        assert_eq!(out.unsent().len(), 21);
    }
}
