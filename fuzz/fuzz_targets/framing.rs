//! The JSON framing: `detect`, `JsonScanner`, `content_length`.
//!
//! Input: `[pad] [n] [n plan bytes] stream`. The stream is scanned the way a connection
//! scans it (resuming on a growing buffer, dropping what was consumed), once in one read and
//! once in the reads the plan chooses. `pad` prefixes the Content-Length check with up to
//! ~10 KB of extra header lines, to reach the header size limit.
//!
//! Properties:
//! - the values found (where each ends, whether serde_json accepts it) and whether the stream
//!   turns invalid are the same however the stream is split;
//! - `Complete(n)` has `0 < n <= len`, and its bytes are JSON whitespace then one value start;
//! - `Skip(n)` skips only JSON whitespace (space, tab, LF, CR: what serde_json skips);
//! - a value serde_json accepts re-serializes and re-parses to the same `Value`;
//! - every value serde_json's stream reader reads is found, ending where serde_json says;
//! - `content_length`: `Complete { header, body }` has `header <= len`, ends the header block at
//!   the first `\r\n\r\n`, stays within `MAX_HEADERS`, is `Incomplete` one byte short, and
//!   `body` is the last `Content-Length` value; `Incomplete` only while no blank line came
//!   and the bytes fit in `MAX_HEADERS`;
//! - `detect`: a decision (a protocol, or garbage) never changes as bytes arrive, and matches
//!   the first byte.
#![no_main]

use daimon::socket::framing::{
    Detected, Headers, JsonScan, JsonScanner, MAX_HEADERS, Protocol, content_length, detect,
};
use daimon_fuzz::{chunks, is_json_ws, split_plan};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// What scanning a stream found.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// Each value: where it ends in the stream, and whether serde_json accepts it.
    values: Vec<(usize, bool)>,
    /// The stream turned invalid after these values.
    invalid: bool,
}

fn is_value_start(b: u8) -> bool {
    matches!(b, b'{' | b'[' | b'"') || b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

/// Feeds `stream` in the given reads, as `Connection::receive` does.
fn scan(reads: &[(u8, &[u8])]) -> Outcome {
    let mut scanner = JsonScanner::default();
    let mut input: Vec<u8> = Vec::new();
    // Where input[0] is in the stream.
    let mut base = 0;
    let mut outcome = Outcome {
        values: Vec::new(),
        invalid: false,
    };
    for (_, read) in reads {
        input.extend_from_slice(read);
        let mut start = 0;
        while start < input.len() {
            let buf = &input[start..];
            match scanner.scan(buf) {
                JsonScan::Complete(n) => {
                    assert!(
                        n > 0 && n <= buf.len(),
                        "Complete({n}) of {} bytes",
                        buf.len()
                    );
                    let value = &buf[..n];
                    let lead = value.iter().take_while(|&&b| is_json_ws(b)).count();
                    assert!(
                        lead < n && is_value_start(value[lead]),
                        "a value that does not start like one after JSON whitespace: {:?}",
                        String::from_utf8_lossy(value)
                    );
                    let parsed = serde_json::from_slice::<Value>(value);
                    if let Ok(v) = &parsed {
                        let again = serde_json::to_vec(v).expect("a Value serializes");
                        let back: Value = serde_json::from_slice(&again)
                            .unwrap_or_else(|e| panic!("{v} re-serialized does not parse: {e}"));
                        assert_eq!(&back, v, "a value changed by a round trip");
                    }
                    outcome.values.push((base + start + n, parsed.is_ok()));
                    start += n;
                }
                JsonScan::Skip(n) => {
                    assert!(n > 0 && n <= buf.len(), "Skip({n}) of {} bytes", buf.len());
                    assert!(
                        buf[..n].iter().all(|&b| is_json_ws(b)),
                        "Skip({n}) dropped bytes that are not JSON whitespace: {:x?}",
                        &buf[..n]
                    );
                    start += n;
                }
                JsonScan::Incomplete => break,
                JsonScan::Invalid => {
                    outcome.invalid = true;
                    return outcome;
                }
            }
        }
        input.drain(..start);
        base += start;
    }
    outcome
}

/// Every value serde_json's stream reader accepts is found by the scanner, ending at the same
/// byte (a scalar at the very end waits for the byte that ends it).
fn agrees_with_serde(stream: &[u8], whole: &Outcome) {
    let mut values = serde_json::Deserializer::from_slice(stream).into_iter::<Value>();
    let mut i = 0;
    while let Some(Ok(v)) = values.next() {
        let end = values.byte_offset();
        let scalar = !matches!(v, Value::Object(_) | Value::Array(_) | Value::String(_));
        match whole.values.get(i) {
            Some(&(found, ok)) => {
                assert_eq!(
                    found, end,
                    "value {i} ({v}) ends at {end}, scanner says {found}"
                );
                assert!(
                    ok,
                    "value {i} ({v}) accepted whole, not as the scanner cut it"
                );
            }
            None => {
                assert!(
                    scalar && end == stream.len() && !whole.invalid,
                    "the scanner missed value {i} ({v}) ending at {end}: {whole:?}"
                );
                return;
            }
        }
        i += 1;
    }
}

fn check_content_length(buf: &[u8]) {
    let terminator = buf.windows(4).position(|w| w == b"\r\n\r\n");
    match content_length(buf) {
        Headers::Complete { header, body } => {
            assert!(header <= buf.len());
            assert_eq!(
                terminator,
                Some(header - 4),
                "the header block ends at the first blank line"
            );
            assert!(
                header <= MAX_HEADERS,
                "a header block of {header} bytes accepted, over MAX_HEADERS ({MAX_HEADERS}); \
                 one byte at a time it would be refused"
            );
            assert_eq!(
                content_length(&buf[..header]),
                Headers::Complete { header, body }
            );
            assert_eq!(content_length(&buf[..header - 1]), Headers::Incomplete);
            let announced = buf[..header - 4]
                .split(|&b| b == b'\n')
                .filter_map(|line| {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let colon = line.iter().position(|&b| b == b':')?;
                    line[..colon]
                        .eq_ignore_ascii_case(b"content-length")
                        .then(|| std::str::from_utf8(&line[colon + 1..]).ok())?
                })
                .next_back()
                .and_then(|v| v.trim().parse::<usize>().ok());
            assert_eq!(announced, Some(body));
        }
        Headers::Incomplete => {
            assert_eq!(terminator, None);
            assert!(buf.len() <= MAX_HEADERS);
        }
        Headers::Invalid(_) => {}
    }
}

fn check_detect(stream: &[u8]) {
    let mut decided = None;
    for k in 0..=stream.len().min(20) {
        let d = detect(&stream[..k]);
        if let Some(first) = decided {
            assert_eq!(
                d,
                first,
                "detect changed its mind at {k} bytes: {:x?}",
                &stream[..k]
            );
            continue;
        }
        match d {
            Detected::NeedMore => {
                assert!(k == 0 || b"content-length:"[..k].eq_ignore_ascii_case(&stream[..k]))
            }
            Detected::Is(p) => {
                let first = stream[0];
                let ok = match p {
                    Protocol::Json => is_json_ws(first) || matches!(first, b'{' | b'['),
                    Protocol::MessagePack => matches!(first, 0x90..=0x9f | 0xdc | 0xdd),
                    Protocol::ContentLength => {
                        k == 15 && stream[..15].eq_ignore_ascii_case(b"content-length:")
                    }
                };
                assert!(ok, "{p:?} detected from {:x?}", &stream[..k]);
                decided = Some(d);
            }
            Detected::Garbage => {
                assert!(k > 0);
                decided = Some(d);
            }
        }
    }
    // A request serde_json reads is never taken for garbage.
    if let Ok(Value::Object(_) | Value::Array(_)) = serde_json::from_slice::<Value>(stream) {
        assert_eq!(detect(stream), Detected::Is(Protocol::Json));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pad, data)) = data.split_first() else {
        return;
    };
    let (plan, stream) = split_plan(data);
    let whole = scan(&[(0, stream)]);
    let split = scan(&chunks(plan, stream));
    assert_eq!(
        whole, split,
        "the values found depend on how the stream is split"
    );
    let mut byte_by_byte = Vec::new();
    if stream.len() <= 256 {
        byte_by_byte = stream.chunks(1).map(|c| (0, c)).collect();
    }
    if !byte_by_byte.is_empty() {
        assert_eq!(whole, scan(&byte_by_byte), "byte by byte");
    }
    agrees_with_serde(stream, &whole);

    check_detect(stream);
    check_content_length(stream);
    if pad > 0 {
        // Up to 255 * 4 lines of 10 bytes ahead of the stream: around MAX_HEADERS.
        let mut padded = b"X-Pad: y\r\n".repeat(usize::from(pad) * 4);
        padded.extend_from_slice(stream);
        check_content_length(&padded);
    }
});
