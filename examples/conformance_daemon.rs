//! A daemon serving the methods of the JSON-RPC 2.0 specification's examples, so that they
//! can be replayed against it byte for byte; `tests/python/conformance.py` does, through
//! `tests/python_conformance.rs`.
//!
//! ```text
//! cargo run --example conformance_daemon -- -f --socket unix:///tmp/conformance.sock
//! echo '{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}' \
//!     | nc -U -q1 /tmp/conformance.sock
//! ```
//!
//! The methods are those of the specification (`subtract`, `sum`, `update`, `notify_hello`,
//! `notify_sum`, `get_data`; `foobar` and `foo.get` are deliberately absent), plus `echo`,
//! `fail` (a handler's own error) and `panic` (a handler that panics). SIGTERM and SIGINT
//! stop it.

use std::process::ExitCode;

use daimon::rpc::{Method, RpcError, Type};
use daimon::{Config, Daemon, DaemonHost};
use serde_json::{Value, json};

fn main() -> ExitCode {
    let mut config = Config::default();
    config.description = "Conformance Daemon".into();

    Daemon::new(config)
        .setup(|daemon| {
            for method in methods() {
                daemon.rpc().register(method)?;
            }
            Ok(())
        })
        .init()
}

/// Every method of the daemon.
fn methods() -> Vec<Method<DaemonHost>> {
    vec![
        Method::new("subtract", |params, _ctx| {
            let (a, b) = (params.i64("minuend")?, params.i64("subtrahend")?);
            a.checked_sub(b)
                .map(Value::from)
                .ok_or_else(|| RpcError::invalid_params("the difference overflows an int"))
        })
        .description("Subtracts subtrahend from minuend")
        .returns(Type::Int)
        .param(Type::Int, "minuend")
        .param(Type::Int, "subtrahend"),
        Method::new("sum", |params, _ctx| {
            let mut total = 0i64;
            for name in ["a", "b", "c"] {
                total = total
                    .checked_add(params.i64(name)?)
                    .ok_or_else(|| RpcError::invalid_params("the sum overflows an int"))?;
            }
            Ok(json!(total))
        })
        .description("Adds a, b and c")
        .returns(Type::Int)
        .param(Type::Int, "a")
        .param(Type::Int, "b")
        .param(Type::Int, "c"),
        Method::new("update", |_params, _ctx| Ok(Value::Null))
            .description("Accepts five ints and does nothing (the specification's notification)")
            .returns(Type::Null)
            .param(Type::Int, "a")
            .param(Type::Int, "b")
            .param(Type::Int, "c")
            .param(Type::Int, "d")
            .param(Type::Int, "e"),
        Method::new("notify_hello", |_params, _ctx| Ok(Value::Null))
            .description("Accepts an int and does nothing")
            .returns(Type::Null)
            .param(Type::Int, "value"),
        Method::new("notify_sum", |_params, _ctx| Ok(Value::Null))
            .description("Accepts three ints and does nothing")
            .returns(Type::Null)
            .param(Type::Int, "a")
            .param(Type::Int, "b")
            .param(Type::Int, "c"),
        Method::new("get_data", |_params, _ctx| Ok(json!(["hello", 5])))
            .description("Returns [\"hello\", 5]")
            .returns(Type::Array),
        Method::new("echo", |params, _ctx| {
            Ok(params.get("value").cloned().unwrap_or(Value::Null))
        })
        .description("Returns its argument")
        .returns(Type::Any)
        .param(Type::Any, "value"),
        Method::new("fail", |params, _ctx| {
            Err(RpcError::new(params.i64("code")?, params.str("message")?))
        })
        .description("Fails with the given code and message")
        .returns(Type::Null)
        .param(Type::Int, "code")
        .param(Type::String, "message"),
        Method::new("panic", |_params, _ctx| {
            panic!("the panic method panics, as asked")
        })
        .description("Panics: the daemon answers -32603 and goes on")
        .returns(Type::Null),
    ]
}
