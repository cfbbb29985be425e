//! A daemon whose workers write to their stdout and stderr, for the log tests and the log
//! benchmark.
//!
//! ```text
//! cargo run --example log_daemon -- -f --workers 2 --mode count --batch 10
//! ```
//!
//! Each worker `w0`, `w1`... does what `--mode` says:
//! - `hello`: once at spinup, `NAME hello stdout` on stdout, `NAME hello stderr` on stderr,
//!   and `NAME hello log` through its own logger; then idles.
//! - `count`: each tick, `--batch` numbered lines `NAME 00000001 ...` on stdout (the number
//!   goes on across ticks), until `--lines` lines in all (0: without end).
//! - `partial`: writes `NAME partial` without a newline and ends cleanly (not restarted).
//! - `crash`: writes `NAME crashing`, then aborts (restarted by the policy).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use daimon::worker::{Restart, Spec, Worker, WorkerContext};
use daimon::{Config, Daemon, SetupError};

/// Options of the log daemon.
#[derive(FromArgs)]
struct Args {
    /// how many workers (default 1)
    #[argh(option, default = "1")]
    workers: usize,
    /// what the workers write: hello, count, partial, crash (default hello)
    #[argh(option, default = "String::from(\"hello\")")]
    mode: String,
    /// lines per tick in count mode (default 1)
    #[argh(option, default = "1")]
    batch: u64,
    /// lines in all in count mode, 0 without end (default 0)
    #[argh(option, default = "0")]
    lines: u64,
    /// seconds between two ticks (default 0.01)
    #[argh(option, default = "0.01")]
    looptime: f64,
}

struct Writer {
    mode: String,
    batch: u64,
    lines: u64,
    written: u64,
}

impl Worker for Writer {
    fn spinup(&mut self, ctx: &mut WorkerContext<'_, Self>) -> Result<(), SetupError> {
        let name = ctx.name().to_owned();
        match self.mode.as_str() {
            "hello" => {
                println!("{name} hello stdout");
                eprintln!("{name} hello stderr");
                daimon::slog::info!(ctx.logger(), "{} hello log", name);
            }
            "partial" => {
                print!("{name} partial");
                ctx.stop();
            }
            "crash" => {
                println!("{name} crashing");
                std::process::abort();
            }
            _ => {}
        }
        Ok(())
    }

    fn tick(&mut self, ctx: &mut WorkerContext<'_, Self>) {
        if self.mode != "count" || (self.lines > 0 && self.written >= self.lines) {
            return;
        }
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
        for _ in 0..self.batch {
            if self.lines > 0 && self.written >= self.lines {
                break;
            }
            self.written += 1;
            let _ = writeln!(
                out,
                "{} {:08} the quick brown fox jumps over the lazy dog",
                ctx.name(),
                self.written
            );
        }
        let _ = out.flush();
    }
}

fn main() -> ExitCode {
    let mut config = Config::default();
    config.description = "Log Daemon".into();
    Daemon::new(config)
        .setup(|daemon| {
            let args = daemon.args::<Args>().expect("parsed by init_with");
            let (workers, mode, batch, lines) =
                (args.workers, args.mode.clone(), args.batch, args.lines);
            let looptime = Duration::try_from_secs_f64(args.looptime)?;
            let mut spec = Spec::every(looptime);
            if mode == "partial" {
                spec = spec.restart(Restart::Temporary);
            }
            for i in 0..workers {
                let writer = Writer {
                    mode: mode.clone(),
                    batch,
                    lines,
                    written: 0,
                };
                daemon
                    .workers()
                    .install(&format!("w{i}"), writer, spec.clone())?;
            }
            Ok(())
        })
        .init_with::<Args>()
}
