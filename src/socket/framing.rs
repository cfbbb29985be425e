//! Framing: which protocol a connection speaks, and where each JSON request ends.

/// The protocol of a connection, chosen by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// JSON-RPC 2.0 as a stream of JSON values.
    Json,
    /// JSON-RPC 2.0 with `Content-Length:` headers.
    ContentLength,
    /// MessagePack-RPC.
    MessagePack,
}

/// What the first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// This protocol.
    Is(Protocol),
    /// Not enough bytes to tell.
    NeedMore,
    /// No protocol starts like this.
    Garbage,
}

const CONTENT_LENGTH: &[u8] = b"content-length:";

/// Chooses the protocol from the first bytes of a connection.
pub fn detect(buf: &[u8]) -> Detected {
    let Some(&first) = buf.first() else {
        return Detected::NeedMore;
    };
    match first {
        b'{' | b'[' | b' ' | b'\t' | b'\r' | b'\n' => Detected::Is(Protocol::Json),
        0x90..=0x9f | 0xdc | 0xdd => Detected::Is(Protocol::MessagePack),
        b'C' | b'c' => {
            let n = buf.len().min(CONTENT_LENGTH.len());
            if buf[..n].eq_ignore_ascii_case(&CONTENT_LENGTH[..n]) {
                if n == CONTENT_LENGTH.len() {
                    Detected::Is(Protocol::ContentLength)
                } else {
                    Detected::NeedMore
                }
            } else {
                Detected::Garbage
            }
        }
        _ => Detected::Garbage,
    }
}

/// What [`JsonScanner::scan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonScan {
    /// A whole value: the first `n` bytes (whitespace before a value is a [`JsonScan::Skip`]).
    Complete(usize),
    /// Whitespace (space, tab, `\n`, `\r`): these `n` bytes can be dropped.
    Skip(usize),
    /// More bytes are needed.
    Incomplete,
    /// Not JSON (a bracket that does not match, a byte no value starts with, nesting too deep).
    Invalid,
}

/// How deeply JSON arrays and objects may nest: the crate's one limit,
/// [`crate::rpc::MAX_DEPTH`], shared with MessagePack and the workers' channels.
pub const MAX_JSON_DEPTH: usize = crate::rpc::MAX_DEPTH;

/// Finds where each JSON value of a stream ends, without parsing it and resuming where it
/// stopped when more bytes arrive (so a large request costs one pass). It tracks strings and
/// escapes and the nesting of brackets; the value itself is parsed by serde_json once whole.
#[derive(Debug, Default)]
pub struct JsonScanner {
    pos: usize,
    started: bool,
    scalar: bool,
    in_string: bool,
    escape: bool,
    closers: Vec<u8>,
}

fn is_scalar_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

impl JsonScanner {
    /// Scans `buf`: the stream from the start of the current value (the same bytes as the
    /// previous call, plus more).
    pub fn scan(&mut self, buf: &[u8]) -> JsonScan {
        let mut pos = self.pos;
        if !self.started {
            while pos < buf.len() && matches!(buf[pos], b' ' | b'\t' | b'\n' | b'\r') {
                pos += 1;
            }
            if pos > 0 {
                // Whitespace is not part of the value (nor of its size).
                self.reset();
                return JsonScan::Skip(pos);
            }
            let Some(&b) = buf.first() else {
                return JsonScan::Incomplete;
            };
            self.started = true;
            match b {
                b'{' => self.closers.push(b'}'),
                b'[' => self.closers.push(b']'),
                b'"' => self.in_string = true,
                b if is_scalar_byte(b) => self.scalar = true,
                _ => return self.fail(),
            }
            pos = 1;
        }
        if self.scalar {
            while pos < buf.len() {
                if !is_scalar_byte(buf[pos]) {
                    return self.complete(pos);
                }
                pos += 1;
            }
            self.pos = pos;
            return JsonScan::Incomplete;
        }
        // The state in locals while the loop runs (the hot path of every JSON request).
        let (mut in_string, mut escape) = (self.in_string, self.escape);
        while pos < buf.len() {
            let b = buf[pos];
            if in_string {
                if escape {
                    escape = false;
                    pos += 1;
                    continue;
                }
                match b {
                    b'\\' => {
                        escape = true;
                        pos += 1;
                    }
                    b'"' => {
                        in_string = false;
                        pos += 1;
                        if self.closers.is_empty() {
                            return self.complete(pos);
                        }
                    }
                    // A string's plain bytes, skipped up to the next quote or backslash.
                    _ => match buf[pos..].iter().position(|&c| c == b'"' || c == b'\\') {
                        Some(k) => pos += k,
                        None => pos = buf.len(),
                    },
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    if self.closers.len() >= MAX_JSON_DEPTH {
                        return self.fail();
                    }
                    self.closers.push(if b == b'{' { b'}' } else { b']' });
                }
                b'}' | b']' => {
                    if self.closers.pop() != Some(b) {
                        return self.fail();
                    }
                    if self.closers.is_empty() {
                        return self.complete(pos + 1);
                    }
                }
                _ => {}
            }
            pos += 1;
        }
        self.pos = pos;
        self.in_string = in_string;
        self.escape = escape;
        JsonScan::Incomplete
    }

    fn complete(&mut self, n: usize) -> JsonScan {
        self.reset();
        JsonScan::Complete(n)
    }

    fn fail(&mut self) -> JsonScan {
        self.reset();
        JsonScan::Invalid
    }

    /// Forgets a partial scan.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.started = false;
        self.scalar = false;
        self.in_string = false;
        self.escape = false;
        self.closers.clear();
    }
}

/// What [`content_length`] found in the headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Headers {
    /// The headers end after `header` bytes and announce a body of `body` bytes.
    Complete {
        /// The length of the header block, blank line included.
        header: usize,
        /// The announced body length.
        body: usize,
    },
    /// More bytes are needed.
    Incomplete,
    /// No usable `Content-Length`, or headers too long.
    Invalid(&'static str),
}

/// The most bytes a header block may take.
pub const MAX_HEADERS: usize = 8192;

/// Reads LSP-style headers: lines of `Name: value` ended by an empty line, one of them a
/// `Content-Length` (name case-insensitive).
pub fn content_length(buf: &[u8]) -> Headers {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEADERS {
            Headers::Invalid("headers longer than 8192 bytes")
        } else {
            Headers::Incomplete
        };
    };
    if end + 4 > MAX_HEADERS {
        return Headers::Invalid("headers longer than 8192 bytes");
    }
    let mut body = None;
    for line in buf[..end].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Headers::Invalid("a header line without ':'");
        };
        if line[..colon].eq_ignore_ascii_case(b"content-length") {
            let value = std::str::from_utf8(&line[colon + 1..]).unwrap_or("").trim();
            match value.parse::<usize>() {
                Ok(n) => body = Some(n),
                Err(_) => return Headers::Invalid("Content-Length is not a number"),
            }
        }
    }
    match body {
        Some(body) => Headers::Complete {
            header: end + 4,
            body,
        },
        None => Headers::Invalid("no Content-Length header"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_by_first_bytes() {
        assert_eq!(detect(b"{\"a\""), Detected::Is(Protocol::Json));
        assert_eq!(detect(b"\n["), Detected::Is(Protocol::Json));
        assert_eq!(detect(&[0x94]), Detected::Is(Protocol::MessagePack));
        assert_eq!(detect(&[0xdc, 0]), Detected::Is(Protocol::MessagePack));
        assert_eq!(detect(b"Cont"), Detected::NeedMore);
        assert_eq!(
            detect(b"content-LENGTH: 5"),
            Detected::Is(Protocol::ContentLength)
        );
        assert_eq!(detect(b"Cookie"), Detected::Garbage);
        assert_eq!(detect(b"GET / HTTP/1.1"), Detected::Garbage);
        assert_eq!(detect(&[0xc1]), Detected::Garbage);
        assert_eq!(detect(b""), Detected::NeedMore);
    }

    fn values(stream: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut scanner = JsonScanner::default();
        let mut start = 0;
        loop {
            match scanner.scan(&stream[start..]) {
                JsonScan::Complete(n) => {
                    out.push(
                        String::from_utf8_lossy(&stream[start..start + n])
                            .trim()
                            .to_owned(),
                    );
                    start += n;
                }
                JsonScan::Skip(n) => start += n,
                JsonScan::Incomplete => return out,
                JsonScan::Invalid => {
                    out.push("INVALID".into());
                    return out;
                }
            }
        }
    }

    #[test]
    fn values_of_newline_delimited_and_concatenated_streams() {
        assert_eq!(
            values(b"{\"a\":1}\n{\"b\":[2,{}]}\n"),
            ["{\"a\":1}", "{\"b\":[2,{}]}"]
        );
        assert_eq!(
            values(b"{\"a\":\"}\"}[1]  {\"c\":\"\\\"]\"}"),
            ["{\"a\":\"}\"}", "[1]", "{\"c\":\"\\\"]\"}"]
        );
        assert_eq!(values(b"1 true \"x\" {"), ["1", "true", "\"x\""]);
        assert_eq!(values(b"{\"a\":\n 1\n}"), ["{\"a\":\n 1\n}"]);
        assert_eq!(values(b"{\"a\": 1]"), ["INVALID"]);
        assert_eq!(values(b"{} }"), ["{}", "INVALID"]);
    }

    #[test]
    fn scanning_resumes_byte_by_byte() {
        let value = b"{\"method\":\"x\",\"params\":[\"a\\\"b\",{\"c\":[1,2]}]}";
        let mut scanner = JsonScanner::default();
        for i in 1..value.len() {
            assert_eq!(scanner.scan(&value[..i]), JsonScan::Incomplete, "at {i}");
        }
        assert_eq!(scanner.scan(value), JsonScan::Complete(value.len()));
    }

    #[test]
    fn only_json_whitespace_is_skipped_and_never_counted_in_a_value() {
        // Found by fuzzing: form feed is not JSON whitespace; whitespace before a value is
        // skipped on its own, so a value's size does not depend on how reads split it.
        assert_eq!(JsonScanner::default().scan(b"\x0c{}"), JsonScan::Invalid);
        let mut s = JsonScanner::default();
        assert_eq!(s.scan(b"\n \t\r{}"), JsonScan::Skip(4));
        assert_eq!(s.scan(b"{}"), JsonScan::Complete(2));
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = vec![b'['; MAX_JSON_DEPTH + 1];
        assert_eq!(JsonScanner::default().scan(&deep), JsonScan::Invalid);
        let ok = vec![b'['; MAX_JSON_DEPTH];
        assert_eq!(JsonScanner::default().scan(&ok), JsonScan::Incomplete);
    }

    #[test]
    fn content_length_headers() {
        assert_eq!(
            content_length(b"Content-Length: 12\r\n\r\n{}"),
            Headers::Complete {
                header: 22,
                body: 12
            }
        );
        assert_eq!(
            content_length(b"content-type: x\r\nCONTENT-length:3\r\n\r\n"),
            Headers::Complete {
                header: 37,
                body: 3
            }
        );
        assert_eq!(
            content_length(b"Content-Length: 12\r\n"),
            Headers::Incomplete
        );
        assert!(matches!(
            content_length(b"Content-Length: x\r\n\r\n"),
            Headers::Invalid(_)
        ));
        assert!(matches!(
            content_length(b"X-Other: 1\r\n\r\n"),
            Headers::Invalid(_)
        ));
        let long = vec![b'a'; MAX_HEADERS + 1];
        assert!(matches!(content_length(&long), Headers::Invalid(_)));
        // Found by fuzzing: a whole header block over the limit, arriving in one read.
        let mut block = b"Content-Length: 2\r\n".to_vec();
        block.extend(std::iter::repeat_n(b"X-Pad: aaaaaaaaaa\r\n".as_slice(), 500).flatten());
        block.extend_from_slice(b"\r\n{}");
        assert!(matches!(content_length(&block), Headers::Invalid(_)));
    }
}

#[cfg(test)]
mod reference {
    use super::*;

    /// The scanner as it was before its hot loop kept its state in locals: the reference.
    #[derive(Debug, Default)]
    struct Reference {
        pos: usize,
        started: bool,
        scalar: bool,
        in_string: bool,
        escape: bool,
        closers: Vec<u8>,
    }

    impl Reference {
        /// Scans `buf`: the stream from the start of the current value (the same bytes as the
        /// previous call, plus more).
        fn scan(&mut self, buf: &[u8]) -> JsonScan {
            while self.pos < buf.len() {
                let b = buf[self.pos];
                if !self.started {
                    if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                        self.pos += 1;
                        continue;
                    }
                    if self.pos > 0 {
                        // Whitespace is not part of the value (nor of its size).
                        let n = self.pos;
                        self.reset();
                        return JsonScan::Skip(n);
                    }
                    self.started = true;
                    match b {
                        b'{' => self.closers.push(b'}'),
                        b'[' => self.closers.push(b']'),
                        b'"' => self.in_string = true,
                        b if is_scalar_byte(b) => self.scalar = true,
                        _ => return self.fail(),
                    }
                    self.pos += 1;
                    continue;
                }
                if self.in_string {
                    if self.escape {
                        self.escape = false;
                    } else if b == b'\\' {
                        self.escape = true;
                    } else if b == b'"' {
                        self.in_string = false;
                        if self.closers.is_empty() {
                            return self.complete(self.pos + 1);
                        }
                    }
                } else if self.scalar {
                    if !is_scalar_byte(b) {
                        return self.complete(self.pos);
                    }
                } else {
                    match b {
                        b'"' => self.in_string = true,
                        b'{' | b'[' => {
                            if self.closers.len() >= MAX_JSON_DEPTH {
                                return self.fail();
                            }
                            self.closers.push(if b == b'{' { b'}' } else { b']' });
                        }
                        b'}' | b']' => {
                            if self.closers.pop() != Some(b) {
                                return self.fail();
                            }
                            if self.closers.is_empty() {
                                return self.complete(self.pos + 1);
                            }
                        }
                        _ => {}
                    }
                }
                self.pos += 1;
            }
            if !self.started && self.pos > 0 {
                let n = self.pos;
                self.reset();
                return JsonScan::Skip(n);
            }
            JsonScan::Incomplete
        }

        fn complete(&mut self, n: usize) -> JsonScan {
            self.reset();
            JsonScan::Complete(n)
        }

        fn fail(&mut self) -> JsonScan {
            self.reset();
            JsonScan::Invalid
        }

        /// Forgets a partial scan.
        fn reset(&mut self) {
            self.pos = 0;
            self.started = false;
            self.scalar = false;
            self.in_string = false;
            self.escape = false;
            self.closers.clear();
        }
    }

    /// The same verdicts as the reference, for every prefix of many small random streams
    /// fed as a stream is (the same bytes again, plus more).
    #[test]
    fn the_scanner_agrees_with_its_reference() {
        let alphabet = b"{}[]\"\\ a1-.,:\n\t";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            // Fed a byte at a time, or in random chunks.
            let step = 1 + (next() % 8) as usize;
            let (mut ours, mut theirs) = (JsonScanner::default(), Reference::default());
            let (mut a, mut b) = (0, 0);
            let ends = (0..=input.len()).step_by(step).chain([input.len()]);
            for end in ends {
                if a > end || b > end {
                    continue;
                }
                let (x, y) = (ours.scan(&input[a..end]), theirs.scan(&input[b..end]));
                assert_eq!(x, y, "{:?} at {end}", String::from_utf8_lossy(&input));
                match x {
                    JsonScan::Complete(n) | JsonScan::Skip(n) => {
                        a += n;
                        b += n;
                    }
                    JsonScan::Invalid => break,
                    JsonScan::Incomplete => {}
                }
            }
        }
    }
}
