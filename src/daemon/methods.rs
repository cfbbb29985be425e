//! The `daemon.*` methods, registered as ordinary methods, and the `worker.*` ones from the
//! worker side.

use serde_json::json;

use super::DaemonHost;
use crate::rpc::{CallContext, Method, Methods, Type};

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
                }))
            },
        )
        .description(
            "The daemon's pid, version, uptime, socket, connections, calls served, workers and \
             log lines dropped",
        )
        .returns(Type::Struct),
    )?;
    crate::worker::methods::register(methods, DaemonHost::workers)
}
