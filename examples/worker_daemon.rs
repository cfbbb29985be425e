//! A daemon with many small workers, for tests and benchmarks of supervision.
//!
//! ```text
//! cargo run --example worker_daemon -- -f --workers 50 --looptime 0.1 --dir /tmp/w
//! ```
//!
//! Each worker `w0`, `w1`... is built by a factory in its own process and ticks every
//! looptime; with `--dir`, it writes `<name>.up` on spinup (and `<name>.spawn`: how many
//! starts before it, and how the last one ended), `<name>.down` on spindown and
//! `<name>.dropped` when the worker value is dropped, at the end of its process, and
//! `<name>.stop-faults`, its minor page faults from its last tick to its spindown. Commands (`daimonctl send w0 COMMAND [PAYLOAD]`):
//! `crash` (aborts), `hang` (never returns; with `--hang-timeout` it is killed and
//! restarted), `finish` (ends its work cleanly, exit 0), `stall` (blocks its loop for PAYLOAD
//! seconds, default 6), `flood` (sends PAYLOAD `tick-report` messages up at once, default
//! 5000, retrying a full channel for up to 40 s, then writes `NAME.flooded` in `--dir`; PAYLOAD `[count, width]` adds an array of
//! `width` zeros to each), `spawn-sleep` (spawns `sleep 300` as the worker's own child and
//! writes its pid to `NAME.sleep`), `send-deep` (sends up a payload of PAYLOAD nested arrays
//! and writes the outcome to `NAME.sent-deep`), `received` (sends its payload back up), `say` (sends up the message named PAYLOAD[0]
//! with the payload PAYLOAD[1]), and `fake-exited`, `send-log`, `send-ack` (send up messages
//! named like the supervisor's own events). The daemon logs every message
//! a worker sends up as `worker message`. With `--tick-file`, the daemon opens a file that
//! every worker appends `NAME TICKS` to on each tick.
//!
//! With `--spinup-delay SECS`, each worker's spinup takes that long (then writes `NAME.spun`
//! in `--dir`), so the daemon's readiness (systemd's `READY=1`, the `-d` launcher) waits for
//! it (with `--ready-early`, the worker says it is ready, `ctx.ready()`, before that delay, and
//! the daemon does not wait); `--spindown-delay SECS` makes each spindown that slow (a long shutdown).
//!
//! Calls (`worker.call w0 COMMAND [PAYLOAD] [TIMEOUT]`), answered by the worker's
//! `Worker::command`: `echo` (replies with its payload), `fail` (an error: PAYLOAD
//! `[code, message]`, default `[4242, "failed on purpose"]`), `sleep` (blocks PAYLOAD seconds,
//! default 1, then replies `{"slept": PAYLOAD}`), `die` (aborts before replying), `big`
//! (replies with a string of PAYLOAD bytes, default 100000), `reply-deep` (replies with
//! PAYLOAD nested arrays, default 200), `touch`
//! (writes `NAME.touched` in `--dir` with PAYLOAD, then replies with its path), and `print`
//! (writes PAYLOAD on its stdout and stderr and logs it, then replies `true`). Every other
//! command goes on to the worker's bus, where the commands above are handled (a call to one
//! of those replies `null` at once).
//!
//! The daemon itself has example methods: `example.stall(seconds)` blocks the daemon's
//! loop that long (what a listener or method that blocks does to a daemon), so the tests see
//! the systemd watchdog pings stop while the loop is stalled; `example.touch(text)` replies
//! once `w0` has written its `touch` mark (a method built with `ctx.defer` and
//! `workers().call`); with `--tap-logs`, a listener keeps the last 100 `daemon.log.*` events
//! (`WorkerLog`), which `example.logs()` returns.
//!
//! `--output merged` or `--output discard` sets every worker's `Spec::output`.
//! `example.install(name)` installs one more worker at run time (`worker.start NAME` starts
//! it).
//!
//! With `--once`, the workers are `Transient` with no restart allowed and a policy that stops
//! the daemon: a crash stops the daemon (exit 1), a clean end does not.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use argh::FromArgs;
use daimon::listeners::HangCheck;
use daimon::rpc::{Method, RpcError, Type};
use daimon::slog::info;
use daimon::worker::{
    CommandError, GiveUp, Output, Restart, Spawn, Spec, Worker, WorkerCommand, WorkerContext,
    WorkerHost, WorkerLog, WorkerMessage,
};
use daimon::{Config, Daemon, DaemonHost, Event, PostAction, SetupError};
use serde_json::{Value, json};

/// Options of the worker daemon.
#[derive(FromArgs)]
struct Args {
    /// worker w0's process settings, as the JSON object of daimon::worker::Process::from_json
    /// (user, group, nice, env, rlimits, title)
    #[argh(option)]
    w0_process: Option<String>,
    /// how many workers (default 1)
    #[argh(option, default = "1")]
    workers: usize,
    /// seconds between two ticks (default 0.1)
    #[argh(option, default = "0.1")]
    looptime: f64,
    /// transient workers with no restart: a crash stops the daemon
    #[argh(switch)]
    once: bool,
    /// where workers leave NAME.up and NAME.down marks
    #[argh(option)]
    dir: Option<PathBuf>,
    /// kill and restart a worker whose heartbeat stalls this many seconds
    #[argh(option)]
    hang_timeout: Option<f64>,
    /// the restart-counting window in seconds (default 60)
    #[argh(option, default = "60.0")]
    restart_window: f64,
    /// restarts allowed within the window (default 5)
    #[argh(option, default = "5")]
    max_restarts: usize,
    /// seconds a worker must run for a crash not to be backed off (default 1)
    #[argh(option)]
    stable_after: Option<f64>,
    /// a file the daemon opens and each worker appends a line to on every tick
    #[argh(option)]
    tick_file: Option<PathBuf>,
    /// seconds a stop waits before SIGTERM and SIGKILL (default 5)
    #[argh(option, default = "5.0")]
    shutdown_timeout: f64,
    /// seconds each worker's spinup takes (default 0)
    #[argh(option, default = "0.0")]
    spinup_delay: f64,
    /// each worker says it is ready at the start of its spinup (ctx.ready())
    #[argh(switch)]
    ready_early: bool,
    /// seconds each worker's spindown takes (default 0)
    #[argh(option, default = "0.0")]
    spindown_delay: f64,
    /// keep the last 100 daemon.log.* events for example.logs
    #[argh(switch)]
    tap_logs: bool,
    /// where the workers' stdout and stderr go: separate (default), merged or discard
    #[argh(option, default = "String::from(\"separate\")")]
    output: String,
}

struct TestWorker {
    dir: Option<PathBuf>,
    /// Its name, once spun up (for the mark it leaves when dropped).
    name: Option<String>,
    ticks: u64,
    /// Opened by the daemon before the fork: it stays open in the worker.
    out: Option<std::fs::File>,
    /// What the factory learnt of this start: how many before it, and whether the last
    /// process crashed.
    spawn: String,
    spinup_delay: Duration,
    ready_early: bool,
    spindown_delay: Duration,
    /// With `--dir`: the process's minor page faults at the end of its last tick.
    faults_at_tick: Option<i64>,
}

/// This process's minor page faults so far.
fn minor_faults() -> Option<i64> {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .ok()
        .map(|u| u.minor_page_faults())
}

impl TestWorker {
    fn mark(&self, name: &str, suffix: &str) {
        if let Some(dir) = &self.dir {
            write_mark(
                &dir.join(format!("{name}.{suffix}")),
                &self.ticks.to_string(),
            );
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            self.mark(&name, "dropped");
        }
    }
}

impl Worker for TestWorker {
    fn spinup(&mut self, ctx: &mut WorkerContext<'_, Self>) -> Result<(), SetupError> {
        self.name = Some(ctx.name().to_owned());
        self.mark(ctx.name(), "up");
        if let Some(dir) = &self.dir {
            write_mark(&dir.join(format!("{}.spawn", ctx.name())), &self.spawn);
        }
        let dir = self.dir.clone();
        ctx.bus().on_event(move |command: &WorkerCommand, ctx| {
            test_command(command, ctx.host(), dir.as_deref());
            PostAction::Continue
        });
        if self.ready_early {
            ctx.ready();
        }
        if !self.spinup_delay.is_zero() {
            std::thread::sleep(self.spinup_delay);
            self.mark(ctx.name(), "spun");
        }
        Ok(())
    }

    fn tick(&mut self, ctx: &mut WorkerContext<'_, Self>) {
        self.ticks += 1;
        if let Some(out) = &mut self.out {
            use std::io::Write;
            if let Err(e) = writeln!(out, "{} {}", ctx.name(), self.ticks) {
                daimon::slog::error!(ctx.logger(), "cannot write the tick file"; "error" => %e);
            }
        }
        if self.dir.is_some() {
            self.faults_at_tick = minor_faults();
        }
    }

    fn spindown(&mut self, ctx: &mut WorkerContext<'_, Self>) {
        // How many page faults the stop's way here took, since the last tick.
        if let (Some(dir), Some(before), Some(now)) =
            (&self.dir, self.faults_at_tick, minor_faults())
        {
            write_mark(
                &dir.join(format!("{}.stop-faults", ctx.name())),
                &(now - before).to_string(),
            );
        }
        std::thread::sleep(self.spindown_delay);
        self.mark(ctx.name(), "down");
    }

    fn command(
        &mut self,
        command: &str,
        payload: Option<Value>,
        ctx: &mut WorkerContext<'_, Self>,
    ) -> Result<Value, CommandError> {
        match command {
            "echo" => Ok(payload.unwrap_or(Value::Null)),
            "fail" => {
                let p = payload.unwrap_or_else(|| json!([4242, "failed on purpose"]));
                let code = p[0].as_i64().unwrap_or(4242);
                Err(CommandError::new(
                    code,
                    p[1].as_str().unwrap_or("failed on purpose"),
                ))
            }
            "sleep" => {
                let secs = payload.as_ref().and_then(Value::as_f64).unwrap_or(1.0);
                std::thread::sleep(Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())?);
                Ok(json!({"slept": secs}))
            }
            "die" => std::process::abort(),
            "big" => {
                let n = payload.as_ref().and_then(Value::as_u64).unwrap_or(100_000);
                Ok(json!("x".repeat(n as usize)))
            }
            "reply-deep" => {
                let depth = payload.as_ref().and_then(Value::as_u64).unwrap_or(200);
                let mut deep = json!(1);
                for _ in 0..depth {
                    deep = json!([deep]);
                }
                Ok(deep)
            }
            "touch" => {
                let dir = self.dir.as_ref().ok_or("no --dir to touch a mark in")?;
                let path = dir.join(format!("{}.touched", ctx.name()));
                let text = payload
                    .as_ref()
                    .and_then(Value::as_str)
                    .unwrap_or("touched");
                write_mark(&path, text);
                Ok(json!(path.display().to_string()))
            }
            "print" => {
                let text = payload
                    .as_ref()
                    .and_then(Value::as_str)
                    .unwrap_or("printed");
                println!("out: {text}");
                eprintln!("err: {text}");
                info!(ctx.logger(), "log: {}", text);
                Ok(json!(true))
            }
            // The others go to the worker's listener (test_command).
            _ => ctx.forward(command, payload),
        }
    }
}

/// The commands the tests send.
fn test_command(command: &WorkerCommand, host: &mut WorkerHost<TestWorker>, dir: Option<&Path>) {
    let payload = command.payload();
    let send = |host: &WorkerHost<TestWorker>, name: &str, payload: Value| {
        let _ = host.send(name, Some(payload));
    };
    match command.command() {
        "crash" => std::process::abort(),
        "hang" => loop {
            std::thread::park();
        },
        "finish" => host.stop(),
        "fake-exited" => send(host, "exited", json!({"crashed": true, "forever": false})),
        "send-log" => send(host, "log", json!({"hello": 1})),
        "send-ack" => send(host, "ack", json!({"hello": 1})),
        "say" => {
            let p = payload.cloned().unwrap_or(Value::Null);
            send(host, p[0].as_str().unwrap_or("said"), p[1].clone());
        }
        "stall" => {
            let secs = payload.and_then(Value::as_f64).unwrap_or(6.0);
            info!(host.logger(), "stalling"; "secs" => secs);
            std::thread::sleep(Duration::from_secs_f64(secs));
            info!(host.logger(), "stall over");
        }
        "flood" => {
            // PAYLOAD is a count, or [count, width]: each message then carries an array of
            // `width` zeros (one byte each on the wire, far more as a decoded value).
            let (n, width) = match payload {
                Some(Value::Array(p)) => (p[0].as_u64(), p.get(1).and_then(Value::as_u64)),
                p => (p.and_then(Value::as_u64), None),
            };
            let n = n.unwrap_or(5000);
            // Generous: on a loaded 2-core CI machine the daemon drains slowly, and the
            // flood test checks bounds, not speed.
            let give_up = Instant::now() + Duration::from_secs(40);
            let mut sent = 0;
            while sent < n && Instant::now() < give_up {
                let report = match width {
                    Some(w) => json!({"n": sent, "zeros": vec![0; w as usize]}),
                    None => json!({"n": sent}),
                };
                match host.send("tick-report", Some(report)) {
                    Ok(()) => sent += 1,
                    Err(_) => std::thread::sleep(Duration::from_micros(100)),
                }
            }
            if let Some(dir) = dir {
                let mark = dir.join(format!("{}.flooded", host.name()));
                write_mark(&mark, &sent.to_string());
            }
        }
        "spawn-sleep" => {
            // A child of the worker's own, which the worker never waits for.
            match std::process::Command::new("sleep").arg("300").spawn() {
                Ok(child) => {
                    if let Some(dir) = dir {
                        let mark = dir.join(format!("{}.sleep", host.name()));
                        write_mark(&mark, &child.id().to_string());
                    }
                }
                Err(e) => daimon::slog::error!(host.logger(), "cannot spawn sleep"; "error" => %e),
            }
        }
        "send-deep" => {
            // Sends up a payload of PAYLOAD nested arrays; NAME.sent-deep tells the outcome.
            let depth = payload.and_then(Value::as_u64).unwrap_or(70);
            let mut deep = json!(1);
            for _ in 0..depth {
                deep = json!([deep]);
            }
            let outcome = match host.send("deep", Some(deep)) {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("error: {e}"),
            };
            if let Some(dir) = dir {
                write_mark(&dir.join(format!("{}.sent-deep", host.name())), &outcome);
            }
        }
        "received" => {
            // Says it received the command: `received` goes back up with the same payload.
            send(host, "received", payload.cloned().unwrap_or(Value::Null));
        }
        _ => {}
    }
}

fn main() -> ExitCode {
    let mut config = Config::default();
    config.description = "Worker Daemon".into();
    Daemon::new(config)
        .setup(|daemon| {
            let args = daemon.args::<Args>().expect("parsed by init_with");
            let looptime = Duration::try_from_secs_f64(args.looptime)?;
            let dir = args.dir.as_ref().map(|d| daemon.launch_dir().join(d));
            let window = Duration::try_from_secs_f64(args.restart_window)?;
            let output = Output::from_name(&args.output)
                .ok_or_else(|| format!("--output {}: not separate, merged or discard", args.output))?;
            let mut spec = Spec::every(looptime)
                .max_restarts(args.max_restarts, window)
                .output(output);
            if let Some(secs) = args.stable_after {
                spec = spec.stable_after(Duration::try_from_secs_f64(secs)?);
            }
            if args.once {
                spec = spec
                    .restart(Restart::Transient)
                    .max_restarts(0, Duration::from_secs(60))
                    .give_up(GiveUp::StopDaemon);
            }
            let hang = args.hang_timeout.map(Duration::try_from_secs_f64).transpose()?;
            let count = args.workers;
            let w0_process = match &args.w0_process {
                Some(json) => Some(daimon::worker::Process::from_json(
                    "workers.w0.",
                    &serde_json::from_str::<Value>(json)?,
                )?),
                None => None,
            };
            let stop_timeout = Duration::try_from_secs_f64(args.shutdown_timeout)?;
            let tick_file = args.tick_file.clone();
            let spinup_delay = Duration::try_from_secs_f64(args.spinup_delay)?;
            let spindown_delay = Duration::try_from_secs_f64(args.spindown_delay)?;
            let ready_early = args.ready_early;
            let tap_logs = args.tap_logs;
            daemon.config_mut().shutdowntimeout = stop_timeout;
            if let Some(timeout) = hang {
                HangCheck::new(timeout).subscribe(daemon.bus());
            }
            daemon.rpc().register(
                Method::new("example.stall", |params, _ctx| {
                    let secs = params.f64("seconds")?;
                    let stall = Duration::try_from_secs_f64(secs)
                        .map_err(|e| RpcError::invalid_params(format!("seconds: {e}")))?;
                    // Deliberately blocking: the loop stops turning for that long.
                    std::thread::sleep(stall.min(Duration::from_secs(30)));
                    Ok(Value::Null)
                })
                .description("Blocks the daemon's loop for seconds (at most 30): an example of what not to do")
                .returns(Type::Null)
                .param(Type::Double, "seconds"),
            )?;
            // Replies once w0 has written its mark: a deferred reply with a worker's answer.
            daemon.rpc().register(
                Method::<DaemonHost>::new("example.touch", |params, ctx| {
                    let text = params.str("text")?.to_owned();
                    let reply = ctx.defer(Duration::from_secs(5))?;
                    ctx.host().workers().call("w0", "touch", Some(json!(text)), reply)?;
                    Ok(Value::Null)
                })
                .description("Has w0 write its touch mark with text, and replies with its path once written")
                .returns(Type::String)
                .param(Type::String, "text"),
            )?;
            if tap_logs {
                let seen = std::rc::Rc::new(std::cell::RefCell::new(std::collections::VecDeque::new()));
                let keep = seen.clone();
                daemon.bus().on_event(move |l: &WorkerLog, _| {
                    let mut seen = keep.borrow_mut();
                    if seen.len() == 100 {
                        seen.pop_front();
                    }
                    seen.push_back(json!({"name": l.name(), "data": l.data()}));
                    PostAction::Continue
                });
                daemon.rpc().register(
                    Method::new("example.logs", move |_, _| {
                        Ok(Value::Array(seen.borrow().iter().cloned().collect()))
                    })
                    .description("The last 100 daemon.log.* events: [{name, data}]")
                    .returns(Type::Array),
                )?;
            }
            // Every message a worker sends up, logged.
            daemon.bus().on_event(|m: &WorkerMessage, ctx| {
                info!(ctx.logger(), "worker message"; "worker" => m.worker(), "command" => m.command());
                PostAction::Continue
            });
            let out = match tick_file {
                Some(path) => Some(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(daemon.launch_dir().join(path))?,
                ),
                None => None,
            };
            for i in 0..count {
                let (dir, out) = (dir.clone(), out.as_ref().map(std::fs::File::try_clone).transpose()?);
                // Built in each new worker process, told which start it is.
                let factory = move |spawn: &Spawn| TestWorker {
                    name: None,
                    dir: dir.clone(),
                    ticks: 0,
                    spinup_delay,
                    ready_early,
                    spindown_delay,
                    faults_at_tick: None,
                    out: out.as_ref().and_then(|f| f.try_clone().ok()),
                    spawn: format!(
                        "{} {}",
                        spawn.restarts,
                        spawn.previous.as_ref().map_or("first", |e| if e.crashed() { "crashed" } else { "ended" })
                    ),
                };
                let mut spec = spec.clone();
                if let (0, Some(process)) = (i, &w0_process) {
                    spec = spec.process(process.clone());
                }
                daemon.workers().install_with(&format!("w{i}"), factory, spec)?;
            }
            // One more worker, installed at run time (the fork server has only those
            // installed before it started: the daemon forks this one itself).
            daemon.rpc().register(
                Method::<DaemonHost>::new("example.install", move |params, ctx| {
                    let name = params.str("name")?.to_owned();
                    let dir = dir.clone();
                    let factory = move |spawn: &Spawn| TestWorker {
                        name: None,
                        dir: dir.clone(),
                        ticks: 0,
                        spinup_delay,
                        ready_early,
                        spindown_delay,
                        faults_at_tick: None,
                        out: None,
                        spawn: format!("{} late", spawn.restarts),
                    };
                    ctx.host().workers().install_with(&name, factory, spec.clone())?;
                    Ok(json!(true))
                })
                .description("Installs one more worker named name (start it with worker.start)")
                .returns(Type::Boolean)
                .param(Type::String, "name"),
            )?;
            Ok(())
        })
        .init_with::<Args>()
}

/// Leaves a mark for the tests: written whole under another name, then renamed, so a test
/// that sees the file sees its content.
fn write_mark(path: &std::path::Path, content: &str) {
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, content).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}
