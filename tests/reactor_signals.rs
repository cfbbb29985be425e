//! Signal delivery through the reactor. Signal dispositions are process-wide and the checks
//! fork, so this is its own single-threaded test binary (`harness = false`).

use std::process::exit;
use std::time::Duration;

use daimon::Error;
use daimon::reactor::{Reactor, Ready, Signal, reset_after_fork};
use nix::libc;
use nix::sys::signal::{Signal as NixSignal, raise};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

fn signal(name: &str) -> Signal {
    Signal::from_name(name).expect("a standard signal")
}

fn turn(reactor: &mut Reactor, wait: Option<Duration>) -> Vec<Ready<()>> {
    let mut out = Vec::new();
    reactor.turn(wait, &mut out).expect("turn");
    out
}

/// The descriptors this process has open, with what each one is (not the listing's own).
fn open_fds() -> std::collections::BTreeMap<i32, String> {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| {
            let e = e.ok()?;
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .filter(|(_, what)| !what.starts_with("/proc/"))
        .collect()
}

/// The first signal caught opens the signal pipe: on Linux one eventfd, no socket pair (a
/// worker makes it as it starts and closes it as it exits; a pair costs two descriptors,
/// each several times dearer). Runs first, before anything opened it.
fn the_signal_pipe_is_one_eventfd(reactor: &mut Reactor) {
    let before = open_fds();
    reactor.catch_signal(signal("SIGUSR1")).unwrap();
    let opened: Vec<String> = open_fds()
        .into_iter()
        .filter(|(fd, what)| before.get(fd) != Some(what))
        .map(|(_, what)| what)
        .collect();
    assert_eq!(opened, ["anon_inode:[eventfd]"], "the signal pipe");
    // Two signals in two turns: each is reported (the count is taken whole each time).
    for _ in 0..2 {
        raise(NixSignal::SIGUSR1).unwrap();
        let ready = turn(reactor, Some(Duration::from_secs(5)));
        assert_eq!(ready, vec![Ready::Signal(signal("SIGUSR1"))]);
    }
    reactor.release_signal(signal("SIGUSR1"));
}

/// A signal that arrives while the process is busy (here: before the turn even starts) is
/// reported by the very next turn, which must not wait for another signal.
fn pending_signal_is_reported_by_the_next_turn(reactor: &mut Reactor) {
    reactor.catch_signal(signal("SIGUSR2")).unwrap();
    raise(NixSignal::SIGUSR2).unwrap();
    raise(NixSignal::SIGUSR2).unwrap();
    // No timers and no max wait: only the pending signal can end this turn.
    let ready = turn(reactor, None);
    assert_eq!(
        ready,
        vec![Ready::Signal(signal("SIGUSR2"))],
        "coalesced, once"
    );
    let ready = turn(reactor, Some(Duration::from_millis(10)));
    assert!(ready.is_empty(), "nothing left after draining: {ready:?}");
}

fn signals_are_reported_before_timers(reactor: &mut Reactor) {
    reactor.catch_signal(signal("SIGHUP")).unwrap();
    reactor.timer(Duration::ZERO, ());
    raise(NixSignal::SIGHUP).unwrap();
    let ready = turn(reactor, None);
    assert!(
        matches!(ready[0], Ready::Signal(s) if s.name() == "SIGHUP"),
        "{ready:?}"
    );
    assert!(matches!(ready[1], Ready::Timer(..)), "{ready:?}");
}

fn never_caught_signals_are_refused(reactor: &mut Reactor) {
    for name in [
        "SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTSTP", "SIGTTIN", "SIGTTOU",
    ] {
        match reactor.catch_signal(signal(name)) {
            Err(Error::UncatchableSignal(n)) => assert_eq!(n, signal(name).number()),
            other => panic!("{name}: expected UncatchableSignal, got {other:?}"),
        }
        assert!(!reactor.is_caught(signal(name)));
    }
}

/// Runs `child` in a forked child and returns how it ended.
fn in_child(child: impl FnOnce()) -> WaitStatus {
    // SAFETY: this test binary is single-threaded (harness = false, no threads spawned).
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            child();
            // SAFETY: _exit is always safe to call.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => waitpid(child, None).expect("waitpid"),
    }
}

/// A released signal takes its default action again: SIGUSR1 terminates.
fn released_signal_gets_its_default_action_back() {
    let status = in_child(|| {
        reset_after_fork();
        let mut reactor: Reactor = Reactor::new().unwrap();
        let usr1 = signal("SIGUSR1");
        reactor.catch_signal(usr1).unwrap();
        raise(NixSignal::SIGUSR1).unwrap();
        let caught = turn(&mut reactor, Some(Duration::from_secs(5)));
        if caught != vec![Ready::Signal(usr1)] {
            // SAFETY: _exit is always safe to call.
            unsafe { libc::_exit(3) };
        }
        reactor.release_signal(usr1);
        let _ = raise(NixSignal::SIGUSR1);
        // Still alive: the default action did not run.
        // SAFETY: _exit is always safe to call.
        unsafe { libc::_exit(4) };
    });
    assert_eq!(
        status,
        WaitStatus::Signaled(status_pid(status), NixSignal::SIGUSR1, false),
        "the child must die of SIGUSR1"
    );
}

/// A forked child that resets the parent's wiring gets default actions, and may build its
/// own reactor that catches signals again.
fn child_resets_the_parents_signals(reactor: &mut Reactor) {
    reactor.catch_signal(signal("SIGUSR1")).unwrap();
    let status = in_child(|| {
        reset_after_fork();
        let _ = raise(NixSignal::SIGUSR1);
        // SAFETY: _exit is always safe to call.
        unsafe { libc::_exit(5) };
    });
    assert!(
        matches!(status, WaitStatus::Signaled(_, NixSignal::SIGUSR1, _)),
        "{status:?}"
    );
    let status = in_child(|| {
        reset_after_fork();
        let mut own: Reactor = Reactor::new().unwrap();
        own.catch_signal(signal("SIGUSR1")).unwrap();
        raise(NixSignal::SIGUSR1).unwrap();
        let ok =
            turn(&mut own, Some(Duration::from_secs(5))) == vec![Ready::Signal(signal("SIGUSR1"))];
        // SAFETY: _exit is always safe to call.
        unsafe { libc::_exit(if ok { 0 } else { 6 }) };
    });
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    // The parent's reactor still owns its signals.
    raise(NixSignal::SIGUSR1).unwrap();
    assert_eq!(turn(reactor, None), vec![Ready::Signal(signal("SIGUSR1"))]);
}

/// The disposition of `sig` now: `SIG_DFL`, `SIG_IGN` or a handler's address.
fn disposition(sig: i32) -> libc::sighandler_t {
    // SAFETY: a zeroed sigaction is valid; sigaction(2) with no new action only reads.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above, `old` is a live local.
    unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
    old.sa_sigaction
}

/// A signal ignored before daimon touched it is ignored again once released, not given
/// the default action.
fn released_signal_gets_back_an_ignored_disposition() {
    let status = in_child(|| {
        reset_after_fork();
        // SAFETY: signal(2) in this single-threaded child.
        unsafe { libc::signal(libc::SIGWINCH, libc::SIG_IGN) };
        let winch = signal("SIGWINCH");
        let mut reactor: Reactor = Reactor::new().unwrap();
        reactor.catch_signal(winch).unwrap();
        let ok = winch.is_inherited_ignored()
            && disposition(libc::SIGWINCH) != libc::SIG_IGN
            && raise(NixSignal::SIGWINCH).is_ok()
            && turn(&mut reactor, Some(Duration::from_secs(5))) == vec![Ready::Signal(winch)];
        reactor.release_signal(winch);
        let restored = disposition(libc::SIGWINCH) == libc::SIG_IGN;
        // SAFETY: _exit is always safe to call.
        unsafe {
            libc::_exit(if !ok {
                7
            } else if !restored {
                8
            } else {
                0
            })
        };
    });
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
}

/// A forked child gets back what the parent had before daimon touched each signal:
/// SIGPIPE ignored as the Rust runtime left it, SIGQUIT the default.
fn child_gets_back_the_dispositions_from_before_daimon(reactor: &mut Reactor) {
    reactor.catch_signal(signal("SIGPIPE")).unwrap();
    reactor.catch_signal(signal("SIGQUIT")).unwrap();
    assert_ne!(
        disposition(libc::SIGPIPE),
        libc::SIG_IGN,
        "caught in the parent"
    );
    let status = in_child(|| {
        reset_after_fork();
        let pipe = disposition(libc::SIGPIPE) == libc::SIG_IGN;
        let quit = disposition(libc::SIGQUIT) == libc::SIG_DFL;
        // SAFETY: _exit is always safe to call.
        unsafe {
            libc::_exit(if !pipe {
                9
            } else if !quit {
                10
            } else {
                0
            })
        };
    });
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    reactor.release_signal(signal("SIGPIPE"));
    reactor.release_signal(signal("SIGQUIT"));
    assert_eq!(
        disposition(libc::SIGPIPE),
        libc::SIG_IGN,
        "released in the parent"
    );
    assert_eq!(
        disposition(libc::SIGQUIT),
        libc::SIG_DFL,
        "released in the parent"
    );
}

/// A signal that reaches a forked child before it reset the parent's wiring (the instant
/// after fork) takes the disposition from before daimon, rather than being swallowed by the
/// parent's handler.
fn child_before_its_reset_gets_the_original_disposition(reactor: &mut Reactor) {
    reactor.catch_signal(signal("SIGUSR1")).unwrap();
    let status = in_child(|| {
        let _ = raise(NixSignal::SIGUSR1);
        // SAFETY: _exit is always safe to call.
        unsafe { libc::_exit(11) };
    });
    assert!(
        matches!(status, WaitStatus::Signaled(_, NixSignal::SIGUSR1, _)),
        "{status:?}"
    );
    // The parent still catches it.
    raise(NixSignal::SIGUSR1).unwrap();
    assert_eq!(turn(reactor, None), vec![Ready::Signal(signal("SIGUSR1"))]);
}

/// The whole disposition of `sig` now.
fn sigaction_of(sig: i32) -> libc::sigaction {
    // SAFETY: a zeroed sigaction is valid; sigaction(2) with no new action only reads.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above, `old` is a live local.
    unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
    old
}

/// A caught signal's handler is signal-hook's (a `SA_SIGINFO` handler); released, the signal
/// has its disposition from before daimon; caught again (signal-hook installs its handler
/// only once), the same handler is back and the signal is delivered again.
fn a_released_signal_is_caught_again_through_signal_hook(reactor: &mut Reactor) {
    let urg = signal("SIGURG");
    assert_eq!(disposition(libc::SIGURG), libc::SIG_DFL, "before daimon");
    reactor.catch_signal(urg).unwrap();
    let hook = sigaction_of(libc::SIGURG);
    assert!(
        hook.sa_sigaction != libc::SIG_DFL && hook.sa_flags & libc::SA_SIGINFO != 0,
        "signal-hook's handler"
    );
    raise(NixSignal::SIGURG).unwrap();
    assert_eq!(turn(reactor, None), vec![Ready::Signal(urg)]);
    reactor.release_signal(urg);
    assert_eq!(disposition(libc::SIGURG), libc::SIG_DFL, "released");
    raise(NixSignal::SIGURG).unwrap();
    assert!(
        turn(reactor, Some(Duration::from_millis(10))).is_empty(),
        "released: not reported"
    );
    reactor.catch_signal(urg).unwrap();
    assert_eq!(
        disposition(libc::SIGURG),
        hook.sa_sigaction,
        "signal-hook's handler back"
    );
    raise(NixSignal::SIGURG).unwrap();
    assert_eq!(
        turn(reactor, None),
        vec![Ready::Signal(urg)],
        "caught again"
    );
    reactor.release_signal(urg);
    assert_eq!(disposition(libc::SIGURG), libc::SIG_DFL, "released again");
}

/// A check that runs against the parent's reactor.
type Check = fn(&mut Reactor);

fn status_pid(status: WaitStatus) -> nix::unistd::Pid {
    status.pid().expect("a pid")
}

fn main() {
    // A watchdog for the whole binary: a hang fails instead of blocking CI.
    // SAFETY: alarm(2) only arms a timer; SIGALRM's default action ends the process.
    unsafe { libc::alarm(30) };
    let mut reactor: Reactor = Reactor::new().unwrap();
    let checks: [(&str, Check); 8] = [
        (
            "the_signal_pipe_is_one_eventfd",
            the_signal_pipe_is_one_eventfd,
        ),
        (
            "pending_signal_is_reported_by_the_next_turn",
            pending_signal_is_reported_by_the_next_turn,
        ),
        (
            "signals_are_reported_before_timers",
            signals_are_reported_before_timers,
        ),
        (
            "never_caught_signals_are_refused",
            never_caught_signals_are_refused,
        ),
        (
            "child_resets_the_parents_signals",
            child_resets_the_parents_signals,
        ),
        (
            "child_gets_back_the_dispositions_from_before_daimon",
            child_gets_back_the_dispositions_from_before_daimon,
        ),
        (
            "child_before_its_reset_gets_the_original_disposition",
            child_before_its_reset_gets_the_original_disposition,
        ),
        (
            "a_released_signal_is_caught_again_through_signal_hook",
            a_released_signal_is_caught_again_through_signal_hook,
        ),
    ];
    for (name, check) in checks {
        check(&mut reactor);
        println!("test {name} ... ok");
    }
    drop(reactor);
    released_signal_gets_its_default_action_back();
    println!("test released_signal_gets_its_default_action_back ... ok");
    released_signal_gets_back_an_ignored_disposition();
    println!("test released_signal_gets_back_an_ignored_disposition ... ok");
    // A second reactor may own the signals once the first is gone.
    let mut again: Reactor = Reactor::new().unwrap();
    again.catch_signal(signal("SIGUSR2")).unwrap();
    println!("test a_new_reactor_owns_signals_after_the_old_one_dropped ... ok");
    exit(0);
}
