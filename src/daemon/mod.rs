//! The daemon: built from a [`Config`] and the user's `setup()`, started by [`Daemon::init`].

mod activation;
mod host;
mod methods;
pub(crate) mod notify;
mod reload;
mod run;
mod signal;
mod subscribe;

use std::any::Any;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use argh::FromArgs;
use slog::Logger;

use crate::bus::Bus;
use crate::config::Config;
use crate::console::{self, Console, NoArgs, Parsed};
use crate::error::{Error, Result, SetupError};
use crate::log;
use crate::pidfile::PidFile;
use crate::process::{self, Detached};
use crate::rpc::Methods;
use crate::worker::Workers;

pub use host::DaemonHost;
pub use signal::LoopSignal;

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
    bus: Bus<DaemonHost>,
    methods: Methods<DaemonHost>,
    workers: Workers,
    signal: LoopSignal,
    logger: Logger,
    custom_logger: bool,
    setup: Vec<SetupFn>,
    args: Option<Box<dyn Any>>,
    console: Console,
    launch_dir: std::path::PathBuf,
    app: (String, Option<String>),
    app_keys: Vec<AppKey>,
    app_defaults: serde_json::Map<String, serde_json::Value>,
    reload: reload::Source,
}

/// How a declared application key's value is checked: the reason it is not a `T`.
type CheckValue = std::rc::Rc<dyn Fn(&serde_json::Value) -> std::result::Result<(), String>>;

/// A declared application key: its name and how its value is checked.
struct AppKey {
    name: String,
    check: CheckValue,
}

impl Daemon {
    /// A daemon with this configuration and the standard listeners: SIGTERM and SIGINT stop
    /// it cleanly ([`StopDaemon`](crate::listeners::StopDaemon)), SIGCHLD reaps its workers
    /// and applies their restart policy ([`ReapChild`](crate::listeners::ReapChild)), SIGUSR1
    /// reopens the log file ([`ReopenLog`](crate::listeners::ReopenLog)).
    pub fn new(config: Config) -> Daemon {
        let mut daemon = Daemon::bare(config);
        crate::listeners::install(&mut daemon);
        daemon
    }

    /// A daemon with no listener at all: signals keep their disposition (SIGTERM kills it
    /// without cleanup) and exited workers are neither reaped nor restarted until you
    /// subscribe your own (the [`listeners`](crate::listeners) are public to pick from).
    pub fn bare(config: Config) -> Daemon {
        let mut methods = Methods::new();
        methods::register(&mut methods).expect("the built-in methods have distinct names");
        subscribe::register(&mut methods).expect("the built-in methods have distinct names");
        Daemon {
            config,
            bus: Bus::new(),
            methods,
            workers: Workers::default(),
            signal: LoopSignal::new(),
            logger: log::discard(),
            custom_logger: false,
            setup: Vec::new(),
            args: None,
            console: Console::default(),
            launch_dir: std::path::PathBuf::from("/"),
            app: (String::new(), None),
            app_keys: Vec::new(),
            app_defaults: serde_json::Map::new(),
            reload: reload::Source::default(),
        }
    }

    /// Adds a `setup()` step, run in the daemon process (after detaching) before the socket
    /// is bound: register RPC methods, subscribe listeners, install workers. Steps run in the
    /// order they were added; an error stops the start and is reported to the launcher.
    ///
    /// With the `user` key, setup steps still run as the user who started the daemon
    /// (usually root): privileges are dropped after the bind (see [`crate::privs`]). Open
    /// what needs root here; what a step creates on disk stays root's.
    pub fn setup<F>(mut self, f: F) -> Daemon
    where
        F: FnOnce(&mut Daemon) -> std::result::Result<(), SetupError> + 'static,
    {
        self.setup.push(Box::new(f));
        self
    }

    /// Uses `logger` instead of the default one (slog-term on the terminal in the
    /// foreground, `logfile` when detached, else syslog).
    ///
    /// Your logger replaces, entirely: the format (`logformat`, the journal's `<N>`
    /// prefixes), the destination (`logfile`, syslog, the terminal), and the level (`-v`
    /// sets nothing: filter in your own drain). With it, `daemon.reopenlogs` and SIGUSR1
    /// reopen nothing (they answer `reopened: false`): a logger that writes a file reopens
    /// it itself. What it keeps: every record still goes through the daemon's ring first,
    /// so `daemon.log` works, and the workers' stdout, stderr and log lines are still
    /// captured, logged through your logger (with `worker` and `stream` fields) and kept
    /// for `worker.log`. The launcher of a detached daemon says "logging through the
    /// application's own logger".
    pub fn with_logger(mut self, logger: Logger) -> Daemon {
        self.logger = logger;
        self.custom_logger = true;
        self
    }

    /// The application's name and version, which `daemon.status` reports beside daimon's
    /// (`"app": {"name", "version"}`); without it, the name is the configuration's
    /// `description` and the version `null`. Typically
    /// `.app(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))`.
    pub fn app(mut self, name: &str, version: &str) -> Daemon {
        self.app = (name.to_owned(), Some(version.to_owned()));
        self
    }

    /// Declares an application key, read from the configuration file's `app` object:
    /// `{"app": {"threshold": 5}}`. Its value must deserialize as a `T` (checked at start, so
    /// the launcher reports a bad one naming `app.KEY`, and at each reload, which keeps the
    /// old values when one is bad); a key in `app` nobody declared is an error too, so a
    /// typo is caught. Listeners and methods read it with
    /// [`DaemonHost::app_value`] (`default` when the file has none).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use daimon::{Config, Daemon, DaemonHost};
    /// use daimon::rpc::{CallContext, Method, Type};
    ///
    /// let daemon = Daemon::new(Config::default())
    ///     .app_key::<u32>("threshold", 5)
    ///     .setup(|daemon| {
    ///         let m = Method::new("app.threshold", |_, ctx: &mut CallContext<'_, DaemonHost>| {
    ///             let t: u32 = ctx.host().app_value("threshold").unwrap_or_default();
    ///             Ok(t.into())
    ///         })
    ///         .returns(Type::Int);
    ///         daemon.rpc().register(m)?;
    ///         Ok(())
    ///     });
    /// ```
    pub fn app_key<T>(mut self, name: &str, default: T) -> Daemon
    where
        T: serde::Serialize + serde::de::DeserializeOwned + 'static,
    {
        let default = serde_json::to_value(default).unwrap_or(serde_json::Value::Null);
        self.app_defaults.insert(name.to_owned(), default);
        self.app_keys.retain(|k| k.name != name);
        self.app_keys.push(AppKey {
            name: name.to_owned(),
            check: std::rc::Rc::new(|v: &serde_json::Value| {
                T::deserialize(v).map(drop).map_err(|e| e.to_string())
            }),
        });
        self
    }

    /// The check of the `app` section against the declared keys.
    fn app_check(&self) -> reload::AppCheck {
        let keys: Vec<(String, _)> = self
            .app_keys
            .iter()
            .map(|k| (k.name.clone(), k.check.clone()))
            .collect();
        Box::new(move |app| {
            for (name, value) in app {
                let Some((_, check)) = keys.iter().find(|(n, _)| n == name) else {
                    let known: Vec<&str> = keys.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(Error::config(
                        format!("app.{name}"),
                        format!(
                            "not a declared application key; declared: {}",
                            known.join(", ")
                        ),
                    ));
                };
                check(value).map_err(|e| Error::config(format!("app.{name}"), e))?;
            }
            Ok(())
        })
    }

    /// The event bus, to subscribe listeners.
    pub fn bus(&mut self) -> &mut Bus<DaemonHost> {
        &mut self.bus
    }

    /// The RPC methods, to register the daemon's own in `setup()`.
    pub fn rpc(&mut self) -> &mut Methods<DaemonHost> {
        &mut self.methods
    }

    /// The workers, to install them before `init()` or in `setup()`.
    pub fn workers(&mut self) -> &mut Workers {
        &mut self.workers
    }

    /// The signal that stops the running daemon (a controlled shutdown, as SIGTERM): for a
    /// program that embeds the daemon, from a listener, a method, or another thread of a
    /// daemon without workers.
    pub fn loop_signal(&self) -> LoopSignal {
        self.signal.clone()
    }

    /// The configuration to change in `setup()`: what the daemon reads after the setup
    /// steps (the socket, its limits, the timeouts) takes the new values; the pid file and
    /// the log are open by then.
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
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
                // Not eprintln!: a closed or full stderr must not turn the error into a panic.
                let _ = writeln!(std::io::stderr(), "error: {e}");
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
                let _ = write!(std::io::stdout(), "{text}");
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
        let check = self.app_check();
        check(&self.config.app)?;
        if self.app.0.is_empty() {
            self.app.0 = self.config.description.clone();
        }
        self.reload = reload::Source {
            file: console.config.as_ref().map(|f| cwd.join(f)),
            socket: console.socket.as_ref().map(|s| s.as_str().to_owned()),
            pidfile: console.pidfile.clone(),
            cwd: cwd.clone(),
            app: check,
            verbose: console.verbose,
        };
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
                    let description = &self.config.description;
                    let _ = writeln!(std::io::stdout(), "{description} started with pid {pid}");
                    let output = if self.custom_logger {
                        "logging through the application's own logger".to_owned()
                    } else {
                        self.log_output().describe()
                    };
                    let _ = writeln!(std::io::stdout(), "{output}");
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
}
