use serde_json::json;

use super::*;

fn event(name: &str, data: Value) -> Event {
    Event {
        subscription: Some(1),
        name: name.to_owned(),
        time: 0.0,
        data,
    }
}

fn list() -> Value {
    json!([
        {"name": "w0", "statename": "LOOPING", "state": 1, "pid": 100, "restarts": 0, "uptime": 65.0},
        {"name": "w1", "state": 4, "pid": null, "restarts": 3, "uptime": null}
    ])
}

#[test]
fn status_and_workers_read_as_a_header_and_rows() {
    let t0 = Instant::now();
    let mut s = State::new();
    s.set_status(
        &json!({"pid": 42, "uptime": 185.5, "connections": 2, "app": {"name": "shop", "version": "2.1"}, "daimon": {"version": "0.1.0"}}),
        t0,
    );
    s.set_workers(&list(), t0);
    let v = s.view(t0 + Duration::from_secs(2));
    assert_eq!(v.title, "shop 2.1 (daimon 0.1.0)");
    assert_eq!(v.summary, "pid 42  up 3m 07s  connections 2  workers 2");
    assert_eq!(v.rows.len(), 2);
    assert_eq!(v.rows[0][..5], ["w0", "LOOPING", "100", "0", "1m 07s"]);
    assert_eq!(v.rows[1][..5], ["w1", "EXITED", "-", "3", "-"]);
    assert_eq!(v.rows[0].len(), COLUMNS.len());
    assert_eq!(v.footer, "q quit");
    let mut bare = State::new();
    bare.set_status(&json!({"pid": 1, "version": "0.0.9"}), t0);
    assert_eq!(bare.view(t0).title, "daimon 0.0.9");
}

#[test]
fn worker_events_read_the_list_again_once_after_a_pause() {
    let t0 = Instant::now();
    let mut s = State::new();
    s.set_workers(&list(), t0);
    assert!(!s.list_due(t0));
    // A restart's three events: one read, DEBOUNCE after the first.
    for (i, name) in ["exited", "restarting", "started"].iter().enumerate() {
        let at = t0 + Duration::from_millis(i as u64 * 10);
        let changed = s.on_event(
            &event(&format!("daemon.worker.{name}"), json!({"worker": "w0"})),
            at,
        );
        assert!(!changed, "the list tells, not the event");
    }
    assert_eq!(s.due_at(), Some(t0 + DEBOUNCE));
    assert!(!s.status_due(t0 + DEBOUNCE));
    assert!(!s.list_due(t0 + DEBOUNCE - Duration::from_millis(1)));
    assert!(s.list_due(t0 + DEBOUNCE));
    let mut relisted = list();
    relisted[0]["pid"] = json!(101);
    relisted[0]["restarts"] = json!(1);
    s.set_workers(&relisted, t0 + DEBOUNCE);
    assert!(!s.list_due(t0 + DEBOUNCE * 10));
    let v = s.view(t0 + DEBOUNCE);
    assert_eq!(v.rows[0][2..4], ["101", "1"]);
    // Other events change nothing.
    assert!(!s.on_event(&event("daemon.rpc.worker.list", json!({})), t0));
    assert!(!s.list_due(t0 + DEBOUNCE * 10));
    assert_eq!(s.due_at(), None);
}

#[test]
fn clients_coming_and_going_read_the_status_again() {
    let t0 = Instant::now();
    let mut s = State::new();
    s.set_status(&json!({"pid": 42, "uptime": 10.0, "connections": 1}), t0);
    for name in ["connect", "hangup", "connect"] {
        let e = event(
            &format!("daemon.socket.client.{name}"),
            json!({"peer": "x"}),
        );
        assert!(!s.on_event(&e, t0));
    }
    assert!(!s.status_due(t0));
    assert!(s.status_due(t0 + DEBOUNCE));
    assert!(!s.list_due(t0 + DEBOUNCE));
    s.set_status(
        &json!({"pid": 42, "uptime": 10.2, "connections": 2}),
        t0 + DEBOUNCE,
    );
    assert!(!s.status_due(t0 + DEBOUNCE * 10));
    // The uptime goes on between two readings.
    let v = s.view(t0 + Duration::from_secs(60));
    assert!(
        v.summary.contains("up 1m 10s  connections 2"),
        "{}",
        v.summary
    );
}

#[test]
fn log_events_set_the_last_line() {
    let t0 = Instant::now();
    let mut s = State::new();
    s.set_workers(&list(), t0);
    let line = json!({"worker": "w1", "stream": "stderr", "line": "oops\tbad\u{1b}[31m"});
    assert!(s.on_event(&event("daemon.log.w1", line), t0));
    assert!(s.on_event(
        &event(
            "daemon.log.w0",
            json!({"worker": "w0", "stream": "stdout", "line": "x".repeat(1000)})
        ),
        t0
    ));
    let v = s.view(t0);
    assert_eq!(
        v.rows[1][7], "oops bad [31m",
        "control characters never reach the terminal"
    );
    assert_eq!(v.rows[0][7].len(), MAX_LINE);
    // A malformed one is ignored.
    assert!(!s.on_event(&event("daemon.log.w0", json!({"line": 5})), t0));
}

#[test]
fn dropped_events_are_counted_and_everything_read_at_once() {
    let t0 = Instant::now();
    let mut s = State::new();
    assert!(s.on_event(&event("daemon.events.dropped", json!({"dropped": 7})), t0));
    assert!(s.list_due(t0) && s.status_due(t0));
    assert!(
        s.view(t0).summary.ends_with("events dropped 7"),
        "{}",
        s.view(t0).summary
    );
}

#[test]
fn cpu_and_rss_come_from_two_readings() {
    let t0 = Instant::now();
    let mut s = State::new();
    s.set_status(&json!({"pid": 42}), t0);
    s.set_workers(&list(), t0);
    assert_eq!(s.pids(), [42, 100]);
    let reading = |ticks, rss| {
        Some(Reading {
            ticks,
            rss_kib: Some(rss),
        })
    };
    s.sample(100, reading(1000, 2048), t0, 100.0);
    s.sample(42, reading(5, 900), t0, 100.0);
    let v = s.view(t0);
    assert_eq!(v.rows[0][5..7], ["-", "2.0M"], "one reading: no CPU yet");
    // 50 ticks in 2 s at 100 Hz: 25 % of a CPU.
    let t1 = t0 + Duration::from_secs(2);
    s.sample(100, reading(1050, 3 * 1024 * 1024 / 2), t1, 100.0);
    s.sample(42, reading(5, 900), t1, 100.0);
    let v = s.view(t1);
    assert_eq!(v.rows[0][5..7], ["25.0", "1.5G"]);
    assert!(v.summary.contains("cpu 0.0  rss 900K"), "{}", v.summary);
    // Gone from /proc (another host's pid, or it ended): no figures.
    s.sample(100, None, t1, 100.0);
    assert_eq!(s.view(t1).rows[0][5..7], ["-", "-"]);
    // A pid no longer listed is forgotten.
    s.sample(100, reading(1, 1), t1, 100.0);
    let mut relisted = list();
    relisted[0]["pid"] = json!(101);
    s.set_workers(&relisted, t1);
    assert!(!s.usage.contains_key(&100));
}
