//! What `top` knows of the daemon, updated from its replies, its events and `/proc`, and
//! turned into the text of the screen ([`View`]); no drawing here, so it is tested alone.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use daimon::client::Event;
use serde_json::Value;

use super::procfs::Reading;
use crate::show::{raw, uptime};
use crate::wait::state_of;

/// How long after a worker event `worker.list` is read again: a burst of events (a restart
/// is three) costs one call.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(150);

/// The longest last line kept per worker, in characters.
const MAX_LINE: usize = 300;

/// The table's columns.
pub(crate) const COLUMNS: [&str; 8] = [
    "NAME",
    "STATE",
    "PID",
    "RESTARTS",
    "UPTIME",
    "CPU%",
    "RSS",
    "LAST LINE",
];

/// A worker, as `worker.list` last told.
#[derive(Debug, Clone)]
struct Worker {
    name: String,
    state: String,
    pid: Option<i64>,
    restarts: String,
    /// Its uptime in seconds when the list was read, and when that was.
    uptime: Option<(f64, Instant)>,
}

/// The CPU and memory of one process, from two readings of `/proc`.
#[derive(Debug, Clone, Copy)]
struct Usage {
    last: Reading,
    at: Instant,
    /// CPU use between the last two readings, in % of one CPU.
    cpu: Option<f64>,
}

/// The state of the view.
#[derive(Debug)]
pub(crate) struct State {
    title: String,
    pid: Option<i64>,
    uptime: Option<(f64, Instant)>,
    connections: String,
    workers: Vec<Worker>,
    last_lines: HashMap<String, String>,
    usage: HashMap<i64, Usage>,
    /// When `worker.list` is to be read again, after a worker event.
    list_due: Option<Instant>,
    /// When `daemon.status` is to be read again, after a client came or went.
    status_due: Option<Instant>,
    /// Events the daemon (or the client) dropped.
    dropped: u64,
    /// A note for the footer: how the view is fed.
    pub(crate) note: String,
}

/// The text of the screen.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct View {
    /// `app 1.0 (daimon 0.1.0)`.
    pub(crate) title: String,
    /// `pid 42  up 3m 07s  connections 2  workers 2`.
    pub(crate) summary: String,
    /// One row of [`COLUMNS`] per worker.
    pub(crate) rows: Vec<Vec<String>>,
    /// The keys, and how the view is fed.
    pub(crate) footer: String,
}

impl State {
    pub(crate) fn new() -> State {
        State {
            title: "daimon".to_owned(),
            pid: None,
            uptime: None,
            connections: "-".to_owned(),
            workers: Vec::new(),
            last_lines: HashMap::new(),
            usage: HashMap::new(),
            list_due: None,
            status_due: None,
            dropped: 0,
            note: String::new(),
        }
    }

    /// Takes in `daemon.status`.
    pub(crate) fn set_status(&mut self, status: &Value, now: Instant) {
        let daimon = status["daimon"]["version"]
            .as_str()
            .or(status["version"].as_str())
            .unwrap_or("?");
        self.title = match &status["app"] {
            Value::Object(app) => {
                let name = app.get("name").and_then(Value::as_str).unwrap_or("?");
                match app.get("version").and_then(Value::as_str) {
                    Some(v) => format!("{name} {v} (daimon {daimon})"),
                    None => format!("{name} (daimon {daimon})"),
                }
            }
            _ => format!("daimon {daimon}"),
        };
        self.pid = status["pid"].as_i64();
        self.uptime = status["uptime"].as_f64().map(|u| (u, now));
        self.connections = raw(&status["connections"]);
        self.status_due = None;
    }

    /// Takes in `worker.list`; forgets the usage of processes no longer listed.
    pub(crate) fn set_workers(&mut self, list: &Value, now: Instant) {
        self.workers = list
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| Worker {
                name: raw(&w["name"]),
                state: state_of(w).to_owned(),
                pid: w["pid"].as_i64(),
                restarts: raw(&w["restarts"]),
                uptime: w["uptime"].as_f64().map(|u| (u, now)),
            })
            .collect();
        let pids = self.pids();
        self.usage.retain(|pid, _| pids.contains(pid));
        self.list_due = None;
    }

    /// Sets a worker's last output line (from `worker.log` at start).
    pub(crate) fn set_last_line(&mut self, worker: &str, line: &str) {
        let line: String = line
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MAX_LINE)
            .collect();
        self.last_lines.insert(worker.to_owned(), line);
    }

    /// Takes in an event; returns whether the screen changed.
    pub(crate) fn on_event(&mut self, event: &Event, now: Instant) -> bool {
        let name = event.name.as_str();
        if name.starts_with("daemon.log.") {
            if let (Some(worker), Some(line)) =
                (event.data["worker"].as_str(), event.data["line"].as_str())
            {
                self.set_last_line(worker, line);
                return true;
            }
            false
        } else if name.starts_with("daemon.worker.") {
            self.list_due.get_or_insert(now + DEBOUNCE);
            false
        } else if name.starts_with("daemon.socket.client.") {
            self.status_due.get_or_insert(now + DEBOUNCE);
            false
        } else if name == "daemon.events.dropped" {
            self.dropped += event.data["dropped"].as_u64().unwrap_or(0);
            // Worker and client events may be among those lost.
            self.list_due.get_or_insert(now);
            self.status_due.get_or_insert(now);
            true
        } else {
            false
        }
    }

    /// Whether `worker.list` is to be read now.
    pub(crate) fn list_due(&self, now: Instant) -> bool {
        self.list_due.is_some_and(|due| due <= now)
    }

    /// Whether `daemon.status` is to be read now.
    pub(crate) fn status_due(&self, now: Instant) -> bool {
        self.status_due.is_some_and(|due| due <= now)
    }

    /// The next moment a list or the status is to be read, if any.
    pub(crate) fn due_at(&self) -> Option<Instant> {
        [self.list_due, self.status_due].into_iter().flatten().min()
    }

    /// The pids of the daemon and its workers, to read in `/proc`.
    pub(crate) fn pids(&self) -> Vec<i64> {
        self.pid
            .into_iter()
            .chain(self.workers.iter().filter_map(|w| w.pid))
            .collect()
    }

    /// Takes in a reading of `pid` (`None`: no such process here) at `now`; `hz` is the
    /// clock ticks per second.
    pub(crate) fn sample(&mut self, pid: i64, reading: Option<Reading>, now: Instant, hz: f64) {
        let Some(reading) = reading else {
            self.usage.remove(&pid);
            return;
        };
        let cpu = self.usage.get(&pid).and_then(|u| {
            let secs = now.duration_since(u.at).as_secs_f64();
            let ticks = reading.ticks.checked_sub(u.last.ticks)?;
            (secs > 0.0).then(|| ticks as f64 / hz / secs * 100.0)
        });
        self.usage.insert(
            pid,
            Usage {
                last: reading,
                at: now,
                cpu,
            },
        );
    }

    /// The screen's text at `now`.
    pub(crate) fn view(&self, now: Instant) -> View {
        let since = |at: Option<(f64, Instant)>| {
            at.and_then(|(secs, then)| {
                Duration::try_from_secs_f64(secs)
                    .ok()
                    .map(|d| uptime(d + now.saturating_duration_since(then)))
            })
            .unwrap_or_else(|| "-".to_owned())
        };
        let mut summary = vec![
            format!(
                "pid {}",
                self.pid.map_or_else(|| "-".to_owned(), |p| p.to_string())
            ),
            format!("up {}", since(self.uptime)),
            format!("connections {}", self.connections),
            format!("workers {}", self.workers.len()),
        ];
        if let Some(usage) = self.pid.and_then(|p| self.usage.get(&p)) {
            summary.push(format!("cpu {}", cpu(usage)));
            summary.push(format!("rss {}", rss(usage)));
        }
        if self.dropped > 0 {
            summary.push(format!("events dropped {}", self.dropped));
        }
        let rows = self
            .workers
            .iter()
            .map(|w| {
                let usage = w.pid.and_then(|p| self.usage.get(&p));
                let running = w.pid.is_some();
                vec![
                    w.name.clone(),
                    w.state.clone(),
                    w.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                    w.restarts.clone(),
                    if running {
                        since(w.uptime)
                    } else {
                        "-".to_owned()
                    },
                    usage.map_or_else(|| "-".to_owned(), cpu),
                    usage.map_or_else(|| "-".to_owned(), rss),
                    self.last_lines.get(&w.name).cloned().unwrap_or_default(),
                ]
            })
            .collect();
        let mut footer = "q quit".to_owned();
        if !self.note.is_empty() {
            footer.push_str("  ");
            footer.push_str(&self.note);
        }
        View {
            title: self.title.clone(),
            summary: summary.join("  "),
            rows,
            footer,
        }
    }
}

fn cpu(usage: &Usage) -> String {
    usage
        .cpu
        .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}"))
}

/// Resident memory as `812K`, `12.3M`, `1.2G`.
fn rss(usage: &Usage) -> String {
    match usage.last.rss_kib {
        None => "-".to_owned(),
        Some(k) if k < 1024 => format!("{k}K"),
        Some(k) if k < 1024 * 1024 => format!("{:.1}M", k as f64 / 1024.0),
        Some(k) => format!("{:.1}G", k as f64 / (1024.0 * 1024.0)),
    }
}

#[cfg(test)]
mod tests;
