//! Reaping by the exited child the kernel names, against the fake process control.

use super::*;

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
