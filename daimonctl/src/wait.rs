//! `daimonctl start|stop|restart NAME`: ask, then wait for the outcome, woken by the
//! worker's events (`daemon.worker.*`) where the daemon has subscriptions, polling
//! `worker.list` where it has not.

use std::thread;
use std::time::{Duration, Instant};

use daimon::Error;
use daimon::client::Client;
use serde_json::{Value, json};

use crate::show::state_name;
use crate::{Failure, in_call};

/// How long one wait lasts before the worker is looked at again anyway.
const RECHECK: Duration = Duration::from_millis(500);

/// The pause between two looks without subscriptions.
const POLL: Duration = Duration::from_millis(100);

/// What is asked of the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Goal {
    Start,
    Stop,
    Restart,
}

impl Goal {
    fn method(self) -> &'static str {
        match self {
            Goal::Start => "worker.start",
            Goal::Stop => "worker.stop",
            Goal::Restart => "worker.restart",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Goal::Start => "started",
            Goal::Stop => "stopped",
            Goal::Restart => "restarted",
        }
    }

    /// The state it waits for.
    fn state(self) -> &'static str {
        match self {
            Goal::Stop => "EXITED",
            Goal::Start | Goal::Restart => "LOOPING",
        }
    }
}

/// Whether the worker, `now` (its `worker.list` entry), is where `goal` wanted it, given
/// its pid `before` the request; `Err` with why it never will be.
pub(crate) fn reached(goal: Goal, before: Option<i64>, now: &Value) -> Result<bool, String> {
    let state = state_of(now);
    let pid = now["pid"].as_i64();
    match (goal, state) {
        (Goal::Stop, "EXITED" | "FAILED") => Ok(true),
        (Goal::Start | Goal::Restart, "FAILED") => Err(format!(
            "{} FAILED (restarts {})",
            now["name"].as_str().unwrap_or("the worker"),
            now["restarts"]
        )),
        (Goal::Start, "LOOPING") => Ok(true),
        (Goal::Restart, "LOOPING") => Ok(pid.is_some() && pid != before),
        _ => Ok(false),
    }
}

/// A worker's state name from its `worker.list` entry.
pub(crate) fn state_of(entry: &Value) -> &str {
    entry["statename"]
        .as_str()
        .unwrap_or_else(|| state_name(&entry["state"]))
}

/// The outcome for people: `w0 restarted (LOOPING, pid 4244)`.
pub(crate) fn outcome(goal: Goal, entry: &Value) -> String {
    let name = entry["name"].as_str().unwrap_or("?");
    match entry["pid"].as_i64() {
        Some(pid) => format!("{name} {} ({}, pid {pid})", goal.done(), state_of(entry)),
        None => format!("{name} {} ({})", goal.done(), state_of(entry)),
    }
}

/// Asks for `goal` and, unless `no_wait`, waits up to `timeout` for the outcome; returns
/// the result to print as JSON (the worker's entry once it got there) and as text.
pub(crate) fn run(
    client: &mut Client,
    goal: Goal,
    worker: &str,
    timeout: Duration,
    no_wait: bool,
) -> Result<(Value, String), Failure> {
    let method = goal.method();
    if no_wait {
        let result = client
            .call(method, json!([worker]))
            .map_err(|e| in_call(method, e))?;
        return Ok((result, "ok".to_owned()));
    }
    let subscribed = match client.subscribe(&["daemon.worker.*"]) {
        Ok(_) => true,
        // A daemon without subscriptions: poll.
        Err(Error::Rpc { code: -32601, .. }) => false,
        Err(e) => return Err(in_call("daemon.subscribe", e)),
    };
    let before = entry(client, worker)?.and_then(|e| e["pid"].as_i64());
    client
        .call(method, json!([worker]))
        .map_err(|e| in_call(method, e))?;
    let deadline = Instant::now() + timeout;
    loop {
        let now = entry(client, worker)?.ok_or_else(|| Failure {
            usage: false,
            message: format!("{worker} is no longer in worker.list"),
        })?;
        match reached(goal, before, &now) {
            Ok(true) => return Ok((now.clone(), outcome(goal, &now))),
            Ok(false) => {}
            Err(why) => {
                return Err(Failure {
                    usage: false,
                    message: why,
                });
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure {
                usage: false,
                message: format!(
                    "{worker} did not reach {} within {timeout:?} (it is {}); see daimonctl log {worker}",
                    goal.state(),
                    state_of(&now)
                ),
            });
        }
        if subscribed {
            wait_for_event(client, worker, left.min(RECHECK))?;
        } else {
            thread::sleep(left.min(POLL));
        }
    }
}

/// Waits until an event about `worker` arrives, or `wait` passes.
fn wait_for_event(client: &mut Client, worker: &str, wait: Duration) -> Result<(), Failure> {
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        match client.next_event(left).map_err(crate::events::gone)? {
            Some(event) if event.data["worker"] == worker => return Ok(()),
            // A gap: something may have been missed; look.
            Some(event) if event.subscription.is_none() => return Ok(()),
            Some(_) => {}
            None => return Ok(()),
        }
    }
}

/// The `worker.list` entry of `worker`, if there is one.
fn entry(client: &mut Client, worker: &str) -> Result<Option<Value>, Failure> {
    let list = client
        .call("worker.list", Value::Null)
        .map_err(|e| in_call("worker.list", e))?;
    Ok(list
        .as_array()
        .and_then(|l| l.iter().find(|w| w["name"] == worker))
        .cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(state: &str, pid: Option<i64>) -> Value {
        json!({"name": "w0", "statename": state, "pid": pid, "restarts": 2})
    }

    #[test]
    fn each_goal_is_reached_in_its_state() {
        assert_eq!(
            reached(Goal::Stop, Some(7), &w("SPINDOWN", Some(7))),
            Ok(false)
        );
        assert_eq!(reached(Goal::Stop, Some(7), &w("EXITED", None)), Ok(true));
        assert_eq!(reached(Goal::Start, None, &w("SPINUP", Some(8))), Ok(false));
        assert_eq!(reached(Goal::Start, None, &w("LOOPING", Some(8))), Ok(true));
        // A restart is done once another process loops.
        assert_eq!(
            reached(Goal::Restart, Some(7), &w("LOOPING", Some(7))),
            Ok(false)
        );
        assert_eq!(
            reached(Goal::Restart, Some(7), &w("EXITED", None)),
            Ok(false)
        );
        assert_eq!(
            reached(Goal::Restart, Some(7), &w("LOOPING", Some(9))),
            Ok(true)
        );
        assert_eq!(
            reached(Goal::Restart, None, &w("LOOPING", Some(9))),
            Ok(true)
        );
        let e = reached(Goal::Start, None, &w("FAILED", None)).unwrap_err();
        assert_eq!(e, "w0 FAILED (restarts 2)");
        // The state number when there is no name.
        assert_eq!(state_of(&json!({"state": 4})), "EXITED");
    }

    #[test]
    fn outcomes_read_plainly() {
        assert_eq!(
            outcome(Goal::Restart, &w("LOOPING", Some(9))),
            "w0 restarted (LOOPING, pid 9)"
        );
        assert_eq!(
            outcome(Goal::Stop, &w("EXITED", None)),
            "w0 stopped (EXITED)"
        );
    }
}
