//! Privileges and limits: `user`, `group` and `rlimits` of the daemon, checked in /proc for
//! the daemon and each of its workers; the socket still served after the drop; a clean stop
//! removing the socket and pid files; the errors (unknown user or group, a limit above the
//! hard one, a non-root daemon asked to become someone else). Against the `worker_daemon`
//! example; the tests run as root (they fail loudly otherwise).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};

use common::conn::{request, unix};
use common::{DEADLINE, Foreground, TestDir, path_str, wait_until};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "tests/privileges.rs needs root (it switches users)"
    );
}

fn command(dir: &TestDir, args: &[&str]) -> Command {
    let mut cmd = Command::new(common::example_named("worker_daemon"));
    cmd.args(args)
        .args(dir.std_args())
        .current_dir(dir.path())
        .stdin(Stdio::null());
    cmd
}

/// Starts `worker_daemon -f --config <config> --workers 2`, ready.
fn foreground(dir: &TestDir, config: &Value) -> Foreground {
    foreground_w0(dir, config, None)
}

/// The same, with worker w0's process settings.
fn foreground_w0(dir: &TestDir, config: &Value, w0: Option<&Value>) -> Foreground {
    let file = path_str(&dir.write_config("config.json", config));
    let w0 = w0.map(Value::to_string);
    let marks = dir.join("marks");
    fs::create_dir_all(&marks).unwrap();
    fs::set_permissions(&marks, fs::Permissions::from_mode(0o777)).unwrap();
    let marks = path_str(&marks);
    let mut args = vec!["-f", "--config", &file, "--workers", "2", "--dir", &marks];
    if let Some(w0) = &w0 {
        args.extend(["--w0-process", w0]);
    }
    let mut cmd = command(dir, &args);
    cmd.env("DAIMON_TEST_GONE", "1");
    let mut daemon = Foreground::spawn_cmd(dir, cmd);
    daemon.wait_ready_std(dir);
    daemon
}

/// The pid of worker `name`, once it has one.
fn worker_pid(dir: &TestDir, name: &str) -> i32 {
    let mut pid = 0;
    wait_until("the worker has a pid", DEADLINE, || {
        let list = call(dir, "worker.list", json!([]));
        pid = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|w| w["name"] == name)
            .and_then(|w| w["pid"].as_i64())
            .unwrap_or(0) as i32;
        pid > 0
    });
    pid
}

fn proc_text(pid: i32, file: &str) -> String {
    let bytes = fs::read(format!("/proc/{pid}/{file}")).expect("reading /proc");
    String::from_utf8_lossy(&bytes).into_owned()
}

fn call(dir: &TestDir, method: &str, params: Value) -> Value {
    let mut conn = unix(dir);
    conn.send(&request(method, params, 1));
    let reply = conn.json();
    assert!(reply.get("error").is_none(), "{method}: {reply}");
    reply["result"].clone()
}

/// The pids of the workers, once every one has one.
fn worker_pids(dir: &TestDir, count: usize) -> Vec<i32> {
    let mut pids = Vec::new();
    wait_until("the workers have pids", DEADLINE, || {
        let list = call(dir, "worker.list", json!([]));
        pids = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w["pid"].as_i64())
            .filter(|&p| p > 0)
            .map(|p| p as i32)
            .collect();
        pids.len() == count
    });
    pids
}

/// The fields after `key:` in /proc/PID/status.
fn status_line(pid: i32, key: &str) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("reading status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key}: in /proc/{pid}/status"));
    line.split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

/// The soft and hard values of a /proc/PID/limits row.
fn limit(pid: i32, row: &str) -> (String, String) {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).expect("reading limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with(row))
        .unwrap_or_else(|| panic!("no {row} in /proc/{pid}/limits"));
    let rest: Vec<&str> = line[row.len()..].split_whitespace().collect();
    (rest[0].to_owned(), rest[1].to_owned())
}

/// A directory the given user may write (like systemd's RuntimeDirectory=).
fn give_dir(dir: &TestDir, uid: u32, gid: u32) {
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
}

/// The first test written: the daemon before this work refused `user` as an unknown key
/// ("config: user: unknown key" at start, exit 1); now it is a key.
#[test]
fn user_is_a_config_key() {
    let config = daimon::Config::from_json(&json!({"user": "nobody", "group": "nogroup"})).unwrap();
    assert_eq!(config.user.as_deref(), Some("nobody"));
    assert_eq!(config.to_json()["group"], "nogroup");
}

#[test]
fn daemon_and_workers_run_as_nobody_with_limits() {
    require_root();
    let dir = TestDir::new();
    give_dir(&dir, 65534, 65534);
    let config = json!({
        "user": "nobody",
        "rlimits": {"nofile": [200, 300], "core": 0},
    });
    let mut daemon = foreground(&dir, &config);
    let pid = daemon.pid();
    let pids = worker_pids(&dir, 2);
    for p in std::iter::once(pid).chain(pids.iter().copied()) {
        assert_eq!(status_line(p, "Uid"), [65534; 4], "uid of {p}");
        assert_eq!(status_line(p, "Gid"), [65534; 4], "gid of {p}");
        // nobody has no supplementary groups but its primary one: root's are gone.
        assert!(!status_line(p, "Groups").contains(&0), "groups of {p}");
        assert_eq!(
            limit(p, "Max open files"),
            ("200".into(), "300".into()),
            "nofile of {p}"
        );
        assert_eq!(limit(p, "Max core file size").0, "0", "core of {p}");
    }
    // The socket is served after the drop, and now belongs to nobody (so it can remove it).
    assert!(call(&dir, "daemon.status", json!([])).is_object());
    assert_eq!(fs::metadata(dir.socket()).unwrap().uid(), 65534);
    assert_eq!(fs::metadata(dir.pidfile()).unwrap().uid(), 65534);
    daemon.stop_with(Signal::SIGTERM);
    assert!(!dir.socket().exists(), "socket left behind");
    assert!(!dir.pidfile().exists(), "pid file left behind");
    assert!(
        !daemon.stderr().contains("cannot write the directory"),
        "{}",
        daemon.stderr()
    );
}

#[test]
fn supplementary_groups_come_from_the_group_database() {
    require_root();
    let group = format!("dmtest{}", std::process::id());
    let ok = Command::new("groupadd")
        .arg(&group)
        .status()
        .unwrap()
        .success();
    assert!(ok, "groupadd {group}");
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("groupdel").arg(&self.0).status();
        }
    }
    let _cleanup = Cleanup(group.clone());
    let ok = Command::new("usermod")
        .args(["-aG", &group, "daemon"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "usermod -aG {group} daemon");
    let gid = nix::unistd::Group::from_name(&group)
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    let dir = TestDir::new();
    give_dir(&dir, 1, 1);
    let mut daemon = foreground(&dir, &json!({"user": "daemon"}));
    for p in std::iter::once(daemon.pid()).chain(worker_pids(&dir, 2)) {
        assert_eq!(status_line(p, "Uid"), [1; 4]);
        let groups = status_line(p, "Groups");
        assert!(groups.contains(&gid) && groups.contains(&1), "{groups:?}");
    }
    daemon.stop_with(Signal::SIGTERM);
    assert!(!dir.socket().exists());
}

#[test]
fn a_root_only_directory_is_said_at_start() {
    require_root();
    let dir = TestDir::new();
    let mut daemon = foreground(&dir, &json!({"user": "nobody"}));
    assert_eq!(status_line(daemon.pid(), "Uid"), [65534; 4]);
    let pid = daemon.pid();
    wait_until("the warning", DEADLINE, || {
        daemon.stderr().contains("cannot write the directory")
    });
    daemon.stop_with(Signal::SIGTERM);
    // Documented: the files stay; the pid file names a dead process, taken over as stale.
    assert!(!common::alive(pid));
}

fn start_error(config: &Value) -> String {
    let dir = TestDir::new();
    let file = path_str(&dir.write_config("config.json", config));
    let out = dir.run_cmd(command(&dir, &["-f", "--config", &file]));
    assert!(!out.status.success(), "started with {config}");
    assert!(!dir.socket().exists() && !dir.pidfile().exists());
    out.stderr
}

#[test]
fn errors_name_the_key() {
    require_root();
    let e = start_error(&json!({"user": "no-such-user-daimon"}));
    assert!(
        e.contains("user") && e.contains("no-such-user-daimon"),
        "{e}"
    );
    let e = start_error(&json!({"user": "nobody", "group": "no-such-group-daimon"}));
    assert!(
        e.contains("group") && e.contains("no-such-group-daimon"),
        "{e}"
    );
    let e = start_error(&json!({"group": "nogroup"}));
    assert!(e.contains("group") && e.contains("needs user"), "{e}");
    let e = start_error(&json!({"rlimits": {"nofile": -3}}));
    assert!(e.contains("rlimits.nofile"), "{e}");
}

#[test]
fn a_limit_above_the_hard_one_is_refused_when_not_root() {
    require_root();
    // Run the daemon as nobody from the start (not root), asking for more than its hard limit.
    let dir = TestDir::new();
    give_dir(&dir, 65534, 65534);
    let file = path_str(&dir.write_config(
        "config.json",
        &json!({"rlimits": {"nofile": [64, 1048576000]}}),
    ));
    let mut cmd = command(&dir, &["-f", "--config", &file]);
    std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
    std::os::unix::process::CommandExt::gid(&mut cmd, 65534);
    let out = dir.run_cmd(cmd);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("rlimits.nofile") && out.stderr.contains("hard limit"),
        "{}",
        out.stderr
    );
    // And not root, asked to become someone else.
    let file = path_str(&dir.write_config("config2.json", &json!({"user": "daemon"})));
    let mut cmd = command(&dir, &["-f", "--config", &file]);
    std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
    std::os::unix::process::CommandExt::gid(&mut cmd, 65534);
    let out = dir.run_cmd(cmd);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("not root") && out.stderr.contains("user"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_worker_runs_as_its_own_user_with_its_own_settings() {
    require_root();
    let dir = TestDir::new();
    let w0 = json!({"user": "nobody", "nice": 7, "env": {"DAIMON_TEST_SET": "yes", "DAIMON_TEST_GONE": null},
        "rlimits": {"nofile": [123, 456]}, "title": "custom w0 title"});
    let mut daemon = foreground_w0(&dir, &json!({}), Some(&w0));
    let (p0, p1) = (worker_pid(&dir, "w0"), worker_pid(&dir, "w1"));
    // The daemon keeps root; w0 is nobody, w1 root.
    assert_eq!(status_line(daemon.pid(), "Uid"), [0; 4]);
    wait_until("w0 is nobody", DEADLINE, || {
        status_line(p0, "Uid") == [65534; 4]
    });
    assert_eq!(status_line(p0, "Gid"), [65534; 4]);
    assert!(!status_line(p0, "Groups").contains(&0));
    assert_eq!(status_line(p1, "Uid"), [0; 4]);
    assert_eq!(common::proc_stat_field(p0, 19), 7, "w0's niceness");
    // w1 keeps the daemon's own (the test may itself run under `nice`).
    let inherited = common::proc_stat_field(daemon.pid(), 19);
    assert_eq!(common::proc_stat_field(p1, 19), inherited, "w1's niceness");
    assert_eq!(limit(p0, "Max open files"), ("123".into(), "456".into()));
    // /proc/PID/environ shows a process's initial environment block, which set_var does not
    // rewrite: the worker's environment is checked in a child it starts (std passes it on).
    call(&dir, "worker.send", json!(["w0", "spawn-sleep"]));
    let mark = dir.join("marks/w0.sleep");
    wait_until("w0's sleep", DEADLINE, || {
        fs::read_to_string(&mark).is_ok_and(|s| !s.is_empty())
    });
    let sleep: i32 = fs::read_to_string(&mark).unwrap().trim().parse().unwrap();
    let env = proc_text(sleep, "environ");
    let vars: Vec<&str> = env.split('\0').collect();
    assert!(vars.contains(&"DAIMON_TEST_SET=yes"), "{vars:?}");
    assert!(
        !vars.iter().any(|v| v.starts_with("DAIMON_TEST_GONE=")),
        "{vars:?}"
    );
    assert_eq!(status_line(sleep, "Uid"), [65534; 4]);
    // The daemon itself still has the variable the worker removed.
    assert!(proc_text(daemon.pid(), "environ").contains("DAIMON_TEST_GONE=1"));
    assert_eq!(proc_text(p0, "comm").trim_end(), "custom w0 title");
    assert_eq!(
        proc_text(p0, "cmdline").trim_end_matches('\0'),
        "custom w0 title"
    );
    assert_eq!(proc_text(p1, "comm").trim_end(), "daimon: w1");
    assert_eq!(
        proc_text(p1, "cmdline").trim_end_matches('\0'),
        "daimon: w1"
    );
    // procps's ps (Debian's `procps`, on every test machine of the project) reads the same
    // area: what an operator sees.
    let out = Command::new("ps")
        .args(["-o", "args=", "-p", &p1.to_string()])
        .output()
        .expect("running ps (apt-get install procps)");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "daimon: w1");
    daemon.stop_with(Signal::SIGTERM);
}

/// Kills a process when dropped (a worker the test may leave behind).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

#[test]
fn a_worker_of_another_user_ends_with_its_daemon() {
    // Switching a worker's user clears its parent-death signal: such a worker outlived a
    // daemon killed with SIGKILL, for ever, as it held the daemon's end of its own channel
    // too. It holds only its own now, and ends when the daemon's end closes.
    require_root();
    let dir = TestDir::new();
    let mut daemon = foreground_w0(&dir, &json!({}), Some(&json!({"user": "nobody"})));
    let (p0, p1) = (worker_pid(&dir, "w0"), worker_pid(&dir, "w1"));
    let _guards = (KillOnDrop(p0), KillOnDrop(p1));
    wait_until("w0 is nobody", DEADLINE, || {
        status_line(p0, "Uid") == [65534; 4]
    });
    let parent = |pid: i32| common::proc_stat_field(pid, 4);
    assert_eq!(parent(p0), i64::from(daemon.pid()));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.pid()), Signal::SIGKILL).unwrap();
    daemon.wait_exit();
    // (A zombie waiting for whoever adopted it counts as gone.)
    wait_until("w1 (root) ends with its daemon", DEADLINE, || {
        !common::alive(p1)
    });
    wait_until("w0 (nobody) ends with its daemon", DEADLINE, || {
        !common::alive(p0)
    });
}

#[test]
fn an_unknown_worker_user_is_an_error_at_start() {
    require_root();
    let dir = TestDir::new();
    let file = path_str(&dir.write_config("config.json", &json!({})));
    let w0 = json!({"user": "no-such-user-daimon"}).to_string();
    let out = dir.run_cmd(command(
        &dir,
        &[
            "-f",
            "--config",
            &file,
            "--workers",
            "2",
            "--w0-process",
            &w0,
        ],
    ));
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("workers.w0.user") && out.stderr.contains("no-such-user-daimon"),
        "{}",
        out.stderr
    );
    assert!(!dir.socket().exists() && !dir.pidfile().exists());
}

#[test]
fn a_worker_that_cannot_be_set_up_exits_with_a_log_line() {
    require_root();
    // A daemon started as nobody: w0's limit above the hard one is refused in the child.
    let dir = TestDir::new();
    give_dir(&dir, 65534, 65534);
    let w0 = json!({"rlimits": {"nofile": [64, 1048576000]}}).to_string();
    let file = path_str(&dir.write_config("config.json", &json!({})));
    let mut cmd = command(
        &dir,
        &[
            "-f",
            "--config",
            &file,
            "--workers",
            "2",
            "--w0-process",
            &w0,
        ],
    );
    std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
    std::os::unix::process::CommandExt::gid(&mut cmd, 65534);
    let mut daemon = Foreground::spawn_cmd(&dir, cmd);
    daemon.wait_ready_std(&dir);
    wait_until("the log line", DEADLINE, || {
        let e = daemon.stderr();
        e.contains("cannot set up the worker's process") && e.contains("workers.w0.rlimits.nofile")
    });
    // The daemon goes on serving; w1 runs.
    assert!(worker_pid(&dir, "w1") > 0);
    assert!(call(&dir, "daemon.status", json!([])).is_object());
    daemon.stop_with(Signal::SIGTERM);
}

#[test]
fn a_dropped_daemon_refuses_a_worker_of_another_user_at_start() {
    require_root();
    let dir = TestDir::new();
    let file = path_str(&dir.write_config("config.json", &json!({"user": "nobody"})));
    let w0 = json!({"user": "daemon"}).to_string();
    let out = dir.run_cmd(command(
        &dir,
        &[
            "-f",
            "--config",
            &file,
            "--workers",
            "2",
            "--w0-process",
            &w0,
        ],
    ));
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("workers.w0.user") && out.stderr.contains("drops to user nobody"),
        "{}",
        out.stderr
    );
    assert!(!dir.socket().exists() && !dir.pidfile().exists());
    // The same user as the daemon's is fine.
    let dir = TestDir::new();
    give_dir(&dir, 65534, 65534);
    let w0 = json!({"user": "nobody"});
    let mut daemon = foreground_w0(&dir, &json!({"user": "nobody"}), Some(&w0));
    assert_eq!(status_line(worker_pid(&dir, "w0"), "Uid"), [65534; 4]);
    daemon.stop_with(Signal::SIGTERM);
}

#[test]
fn socketpeers_owner_means_the_new_user() {
    require_root();
    let dir = TestDir::new();
    give_dir(&dir, 65534, 65534);
    let mut daemon = foreground(&dir, &json!({"user": "nobody", "socketmode": "0666"}));
    let ctl = |uid: u32| {
        let mut cmd = Command::new(common::daimonctl());
        cmd.arg("-s")
            .arg(common::unix_addr(&dir.socket()))
            .arg("status");
        std::os::unix::process::CommandExt::uid(&mut cmd, uid);
        std::os::unix::process::CommandExt::gid(&mut cmd, uid);
        dir.run_cmd(cmd)
    };
    let nobody = ctl(65534);
    assert!(nobody.status.success(), "nobody refused: {}", nobody.stderr);
    let other = ctl(1);
    assert!(!other.status.success(), "uid 1 served: {}", other.stdout);
    daemon.stop_with(Signal::SIGTERM);
}
