//! daimon's benchmark harness: real daemons built from the crate, each figure next to the
//! floor it cannot beat, measured in the same run.
//!
//! ```text
//! scripts/bench            # the full run (about 2 minutes on 2 cores)
//! scripts/bench --quick    # a smoke run (under 30 s)
//! scripts/bench --quick channel   # only these groups: channel bus rpc calls system scale logs events
//! scripts/bench --only rpc,scale   # the same, comma-separated
//! ```
//!
//! Prints a table and writes `target/bench/results.json`: a list of
//! `{"name", "value", "unit", "baseline", "ratio"}` rows (`baseline` and `ratio` are null
//! where a figure has no floor). Timings are repeated: medians, and p99 for latencies.

mod bus;
mod calls;
mod channel;
mod events;
mod logs;
mod procs;
mod rpc;
mod scale;
mod system;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How hard to work.
#[derive(Clone, Copy)]
pub struct Scale {
    /// `--quick`: fewer samples, shorter windows.
    pub quick: bool,
}

impl Scale {
    /// `full` in a full run, `quick` in a quick one.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// One figure.
pub struct Row {
    name: String,
    value: f64,
    unit: &'static str,
    baseline: Option<f64>,
}

/// The figures measured so far.
#[derive(Default)]
pub struct Results {
    rows: Vec<Row>,
}

impl Results {
    /// A figure with no floor.
    pub fn add(&mut self, name: &str, value: f64, unit: &'static str) {
        self.push(name, value, unit, None);
    }

    /// A figure and the floor it is compared with.
    pub fn vs(&mut self, name: &str, value: f64, unit: &'static str, baseline: f64) {
        self.push(name, value, unit, Some(baseline));
    }

    fn push(&mut self, name: &str, value: f64, unit: &'static str, baseline: Option<f64>) {
        let row = Row {
            name: name.to_owned(),
            value,
            unit,
            baseline,
        };
        println!("{}", line(&row));
        self.rows.push(row);
    }

    fn to_json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|r| {
                    json!({
                        "name": r.name, "value": round(r.value), "unit": r.unit,
                        "baseline": r.baseline.map(round),
                        "ratio": r.baseline.filter(|b| *b != 0.0).map(|b| round(r.value / b)),
                    })
                })
                .collect(),
        )
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn line(r: &Row) -> String {
    let (baseline, ratio) = match r.baseline {
        Some(b) if b != 0.0 => (format!("{b:.2}"), format!("{:.2}x", r.value / b)),
        _ => ("-".into(), "-".into()),
    };
    format!(
        "{:<38} {:>14.2} {:<10} {:>12} {:>8}",
        r.name, r.value, r.unit, baseline, ratio
    )
}

/// The p-th percentile (0..=100) of `samples`, sorted in place.
pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() - 1) as f64 * p / 100.0).round() as usize;
    samples[i]
}

/// Microseconds.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // The scale group's floor, in a fresh process of this binary (see `scale::floor`).
    if let Some(n) = scale::floor_fleet_arg() {
        scale::floor_fleet(n);
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = Scale { quick };
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .flat_map(|a| a.split(',').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let on = |group: &str| only.is_empty() || only.iter().any(|g| g == group);
    procs::raise_fd_limit();
    let started = Instant::now();
    println!(
        "{:<38} {:>14} {:<10} {:>12} {:>8}",
        "figure", "value", "unit", "baseline", "ratio"
    );
    let mut results = Results::default();
    // Forks first, while this process has one thread.
    // (`calls` compares with the channel's round trip.)
    let channel = (on("channel") || on("calls")).then(|| channel::run(scale, &mut results));
    if on("bus") {
        bus::run(scale, &mut results);
    }
    if on("rpc") {
        rpc::run(scale, &mut results);
    }
    if let Some(channel) = channel.filter(|_| on("calls")) {
        calls::run(scale, &mut results, channel);
    }
    if on("system") {
        system::run(scale, &mut results);
    }
    if on("scale") {
        scale::run(scale, &mut results);
    }
    if on("logs") {
        logs::run(scale, &mut results);
    }
    if on("events") {
        events::run(scale, &mut results);
    }
    let dir = procs::target_dir().join("bench");
    std::fs::create_dir_all(&dir).expect("creating target/bench");
    let path: PathBuf = dir.join("results.json");
    let text = serde_json::to_string_pretty(&results.to_json()).expect("JSON");
    std::fs::write(&path, text + "\n").expect("writing results.json");
    println!(
        "\n{} figures in {:.1} s; written to {}",
        results.rows.len(),
        started.elapsed().as_secs_f64(),
        path.display()
    );
}
