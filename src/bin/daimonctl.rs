//! `daimonctl`: calls a daimon daemon's methods over its control socket.
//!
//! ```text
//! daimonctl -s unix:///run/echo.sock status
//! daimonctl call examples.echo hello
//! DAIMON_SOCKET=tcp://127.0.0.1:10042 daimonctl --secret s3cret --json methods
//! ```
//!
//! Results are printed for people, or with `--json` as compact JSON on one line. Errors go
//! to standard error as `error: ...` with exit code 1; usage errors exit with 2.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use daimon::Error;
use daimon::client::{Client, Protocol};
use daimon::socket::Address;
use serde_json::{Value, json};

/// The address used without `-s` and without `DAIMON_SOCKET`.
const DEFAULT_SOCKET: &str = "unix://daemon.sock";

#[derive(FromArgs)]
/// Call a daimon daemon's methods over its control socket.
#[argh(help_triggers("-h", "--help"))]
struct Args {
    /// the control socket, unix://PATH or tcp://HOST:PORT (default: $DAIMON_SOCKET, else
    /// unix://daemon.sock)
    #[argh(option, short = 's')]
    socket: Option<String>,
    /// print the result as compact JSON on one line
    #[argh(switch)]
    json: bool,
    /// speak MessagePack-RPC instead of JSON-RPC
    #[argh(switch)]
    msgpack: bool,
    /// seconds to wait for each reply (default 5)
    #[argh(option, default = "5.0")]
    timeout: f64,
    /// the secret to authenticate with (system.auth) before the command
    #[argh(option)]
    secret: Option<String>,
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
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
    #[argh(dynamic)]
    Help(HelpArgs),
}

/// The subcommands that act on one worker by name, and the method each calls.
macro_rules! worker_command {
    ($name:ident, $cmd:literal, $doc:literal) => {
        #[derive(FromArgs)]
        #[doc = $doc]
        #[argh(subcommand, name = $cmd)]
        struct $name {
            /// the worker
            #[argh(positional)]
            worker: String,
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
worker_command!(StartArgs, "start", "Start a worker that is not running.");
worker_command!(
    StopArgs,
    "stop",
    "Stop a worker (no restart until started)."
);
worker_command!(RestartArgs, "restart", "Stop a worker and start it again.");

#[derive(FromArgs)]
/// List the workers (worker.list).
#[argh(subcommand, name = "workers")]
struct WorkersArgs {}

#[derive(FromArgs)]
/// Send a command, with an optional JSON payload, to a worker (worker.send).
#[argh(subcommand, name = "send")]
struct SendArgs {
    /// the worker
    #[argh(positional)]
    worker: String,
    /// the command: daemon.worker.COMMAND on the worker bus
    #[argh(positional)]
    command: String,
    /// the payload: JSON when it parses, else a string
    #[argh(positional)]
    payload: Option<String>,
}

#[derive(FromArgs)]
/// Call a method with positional parameters: each ARG that parses as JSON (5, true,
/// "quoted", an array, an object) is that value, anything else a string.
#[argh(subcommand, name = "call")]
struct CallArgs {
    /// the method, then its parameters (a parameter may start with '-': `call m -5`)
    #[argh(positional, greedy, arg_name = "method arg")]
    words: Vec<String>,
}

#[derive(FromArgs)]
/// Show the daemon's status (daemon.status).
#[argh(subcommand, name = "status")]
struct StatusArgs {}

#[derive(FromArgs)]
/// List the daemon's methods (system.listMethods).
#[argh(subcommand, name = "methods")]
struct MethodsArgs {}

// argh reserves the name `help` for itself: this subcommand is a dynamic one, and `help`
// is not a help trigger of `Args`.
#[derive(FromArgs)]
/// Describe a method and its signatures.
#[argh(help_triggers("-h", "--help"))]
struct HelpArgs {
    /// the method
    #[argh(positional)]
    method: String,
}

impl argh::DynamicSubCommand for HelpArgs {
    fn commands() -> &'static [&'static argh::CommandInfo] {
        &[&argh::CommandInfo {
            name: "help",
            short: &'\0',
            description: "Describe a method and its signatures.",
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
struct ShutdownArgs {}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let program = argv.first().map_or("daimonctl", String::as_str);
    let strs: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    let args = match Args::from_args(&[program], &strs) {
        Ok(args) => args,
        Err(exit) if exit.status.is_ok() => {
            println!("{}", exit.output);
            return ExitCode::SUCCESS;
        }
        Err(exit) => {
            eprintln!(
                "{}\nRun {program} --help for more information.",
                exit.output
            );
            return ExitCode::from(2);
        }
    };
    let result = run(&args).and_then(
        |text| match io::stdout().lock().write_all(text.as_bytes()) {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::Io(e).into()),
            _ => Ok(()),
        },
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { usage, message }) => {
            eprintln!("error: {message}");
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// Why a command failed: its message, and whether it was a usage error (exit code 2).
struct Failure {
    usage: bool,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure {
            usage: matches!(e, Error::Usage(_)),
            message: e.to_string(),
        }
    }
}

/// Runs the command and returns what to print.
fn run(args: &Args) -> Result<String, Failure> {
    let socket = match &args.socket {
        Some(s) => s.clone(),
        None => std::env::var("DAIMON_SOCKET").unwrap_or_else(|_| DEFAULT_SOCKET.into()),
    };
    let address = socket
        .parse::<Address>()
        .map_err(|e| Error::Usage(e.to_string()))?;
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| {
            Error::Usage(format!(
                "--timeout: expected a positive number of seconds, got {}",
                args.timeout
            ))
        })?;
    let protocol = if args.msgpack {
        Protocol::MessagePack
    } else {
        Protocol::Json
    };
    if matches!(&args.command, Command::Call(c) if c.words.is_empty()) {
        return Err(Error::Usage("call: the method is missing".into()).into());
    }
    let mut client = Client::connect_with(&address, protocol, timeout)?;
    if let Some(secret) = &args.secret {
        client.auth(secret).map_err(|e| in_call("system.auth", e))?;
    }
    let mut call =
        |method: &str, params: Value| client.call(method, params).map_err(|e| in_call(method, e));

    let (result, text) = match &args.command {
        Command::Call(c) => {
            let (method, params) = c.words.split_first().expect("checked above");
            let params = params.iter().map(|a| parse_arg(a)).collect();
            let result = call(method, Value::Array(params))?;
            let text = match &result {
                Value::String(s) => s.clone(),
                other => pretty(other),
            };
            (result, text)
        }
        Command::Status(_) => {
            let result = call("daemon.status", Value::Null)?;
            let text = match &result {
                Value::Object(fields) => {
                    let width = fields.keys().map(|k| k.chars().count()).max().unwrap_or(0);
                    fields
                        .iter()
                        .map(|(k, v)| format!("{k:>width$}: {}", raw(v)))
                        .collect::<Vec<_>>()
                        .join("\n")
                }
                other => pretty(other),
            };
            (result, text)
        }
        Command::Methods(_) => {
            let result = call("system.listMethods", Value::Null)?;
            let text = match &result {
                Value::Array(names) => names.iter().map(raw).collect::<Vec<_>>().join("\n"),
                other => pretty(other),
            };
            (result, text)
        }
        Command::Help(h) => {
            let description = call("system.methodHelp", json!([h.method]))?;
            let signatures = call("system.methodSignature", json!([h.method]))?;
            let mut lines = vec![raw(&description)];
            if let Value::Array(signatures) = &signatures {
                for signature in signatures {
                    lines.push(signature_line(&h.method, signature));
                }
            }
            let result = json!({"description": description, "signatures": signatures});
            (result, lines.join("\n"))
        }
        Command::Shutdown(_) => {
            let result = call("daemon.shutdown", Value::Null)?;
            let text = raw(&result);
            (result, text)
        }
        Command::Workers(_) => {
            let result = call("worker.list", Value::Null)?;
            let text = workers_table(&result);
            (result, text)
        }
        Command::Pause(PauseArgs { worker }) | Command::Resume(ResumeArgs { worker }) => {
            let method = match &args.command {
                Command::Pause(_) => "worker.pause",
                _ => "worker.resume",
            };
            let result = call(method, json!([worker]))?;
            let text = state_name(&result).to_owned();
            (result, text)
        }
        Command::Start(StartArgs { worker })
        | Command::Stop(StopArgs { worker })
        | Command::Restart(RestartArgs { worker }) => {
            let method = match &args.command {
                Command::Start(_) => "worker.start",
                Command::Stop(_) => "worker.stop",
                _ => "worker.restart",
            };
            let result = call(method, json!([worker]))?;
            (result, "ok".to_owned())
        }
        Command::Send(s) => {
            let mut params = vec![json!(s.worker), json!(s.command)];
            params.extend(s.payload.as_deref().map(parse_arg));
            let result = call("worker.send", Value::Array(params))?;
            (result, "ok".to_owned())
        }
    };
    Ok(if args.json {
        format!("{result}\n")
    } else {
        format!("{text}\n")
    })
}

/// Names the method in an RPC error.
fn in_call(method: &str, e: Error) -> Failure {
    match e {
        Error::Rpc { .. } => Failure {
            usage: false,
            message: format!("{method}: {e}"),
        },
        e => e.into(),
    }
}

/// A command-line argument as a parameter: JSON when it parses, else the string itself.
fn parse_arg(arg: &str) -> Value {
    serde_json::from_str(arg).unwrap_or_else(|_| Value::String(arg.into()))
}

/// A string as it is, anything else as compact JSON.
fn raw(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// A worker state number as its name.
fn state_name(state: &Value) -> &'static str {
    match state.as_u64() {
        Some(0) => "SPINUP",
        Some(1) => "LOOPING",
        Some(2) => "PAUSED",
        Some(3) => "SPINDOWN",
        Some(4) => "EXITED",
        Some(5) => "FAILED",
        _ => "?",
    }
}

/// `worker.list` as a table.
fn workers_table(list: &Value) -> String {
    let mut rows = vec![
        [
            "NAME", "PID", "STATE", "LOOPTIME", "FOREVER", "RESTARTS", "UPTIME",
        ]
        .map(String::from),
    ];
    for w in list.as_array().into_iter().flatten() {
        let secs = |v: &Value| v.as_f64().map_or("-".to_owned(), |s| format!("{s:.1}s"));
        rows.push([
            raw(&w["name"]),
            w["pid"].as_i64().map_or("-".to_owned(), |p| p.to_string()),
            state_name(&w["state"]).to_owned(),
            secs(&w["looptime"]),
            raw(&w["forever"]),
            raw(&w["restarts"]),
            secs(&w["uptime"]),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `[ret, param...]` as `ret method(param, ...)`.
fn signature_line(method: &str, signature: &Value) -> String {
    match signature.as_array().map(Vec::as_slice) {
        Some([ret, params @ ..]) => {
            let params: Vec<String> = params.iter().map(raw).collect();
            format!("{} {method}({})", raw(ret), params.join(", "))
        }
        _ => raw(signature),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_json_or_strings() {
        assert_eq!(parse_arg("5"), json!(5));
        assert_eq!(parse_arg("true"), json!(true));
        assert_eq!(parse_arg("[1,2]"), json!([1, 2]));
        assert_eq!(parse_arg(r#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(parse_arg(r#""5""#), json!("5"));
        assert_eq!(parse_arg("hello"), json!("hello"));
        assert_eq!(parse_arg("[1,"), json!("[1,"));
        assert_eq!(parse_arg(""), json!(""));
    }

    #[test]
    fn signatures_read_like_declarations() {
        let s = json!(["string", "string", "int"]);
        assert_eq!(signature_line("m", &s), "string m(string, int)");
        assert_eq!(signature_line("m", &json!(["array"])), "array m()");
    }

    #[test]
    fn workers_read_as_a_table() {
        let list = json!([{"name": "handyman", "pid": 42, "state": 2, "looptime": 10.0,
            "forever": true, "restarts": 1, "uptime": 3.25}]);
        let table = workers_table(&list);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{table}");
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["handyman", "42", "PAUSED", "10.0s", "true", "1", "3.2s"]
        );
        assert_eq!(state_name(&json!(5)), "FAILED");
    }
}
