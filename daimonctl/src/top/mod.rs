//! `daimonctl top` (or `watch`): a live view of the daemon and its workers in the
//! terminal, fed by the daemon's events.
//!
//! It subscribes to `daemon.worker.*` (a worker event has `worker.list` read again, once per
//! burst: see [`state::DEBOUNCE`]), `daemon.log.*` (each worker's last line) and
//! `daemon.socket.client.*` (a client coming or going has `daemon.status` read again, for
//! its connections), reads the local `/proc` figures once a second, and draws only when
//! something changed. A daemon without subscriptions is polled once a second. The
//! terminal is restored however it ends: `q`, Esc, Ctrl-C, SIGTERM, an error, a panic.

use std::io::{self, IsTerminal};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event as Input, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use daimon::Error;
use daimon::client::Client;
use ratatui::DefaultTerminal;
use serde_json::{Value, json};

use crate::events::{gone, stop_flag};
use crate::{Failure, in_call};
use state::State;

mod draw;
mod procfs;
mod state;

/// How often the status and the `/proc` figures are read.
const TICK: Duration = Duration::from_secs(1);

/// The longest wait for an event before the keyboard is looked at.
const TURN: Duration = Duration::from_millis(50);

/// The most events taken in per turn, so a flood cannot keep the keys unread.
const EVENTS_PER_TURN: usize = 512;

/// Runs the view until the user quits.
pub(crate) fn run(mut client: Client) -> Result<(), Failure> {
    if !io::stdout().is_terminal() {
        return Err(Error::Usage(
            "top needs a terminal; in scripts use `daimonctl status` or `daimonctl events`".into(),
        )
        .into());
    }
    let stop = stop_flag()?;
    let patterns = ["daemon.worker.*", "daemon.log.*", "daemon.socket.client.*"];
    let subscribed = match client.subscribe(&patterns) {
        Ok(_) => true,
        Err(Error::Rpc { code: -32601, .. }) => false,
        Err(e) => return Err(in_call("daemon.subscribe", e)),
    };
    let mut state = State::new();
    state.note = if subscribed {
        "live (events)".to_owned()
    } else {
        "polling once a second (the daemon has no daemon.subscribe)".to_owned()
    };
    let now = Instant::now();
    state.set_status(&call(&mut client, "daemon.status", Value::Null)?, now);
    state.set_workers(&call(&mut client, "worker.list", Value::Null)?, now);
    last_lines(&mut client, &mut state)?;
    let hz = procfs::ticks_per_second();

    let mut screen = Screen::enter()?;
    let mut next_tick = Instant::now();
    let mut dirty = true;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_tick {
            next_tick = now + TICK;
            if !subscribed {
                state.set_status(&call(&mut client, "daemon.status", Value::Null)?, now);
                state.set_workers(&call(&mut client, "worker.list", Value::Null)?, now);
            }
            for pid in state.pids() {
                state.sample(pid, procfs::read(pid), now, hz);
            }
            dirty = true;
        }
        if state.list_due(now) {
            state.set_workers(&call(&mut client, "worker.list", Value::Null)?, now);
            dirty = true;
        }
        if state.status_due(now) {
            state.set_status(&call(&mut client, "daemon.status", Value::Null)?, now);
            dirty = true;
        }
        if dirty {
            let view = state.view(now);
            screen
                .terminal
                .draw(|frame| draw::draw(frame, &view))
                .map_err(Error::Io)?;
            dirty = false;
        }
        while event::poll(Duration::ZERO).map_err(Error::Io)? {
            match event::read().map_err(Error::Io)? {
                Input::Key(key) if quits(&key) => return Ok(()),
                Input::Resize(..) => dirty = true,
                _ => {}
            }
        }
        let until = [Some(next_tick), state.due_at(), Some(now + TURN)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + TURN);
        let wait = until.saturating_duration_since(Instant::now());
        if subscribed {
            let mut wait = wait;
            for _ in 0..EVENTS_PER_TURN {
                match client.next_event(wait).map_err(gone)? {
                    Some(event) => dirty |= state.on_event(&event, Instant::now()),
                    None => break,
                }
                wait = Duration::ZERO;
            }
        } else if event::poll(wait).map_err(Error::Io)? {
            // A key: read at the top of the loop.
        }
    }
    Ok(())
}

/// Whether the key ends the view: `q`, Esc, Ctrl-C (raw mode turns it into a key).
fn quits(key: &KeyEvent) -> bool {
    key.kind != KeyEventKind::Release
        && match key.code {
            KeyCode::Char('q' | 'Q') | KeyCode::Esc => true,
            KeyCode::Char('c') => key.modifiers.contains(KeyModifiers::CONTROL),
            _ => false,
        }
}

fn call(client: &mut Client, method: &str, params: Value) -> Result<Value, Failure> {
    client.call(method, params).map_err(|e| match e {
        e @ Error::Io(_) => gone(e),
        e => in_call(method, e),
    })
}

/// Each worker's last output line, from `worker.log`, until the events bring newer ones.
fn last_lines(client: &mut Client, state: &mut State) -> Result<(), Failure> {
    let list = call(client, "worker.list", Value::Null)?;
    for name in list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["name"].as_str())
    {
        // A daemon without worker.log: no lines until the events bring them.
        let Ok(log) = client.call("worker.log", json!([name, 1])) else {
            continue;
        };
        if let Some(text) = log["lines"][0]["text"].as_str() {
            state.set_last_line(name, text);
        }
    }
    Ok(())
}

/// The terminal in raw mode on the alternate screen, given back as it was on drop; a panic
/// gives it back too (ratatui's hook), before its message is printed.
struct Screen {
    terminal: DefaultTerminal,
}

impl Screen {
    fn enter() -> Result<Screen, Failure> {
        match ratatui::try_init() {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                ratatui::restore();
                Err(Error::Io(io::Error::new(
                    e.kind(),
                    format!("setting up the terminal: {e}"),
                ))
                .into())
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = self.terminal.show_cursor();
        ratatui::restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_esc_and_ctrl_c_quit() {
        let key = |code, modifiers| KeyEvent::new(code, modifiers);
        assert!(quits(&key(KeyCode::Char('q'), KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Esc, KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(!quits(&key(KeyCode::Char('c'), KeyModifiers::NONE)));
        assert!(!quits(&key(KeyCode::Char('x'), KeyModifiers::NONE)));
    }
}
