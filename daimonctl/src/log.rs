//! `daimonctl log`: a worker's or the daemon's last lines, and following new ones.

use std::io::{self, Write};
use std::os::fd::AsFd;

use daimon::Error;
use daimon::client::Client;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde_json::{Value, json};

use crate::args::LogArgs;
use crate::show::log_line;
use crate::{Failure, in_call};

/// How long to wait between two calls while following.
const FOLLOW_EVERY_MS: u16 = 200;

/// How many lines to ask for per call while following: a burst larger than this is read
/// in several calls without waiting between them.
const FOLLOW_BATCH: u32 = 1000;

/// Prints the last `-n` lines, then with `-f` polls for the lines after them until the
/// output is closed (`| head` ends it: a write fails with EPIPE, or the pipe reports its
/// reader gone while nothing new came) or the daemon goes away (an error, exit 1).
/// Ctrl-C ends it by the default action of SIGINT: there is nothing to clean up.
pub(crate) fn run(client: &mut Client, args: &LogArgs, json: bool) -> Result<(), Failure> {
    let method = if args.name.is_some() {
        "worker.log"
    } else {
        "daemon.log"
    };
    let mut call = |lines: u32, after: Option<u64>| {
        let mut params: Vec<Value> = args.name.iter().map(|n| json!(n)).collect();
        params.push(json!(lines));
        params.extend(after.map(|a| json!(a)));
        client
            .call(method, Value::Array(params))
            .map_err(|e| in_call(method, e))
    };
    let mut out = io::stdout().lock();
    let first = call(args.lines, None)?;
    if print(&mut out, &first, json)?.is_closed() {
        return Ok(());
    }
    if !args.follow {
        return Ok(());
    }
    let mut next = first["next"].as_u64().unwrap_or(0);
    loop {
        if reader_gone(FOLLOW_EVERY_MS) {
            return Ok(());
        }
        // Read a burst to its end before waiting again.
        loop {
            let reply = call(FOLLOW_BATCH, Some(next))?;
            let lines = reply["lines"].as_array().map_or(0, Vec::len);
            if let Some(first) = reply["lines"][0]["seq"].as_u64()
                && first > next + 1
            {
                // The ring moved on faster than we polled: say so, in the stream's order.
                eprintln!("daimonctl: {} lines missed", first - next - 1);
            }
            if print(&mut out, &reply, json)?.is_closed() {
                return Ok(());
            }
            next = reply["next"].as_u64().unwrap_or(next);
            if lines < FOLLOW_BATCH as usize {
                break;
            }
        }
    }
}

/// Whether the output is still there after printing.
enum Printed {
    Open,
    Closed,
}

impl Printed {
    fn is_closed(&self) -> bool {
        matches!(self, Printed::Closed)
    }
}

/// Prints the reply's lines, flushed; a closed output (EPIPE) is not an error.
fn print(out: &mut impl Write, reply: &Value, json: bool) -> Result<Printed, Failure> {
    let mut text = String::new();
    for line in reply["lines"].as_array().into_iter().flatten() {
        if json {
            text.push_str(&line.to_string());
        } else {
            text.push_str(&log_line(line));
        }
        text.push('\n');
    }
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(Printed::Open),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Printed::Closed),
        Err(e) => Err(Error::Io(e).into()),
    }
}

/// Waits up to `ms` for standard output to report an error: a pipe whose reader is gone
/// does (POLLERR), a terminal or a file does not, so this is the pause between two calls.
pub(crate) fn reader_gone(ms: u16) -> bool {
    let stdout = io::stdout();
    let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(n) if n > 0 => fds[0].revents().is_some_and(|r| {
            r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL)
        }),
        _ => false,
    }
}
