//! The supervisor's state machine, driven by a fake process control: no fork, a clock the
//! test moves, real channels (both ends in this process) and a real poller for readiness.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde_json::{Value, json};

use super::spawn::{Exited, Spawned};
use super::*;
use crate::bus::Event;
use crate::reactor::{Reactor, Ready, Timers};
use crate::worker::frame::{Down, Up};
use crate::worker::job::Job;
use crate::worker::{
    GiveUp, Restart, Spec, WorkerContext, WorkerExited, WorkerFailed, WorkerMessage,
    WorkerRestarting, WorkerStarted,
};

struct Idle;

impl Worker for Idle {
    fn tick(&mut self, _: &mut WorkerContext<'_, Self>) {}
}

#[derive(Default)]
struct World {
    now: Option<Instant>,
    next_pid: i32,
    /// Every process started: its pid and the worker's end of its channel.
    spawned: Vec<(Pid, Channel)>,
    /// Every signal sent: to a process, or (`true`) to the process group it leads.
    signals: Vec<(Pid, Signal, bool)>,
    exits: HashMap<Pid, (Option<i32>, Option<i32>)>,
    waited: Vec<Pid>,
    /// The processes reaped.
    reaped: Vec<Pid>,
    /// Process groups that still hold processes, as `reap_group` finds them.
    lingering: Vec<Pid>,
    /// The groups `reap_group` was asked about.
    group_reaps: Vec<Pid>,
    subreaper: bool,
    /// Whether `peek_exited` names the exited children (the real one does), and a child
    /// that is no worker's, named first while set.
    peeking: bool,
    stranger: Option<Pid>,
    /// How often `peek_exited` was asked (in the kernel, a walk from the first child to the
    /// one it names), and how often it found no exited child (a walk over every child).
    peeks: usize,
    fruitless_peeks: usize,
    /// What the fork server was told to leave out of its workers (address, length).
    unneeded: Vec<(usize, usize)>,
    /// The mappings of the templates the server was told of.
    placed: Vec<(usize, usize)>,
    /// Whether a stop line is there (the processes spawned meanwhile hold it), and how
    /// often it was pulled.
    line: bool,
    pulls: usize,
}

struct Fake(Rc<RefCell<World>>);

impl Processes for Fake {
    fn spawn(
        &mut self,
        _: usize,
        _: &mut dyn Template,
        job: Job,
        _: [std::os::fd::RawFd; 2],
        _: &mut dyn FnMut(),
    ) -> io::Result<Spawned> {
        let mut w = self.0.borrow_mut();
        w.next_pid += 1;
        let pid = Pid::from_raw(1000 + w.next_pid);
        w.spawned.push((pid, job.channel));
        Ok(Spawned {
            pid,
            on_line: w.line,
        })
    }

    fn pull_line(&mut self) -> bool {
        let mut w = self.0.borrow_mut();
        w.pulls += 1;
        w.line
    }

    fn start_server(
        &mut self,
        _: &mut [&mut dyn Template],
        unneeded: &[(usize, usize)],
        placed: &[(usize, usize)],
    ) -> io::Result<()> {
        let mut w = self.0.borrow_mut();
        w.unneeded = unneeded.to_vec();
        w.placed = placed.to_vec();
        Ok(())
    }

    fn signal(&mut self, pid: Pid, signal: Signal) {
        self.0.borrow_mut().signals.push((pid, signal, false));
    }

    fn signal_group(&mut self, pgid: Pid, signal: Signal) -> bool {
        let mut w = self.0.borrow_mut();
        w.signals.push((pgid, signal, true));
        // The worker until it is reaped, and what lingers after it.
        let worker = w.spawned.iter().any(|(p, _)| *p == pgid) && !w.reaped.contains(&pgid);
        worker || w.lingering.contains(&pgid)
    }

    fn try_wait(&mut self, pid: Pid) -> Option<(Option<i32>, Option<i32>)> {
        let mut w = self.0.borrow_mut();
        w.waited.push(pid);
        let exit = w.exits.remove(&pid);
        if exit.is_some() {
            w.reaped.push(pid);
        }
        exit
    }

    fn peek_exited(&mut self) -> Exited {
        self.0.borrow_mut().peeks += 1;
        let w = self.0.borrow();
        if !w.peeking {
            return Exited::Unknown;
        }
        match w.stranger.or_else(|| w.exits.keys().min().copied()) {
            Some(pid) => Exited::Child(pid),
            None => {
                drop(w);
                self.0.borrow_mut().fruitless_peeks += 1;
                Exited::None
            }
        }
    }

    fn reap_group(&mut self, pgid: Pid) -> bool {
        let mut w = self.0.borrow_mut();
        w.group_reaps.push(pgid);
        !w.lingering.contains(&pgid)
    }

    fn adopt_orphans(&mut self) {
        self.0.borrow_mut().subreaper = true;
    }

    fn now(&self) -> Instant {
        self.0.borrow().now.expect("set by the harness")
    }

    fn random(&mut self) -> u64 {
        0
    }
}

use std::io;

const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

struct Harness {
    sup: Workers,
    world: Rc<RefCell<World>>,
    reactor: Reactor<()>,
    timers: Timers<Deadline>,
    events: Vec<Box<dyn Event>>,
    resolved: Vec<(u64, Result<Value>)>,
    stop: Option<i32>,
}

impl Harness {
    fn new(specs: &[(&str, Spec)]) -> Harness {
        let world = Rc::new(RefCell::new(World {
            now: Some(Instant::now()),
            ..World::default()
        }));
        let mut sup = Workers::with_processes(Box::new(Fake(world.clone())));
        for (name, spec) in specs {
            sup.install(name, Idle, spec.clone()).unwrap();
        }
        let reactor = Reactor::new().unwrap();
        sup.attach(
            reactor.handle(),
            Logger::root(slog::Discard, slog::o!()),
            Level::Info,
            STOP_TIMEOUT,
            ACK_TIMEOUT,
        );
        sup.start_all().unwrap();
        let mut h = Harness {
            sup,
            world,
            reactor,
            timers: Timers::default(),
            events: Vec::new(),
            resolved: Vec::new(),
            stop: None,
        };
        h.pump();
        h
    }

    fn one(spec: Spec) -> Harness {
        Harness::new(&[("w0", spec)])
    }

    fn pump(&mut self) {
        let out = self.sup.take_outbox();
        self.events.extend(out.events);
        for (at, d) in out.deadlines {
            self.timers.insert(at, None, d);
        }
        self.resolved.extend(out.resolved);
        if out.stop.is_some() {
            self.stop = out.stop;
        }
    }

    fn now(&self) -> Instant {
        self.world.borrow().now.unwrap()
    }

    /// Moves the clock on and fires what is due.
    fn advance(&mut self, by: Duration) {
        self.pump();
        let now = self.now() + by;
        self.world.borrow_mut().now = Some(now);
        let mut due = Vec::new();
        self.timers.expire(now, &mut due);
        for (_, d) in due {
            self.sup.deadline(d);
            self.pump();
        }
    }

    fn pid(&self, name: &str) -> Option<Pid> {
        self.sup.info(name).unwrap().pid.map(Pid::from_raw)
    }

    fn state(&self, name: &str) -> State {
        self.sup.info(name).unwrap().state
    }

    /// The worker's end of the channel of the running process of `name`.
    fn worker_end(&self, name: &str) -> Channel {
        let pid = self.pid(name).expect("running");
        let w = self.world.borrow();
        let (_, ch) = w.spawned.iter().find(|(p, _)| *p == pid).unwrap();
        ch.same_end()
    }

    /// The process of `name` ends with this status, and SIGCHLD is handled.
    fn exits(&mut self, name: &str, code: Option<i32>, signal: Option<i32>) {
        let pid = self.pid(name).expect("running");
        self.world.borrow_mut().exits.insert(pid, (code, signal));
        self.sup.reap();
        self.pump();
    }

    /// Delivers channel readiness until none is left.
    fn drive(&mut self) {
        let mut ready = Vec::new();
        for _ in 0..1000 {
            ready.clear();
            self.reactor.turn(Some(Duration::ZERO), &mut ready).unwrap();
            if ready.is_empty() && !self.sup.has_left() {
                return;
            }
            for r in ready.drain(..) {
                if let Ready::Io { token, .. } = r {
                    assert!(self.sup.ready(token));
                }
            }
            self.sup.drain_left();
            self.pump();
        }
        panic!("readiness never settled");
    }

    /// The signals sent to `pid` or to its group (one sent both ways at once counts once).
    fn signals_to(&self, pid: Pid) -> Vec<Signal> {
        let w = self.world.borrow();
        let mut out: Vec<(Signal, bool)> = Vec::new();
        for &(p, s, group) in &w.signals {
            if p != pid {
                continue;
            }
            if out.last().is_some_and(|&(last, g)| last == s && g != group) {
                continue;
            }
            out.push((s, group));
        }
        out.into_iter().map(|(s, _)| s).collect()
    }

    /// The signals sent to the process group `pgid`.
    fn group_signals_to(&self, pgid: Pid) -> Vec<Signal> {
        let w = self.world.borrow();
        w.signals
            .iter()
            .filter(|&&(p, _, group)| p == pgid && group)
            .map(|&(_, s, _)| s)
            .collect()
    }

    fn count<E: Event>(&self) -> usize {
        self.events.iter().filter(|e| e.is::<E>()).count()
    }

    fn spawned(&self) -> usize {
        self.world.borrow().spawned.len()
    }
}

fn received(ch: &Channel) -> Vec<Down> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while ch.receive_frame(&mut buf).unwrap() {
        out.push(Down::decode(&buf).unwrap());
    }
    out
}

fn spec() -> Spec {
    Spec::every(Duration::from_millis(100))
}

#[test]
fn a_restart_never_signals_the_new_process() {
    let mut h = Harness::one(spec());
    let old = h.pid("w0").unwrap();
    let end = h.worker_end("w0");
    h.sup.restart("w0").unwrap();
    h.pump();
    assert_eq!(received(&end), [Down::Stop]);
    h.exits("w0", Some(0), None);
    let new = h.pid("w0").expect("started again at once");
    assert_ne!(new, old);
    // Long past the old process's escalation deadlines.
    for _ in 0..10 {
        h.advance(STOP_TIMEOUT);
    }
    assert!(h.signals_to(new).is_empty(), "{:?}", h.signals_to(new));
    assert_eq!(h.pid("w0"), Some(new));
    assert_eq!(h.sup.info("w0").unwrap().restarts, 1);
    assert_eq!(h.count::<WorkerFailed>(), 0);
}

#[test]
fn a_restart_of_a_worker_that_may_not_be_restarted_does_not_stop_the_daemon() {
    let once = spec()
        .restart(Restart::Transient)
        .max_restarts(0, Duration::from_secs(60))
        .give_up(GiveUp::StopDaemon);
    let mut h = Harness::one(once);
    h.sup.restart("w0").unwrap();
    h.exits("w0", Some(0), None);
    let new = h.pid("w0").expect("restarted");
    for _ in 0..4 {
        h.advance(STOP_TIMEOUT);
    }
    assert_eq!(h.stop, None);
    assert!(h.signals_to(new).is_empty());
}

#[test]
fn stop_then_start_soon_after_leaves_the_new_process_alone() {
    let mut h = Harness::one(spec());
    h.sup.stop("w0").unwrap();
    h.exits("w0", Some(0), None);
    assert_eq!(h.state("w0"), State::Exited);
    h.advance(Duration::from_secs(1));
    h.sup.start("w0").unwrap();
    let new = h.pid("w0").unwrap();
    for _ in 0..4 {
        h.advance(STOP_TIMEOUT);
    }
    assert!(h.signals_to(new).is_empty());
}

#[test]
fn restart_then_stop_ends_stopped() {
    let mut h = Harness::one(spec());
    h.sup.restart("w0").unwrap();
    h.sup.stop("w0").unwrap();
    h.exits("w0", Some(0), None);
    assert_eq!(h.pid("w0"), None);
    h.advance(STOP_TIMEOUT * 3);
    assert_eq!(h.pid("w0"), None);
    assert_eq!(h.state("w0"), State::Exited);
    assert_eq!(h.spawned(), 1);
}

#[test]
fn a_stop_escalates_to_sigterm_then_sigkill_for_its_process_only() {
    let mut h = Harness::one(spec());
    let pid = h.pid("w0").unwrap();
    h.sup.stop("w0").unwrap();
    h.pump();
    h.advance(STOP_TIMEOUT / 2);
    assert_eq!(h.signals_to(pid), [Signal::SIGTERM]);
    h.advance(STOP_TIMEOUT / 2);
    assert_eq!(h.signals_to(pid), [Signal::SIGTERM, Signal::SIGKILL]);
    assert_eq!(
        h.group_signals_to(pid),
        [Signal::SIGTERM, Signal::SIGKILL],
        "the escalation reaches what the worker started"
    );
    h.exits("w0", None, Some(9));
    let exit = h.sup.last_exit("w0").unwrap();
    assert!(exit.requested && !exit.crashed(), "{exit:?}");
    assert_eq!(h.spawned(), 1, "an administrator's stop is never restarted");
}

#[test]
fn worker_messages_are_their_own_type_whatever_their_name() {
    let mut h = Harness::one(spec());
    let end = h.worker_end("w0");
    for name in ["exited", "failed", "log", "ack", "started"] {
        let payload = json!({"crashed": true, "forever": false});
        end.send_frame(&Up::Message(name.into(), Some(payload)).encode())
            .unwrap();
    }
    h.drive();
    let names: Vec<&str> = h
        .events
        .iter()
        .filter_map(|e| e.downcast_ref::<WorkerMessage>())
        .map(|m| m.command())
        .collect();
    assert_eq!(names, ["exited", "failed", "log", "ack", "started"]);
    assert!(
        h.events
            .iter()
            .filter(|e| e.is::<WorkerMessage>())
            .all(|e| e.name().starts_with("daemon.worker.message.w0."))
    );
    assert_eq!(h.count::<WorkerExited>(), 0);
    assert_eq!(h.stop, None);
    assert_eq!(h.state("w0"), State::Spinup);
}

#[test]
fn the_supervisors_own_commands_cannot_be_sent_as_user_commands() {
    let mut h = Harness::one(spec());
    let end = h.worker_end("w0");
    for reserved in ["stop", "pause", "resume", "loopstart"] {
        let err = h.sup.send("w0", reserved, None).unwrap_err();
        assert!(
            matches!(&err, Error::Worker { kind: WorkerError::Reserved(c), .. } if c == reserved),
            "{err}"
        );
    }
    h.sup.send("w0", "changename", Some(json!(1))).unwrap();
    assert_eq!(
        received(&end),
        [Down::Command("changename".into(), Some(json!(1)))]
    );
    assert!(
        h.sup.send("w0", "", None).is_err(),
        "a command needs a name"
    );
    assert!(matches!(
        h.sup.send("nobody", "x", None),
        Err(Error::Worker {
            kind: WorkerError::Unknown,
            ..
        })
    ));
}

#[test]
fn a_transient_worker_that_ends_cleanly_is_done_and_one_that_crashes_restarts() {
    let mut h = Harness::one(
        spec()
            .restart(Restart::Transient)
            .give_up(GiveUp::StopDaemon),
    );
    h.exits("w0", Some(0), None);
    assert_eq!(h.pid("w0"), None);
    assert_eq!(h.state("w0"), State::Exited);
    assert_eq!(h.stop, None);
    assert_eq!(h.spawned(), 1);
    h.sup.start("w0").unwrap();
    h.exits("w0", Some(3), None);
    assert!(h.pid("w0").is_some(), "an abnormal exit restarts it");
    assert_eq!(h.spawned(), 3);
}

#[test]
fn a_temporary_worker_is_never_restarted_and_never_stops_the_daemon() {
    let mut h = Harness::one(
        spec()
            .restart(Restart::Temporary)
            .give_up(GiveUp::StopDaemon),
    );
    h.exits("w0", None, Some(6));
    assert_eq!(h.pid("w0"), None);
    assert_eq!((h.stop, h.spawned()), (None, 1));
    assert_eq!(h.count::<WorkerRestarting>(), 0);
}

#[test]
fn a_permanent_worker_restarts_after_a_clean_exit_too() {
    let mut h = Harness::one(spec());
    h.exits("w0", Some(0), None);
    assert!(h.pid("w0").is_some());
    assert_eq!(h.count::<WorkerStarted>(), 2);
}

#[test]
fn past_the_intensity_limit_it_fails_or_stops_the_daemon_and_start_resets_the_count() {
    let limited = spec().max_restarts(2, Duration::from_secs(60));
    let mut h = Harness::one(limited.clone());
    for _ in 0..2 {
        h.advance(Duration::from_secs(2));
        h.exits("w0", Some(1), None);
        assert!(h.pid("w0").is_some());
    }
    h.advance(Duration::from_secs(2));
    h.exits("w0", Some(1), None);
    assert_eq!(h.state("w0"), State::Failed);
    assert_eq!(h.count::<WorkerFailed>(), 1);
    assert_eq!(h.stop, None);
    h.sup.start("w0").unwrap();
    h.advance(Duration::from_secs(2));
    h.exits("w0", Some(1), None);
    assert!(h.pid("w0").is_some(), "the count started again from zero");

    let mut h = Harness::one(limited.give_up(GiveUp::StopDaemon));
    for _ in 0..3 {
        h.advance(Duration::from_secs(2));
        h.exits("w0", Some(1), None);
    }
    assert_eq!(h.stop, Some(1));
}

#[test]
fn backoff_applies_to_crash_loops_only() {
    let mut h = Harness::one(spec().max_restarts(100, Duration::from_secs(600)));
    // Quick crashes: the first restarts at once, then 100 ms, 200 ms...
    h.exits("w0", Some(1), None);
    assert!(h.pid("w0").is_some());
    h.exits("w0", Some(1), None);
    assert_eq!(h.pid("w0"), None);
    assert!(h.sup.is_restart_pending("w0"));
    h.advance(Duration::from_millis(99));
    assert_eq!(h.pid("w0"), None);
    h.advance(Duration::from_millis(1));
    assert!(h.pid("w0").is_some(), "restarted after its backoff");
    // It ran stably: the next crash restarts at once.
    h.advance(Duration::from_secs(2));
    h.exits("w0", None, Some(9));
    assert!(
        h.pid("w0").is_some(),
        "a crash after a stable run restarts at once"
    );
    let delays: Vec<Duration> = h
        .events
        .iter()
        .filter_map(|e| e.downcast_ref::<WorkerRestarting>())
        .map(|r| r.delay)
        .collect();
    assert_eq!(
        delays,
        [Duration::ZERO, Duration::from_millis(100), Duration::ZERO]
    );
}

#[test]
fn a_stop_beats_a_pending_restart() {
    let mut h = Harness::one(spec());
    h.exits("w0", Some(1), None);
    h.exits("w0", Some(1), None);
    assert!(h.sup.is_restart_pending("w0"));
    h.sup.stop("w0").unwrap();
    h.advance(Duration::from_secs(60));
    assert_eq!(h.pid("w0"), None);
    assert_eq!(h.spawned(), 2);
    assert!(h.sup.stop("w0").is_err(), "nothing left to stop");
}

#[test]
fn the_shutdown_cancels_restarts_and_never_restarts() {
    let mut h = Harness::new(&[("a", spec()), ("b", spec())]);
    h.exits("a", Some(1), None);
    h.exits("a", Some(1), None);
    h.sup.shutdown();
    h.pump();
    h.exits("b", Some(1), None);
    h.advance(Duration::from_secs(60));
    assert!(h.sup.all_gone());
    assert_eq!(h.spawned(), 3);
    assert!(h.sup.start("a").is_err());
}

/// The shutdown pulls the stop line once, and sends no `Stop` to the workers that hold it;
/// a worker forked while there was no line gets its frame. Either way the escalation is
/// armed, and goes to each process of its own.
#[test]
fn the_shutdown_pulls_the_line_once_and_frames_only_the_workers_off_it() {
    let mut h = Harness::new(&[("on", spec()), ("off", spec())]);
    // "on" again, forked while there is a line; "off" as it was forked, without one.
    h.world.borrow_mut().line = true;
    h.sup.restart("on").unwrap();
    h.pump();
    h.exits("on", Some(0), None);
    let (on, off) = (h.worker_end("on"), h.worker_end("off"));
    h.sup.shutdown();
    h.pump();
    assert_eq!(h.world.borrow().pulls, 1);
    assert_eq!(received(&on), [], "stopped by the line");
    assert_eq!(received(&off), [Down::Stop]);
    h.advance(STOP_TIMEOUT / 2);
    for name in ["on", "off"] {
        let pid = h.pid(name).unwrap();
        assert_eq!(h.group_signals_to(pid), [Signal::SIGTERM], "{name}");
    }
}

/// An administrator's stop or restart of a worker on the line is a `Stop` frame: the line is
/// the shutdown's alone.
#[test]
fn an_administrators_stop_of_a_worker_on_the_line_is_a_frame() {
    let mut h = Harness::one(spec());
    h.world.borrow_mut().line = true;
    h.sup.restart("w0").unwrap();
    h.pump();
    h.exits("w0", Some(0), None);
    // This process of w0 holds the line.
    let end = h.worker_end("w0");
    h.sup.restart("w0").unwrap();
    h.pump();
    assert_eq!(received(&end), [Down::Stop], "the restart");
    h.exits("w0", Some(0), None);
    let end = h.worker_end("w0");
    h.sup.stop("w0").unwrap();
    h.pump();
    assert_eq!(received(&end), [Down::Stop], "the stop");
    assert_eq!(h.world.borrow().pulls, 0);
}

/// Without a line to pull (it could not be made), every worker gets its `Stop`.
#[test]
fn the_shutdown_without_a_line_frames_every_worker() {
    let mut h = Harness::new(&[("a", spec()), ("b", spec())]);
    let (a, b) = (h.worker_end("a"), h.worker_end("b"));
    h.sup.shutdown();
    h.pump();
    assert_eq!(h.world.borrow().pulls, 1);
    assert_eq!(received(&a), [Down::Stop]);
    assert_eq!(received(&b), [Down::Stop]);
}

#[test]
fn a_pause_is_acknowledged_with_the_state() {
    let mut h = Harness::one(spec());
    let end = h.worker_end("w0");
    let id = h.sup.toggle(Some("w0"), Toggle::Pause, true).unwrap();
    assert_eq!(received(&end), [Down::Pause(id)]);
    end.send_frame(&Up::Ack(id, State::Paused as u32).encode())
        .unwrap();
    h.drive();
    assert!(matches!(&h.resolved[..], [(i, Ok(v))] if *i == id && *v == json!(2)));
    // Resolved once: the deadline that comes later does nothing.
    h.advance(ACK_TIMEOUT * 2);
    assert_eq!(h.resolved.len(), 1);
}

#[test]
fn a_pause_that_times_out_fails_and_is_cancelled() {
    let mut h = Harness::one(spec());
    let end = h.worker_end("w0");
    let id = h.sup.toggle(Some("w0"), Toggle::Pause, true).unwrap();
    h.advance(ACK_TIMEOUT);
    let [(i, Err(e))] = &h.resolved[..] else {
        panic!("{:?}", h.resolved)
    };
    assert_eq!(*i, id);
    assert!(e.to_string().contains("cancelled"), "{e}");
    assert_eq!(received(&end), [Down::Pause(id), Down::Resume(0)]);
    // A late acknowledgement changes nothing.
    end.send_frame(&Up::Ack(id, 2).encode()).unwrap();
    h.drive();
    assert_eq!(h.resolved.len(), 1);
}

#[test]
fn an_ack_from_a_worker_that_was_not_asked_is_ignored() {
    let mut h = Harness::new(&[("a", spec()), ("b", spec())]);
    let id = h.sup.toggle(Some("a"), Toggle::Pause, true).unwrap();
    h.worker_end("b")
        .send_frame(&Up::Ack(id, 2).encode())
        .unwrap();
    h.drive();
    assert!(h.resolved.is_empty());
    h.worker_end("a")
        .send_frame(&Up::Ack(id, 2).encode())
        .unwrap();
    h.drive();
    assert_eq!(h.resolved.len(), 1);
}

#[test]
fn a_worker_that_exits_fails_the_acks_it_owed() {
    let mut h = Harness::one(spec());
    let id = h.sup.toggle(None, Toggle::Resume, true).unwrap();
    h.exits("w0", None, Some(9));
    assert!(matches!(&h.resolved[..], [(i, Err(_))] if *i == id));
}

#[test]
fn an_ack_behind_a_burst_of_5000_messages_is_not_stranded() {
    let mut h = Harness::one(spec());
    let end = h.worker_end("w0");
    let id = h.sup.toggle(Some("w0"), Toggle::Pause, true).unwrap();
    let mut sent = 0;
    let frame = Up::Message("report".into(), Some(json!(1))).encode();
    while sent < 5000 {
        while sent < 5000 && end.send_frame(&frame).is_ok() {
            sent += 1;
        }
        // The daemon reads one budget per turn, with no new write from the worker.
        turn(&mut h);
    }
    end.send_frame(&Up::Ack(id, 2).encode()).unwrap();
    // From here the worker writes nothing: the daemon must still reach the ack.
    h.drive();
    assert_eq!(h.count::<WorkerMessage>(), 5000);
    assert!(
        matches!(&h.resolved[..], [(i, Ok(_))] if *i == id),
        "{:?}",
        h.resolved
    );
}

#[test]
fn a_corrupt_ring_or_header_gets_the_worker_killed() {
    for header in [false, true] {
        let mut h = Harness::one(spec());
        let pid = h.pid("w0").unwrap();
        let end = h.worker_end("w0");
        if header {
            end.scribble(true);
        } else {
            end.corrupt_ring();
        }
        h.drive();
        assert_eq!(h.signals_to(pid), [Signal::SIGKILL], "header: {header}");
        h.exits("w0", None, Some(9));
        assert!(h.pid("w0").is_some(), "then handled as a crash: restarted");
    }
}

#[test]
fn a_frame_that_cannot_be_decoded_is_dropped_and_counted_never_a_crash() {
    let mut h = Harness::one(spec());
    let pid = h.pid("w0").unwrap();
    let end = h.worker_end("w0");
    end.scribble(false);
    let too_deep = Up::Message("deep".into(), Some(nested(crate::rpc::MAX_DEPTH + 1)));
    end.send_frame(&too_deep.encode()).unwrap();
    end.send_frame(&Up::Message("fine".into(), None).encode())
        .unwrap();
    h.drive();
    assert!(h.signals_to(pid).is_empty(), "{:?}", h.signals_to(pid));
    assert_eq!(h.sup.info("w0").unwrap().dropped, 2);
    assert_eq!(h.count::<WorkerMessage>(), 1, "what follows still arrives");
    assert_eq!(h.pid("w0"), Some(pid));
}

fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!([v]);
    }
    v
}

#[test]
fn send_refuses_a_payload_deeper_than_the_one_limit_before_writing_it() {
    let mut h = Harness::one(spec());
    let end = h.worker_end("w0");
    let limit = crate::rpc::MAX_DEPTH;
    let err = h
        .sup
        .send("w0", "deep", Some(nested(limit + 1)))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Worker { kind: WorkerError::Channel(m), .. } if m.contains("deeper")),
        "{err}"
    );
    assert!(received(&end).is_empty(), "nothing was written");
    // As deep as the socket can deliver, and more: it crosses.
    h.sup.send("w0", "deep", Some(nested(limit))).unwrap();
    assert_eq!(
        received(&end),
        [Down::Command("deep".into(), Some(nested(limit)))]
    );
}

/// A worker end's messages, each with a payload of `width` zeros (about 32 bytes each as a
/// decoded value), sent until the ring is full; how many.
fn fill(end: &Channel, width: usize) -> usize {
    let frame = Up::Message("report".into(), Some(json!(vec![0; width]))).encode();
    let mut sent = 0;
    while end.send_frame(&frame).is_ok() {
        sent += 1;
    }
    sent
}

/// One turn of the daemon's loop: readiness handed to the supervisor once.
fn turn(h: &mut Harness) {
    let mut ready = Vec::new();
    h.reactor.turn(Some(Duration::ZERO), &mut ready).unwrap();
    turn_with(h, ready);
}

/// The rest of a turn of the daemon's loop, given what its wait returned.
fn turn_with(h: &mut Harness, ready: Vec<Ready<()>>) {
    for r in ready {
        if let Ready::Io { token, .. } = r {
            h.sup.ready(token);
        }
    }
    h.sup.drain_left();
    h.pump();
}

#[test]
fn a_turn_reads_a_bounded_number_of_bytes_from_a_worker_not_of_frames() {
    let mut h = Harness::one(spec());
    let end = h.worker_end("w0");
    // Small frames: far more than a frame budget would bound in bytes.
    let sent = fill(&end, 10);
    assert!(sent > 1024, "{sent}");
    turn(&mut h);
    let first = h.count::<WorkerMessage>();
    let frame_len = Up::Message("report".into(), Some(json!(vec![0; 10])))
        .encode()
        .len();
    assert!(
        first > 0 && first * frame_len <= inbox::BYTES_PER_TURN + frame_len,
        "one turn read {first} frames of {frame_len} bytes"
    );
    // The rest comes on the next turns, with no new write from the worker.
    for _ in 0..100 {
        turn(&mut h);
    }
    assert_eq!(h.count::<WorkerMessage>(), sent);
}

#[test]
fn rings_are_not_read_while_worker_messages_wait_on_the_bus_and_an_ack_still_arrives() {
    let mut h = Harness::new(&[("a", spec()), ("b", spec())]);
    let ends = [h.worker_end("a"), h.worker_end("b")];
    let id = h.sup.toggle(Some("a"), Toggle::Pause, true).unwrap();
    // 1,000 zeros: 1 KB on the wire, about 32 KB as a value.
    let mut sent = 0;
    for _ in 0..200 {
        for end in &ends {
            sent += fill(end, 1000);
        }
        turn(&mut h);
    }
    // The harness keeps every event it took: none was dispatched.
    let queued = h.count::<WorkerMessage>();
    let backlog = h.sup.backlog.bytes();
    assert!(
        backlog < 2 * crate::worker::backlog::BACKLOG_HIGH_WATER + 64 * 1024,
        "{queued} messages hold {backlog} bytes, past the high-water mark"
    );
    assert!(queued < sent, "the rings were read on: {queued} of {sent}");
    assert!(
        ends.iter().all(|e| fill(e, 1000) == 0),
        "the rings are full: the workers' sends fail"
    );
    // The ack, behind the burst, if it fits in what is left.
    let mut acked = ends[0].send_frame(&Up::Ack(id, 2).encode()).is_ok();
    turn(&mut h);
    assert!(h.resolved.is_empty(), "the ack waits behind the burst");
    // The bus dispatches (drops) them: reading goes on, and the ack behind arrives.
    for _ in 0..2000 {
        h.events.clear();
        turn(&mut h);
        if !acked && ends[0].send_frame(&Up::Ack(id, 2).encode()).is_ok() {
            acked = true;
        }
        if acked && !h.resolved.is_empty() {
            break;
        }
    }
    assert!(acked, "the worker's ring never drained");
    assert!(
        matches!(&h.resolved[..], [(i, Ok(_))] if *i == id),
        "{:?}",
        h.resolved
    );
    h.events.clear();
    assert_eq!(
        h.sup.backlog.bytes(),
        0,
        "every message gave its share back"
    );
}

#[test]
fn a_gone_workers_process_group_is_killed_and_reaped_until_empty() {
    let mut h = Harness::one(spec().restart(Restart::Temporary));
    assert!(
        h.world.borrow().subreaper,
        "the daemon adopts its workers' orphans"
    );
    let pid = h.pid("w0").unwrap();
    h.world.borrow_mut().lingering.push(pid);
    h.exits("w0", None, Some(9));
    assert_eq!(h.group_signals_to(pid), [Signal::SIGKILL]);
    assert!(!h.sup.all_gone(), "its orphans are not reaped yet");
    h.sup.reap();
    assert!(!h.sup.all_gone());
    h.world.borrow_mut().lingering.clear();
    h.sup.reap();
    assert!(h.sup.all_gone());
    let reaps = h.world.borrow().group_reaps.clone();
    assert!(reaps.iter().all(|&g| g == pid), "{reaps:?}");
    // Once empty, the group is not waited for again.
    let before = h.world.borrow().group_reaps.len();
    h.sup.reap();
    assert_eq!(h.world.borrow().group_reaps.len(), before);
}

#[test]
fn a_gone_worker_that_left_nothing_behind_costs_no_wait_for_its_group() {
    // The SIGKILL to its group finds no process (the common case): nothing to reap, so its
    // group is neither kept nor waited for (one syscall a worker in a stop of thousands).
    let mut h = Harness::one(spec().restart(Restart::Temporary));
    let pid = h.pid("w0").unwrap();
    h.exits("w0", Some(0), None);
    assert_eq!(h.group_signals_to(pid), [Signal::SIGKILL]);
    assert!(h.sup.all_gone());
    assert!(h.sup.groups.is_empty());
    assert_eq!(h.world.borrow().group_reaps, Vec::<Pid>::new());
}

#[test]
fn reaping_waits_for_the_workers_only() {
    let mut h = Harness::new(&[("a", spec()), ("b", spec())]);
    let pids = [h.pid("a").unwrap(), h.pid("b").unwrap()];
    h.sup.reap();
    let waited = h.world.borrow().waited.clone();
    assert!(waited.iter().all(|p| pids.contains(p)), "{waited:?}");
}

#[test]
fn the_real_reaper_leaves_other_children_to_their_owner() {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let mut sup = Workers::default();
    sup.reap();
    assert!(
        child.wait().unwrap().success(),
        "the child was left to be waited for"
    );
}

#[test]
fn a_start_while_it_stops_starts_it_once_gone() {
    let mut h = Harness::one(spec());
    h.sup.stop("w0").unwrap();
    h.sup.start("w0").unwrap();
    assert_eq!(h.spawned(), 1, "not while the old process runs");
    h.exits("w0", Some(0), None);
    assert!(h.pid("w0").is_some());
    assert_eq!(h.spawned(), 2);
}

#[test]
fn a_stop_goes_straight_to_sigterm_when_the_channel_is_full() {
    let mut h = Harness::one(spec());
    let pid = h.pid("w0").unwrap();
    while h
        .sup
        .send("w0", "fill", Some(json!("x".repeat(1000))))
        .is_ok()
    {}
    // Down to the last bytes: not even a `Stop` fits.
    while h.worker_end("w0").header_ok() && h.sup.send("w0", "f", None).is_ok() {}
    h.sup.stop("w0").unwrap();
    assert_eq!(h.signals_to(pid), [Signal::SIGTERM]);
    h.advance(STOP_TIMEOUT / 2);
    assert_eq!(h.signals_to(pid), [Signal::SIGTERM, Signal::SIGKILL]);
}

#[test]
fn huge_delays_never_overflow_the_clock() {
    let huge = spec()
        .backoff(Duration::MAX, Duration::MAX)
        .max_restarts(10, Duration::MAX);
    let mut h = Harness::one(huge);
    h.exits("w0", Some(1), None);
    h.exits("w0", Some(1), None);
    assert!(h.sup.is_restart_pending("w0"));
    h.advance(Duration::from_secs(3600));
    assert_eq!(h.pid("w0"), None, "still waiting out its (capped) backoff");
}

#[test]
fn pausing_every_worker_replies_with_each_state() {
    let mut h = Harness::new(&[("a", spec()), ("b", spec())]);
    let id = h.sup.toggle(None, Toggle::Pause, true).unwrap();
    for name in ["a", "b"] {
        h.worker_end(name)
            .send_frame(&Up::Ack(id, 2).encode())
            .unwrap();
    }
    h.drive();
    assert!(
        matches!(&h.resolved[..], [(i, Ok(v))] if *i == id && *v == json!({"a": 2, "b": 2})),
        "{:?}",
        h.resolved
    );
    // With none running, the reply is at once and empty.
    h.sup.shutdown();
    h.exits("a", Some(0), None);
    h.exits("b", Some(0), None);
    let id = h.sup.toggle(None, Toggle::Resume, true).unwrap();
    h.pump();
    assert!(matches!(&h.resolved[1], (i, Ok(v)) if *i == id && *v == json!({})));
}

#[test]
fn installing_refuses_duplicates_empty_names_and_zero_looptimes() {
    let mut h = Harness::one(spec());
    assert!(matches!(
        h.sup.install("w0", Idle, spec()),
        Err(Error::DuplicateWorker(n)) if n == "w0"
    ));
    assert!(matches!(
        h.sup.install("", Idle, spec()),
        Err(Error::DuplicateWorker(_))
    ));
    assert!(matches!(
        h.sup.install("z", Idle, Duration::ZERO),
        Err(Error::Worker {
            kind: WorkerError::Invalid(_),
            ..
        })
    ));
    assert_eq!(h.sup.names(), ["w0"]);
}

#[test]
fn kill_signals_the_running_process_only() {
    let mut h = Harness::one(spec());
    let pid = h.pid("w0").unwrap();
    h.sup.kill("w0", crate::reactor::Signal::USR1).unwrap();
    assert_eq!(h.signals_to(pid), [Signal::SIGUSR1]);
    h.sup.stop("w0").unwrap();
    h.exits("w0", Some(0), None);
    assert!(h.sup.kill("w0", crate::reactor::Signal::USR1).is_err());
}

#[test]
fn a_worker_that_logs_in_a_loop_is_rate_limited_and_its_lost_lines_counted() {
    let mut h = Harness::one(spec());
    let end = h.worker_end("w0");
    let line = Up::Log(3, "x".repeat(8 * 1024)).encode();
    let mut sent = 0u64;
    // Twice the burst, at one instant of the fake clock.
    while sent * 8 * 1024 < 2 * inbox::LOG_BURST as u64 {
        while end.send_frame(&line).is_ok() {
            sent += 1;
        }
        turn(&mut h);
    }
    h.drive();
    let lost = h.sup.info("w0").unwrap().lost_logs;
    let passed = sent - lost;
    assert!(
        lost > 0 && passed * 8 * 1024 <= inbox::LOG_BURST as u64,
        "{passed} of {sent} lines of 8 KiB passed, {lost} suppressed"
    );
    // Time refills the budget: lines pass again.
    h.advance(Duration::from_secs(1));
    end.send_frame(&line).unwrap();
    h.drive();
    assert_eq!(h.sup.info("w0").unwrap().lost_logs, lost);
}

#[test]
fn the_real_group_reaper_reaps_that_group_only() {
    use std::os::unix::process::CommandExt;
    let mut mine = std::process::Command::new("true").spawn().unwrap();
    let mut grouped = std::process::Command::new("true")
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = Pid::from_raw(grouped.id() as i32);
    let mut procs = Fork::default();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !procs.reap_group(pgid) {
        assert!(Instant::now() < deadline, "the group never emptied");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{pgid}")).exists(),
        "reaped, not left a zombie"
    );
    assert!(
        grouped.wait().is_err(),
        "the group's child was reaped by the group reaper"
    );
    assert!(
        mine.wait().unwrap().success(),
        "a child of another group was left to its owner"
    );
}

#[test]
fn a_worker_that_shuts_its_wake_up_socket_down_is_unwatched_then_killed_once() {
    use std::os::fd::AsRawFd;
    let mut h = Harness::one(spec());
    let pid = h.pid("w0").unwrap();
    let end = h.worker_end("w0");
    let fd = end.incoming_fd().as_raw_fd();
    nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both).unwrap();
    // End of file, readable for ever: seen once, then no longer watched (the loop would
    // spin otherwise), and nothing is killed yet (a worker that ends closes it too).
    let mut ready = Vec::new();
    h.reactor.turn(Some(Duration::ZERO), &mut ready).unwrap();
    assert!(!ready.is_empty(), "the hang-up is seen");
    turn_with(&mut h, ready);
    for _ in 0..5 {
        let mut ready = Vec::new();
        h.reactor.turn(Some(Duration::ZERO), &mut ready).unwrap();
        assert!(ready.is_empty(), "no longer watched: {}", ready.len());
    }
    assert_eq!(h.signals_to(pid), []);
    // Still running past the grace: killed, once.
    h.advance(inbox::HANG_UP_GRACE);
    h.advance(inbox::HANG_UP_GRACE);
    assert_eq!(h.signals_to(pid), [Signal::SIGKILL]);
    h.exits("w0", None, Some(9));
    assert!(h.pid("w0").is_some(), "handled as a crash: restarted");
}

#[test]
fn a_worker_whose_socket_closes_as_it_ends_is_not_killed() {
    let mut h = Harness::one(spec().restart(crate::worker::Restart::Transient));
    let pid = h.pid("w0").unwrap();
    // What the kernel does when the process exits: its socket closes before it can be
    // reaped. (The harness keeps the worker's end: shut it down to the same effect.)
    let end = h.worker_end("w0");
    {
        use std::os::fd::AsRawFd;
        let fd = end.incoming_fd().as_raw_fd();
        nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both).unwrap();
    }
    turn(&mut h);
    h.exits("w0", Some(0), None);
    h.advance(inbox::HANG_UP_GRACE * 2);
    // (Only the group's SIGKILL at the reap, for what the worker may have left behind.)
    assert_eq!(h.signals_to(pid), [Signal::SIGKILL]);
    assert_eq!(h.group_signals_to(pid), [Signal::SIGKILL]);
    assert_eq!(
        h.state("w0"),
        State::Exited,
        "transient, exited cleanly: not restarted"
    );
}

mod calls;
mod reap;

#[test]
fn the_fork_server_leaves_the_tables_of_entries_and_of_names_out_of_its_workers() {
    // Each grows with the fleet, and neither the server nor a worker reads them: what the
    // server keeps out of its forks covers them whole (of 3,000 entries, some 3 MiB, 32 KiB
    // and 48 KiB): each is a whole mapping, so no page of one is left in a worker beside
    // what shares it, nor is the heap split around it.
    let names: Vec<String> = (0..3000).map(|i| format!("w{i}")).collect();
    let specs: Vec<(&str, Spec)> = names.iter().map(|n| (n.as_str(), spec())).collect();
    let h = Harness::new(&specs);
    let unneeded = h.world.borrow().unneeded.clone();
    let covered = |(start, len): (usize, usize)| {
        len > 0
            && unneeded
                .iter()
                .any(|&(s, l)| s <= start && start + len <= s + l)
    };
    let page = super::unshared::page_size();
    for &(start, len) in &unneeded {
        assert!(
            start % page == 0 && len % page == 0 && len > 0,
            "not whole pages: {start:#x} {len}"
        );
    }
    let entries = &h.sup.entries;
    let table = (entries.as_ptr() as usize, std::mem::size_of_val(&**entries));
    assert!(covered(table), "the entries {table:x?}: {unneeded:x?}");
    assert_eq!(entries.mapping(), unneeded[0]);
    let index = h.sup.by_name.table();
    assert!(covered(index), "the names {index:x?}: {unneeded:x?}");
    assert!(index.1 >= 2 * 3000 * 4);
    // And the server's list of the templates (a worker is handed its own).
    assert!(unneeded[2].1 >= 3000 * std::mem::size_of::<&mut dyn Template>());
    // Only those: nothing a worker needs.
    assert_eq!(unneeded.len(), 3);
    // The names are in the arena, none in the heap.
    let placed = h.world.borrow().placed.clone();
    for e in entries.iter() {
        let at = e.name.as_ptr() as usize;
        assert!(
            placed
                .iter()
                .any(|&(s, l)| s <= at && at + e.name.len() <= s + l),
            "{} at {at:#x} is not in the arena {placed:x?}",
            e.name
        );
    }
    // Every template is in the mappings given as the templates', none of them in those.
    assert!(!placed.is_empty());
    let mut sup = h.sup;
    for i in 0..sup.entries.len() {
        let t = sup.entries[i].template.get();
        let (at, size) = (
            std::ptr::from_mut(t).cast::<u8>() as usize,
            std::mem::size_of_val(t),
        );
        assert!(size > 0);
        assert!(
            placed.iter().any(|&(s, l)| s <= at && at + size <= s + l),
            "template {i} at {at:#x} is not in {placed:x?}"
        );
        assert!(!covered((at, size)), "template {i} is in a table left out");
    }
}
