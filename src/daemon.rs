//! The daemon: built from a [`Config`] and the user's `setup()`, started by [`Daemon::init`].

use std::any::Any;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use argh::FromArgs;
use slog::{Logger, error, info, warn};

use crate::bus::{Bus, DaemonEvent, Host, PosixEvent, TimerEvent};
use crate::config::Config;
use crate::console::{self, Console, NoArgs, Parsed};
use crate::error::{Error, Result};
use crate::log;
use crate::pidfile::{PidFile, Previous};
use crate::process::{self, Detached, Readiness};
use crate::reactor::{Reactor, Ready, TimerId};
use crate::rpc::{DaemonEngine, Methods};
use crate::socket::{Leftover, Listener, server::Server};
use crate::worker::Workers;

/// The error type a `setup()` may return: anything that displays.
pub type SetupError = Box<dyn std::error::Error>;

type SetupFn = Box<dyn FnOnce(&mut Daemon) -> std::result::Result<(), SetupError>>;

/// A daemon: its configuration, its event bus, and the user's `setup()`.
///
/// # Examples
///
/// ```no_run
/// use daimon::{Config, Daemon};
///
/// fn main() -> std::process::ExitCode {
///     let mut config = Config::default();
///     config.description = "Echo Daemon".into();
///     Daemon::new(config)
///         .setup(|daemon| {
///             slog::info!(daemon.logger(), "setting up");
///             Ok(())
///         })
///         .init()
/// }
/// ```
pub struct Daemon {
    config: Config,
    bus: Bus,
    methods: Methods,
    workers: Workers,
    logger: Logger,
    custom_logger: bool,
    setup: Vec<SetupFn>,
    args: Option<Box<dyn Any>>,
    console: Console,
    launch_dir: std::path::PathBuf,
}

impl Daemon {
    /// A daemon with this configuration, no listeners, and nothing to set up.
    pub fn new(config: Config) -> Daemon {
        Daemon {
            config,
            bus: Bus::new(),
            methods: Methods::new(),
            workers: Workers::default(),
            logger: log::discard(),
            custom_logger: false,
            setup: Vec::new(),
            args: None,
            console: Console::default(),
            launch_dir: std::path::PathBuf::from("/"),
        }
    }

    /// Adds a `setup()` step, run in the daemon process (after detaching) before the socket
    /// is bound: register RPC methods, subscribe listeners, install workers. Steps run in the
    /// order they were added; an error stops the start and is reported to the launcher.
    pub fn setup<F>(mut self, f: F) -> Daemon
    where
        F: FnOnce(&mut Daemon) -> std::result::Result<(), SetupError> + 'static,
    {
        self.setup.push(Box::new(f));
        self
    }

    /// Uses `logger` instead of the default one (slog-term on the terminal in the
    /// foreground, `logfile` when detached).
    pub fn with_logger(mut self, logger: Logger) -> Daemon {
        self.logger = logger;
        self.custom_logger = true;
        self
    }

    /// The event bus, to subscribe listeners.
    pub fn bus(&mut self) -> &mut Bus {
        &mut self.bus
    }

    /// The RPC methods, to register the daemon's own in `setup()`.
    pub fn rpc(&mut self) -> &mut Methods {
        &mut self.methods
    }

    /// The workers, to install them before `init()` or in `setup()`.
    pub fn workers(&mut self) -> &mut Workers {
        &mut self.workers
    }

    /// The configuration (with the command line's overrides once `init()` has read them).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The logger (a discarding one until `init()` sets it up).
    pub fn logger(&self) -> &Logger {
        &self.logger
    }

    /// The directory the daemon was launched from (a detached daemon runs in `/`): resolve
    /// your own relative paths against it.
    pub fn launch_dir(&self) -> &Path {
        &self.launch_dir
    }

    /// The standard options the daemon was started with.
    pub fn console(&self) -> &Console {
        &self.console
    }

    /// The user's own command-line arguments, parsed by [`Daemon::init_with`].
    pub fn args<A: 'static>(&self) -> Option<&A> {
        self.args.as_ref()?.downcast_ref::<A>()
    }

    /// Reads the command line and acts on it: `-d` detaches, `-f` runs in the foreground,
    /// `-h` or nothing prints the help. Returns the process's exit code; errors are printed
    /// on standard error as `error: ...` with exit code 1.
    pub fn init(self) -> ExitCode {
        self.init_with::<NoArgs>()
    }

    /// Like [`Daemon::init`], with the user's own arguments `A` next to the standard ones;
    /// `setup()` reads them with [`Daemon::args`].
    pub fn init_with<A: FromArgs + 'static>(self) -> ExitCode {
        let mut argv = std::env::args_os().map(|a| a.to_string_lossy().into_owned());
        let program = argv.next().unwrap_or_else(|| "daemon".to_owned());
        let program = Path::new(&program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or(program);
        let args: Vec<String> = argv.collect();
        match self.start::<A>(&program, &args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    }

    /// Like [`Daemon::init_with`], with the arguments given rather than read from the process.
    ///
    /// # Errors
    ///
    /// Every error that stops the daemon from starting: usage, configuration, pid lock,
    /// socket, setup.
    pub fn start<A: FromArgs + 'static>(self, program: &str, args: &[String]) -> Result<ExitCode> {
        match console::parse::<A>(program, &self.config.description, args)? {
            Parsed::Help(text) => {
                print!("{text}");
                Ok(ExitCode::SUCCESS)
            }
            Parsed::Run(console, user) => {
                let mut daemon = self;
                daemon.args = Some(Box::new(user));
                daemon.launch(console)
            }
        }
    }

    fn launch(mut self, console: Console) -> Result<ExitCode> {
        if let Some(file) = &console.config {
            self.config.load_file(file)?;
        }
        if let Some(socket) = &console.socket {
            self.config.set("sockethandler", &socket.as_str().into())?;
        }
        if let Some(pidfile) = &console.pidfile {
            self.config
                .set("pidfile", &pidfile.to_string_lossy().as_ref().into())?;
        }
        self.config.validate()?;
        let cwd = std::env::current_dir()
            .map_err(|e| Error::path(".", "reading the current directory", e))?;
        self.config.make_paths_absolute(&cwd);
        self.console = console;
        self.launch_dir = cwd;

        // Locked before detaching, so a second instance fails here, in the launcher, at once.
        // The lock belongs to the open file, which the daemon inherits.
        let (pidfile, previous) = PidFile::lock(&self.config.pidfile)?;
        let mut readiness = None;
        if self.console.daemon {
            match process::daemonize(self.config.umask)? {
                Detached::Launcher(launcher) => {
                    drop(pidfile);
                    let pid = launcher.wait()?;
                    println!("{} started with pid {pid}", self.config.description);
                    return Ok(ExitCode::SUCCESS);
                }
                Detached::Daemon(r) => readiness = Some(r),
            }
        }
        let code = self.run(pidfile, previous, readiness.as_mut());
        if let (Err(e), Some(r)) = (&code, readiness.as_mut()) {
            r.failed(e);
        }
        code.map(|c| ExitCode::from(u8::try_from(c).unwrap_or(1)))
    }

    fn default_logger(&self) -> Result<Logger> {
        let verbose = self.console.verbose;
        if !self.console.daemon {
            return Ok(log::terminal(verbose));
        }
        match &self.config.logfile {
            Some(path) => log::file(path, verbose),
            None => Ok(log::discard()),
        }
    }

    fn run(
        &mut self,
        mut pidfile: PidFile,
        previous: Previous,
        readiness: Option<&mut Readiness>,
    ) -> Result<i32> {
        pidfile.write_pid(process::pid())?;
        if !self.custom_logger {
            self.logger = self.default_logger()?;
        }
        let logger = self.logger.clone();
        if let Previous::Stale(pid) = previous {
            warn!(logger, "took over a stale pid file"; "path" => %self.config.pidfile.display(),
                "previous_pid" => pid);
        }
        let mut rt = Runtime::new(logger.clone(), pidfile)?;
        let outcome = self.serve(&mut rt, readiness);
        if let Err(e) = &outcome {
            error!(logger, "daemon failed"; "error" => %e);
        }
        rt.release();
        outcome
    }

    fn serve(&mut self, rt: &mut Runtime, readiness: Option<&mut Readiness>) -> Result<i32> {
        if let Some(n) = self.config.niceness {
            process::set_niceness(n)?;
        }
        rt.sync_signals(&self.bus)?;
        self.bus.emit(DaemonEvent::Start);
        self.bus.dispatch(rt);
        for step in std::mem::take(&mut self.setup) {
            step(self).map_err(|e| Error::Setup(e.to_string()))?;
        }
        rt.sync_signals(&self.bus)?;
        let address = &self.config.sockethandler;
        let (listener, leftover) =
            Listener::bind(address, self.config.socketmode, self.console.hardstart)?;
        if leftover == Leftover::RemovedStale {
            warn!(rt.logger, "removed a stale socket file"; "socket" => %address);
        }
        let mut server = Server::new(
            rt.reactor.handle(),
            listener,
            &self.config,
            rt.logger.clone(),
        )?;
        self.methods.set_socket(address.to_string());
        rt.workers = std::mem::take(&mut self.workers);
        let level = if self.console.verbose {
            slog::Level::Debug
        } else {
            slog::Level::Info
        };
        rt.workers.configure(
            rt.reactor.handle(),
            rt.logger.clone(),
            level,
            self.config.shutdowntimeout,
            self.config.sockettimeout.max(Duration::from_secs(5)),
        );
        rt.workers.start_all()?;
        if let Some(r) = readiness {
            r.ready();
        }
        if let Err(e) = process::notify_systemd("READY=1") {
            warn!(rt.logger, "cannot notify systemd"; "error" => %e);
        }
        info!(rt.logger, "ready"; "pid" => process::pid(), "socket" => %address);
        self.bus.emit(DaemonEvent::Ready);
        let outcome = self.event_loop(rt, &mut server);
        let code = self.shutdown(rt, server);
        outcome.map(|()| code)
    }

    fn event_loop(&mut self, rt: &mut Runtime, server: &mut Server) -> Result<()> {
        let mut ready = Vec::new();
        let mut socket_events = Vec::new();
        loop {
            self.bus.dispatch(rt);
            if rt.stop.is_some() {
                return Ok(());
            }
            rt.sync_signals(&self.bus)?;
            let wait = if self.bus.has_pending() {
                Some(Duration::ZERO)
            } else {
                earliest(server.next_timeout(), rt.workers.next_timeout())
            };
            rt.reactor.turn(wait, &mut ready)?;
            for r in ready.drain(..) {
                match r {
                    Ready::Signal(signal) => self.bus.emit(PosixEvent::new(signal)),
                    Ready::Timer(id, name) => self.bus.emit(TimerEvent::new(name, id)),
                    Ready::Io {
                        token,
                        readable,
                        writable,
                    } => {
                        // Connections first (the hot path), then the workers' channels.
                        let mut engine = DaemonEngine {
                            methods: &mut self.methods,
                            bus: &mut self.bus,
                            host: &mut *rt,
                        };
                        if !server.ready(token, readable, writable, &mut engine, &mut socket_events)
                        {
                            rt.workers.ready(token);
                        }
                    }
                }
            }
            let now = Instant::now();
            server.expire(now, &mut socket_events);
            rt.workers.expire(now);
            self.deliver_worker_replies(rt, server, &mut socket_events);
            for e in socket_events.drain(..) {
                self.bus.emit(e);
            }
        }
    }

    /// Completes the calls that waited for workers, and emits the workers' events.
    fn deliver_worker_replies(
        &mut self,
        rt: &mut Runtime,
        server: &mut Server,
        socket_events: &mut Vec<crate::bus::SocketEvent>,
    ) {
        for (ticket, outcome) in rt.workers.take_resolved() {
            let mut engine = DaemonEngine {
                methods: &mut self.methods,
                bus: &mut self.bus,
                host: &mut *rt,
            };
            server.complete(ticket, outcome, &mut engine, socket_events);
        }
        for e in rt.workers.take_events() {
            self.bus.emit(e);
        }
    }

    /// Stops every worker in parallel (`stop` on each channel, then SIGTERM, then SIGKILL
    /// after `shutdowntimeout`) while serving signals and the workers' channels.
    fn stop_workers(&mut self, rt: &mut Runtime) {
        rt.workers.shutdown();
        let hard = Instant::now() + self.config.shutdowntimeout + Duration::from_secs(1);
        let mut ready = Vec::new();
        let mut killed = false;
        loop {
            for exit in rt.workers.reap() {
                self.bus.emit(
                    crate::bus::WorkerEvent::new("exited", exit.name.clone())
                        .with_payload(Some(exit.to_json())),
                );
            }
            self.bus.dispatch(rt);
            if rt.workers.all_gone() {
                break;
            }
            let now = Instant::now();
            if now >= hard {
                if killed {
                    warn!(rt.logger, "workers still not reaped; giving up on them");
                    break;
                }
                rt.workers.kill_all();
                killed = true;
            }
            // SIGCHLD wakes the turn when a listener catches it; without one, poll briefly.
            let wait = earliest(rt.workers.next_timeout(), Some(Duration::from_millis(50)));
            if rt.reactor.turn(wait, &mut ready).is_err() {
                break;
            }
            for r in ready.drain(..) {
                match r {
                    Ready::Signal(signal) => self.bus.emit(PosixEvent::new(signal)),
                    Ready::Io { token, .. } => {
                        rt.workers.ready(token);
                    }
                    Ready::Timer(..) => {}
                }
            }
            rt.workers.expire(Instant::now());
            for e in rt.workers.take_events() {
                self.bus.emit(e);
            }
        }
    }

    /// The controlled shutdown: `daemon.stopping`, stop accepting, remove the socket file and
    /// the pid file, `daemon.stop`.
    fn shutdown(&mut self, rt: &mut Runtime, server: Server) -> i32 {
        let code = rt.stop.unwrap_or(0);
        info!(rt.logger, "stopping"; "exit_code" => code);
        if let Err(e) = process::notify_systemd("STOPPING=1") {
            warn!(rt.logger, "cannot notify systemd"; "error" => %e);
        }
        self.bus.emit(DaemonEvent::Stopping);
        self.drain_bus(rt);
        if let Some(path) = server.close() {
            if let Err(e) = std::fs::remove_file(&path) {
                warn!(rt.logger, "cannot remove the socket file";
                    "path" => %path.display(), "error" => %e);
            }
        }
        self.stop_workers(rt);
        rt.release();
        self.bus.emit(DaemonEvent::Stop);
        self.drain_bus(rt);
        info!(rt.logger, "stopped");
        code
    }

    /// Dispatches until the queue is empty, within a bound (listeners that keep emitting
    /// cannot hold up a stop).
    fn drain_bus(&mut self, rt: &mut Runtime) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.bus.has_pending() && Instant::now() < deadline {
            self.bus.dispatch(rt);
        }
    }
}

/// What the daemon process owns while it runs; the [`Host`] its listeners act through.
struct Runtime {
    reactor: Reactor<String>,
    workers: Workers,
    logger: Logger,
    stop: Option<i32>,
    pidfile: Option<PidFile>,
    signals_generation: Option<u64>,
}

impl Runtime {
    fn new(logger: Logger, pidfile: PidFile) -> Result<Runtime> {
        Ok(Runtime {
            reactor: Reactor::new()?,
            workers: Workers::default(),
            logger,
            stop: None,
            pidfile: Some(pidfile),
            signals_generation: None,
        })
    }

    fn sync_signals(&mut self, bus: &Bus) -> Result<()> {
        crate::bus::catch_subscribed_signals(&mut self.reactor, bus, &mut self.signals_generation)
    }

    /// Kills workers still running (a start that failed half-way), removes the pid file,
    /// releasing the lock. Idempotent.
    fn release(&mut self) {
        if !self.workers.all_gone() {
            self.workers.kill_all();
            let deadline = Instant::now() + Duration::from_secs(2);
            while !self.workers.all_gone() && Instant::now() < deadline {
                self.workers.reap();
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if let Some(pidfile) = self.pidfile.take() {
            if let Err(e) = pidfile.remove() {
                warn!(self.logger, "cannot remove the pid file"; "error" => %e);
            }
        }
    }
}

impl Host for Runtime {
    fn logger(&self) -> &Logger {
        &self.logger
    }

    fn stop(&mut self, code: i32) {
        if self.stop.is_none() {
            self.stop = Some(code);
        }
    }

    fn arm_timer(&mut self, after: Duration, period: Option<Duration>, name: String) -> TimerId {
        self.reactor
            .timers()
            .insert(Instant::now() + after, period, name)
    }

    fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.reactor.cancel(id).is_some()
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }

    fn workers(&mut self) -> Option<&mut Workers> {
        Some(&mut self.workers)
    }
}

/// The earlier of two optional timeouts.
fn earliest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
