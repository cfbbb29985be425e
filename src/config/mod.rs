//! The daemon's configuration: the keys of the ancestor comodojo/daemon with its defaults,
//! plus the keys the framework needs.
//!
//! | key | default | meaning |
//! |-----|---------|---------|
//! | `sockethandler` | `"unix://daemon.sock"` | control socket: `unix://PATH` or `tcp://HOST[:PORT]` (port 10042 when omitted, IPv6 in brackets) |
//! | `pidfile` | `"daemon.pid"` | the pid file, locked while the daemon runs |
//! | `socketbuffer` | `1024` | bytes read from a client at a time, `64..=16777216` |
//! | `sockettimeout` | `2` | seconds a request may take from its first byte to its last, a refused client to send its request, and a client not reading its replies to take some, `> 0` and `<= 3600` (integer or float) |
//! | `socketmaxconnections` | `10` | clients served at once, `1..=65536` |
//! | `niceness` | `null` | the absolute niceness to run at, `-20..=19`; `null` leaves it unchanged |
//! | `description` | `"daimon daemon"` | the banner shown on the console |
//! | `logfile` | `null` | where a detached daemon logs; `null`: to syslog (`/dev/log`) when there is one, else nowhere (the launcher says which) |
//! | `umask` | `"027"` | the file creation mask: an integer `0..=511` or a string of octal digits (`"027"`, `"0o027"`) |
//! | `shutdowntimeout` | `10` | seconds a worker gets to stop before SIGKILL, `> 0` and `<= 3600` |
//! | `maxrequestsize` | `1048576` | the largest request, in bytes, `64..=268435456`; checked before allocating |
//! | `socketmaxoutput` | `4194304` | the largest reply, and the unsent reply bytes past which a connection's next requests wait, `1024..=1073741824` |
//! | `socketmaxbatch` | `100` | the most requests in a JSON-RPC batch, `1..=65536` |
//! | `maxrequestvalues` | `65536` | the most values (scalars, arrays, objects, keys) in one request once parsed, `16..=16777216` |
//! | `socketidletimeout` | `300` | seconds a connection with nothing in flight is kept, `0` (never closed) to `86400` |
//! | `socketmode` | `"0600"` | the unix socket file's mode (octal string or integer) |
//! | `socketpeers` | `"owner"` | who may connect to a unix socket: `"owner"` (root and the daemon's user), `"any"`, or a list of uids |
//! | `socketallowremote` | `false` | whether a tcp socket may listen on a non-loopback address |
//! | `socketsecret` | `null` | a shared secret tcp clients must give to `system.auth` before any other call; required for a tcp socket unless `socketallowunauthenticated`, always with `socketallowremote` |
//! | `socketallowunauthenticated` | `false` | whether a loopback tcp socket without `socketsecret` is accepted: every local user may then call every method (the daemon warns at start) |
//! | `socketauthtimeout` | `5` | seconds a tcp connection is given to present the secret, `> 0` and `<= 3600` |
//! | `loglevel` | `"info"` | the least severe level logged: `"critical"`, `"error"`, `"warning"`, `"info"`, `"debug"` or `"trace"`; `-v` makes it `"debug"` whatever the file says |
//! | `logformat` | `"text"` | the log's format: `"text"` (slog-term's) or `"json"` (one object per line: `time`, `level`, `msg` and the record's fields) |
//! | `loglines` | `1000` | lines kept in memory for each worker and for the daemon's own log (`worker.log`, `daemon.log`), `0..=100000` |
//! | `user` | `null` | the user (name or uid) the daemon becomes after binding its socket, locking its pid file and opening its log as root, before any worker is forked; needs root unless it is the current user |
//! | `group` | `null` | the group (name or gid) it becomes; `null`: the user's primary group; supplementary groups come from the group database; needs `user` |
//! | `workers` | `{}` | per installed worker, settings over the code's `Spec`: `{"NAME": {"restart": "transient", "maxrestarts": 3, "restartwindow": 30, "backoff": 0.1, "maxbackoff": 30, "stableafter": 1, "output": "separate", "user": ..., "group": ..., "nice": 5, "env": {"K": "v"}, "rlimits": {...}, "title": "..."}}`; the restart policy is applied again at a reload, the process settings and `output` (`separate`, `merged`: stderr into the stdout pipe, `discard`: both to `/dev/null`) at the worker's next start |
//! | `app` | `{}` | the application's own keys, each declared with `Daemon::app_key` (typed, checked at start and at a reload; an undeclared key is an error) |
//! | `rlimits` | `{}` | resource limits applied before the drop: `{"nofile": 4096, "core": "unlimited", "stack": [soft, hard]}` (an integer is soft = hard); resources `as`, `core`, `cpu`, `data`, `fsize`, `locks`, `memlock`, `msgqueue`, `nice`, `nofile`, `nproc`, `rss`, `rtprio`, `sigpending`, `stack` |
//!
//! The ancestor's `arguments` key is refused: custom command-line arguments are given with
//! `Daemon::init_with`. Relative paths are relative to the working directory the daemon
//! starts in; [`Config::make_paths_absolute`] pins them before the daemon changes directory.
//!
//! # Examples
//!
//! ```
//! use daimon::Config;
//! use serde_json::json;
//!
//! let config = Config::from_json(&json!({
//!     "description": "Echo Daemon",
//!     "sockethandler": "tcp://127.0.0.1:10042",
//!     "socketsecret": "s3cret",
//! }))?;
//! assert_eq!(config.description, "Echo Daemon");
//! assert_eq!(config.socketmaxconnections, 10);
//! # Ok::<(), daimon::Error>(())
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::socket::Address;

mod peers;
mod rules;

pub use peers::Peers;
use rules::{
    IDLE_SECONDS, LOGLINES, MAXREQUESTSIZE, MAXREQUESTVALUES, MODE, NICENESS, PATH_EXPECTED,
    SECONDS, SOCKETBUFFER, SOCKETMAXBATCH, SOCKETMAXCONNECTIONS, SOCKETMAXOUTPUT, UMASK,
    as_duration, as_umask, as_usize, level_name, level_named, path, path_ok, refuse, secs,
};

/// The configuration of a daemon; see the [module docs](self) for every key.
///
/// The fields are public so code can set them directly; [`Config::validate`] then checks
/// them against the rules [`Config::set`] applies to JSON values.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Where the control socket listens; default `unix://daemon.sock`.
    pub sockethandler: Address,
    /// The pid file; default `daemon.pid`.
    pub pidfile: PathBuf,
    /// How many bytes are read from a client at a time; default 1024, `64..=16 MiB`.
    pub socketbuffer: usize,
    /// How long a request may take from its first byte to its last (and a client that does
    /// not read its replies, without progress); default 2 s, more than 0 and at most 1 hour.
    pub sockettimeout: Duration,
    /// How many clients are served at once; default 10, `1..=65536`.
    pub socketmaxconnections: usize,
    /// The absolute niceness to run at, `-20..=19`; default `None` leaves it unchanged.
    pub niceness: Option<i32>,
    /// The banner shown on the console; default `daimon daemon`.
    pub description: String,
    /// Where a detached daemon logs; default `None`: syslog when `/dev/log` exists, else
    /// nowhere.
    pub logfile: Option<PathBuf>,
    /// The file creation mask, at most `0o777`; default `0o027`.
    pub umask: u32,
    /// How long a worker gets to stop before it is killed; default 10 s, more than 0 and at
    /// most 1 hour.
    pub shutdowntimeout: Duration,
    /// The largest request in bytes; default 1 MiB, `64..=256 MiB`.
    pub maxrequestsize: usize,
    /// The largest reply, and the unsent reply bytes past which a connection's next requests
    /// wait for the client to read; default 4 MiB.
    pub socketmaxoutput: usize,
    /// The most requests in a JSON-RPC batch; default 100.
    pub socketmaxbatch: usize,
    /// The most values in one request once parsed; default 65,536.
    pub maxrequestvalues: usize,
    /// How long a connection with nothing in flight is kept; default 300 s, zero = forever.
    pub socketidletimeout: Duration,
    /// The unix socket file's mode; default `0o600`.
    pub socketmode: u32,
    /// Who may connect to a unix socket; default [`Peers::Owner`].
    pub socketpeers: Peers,
    /// Whether a tcp socket may listen on a non-loopback address; default false.
    pub socketallowremote: bool,
    /// A shared secret tcp clients must present with `system.auth`; default none. A tcp
    /// socket needs one unless [`Config::socketallowunauthenticated`], and always with
    /// [`Config::socketallowremote`].
    pub socketsecret: Option<String>,
    /// Whether a loopback tcp socket without a secret is accepted, letting every local user
    /// call every method; default false.
    pub socketallowunauthenticated: bool,
    /// How long a tcp connection is given to present the secret; default 5 s, more than 0
    /// and at most 1 hour.
    pub socketauthtimeout: Duration,
    /// The log's format; default [`Format::Text`](crate::log::Format::Text).
    pub logformat: crate::log::Format,
    /// The least severe level logged; default info (`-v`: debug).
    pub loglevel: slog::Level,
    /// Lines kept in memory per worker and for the daemon's own log; default 1000,
    /// `0..=100000`.
    pub loglines: usize,
    /// The user (name or uid) the daemon becomes once its files are open; default `None`
    /// keeps the current user.
    pub user: Option<String>,
    /// The group (name or gid) the daemon becomes; default `None`: the user's primary group.
    pub group: Option<String>,
    /// Resource limits applied at start, before the privileges are dropped; default none.
    pub rlimits: crate::privs::Rlimits,
    /// Per-worker settings by worker name (the `workers` key), checked against the installed
    /// workers once `setup()` ran; default empty.
    pub workers: serde_json::Map<String, Value>,
    /// The application's own keys (the `app` key), checked against those declared with
    /// `Daemon::app_key`; default empty.
    pub app: serde_json::Map<String, Value>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sockethandler: Address::Unix(PathBuf::from("daemon.sock")),
            pidfile: PathBuf::from("daemon.pid"),
            socketbuffer: 1024,
            sockettimeout: Duration::from_secs(2),
            socketmaxconnections: 10,
            niceness: None,
            description: String::from("daimon daemon"),
            logfile: None,
            umask: 0o027,
            shutdowntimeout: Duration::from_secs(10),
            maxrequestsize: 1024 * 1024,
            socketmaxoutput: 4 * 1024 * 1024,
            socketmaxbatch: 100,
            maxrequestvalues: 65536,
            socketidletimeout: Duration::from_secs(300),
            socketmode: 0o600,
            socketpeers: Peers::Owner,
            socketallowremote: false,
            socketsecret: None,
            socketallowunauthenticated: false,
            socketauthtimeout: Duration::from_secs(5),
            logformat: crate::log::Format::Text,
            loglevel: slog::Level::Info,
            loglines: 1000,
            user: None,
            group: None,
            rlimits: crate::privs::Rlimits::default(),
            workers: serde_json::Map::new(),
            app: serde_json::Map::new(),
        }
    }
}

impl Config {
    /// Every key [`Config::set`] knows, in the order of the fields.
    pub const KEYS: &[&str] = &[
        "sockethandler",
        "pidfile",
        "socketbuffer",
        "sockettimeout",
        "socketmaxconnections",
        "niceness",
        "description",
        "logfile",
        "umask",
        "shutdowntimeout",
        "maxrequestsize",
        "socketmaxoutput",
        "socketmaxbatch",
        "maxrequestvalues",
        "socketidletimeout",
        "socketmode",
        "socketpeers",
        "socketallowremote",
        "socketsecret",
        "socketallowunauthenticated",
        "socketauthtimeout",
        "logformat",
        "loglevel",
        "loglines",
        "user",
        "group",
        "rlimits",
        "workers",
        "app",
    ];

    /// Sets one key from a JSON value, checking its type and range.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming `key` when the key is unknown (or is the ancestor's
    /// `arguments`), or the value has the wrong type or is out of range; `self` is then
    /// unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// use daimon::Config;
    /// use serde_json::json;
    ///
    /// let mut config = Config::default();
    /// config.set("umask", &json!("077"))?;
    /// assert_eq!(config.umask, 0o077);
    /// let e = config.set("socketmaxconnections", &json!(0)).unwrap_err();
    /// assert!(e.to_string().contains("socketmaxconnections"));
    /// # Ok::<(), daimon::Error>(())
    /// ```
    pub fn set(&mut self, key: &str, value: &Value) -> Result<()> {
        match key {
            "sockethandler" => {
                let s = value.as_str().ok_or_else(|| {
                    refuse(key, "a string like unix://PATH or tcp://HOST:PORT", value)
                })?;
                self.sockethandler = s.parse()?;
            }
            "pidfile" => self.pidfile = path(key, value, PATH_EXPECTED)?,
            "socketbuffer" => {
                self.socketbuffer = SOCKETBUFFER.check(key, as_usize(value), value)?
            }
            "sockettimeout" => {
                self.sockettimeout = SECONDS.check(key, as_duration(value), value)?
            }
            "socketmaxconnections" => {
                self.socketmaxconnections =
                    SOCKETMAXCONNECTIONS.check(key, as_usize(value), value)?;
            }
            "niceness" => {
                self.niceness = match value {
                    Value::Null => None,
                    _ => {
                        let n = value.as_i64().and_then(|n| i32::try_from(n).ok());
                        Some(NICENESS.check(key, n, value)?)
                    }
                };
            }
            "description" => {
                let s = value
                    .as_str()
                    .ok_or_else(|| refuse(key, "a string", value))?;
                self.description = s.to_owned();
            }
            "logfile" => {
                self.logfile = match value {
                    Value::Null => None,
                    _ => Some(path(key, value, "null or a non-empty path string")?),
                };
            }
            "umask" => self.umask = UMASK.check(key, as_umask(value), value)?,
            "shutdowntimeout" => {
                self.shutdowntimeout = SECONDS.check(key, as_duration(value), value)?;
            }
            "maxrequestsize" => {
                self.maxrequestsize = MAXREQUESTSIZE.check(key, as_usize(value), value)?;
            }
            "socketmaxoutput" => {
                self.socketmaxoutput = SOCKETMAXOUTPUT.check(key, as_usize(value), value)?;
            }
            "socketmaxbatch" => {
                self.socketmaxbatch = SOCKETMAXBATCH.check(key, as_usize(value), value)?;
            }
            "maxrequestvalues" => {
                self.maxrequestvalues = MAXREQUESTVALUES.check(key, as_usize(value), value)?;
            }
            "socketidletimeout" => {
                self.socketidletimeout = IDLE_SECONDS.check(key, as_duration(value), value)?;
            }
            "socketmode" => self.socketmode = MODE.check(key, as_umask(value), value)?,
            "socketpeers" => {
                self.socketpeers = Peers::from_json(value)
                    .ok_or_else(|| refuse(key, "\"owner\", \"any\" or a list of uids", value))?;
            }
            "socketallowremote" => {
                self.socketallowremote = value
                    .as_bool()
                    .ok_or_else(|| refuse(key, "true or false", value))?;
            }
            "socketallowunauthenticated" => {
                self.socketallowunauthenticated = value
                    .as_bool()
                    .ok_or_else(|| refuse(key, "true or false", value))?;
            }
            "socketauthtimeout" => {
                self.socketauthtimeout = SECONDS.check(key, as_duration(value), value)?;
            }
            "socketsecret" => {
                self.socketsecret = match value {
                    Value::Null => None,
                    Value::String(s) if !s.is_empty() => Some(s.clone()),
                    _ => return Err(refuse(key, "null or a non-empty string", value)),
                };
            }
            "logformat" => {
                self.logformat = value
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| refuse(key, "\"text\" or \"json\"", value))?;
            }
            "loglevel" => {
                self.loglevel = value.as_str().and_then(level_named).ok_or_else(|| {
                    refuse(
                        key,
                        "\"critical\", \"error\", \"warning\", \"info\", \"debug\" or \"trace\"",
                        value,
                    )
                })?;
            }
            "loglines" => self.loglines = LOGLINES.check(key, as_usize(value), value)?,
            "user" | "group" => {
                let v = match value {
                    Value::Null => None,
                    Value::String(s) if !s.is_empty() => Some(s.clone()),
                    Value::Number(n) if n.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)) => {
                        Some(n.to_string())
                    }
                    _ => return Err(refuse(key, "null, a name or a numeric id", value)),
                };
                if key == "user" {
                    self.user = v;
                } else {
                    self.group = v;
                }
            }
            "rlimits" => self.rlimits = crate::privs::Rlimits::from_json(key, value)?,
            "workers" => {
                let map = value
                    .as_object()
                    .ok_or_else(|| refuse(key, "an object of worker names", value))?;
                if let Some((name, _)) = map.iter().find(|(_, v)| !v.is_object()) {
                    return Err(Error::config(
                        format!("workers.{name}"),
                        "expected an object of settings",
                    ));
                }
                self.workers = map.clone();
            }
            "app" => {
                self.app = value
                    .as_object()
                    .ok_or_else(|| refuse(key, "an object of the application's keys", value))?
                    .clone();
            }
            "arguments" => {
                return Err(Error::config(
                    key,
                    "not supported: give custom command-line arguments with Daemon::init_with",
                ));
            }
            _ => {
                return Err(Error::config(
                    key,
                    format!("unknown key; known keys: {}", Self::KEYS.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// Sets every key of a JSON object, in the object's order, through [`Config::set`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `value` is not an object, or for the first key refused by
    /// [`Config::set`]; `self` is then unchanged.
    pub fn merge_json(&mut self, value: &Value) -> Result<()> {
        let object = value
            .as_object()
            .ok_or_else(|| refuse("<config>", "a JSON object of configuration keys", value))?;
        let mut merged = self.clone();
        for (key, value) in object {
            merged.set(key, value)?;
        }
        *self = merged;
        Ok(())
    }

    /// The defaults with the keys of a JSON object set on top.
    ///
    /// # Errors
    ///
    /// As [`Config::merge_json`].
    pub fn from_json(value: &Value) -> Result<Config> {
        let mut config = Config::default();
        config.merge_json(value)?;
        Ok(config)
    }

    /// Reads a JSON configuration file and sets its keys, overriding what is already set.
    ///
    /// # Errors
    ///
    /// [`Error::Path`] when the file cannot be read or is not valid JSON (the message then
    /// gives the line and column), and the errors of [`Config::merge_json`].
    pub fn load_file(&mut self, path: &Path) -> Result<()> {
        let bytes =
            fs::read(path).map_err(|e| Error::path(path, "reading configuration file", e))?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            let e = io::Error::new(io::ErrorKind::InvalidData, e);
            Error::path(path, "parsing configuration file", e)
        })?;
        self.merge_json(&value)
    }

    /// Checks the fields, possibly set directly, against the rules of [`Config::set`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        self.sockethandler.validate()?;
        if !path_ok(&self.pidfile) {
            return Err(refuse("pidfile", PATH_EXPECTED, &self.pidfile.display()));
        }
        let n = self.socketbuffer;
        SOCKETBUFFER.check("socketbuffer", Some(n), &n)?;
        let d = self.sockettimeout;
        SECONDS.check("sockettimeout", Some(d), &secs(d))?;
        let n = self.socketmaxconnections;
        SOCKETMAXCONNECTIONS.check("socketmaxconnections", Some(n), &n)?;
        if let Some(n) = self.niceness {
            NICENESS.check("niceness", Some(n), &n)?;
        }
        if let Some(logfile) = self.logfile.as_deref().filter(|p| !path_ok(p)) {
            return Err(refuse("logfile", PATH_EXPECTED, &logfile.display()));
        }
        UMASK.check(
            "umask",
            Some(self.umask),
            &format_args!("{:#o}", self.umask),
        )?;
        let d = self.shutdowntimeout;
        SECONDS.check("shutdowntimeout", Some(d), &secs(d))?;
        let n = self.maxrequestsize;
        MAXREQUESTSIZE.check("maxrequestsize", Some(n), &n)?;
        let n = self.socketmaxoutput;
        SOCKETMAXOUTPUT.check("socketmaxoutput", Some(n), &n)?;
        let n = self.socketmaxbatch;
        SOCKETMAXBATCH.check("socketmaxbatch", Some(n), &n)?;
        let n = self.maxrequestvalues;
        MAXREQUESTVALUES.check("maxrequestvalues", Some(n), &n)?;
        let d = self.socketidletimeout;
        IDLE_SECONDS.check("socketidletimeout", Some(d), &secs(d))?;
        let mode = self.socketmode;
        MODE.check("socketmode", Some(mode), &format_args!("{mode:#o}"))?;
        if self.socketsecret.as_deref() == Some("") {
            return Err(refuse(
                "socketsecret",
                "null or a non-empty string",
                &"\"\"",
            ));
        }
        let d = self.socketauthtimeout;
        SECONDS.check("socketauthtimeout", Some(d), &secs(d))?;
        let n = self.loglines;
        LOGLINES.check("loglines", Some(n), &n)?;
        if self.group.is_some() && self.user.is_none() {
            return Err(Error::config("group", "needs user (the user to become)"));
        }
        if !self.socketallowremote && !self.sockethandler.is_loopback() {
            return Err(Error::config(
                "sockethandler",
                format!(
                    "{} is not a loopback address; set socketallowremote to true to listen on it",
                    self.sockethandler
                ),
            ));
        }
        self.validate_tcp_secret()
    }

    /// A tcp socket without a secret lets every local user (or, remote-capable, anyone)
    /// call `daemon.shutdown`: it takes a secret, or an explicit opt-in on loopback.
    fn validate_tcp_secret(&self) -> Result<()> {
        if !matches!(self.sockethandler, Address::Tcp { .. }) || self.socketsecret.is_some() {
            return Ok(());
        }
        if self.socketallowremote {
            return Err(Error::config(
                "socketsecret",
                format!(
                    "required with socketallowremote: {} would let any host that reaches it \
                     call every method",
                    self.sockethandler
                ),
            ));
        }
        if !self.socketallowunauthenticated {
            return Err(Error::config(
                "socketsecret",
                format!(
                    "required for the tcp socket {}: without it every local user may call \
                     every method; set socketsecret, or socketallowunauthenticated to true to \
                     accept that",
                    self.sockethandler
                ),
            ));
        }
        Ok(())
    }

    /// Joins the pid file, the log file and a Unix socket path to `cwd` where relative.
    pub fn make_paths_absolute(&mut self, cwd: &Path) {
        if self.pidfile.is_relative() {
            self.pidfile = cwd.join(&self.pidfile);
        }
        if let Some(logfile) = self.logfile.as_mut().filter(|p| p.is_relative()) {
            *logfile = cwd.join(&*logfile);
        }
        self.sockethandler.make_absolute(cwd);
    }

    /// Every key as JSON: durations as float seconds, the umask as an octal string such as
    /// `"027"`, unset options as `null`.
    ///
    /// `Config::from_json(&config.to_json())` gives back `config` whenever its paths are
    /// valid UTF-8 (other paths are converted lossily).
    pub fn to_json(&self) -> Value {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        json!({
            "sockethandler": self.sockethandler.to_string(),
            "pidfile": path(&self.pidfile),
            "socketbuffer": self.socketbuffer,
            "sockettimeout": secs(self.sockettimeout),
            "socketmaxconnections": self.socketmaxconnections,
            "niceness": self.niceness,
            "description": self.description,
            "logfile": self.logfile.as_deref().map(path),
            "umask": format!("{:03o}", self.umask),
            "shutdowntimeout": secs(self.shutdowntimeout),
            "maxrequestsize": self.maxrequestsize,
            "socketmaxoutput": self.socketmaxoutput,
            "socketmaxbatch": self.socketmaxbatch,
            "maxrequestvalues": self.maxrequestvalues,
            "socketidletimeout": secs(self.socketidletimeout),
            "socketmode": format!("{:04o}", self.socketmode),
            "socketpeers": self.socketpeers.to_json(),
            "socketallowremote": self.socketallowremote,
            "socketsecret": self.socketsecret,
            "socketallowunauthenticated": self.socketallowunauthenticated,
            "socketauthtimeout": secs(self.socketauthtimeout),
            "logformat": self.logformat.name(),
            "loglevel": level_name(self.loglevel),
            "loglines": self.loglines,
            "user": self.user,
            "group": self.group,
            "rlimits": self.rlimits.to_json(),
            "workers": self.workers,
            "app": self.app,
        })
    }
}

#[cfg(test)]
mod tests;
