//! Calls that wait for a worker's reply, and the workers' lines as events, against the fake
//! process control.

use super::*;
use crate::rpc::{Reply, RpcError, Ticket};
use crate::worker::supervisor::calls::MAX_CALLS;
use crate::worker::{CommandError, WorkerLog};

fn reply_in(h: &Harness, after: Duration) -> Reply {
    Reply::new(Ticket::next(), h.now() + after)
}

/// The id of the one call `end` received.
fn call_id(end: &Channel) -> u64 {
    match &received(end)[..] {
        [Down::Call(id, _, _)] => *id,
        other => panic!("one call expected: {other:?}"),
    }
}

fn error_text(h: &Harness, k: usize) -> String {
    match &h.resolved[k].1 {
        Err(e) => e.to_string(),
        Ok(v) => panic!("an error expected, got {v}"),
    }
}

#[test]
fn a_call_is_answered_with_the_workers_value_once() {
    let mut h = Harness::one(spec());
    let end = h.worker_end("w0");
    let reply = reply_in(&h, Duration::from_secs(1));
    h.sup
        .call("w0", "echo", Some(json!({"a": 1})), reply)
        .unwrap();
    h.pump();
    let [Down::Call(id, command, payload)] = &received(&end)[..] else {
        panic!("one call")
    };
    assert_eq!(
        (command.as_str(), payload),
        ("echo", &Some(json!({"a": 1})))
    );
    assert_ne!(
        *id,
        reply.ticket().0,
        "the worker never sees the caller's ticket"
    );
    assert_eq!(h.sup.calls_waiting("w0"), 1);
    end.send_frame(&Up::Reply(*id, Ok(json!([1, 2]))).encode())
        .unwrap();
    h.drive();
    assert!(
        matches!(&h.resolved[..], [(t, Ok(v))] if *t == reply.ticket().0 && *v == json!([1, 2])),
        "{:?}",
        h.resolved
    );
    assert_eq!(h.sup.calls_waiting("w0"), 0);
    // Its deadline comes and does nothing; a second reply neither.
    end.send_frame(&Up::Reply(*id, Ok(json!(3))).encode())
        .unwrap();
    h.drive();
    h.advance(Duration::from_secs(2));
    assert_eq!(h.resolved.len(), 1);
}

#[test]
fn a_handlers_error_reaches_the_caller_with_its_code_and_message() {
    let mut h = Harness::one(spec());
    let end = h.worker_end("w0");
    let reply = reply_in(&h, Duration::from_secs(1));
    h.sup.call("w0", "fail", None, reply).unwrap();
    let id = call_id(&end);
    let failed = Up::Reply(id, Err(CommandError::new(4242, "no such file")));
    end.send_frame(&failed.encode()).unwrap();
    h.drive();
    let Some((_, Err(e))) = h.resolved.pop() else {
        panic!("an error")
    };
    assert!(h.resolved.is_empty());
    let e = RpcError::from(e);
    assert_eq!((e.code, e.message.as_str()), (4242, "no such file"));
}

#[test]
fn a_call_not_answered_in_time_fails_naming_the_worker_and_command_and_a_late_reply_is_ignored() {
    let mut h = Harness::one(spec());
    let end = h.worker_end("w0");
    let reply = reply_in(&h, Duration::from_millis(500));
    h.sup.call("w0", "slow", None, reply).unwrap();
    let id = call_id(&end);
    h.advance(Duration::from_millis(400));
    assert!(h.resolved.is_empty());
    // Before the caller's own deadline: the supervisor's answer is the one the caller gets.
    h.advance(Duration::from_millis(99));
    assert_eq!(h.resolved.len(), 1);
    assert_eq!(h.resolved[0].0, reply.ticket().0);
    let text = error_text(&h, 0);
    assert_eq!(text, "worker 'w0': did not reply to 'slow' within 500 ms");
    assert_eq!(h.sup.calls_waiting("w0"), 0, "the table is cleaned");
    end.send_frame(&Up::Reply(id, Ok(json!("late"))).encode())
        .unwrap();
    h.drive();
    assert_eq!(h.resolved.len(), 1, "{:?}", h.resolved);
}

#[test]
fn a_worker_that_exits_fails_its_calls_and_its_next_process_cannot_answer_them() {
    let mut h = Harness::one(spec());
    let end = h.worker_end("w0");
    let reply = reply_in(&h, Duration::from_secs(5));
    h.sup.call("w0", "die", None, reply).unwrap();
    let id = call_id(&end);
    h.exits("w0", None, Some(6));
    assert_eq!(h.resolved.len(), 1);
    assert_eq!(
        error_text(&h, 0),
        "worker 'w0': exited before replying to 'die'"
    );
    // Restarted at once: the new process owes nothing.
    let new = h.worker_end("w0");
    new.send_frame(&Up::Reply(id, Ok(json!("forged"))).encode())
        .unwrap();
    h.drive();
    h.advance(Duration::from_secs(10));
    assert_eq!(h.resolved.len(), 1, "{:?}", h.resolved);
    // And it answers its own calls.
    let reply = reply_in(&h, Duration::from_secs(5));
    h.sup.call("w0", "echo", None, reply).unwrap();
    let id = call_id(&new);
    new.send_frame(&Up::Reply(id, Ok(json!(null))).encode())
        .unwrap();
    h.drive();
    assert!(matches!(&h.resolved[1], (t, Ok(_)) if *t == reply.ticket().0));
}

#[test]
fn a_reply_sent_just_before_the_exit_is_read_at_the_reap() {
    let mut h = Harness::one(spec());
    let end = h.worker_end("w0");
    let reply = reply_in(&h, Duration::from_secs(5));
    h.sup.call("w0", "bye", None, reply).unwrap();
    let id = call_id(&end);
    end.send_frame(&Up::Reply(id, Ok(json!("bye"))).encode())
        .unwrap();
    h.exits("w0", Some(0), None);
    assert!(
        matches!(&h.resolved[..], [(_, Ok(v))] if *v == json!("bye")),
        "{:?}",
        h.resolved
    );
}

#[test]
fn a_worker_cannot_answer_a_call_made_to_another_nor_an_id_it_was_never_sent() {
    let mut h = Harness::new(&[("a", spec()), ("b", spec())]);
    let (a, b) = (h.worker_end("a"), h.worker_end("b"));
    let reply = reply_in(&h, Duration::from_secs(5));
    h.sup.call("a", "echo", None, reply).unwrap();
    let id = call_id(&a);
    b.send_frame(&Up::Reply(id, Ok(json!("forged"))).encode())
        .unwrap();
    a.send_frame(&Up::Reply(id + 1000, Ok(json!("unknown"))).encode())
        .unwrap();
    a.send_frame(&Up::Reply(reply.ticket().0, Ok(json!("ticket"))).encode())
        .unwrap();
    // Garbage in a reply's place: dropped and counted.
    a.send_frame(b"\x13\xa1x").unwrap();
    h.drive();
    assert!(h.resolved.is_empty(), "{:?}", h.resolved);
    assert_eq!(h.sup.info("a").unwrap().dropped, 1);
    a.send_frame(&Up::Reply(id, Ok(json!("real"))).encode())
        .unwrap();
    h.drive();
    assert!(matches!(&h.resolved[..], [(_, Ok(v))] if *v == json!("real")));
    assert!(h.pid("a").is_some() && h.pid("b").is_some());
}

#[test]
fn calls_waiting_for_one_worker_are_bounded() {
    let mut h = Harness::one(spec());
    let end = h.worker_end("w0");
    for _ in 0..MAX_CALLS {
        let reply = reply_in(&h, Duration::from_secs(5));
        h.sup.call("w0", "echo", None, reply).unwrap();
    }
    let reply = reply_in(&h, Duration::from_secs(5));
    let e = h.sup.call("w0", "echo", None, reply).unwrap_err();
    assert!(e.to_string().contains("call again later"), "{e}");
    let ids: Vec<u64> = received(&end)
        .into_iter()
        .map(|d| match d {
            Down::Call(id, ..) => id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids.len(), MAX_CALLS, "the refused call was not sent");
    end.send_frame(&Up::Reply(ids[0], Ok(json!(0))).encode())
        .unwrap();
    h.drive();
    h.sup.call("w0", "echo", None, reply).unwrap();
    // They all time out in the end: nothing is left behind.
    h.advance(Duration::from_secs(6));
    assert_eq!(h.sup.calls_waiting("w0"), 0);
    assert_eq!(h.resolved.len(), MAX_CALLS + 1);
}

#[test]
fn calls_that_cannot_be_made_are_refused_at_once() {
    let mut h = Harness::one(spec());
    let end = h.worker_end("w0");
    let reply = reply_in(&h, Duration::from_secs(5));
    for (name, command) in [
        ("nope", "echo"),
        ("w0", "stop"),
        ("w0", "pause"),
        ("w0", ""),
    ] {
        assert!(
            h.sup.call(name, command, None, reply).is_err(),
            "{name} {command}"
        );
    }
    let deep = nested(crate::rpc::MAX_DEPTH + 1);
    assert!(h.sup.call("w0", "echo", Some(deep), reply).is_err());
    h.sup.stop("w0").unwrap();
    h.exits("w0", Some(0), None);
    let e = h.sup.call("w0", "echo", None, reply).unwrap_err();
    assert!(e.to_string().contains("not running"), "{e}");
    h.advance(Duration::from_secs(10));
    assert!(h.resolved.is_empty(), "{:?}", h.resolved);
    assert_eq!(received(&end), [Down::Stop]);
}

#[test]
fn logged_lines_become_events_only_while_someone_listens() {
    let mut h = Harness::one(spec());
    let end = h.worker_end("w0");
    end.send_frame(&Up::Log(3, "unheard".into()).encode())
        .unwrap();
    h.drive();
    assert_eq!(h.count::<WorkerLog>(), 0);
    h.sup.set_log_listeners(true);
    end.send_frame(&Up::Log(3, "heard".into()).encode())
        .unwrap();
    h.drive();
    let logs: Vec<Value> = h
        .events
        .iter()
        .filter(|e| e.is::<WorkerLog>())
        .map(|e| json!({"name": e.name(), "data": e.data()}))
        .collect();
    assert_eq!(
        logs,
        [
            json!({"name": "daemon.log.w0", "data": {"worker": "w0", "stream": "log", "line": "heard"}})
        ]
    );
    // Both lines are in the worker's log all the same.
    let lines = h.sup.log("w0", 10, None).unwrap();
    assert_eq!(lines["lines"].as_array().unwrap().len(), 2, "{lines}");
}

#[test]
fn answered_calls_leave_no_deadline_behind_and_sweeps_stay_few() {
    let mut h = Harness::one(spec());
    let end = h.worker_end("w0");
    // Long timeouts, answered at once: the supervisor's queue empties, and the daemon's
    // timer queue holds one sweep.
    for _ in 0..500 {
        let reply = reply_in(&h, Duration::from_secs(3600));
        h.sup.call("w0", "echo", None, reply).unwrap();
        let id = call_id(&end);
        end.send_frame(&Up::Reply(id, Ok(json!(1))).encode())
            .unwrap();
        h.drive();
    }
    assert_eq!(h.resolved.len(), 500);
    assert_eq!(h.sup.call_timers(), (0, 1));
    assert_eq!(h.timers.len(), 1, "one sweep on the daemon's queue");
    // Deadlines that keep coming earlier: a few sweeps, and every call still fails in time
    // or a little late, never not at all.
    for k in 0..20u64 {
        let reply = reply_in(&h, Duration::from_secs(100 - k));
        h.sup.call("w0", "slow", None, reply).unwrap();
    }
    h.pump();
    assert!(h.sup.call_timers().1 <= 4, "{:?}", h.sup.call_timers());
    for _ in 0..30 {
        h.advance(Duration::from_secs(10));
    }
    assert_eq!(h.resolved.len(), 520);
    assert!(h.resolved[500..].iter().all(|(_, r)| r.is_err()));
    // Left: the first sweep, for the answered calls' hour, which finds nothing then.
    assert_eq!(h.sup.call_timers(), (0, 1));
    h.advance(Duration::from_secs(3600));
    assert_eq!(h.sup.call_timers(), (0, 0));
    assert_eq!(h.resolved.len(), 520);
    assert_eq!(h.sup.calls_waiting("w0"), 0);
}
