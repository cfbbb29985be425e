//! The event bus: events dispatched to 10 listeners.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use daimon::bus::{Bus, DaemonEvent, PostAction, TestHost};

use crate::{Results, Scale};

pub fn run(scale: Scale, results: &mut Results) {
    let events = scale.pick(1_000_000, 100_000);
    let mut bus = Bus::new();
    let seen = Rc::new(Cell::new(0u64));
    for i in 0..10 {
        let seen = seen.clone();
        let pattern = if i % 2 == 0 {
            "daemon.ready"
        } else {
            "daemon.*"
        };
        bus.on(pattern, move |_, _| {
            seen.set(seen.get() + 1);
            PostAction::Continue
        })
        .expect("a pattern");
    }
    let mut host = TestHost::default();
    let t = Instant::now();
    for _ in 0..events {
        bus.emit(DaemonEvent::Ready);
        bus.dispatch(&mut host);
    }
    let rate = events as f64 / t.elapsed().as_secs_f64();
    assert_eq!(
        seen.get(),
        events as u64 * 10,
        "every listener got every event"
    );
    results.add("bus_events_per_s", rate, "events/s");
}
