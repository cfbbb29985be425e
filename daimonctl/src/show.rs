//! How results read for people: tables, durations, the status page, log lines.

use std::time::Duration;

use serde_json::Value;

/// A string as it is, anything else as compact JSON.
pub(crate) fn raw(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// A worker state number as its name.
pub(crate) fn state_name(state: &Value) -> &'static str {
    match state.as_u64() {
        Some(0) => "SPINUP",
        Some(1) => "LOOPING",
        Some(2) => "PAUSED",
        Some(3) => "SPINDOWN",
        Some(4) => "EXITED",
        Some(5) => "FAILED",
        _ => "?",
    }
}

/// `worker.list` as a table.
pub(crate) fn workers_table(list: &Value) -> String {
    let mut rows = vec![
        [
            "NAME", "PID", "STATE", "LOOPTIME", "FOREVER", "RESTARTS", "UPTIME",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for w in list.as_array().into_iter().flatten() {
        let secs = |v: &Value| v.as_f64().map_or("-".to_owned(), |s| format!("{s:.1}s"));
        rows.push(vec![
            raw(&w["name"]),
            w["pid"].as_i64().map_or("-".to_owned(), |p| p.to_string()),
            state_name(&w["state"]).to_owned(),
            secs(&w["looptime"]),
            raw(&w["forever"]),
            raw(&w["restarts"]),
            secs(&w["uptime"]),
        ]);
    }
    columns(&rows)
}

/// A duration as an operator reads it, to the two largest units: `45s`, `3m 07s`,
/// `2h 03m`, `1d 02h` (rounded down).
pub(crate) fn uptime(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes, seconds) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if s < 60 {
        format!("{seconds}s")
    } else if s < 3600 {
        format!("{minutes}m {seconds:02}s")
    } else if s < 86_400 {
        format!("{}h {minutes:02}m", s / 3600)
    } else {
        format!("{days}d {hours:02}h")
    }
}

/// Seconds (a JSON number) as [`uptime`], `-` when absent or not a valid duration.
fn seconds(v: &Value) -> String {
    v.as_f64()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .map_or_else(|| "-".to_owned(), uptime)
}

/// Rows as columns left-aligned to their widest cell, two spaces apart.
pub(crate) fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `daemon.status` (and `worker.list`, when the daemon has it) as a page: the
/// application's name and version (when the daemon reports `app`) beside daimon's, the
/// daemon's fields, then the workers as a table.
pub(crate) fn status_page(status: &Value, workers: Option<&Value>) -> String {
    let daimon = status["daimon"]["version"]
        .as_str()
        .or(status["version"].as_str())
        .unwrap_or("?");
    let title = match status.get("app") {
        Some(app) if app.is_object() => {
            let name = app["name"].as_str().unwrap_or("?");
            match app["version"].as_str() {
                Some(v) => format!("{name} {v} (daimon {daimon})"),
                None => format!("{name} (daimon {daimon})"),
            }
        }
        _ => format!("daimon {daimon}"),
    };
    let mut fields = vec![
        ("pid", raw(&status["pid"])),
        ("socket", raw(&status["socket"])),
        ("uptime", seconds(&status["uptime"])),
        ("connections", raw(&status["connections"])),
        ("calls", raw(&status["calls"])),
    ];
    if let Some(n) = status["log_dropped"].as_u64().filter(|&n| n > 0) {
        fields.push(("log dropped", n.to_string()));
    }
    // What a newer daemon adds is shown too, rather than hidden.
    let known = [
        "pid",
        "socket",
        "uptime",
        "connections",
        "calls",
        "log_dropped",
        "version",
        "app",
        "daimon",
        "workers",
    ];
    let extra: Vec<(String, String)> = status
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !known.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), raw(v)))
        .collect();
    let mut rows: Vec<Vec<String>> = fields
        .into_iter()
        .map(|(k, v)| vec![format!("{k}:"), v])
        .collect();
    rows.extend(extra.into_iter().map(|(k, v)| vec![format!("{k}:"), v]));
    let mut page = format!("{title}\n{}", columns(&rows));
    match workers.and_then(Value::as_array) {
        Some(list) if !list.is_empty() => {
            let mut rows = vec![
                ["NAME", "STATE", "PID", "RESTARTS", "UPTIME"]
                    .map(String::from)
                    .to_vec(),
            ];
            for w in list {
                rows.push(vec![
                    raw(&w["name"]),
                    w["statename"]
                        .as_str()
                        .map_or_else(|| state_name(&w["state"]).to_owned(), str::to_owned),
                    w["pid"].as_i64().map_or("-".to_owned(), |p| p.to_string()),
                    raw(&w["restarts"]),
                    seconds(&w["uptime"]),
                ]);
            }
            page.push_str("\n\n");
            page.push_str(&columns(&rows));
        }
        Some(_) => page.push_str("\n\nno workers"),
        None => {
            let installed = &status["workers"]["installed"];
            if !installed.is_null() {
                page.push_str(&format!("\nworkers: {}", raw(installed)));
            }
        }
    }
    page
}

/// One line of `worker.log` or `daemon.log` as `TIME STREAM TEXT` (a log line's level
/// before its text).
pub(crate) fn log_line(line: &Value) -> String {
    let time = line["time"].as_str().unwrap_or("-");
    let stream = line["stream"].as_str().unwrap_or("-");
    let text = line["text"].as_str().unwrap_or("");
    match line["level"].as_str() {
        Some(level) => format!("{time} {stream} {level} {text}"),
        None => format!("{time} {stream} {text}"),
    }
}

/// What `daemon.reload` did, a line each: applied, needs a restart, and any note.
pub(crate) fn reload_result(result: &Value) -> String {
    let list = |v: &Value| {
        let keys: Vec<String> = v.as_array().into_iter().flatten().map(raw).collect();
        if keys.is_empty() {
            "-".to_owned()
        } else {
            keys.join(", ")
        }
    };
    let mut rows = vec![
        vec!["applied:".to_owned(), list(&result["applied"])],
        vec![
            "restart needed:".to_owned(),
            list(&result["restart_needed"]),
        ],
    ];
    if let Some(config) = result["config"].as_str() {
        rows.push(vec!["config:".to_owned(), config.to_owned()]);
    }
    if let Some(note) = result["note"].as_str() {
        rows.push(vec!["note:".to_owned(), note.to_owned()]);
    }
    columns(&rows)
}
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn workers_read_as_a_table() {
        let list = json!([{"name": "handyman", "pid": 42, "state": 2, "looptime": 10.0,
            "forever": true, "restarts": 1, "uptime": 3.25}]);
        let table = workers_table(&list);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{table}");
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["handyman", "42", "PAUSED", "10.0s", "true", "1", "3.2s"]
        );
        assert_eq!(state_name(&json!(5)), "FAILED");
    }

    #[test]
    fn uptime_reads_in_the_two_largest_units() {
        let s = Duration::from_secs;
        assert_eq!(uptime(s(0)), "0s");
        assert_eq!(uptime(Duration::from_millis(45_900)), "45s");
        assert_eq!(uptime(s(59)), "59s");
        assert_eq!(uptime(s(60)), "1m 00s");
        assert_eq!(uptime(s(187)), "3m 07s");
        assert_eq!(uptime(s(3599)), "59m 59s");
        assert_eq!(uptime(s(3600)), "1h 00m");
        assert_eq!(uptime(s(2 * 3600 + 3 * 60 + 59)), "2h 03m");
        assert_eq!(uptime(s(86_399)), "23h 59m");
        assert_eq!(uptime(s(86_400 + 2 * 3600 + 5)), "1d 02h");
        assert_eq!(uptime(s(400 * 86_400)), "400d 00h");
        assert_eq!(seconds(&json!(187.6)), "3m 07s");
        assert_eq!(seconds(&json!(null)), "-");
        assert_eq!(seconds(&json!(-1.0)), "-");
    }

    #[test]
    fn status_reads_as_a_page_with_or_without_app() {
        let status = json!({"pid": 7, "version": "0.1.0", "uptime": 7385.2,
            "socket": "unix:///run/x.sock", "connections": 1, "calls": 12,
            "workers": {"installed": 2}, "log_dropped": 0});
        let workers = json!([
            {"name": "handyman", "pid": 42, "state": 1, "statename": "LOOPING", "restarts": 0, "uptime": 65.0},
            {"name": "w2", "pid": null, "state": 5, "restarts": 12, "uptime": null}]);
        let page = status_page(&status, Some(&workers));
        let lines: Vec<&str> = page.lines().collect();
        assert_eq!(lines[0], "daimon 0.1.0", "{page}");
        assert!(lines.contains(&"uptime:       2h 03m"), "{page}");
        assert!(
            lines.contains(&"socket:       unix:///run/x.sock"),
            "{page}"
        );
        assert!(!page.contains("log dropped"), "{page}");
        let header = lines
            .iter()
            .position(|l| l.starts_with("NAME"))
            .expect(&page);
        // Aligned: every column starts at the same place on each row.
        let at = |l: &str, c: &str| l.find(c).unwrap();
        assert_eq!(lines[header], "NAME      STATE    PID  RESTARTS  UPTIME");
        assert_eq!(
            lines[header + 1],
            "handyman  LOOPING  42   0         1m 05s"
        );
        assert_eq!(lines[header + 2], "w2        FAILED   -    12        -");
        assert_eq!(at(lines[header], "PID"), at(lines[header + 1], "42"));

        let mut with_app = status.clone();
        with_app["app"] = json!({"name": "shop", "version": "2.1"});
        with_app["daimon"] = json!({"version": "0.2.0"});
        with_app["log_dropped"] = json!(3);
        let page = status_page(&with_app, None);
        assert!(page.starts_with("shop 2.1 (daimon 0.2.0)\n"), "{page}");
        assert!(page.contains("log dropped:  3"), "{page}");
        assert!(page.ends_with("workers: 2"), "{page}");
        with_app["app"] = json!({"name": "shop", "version": null});
        assert!(status_page(&with_app, None).starts_with("shop (daimon 0.2.0)\n"));
    }

    #[test]
    fn log_lines_and_reload_results_read_plainly() {
        let line = json!({"seq": 3, "time": "2026-12-02T19:00:00.123Z", "stream": "stdout", "level": null, "text": "hi there"});
        assert_eq!(log_line(&line), "2026-12-02T19:00:00.123Z stdout hi there");
        let line =
            json!({"seq": 4, "time": "T", "stream": "log", "level": "INFO", "text": "ready"});
        assert_eq!(log_line(&line), "T log INFO ready");
        let r = json!({"applied": ["shutdowntimeout", "logformat"], "restart_needed": [], "config": "/etc/x.json"});
        assert_eq!(
            reload_result(&r),
            "applied:         shutdowntimeout, logformat\nrestart needed:  -\nconfig:          /etc/x.json"
        );
    }
}
