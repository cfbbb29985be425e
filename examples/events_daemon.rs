//! A daemon whose bus reaches its clients: subscribe to its events on the control socket,
//! and call methods that reply later.
//!
//! ```text
//! cargo run --example events_daemon -- -f --socket unix:///tmp/events.sock
//! daimonctl -s unix:///tmp/events.sock events 'examples.*' 'daemon.worker.*'
//! ```
//!
//! or with any JSON-RPC client, on one connection:
//!
//! ```text
//! {"jsonrpc":"2.0","id":1,"method":"daemon.subscribe","params":[["examples.*"]]}
//! {"jsonrpc":"2.0","id":2,"method":"examples.note","params":["hello"]}
//! ```
//!
//! which answers `{"id":1,"result":1,...}`, then `{"id":2,"result":true,...}`, then the
//! notification of the `examples.noted` event the call emitted
//! (`{"method":"daemon.event","params":{"subscription":1,"name":"examples.noted",
//! "data":{"text":"hello","length":5},...}}`).
//!
//! Methods: `examples.note(text)` emits an `examples.noted` event of its own type;
//! `examples.burst(count, size)` emits `count` `examples.burst` events carrying `size` bytes
//! each (for load and slow-subscriber tests); `examples.later(ms, value)` defers its reply
//! and answers it from a timer `ms` milliseconds later (`ms` over 5000: the caller gets the
//! timeout error instead). With `--workers N` it runs N workers `w0`... that tick every 100
//! ms and send up a `tick` message every `--tick-every` ticks (default 0: never); with
//! `--timer MS` a periodic timer `examples.timer` fires every MS milliseconds.

use std::cell::RefCell;
use std::collections::HashMap;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use argh::FromArgs;
use daimon::bus::{Event, Host, TimerEvent};
use daimon::rpc::{Method, Reply, RpcError, Type};
use daimon::worker::{Spec, Worker, WorkerContext};
use daimon::{Config, Daemon, DaemonHost, PostAction};
use serde::Serialize;
use serde_json::{Value, json};

/// Options of the events daemon.
#[derive(FromArgs)]
struct Args {
    /// how many workers (default 0)
    #[argh(option, default = "0")]
    workers: usize,
    /// each worker sends up a `tick` message every this many ticks (0: never)
    #[argh(option, default = "0")]
    tick_every: u64,
    /// arm a periodic timer `examples.timer` of this many milliseconds
    #[argh(option)]
    timer: Option<u64>,
}

/// `examples.noted`: an event of the application's own, with a JSON form.
#[derive(Debug, Serialize)]
struct Noted {
    text: String,
    length: usize,
}

impl Event for Noted {
    fn name(&self) -> &str {
        "examples.noted"
    }

    fn data(&self) -> Option<Value> {
        serde_json::to_value(self).ok()
    }
}

/// `examples.burst`: load for the subscribers.
#[derive(Debug)]
struct Burst {
    n: u64,
    fill: Rc<str>,
}

impl Event for Burst {
    fn name(&self) -> &str {
        "examples.burst"
    }

    fn data(&self) -> Option<Value> {
        Some(json!({"n": self.n, "fill": &*self.fill}))
    }
}

struct Ticker {
    every: u64,
    ticks: u64,
}

impl Worker for Ticker {
    fn tick(&mut self, ctx: &mut WorkerContext<'_, Self>) {
        self.ticks += 1;
        if self.every > 0 && self.ticks % self.every == 0 {
            let _ = ctx.send("tick", Some(json!({"ticks": self.ticks})));
        }
    }
}

/// The replies `examples.later` promised, by the timer that answers each.
type Promised = Rc<RefCell<HashMap<u64, (Reply, Value)>>>;

fn main() -> ExitCode {
    let mut config = Config::default();
    config.description = "Events Daemon".into();
    Daemon::new(config)
        .app("events_daemon", env!("CARGO_PKG_VERSION"))
        .setup(|daemon| {
            let args = daemon.args::<Args>().expect("parsed by init_with");
            let (workers, every, timer) = (args.workers, args.tick_every, args.timer);
            daemon.rpc().register(
                Method::<DaemonHost>::new("examples.note", |params, ctx| {
                    let text = params.str("text")?.to_owned();
                    ctx.emit(Noted {
                        length: text.chars().count(),
                        text,
                    });
                    Ok(json!(true))
                })
                .description("Emits an examples.noted event with the text and its length")
                .param(Type::String, "text")
                .returns(Type::Boolean),
            )?;
            daemon.rpc().register(
                Method::<DaemonHost>::new("examples.burst", |params, ctx| {
                    let count = params.i64("count")?;
                    let size = params.i64("size")?;
                    if !(0..=10_000).contains(&count) || !(0..=65_536).contains(&size) {
                        return Err(RpcError::invalid_params(
                            "count is 0..=10000 and size 0..=65536",
                        ));
                    }
                    let fill: Rc<str> = "x".repeat(size as usize).into();
                    for n in 0..count as u64 {
                        ctx.emit(Burst {
                            n,
                            fill: fill.clone(),
                        });
                    }
                    Ok(json!(count))
                })
                .description("Emits count examples.burst events carrying size bytes each")
                .param(Type::Int, "count")
                .param(Type::Int, "size")
                .returns(Type::Int),
            )?;
            let promised: Promised = Rc::default();
            let promise = promised.clone();
            daemon.rpc().register(
                Method::<DaemonHost>::new("examples.later", move |params, ctx| {
                    let ms = params.i64("ms")?.clamp(0, 60_000) as u64;
                    let value = params.get("value").cloned().unwrap_or(Value::Null);
                    let reply = ctx.defer(Duration::from_secs(5))?;
                    let timer = ctx.host().arm_timer(
                        Duration::from_millis(ms),
                        None,
                        "examples.later".into(),
                    );
                    promise.borrow_mut().insert(timer.as_u64(), (reply, value));
                    Ok(Value::Null)
                })
                .description(
                    "Replies value after ms milliseconds, from a timer (a deferred reply; \
                     over 5000 ms the caller gets a timeout error)",
                )
                .param(Type::Int, "ms")
                .param(Type::Any, "value")
                .returns(Type::Any),
            )?;
            daemon.bus().on_event(move |timer: &TimerEvent, ctx| {
                if let Some((reply, value)) = promised.borrow_mut().remove(&timer.id().as_u64()) {
                    ctx.host().reply(reply, Ok(json!({"later": value})));
                }
                PostAction::Continue
            });
            if let Some(ms) = timer {
                daemon.bus().on("daemon.ready", move |_, ctx| {
                    ctx.periodic(Duration::from_millis(ms), "examples.timer");
                    PostAction::Remove
                })?;
            }
            for i in 0..workers {
                daemon.workers().install_with(
                    &format!("w{i}"),
                    move |_: &_| Ticker { every, ticks: 0 },
                    Spec::every(Duration::from_millis(100)),
                )?;
            }
            Ok(())
        })
        .init_with::<Args>()
}
