//! The `worker.*` RPC methods: ordinary methods over the supervisor, the one place where
//! workers meet the RPC layer.

use std::time::Duration;

use serde_json::{Value, json};

use super::Workers;
use super::supervisor::Toggle;
use crate::bus::Host;
use crate::reactor::Signal;
use crate::rpc::{CallContext, Method, Methods, Params, RpcError, Ticket, Type};

/// Registers `worker.list`, `worker.status`, `worker.pause`, `worker.resume`,
/// `worker.start`, `worker.stop`, `worker.restart`, `worker.send`, `worker.call`,
/// `worker.log` and `worker.signal` on `methods`, reaching the supervisor through `workers`.
pub(crate) fn register<H: Host>(
    methods: &mut Methods<H>,
    workers: fn(&mut H) -> &mut Workers,
) -> crate::Result<()> {
    let list = Method::new("worker.list", move |_, ctx: &mut CallContext<'_, H>| {
        let w = workers(ctx.host());
        Ok(Value::Array(w.list().iter().map(|i| i.to_json()).collect()))
    })
    .description("Lists the workers: name, pid, state, looptime, restart type, restarts, uptime")
    .returns(Type::Array);
    let status = Method::new("worker.status", move |params: &Params<'_>, ctx: &mut CallContext<'_, H>| {
        let w = workers(ctx.host());
        match name(params) {
            Some(n) => Ok(json!(w.info(n)?.state as u32)),
            None => Ok(Value::Object(
                w.list()
                    .into_iter()
                    .map(|i| (i.name, json!(i.state as u32)))
                    .collect(),
            )),
        }
    })
    .description("A worker's state (SPINUP 0, LOOPING 1, PAUSED 2, SPINDOWN 3, EXITED 4, FAILED 5), or every worker's by name")
    .returns(Type::Struct)
    .signature()
    .returns(Type::Int)
    .param(Type::String, "name");
    let toggle = |method: &str, toggle: Toggle| {
        Method::new(method, move |params: &Params<'_>, ctx: &mut CallContext<'_, H>| {
            if !ctx.deferrable() {
                let command = if toggle == Toggle::Pause { "pause" } else { "resume" };
                return Err(RpcError::server_error(format!(
                    "worker.{command} waits for the worker's acknowledgement: call it on its own, not in a batch, a multicall or a notification"
                )));
            }
            let id = workers(ctx.host()).toggle(name(params), toggle, true)?;
            Err(RpcError::deferred(Ticket(id)))
        })
        .returns(Type::Struct)
        .signature()
        .returns(Type::Int)
        .param(Type::String, "name")
    };
    let pause = toggle("worker.pause", Toggle::Pause)
        .description("Pauses a worker (or all): the reply comes once it acknowledged, with its state; a pause not acknowledged in time is cancelled");
    let resume = toggle("worker.resume", Toggle::Resume).description(
        "Resumes a worker (or all): the reply comes once it acknowledged, with its state",
    );
    let start = Method::new("worker.start", move |params: &Params<'_>, ctx: &mut CallContext<'_, H>| {
        workers(ctx.host()).start(params.str("name")?)?;
        Ok(json!(true))
    })
    .description("Starts a worker that is not running (also a FAILED or stopped one; its restart count starts again)")
    .returns(Type::Boolean)
    .param(Type::String, "name");
    let stop = Method::new(
        "worker.stop",
        move |params: &Params<'_>, ctx: &mut CallContext<'_, H>| {
            workers(ctx.host()).stop(params.str("name")?)?;
            Ok(json!(true))
        },
    )
    .description(
        "Stops a worker: stop on its channel, then SIGTERM, then SIGKILL; no restart until started",
    )
    .returns(Type::Boolean)
    .param(Type::String, "name");
    let restart = Method::new(
        "worker.restart",
        move |params: &Params<'_>, ctx: &mut CallContext<'_, H>| {
            workers(ctx.host()).restart(params.str("name")?)?;
            Ok(json!(true))
        },
    )
    .description("Stops a worker and starts it again (a stop after it wins)")
    .returns(Type::Boolean)
    .param(Type::String, "name");
    let send = Method::new("worker.send", move |params: &Params<'_>, ctx: &mut CallContext<'_, H>| {
        let payload = params.get("payload").cloned();
        let (worker, command) = (params.str("name")?, params.str("command")?);
        workers(ctx.host()).send(worker, command, payload)?;
        Ok(json!(true))
    })
    .description("Sends a command, with an optional payload, to a worker: daemon.worker.<command> on its bus (stop, pause and resume have their own methods)")
    .returns(Type::Boolean)
    .param(Type::String, "name")
    .param(Type::String, "command")
    .signature()
    .returns(Type::Boolean)
    .param(Type::String, "name")
    .param(Type::String, "command")
    .param(Type::Any, "payload");
    let call = Method::new("worker.call", move |params: &Params<'_>, ctx: &mut CallContext<'_, H>| {
        let payload = params.get("payload").filter(|p| !p.is_null()).cloned();
        let (worker, command) = (params.str("name")?, params.str("command")?);
        let timeout = call_timeout(params.get("timeout"))?;
        let reply = ctx.defer(timeout)?;
        workers(ctx.host()).call(worker, command, payload, reply)?;
        // Not sent: the worker's answer is.
        Ok(Value::Null)
    })
    .description("Calls a worker's command handler and replies with what it returns: its value, or its error (code and message); -32000 if the worker exits before replying or does not reply within timeout seconds (default 5). Not in a batch, a multicall or a notification")
    .returns(Type::Any)
    .param(Type::String, "name")
    .param(Type::String, "command")
    .signature()
    .returns(Type::Any)
    .param(Type::String, "name")
    .param(Type::String, "command")
    .param(Type::Any, "payload")
    .signature()
    .returns(Type::Any)
    .param(Type::String, "name")
    .param(Type::String, "command")
    .param(Type::Any, "payload")
    .param(Type::Double, "timeout")
    .signature()
    .returns(Type::Any)
    .param(Type::String, "name")
    .param(Type::String, "command")
    .param(Type::Double, "timeout");
    let log = Method::new("worker.log", move |params: &Params<'_>, ctx: &mut CallContext<'_, H>| {
        let (count, after) = log_window(params)?;
        Ok(workers(ctx.host()).log(params.str("name")?, count, after)?)
    })
    .description("A worker's last lines (stdout, stderr, its own log): {lines: [{seq, time, stream, level, text}], next, dropped}; with after, only the lines past that seq (pass next back to follow)")
    .returns(Type::Struct)
    .param(Type::String, "name")
    .signature()
    .returns(Type::Struct)
    .param(Type::String, "name")
    .param(Type::Int, "lines")
    .signature()
    .returns(Type::Struct)
    .param(Type::String, "name")
    .param(Type::Int, "lines")
    .param(Type::Int, "after")
    .signature()
    .returns(Type::Struct)
    .param(Type::String, "name")
    .param(Type::Int, "after");
    let signal = Method::new("worker.signal", move |params: &Params<'_>, ctx: &mut CallContext<'_, H>| {
        let name = params.str("name")?;
        let signal = parse_signal(params.get("signal").unwrap_or(&Value::Null))?;
        let w = workers(ctx.host());
        w.kill(name, signal)?;
        // kill() succeeded, so the worker runs and has a pid.
        let pid = w.info(name)?.pid;
        Ok(json!({"worker": name, "pid": pid, "signal": signal.name()}))
    })
    .description("Sends a signal to a running worker's process: the signal as a name (\"SIGHUP\", \"HUP\", \"hup\") or a number; {worker, pid, signal}; an unknown signal is -32602, a worker not running -32000. The supervisor sees the outcome as for any exit (SIGTERM or SIGKILL: the restart policy applies)")
    .returns(Type::Struct)
    .param(Type::String, "name")
    .param(Type::String, "signal")
    .signature()
    .returns(Type::Struct)
    .param(Type::String, "name")
    .param(Type::Int, "signal");
    for m in [
        list, status, pause, resume, start, stop, restart, send, call, log, signal,
    ] {
        methods.register(m)?;
    }
    Ok(())
}

/// A signal parameter: a standard signal's name in any case, with or without `SIG`, or its
/// number. Anything else is `-32602` naming what was given.
fn parse_signal(value: &Value) -> Result<Signal, RpcError> {
    let found = match value {
        Value::String(s) => match s.trim().parse::<i32>() {
            Ok(n) => Signal::from_number(n),
            Err(_) => Signal::from_name(&s.trim().to_ascii_uppercase()),
        },
        Value::Number(n) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .and_then(Signal::from_number),
        _ => None,
    };
    found.ok_or_else(|| {
        RpcError::invalid_params(format!(
            "parameter 'signal': unknown signal {value} (a name such as SIGHUP or HUP, or a number)"
        ))
    })
}

/// How long `worker.call` waits when not told.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest `worker.call` may be told to wait.
const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The `timeout` param of `worker.call`: seconds, more than 0 and at most a day.
fn call_timeout(value: Option<&Value>) -> Result<Duration, RpcError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(CALL_TIMEOUT);
    };
    value
        .as_f64()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero() && *d <= MAX_CALL_TIMEOUT)
        .ok_or_else(|| {
            RpcError::invalid_params(format!(
                "parameter 'timeout': {value} is not a number of seconds above 0 and at most 86400"
            ))
        })
}

fn name<'a>(params: &'a Params<'_>) -> Option<&'a str> {
    params.get("name").and_then(Value::as_str)
}

/// The `lines` (default 100, at most 100000) and `after` params of `daemon.log` and
/// `worker.log`.
pub(crate) fn log_window(params: &Params<'_>) -> Result<(usize, Option<u64>), RpcError> {
    let count = match params.get("lines") {
        None | Some(Value::Null) => 100,
        Some(v) => v
            .as_u64()
            .filter(|&n| n <= 100_000)
            .ok_or_else(|| RpcError::invalid_params("lines: an integer in 0..=100000"))?
            as usize,
    };
    let after = match params.get("after") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| RpcError::invalid_params("after: a non-negative integer"))?,
        ),
    };
    Ok((count, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_in_any_case_or_number() {
        for v in [
            json!("SIGHUP"),
            json!("HUP"),
            json!("hup"),
            json!(" SigHup "),
            json!(1),
            json!("1"),
        ] {
            assert_eq!(parse_signal(&v).unwrap(), Signal::HUP, "{v}");
        }
        assert_eq!(parse_signal(&json!("term")).unwrap(), Signal::TERM);
        for v in [
            json!("SIGNOPE"),
            json!(0),
            json!(99),
            json!(-1),
            json!(""),
            json!(null),
            json!(1.5),
        ] {
            let e = parse_signal(&v).unwrap_err();
            assert_eq!(e.code, -32602, "{v}");
            assert!(e.to_string().contains(&v.to_string()), "{v}: {e}");
        }
    }

    #[test]
    fn call_timeouts_default_and_are_bounded() {
        assert_eq!(call_timeout(None).unwrap(), CALL_TIMEOUT);
        assert_eq!(call_timeout(Some(&Value::Null)).unwrap(), CALL_TIMEOUT);
        assert_eq!(
            call_timeout(Some(&json!(0.25))).unwrap(),
            Duration::from_millis(250)
        );
        for bad in [json!(0), json!(-1), json!(1e12), json!(f64::MAX)] {
            let e = call_timeout(Some(&bad)).unwrap_err();
            assert_eq!(e.code, -32602, "{bad}");
        }
    }
}
