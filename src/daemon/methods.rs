//! The `daemon.*` methods, registered as ordinary methods, and the `worker.*` ones from the
//! worker side.

use serde_json::json;

use super::DaemonHost;
use crate::rpc::{CallContext, Method, Methods, Params, RpcError, Type};

pub(super) fn register(methods: &mut Methods<DaemonHost>) -> crate::Result<()> {
    methods.register(
        Method::new(
            "daemon.shutdown",
            |_, ctx: &mut CallContext<'_, DaemonHost>| {
                ctx.stop(0);
                Ok(json!(0))
            },
        )
        .description("Stops the daemon, after this reply")
        .returns(Type::Int),
    )?;
    methods.register(
        Method::new(
            "daemon.status",
            |_, ctx: &mut CallContext<'_, DaemonHost>| {
                let (connections, calls) = (ctx.connections(), ctx.calls());
                let host = ctx.host();
                Ok(json!({
                    "pid": crate::process::pid(),
                    "version": env!("CARGO_PKG_VERSION"),
                    "uptime": host.uptime().as_secs_f64(),
                    "socket": host.socket(),
                    "connections": connections,
                    "calls": calls,
                    "workers": host.workers().summary(),
                    "log_dropped": crate::log::dropped(),
                    "app": {"name": host.app().0, "version": host.app().1},
                    "daimon": {"version": env!("CARGO_PKG_VERSION")},
                }))
            },
        )
        .description(
            "The daemon's pid, version, uptime, socket, connections, calls served, workers, \
             log lines dropped, and the application's name and version (app) beside daimon's",
        )
        .returns(Type::Struct),
    )?;
    methods.register(
        Method::new(
            "daemon.reload",
            |_, ctx: &mut CallContext<'_, DaemonHost>| {
                let host = ctx.host();
                let done = host
                    .reload()
                    .map_err(|e| RpcError::server_error(format!("reload refused: {e}")))?;
                let file = host.reload.file.as_ref();
                let mut result = json!({
                    "applied": done.applied,
                    "restart_needed": done.restart_needed,
                    "config": file.map(|f| f.to_string_lossy().into_owned()),
                });
                if file.is_none() {
                    result["note"] = json!("no configuration file");
                }
                Ok(result)
            },
        )
        .description(
            "Reads the --config file again, as SIGHUP does: {applied, restart_needed, config}; \
             an invalid file is refused naming the key, and the running configuration kept",
        )
        .returns(Type::Struct),
    )?;
    methods.register(
        Method::new(
            "daemon.log",
            |params: &Params<'_>, ctx: &mut CallContext<'_, DaemonHost>| {
                let (count, after) = crate::worker::methods::log_window(params)?;
                Ok(ctx.host().log_control().daemon_log(count, after))
            },
        )
        .description(
            "The daemon's last log lines: {lines: [{seq, time, stream, level, text}], next, \
             dropped}; with after, only the lines past that seq (pass next back to follow)",
        )
        .returns(Type::Struct)
        .signature()
        .returns(Type::Struct)
        .param(Type::Int, "lines")
        .signature()
        .returns(Type::Struct)
        .param(Type::Int, "lines")
        .param(Type::Int, "after")
        .signature()
        .returns(Type::Struct)
        .param(Type::Int, "after"),
    )?;
    methods.register(
        Method::new(
            "daemon.reopenlogs",
            |_, ctx: &mut CallContext<'_, DaemonHost>| {
                let host = ctx.host();
                let reopened = host.reopen_log()?;
                let path = host.log_path().map(|p| p.to_string_lossy().into_owned());
                Ok(json!({"reopened": reopened, "path": path}))
            },
        )
        .description(
            "Reopens the log file at its path (after logrotate moved it), as SIGUSR1 does: \
             {reopened, path}",
        )
        .returns(Type::Struct),
    )?;
    crate::worker::methods::register(methods, DaemonHost::workers)
}
