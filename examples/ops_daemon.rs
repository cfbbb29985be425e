//! A daemon for the operations tests (`tests/hostile_ops.rs`): the standard listeners, the
//! `examples.echo` method, and on request a listener on every signal and idle workers.
//!
//! ```text
//! cargo run --example ops_daemon -- -f -v --socket unix:///tmp/ops.sock --wildcard
//! ```
//!
//! With `--wildcard`, a listener on `daemon.posix.*` logs every signal it receives and
//! removes itself on SIGUSR2. With `--workers N` and `--dir D`, N idle workers each write
//! their pid to `D/<name>.pid` on spinup.
//!
//! It declares an application key, `threshold` (an integer, default 5, in the configuration
//! file's `app` object), which `examples.threshold` returns, and counts the `daemon.reload`
//! events its listener saw, which `examples.reloads` returns.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use daimon::rpc::{Method, Type};
use daimon::slog::info;
use daimon::worker::{Spec, Worker, WorkerContext};
use daimon::{Config, Daemon, DaemonHost, PostAction, SetupError};

/// Options of the ops daemon.
#[derive(FromArgs)]
struct Args {
    /// subscribe a listener to `daemon.posix.*` (it removes itself on SIGUSR2)
    #[argh(switch)]
    wildcard: bool,
    /// how many idle workers (default 0)
    #[argh(option, default = "0")]
    workers: usize,
    /// where the workers write NAME.pid
    #[argh(option)]
    dir: Option<PathBuf>,
}

struct Idle {
    dir: Option<PathBuf>,
}

impl Worker for Idle {
    fn spinup(&mut self, ctx: &mut WorkerContext<'_, Self>) -> Result<(), SetupError> {
        if let Some(dir) = &self.dir {
            let pid = std::process::id().to_string();
            std::fs::write(dir.join(format!("{}.pid", ctx.name())), pid)?;
        }
        Ok(())
    }

    fn tick(&mut self, _ctx: &mut WorkerContext<'_, Self>) {}
}

fn main() -> ExitCode {
    let mut config = Config::default();
    config.description = "Ops Daemon".into();
    Daemon::new(config)
        .app("ops_daemon", env!("CARGO_PKG_VERSION"))
        .app_key::<u32>("threshold", 5)
        .setup(|daemon| {
            let args = daemon.args::<Args>().expect("parsed by init_with");
            let (wildcard, count) = (args.wildcard, args.workers);
            let dir = args.dir.as_ref().map(|d| daemon.launch_dir().join(d));
            let echo = Method::<DaemonHost>::new("examples.echo", |params, _ctx| {
                Ok(params.str("message")?.into())
            })
            .param(Type::String, "message")
            .returns(Type::String);
            daemon.rpc().register(echo)?;
            let threshold = Method::<DaemonHost>::new("examples.threshold", |_, ctx| {
                Ok(ctx.host().app_value::<u32>("threshold").into())
            })
            .returns(Type::Int);
            daemon.rpc().register(threshold)?;
            let reloads = std::rc::Rc::new(std::cell::Cell::new(0u32));
            let seen = reloads.clone();
            daemon.bus().on("daemon.reload", move |event, ctx| {
                if let Some(r) = event.downcast_ref::<daimon::bus::ReloadEvent>() {
                    info!(ctx.logger(), "reload seen"; "applied" => r.applied.join(","));
                    seen.set(seen.get() + 1);
                }
                PostAction::Continue
            })?;
            let reloaded =
                Method::<DaemonHost>::new("examples.reloads", move |_, _| Ok(reloads.get().into()))
                    .returns(Type::Int);
            daemon.rpc().register(reloaded)?;
            if wildcard {
                daemon.bus().on("daemon.posix.*", |event, ctx| {
                    info!(ctx.logger(), "signal seen"; "event" => event.name());
                    if event.name() == "daemon.posix.SIGUSR2" {
                        PostAction::Remove
                    } else {
                        PostAction::Continue
                    }
                })?;
            }
            for i in 0..count {
                let dir = dir.clone();
                let spec = Spec::every(Duration::from_millis(100));
                daemon.workers().install_with(
                    &format!("w{i}"),
                    move |_: &_| Idle { dir: dir.clone() },
                    spec,
                )?;
            }
            Ok(())
        })
        .init_with::<Args>()
}
