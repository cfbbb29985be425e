//! The ancestor's CopyDaemon: a worker named `handyman` (looptime 10 s, forever) copies
//! `test.txt` to `copy_test.txt` in a directory it watches; `handyman.changename` makes it
//! write `copy_test_2.txt` instead, through the seed's ChangeNameListener; on spindown it
//! removes its copy.
//!
//! ```text
//! mkdir -p tmp && echo hello > tmp/test.txt
//! cargo run --example copy_daemon -- -f --dir tmp --looptime 1
//! cargo run --bin daimonctl -- workers
//! cargo run --bin daimonctl -- call handyman.changename
//! ```

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use daimon::bus::{Context, Event, Listener, PostAction};
use daimon::rpc::{Method, Type};
use daimon::slog::{error, info};
use daimon::worker::{Worker, WorkerContext, WorkerHost};
use daimon::{Config, Daemon, DaemonHost, SetupError};

/// Options of the copy daemon.
#[derive(FromArgs)]
struct Args {
    /// the directory to watch (default: tmp)
    #[argh(option, default = "PathBuf::from(\"tmp\")")]
    dir: PathBuf,
    /// seconds between two loops of the worker (default: 10)
    #[argh(option, default = "10.0")]
    looptime: f64,
}

struct CopyWorker {
    path: PathBuf,
    file: String,
    copy: String,
}

impl CopyWorker {
    fn new(path: PathBuf) -> CopyWorker {
        CopyWorker {
            path,
            file: "test.txt".into(),
            copy: "copy_test.txt".into(),
        }
    }

    /// Invoked by the listener of `daemon.worker.changename`.
    fn change_name(&mut self) {
        self.copy = "copy_test_2.txt".into();
    }
}

impl Worker for CopyWorker {
    fn spinup(&mut self, ctx: &mut WorkerContext<'_, Self>) -> Result<(), SetupError> {
        info!(ctx.logger(), "CopyWorker {} spinning up...", ctx.name());
        ctx.bus()
            .subscribe("daemon.worker.changename", ChangeNameListener)?;
        Ok(())
    }

    fn tick(&mut self, ctx: &mut WorkerContext<'_, Self>) {
        let source = self.path.join(&self.file);
        if source.exists() {
            info!(ctx.logger(), "Copying file {} to {}", self.file, self.copy);
            if let Err(e) = fs::copy(&source, self.path.join(&self.copy)) {
                error!(ctx.logger(), "copy failed"; "error" => %e);
            }
        }
    }

    fn spindown(&mut self, ctx: &mut WorkerContext<'_, Self>) {
        info!(ctx.logger(), "CopyWorker {} spinning down.", ctx.name());
        let _ = fs::remove_file(self.path.join(&self.copy));
    }
}

/// The seed's ChangeNameListener: reaches its worker, typed, through its host.
struct ChangeNameListener;

impl Listener<WorkerHost<CopyWorker>> for ChangeNameListener {
    fn handle(
        &mut self,
        _event: &dyn Event,
        ctx: &mut Context<'_, WorkerHost<CopyWorker>>,
    ) -> PostAction {
        info!(ctx.logger(), "Changing filename...");
        if let Some(worker) = ctx.host().worker() {
            worker.change_name();
        }
        PostAction::Continue
    }
}

fn main() -> ExitCode {
    let mut config = Config::default();
    config.description = "Copy Daemon".into();

    Daemon::new(config)
        .setup(|daemon| {
            let args = daemon.args::<Args>().expect("parsed by init_with");
            let dir = daemon.launch_dir().join(&args.dir);
            let looptime = Duration::try_from_secs_f64(args.looptime)?;
            daemon
                .workers()
                .install("handyman", CopyWorker::new(dir), looptime)?;
            let change = Method::<DaemonHost>::new("handyman.changename", |_, ctx| {
                ctx.host().workers().send("handyman", "changename", None)?;
                Ok(true.into())
            })
            .description("Change the output file name")
            .returns(Type::Boolean);
            daemon.rpc().register(change)?;
            Ok(())
        })
        .init_with::<Args>()
}
