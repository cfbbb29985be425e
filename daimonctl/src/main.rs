//! `daimonctl`: calls a daimon daemon's methods over its control socket.
//!
//! ```text
//! daimonctl -s unix:///run/echo.sock status
//! daimonctl call examples.echo hello
//! daimonctl call examples.echo message=hello
//! daimonctl help worker.signal
//! DAIMON_SOCKET=tcp://127.0.0.1:10042 daimonctl --secret s3cret --json methods
//! daimonctl log handyman -n 20 -f
//! daimonctl events 'daemon.worker.*'
//! daimonctl restart handyman
//! daimonctl call-worker handyman stats
//! daimonctl top
//! daimonctl signal handyman HUP
//! daimonctl reload
//! ```
//!
//! Results are printed for people, or with `--json` as compact JSON on one line (`log` and
//! `events`: one JSON object per line). Errors go to standard error as `error: ...` with exit code 1
//! (the daemon refused, or could not be reached); usage errors exit with 2.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use args::{Args, Command, DEFAULT_SOCKET, PauseArgs, ResumeArgs};
use call::parse_arg;
use daimon::Error;
use daimon::client::{Client, Protocol};
use daimon::socket::Address;
use serde_json::{Value, json};
use show::{pretty, raw, state_name, workers_table};
use wait::Goal;

mod args;
mod call;
mod events;
mod log;
mod show;
mod top;
mod wait;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let program = argv.first().map_or("daimonctl", String::as_str);
    let strs: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    let args = match <Args as argh::FromArgs>::from_args(&[program], &strs) {
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
pub(crate) struct Failure {
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

/// Runs the command and returns what to print (`log` prints as it goes and returns
/// nothing).
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
            let params = call::params(params)?;
            let result = call(method, params)?;
            let text = match &result {
                Value::String(s) => s.clone(),
                other => pretty(other),
            };
            (result, text)
        }
        Command::Status(_) => {
            let result = call("daemon.status", Value::Null)?;
            // The workers' table is for people; a daemon without worker.list has none.
            let workers = if args.json {
                None
            } else {
                call("worker.list", Value::Null).ok()
            };
            let text = show::status_page(&result, workers.as_ref());
            (result, text)
        }
        Command::Log(l) => {
            log::run(&mut client, l, args.json)?;
            return Ok(String::new());
        }
        Command::Signal(s) => {
            let result = call("worker.signal", json!([s.worker, parse_arg(&s.signal)]))?;
            let text = format!(
                "{} sent to {} (pid {})",
                raw(&result["signal"]),
                raw(&result["worker"]),
                raw(&result["pid"])
            );
            (result, text)
        }
        Command::Reload(_) => {
            let result = call("daemon.reload", Value::Null)?;
            let text = show::reload_result(&result);
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
        Command::Help(h) => call::help(&mut client, &h.method)?,
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
        Command::Start(a) => waiting(&mut client, Goal::Start, &a.worker, a.timeout, a.no_wait)?,
        Command::Stop(a) => waiting(&mut client, Goal::Stop, &a.worker, a.timeout, a.no_wait)?,
        Command::Restart(a) => {
            waiting(&mut client, Goal::Restart, &a.worker, a.timeout, a.no_wait)?
        }
        Command::CallWorker(c) => {
            let payload = c.payload.as_deref().map(parse_arg);
            let result = client
                .call_worker(&c.worker, &c.command, payload, timeout)
                .map_err(|e| in_call("worker.call", e))?;
            let text = match &result {
                Value::String(s) => s.clone(),
                other => pretty(other),
            };
            (result, text)
        }
        Command::Events(e) => {
            events::run(&mut client, e, args.json)?;
            return Ok(String::new());
        }
        Command::Top(_) | Command::Watch(_) => {
            top::run(client)?;
            return Ok(String::new());
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
pub(crate) fn in_call(method: &str, e: Error) -> Failure {
    match e {
        Error::Rpc { .. } => Failure {
            usage: false,
            message: format!("{method}: {e}"),
        },
        e => e.into(),
    }
}

/// `start`, `stop`, `restart`: the request, then (unless `--no-wait`) its outcome.
fn waiting(
    client: &mut Client,
    goal: Goal,
    worker: &str,
    timeout: f64,
    no_wait: bool,
) -> Result<(Value, String), Failure> {
    let timeout = Duration::try_from_secs_f64(timeout).map_err(|_| {
        Error::Usage(format!(
            "--timeout: expected a number of seconds, got {timeout}"
        ))
    })?;
    wait::run(client, goal, worker, timeout, no_wait)
}
