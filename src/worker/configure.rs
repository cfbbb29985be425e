//! The `workers` configuration key: one installed worker's settings over the [`Spec`] its
//! code installed. The restart policy keys and `output` are read here; the process keys (`user`,
//! `group`, `nice`, `env`, `rlimits`, `title`) by [`Process::from_json`].

use std::time::Duration;

use serde_json::Value;

use super::{Output, Process, Restart, Spec};
use crate::error::{Error, Result};

/// The process keys, read by [`Process::from_json`].
const PROCESS_KEYS: &[&str] = &["user", "group", "nice", "env", "rlimits", "title"];

/// The policy keys (and `output`), read here.
const POLICY_KEYS: &[&str] = &[
    "output",
    "restart",
    "maxrestarts",
    "restartwindow",
    "backoff",
    "maxbackoff",
    "stableafter",
];

/// `installed` with the settings of `workers.NAME` on top.
///
/// # Errors
///
/// [`Error::Config`] naming `workers.NAME.KEY` for an unknown key or a bad value.
pub(crate) fn spec(name: &str, installed: Spec, settings: &Value) -> Result<Spec> {
    let prefix = format!("workers.{name}.");
    let obj = settings
        .as_object()
        .ok_or_else(|| Error::config(format!("workers.{name}"), "expected an object"))?;
    if let Some(k) = obj
        .keys()
        .find(|k| !PROCESS_KEYS.contains(&k.as_str()) && !POLICY_KEYS.contains(&k.as_str()))
    {
        return Err(Error::config(
            format!("{prefix}{k}"),
            format!(
                "unknown key; known keys: {}, {}",
                POLICY_KEYS.join(", "),
                PROCESS_KEYS.join(", ")
            ),
        ));
    }
    let mut spec = installed;
    let key = |k: &str| format!("{prefix}{k}");
    if let Some(v) = obj.get("output") {
        let output = v.as_str().and_then(Output::from_name).ok_or_else(|| {
            Error::config(
                key("output"),
                format!("expected \"separate\", \"merged\" or \"discard\", got {v}"),
            )
        })?;
        spec = spec.output(output);
    }
    if let Some(v) = obj.get("restart") {
        spec = spec.restart(match v.as_str() {
            Some("permanent") => Restart::Permanent,
            Some("transient") => Restart::Transient,
            Some("temporary") => Restart::Temporary,
            _ => {
                return Err(Error::config(
                    key("restart"),
                    format!("expected \"permanent\", \"transient\" or \"temporary\", got {v}"),
                ));
            }
        });
    }
    let seconds = |k: &str, max: f64| -> Result<Option<Duration>> {
        obj.get(k)
            .map(|v| {
                v.as_f64()
                    .filter(|s| *s >= 0.0 && *s <= max)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| {
                        Error::config(key(k), format!("expected seconds in 0..={max}, got {v}"))
                    })
            })
            .transpose()
    };
    let (max, window) = spec.restart_limit();
    let max = match obj.get("maxrestarts") {
        Some(v) => v.as_u64().filter(|n| *n <= 10_000).ok_or_else(|| {
            Error::config(key("maxrestarts"), format!("expected 0..=10000, got {v}"))
        })? as usize,
        None => max,
    };
    let window = seconds("restartwindow", 86_400.0)?.unwrap_or(window);
    if window.is_zero() {
        return Err(Error::config(key("restartwindow"), "must be more than 0"));
    }
    spec = spec.max_restarts(max, window);
    let (first, cap) = spec.backoff_range();
    let first = seconds("backoff", 3600.0)?.unwrap_or(first);
    let cap = seconds("maxbackoff", 3600.0)?.unwrap_or(cap);
    spec = spec.backoff(first, cap);
    if let Some(after) = seconds("stableafter", 86_400.0)? {
        spec = spec.stable_after(after);
    }
    let process: serde_json::Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| PROCESS_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !process.is_empty() {
        spec = spec.process(Process::from_json(&prefix, &Value::Object(process))?);
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_override_the_installed_spec_and_bad_ones_name_their_key() {
        let base = Spec::every(Duration::from_secs(1));
        let s = spec(
            "w0",
            base.clone(),
            &json!({"restart": "transient", "maxrestarts": 2, "restartwindow": 10, "nice": 5,
                    "output": "merged"}),
        )
        .unwrap();
        assert_eq!(s.output_mode(), Output::Merged);
        assert_eq!(s.restart_type(), Restart::Transient);
        assert_eq!(s.restart_limit(), (2, Duration::from_secs(10)));
        for (bad, key) in [
            (json!({"restart": "sometimes"}), "workers.w0.restart"),
            (json!({"maxrestarts": -1}), "workers.w0.maxrestarts"),
            (json!({"restartwindow": 0}), "workers.w0.restartwindow"),
            (json!({"colour": "red"}), "workers.w0.colour"),
            (json!({"output": "stdout"}), "workers.w0.output"),
            (json!({"output": 1}), "workers.w0.output"),
            (json!({"nice": 99}), "workers.w0.nice"),
        ] {
            let e = spec("w0", base.clone(), &bad).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }
}
