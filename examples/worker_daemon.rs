//! A daemon with many small workers, for tests and benchmarks of supervision.
//!
//! ```text
//! cargo run --example worker_daemon -- -f --workers 50 --looptime 0.1 --dir /tmp/w
//! ```
//!
//! Each worker `w0`, `w1`... ticks every looptime; with `--dir`, it writes `<name>.up` on
//! spinup and `<name>.down` on spindown. Commands: `crash` (aborts), `scribble` (writes an
//! undecodable frame into its channel), `scribble-header` (overwrites the channel's header),
//! `hang` (never returns; with `--hang-timeout` the watchdog kills and restarts it).
//! With `--once`, the workers are not `forever`: a crash stops the daemon.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use daimon::bus::{Event, PostAction, WorkerEvent};
use daimon::worker::{Worker, WorkerContext};
use daimon::{Config, Daemon, SetupError};

/// Options of the worker daemon.
#[derive(FromArgs)]
struct Args {
    /// how many workers (default 1)
    #[argh(option, default = "1")]
    workers: usize,
    /// seconds between two ticks (default 0.1)
    #[argh(option, default = "0.1")]
    looptime: f64,
    /// workers are not forever: a crash stops the daemon
    #[argh(switch)]
    once: bool,
    /// where workers leave NAME.up and NAME.down marks
    #[argh(option)]
    dir: Option<PathBuf>,
    /// kill and restart a worker whose heartbeat stalls this many seconds
    #[argh(option)]
    hang_timeout: Option<f64>,
    /// the watchdog's crash-counting window in seconds (default 60)
    #[argh(option)]
    restart_window: Option<f64>,
}

struct TestWorker {
    name: String,
    dir: Option<PathBuf>,
    ticks: u64,
}

impl TestWorker {
    fn mark(&self, suffix: &str) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::write(
                dir.join(format!("{}.{suffix}", self.name)),
                self.ticks.to_string(),
            );
        }
    }
}

impl Worker for TestWorker {
    fn name(&self) -> &str {
        &self.name
    }

    fn spinup(&mut self, ctx: &mut WorkerContext<'_>) -> Result<(), SetupError> {
        self.mark("up");
        ctx.bus().on("daemon.worker.*", |event: &dyn Event, ctx| {
            let what = event
                .downcast_ref::<WorkerEvent>()
                .map(|e| e.what().to_owned());
            match what.as_deref() {
                Some("crash") => std::process::abort(),
                Some("hang") => loop {
                    std::thread::park();
                },
                Some("scribble") => ctx
                    .host::<daimon::worker::WorkerHost>()
                    .map(|h| h.scribble_on_channel(false))
                    .unwrap_or(()),
                Some("scribble-header") => ctx
                    .host::<daimon::worker::WorkerHost>()
                    .map(|h| h.scribble_on_channel(true))
                    .unwrap_or(()),
                _ => {}
            }
            PostAction::Continue
        })?;
        Ok(())
    }

    fn tick(&mut self, _ctx: &mut WorkerContext<'_>) {
        self.ticks += 1;
    }

    fn spindown(&mut self, _ctx: &mut WorkerContext<'_>) {
        self.mark("down");
    }
}

fn main() -> ExitCode {
    let mut config = Config::default();
    config.description = "Worker Daemon".into();
    config.shutdowntimeout = Duration::from_secs(5);
    Daemon::new(config)
        .setup(|daemon| {
            let args = daemon.args::<Args>().expect("parsed by init_with");
            let mut watchdog = daimon_listeners::Watchdog::default();
            if let Some(secs) = args.hang_timeout {
                watchdog = watchdog.hang_timeout(Duration::try_from_secs_f64(secs)?);
            }
            if let Some(secs) = args.restart_window {
                watchdog = watchdog.window(Duration::try_from_secs_f64(secs)?);
            }
            daimon_listeners::install_with(daemon, watchdog)?;
            let args = daemon.args::<Args>().expect("parsed by init_with");
            let looptime = Duration::try_from_secs_f64(args.looptime)?;
            let dir = args.dir.as_ref().map(|d| daemon.launch_dir().join(d));
            let (count, forever) = (args.workers, !args.once);
            for i in 0..count {
                let worker = TestWorker {
                    name: format!("w{i}"),
                    dir: dir.clone(),
                    ticks: 0,
                };
                daemon.workers().install(worker, looptime, forever)?;
            }
            Ok(())
        })
        .init_with::<Args>()
}
