//! The embedding API, in process: a daemon run with `Daemon::start` in the foreground, with
//! its own logger, its own command-line arguments, timers armed by listeners, and a stop code.

mod common;

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use daimon::bus::{DaemonEvent, Event, TimerEvent};
use daimon::slog::{self, Drain, o};
use daimon::{Config, Daemon, PostAction};

/// A slog drain that keeps the messages.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

impl Drain for Capture {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        self.0.lock().unwrap().push(record.msg().to_string());
        Ok(())
    }
}

#[derive(argh::FromArgs, Debug)]
/// Options of the test daemon.
struct Args {
    /// a greeting
    #[argh(option)]
    greeting: String,
}

#[derive(Debug)]
struct Greeted(String);

impl Event for Greeted {
    fn name(&self) -> &str {
        "test.greeted"
    }
}

/// One process has one set of signal handlers: daemons that catch signals (every daemon
/// built with `Daemon::new` does) run one at a time here.
static SIGNALS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn embedded_daemon_runs_setup_timers_and_stops_with_its_code() {
    let _signals = SIGNALS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = common::TestDir::new();

    let capture = Capture::default();
    let logger = slog::Logger::root(capture.clone().fuse(), o!());
    let seen: Rc<RefCell<Vec<String>>> = Rc::default();
    let in_setup = seen.clone();

    let daemon = Daemon::new(Config::default())
        .with_logger(logger)
        .setup(move |daemon| {
            let greeting = daemon
                .args::<Args>()
                .expect("parsed arguments")
                .greeting
                .clone();
            let log = in_setup.clone();
            daemon.bus().on("*", move |event, ctx| {
                log.borrow_mut().push(event.name().to_owned());
                if event.downcast_ref::<DaemonEvent>() == Some(&DaemonEvent::Ready) {
                    ctx.timer(Duration::from_millis(5), "test.tick");
                }
                if event.is::<TimerEvent>() {
                    ctx.emit(Greeted(greeting.clone()));
                }
                if let Some(Greeted(text)) = event.downcast_ref::<Greeted>() {
                    slog::info!(ctx.logger(), "{}", text);
                    ctx.stop(7);
                }
                PostAction::Continue
            })?;
            Ok(())
        });
    let mut args = vec![
        "-f".to_owned(),
        "--greeting".into(),
        "hello from setup".into(),
    ];
    args.extend(dir.std_args());
    let code = daemon
        .start::<Args>("embedded", &args)
        .expect("the daemon runs");

    assert_eq!(code, ExitCode::from(7));
    // The stop blocks SIGCHLD while it waits for the workers, and unblocks it after.
    let mask = nix::sys::signal::SigSet::thread_get_mask().expect("this thread's mask");
    assert!(
        !mask.contains(nix::sys::signal::Signal::SIGCHLD),
        "SIGCHLD left blocked"
    );
    assert_eq!(
        *seen.borrow(),
        [
            "daemon.ready",
            "test.tick",
            "test.greeted",
            "daemon.stopping",
            "daemon.stop"
        ],
        "daemon.start fires before setup() subscribed this listener"
    );
    let messages = capture.0.lock().unwrap().clone();
    assert!(messages.iter().any(|m| m == "ready"), "{messages:?}");
    assert!(
        messages.iter().any(|m| m == "hello from setup"),
        "{messages:?}"
    );
    assert!(!dir.pidfile().exists(), "pid file removed at stop");
    assert!(!dir.socket().exists(), "socket removed at stop");
}

#[test]
fn a_failing_setup_is_an_error_and_leaves_no_files() {
    let _signals = SIGNALS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = common::TestDir::new();
    let daemon = Daemon::new(Config::default())
        .with_logger(slog::Logger::root(slog::Discard, o!()))
        .setup(|_| Err("no database".into()));
    let mut args = vec!["-f".to_owned()];
    args.extend(dir.std_args());
    let err = daemon
        .start::<daimon::console::NoArgs>("embedded", &args)
        .unwrap_err();
    assert_eq!(err.to_string(), "setup failed: no database");
    assert!(!dir.pidfile().exists());
    assert!(!dir.socket().exists());
}
