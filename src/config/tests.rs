use super::*;

/// Sets `key` to `value` on a default config and returns the refusal message.
fn refused(key: &str, value: Value) -> String {
    let mut config = Config::default();
    let e = config
        .set(key, &value)
        .expect_err(&format!("{key} = {value} was accepted"))
        .to_string();
    assert!(e.contains(&format!("'{key}'")), "{e}");
    assert!(e.contains("expected"), "{e}");
    assert_eq!(
        config,
        Config::default(),
        "a refused value changed the config"
    );
    e
}

fn with(key: &str, value: Value) -> Config {
    let mut config = Config::default();
    config.set(key, &value).unwrap();
    config
}

#[test]
fn defaults() {
    let c = Config::default();
    assert_eq!(c.sockethandler.to_string(), "unix://daemon.sock");
    assert_eq!(c.pidfile, Path::new("daemon.pid"));
    assert_eq!(c.socketbuffer, 1024);
    assert_eq!(c.sockettimeout, Duration::from_secs(2));
    assert_eq!(c.socketmaxconnections, 10);
    assert_eq!(c.niceness, None);
    assert_eq!(c.description, "daimon daemon");
    assert_eq!(c.logfile, None);
    assert_eq!(c.umask, 0o027);
    assert_eq!(c.shutdowntimeout, Duration::from_secs(10));
    c.validate().unwrap();
}

#[test]
fn keys_match_to_json() {
    let json = Config::default().to_json();
    let object = json.as_object().unwrap();
    assert_eq!(object.len(), Config::KEYS.len());
    for key in Config::KEYS {
        assert!(object.contains_key(*key), "{key}");
    }
}

#[test]
fn accepts_good_values() {
    let tcp = with("sockethandler", json!("tcp://[::1]:9000"));
    assert_eq!(tcp.sockethandler.to_string(), "tcp://[::1]:9000");
    assert_eq!(
        with("pidfile", json!("/run/d.pid")).pidfile,
        Path::new("/run/d.pid")
    );
    assert_eq!(with("socketbuffer", json!(64)).socketbuffer, 64);
    assert_eq!(with("socketbuffer", json!(16 << 20)).socketbuffer, 16 << 20);
    let t = with("sockettimeout", json!(0.5)).sockettimeout;
    assert_eq!(t, Duration::from_millis(500));
    let t = with("sockettimeout", json!(3600)).sockettimeout;
    assert_eq!(t, Duration::from_secs(3600));
    assert_eq!(
        with("socketmaxconnections", json!(1)).socketmaxconnections,
        1
    );
    let n = with("socketmaxconnections", json!(65536)).socketmaxconnections;
    assert_eq!(n, 65536);
    assert_eq!(with("niceness", json!(-20)).niceness, Some(-20));
    assert_eq!(with("niceness", json!(19)).niceness, Some(19));
    let mut c = with("niceness", json!(5));
    c.set("niceness", &Value::Null).unwrap();
    assert_eq!(c.niceness, None);
    assert_eq!(with("description", json!("")).description, "");
    assert_eq!(with("description", json!("Echo")).description, "Echo");
    let l = with("logfile", json!("d.log")).logfile;
    assert_eq!(l.as_deref(), Some(Path::new("d.log")));
    assert_eq!(with("logfile", Value::Null).logfile, None);
    let t = with("shutdowntimeout", json!(1)).shutdowntimeout;
    assert_eq!(t, Duration::from_secs(1));
}

#[test]
fn umask_forms() {
    assert_eq!(with("umask", json!(18)).umask, 0o022);
    assert_eq!(with("umask", json!(0)).umask, 0);
    assert_eq!(with("umask", json!(511)).umask, 0o777);
    assert_eq!(with("umask", json!("027")).umask, 0o027);
    assert_eq!(with("umask", json!("0o077")).umask, 0o077);
    assert_eq!(with("umask", json!("0")).umask, 0);
    assert_eq!(with("umask", json!("777")).umask, 0o777);
    for bad in [
        json!(512),
        json!(-1),
        json!(1.5),
        json!("1000"),
        json!("08"),
        json!(""),
        json!("0o"),
        json!("0x1f"),
        json!(" 027"),
        json!("99999999999999999999"),
        Value::Null,
    ] {
        refused("umask", bad);
    }
}

#[test]
fn refuses_wrong_types() {
    let cases = [
        ("sockethandler", json!(5)),
        ("pidfile", json!(1)),
        ("pidfile", Value::Null),
        ("socketbuffer", json!("1024")),
        ("socketbuffer", json!(1024.0)),
        ("sockettimeout", json!("2")),
        ("sockettimeout", Value::Null),
        ("socketmaxconnections", json!(true)),
        ("niceness", json!("5")),
        ("niceness", json!(1.5)),
        ("description", json!(["a"])),
        ("description", Value::Null),
        ("logfile", json!({})),
        ("umask", json!(["027"])),
        ("shutdowntimeout", json!(false)),
    ];
    for (key, value) in cases {
        refused(key, value);
    }
}

#[test]
fn refuses_out_of_range() {
    let cases = [
        ("sockethandler", json!("udp://x")),
        ("sockethandler", json!("tcp://h:0")),
        ("pidfile", json!("")),
        ("socketbuffer", json!(63)),
        ("socketbuffer", json!((16 << 20) + 1)),
        ("socketbuffer", json!(-1)),
        ("sockettimeout", json!(0)),
        ("sockettimeout", json!(-1)),
        ("sockettimeout", json!(3600.001)),
        ("sockettimeout", json!(1e-12)),
        ("sockettimeout", json!(1e300)),
        ("socketmaxconnections", json!(0)),
        ("socketmaxconnections", json!(65537)),
        ("niceness", json!(-21)),
        ("niceness", json!(20)),
        ("niceness", json!(1u64 << 40)),
        ("logfile", json!("")),
        ("shutdowntimeout", json!(0.0)),
        ("shutdowntimeout", json!(3601)),
    ];
    for (key, value) in cases {
        refused(key, value);
    }
    let e = refused("socketmaxconnections", json!(0));
    assert!(
        e.ends_with("expected an integer in 1..=65536, got 0"),
        "{e}"
    );
}

#[test]
fn long_values_are_cut_in_messages() {
    let e = refused("socketbuffer", json!("x".repeat(1000)));
    assert!(e.len() < 200 && e.ends_with("..."), "{e}");
}

#[test]
fn unknown_key_lists_known_keys() {
    let e = Config::default()
        .set("sockethandlr", &json!(1))
        .unwrap_err();
    let e = e.to_string();
    assert!(
        e.contains("'sockethandlr'") && e.contains("unknown key"),
        "{e}"
    );
    assert!(e.contains("sockethandler, pidfile, socketbuffer"), "{e}");
    assert!(e.contains("shutdowntimeout"), "{e}");
}

#[test]
fn arguments_points_to_init_with() {
    let e = Config::default().set("arguments", &json!([])).unwrap_err();
    let e = e.to_string();
    assert!(
        e.contains("'arguments'") && e.contains("Daemon::init_with"),
        "{e}"
    );
}

#[test]
fn merge_json_needs_an_object_and_is_all_or_nothing() {
    let e = Config::from_json(&json!([1])).unwrap_err().to_string();
    assert!(e.contains("<config>") && e.contains("JSON object"), "{e}");
    let mut c = Config::default();
    let bad = json!({"description": "x", "socketbuffer": 1});
    let e = c.merge_json(&bad).unwrap_err().to_string();
    assert!(e.contains("socketbuffer"), "{e}");
    assert_eq!(c, Config::default());
}

#[test]
fn from_json_as_in_the_ancestor() {
    let c = Config::from_json(&json!({
        "description": "Echo Daemon",
        "sockethandler": "tcp://127.0.0.1:10042",
        "socketsecret": "s3cret",
    }))
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.description, "Echo Daemon");
    assert!(c.sockethandler.is_loopback());
    assert_eq!(c.socketmaxconnections, 10);
}

#[test]
fn to_json_round_trips() {
    let mut c = Config::default();
    assert_eq!(Config::from_json(&c.to_json()).unwrap(), c);
    c.sockethandler = "tcp://[::1]:1".parse().unwrap();
    c.pidfile = "/run/d.pid".into();
    c.socketbuffer = 4096;
    c.sockettimeout = Duration::from_nanos(1_100_000_001);
    c.socketmaxconnections = 65536;
    c.niceness = Some(-3);
    c.description = "Echo \"Daemon\"".into();
    c.logfile = Some("log/d.log".into());
    c.umask = 0o7;
    c.shutdowntimeout = Duration::new(3599, 999_999_999);
    c.socketallowunauthenticated = true;
    c.socketauthtimeout = Duration::from_millis(1500);
    let json = c.to_json();
    assert_eq!(json["umask"], json!("007"));
    assert_eq!(json["sockettimeout"], json!(1.100_000_001));
    assert_eq!(Config::from_json(&json).unwrap(), c);
    assert_eq!(Config::default().to_json()["umask"], json!("027"));
    assert_eq!(Config::default().to_json()["niceness"], Value::Null);
}

#[test]
fn validate_uses_the_same_rules() {
    let check = |f: fn(&mut Config), key: &str| {
        let mut c = Config::default();
        f(&mut c);
        let e = c.validate().expect_err(key).to_string();
        assert!(e.contains(&format!("'{key}'")), "{e}");
    };
    check(|c| c.socketmaxconnections = 0, "socketmaxconnections");
    check(|c| c.socketbuffer = 1, "socketbuffer");
    check(|c| c.sockettimeout = Duration::ZERO, "sockettimeout");
    check(
        |c| c.shutdowntimeout = Duration::from_secs(3601),
        "shutdowntimeout",
    );
    check(|c| c.niceness = Some(20), "niceness");
    check(|c| c.umask = 0o1000, "umask");
    check(|c| c.pidfile = PathBuf::new(), "pidfile");
    check(|c| c.logfile = Some(PathBuf::new()), "logfile");
    check(
        |c| {
            c.sockethandler = Address::Tcp {
                host: "h".into(),
                port: 0,
            }
        },
        "sockethandler",
    );
}

#[test]
fn make_paths_absolute_joins_relative_paths() {
    let mut c = Config {
        logfile: Some("d.log".into()),
        ..Config::default()
    };
    c.make_paths_absolute(Path::new("/srv/d"));
    assert_eq!(c.pidfile, Path::new("/srv/d/daemon.pid"));
    assert_eq!(c.logfile.as_deref(), Some(Path::new("/srv/d/d.log")));
    assert_eq!(
        c.sockethandler.unix_path(),
        Some(Path::new("/srv/d/daemon.sock"))
    );
    c.pidfile = "/run/d.pid".into();
    c.make_paths_absolute(Path::new("/elsewhere"));
    assert_eq!(c.pidfile, Path::new("/run/d.pid"));
    assert_eq!(c.logfile.as_deref(), Some(Path::new("/srv/d/d.log")));
}

/// A file in a fresh directory under the system temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let dir =
            std::env::temp_dir().join(format!("daimon-config-test-{}-{name}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(self.0.parent().unwrap());
    }
}

#[test]
fn load_file_overrides_what_is_set() {
    let file = TempFile::new("good", r#"{"socketbuffer": 2048, "umask": "077"}"#);
    let mut c = Config {
        socketbuffer: 100,
        description: "kept".into(),
        ..Config::default()
    };
    c.load_file(&file.0).unwrap();
    assert_eq!(c.socketbuffer, 2048);
    assert_eq!(c.umask, 0o077);
    assert_eq!(c.description, "kept");
}

#[test]
fn load_file_reports_parse_errors_with_path_and_line() {
    let file = TempFile::new("bad", "{\n  \"socketbuffer\": 2048,\n  oops\n}\n");
    let e = Config::default().load_file(&file.0).unwrap_err();
    let message = e.to_string();
    assert!(message.contains("parsing configuration file"), "{message}");
    assert!(message.contains(&file.0.display().to_string()), "{message}");
    assert!(message.contains("line 3"), "{message}");
    assert!(matches!(e, Error::Path { .. }));
}

#[test]
fn load_file_reports_missing_files_and_bad_keys() {
    let file = TempFile::new("missing", "{}");
    let missing = file.0.with_file_name("nope.json");
    let e = Config::default()
        .load_file(&missing)
        .unwrap_err()
        .to_string();
    assert!(e.contains("reading configuration file"), "{e}");
    assert!(e.contains(&missing.display().to_string()), "{e}");
    let file = TempFile::new("key", r#"{"arguments": []}"#);
    let e = Config::default()
        .load_file(&file.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("'arguments'"), "{e}");
}

#[test]
fn socket_keys_are_checked() {
    let mut c = Config::default();
    c.set("socketmode", &json!("0660")).unwrap();
    assert_eq!(c.socketmode, 0o660);
    c.set("socketpeers", &json!([1000, 1001])).unwrap();
    assert_eq!(c.socketpeers, Peers::Uids(vec![1000, 1001]));
    assert!(c.socketpeers.allows(0, 5) && c.socketpeers.allows(1001, 5));
    assert!(!c.socketpeers.allows(5, 5), "a list replaces the owner");
    assert!(Peers::Owner.allows(5, 5) && !Peers::Owner.allows(6, 5));
    c.set("socketidletimeout", &json!(0)).unwrap();
    assert_eq!(c.socketidletimeout, Duration::ZERO);
    c.set("socketsecret", &json!("s3cret")).unwrap();
    assert!(refused("socketpeers", json!("nobody")).contains("owner"));
    assert!(refused("socketsecret", json!("")).contains("non-empty"));
    assert!(refused("maxrequestsize", json!(1)).contains("64"));
    assert!(refused("socketallowremote", json!("yes")).contains("true or false"));
    assert_eq!(Config::from_json(&c.to_json()).unwrap(), c);
}

#[test]
fn remote_tcp_needs_socketallowremote() {
    let mut c = Config::default();
    c.set("sockethandler", &json!("tcp://0.0.0.0:10042"))
        .unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("sockethandler") && e.contains("socketallowremote"),
        "{e}"
    );
    c.set("socketallowremote", &json!(true)).unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("'socketsecret'") && e.contains("socketallowremote"),
        "{e}"
    );
    c.set("socketsecret", &json!("s3cret")).unwrap();
    c.validate().unwrap();
}

#[test]
fn tcp_without_a_secret_needs_the_explicit_opt_in() {
    let mut c = Config::default();
    c.set("sockethandler", &json!("tcp://127.0.0.1:10042"))
        .unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("'socketsecret'")
            && e.contains("every local user")
            && e.contains("socketallowunauthenticated"),
        "{e}"
    );
    c.socketallowunauthenticated = true;
    c.validate().unwrap();
    // The opt-in is for loopback only: a remote-capable socket needs the secret anyway.
    c.socketallowremote = true;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("required with socketallowremote"), "{e}");
    c.socketsecret = Some("s3cret".into());
    c.validate().unwrap();
    // A unix socket needs neither.
    let u = Config {
        socketallowremote: true,
        ..Config::default()
    };
    u.validate().unwrap();
}

#[test]
fn socketauthtimeout_is_seconds() {
    assert_eq!(Config::default().socketauthtimeout, Duration::from_secs(5));
    let t = with("socketauthtimeout", json!(0.25)).socketauthtimeout;
    assert_eq!(t, Duration::from_millis(250));
    assert!(refused("socketauthtimeout", json!(0)).contains("greater than 0"));
    assert!(refused("socketallowunauthenticated", json!(1)).contains("true or false"));
    let c = Config {
        socketauthtimeout: Duration::from_secs(3601),
        ..Config::default()
    };
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("'socketauthtimeout'"), "{e}");
}

#[test]
fn logformat_and_loglines() {
    use crate::log::Format;
    assert_eq!(Config::default().logformat, Format::Text);
    assert_eq!(Config::default().loglines, 1000);
    assert_eq!(with("logformat", json!("json")).logformat, Format::Json);
    assert!(refused("logformat", json!("xml")).contains("\"text\" or \"json\""));
    assert!(refused("logformat", json!(1)).contains("\"text\" or \"json\""));
    assert_eq!(with("loglines", json!(0)).loglines, 0);
    assert_eq!(with("loglines", json!(100_000)).loglines, 100_000);
    assert!(refused("loglines", json!(100_001)).contains("0..=100000"));
    assert!(refused("loglines", json!(-1)).contains("0..=100000"));
    let c = Config {
        loglines: 200_000,
        ..Config::default()
    };
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("'loglines'"), "{e}");
    let json = with("logformat", json!("json")).to_json();
    assert_eq!(json["logformat"], "json");
    assert_eq!(json["loglines"], 1000);
}
