use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::*;
use crate::reactor::Signal;

#[derive(Debug)]
struct Named(&'static str);

impl Event for Named {
    fn name(&self) -> &str {
        self.0
    }
}

type Log = Rc<RefCell<Vec<String>>>;

/// A listener that records "<tag>:<event name>" and returns `action`.
fn recorder(log: &Log, tag: &'static str, action: PostAction) -> impl Listener<TestHost> {
    let log = log.clone();
    from_fn(move |e: &dyn Event, _: &mut Context<'_, TestHost>| {
        log.borrow_mut().push(format!("{tag}:{}", e.name()));
        action
    })
}

fn run(bus: &mut Bus<TestHost>, event: impl Event) -> TestHost {
    let mut host = TestHost::default();
    bus.emit(event);
    while bus.has_pending() {
        bus.dispatch(&mut host);
    }
    host
}

fn taken(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.borrow_mut())
}

#[test]
fn same_priority_runs_in_subscription_order() {
    let log = Log::default();
    let mut bus = Bus::<TestHost>::new();
    for tag in ["a", "b", "c"] {
        bus.subscribe("x", recorder(&log, tag, PostAction::Continue))
            .unwrap();
    }
    run(&mut bus, Named("x"));
    assert_eq!(taken(&log), ["a:x", "b:x", "c:x"]);
}

#[test]
fn higher_priority_runs_first() {
    let log = Log::default();
    let mut bus = Bus::<TestHost>::new();
    bus.subscribe_with_priority("x", -5, recorder(&log, "low", PostAction::Continue))
        .unwrap();
    bus.subscribe_with_priority("x", 10, recorder(&log, "high", PostAction::Continue))
        .unwrap();
    bus.subscribe("x", recorder(&log, "mid1", PostAction::Continue))
        .unwrap();
    bus.subscribe("x", recorder(&log, "mid2", PostAction::Continue))
        .unwrap();
    run(&mut bus, Named("x"));
    assert_eq!(taken(&log), ["high:x", "mid1:x", "mid2:x", "low:x"]);
}

#[test]
fn wildcards_match_by_prefix_and_exact_names_do_not() {
    let log = Log::default();
    let mut bus = Bus::<TestHost>::new();
    bus.subscribe("daemon.*", recorder(&log, "daemon", PostAction::Continue))
        .unwrap();
    bus.subscribe("*", recorder(&log, "all", PostAction::Continue))
        .unwrap();
    bus.subscribe(
        "daemon.ready",
        recorder(&log, "exact", PostAction::Continue),
    )
    .unwrap();
    bus.subscribe(
        "daemon.rea",
        recorder(&log, "partial", PostAction::Continue),
    )
    .unwrap();
    run(&mut bus, DaemonEvent::Ready);
    run(&mut bus, Named("myapp.tick"));
    assert_eq!(
        taken(&log),
        [
            "daemon:daemon.ready",
            "all:daemon.ready",
            "exact:daemon.ready",
            "all:myapp.tick"
        ]
    );
}

#[test]
fn signal_events_match_by_name_and_by_number() {
    let log = Log::default();
    let mut bus = Bus::<TestHost>::new();
    bus.subscribe(
        "daemon.posix.15",
        recorder(&log, "num", PostAction::Continue),
    )
    .unwrap();
    bus.subscribe(
        "daemon.posix.SIGTERM",
        recorder(&log, "name", PostAction::Continue),
    )
    .unwrap();
    bus.subscribe(
        "daemon.posix.1*",
        recorder(&log, "numprefix", PostAction::Continue),
    )
    .unwrap();
    run(&mut bus, PosixEvent::new(Signal::TERM));
    assert_eq!(
        taken(&log),
        [
            "num:daemon.posix.SIGTERM",
            "name:daemon.posix.SIGTERM",
            "numprefix:daemon.posix.SIGTERM"
        ]
    );
    let scope = PosixEvent::PREFIX;
    assert!(bus.is_subscribed("daemon.posix.SIGTERM", Some("daemon.posix.15"), scope));
    assert!(!bus.is_subscribed("daemon.posix.SIGUSR1", Some("daemon.posix.30"), scope));
}

#[test]
fn only_patterns_within_the_scope_count_for_is_subscribed() {
    let mut bus = Bus::<TestHost>::new();
    bus.on("*", |_, _| PostAction::Continue).unwrap();
    bus.on("daemon.*", |_, _| PostAction::Continue).unwrap();
    let scope = PosixEvent::PREFIX;
    assert!(!bus.is_subscribed("daemon.posix.SIGHUP", Some("daemon.posix.1"), scope));
    assert!(bus.is_subscribed("daemon.posix.SIGHUP", None, ""));
    let id = bus
        .on("daemon.posix.*", |_, _| PostAction::Continue)
        .unwrap();
    assert!(bus.is_subscribed("daemon.posix.SIGHUP", Some("daemon.posix.1"), scope));
    bus.unsubscribe(id).unwrap();
    assert!(!bus.is_subscribed("daemon.posix.SIGHUP", Some("daemon.posix.1"), scope));
}

#[test]
fn stop_ends_propagation_for_this_event_only() {
    let log = Log::default();
    let mut bus = Bus::<TestHost>::new();
    bus.subscribe("x", recorder(&log, "a", PostAction::Stop))
        .unwrap();
    bus.subscribe("x", recorder(&log, "b", PostAction::Continue))
        .unwrap();
    bus.subscribe("y", recorder(&log, "c", PostAction::Continue))
        .unwrap();
    run(&mut bus, Named("x"));
    run(&mut bus, Named("x"));
    run(&mut bus, Named("y"));
    assert_eq!(taken(&log), ["a:x", "a:x", "c:y"]);
}

#[test]
fn remove_unsubscribes_after_handling_and_later_listeners_still_run() {
    let log = Log::default();
    let mut bus = Bus::<TestHost>::new();
    bus.subscribe("x", recorder(&log, "once", PostAction::Remove))
        .unwrap();
    bus.subscribe("x", recorder(&log, "always", PostAction::Continue))
        .unwrap();
    let before = bus.generation();
    run(&mut bus, Named("x"));
    assert_ne!(bus.generation(), before, "removal changes the generation");
    run(&mut bus, Named("x"));
    assert_eq!(taken(&log), ["once:x", "always:x", "always:x"]);
    assert_eq!(bus.len(), 1);
}

#[test]
fn unsubscribe_by_token_and_stale_token_is_an_error() {
    let log = Log::default();
    let mut bus = Bus::<TestHost>::new();
    let id = bus
        .subscribe("x", recorder(&log, "a", PostAction::Continue))
        .unwrap();
    bus.unsubscribe(id).unwrap();
    run(&mut bus, Named("x"));
    assert!(taken(&log).is_empty());
    assert!(matches!(
        bus.unsubscribe(id),
        Err(Error::UnknownSubscription(n)) if n == id.as_u64()
    ));
}

#[test]
fn bad_patterns_are_refused() {
    let mut bus = Bus::<TestHost>::new();
    for bad in ["", "daemon.*.x", "*x", "a**"] {
        let r = bus.on(bad, |_, _| PostAction::Continue);
        assert!(matches!(r, Err(Error::BadPattern(_))), "{bad:?} accepted");
    }
    assert!(bus.is_empty());
}

#[test]
fn panicking_listener_is_caught_logged_and_others_still_run() {
    let log = Log::default();
    let mut bus = Bus::<TestHost>::new();
    bus.on("x", |_, _| panic!("boom")).unwrap();
    bus.subscribe("x", recorder(&log, "after", PostAction::Continue))
        .unwrap();
    crate::testing::quiet_panics(|| {
        run(&mut bus, Named("x"));
        run(&mut bus, Named("x"));
    });
    assert_eq!(taken(&log), ["after:x", "after:x"]);
    assert_eq!(bus.len(), 2, "a panicking listener stays subscribed");
}

#[test]
fn emitted_events_are_dispatched_after_the_current_one_in_order() {
    let log = Log::default();
    let mut bus = Bus::<TestHost>::new();
    bus.on("start", |_, ctx| {
        ctx.emit(Named("second"));
        ctx.emit(Named("third"));
        PostAction::Continue
    })
    .unwrap();
    bus.subscribe("*", recorder(&log, "all", PostAction::Continue))
        .unwrap();
    run(&mut bus, Named("start"));
    assert_eq!(taken(&log), ["all:start", "all:second", "all:third"]);
}

#[test]
fn listeners_subscribed_during_dispatch_start_with_the_next_event() {
    let log = Log::default();
    let mut bus = Bus::<TestHost>::new();
    let inner = log.clone();
    bus.on("x", move |_, ctx| {
        ctx.subscribe("x", 100, recorder(&inner, "late", PostAction::Continue))
            .unwrap();
        PostAction::Remove
    })
    .unwrap();
    run(&mut bus, Named("x"));
    assert!(taken(&log).is_empty());
    run(&mut bus, Named("x"));
    assert_eq!(taken(&log), ["late:x"]);
}

#[test]
fn a_listener_can_unsubscribe_another_before_it_runs() {
    let log = Log::default();
    let mut bus = Bus::<TestHost>::new();
    let victim = Rc::new(RefCell::new(None));
    let v = victim.clone();
    bus.on("x", move |_, ctx| {
        if let Some(id) = v.borrow_mut().take() {
            ctx.unsubscribe(id).unwrap();
            assert!(ctx.unsubscribe(id).is_err(), "second unsubscribe is stale");
        }
        PostAction::Continue
    })
    .unwrap();
    let id = bus
        .subscribe("x", recorder(&log, "victim", PostAction::Continue))
        .unwrap();
    *victim.borrow_mut() = Some(id);
    run(&mut bus, Named("x"));
    assert!(taken(&log).is_empty());
}

#[test]
fn context_stops_the_host_and_arms_timers_that_become_events() {
    let log = Log::default();
    let mut bus = Bus::<TestHost>::new();
    bus.on("go", |_, ctx| {
        ctx.timer(Duration::ZERO, "later");
        let p = ctx.periodic(Duration::from_secs(3600), "hourly");
        ctx.cancel_timer(p).unwrap();
        assert!(ctx.cancel_timer(p).is_err());
        ctx.stop(3);
        PostAction::Continue
    })
    .unwrap();
    bus.subscribe("later", recorder(&log, "timer", PostAction::Continue))
        .unwrap();
    let mut host = run(&mut bus, Named("go"));
    assert_eq!(host.stopped(), Some(3));
    assert_eq!(host.fire_due(&mut bus, Instant::now()), 1);
    bus.dispatch(&mut host);
    assert_eq!(taken(&log), ["timer:later"]);
    assert_eq!(host.armed_timers(), 0);
}

#[test]
fn dispatch_is_bounded_per_call() {
    let mut bus = Bus::<TestHost>::new();
    bus.on("loop", |_, ctx| {
        ctx.emit(Named("loop"));
        PostAction::Continue
    })
    .unwrap();
    bus.emit(Named("loop"));
    let mut host = TestHost::default();
    assert_eq!(bus.dispatch(&mut host), DISPATCH_LIMIT);
    assert!(bus.has_pending(), "the rest waits for the next turn");
}

#[test]
fn context_reaches_the_concrete_host() {
    let mut bus = Bus::<TestHost>::new();
    bus.on("x", |_, ctx| {
        let host: &mut TestHost = ctx.host();
        host.stop(42);
        PostAction::Continue
    })
    .unwrap();
    assert_eq!(run(&mut bus, Named("x")).stopped(), Some(42));
}

#[derive(Debug, PartialEq)]
struct Other(&'static str);

impl Event for Other {
    fn name(&self) -> &str {
        self.0
    }
}

#[test]
fn typed_subscriptions_match_by_type_whatever_the_name() {
    let log = Log::default();
    let mut bus = Bus::<TestHost>::new();
    let l = log.clone();
    bus.on_event(move |e: &Named, _| {
        l.borrow_mut().push(format!("typed:{}", e.0));
        PostAction::Continue
    });
    bus.subscribe("x", recorder(&log, "named", PostAction::Continue))
        .unwrap();
    run(&mut bus, Named("x"));
    run(&mut bus, Other("x"));
    run(&mut bus, Named("y"));
    assert_eq!(taken(&log), ["typed:x", "named:x", "named:x", "typed:y"]);
    assert!(
        bus.may_receive::<Named>("zzz"),
        "a typed subscriber wants every Named"
    );
    assert!(!bus.may_receive::<Other>("zzz"));
}

#[test]
fn one_listener_on_several_patterns_gets_each_event_once() {
    let log = Log::default();
    let mut bus = Bus::<TestHost>::new();
    bus.subscribe_all(
        &["a", "a*", "b"],
        0,
        recorder(&log, "l", PostAction::Continue),
    )
    .unwrap();
    run(&mut bus, Named("a"));
    run(&mut bus, Named("b"));
    run(&mut bus, Named("c"));
    assert_eq!(taken(&log), ["l:a", "l:b"]);
    assert!(
        bus.subscribe_all(&[], 0, recorder(&log, "none", PostAction::Continue))
            .is_err()
    );
}

#[test]
fn on_signal_subscribes_the_signal_by_name() {
    let mut bus = Bus::<TestHost>::new();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    bus.on_signal(Signal::HUP, move |e, _| {
        s.borrow_mut().push(e.signal());
        PostAction::Continue
    });
    let scope = PosixEvent::PREFIX;
    assert!(bus.is_subscribed("daemon.posix.SIGHUP", Some("daemon.posix.1"), scope));
    run(&mut bus, PosixEvent::new(Signal::HUP));
    run(&mut bus, PosixEvent::new(Signal::TERM));
    assert_eq!(*seen.borrow(), [Signal::HUP]);
}
