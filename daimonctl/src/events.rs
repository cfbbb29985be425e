//! `daimonctl events`: the daemon's events as they happen, one line each.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use daimon::Error;
use daimon::client::{Client, Event};
use serde_json::{Value, json};

use crate::args::EventsArgs;
use crate::log::reader_gone;
use crate::{Failure, in_call};

/// How long one wait for an event lasts before the loop looks at Ctrl-C and the output.
const TURN: Duration = Duration::from_millis(200);

/// Subscribes to the patterns (all events by default) and prints each event until Ctrl-C
/// (SIGINT) or SIGTERM, or the output is closed (exit 0), or the daemon goes away (an
/// error, exit 1).
pub(crate) fn run(client: &mut Client, args: &EventsArgs, json: bool) -> Result<(), Failure> {
    let stop = stop_flag()?;
    let patterns: Vec<&str> = if args.patterns.is_empty() {
        vec!["*"]
    } else {
        args.patterns.iter().map(String::as_str).collect()
    };
    client
        .subscribe(&patterns)
        .map_err(|e| in_call("daemon.subscribe", e))?;
    let mut out = io::stdout().lock();
    while !stop.load(Ordering::Relaxed) {
        match client.next_event(TURN) {
            Ok(Some(event)) => {
                let line = if json {
                    event_json(&event).to_string()
                } else {
                    event_line(&event)
                };
                match writeln!(out, "{line}").and_then(|()| out.flush()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
                    Err(e) => return Err(Error::Io(e).into()),
                }
            }
            Ok(None) if reader_gone(0) => return Ok(()),
            Ok(None) => {}
            Err(e) => return Err(gone(e)),
        }
    }
    Ok(())
}

/// Why the stream ended, for people: the daemon went away, or another error.
pub(crate) fn gone(e: Error) -> Failure {
    match &e {
        Error::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => Failure {
            usage: false,
            message: format!("the daemon went away: {e}"),
        },
        _ => e.into(),
    }
}

/// A flag raised by SIGINT (Ctrl-C) and SIGTERM, so the command ends cleanly.
pub(crate) fn stop_flag() -> Result<Arc<AtomicBool>, Failure> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&flag)).map_err(Error::Io)?;
    }
    Ok(flag)
}

/// An event as one JSON object.
pub(crate) fn event_json(event: &Event) -> Value {
    json!({
        "subscription": event.subscription,
        "name": event.name,
        "time": event.time,
        "data": event.data,
    })
}

/// An event as `HH:MM:SS.mmm NAME KEY=VALUE...` (UTC; `worker` first, then the other keys
/// of its data; data that is not an object as `data=VALUE`).
pub(crate) fn event_line(event: &Event) -> String {
    let mut line = format!("{} {}", clock(event.time), event.name);
    match &event.data {
        Value::Null => {}
        Value::Object(map) => {
            let worker = map.get_key_value("worker");
            for (key, value) in worker
                .into_iter()
                .chain(map.iter().filter(|(k, _)| *k != "worker"))
            {
                line.push_str(&format!(" {key}={}", field(value)));
            }
        }
        other => line.push_str(&format!(" data={}", field(other))),
    }
    line
}

/// A value in a `KEY=VALUE` field: a plain string as it is, one that would read
/// ambiguously (empty, with spaces, quotes or `=`) as JSON, anything else as compact JSON.
fn field(value: &Value) -> String {
    match value {
        Value::String(s)
            if !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '=')) =>
        {
            s.clone()
        }
        other => other.to_string(),
    }
}

/// Seconds since the epoch as the time of day in UTC, `HH:MM:SS.mmm`.
pub(crate) fn clock(time: f64) -> String {
    let millis = (time.max(0.0) * 1000.0) as u64;
    let (s, ms) = (millis / 1000, millis % 1000);
    format!(
        "{:02}:{:02}:{:02}.{ms:03}",
        s / 3600 % 24,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, data: Value) -> Event {
        Event {
            subscription: Some(1),
            name: name.to_owned(),
            time: 1764720000.123456 + 3723.0, // 01:02:03.123 UTC
            data,
        }
    }

    #[test]
    fn events_read_as_time_name_and_fields() {
        let e = event(
            "daemon.worker.exited",
            json!({"pid": 42, "code": 0, "signal": null, "worker": "w0", "clean": true}),
        );
        assert_eq!(
            event_line(&e),
            "01:02:03.123 daemon.worker.exited worker=w0 clean=true code=0 pid=42 signal=null"
        );
        let e = event(
            "daemon.log.w0",
            json!({"worker": "w0", "stream": "stdout", "line": "hello there"}),
        );
        assert_eq!(
            event_line(&e),
            "01:02:03.123 daemon.log.w0 worker=w0 line=\"hello there\" stream=stdout"
        );
        assert_eq!(
            event_line(&event("daemon.start", json!({}))),
            "01:02:03.123 daemon.start"
        );
        assert_eq!(event_line(&event("x", Value::Null)), "01:02:03.123 x");
        assert_eq!(event_line(&event("t", json!(5))), "01:02:03.123 t data=5");
        let e = event(
            "m",
            json!({"payload": {"a": [1]}, "empty": "", "eq": "a=b"}),
        );
        assert_eq!(
            event_line(&e),
            "01:02:03.123 m empty=\"\" eq=\"a=b\" payload={\"a\":[1]}"
        );
        assert_eq!(clock(0.0), "00:00:00.000");
        assert_eq!(clock(86_399.999_6), "23:59:59.999");
    }

    #[test]
    fn events_as_json_keep_every_field() {
        let e = event("daemon.worker.started", json!({"worker": "w0", "pid": 7}));
        let v = event_json(&e);
        assert_eq!(v["name"], "daemon.worker.started");
        assert_eq!(v["subscription"], 1);
        assert_eq!(v["data"], json!({"worker": "w0", "pid": 7}));
        assert_eq!(v["time"].as_f64(), Some(e.time));
    }
}
