//! `daemon.subscribe` and `daemon.unsubscribe`: the bus reaches the control socket's clients.
//!
//! One listener on the daemon's bus, subscribed first of all to the union of every client's
//! patterns (renewed when they change), hands each matching event to the host's
//! [`Subscribers`]; the loop then writes them to the connections (see
//! `socket::subscribers`).

use serde_json::{Value, json};

use super::DaemonHost;
use crate::bus::{Bus, Context, Event, Listener, PostAction};
use crate::rpc::{CallContext, Method, Methods, Params, RpcError, Type};
use crate::socket::subscribers::Subscribers;

/// The daemon's listener for the control socket's subscribers.
struct Forward;

impl Listener<DaemonHost> for Forward {
    fn handle(&mut self, event: &dyn Event, ctx: &mut Context<'_, DaemonHost>) -> PostAction {
        ctx.host().subscribers.publish(event);
        PostAction::Continue
    }
}

/// Subscribes the forwarding listener anew if the clients' patterns changed (a no-op
/// otherwise, so the loop calls it after every change it might have caused).
pub(crate) fn renew(bus: &mut Bus<DaemonHost>, subs: &mut Subscribers) {
    let Some(patterns) = subs.take_change() else {
        return;
    };
    if let Some(old) = subs.forward.take() {
        let _ = bus.unsubscribe(old);
    }
    if !patterns.is_empty() {
        subs.forward = Some(bus.subscribe_remote(patterns, Forward));
    }
}

fn connection(ctx: &CallContext<'_, DaemonHost>) -> Result<crate::rpc::ConnectionId, RpcError> {
    ctx.connection()
        .ok_or_else(|| RpcError::server_error("only a control-socket connection can subscribe"))
}

pub(super) fn register(methods: &mut Methods<DaemonHost>) -> crate::Result<()> {
    methods.register(
        Method::new(
            "daemon.subscribe",
            |params: &Params<'_>, ctx: &mut CallContext<'_, DaemonHost>| {
                let conn = connection(ctx)?;
                let patterns: Vec<String> = match params.get("patterns") {
                    Some(Value::Array(list)) => list
                        .iter()
                        .map(|p| {
                            p.as_str().map(str::to_owned).ok_or_else(|| {
                                RpcError::invalid_params(format!("a pattern is a string, not {p}"))
                            })
                        })
                        .collect::<Result<_, _>>()?,
                    _ => return Err(RpcError::invalid_params("patterns: an array of strings")),
                };
                let id = ctx
                    .host
                    .subscribers
                    .subscribe(conn, &patterns)
                    .map_err(|e| match e {
                        crate::Error::BadPattern(p) => RpcError::invalid_params(format!(
                            "bad pattern '{p}': an exact name, or a prefix ending in '*'"
                        )),
                        other => RpcError::from(other),
                    })?;
                renew(ctx.bus, &mut ctx.host.subscribers);
                Ok(json!(id))
            },
        )
        .description(
            "Subscribes this connection to the events named by patterns (exact names, or \
             prefixes ending in '*'); returns the subscription's id. Each event then arrives \
             as a daemon.event notification: {subscription, name, time, data}",
        )
        .param(Type::Array, "patterns")
        .returns(Type::Int),
    )?;
    methods.register(
        Method::new(
            "daemon.unsubscribe",
            |params: &Params<'_>, ctx: &mut CallContext<'_, DaemonHost>| {
                let conn = connection(ctx)?;
                let id = params.i64("subscription")?;
                let id = u64::try_from(id).unwrap_or(0);
                if !ctx.host.subscribers.unsubscribe(conn, id) {
                    return Err(RpcError::server_error(format!(
                        "no subscription {id} on this connection"
                    )));
                }
                renew(ctx.bus, &mut ctx.host.subscribers);
                Ok(json!(true))
            },
        )
        .description("Ends one of this connection's subscriptions")
        .param(Type::Int, "subscription")
        .returns(Type::Boolean),
    )?;
    Ok(())
}
