//! Methods, the registry, and the context a handler runs in.

use std::any::Any;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use serde_json::{Value, json};
use slog::{Logger, error};

use super::signature::{self, Params, Signature, Type};
use super::{Engine, Meta, RpcError};
use crate::bus::{Bus, Event, Host, RpcEvent};
use crate::error::{Error, Result};

type HandlerFn = dyn FnMut(&Params<'_>, &mut CallContext<'_>) -> Result<Value, RpcError>;

enum Handler {
    User(Box<HandlerFn>),
    Builtin(Builtin),
}

#[derive(Clone, Copy)]
enum Builtin {
    ListMethods,
    MethodHelp,
    MethodSignature,
    GetCapabilities,
    Multicall,
    Auth,
    Shutdown,
    Status,
    WorkerList,
    WorkerStatus,
    WorkerPause,
    WorkerResume,
    WorkerStart,
    WorkerStop,
    WorkerRestart,
    WorkerSend,
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
/// assert_eq!(echo.name(), "examples.echo");
/// ```
pub struct Method {
    name: String,
    description: String,
    signatures: Vec<Signature>,
    handler: Handler,
}

impl Method {
    /// A method named `name` answered by `handler`, with one signature: no parameters,
    /// returning `any`.
    pub fn new<F>(name: impl Into<String>, handler: F) -> Method
    where
        F: FnMut(&Params<'_>, &mut CallContext<'_>) -> Result<Value, RpcError> + 'static,
    {
        Method::with_handler(name.into(), Handler::User(Box::new(handler)))
    }

    fn with_handler(name: String, handler: Handler) -> Method {
        Method {
            name,
            description: String::new(),
            signatures: vec![Signature::default()],
            handler,
        }
    }

    /// Sets the description `system.methodHelp` returns.
    pub fn description(mut self, text: impl Into<String>) -> Method {
        self.description = text.into();
        self
    }

    /// Adds a parameter to the current signature.
    pub fn param(mut self, t: Type, name: impl Into<String>) -> Method {
        self.current().push(t, name.into());
        self
    }

    /// Sets the current signature's return type.
    pub fn returns(mut self, t: Type) -> Method {
        self.current().set_returns(t);
        self
    }

    /// Starts a new signature, which becomes the current one.
    pub fn signature(mut self) -> Method {
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

/// What a handler may do while it runs: stop the daemon, emit events, log, learn who called.
pub struct CallContext<'a> {
    pub(crate) host: &'a mut dyn Host,
    pub(crate) bus: &'a mut Bus,
    pub(crate) meta: &'a Meta<'a>,
}

impl CallContext<'_> {
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

    /// The process hosting the call as its concrete type `H`, if it is one.
    pub fn host<H: Any>(&mut self) -> Option<&mut H> {
        self.host.as_any().downcast_mut::<H>()
    }

    /// The daemon's workers, to forward a command to one (the seed's `handyman.changename`).
    ///
    /// # Errors
    ///
    /// `-32000` where there are no workers (a process that is not the daemon).
    pub fn workers(&mut self) -> Result<&mut crate::worker::Workers, RpcError> {
        self.host
            .workers()
            .ok_or_else(|| RpcError::server_error("this process has no workers"))
    }
}

/// The method registry, with the built-in `system.*` and `daemon.*` methods.
pub struct Methods {
    map: HashMap<String, Method>,
    calls: u64,
    started: Instant,
    socket: String,
}

impl Default for Methods {
    fn default() -> Self {
        Methods::new()
    }
}

impl Methods {
    /// A registry holding the built-in methods.
    pub fn new() -> Methods {
        let mut methods = Methods {
            map: HashMap::new(),
            calls: 0,
            started: Instant::now(),
            socket: String::new(),
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
            builtin("daemon.shutdown", Builtin::Shutdown)
                .description("Stops the daemon, after this reply")
                .returns(Type::Int),
            builtin("daemon.status", Builtin::Status)
                .description("The daemon's pid, version, uptime, socket, connections, calls served and workers")
                .returns(Type::Struct),
            builtin("worker.list", Builtin::WorkerList)
                .description("Lists the workers: name, pid, state, looptime, forever, restarts, uptime")
                .returns(Type::Array),
            builtin("worker.status", Builtin::WorkerStatus)
                .description("A worker's state (SPINUP 0, LOOPING 1, PAUSED 2, SPINDOWN 3, EXITED 4, FAILED 5), or every worker's by name")
                .returns(Type::Struct)
                .signature()
                .returns(Type::Int)
                .param(Type::String, "name"),
            builtin("worker.pause", Builtin::WorkerPause)
                .description("Pauses a worker (or all): the reply comes once it acknowledged, with its state")
                .returns(Type::Struct)
                .signature()
                .returns(Type::Int)
                .param(Type::String, "name"),
            builtin("worker.resume", Builtin::WorkerResume)
                .description("Resumes a worker (or all): the reply comes once it acknowledged, with its state")
                .returns(Type::Struct)
                .signature()
                .returns(Type::Int)
                .param(Type::String, "name"),
            builtin("worker.start", Builtin::WorkerStart)
                .description("Starts a worker that is not running (also a FAILED or stopped one)")
                .returns(Type::Boolean)
                .param(Type::String, "name"),
            builtin("worker.stop", Builtin::WorkerStop)
                .description("Stops a worker: stop on its channel, then SIGTERM, then SIGKILL; no restart until started")
                .returns(Type::Boolean)
                .param(Type::String, "name"),
            builtin("worker.restart", Builtin::WorkerRestart)
                .description("Stops a worker and starts it again")
                .returns(Type::Boolean)
                .param(Type::String, "name"),
            builtin("worker.send", Builtin::WorkerSend)
                .description("Sends a command, with an optional payload, to a worker: daemon.worker.<command> on its bus")
                .returns(Type::Boolean)
                .param(Type::String, "name")
                .param(Type::String, "command")
                .signature()
                .returns(Type::Boolean)
                .param(Type::String, "name")
                .param(Type::String, "command")
                .param(Type::Any, "payload"),
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
    /// [`Error::Config`] if a method of that name exists (built-in ones included).
    pub fn register(&mut self, method: Method) -> Result<()> {
        if self.map.contains_key(&method.name) {
            return Err(Error::config(
                "rpc",
                format!("method '{}' is already registered", method.name),
            ));
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
    pub fn get(&self, name: &str) -> Option<&Method> {
        self.map.get(name)
    }

    /// How many calls were served.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    pub(crate) fn set_socket(&mut self, socket: String) {
        self.socket = socket;
        self.started = Instant::now();
    }

    /// Runs a call: match a signature, let listeners observe or refuse it, run the handler.
    pub(crate) fn call(
        &mut self,
        name: &str,
        params: Value,
        ctx: &mut CallContext<'_>,
    ) -> Result<Value, RpcError> {
        self.calls += 1;
        let method = self
            .map
            .get_mut(name)
            .ok_or_else(|| RpcError::method_not_found(name))?;
        let bound = signature::bind(name, &method.signatures, params)?;
        if ctx.bus.may_receive(RpcEvent::PREFIX) {
            let event = RpcEvent::new(name, Value::Object(bound.to_object()), ctx.meta.peer);
            ctx.bus.dispatch_now(&event, &mut *ctx.host);
            if let Some(refusal) = event.refusal() {
                return Err(refusal);
            }
        }
        match &mut method.handler {
            Handler::User(handler) => {
                match catch_unwind(AssertUnwindSafe(|| handler(&bound, ctx))) {
                    Ok(outcome) => outcome,
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
        ctx: &mut CallContext<'_>,
    ) -> Result<Value, RpcError> {
        let named = |args: &[Value]| -> Result<&Method, RpcError> {
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
            Builtin::GetCapabilities => Ok(capabilities()),
            Builtin::Multicall => {
                let Value::Array(calls) = args.swap_remove(0) else {
                    unreachable!("the signature says array")
                };
                Ok(Value::Array(
                    calls
                        .into_iter()
                        .map(|c| self.one_of_multicall(c, ctx))
                        .collect(),
                ))
            }
            Builtin::Auth => Ok(Value::Bool(true)),
            Builtin::Shutdown => {
                ctx.stop(0);
                Ok(json!(0))
            }
            Builtin::Status => Ok(json!({
                "pid": crate::process::pid(),
                "version": env!("CARGO_PKG_VERSION"),
                "uptime": self.started.elapsed().as_secs_f64(),
                "socket": self.socket,
                "connections": ctx.meta.connections,
                "calls": self.calls,
                "workers": ctx.host.workers().map(|w| w.summary()),
            })),
            Builtin::WorkerList
            | Builtin::WorkerStatus
            | Builtin::WorkerPause
            | Builtin::WorkerResume
            | Builtin::WorkerStart
            | Builtin::WorkerStop
            | Builtin::WorkerRestart
            | Builtin::WorkerSend => worker_builtin(b, args, ctx),
        }
    }

    fn one_of_multicall(&mut self, call: Value, ctx: &mut CallContext<'_>) -> Value {
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
        };
        match self.call(&name, params, &mut inner) {
            Ok(result) => Value::Array(vec![result]),
            Err(e) => fault(e),
        }
    }
}

/// The `worker.*` methods, through the host's [`Workers`].
fn worker_builtin(
    b: Builtin,
    mut args: Vec<Value>,
    ctx: &mut CallContext<'_>,
) -> Result<Value, RpcError> {
    let deferrable = ctx.meta.deferrable;
    let workers = ctx
        .host
        .workers()
        .ok_or_else(|| RpcError::server_error("this process has no workers"))?;
    let name = args.first().and_then(Value::as_str).map(str::to_owned);
    let named = || {
        name.clone()
            .ok_or_else(|| RpcError::invalid_params("a worker name"))
    };
    match b {
        Builtin::WorkerList => Ok(Value::Array(
            workers.list().iter().map(|w| w.to_json()).collect(),
        )),
        Builtin::WorkerStatus => match &name {
            Some(n) => Ok(json!(workers.info(n)?.state as u32)),
            None => Ok(Value::Object(
                workers
                    .list()
                    .into_iter()
                    .map(|w| (w.name, json!(w.state as u32)))
                    .collect(),
            )),
        },
        Builtin::WorkerPause | Builtin::WorkerResume => {
            let command = if matches!(b, Builtin::WorkerPause) {
                "pause"
            } else {
                "resume"
            };
            if !deferrable {
                return Err(RpcError::server_error(format!(
                    "worker.{command} waits for the worker's acknowledgement: call it on its own, not in a batch, a multicall or a notification"
                )));
            }
            let ticket = workers.command_with_ack(name.as_deref(), command)?;
            Err(RpcError::deferred(ticket))
        }
        Builtin::WorkerStart => workers.start(&named()?).map(|()| json!(true)),
        Builtin::WorkerStop => workers.stop(&named()?).map(|()| json!(true)),
        Builtin::WorkerRestart => workers.restart(&named()?).map(|()| json!(true)),
        Builtin::WorkerSend => {
            let payload = (args.len() == 3).then(|| args.pop()).flatten();
            let command = args
                .get(1)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            workers
                .send(&named()?, &command, payload)
                .map(|()| json!(true))
        }
        _ => unreachable!("only worker built-ins come here"),
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
pub(crate) struct DaemonEngine<'a> {
    pub(crate) methods: &'a mut Methods,
    pub(crate) bus: &'a mut Bus,
    pub(crate) host: &'a mut dyn Host,
}

impl Engine for DaemonEngine<'_> {
    fn call(&mut self, meta: &Meta<'_>, method: &str, params: Value) -> Result<Value, RpcError> {
        let mut ctx = CallContext {
            host: &mut *self.host,
            bus: &mut *self.bus,
            meta,
        };
        self.methods.call(method, params, &mut ctx)
    }
}

#[cfg(test)]
mod tests;
