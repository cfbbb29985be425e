//! The command line of `daimonctl`.

use argh::FromArgs;

/// The address used without `-s` and without `DAIMON_SOCKET`.
pub(crate) const DEFAULT_SOCKET: &str = "unix://daemon.sock";

#[derive(FromArgs)]
/// Call a daimon daemon's methods over its control socket.
#[argh(help_triggers("-h", "--help"))]
pub(crate) struct Args {
    /// the control socket, unix://PATH or tcp://HOST:PORT (default: $DAIMON_SOCKET, else
    /// unix://daemon.sock)
    #[argh(option, short = 's')]
    pub(crate) socket: Option<String>,
    /// print the result as compact JSON on one line
    #[argh(switch)]
    pub(crate) json: bool,
    /// speak MessagePack-RPC instead of JSON-RPC
    #[argh(switch)]
    pub(crate) msgpack: bool,
    /// seconds to wait for each reply (default 5)
    #[argh(option, default = "5.0")]
    pub(crate) timeout: f64,
    /// the secret to authenticate with (system.auth) before the command
    #[argh(option)]
    pub(crate) secret: Option<String>,
    #[argh(subcommand)]
    pub(crate) command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
pub(crate) enum Command {
    Call(CallArgs),
    Status(StatusArgs),
    Methods(MethodsArgs),
    Shutdown(ShutdownArgs),
    Workers(WorkersArgs),
    Pause(PauseArgs),
    Resume(ResumeArgs),
    Start(StartArgs),
    Stop(StopArgs),
    Restart(RestartArgs),
    Send(SendArgs),
    CallWorker(CallWorkerArgs),
    Events(EventsArgs),
    Top(TopArgs),
    Watch(WatchArgs),
    Log(LogArgs),
    Signal(SignalArgs),
    Reload(ReloadArgs),
    #[argh(dynamic)]
    Help(HelpArgs),
}

/// The subcommands that act on one worker by name, and the method each calls.
macro_rules! worker_command {
    ($name:ident, $cmd:literal, $doc:literal) => {
        #[derive(FromArgs)]
        #[doc = $doc]
        #[argh(subcommand, name = $cmd)]
        pub(crate) struct $name {
            /// the worker
            #[argh(positional)]
            pub(crate) worker: String,
        }
    };
}

worker_command!(
    PauseArgs,
    "pause",
    "Pause a worker; returns once it acknowledged."
);
worker_command!(
    ResumeArgs,
    "resume",
    "Resume a worker; returns once it acknowledged."
);
/// The subcommands that change a worker's life and wait for the outcome.
macro_rules! waiting_command {
    ($name:ident, $cmd:literal, $doc:literal) => {
        #[derive(FromArgs)]
        #[doc = $doc]
        #[argh(subcommand, name = $cmd)]
        pub(crate) struct $name {
            /// the worker
            #[argh(positional)]
            pub(crate) worker: String,
            /// seconds to wait for the outcome (default 30)
            #[argh(option, default = "30.0")]
            pub(crate) timeout: f64,
            /// return once the daemon took the request, without waiting for the outcome
            #[argh(switch)]
            pub(crate) no_wait: bool,
        }
    };
}

waiting_command!(
    StartArgs,
    "start",
    "Start a worker that is not running; waits until it is LOOPING."
);
waiting_command!(
    StopArgs,
    "stop",
    "Stop a worker (no restart until started); waits until it is EXITED."
);
waiting_command!(
    RestartArgs,
    "restart",
    "Stop a worker and start it again; waits until a new process is LOOPING."
);

#[derive(FromArgs)]
/// List the workers (worker.list).
#[argh(subcommand, name = "workers")]
pub(crate) struct WorkersArgs {}

#[derive(FromArgs)]
/// Send a command, with an optional JSON payload, to a worker (worker.send).
#[argh(subcommand, name = "send")]
pub(crate) struct SendArgs {
    /// the worker
    #[argh(positional)]
    pub(crate) worker: String,
    /// the command: daemon.worker.COMMAND on the worker bus
    #[argh(positional)]
    pub(crate) command: String,
    /// the payload: JSON when it parses, else a string
    #[argh(positional)]
    pub(crate) payload: Option<String>,
}

#[derive(FromArgs)]
/// Call a method: with named parameters (every ARG is NAME=VALUE) or positional ones. A
/// VALUE or ARG that parses as JSON (5, true, "quoted", an array, an object) is that value,
/// anything else a string; quote a positional string holding '=' as JSON ('"a=b"').
#[argh(subcommand, name = "call")]
pub(crate) struct CallArgs {
    /// the method, then its parameters (a parameter may start with '-': `call m -5`)
    #[argh(positional, greedy, arg_name = "method arg")]
    pub(crate) words: Vec<String>,
}

#[derive(FromArgs)]
/// Call a worker's command and print its answer (worker.call); the daemon waits --timeout
/// seconds for the worker.
#[argh(subcommand, name = "call-worker")]
pub(crate) struct CallWorkerArgs {
    /// the worker
    #[argh(positional)]
    pub(crate) worker: String,
    /// the command
    #[argh(positional)]
    pub(crate) command: String,
    /// the payload: JSON when it parses, else a string
    #[argh(positional)]
    pub(crate) payload: Option<String>,
}

#[derive(FromArgs)]
/// Print the daemon's events as they happen (daemon.subscribe), one per line:
/// `HH:MM:SS.mmm NAME KEY=VALUE...` (UTC); --json: one JSON object per line. Ends on
/// Ctrl-C or when the output is closed (exit 0), or when the daemon goes away (exit 1).
#[argh(subcommand, name = "events")]
pub(crate) struct EventsArgs {
    /// the events to print: names, or prefixes ending in '*' (default '*': all)
    #[argh(positional, arg_name = "pattern")]
    pub(crate) patterns: Vec<String>,
}

#[derive(FromArgs)]
/// A live view of the daemon and its workers (state, pid, restarts, uptime, CPU, memory,
/// last output line), refreshed from its events; q, Esc or Ctrl-C quits.
#[argh(subcommand, name = "top")]
pub(crate) struct TopArgs {}

#[derive(FromArgs)]
/// The same as top.
#[argh(subcommand, name = "watch")]
pub(crate) struct WatchArgs {}

#[derive(FromArgs)]
/// Show the daemon's status and its workers as a table (daemon.status, worker.list);
/// --json prints daemon.status's result.
#[argh(subcommand, name = "status")]
pub(crate) struct StatusArgs {}

#[derive(FromArgs)]
/// List the daemon's methods (system.listMethods).
#[argh(subcommand, name = "methods")]
pub(crate) struct MethodsArgs {}

// argh reserves the name `help` for itself: this subcommand is a dynamic one, and `help`
// is not a help trigger of `Args`.
#[derive(FromArgs)]
/// Describe a method: its description, then each signature with its parameters' types and
/// names.
#[argh(help_triggers("-h", "--help"))]
pub(crate) struct HelpArgs {
    /// the method
    #[argh(positional)]
    pub(crate) method: String,
}

impl argh::DynamicSubCommand for HelpArgs {
    fn commands() -> &'static [&'static argh::CommandInfo] {
        &[&argh::CommandInfo {
            name: "help",
            short: &'\0',
            description: "Describe a method: its parameters' names and types.",
        }]
    }

    fn try_redact_arg_values(
        command_name: &[&str],
        args: &[&str],
    ) -> Option<Result<Vec<String>, argh::EarlyExit>> {
        (command_name.last() == Some(&"help"))
            .then(|| HelpArgs::redact_arg_values(command_name, args))
    }

    fn try_from_args(
        command_name: &[&str],
        args: &[&str],
    ) -> Option<Result<Self, argh::EarlyExit>> {
        (command_name.last() == Some(&"help")).then(|| HelpArgs::from_args(command_name, args))
    }
}

#[derive(FromArgs)]
/// Stop the daemon (daemon.shutdown).
#[argh(subcommand, name = "shutdown")]
pub(crate) struct ShutdownArgs {}

#[derive(FromArgs)]
/// Show a worker's last output lines (worker.log), or the daemon's own log (daemon.log)
/// without NAME: `TIME STREAM TEXT` per line; --json: one JSON object per line.
#[argh(subcommand, name = "log")]
pub(crate) struct LogArgs {
    /// the worker (default: the daemon's own log)
    #[argh(positional)]
    pub(crate) name: Option<String>,
    /// how many lines (default 100)
    #[argh(option, short = 'n', default = "100")]
    pub(crate) lines: u32,
    /// follow: print new lines as they come, until interrupted or the output is closed
    #[argh(switch, short = 'f')]
    pub(crate) follow: bool,
}

#[derive(FromArgs)]
/// Send a signal to a worker's process (worker.signal): SIGHUP, HUP, hup or a number.
#[argh(subcommand, name = "signal")]
pub(crate) struct SignalArgs {
    /// the worker
    #[argh(positional)]
    pub(crate) worker: String,
    /// the signal
    #[argh(positional)]
    pub(crate) signal: String,
}

#[derive(FromArgs)]
/// Read the configuration file again (daemon.reload): prints what was applied and what
/// needs a restart.
#[argh(subcommand, name = "reload")]
pub(crate) struct ReloadArgs {}
