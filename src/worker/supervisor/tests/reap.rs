//! Reaping by the exited child the kernel names, against the fake process control.

use super::*;
use crate::worker::supervisor::reap::{REAP_BY_WALK_BELOW, WALK_EVERY, WALK_PATIENCE};

fn fleet(n: usize) -> Harness {
    let names: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
    let specs: Vec<(&str, Spec)> = names.iter().map(|n| (n.as_str(), spec())).collect();
    let h = Harness::new(&specs);
    h.world.borrow_mut().peeking = true;
    h
}

#[test]
fn a_reap_waits_for_the_exited_workers_only() {
    let mut h = fleet(50);
    let gone = [h.pid("w3").unwrap(), h.pid("w41").unwrap()];
    for (pid, code) in gone.iter().zip([0, 3]) {
        h.world.borrow_mut().exits.insert(*pid, (Some(code), None));
    }
    h.world.borrow_mut().waited.clear();
    h.sup.reap();
    h.pump();
    let waited = h.world.borrow().waited.clone();
    assert_eq!(waited, gone.to_vec(), "asked the exited ones only");
    for (name, pid) in ["w3", "w41"].into_iter().zip(gone) {
        let exit = h.sup.last_exit(name).expect("reaped").clone();
        assert_eq!(exit.pid, pid.as_raw());
        assert_ne!(
            h.pid(name),
            Some(pid),
            "{name} is restarted under a new pid"
        );
    }
    assert_eq!(
        h.sup.last_exit("w41").unwrap().code,
        Some(3),
        "its own status"
    );
    assert!(h.sup.last_exit("w4").is_none(), "the others did not exit");
}

#[test]
fn a_child_that_is_no_workers_makes_the_reap_ask_every_worker() {
    let mut h = fleet(5);
    let pid = h.pid("w2").unwrap();
    h.world.borrow_mut().exits.insert(pid, (Some(0), None));
    h.world.borrow_mut().stranger = Some(Pid::from_raw(99_999));
    h.world.borrow_mut().waited.clear();
    h.sup.reap();
    h.pump();
    assert_eq!(h.world.borrow().waited.len(), 5, "every worker asked");
    let exit = h.sup.last_exit("w2").expect("the exited one reaped");
    assert_eq!(exit.pid, pid.as_raw());
}

#[test]
fn a_worker_restarted_under_a_new_pid_is_reaped_by_it() {
    let mut h = fleet(2);
    let old = h.pid("w0").unwrap();
    h.world.borrow_mut().exits.insert(old, (None, Some(9)));
    h.sup.reap();
    h.pump();
    let new = h.pid("w0").expect("restarted at once");
    assert_ne!(new, old);
    h.world.borrow_mut().exits.insert(new, (None, Some(9)));
    h.world.borrow_mut().waited.clear();
    h.sup.reap();
    h.pump();
    assert_eq!(h.world.borrow().waited, vec![new]);
}

/// `n` workers that are not restarted, the kernel naming the exited ones.
fn temporary_fleet(n: usize) -> Harness {
    let names: Vec<String> = (0..n).map(|i| format!("w{i}")).collect();
    let temporary = spec().restart(Restart::Temporary);
    let specs: Vec<(&str, Spec)> = names
        .iter()
        .map(|n| (n.as_str(), temporary.clone()))
        .collect();
    let h = Harness::new(&specs);
    h.world.borrow_mut().peeking = true;
    h
}

/// What the kernel does as `name`'s process ends: its socket closes (the harness keeps the
/// worker's end: shut down, to the same effect), the daemon's loop sees it, then the
/// process can be reaped.
fn hangs_up(h: &mut Harness, name: &str) {
    use std::os::fd::AsRawFd;
    let end = h.worker_end(name);
    let fd = end.incoming_fd().as_raw_fd();
    nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both).unwrap();
    h.drive();
    let i = h.sup.find(name).unwrap();
    assert!(
        h.sup.ending.iter().any(|&(e, _)| e == i),
        "{name}'s hang-up is seen"
    );
}

#[test]
fn a_storm_of_exits_is_reaped_without_walking_every_child_each_time() {
    // Large enough that a walk over every child costs: each exit is reaped by its own pid,
    // the walk (which finds nothing once they are) at most once a while.
    let n = 3 * REAP_BY_WALK_BELOW;
    let mut h = temporary_fleet(n);
    // (While as many run as that at least: a smaller daemon walks at each reap.)
    let storm = n - REAP_BY_WALK_BELOW;
    for k in 0..storm {
        let name = format!("w{k}");
        let pid = h.pid(&name).unwrap();
        hangs_up(&mut h, &name);
        h.world.borrow_mut().exits.insert(pid, (Some(0), None));
        h.world.borrow_mut().waited.clear();
        h.sup.reap();
        h.pump();
        assert_eq!(
            h.world.borrow().waited,
            [pid],
            "{name}: asked by its pid only"
        );
        assert_eq!(h.sup.last_exit(&name).map(|e| e.pid), Some(pid.as_raw()));
    }
    let walks = h.world.borrow().fruitless_peeks;
    assert!(
        walks <= 1,
        "{walks} walks over every child for {storm} exits"
    );
}

#[test]
fn in_a_storm_an_exit_without_a_hang_up_is_reaped_by_the_next_walk() {
    let mut h = temporary_fleet(2 * REAP_BY_WALK_BELOW);
    let first = h.pid("w0").unwrap();
    hangs_up(&mut h, "w0");
    h.world.borrow_mut().exits.insert(first, (Some(0), None));
    h.sup.reap();
    h.pump();
    assert!(h.sup.last_exit("w0").is_some());
    // w1's socket is still open (a process it started holds it): only a walk finds it.
    let pid = h.pid("w1").unwrap();
    h.world.borrow_mut().exits.insert(pid, (Some(4), None));
    h.sup.reap();
    h.pump();
    assert!(h.sup.last_exit("w1").is_none(), "the walk waits a while");
    h.advance(WALK_EVERY);
    let exit = h.sup.last_exit("w1").expect("reaped by the next walk");
    assert_eq!((exit.pid, exit.code), (pid.as_raw(), Some(4)));
    // With the storm over, the next exit is found by a walk at once.
    h.advance(WALK_EVERY);
    let pid = h.pid("w2").unwrap();
    h.world.borrow_mut().exits.insert(pid, (Some(0), None));
    h.sup.reap();
    h.pump();
    assert!(h.sup.last_exit("w2").is_some());
}

#[test]
fn in_a_storm_the_ended_workers_are_reaped_by_their_pids_not_named_by_walks() {
    // A stop of a large fleet on a busy machine: the daemon's loop reads the hang-ups of
    // ending workers well behind the kernel, which has 64 more of them ended by then. Each
    // peek is a walk from the first child to the one it names: a walk at each reap, which
    // reaps them one peek at a time, is quadratic (on the build before, 64 peeks a reap).
    // They are reaped by their pids as their hang-ups are read, and walks wait until
    // that stops (or their patience runs out), each of a few steps at most.
    let n = 4 * REAP_BY_WALK_BELOW;
    let mut h = temporary_fleet(n);
    let storm = n - REAP_BY_WALK_BELOW;
    let ahead = 64;
    let pids: Vec<Pid> = (0..storm)
        .map(|k| h.pid(&format!("w{k}")).unwrap())
        .collect();
    for &pid in &pids[..ahead] {
        h.world.borrow_mut().exits.insert(pid, (Some(0), None));
    }
    h.world.borrow_mut().peeks = 0;
    // SIGCHLD.
    h.sup.reap();
    h.pump();
    for k in 0..storm {
        if let Some(&pid) = pids.get(k + ahead) {
            h.world.borrow_mut().exits.insert(pid, (Some(0), None));
        }
        let name = format!("w{k}");
        if h.sup.last_exit(&name).is_none() {
            hangs_up(&mut h, &name);
            h.sup.reap();
            h.pump();
        }
        assert_eq!(
            h.sup.last_exit(&name).map(|e| e.pid),
            Some(pids[k].as_raw())
        );
        h.advance(Duration::from_millis(1));
    }
    // The storm took 768 ms: one walk at its start and one when the patience ran out.
    let peeks = h.world.borrow().peeks;
    assert!(peeks <= 2 * 16, "{peeks} peeks for {storm} exits");
    // Once the storm is over, the walk it put off comes.
    let fruitless = h.world.borrow().fruitless_peeks;
    h.advance(WALK_EVERY);
    assert_eq!(h.world.borrow().fruitless_peeks, fruitless + 1);
}

#[test]
fn a_walk_put_off_by_a_long_storm_comes_after_its_patience() {
    let mut h = temporary_fleet(4 * REAP_BY_WALK_BELOW);
    // w0's socket is still open (a process it started holds it): only a walk finds it,
    // and the storm of the others, one every 5 ms, does not put it off for longer than
    // the patience.
    let hidden = h.pid("w0").unwrap();
    h.world.borrow_mut().exits.insert(hidden, (Some(3), None));
    h.advance(WALK_EVERY);
    let start = h.now();
    let mut k = 1;
    while h.sup.last_exit("w0").is_none() {
        assert!(
            h.now() - start <= WALK_PATIENCE + WALK_EVERY,
            "w0 not reaped after {:?}",
            h.now() - start
        );
        let name = format!("w{k}");
        let pid = h.pid(&name).unwrap();
        hangs_up(&mut h, &name);
        h.world.borrow_mut().exits.insert(pid, (Some(0), None));
        h.sup.reap();
        h.pump();
        h.advance(Duration::from_millis(5));
        k += 1;
    }
    assert_eq!(h.sup.last_exit("w0").unwrap().code, Some(3));
    assert!(
        h.now() - start >= WALK_EVERY,
        "it was put off (reaped at {:?}, k={k})",
        h.now() - start
    );
}
