//! The ancestor's CopyDaemon: a worker named `handyman` (looptime 10 s, forever) copies
//! `test.txt` to `copy_test.txt` in a directory it watches; `handyman.changename` makes it
//! write `copy_test_2.txt` instead (the seed's ChangeNameListener is now a `match` in the
//! worker's `command`), and replies once the worker has changed it; on spindown it removes
//! its copy.
//!
//! ```text
//! mkdir -p tmp && echo hello > tmp/test.txt
//! cargo run --example copy_daemon -- -f --dir tmp --looptime 1
//! cargo run -p daimonctl -- workers
//! cargo run -p daimonctl -- call handyman.changename
//! ```

use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use daimon::rpc::{Method, Type};
use daimon::slog::{error, info};
use daimon::worker::{CommandError, Worker, WorkerContext};
use daimon::{Config, Daemon, DaemonHost, SetupError};
use serde_json::{Value, json};

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

    /// Invoked by the `changename` command.
    fn change_name(&mut self) {
        self.copy = "copy_test_2.txt".into();
    }
}

impl Worker for CopyWorker {
    fn spinup(&mut self, ctx: &mut WorkerContext<'_, Self>) -> Result<(), SetupError> {
        info!(ctx.logger(), "CopyWorker {} spinning up...", ctx.name());
        Ok(())
    }

    /// The seed's ChangeNameListener, as one `match`: `worker.call handyman changename`
    /// (and the daemon's `handyman.changename`) reply once the name has changed.
    fn command(
        &mut self,
        command: &str,
        payload: Option<Value>,
        ctx: &mut WorkerContext<'_, Self>,
    ) -> Result<Value, CommandError> {
        match command {
            "changename" => {
                info!(ctx.logger(), "Changing filename...");
                self.change_name();
                Ok(json!(true))
            }
            // Anything else goes to the worker's bus, for its listeners.
            _ => ctx.forward(command, payload),
        }
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
            // Replies with the worker's answer, once it has changed the name.
            let change = Method::<DaemonHost>::new("handyman.changename", |_, ctx| {
                let reply = ctx.defer(Duration::from_secs(5))?;
                ctx.host()
                    .workers()
                    .call("handyman", "changename", None, reply)?;
                Ok(Value::Null)
            })
            .description("Change the output file name (replies once the worker has)")
            .returns(Type::Boolean);
            daemon.rpc().register(change)?;
            Ok(())
        })
        .init_with::<Args>()
}
