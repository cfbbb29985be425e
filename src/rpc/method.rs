//! Methods, the registry, and the context a handler runs in.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slog::{Logger, error};

use super::signature::{self, Params, Signature, Type};
use super::{CallEvent, ConnectionId, Engine, Meta, Reply, RpcError, RpcEvent, Ticket};
use crate::bus::{Bus, Event, Host};
use crate::error::{Error, Result};

type HandlerFn<H> = dyn FnMut(&Params<'_>, &mut CallContext<'_, H>) -> Result<Value, RpcError>;

enum Handler<H> {
    User(Box<HandlerFn<H>>),
    Builtin(Builtin),
}

/// The methods that need the registry itself.
#[derive(Clone, Copy)]
enum Builtin {
    ListMethods,
    MethodHelp,
    MethodSignature,
    MethodParams,
    GetCapabilities,
    Multicall,
    Auth,
}

/// An RPC method: a name, a handler, a description and one or more signatures.
///
/// Built like the ancestor's `RpcMethod`: [`Method::param`] and [`Method::returns`] shape
/// the current signature, [`Method::signature`] starts another one. A method with no
/// declared parameter takes none.
///
/// # Examples
///
/// ```
/// use daimon::rpc::{Method, Type};
///
/// let echo = Method::new("examples.echo", |params, _ctx| Ok(params.str("message")?.into()))
///     .description("I'm here to reply your data")
///     .param(Type::String, "message")
///     .returns(Type::String);
/// # let _: Method<daimon::bus::TestHost> = echo;
/// ```
///
/// The host type `H` is the process's (`DaemonHost` for the daemon's methods); it is inferred
/// where the method is registered, or named: `Method::<DaemonHost>::new(...)`.
pub struct Method<H> {
    name: String,
    description: String,
    signatures: Vec<Signature>,
    handler: Handler<H>,
}

impl<H: Host> Method<H> {
    /// A method named `name` answered by `handler`, with one signature: no parameters,
    /// returning `any`.
    pub fn new<F>(name: impl Into<String>, handler: F) -> Method<H>
    where
        F: FnMut(&Params<'_>, &mut CallContext<'_, H>) -> Result<Value, RpcError> + 'static,
    {
        Method::with_handler(name.into(), Handler::User(Box::new(handler)))
    }

    fn with_handler(name: String, handler: Handler<H>) -> Method<H> {
        Method {
            name,
            description: String::new(),
            signatures: vec![Signature::default()],
            handler,
        }
    }

    /// Sets the description `system.methodHelp` returns.
    pub fn description(mut self, text: impl Into<String>) -> Method<H> {
        self.description = text.into();
        self
    }

    /// Adds a parameter to the current signature.
    pub fn param(mut self, t: Type, name: impl Into<String>) -> Method<H> {
        self.current().push(t, name.into());
        self
    }

    /// Sets the current signature's return type.
    pub fn returns(mut self, t: Type) -> Method<H> {
        self.current().set_returns(t);
        self
    }

    /// Starts a new signature, which becomes the current one.
    pub fn signature(mut self) -> Method<H> {
        self.signatures.push(Signature::default());
        self
    }

    fn current(&mut self) -> &mut Signature {
        self.signatures
            .last_mut()
            .expect("a method has a signature")
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The signatures.
    pub fn signatures(&self) -> &[Signature] {
        &self.signatures
    }
}

/// What a handler may do while it runs: reach its process's host, stop the daemon, emit
/// events, log, learn who called.
pub struct CallContext<'a, H> {
    pub(crate) host: &'a mut H,
    pub(crate) bus: &'a mut Bus<H>,
    pub(crate) meta: &'a Meta<'a>,
    pub(crate) calls: u64,
    /// Set by [`CallContext::defer`]: the reply comes later.
    pub(crate) deferred: Option<Reply>,
}

impl<H: Host> CallContext<'_, H> {
    /// The host with its real type: `DaemonHost` in the daemon, whose `workers()` reach the
    /// workers (the seed's `handyman.changename` forwards a command to one).
    pub fn host(&mut self) -> &mut H {
        self.host
    }

    /// Asks the daemon to stop with exit `code`, once the reply is sent.
    pub fn stop(&mut self, code: i32) {
        self.host.stop(code);
    }

    /// Emits an event on the daemon's bus.
    pub fn emit(&mut self, event: impl Event) {
        self.bus.emit(event);
    }

    /// The daemon's logger.
    pub fn logger(&self) -> &Logger {
        self.host.logger()
    }

    /// Who called: a unix peer's pid and uid, or a tcp address.
    pub fn peer(&self) -> &str {
        self.meta.peer
    }

    /// How many connections are open.
    pub fn connections(&self) -> usize {
        self.meta.connections
    }

    /// The caller's connection, when the call came over the control socket.
    pub fn connection(&self) -> Option<ConnectionId> {
        self.meta.connection
    }

    /// How many calls the registry has served, this one included.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Whether the caller can wait for a reply that comes later (a single request; not a
    /// batch, a multicall or a notification).
    pub fn deferrable(&self) -> bool {
        self.meta.deferrable
    }

    /// Defers the reply: the caller gets it when the returned [`Reply`] is answered
    /// ([`DaemonHost::reply`](crate::DaemonHost::reply), or a worker's answer with
    /// [`Workers::call`](crate::worker::Workers::call)), or a timeout error (-32000) after
    /// `timeout`. Once deferred, the value the handler returns is not sent; an error it
    /// returns is, and the deferral is dropped. The connection answers its next requests
    /// only after this reply.
    ///
    /// # Errors
    ///
    /// -32000 where no one can wait for a later reply: inside a batch, a
    /// `system.multicall`, or a notification. Return it: the caller sees why.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use daimon::rpc::Method;
    /// use daimon::DaemonHost;
    /// use serde_json::json;
    ///
    /// // Replies once the worker `handyman` has answered `changename`.
    /// let changename = Method::<DaemonHost>::new("handyman.changename", |params, ctx| {
    ///     let name = params.str("name")?.to_owned();
    ///     let reply = ctx.defer(Duration::from_secs(5))?;
    ///     ctx.host().workers().call("handyman", "changename", Some(json!(name)), reply)?;
    ///     Ok(json!(null))
    /// });
    /// ```
    pub fn defer(&mut self, timeout: Duration) -> Result<Reply, RpcError> {
        if !self.meta.deferrable {
            return Err(RpcError::server_error(
                "this method replies later: call it on its own, not in a batch, a multicall or a notification",
            ));
        }
        let reply = Reply::new(Ticket::next(), Instant::now() + timeout);
        self.deferred = Some(reply);
        Ok(reply)
    }
}

/// The method registry, with the built-in `system.*` methods; the daemon adds its own
/// `daemon.*` and `worker.*` ones as ordinary methods.
pub struct Methods<H> {
    map: HashMap<String, Method<H>>,
    calls: u64,
    /// The most calls in one `system.multicall` (the daemon sets `socketmaxbatch`).
    max_multicall: usize,
}

impl<H: Host> Default for Methods<H> {
    fn default() -> Self {
        Methods::new()
    }
}

impl<H: Host> Methods<H> {
    /// Caps `system.multicall` at `n` calls, like a batch (`socketmaxbatch`): a longer one
    /// is refused `-32600` before any call runs, so its reply, built whole, stays bounded.
    pub fn set_max_multicall(&mut self, n: usize) {
        self.max_multicall = n.max(1);
    }

    /// A registry holding the built-in methods.
    pub fn new() -> Methods<H> {
        let mut methods = Methods {
            map: HashMap::new(),
            calls: 0,
            max_multicall: 100,
        };
        let builtin = |name: &str, b| Method::with_handler(name.to_owned(), Handler::Builtin(b));
        let list = [
            builtin("system.listMethods", Builtin::ListMethods)
                .description("Lists every method")
                .returns(Type::Array),
            builtin("system.methodHelp", Builtin::MethodHelp)
                .description("Describes a method")
                .returns(Type::String)
                .param(Type::String, "method"),
            builtin("system.methodSignature", Builtin::MethodSignature)
                .description("Lists a method's signatures, each [return, param...]")
                .returns(Type::Array)
                .param(Type::String, "method"),
            builtin("system.methodParams", Builtin::MethodParams)
                .description("Lists a method's signatures with their parameters' names: [{returns, params: [{name, type}...]}...]")
                .returns(Type::Array)
                .param(Type::String, "method"),
            builtin("system.getCapabilities", Builtin::GetCapabilities)
                .description("Lists the specifications this server follows")
                .returns(Type::Struct),
            builtin("system.multicall", Builtin::Multicall)
                .description("Runs several calls: [{methodName, params}...]; each result comes as [result], each failure as {faultCode, faultString}")
                .returns(Type::Array)
                .param(Type::Array, "calls"),
            builtin("system.auth", Builtin::Auth)
                .description("Presents the shared secret a tcp connection needs before any other call")
                .returns(Type::Boolean)
                .param(Type::String, "secret"),
        ];
        for m in list {
            methods.map.insert(m.name.clone(), m);
        }
        methods
    }

    /// Registers a method.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateMethod`] if a method of that name exists (built-in ones included).
    pub fn register(&mut self, method: Method<H>) -> Result<()> {
        if self.map.contains_key(&method.name) {
            return Err(Error::DuplicateMethod(method.name));
        }
        self.map.insert(method.name.clone(), method);
        Ok(())
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.map.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The method named `name`.
    pub fn get(&self, name: &str) -> Option<&Method<H>> {
        self.map.get(name)
    }

    /// How many calls were served.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Runs a call: match a signature, let listeners observe or refuse it, run the handler;
    /// then tell the bus how it was answered (a [`CallEvent`], if anyone listens).
    pub(crate) fn call(
        &mut self,
        name: &str,
        params: Value,
        ctx: &mut CallContext<'_, H>,
    ) -> Result<Value, RpcError> {
        if !ctx.bus.may_receive::<CallEvent>(CallEvent::PREFIX) {
            return self.run(name, params, ctx);
        }
        let started = Instant::now();
        let outcome = self.run(name, params, ctx);
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let event = CallEvent::new(name, ctx.meta.peer, CallEvent::outcome_of(&outcome), micros);
        ctx.bus.emit(event);
        outcome
    }

    fn run(
        &mut self,
        name: &str,
        params: Value,
        ctx: &mut CallContext<'_, H>,
    ) -> Result<Value, RpcError> {
        self.calls += 1;
        ctx.calls = self.calls;
        let method = self
            .map
            .get_mut(name)
            .ok_or_else(|| RpcError::method_not_found(name))?;
        let bound = signature::bind(name, &method.signatures, params)?;
        if ctx.bus.may_receive::<RpcEvent>(RpcEvent::PREFIX) {
            let event = RpcEvent::new(name, Value::Object(bound.to_object()), ctx.meta.peer);
            ctx.bus.dispatch_now(&event, &mut *ctx.host);
            if let Some(refusal) = event.refusal() {
                return Err(refusal);
            }
        }
        match &mut method.handler {
            Handler::User(handler) => {
                ctx.deferred = None;
                match catch_unwind(AssertUnwindSafe(|| handler(&bound, ctx))) {
                    Ok(Ok(value)) => match ctx.deferred.take() {
                        Some(reply) => Err(RpcError::deferred_until(reply)),
                        None => Ok(value),
                    },
                    Ok(Err(e)) => Err(e),
                    Err(panic) => {
                        let message = crate::bus::panic_message(panic.as_ref());
                        error!(ctx.logger(), "method handler panicked"; "method" => name, "panic" => &message);
                        Err(RpcError::internal_error(format!(
                            "the handler of '{name}' panicked: {message}"
                        )))
                    }
                }
            }
            Handler::Builtin(b) => {
                let b = *b;
                let args = bound.into_values();
                self.builtin(b, args, ctx)
            }
        }
    }

    fn builtin(
        &mut self,
        b: Builtin,
        mut args: Vec<Value>,
        ctx: &mut CallContext<'_, H>,
    ) -> Result<Value, RpcError> {
        let named = |args: &[Value]| -> Result<&Method<H>, RpcError> {
            let name = args[0].as_str().unwrap_or_default();
            self.map
                .get(name)
                .ok_or_else(|| RpcError::method_not_found(name))
        };
        match b {
            Builtin::ListMethods => Ok(json!(self.names())),
            Builtin::MethodHelp => Ok(json!(named(&args)?.description)),
            Builtin::MethodSignature => {
                let sigs: Vec<Value> = named(&args)?
                    .signatures
                    .iter()
                    .map(Signature::to_json)
                    .collect();
                Ok(Value::Array(sigs))
            }
            Builtin::MethodParams => Ok(Value::Array(
                named(&args)?
                    .signatures
                    .iter()
                    .map(Signature::to_named_json)
                    .collect(),
            )),
            Builtin::GetCapabilities => Ok(capabilities()),
            Builtin::Multicall => {
                let Value::Array(calls) = args.swap_remove(0) else {
                    unreachable!("the signature says array")
                };
                if calls.len() > self.max_multicall {
                    return Err(RpcError::invalid_request(format!(
                        "a multicall of more than socketmaxbatch ({}) calls",
                        self.max_multicall
                    )));
                }
                Ok(Value::Array(
                    calls
                        .into_iter()
                        .map(|c| self.one_of_multicall(c, ctx))
                        .collect(),
                ))
            }
            Builtin::Auth => Ok(Value::Bool(true)),
        }
    }

    fn one_of_multicall(&mut self, call: Value, ctx: &mut CallContext<'_, H>) -> Value {
        let fault = |e: RpcError| json!({"faultCode": e.code, "faultString": e.message});
        let Value::Object(mut call) = call else {
            return fault(RpcError::invalid_request(
                "a call is {\"methodName\": ..., \"params\": [...]}",
            ));
        };
        let Some(Value::String(name)) = call.remove("methodName") else {
            return fault(RpcError::invalid_request(
                "a call needs a string methodName",
            ));
        };
        if name == "system.multicall" {
            return fault(RpcError::new(
                RpcError::RECURSIVE_MULTICALL,
                "Recursive system.multicall forbidden",
            ));
        }
        let params = call.remove("params").unwrap_or(Value::Null);
        let meta = Meta {
            deferrable: false,
            ..*ctx.meta
        };
        let mut inner = CallContext {
            host: &mut *ctx.host,
            bus: &mut *ctx.bus,
            meta: &meta,
            calls: ctx.calls,
            deferred: None,
        };
        match self.call(&name, params, &mut inner) {
            Ok(result) => Value::Array(vec![result]),
            Err(e) => fault(e),
        }
    }
}

fn capabilities() -> Value {
    let spec = |url: &str, version: Value| json!({"specUrl": url, "specVersion": version});
    json!({
        "json-rpc": spec("https://www.jsonrpc.org/specification", json!(2)),
        "msgpack-rpc": spec("https://github.com/msgpack-rpc/msgpack-rpc/blob/master/spec.md", json!(1)),
        "introspection": spec("http://xmlrpc-c.sourceforge.net/xmlrpc-c/introspection.html", json!(1)),
        "system.multicall": spec("https://mirrors.talideon.com/articles/multicall.html", json!(1)),
        "faults_interop": spec("http://xmlrpc-epi.sourceforge.net/specs/rfc.fault_codes.php", json!(20010516)),
        "nil": spec("http://www.ontosys.com/xml-rpc/extensions.php", json!(20010518)),
    })
}

/// The daemon's [`Engine`]: its methods, its bus, and the process hosting them.
pub(crate) struct DaemonEngine<'a, H> {
    pub(crate) methods: &'a mut Methods<H>,
    pub(crate) bus: &'a mut Bus<H>,
    pub(crate) host: &'a mut H,
}

impl<H: Host> Engine for DaemonEngine<'_, H> {
    fn call(&mut self, meta: &Meta<'_>, method: &str, params: Value) -> Result<Value, RpcError> {
        let mut ctx = CallContext {
            host: &mut *self.host,
            bus: &mut *self.bus,
            meta,
            calls: 0,
            deferred: None,
        };
        self.methods.call(method, params, &mut ctx)
    }

    fn answered(&mut self, meta: &Meta<'_>, method: &str, outcome: &Result<Value, RpcError>) {
        if self.bus.may_receive::<CallEvent>(CallEvent::PREFIX) {
            let outcome = CallEvent::outcome_of(outcome);
            self.bus.emit(CallEvent::new(method, meta.peer, outcome, 0));
        }
    }
}

#[cfg(test)]
mod tests;
