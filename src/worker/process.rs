//! A worker's process settings: who it runs as, its resource limits, niceness, environment
//! and process title, applied in the forked child before the worker value is built.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::privs::{Identity, Rlimits};

/// How a worker's process is set up after the fork: set with the builder methods of
/// [`Spec`](super::Spec), or read from a configuration object with [`Process::from_json`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Process {
    pub(crate) user: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) nice: Option<i32>,
    /// Variables to set (`Some`) or remove (`None`).
    pub(crate) env: BTreeMap<String, Option<String>>,
    pub(crate) rlimits: Rlimits,
    pub(crate) title: Option<String>,
}

fn id_value(key: &str, v: &Value) -> Result<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if !s.is_empty() => Ok(Some(s.clone())),
        Value::Number(n) if n.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)) => {
            Ok(Some(n.to_string()))
        }
        _ => Err(Error::config(
            key,
            format!("expected a name or a numeric id, got {v}"),
        )),
    }
}

impl Process {
    /// Reads the per-worker keys `user`, `group`, `nice` (`-20..=19`), `env` (an object of
    /// strings; `null` removes a variable), `rlimits` (as the daemon's key) and `title` from
    /// `value`, an object; other keys are left to the caller. `prefix` goes before every
    /// key in errors, e.g. `"workers.NAME."`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming `PREFIXKEY` for a bad value.
    pub fn from_json(prefix: &str, value: &Value) -> Result<Process> {
        let mut p = Process::default();
        let Some(obj) = value.as_object() else {
            return Err(Error::config(
                prefix.trim_end_matches('.'),
                "expected an object",
            ));
        };
        for (k, v) in obj {
            let key = format!("{prefix}{k}");
            match k.as_str() {
                "user" => p.user = id_value(&key, v)?,
                "group" => p.group = id_value(&key, v)?,
                "nice" => {
                    p.nice = match v {
                        Value::Null => None,
                        _ => Some(
                            v.as_i64()
                                .filter(|n| (-20..=19).contains(n))
                                .map(|n| n as i32)
                                .ok_or_else(|| {
                                    Error::config(&key, format!("expected -20..=19, got {v}"))
                                })?,
                        ),
                    }
                }
                "env" => {
                    let Some(vars) = v.as_object() else {
                        return Err(Error::config(key, format!("expected an object, got {v}")));
                    };
                    for (name, val) in vars {
                        let k = format!("{key}.{name}");
                        if !env_name_ok(name) {
                            return Err(Error::config(k, "not a usable variable name"));
                        }
                        let val = match val {
                            Value::Null => None,
                            Value::String(s) if !s.contains('\0') => Some(s.clone()),
                            _ => {
                                return Err(Error::config(
                                    k,
                                    format!("expected a string or null, got {val}"),
                                ));
                            }
                        };
                        p.env.insert(name.clone(), val);
                    }
                }
                "rlimits" => p.rlimits = Rlimits::from_json(&key, v)?,
                "title" => {
                    p.title = match v {
                        Value::Null => None,
                        Value::String(s) if !s.contains('\0') => Some(s.clone()),
                        _ => return Err(Error::config(key, format!("expected a string, got {v}"))),
                    }
                }
                _ => {}
            }
        }
        if p.group.is_some() && p.user.is_none() {
            return Err(Error::config(format!("{prefix}group"), "needs user"));
        }
        Ok(p)
    }

    /// The settings as the object [`Process::from_json`] reads (for a fork server).
    pub(crate) fn to_json(&self) -> Value {
        let mut obj = serde_json::Map::new();
        let mut put = |k: &str, v: Value| {
            obj.insert(k.to_owned(), v);
        };
        if let Some(user) = &self.user {
            put("user", Value::from(user.as_str()));
        }
        if let Some(group) = &self.group {
            put("group", Value::from(group.as_str()));
        }
        if let Some(nice) = self.nice {
            put("nice", Value::from(nice));
        }
        if !self.env.is_empty() {
            let env = self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.as_deref().map_or(Value::Null, Value::from)))
                .collect();
            put("env", Value::Object(env));
        }
        if !self.rlimits.is_empty() {
            put("rlimits", self.rlimits.to_json());
        }
        if let Some(title) = &self.title {
            put("title", Value::from(title.as_str()));
        }
        Value::Object(obj)
    }

    /// The user to run as, if set.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The group to run as, if set.
    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// Applies everything in the forked child (single-threaded: the daemon forks only when
    /// it has one thread): limits and niceness first (raising them needs root), then the
    /// environment and the title, then the user, last. `name` is the worker's.
    pub(crate) fn apply_in_child(&self, name: &str) -> Result<()> {
        let prefix = format!("workers.{name}.");
        self.rlimits.apply(&format!("{prefix}rlimits"))?;
        if let Some(n) = self.nice {
            crate::process::set_niceness(n)
                .map_err(|e| Error::config(format!("{prefix}nice"), e.to_string()))?;
        }
        for (k, v) in &self.env {
            match v {
                // SAFETY: this is the forked worker child, which has exactly one thread (the
                // daemon forks only when single-threaded and the child has not started any),
                // so nothing reads the environment concurrently.
                Some(v) => unsafe { std::env::set_var(k, v) },
                // SAFETY: as above, one thread.
                None => unsafe { std::env::remove_var(k) },
            }
        }
        let default = format!("daimon: {name}");
        set_title(self.title.as_deref().unwrap_or(&default));
        if let Some(user) = &self.user {
            let id = Identity::resolve(&prefix, user, self.group.as_deref())?;
            if !id.is_current() {
                id.check_switchable(&format!("{prefix}user"))?;
                id.become_it(&format!("{prefix}user"))?;
            }
        }
        Ok(())
    }
}

fn env_name_ok(name: &str) -> bool {
    !name.is_empty() && !name.contains('=') && !name.contains('\0')
}

/// Sets the process title: the comm name (`top`, `/proc/PID/comm`, 15 bytes) and the
/// argument area (`ps`, `/proc/PID/cmdline`), within its original size. Best effort: a
/// title that does not fit is cut.
pub(crate) fn set_title(title: &str) {
    let comm: Vec<u8> = title.bytes().filter(|&b| b != 0).take(15).collect();
    if let Ok(comm) = std::ffi::CString::new(comm) {
        let _ = nix::sys::prctl::set_name(&comm);
    }
    let Some((start, end)) = arg_area() else {
        return;
    };
    let len = end.saturating_sub(start);
    if len < 2 {
        return;
    }
    let bytes = title.as_bytes();
    let n = bytes.len().min(len - 1);
    // SAFETY: [start, end) is this process's argument area, as the kernel reports it in
    // /proc/self/stat (arg_start, arg_end): mapped, writable memory at the bottom of the
    // initial stack that holds the argv strings. No Rust reference points into it: std keeps
    // only the argv pointer array and copies the strings each time `std::env::args()` is
    // called (which now returns the title). We write within the area only, and end with NUL
    // bytes, so every argv string stays NUL-terminated inside it. The child is
    // single-threaded, so nobody reads it while it changes.
    unsafe {
        let p = start as *mut u8;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, n);
        std::ptr::write_bytes(p.add(n), 0, len - n);
    }
}

/// The argument area's bounds, read once (see [`read_arg_area`]). The daemon calls this
/// before each fork of a worker or of the fork server, so that the workers, whose address
/// space is a copy of the daemon's, find it here. A worker that read
/// `/proc/self/stat` itself would leave the kernel a `/proc/PID` entry to tear down when the
/// daemon reaps it: a fifth of the daemon's time in a stop of thousands of workers.
pub(crate) fn arg_area() -> Option<(usize, usize)> {
    static AREA: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
    if let Some(&area) = AREA.get() {
        return Some(area);
    }
    // Not kept when the read fails (out of descriptors, say): the next call tries again.
    let area = read_arg_area()?;
    Some(*AREA.get_or_init(|| area))
}

/// The argument area's bounds from /proc/self/stat (fields 48 and 49).
fn read_arg_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The comm field may hold spaces and parentheses: count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field N is fields[N - 3].
    let start = fields.get(48 - 3)?.parse().ok()?;
    let end = fields.get(49 - 3)?.parse().ok()?;
    (start != 0 && end > start).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn from_json_reads_every_key() {
        let v = json!({"user": "nobody", "group": 65534, "nice": 5, "env": {"A": "1", "B": null},
            "rlimits": {"nofile": 100}, "title": "t", "restart": "transient"});
        let p = Process::from_json("workers.w.", &v).unwrap();
        assert_eq!(p.user.as_deref(), Some("nobody"));
        assert_eq!(p.group.as_deref(), Some("65534"));
        assert_eq!(p.nice, Some(5));
        assert_eq!(p.env["A"].as_deref(), Some("1"));
        assert_eq!(p.env["B"], None);
        assert_eq!(p.title.as_deref(), Some("t"));
        assert!(!p.rlimits.is_empty());
        // What a fork server is sent reads back the same.
        assert_eq!(Process::from_json("", &p.to_json()).unwrap(), p);
        let empty = Process::default();
        assert_eq!(Process::from_json("", &empty.to_json()).unwrap(), empty);
    }

    #[test]
    fn from_json_errors_name_the_key() {
        for (v, key) in [
            (json!({"nice": 30}), "workers.w.nice"),
            (json!({"env": {"A=B": "1"}}), "workers.w.env.A=B"),
            (json!({"env": {"A": 1}}), "workers.w.env.A"),
            (
                json!({"rlimits": {"nofile": "x"}}),
                "workers.w.rlimits.nofile",
            ),
            (json!({"group": "g"}), "workers.w.group"),
            (json!({"user": ""}), "workers.w.user"),
        ] {
            let e = Process::from_json("workers.w.", &v)
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn the_arg_area_is_found() {
        let (s, e) = arg_area().expect("arg_start/arg_end");
        assert!(e > s);
    }
}
