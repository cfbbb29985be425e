//! The ancestor's EchoDaemon: a daemon with a control socket, stopped by SIGTERM or SIGINT.
//!
//! ```text
//! cargo run --example echo_daemon -- -f -v
//! cargo run --example echo_daemon -- -f --socket unix:///tmp/echo.sock
//! ```
//!
//! SIGHUP is caught and logged (the daemon has nothing to reload); every other signal keeps
//! its default action.

use std::process::ExitCode;

use daimon::slog::info;
use daimon::{Config, Daemon, PostAction};

fn main() -> ExitCode {
    let mut config = Config::default();
    config.description = "Echo Daemon".into();
    config.sockethandler = "tcp://127.0.0.1:10042".parse().expect("a valid address");

    let mut daemon = Daemon::new(config);
    daimon_listeners::install(&mut daemon).expect("standard listeners");
    daemon
        .setup(|daemon| {
            daemon.bus().on("daemon.posix.SIGHUP", |_, ctx| {
                info!(ctx.logger(), "SIGHUP received: nothing to reload");
                PostAction::Continue
            })?;
            Ok(())
        })
        .init()
}
