//! The `worker.*` RPC methods: ordinary methods over the supervisor, the one place where
//! workers meet the RPC layer.

use serde_json::{Value, json};

use super::Workers;
use super::supervisor::Toggle;
use crate::bus::Host;
use crate::rpc::{CallContext, Method, Methods, Params, RpcError, Ticket, Type};

/// Registers `worker.list`, `worker.status`, `worker.pause`, `worker.resume`,
/// `worker.start`, `worker.stop`, `worker.restart`, `worker.send` and `worker.log` on `methods`, reaching
/// the supervisor through `workers`.
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
    let log = Method::new("worker.log", move |params: &Params<'_>, ctx: &mut CallContext<'_, H>| {
        let (count, after) = crate::daemon::log_window(params)?;
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
    for m in [list, status, pause, resume, start, stop, restart, send, log] {
        methods.register(m)?;
    }
    Ok(())
}

fn name<'a>(params: &'a Params<'_>) -> Option<&'a str> {
    params.get("name").and_then(Value::as_str)
}
