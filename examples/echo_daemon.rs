//! The ancestor's EchoDaemon: `examples.echo(string message) -> string` on the control
//! socket (`unix://daemon.sock` in the working directory unless `--socket` says otherwise),
//! stopped by SIGTERM or SIGINT.
//!
//! ```text
//! cargo run --example echo_daemon -- -f -v
//! cargo run -p daimonctl -- call examples.echo hello
//! ```
//!
//! Over tcp, give it a secret (a tcp socket without one is refused):
//!
//! ```text
//! echo '{"socketsecret": "s3cret"}' > echo.json
//! cargo run --example echo_daemon -- -f --config echo.json --socket tcp://127.0.0.1:10042
//! cargo run -p daimonctl -- -s tcp://127.0.0.1:10042 --secret s3cret call examples.echo hello
//! ```
//!
//! SIGHUP is caught and logged (the daemon has nothing to reload), SIGUSR1 reopens the log
//! file (a standard listener); every other signal keeps its disposition.

use std::process::ExitCode;

use daimon::reactor::Signal;
use daimon::rpc::{Method, Type};
use daimon::slog::info;
use daimon::{Config, Daemon, DaemonHost, PostAction};

fn main() -> ExitCode {
    let mut config = Config::default();
    config.description = "Echo Daemon".into();

    Daemon::new(config)
        .setup(|daemon| {
            let echo = Method::<DaemonHost>::new("examples.echo", |params, _ctx| {
                Ok(params.str("message")?.into())
            })
            .description("I'm here to reply your data")
            .param(Type::String, "message")
            .returns(Type::String);
            daemon.rpc().register(echo)?;
            daemon.bus().on_signal(Signal::HUP, |_, ctx| {
                info!(ctx.logger(), "SIGHUP received: nothing to reload");
                PostAction::Continue
            });
            Ok(())
        })
        .init()
}
