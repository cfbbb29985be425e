//! The shipped integration files in contrib/, checked as the tools that read them would:
//! contrib/kubernetes/daimon-example.yaml parsed with a real YAML parser (PyYAML, pinned in
//! `scripts/install-test-deps`, run here), its settings checked against each other, and its
//! container's command, args and probes run as written against a real daemon (the
//! `log_daemon` example, which takes its `shutdowntimeout` from the file, as a daemon
//! should: `worker_daemon` sets it from its own option), with the paths of its volumes
//! mapped into a temp dir.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Foreground, TestDir, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;

const POD_SPEC: &str = "contrib/kubernetes/daimon-example.yaml";

/// The venv's python with PyYAML, made by `scripts/install-test-deps` (run once per test
/// binary; quick when already done). Fails the test when it cannot install.
fn python() -> PathBuf {
    common::install_test_deps();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    root.join("target/pyenv/bin/python")
}

/// Every document of the pod spec, parsed by PyYAML's safe loader and handed over as JSON.
fn documents() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(POD_SPEC);
    let out = Command::new(python())
        .args([
            "-c",
            "import json, sys, yaml\n\
             with open(sys.argv[1]) as f:\n    \
                 json.dump([d for d in yaml.safe_load_all(f) if d is not None], sys.stdout)",
        ])
        .arg(&path)
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "{POD_SPEC} does not parse as YAML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("PyYAML's output as JSON")
}

/// The pod spec's parts the tests use.
struct Pod {
    config_map: Value,
    pod: Value,
    container: Value,
    /// The daemon's configuration: the ConfigMap's config.json, parsed.
    config: Value,
}

fn pod() -> Pod {
    let docs = documents();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k} in {POD_SPEC}"))
            .clone()
    };
    let config_map = kind("ConfigMap");
    let deployment = kind("Deployment");
    let pod = deployment["spec"]["template"]["spec"].clone();
    let container = pod["containers"][0].clone();
    let text = config_map["data"]["config.json"]
        .as_str()
        .expect("the ConfigMap's config.json");
    let config = serde_json::from_str(text).expect("config.json is JSON");
    Pod {
        config_map,
        pod,
        container,
        config,
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_owned()
        })
        .collect()
}

/// The value after `flag` in the container's args.
fn arg_after(pod: &Pod, flag: &str) -> String {
    let args = strings(&pod.container["args"]);
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag} in args {args:?}"));
    args[i + 1].clone()
}

#[test]
fn the_pod_spec_is_consistent() {
    let pod = pod();
    // The grace period covers the daemon's whole stop: shutdowntimeout and a margin.
    let grace = pod.pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let timeout = pod.config["shutdowntimeout"]
        .as_f64()
        .expect("shutdowntimeout set in config.json");
    assert!(
        grace as f64 >= timeout + 5.0,
        "terminationGracePeriodSeconds {grace} leaves no margin over shutdowntimeout {timeout}"
    );
    assert_eq!(pod.config["logformat"], "json");
    assert!(
        pod.config.get("logfile").is_none(),
        "the log goes to stderr"
    );
    // Foreground, with the configuration file the ConfigMap provides.
    let args = strings(&pod.container["args"]);
    assert!(args.iter().any(|a| a == "-f"), "{args:?}");
    let config_path = arg_after(&pod, "--config");
    let mount = |path: &str| -> Value {
        pod.container["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
            .find(|m| path.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
            .unwrap_or_else(|| panic!("{path} is on no volume"))
            .clone()
    };
    let volume = |name: &Value| -> Value {
        pod.pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| &v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    let config_volume = volume(&mount(&config_path)["name"]);
    assert_eq!(
        config_volume["configMap"]["name"],
        pod.config_map["metadata"]["name"]
    );
    // The socket and the pid file on an emptyDir; the root filesystem read-only.
    let socket = arg_after(&pod, "--socket");
    let socket_path = socket.strip_prefix("unix://").expect("a unix socket");
    for path in [socket_path.to_owned(), arg_after(&pod, "--pidfile")] {
        assert!(
            volume(&mount(&path)["name"]).get("emptyDir").is_some(),
            "{path} not on an emptyDir"
        );
    }
    assert_eq!(
        pod.container["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    // Unprivileged from the start: nothing to drop, so no user/group keys.
    assert_eq!(pod.pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod.pod["securityContext"]["runAsUser"].as_u64().unwrap() > 0);
    for key in ["user", "group"] {
        assert!(pod.config.get(key).is_none(), "{key} in config.json");
    }
    // Every probe runs `daimonctl -s <the socket> ... status`.
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let command = strings(&pod.container[probe]["exec"]["command"]);
        assert!(command[0].ends_with("/daimonctl"), "{probe}: {command:?}");
        assert_eq!(command.last().map(String::as_str), Some("status"));
        let s = command.iter().position(|a| a == "-s").expect("-s");
        assert_eq!(command[s + 1], socket, "{probe}");
        // daimonctl gives up before the kubelet does, so the failure is its own.
        let t = command
            .iter()
            .position(|a| a == "--timeout")
            .expect("--timeout");
        let t: f64 = command[t + 1].parse().unwrap();
        assert!(t < pod.container[probe]["timeoutSeconds"].as_f64().unwrap());
    }
    assert!(pod.container["resources"]["limits"]["memory"].is_string());
    let env = &pod.container["env"][0];
    assert_eq!(env["name"], "DAIMON_SOCKET");
    assert_eq!(env["value"], socket);
}

/// Maps the container's absolute paths into `root`: each volume's mount path (so the
/// socket, pid file and config land in the temp dir), the image's binary to the
/// `log_daemon` example and daimonctl to the built one.
fn map(pod: &Pod, root: &Path, word: &str) -> String {
    if word == strings(&pod.container["command"])[0] {
        return common::example_named("log_daemon").display().to_string();
    }
    if word.ends_with("/daimonctl") {
        return common::daimonctl().display().to_string();
    }
    let mut word = word.to_owned();
    for m in pod.container["volumeMounts"].as_array().unwrap() {
        let at = m["mountPath"].as_str().unwrap();
        let mapped = root.join(at.trim_start_matches('/'));
        word = word.replace(&format!("{at}/"), &format!("{}/", mapped.display()));
    }
    word
}

/// Lays out the pod's volumes under `root`: the ConfigMap's files, the emptyDirs.
fn volumes(pod: &Pod, root: &Path) {
    for m in pod.container["volumeMounts"].as_array().unwrap() {
        let dir = root.join(m["mountPath"].as_str().unwrap().trim_start_matches('/'));
        fs::create_dir_all(&dir).unwrap();
        let volume = pod.pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap();
        if volume.get("configMap").is_some() {
            for (file, text) in pod.config_map["data"].as_object().unwrap() {
                fs::write(dir.join(file), text.as_str().unwrap()).unwrap();
            }
        }
    }
}

/// Runs a probe's command as mapped; its exit code.
fn probe(pod: &Pod, dir: &TestDir, name: &str) -> i32 {
    let words: Vec<String> = strings(&pod.container[name]["exec"]["command"])
        .iter()
        .map(|w| map(pod, dir.path(), w))
        .collect();
    let mut cmd = Command::new(&words[0]);
    cmd.args(&words[1..]).env_remove("DAIMON_SOCKET");
    let out = dir.run_cmd(cmd);
    out.status.code().unwrap_or(-1)
}

#[test]
fn the_container_runs_as_written_and_its_probes_pass_until_it_stops() {
    let pod = pod();
    let dir = TestDir::new();
    volumes(&pod, dir.path());
    let mut words: Vec<String> = strings(&pod.container["command"]);
    words.extend(strings(&pod.container["args"]));
    let words: Vec<String> = words.iter().map(|w| map(&pod, dir.path(), w)).collect();
    let mut cmd = Command::new(&words[0]);
    cmd.args(&words[1..])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .env_remove("DAIMON_SOCKET");
    for e in pod.container["env"].as_array().unwrap() {
        let value = map(&pod, dir.path(), e["value"].as_str().unwrap());
        cmd.env(e["name"].as_str().unwrap(), value);
    }
    let mut daemon = Foreground::spawn_cmd(&dir, cmd);
    let pidfile = PathBuf::from(map(&pod, dir.path(), &arg_after(&pod, "--pidfile")));
    let socket = map(&pod, dir.path(), &arg_after(&pod, "--socket"));
    daemon.wait_ready(&pidfile, Path::new(socket.strip_prefix("unix://").unwrap()));

    for name in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(
            probe(&pod, &dir, name),
            0,
            "{name} failed against a running daemon"
        );
    }
    // logformat json: what `kubectl logs` shows is one JSON object per line.
    wait_until("the daemon's ready line", common::DEADLINE, || {
        daemon.stderr().contains("\"msg\":\"ready\"")
    });
    for line in daemon.stderr().lines() {
        let record: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line:?}"));
        assert!(
            record["time"].is_string() && record["msg"].is_string(),
            "{line}"
        );
    }

    // What the kubelet does at termination: SIGTERM, then SIGKILL after the grace period.
    let grace = Duration::from_secs(pod.pod["terminationGracePeriodSeconds"].as_u64().unwrap());
    let started = Instant::now();
    daemon.signal(Signal::SIGTERM);
    let mut status = None;
    wait_until("the daemon to stop within the grace period", grace, || {
        status = daemon.try_status();
        status.is_some()
    });
    assert_eq!(status.unwrap().code(), Some(0), "{}", daemon.stderr());
    assert!(started.elapsed() < grace);
    for name in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(
            probe(&pod, &dir, name),
            1,
            "{name} passed with the daemon stopped"
        );
    }
}
