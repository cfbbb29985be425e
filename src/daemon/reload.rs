//! Reloading the configuration (SIGHUP, `daemon.reload`): the `--config` file is read again
//! over the running configuration, with the command line's overrides on top; the whole
//! result is checked first, so a bad file changes nothing. Keys that can change at run time
//! are applied; the others are reported as needing a restart and keep their running value.

use std::path::PathBuf;

use serde_json::Value;

use crate::config::Config;
use crate::error::{Error, Result};

/// Keys a reload applies. The socket's limits and timeouts apply to the connections
/// accepted from then on; `shutdowntimeout` to the next stop; `workers` to each worker's next
/// exit (its restart policy) and next start (its process settings).
const AT_RUN_TIME: &[&str] = &[
    "socketbuffer",
    "sockettimeout",
    "socketmaxconnections",
    "maxrequestsize",
    "socketmaxoutput",
    "socketmaxbatch",
    "maxrequestvalues",
    "socketidletimeout",
    "socketauthtimeout",
    "socketsecret",
    "shutdowntimeout",
    "description",
    "logformat",
    "loglevel",
    "loglines",
    "workers",
    "app",
];

/// Checks the `app` section against the declared application keys.
pub(crate) type AppCheck = Box<dyn Fn(&serde_json::Map<String, Value>) -> Result<()>>;

/// What a reload needs to know of the start: the file, the command line's overrides, the
/// launch directory, and the application's declared keys.
pub(crate) struct Source {
    pub(crate) file: Option<PathBuf>,
    pub(crate) socket: Option<String>,
    pub(crate) pidfile: Option<PathBuf>,
    pub(crate) cwd: PathBuf,
    pub(crate) app: AppCheck,
    /// `-v`: debug level whatever `loglevel` says.
    pub(crate) verbose: bool,
}

impl Default for Source {
    fn default() -> Self {
        Source {
            file: None,
            socket: None,
            pidfile: None,
            cwd: PathBuf::from("/"),
            app: Box::new(|_| Ok(())),
            verbose: false,
        }
    }
}

/// A reload's outcome: the configuration to run with, and which keys changed.
pub(crate) struct Outcome {
    pub(crate) config: Config,
    pub(crate) applied: Vec<String>,
    pub(crate) restart_needed: Vec<String>,
}

impl Source {
    /// The configuration `running` becomes: the file over it, the overrides over that, the
    /// keys that cannot change at run time put back.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] or [`Error::Path`] naming the key or the file; nothing is applied.
    pub(crate) fn reload(&self, running: &Config) -> Result<Outcome> {
        let mut read = running.clone();
        if let Some(file) = &self.file {
            read.load_file(file)?;
        }
        if let Some(socket) = &self.socket {
            read.set("sockethandler", &socket.as_str().into())?;
        }
        if let Some(pidfile) = &self.pidfile {
            read.set("pidfile", &pidfile.to_string_lossy().as_ref().into())?;
        }
        read.make_paths_absolute(&self.cwd);
        read.validate()?;
        (self.app)(&read.app)?;
        let (old, new) = (running.to_json(), read.to_json());
        let mut config = running.clone();
        let (mut applied, mut restart_needed) = (Vec::new(), Vec::new());
        for &key in Config::KEYS {
            if old.get(key) == new.get(key) {
                continue;
            }
            if AT_RUN_TIME.contains(&key) {
                let value = new.get(key).unwrap_or(&Value::Null);
                config
                    .set(key, value)
                    .map_err(|e| Error::config(key, format!("cannot apply: {e}")))?;
                applied.push(key.to_owned());
            } else {
                restart_needed.push(key.to_owned());
            }
        }
        // The mix of old and new keys must hold together too (a tcp secret removed while
        // the socket, which needs it, stays).
        config.validate()?;
        Ok(Outcome {
            config,
            applied,
            restart_needed,
        })
    }

    /// Whether there is a file to read again.
    pub(crate) fn has_file(&self) -> bool {
        self.file.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source(dir: &std::path::Path, file: Value) -> Source {
        let path = dir.join("c.json");
        std::fs::write(&path, file.to_string()).unwrap();
        Source {
            file: Some(path),
            cwd: dir.to_owned(),
            ..Source::default()
        }
    }

    #[test]
    fn run_time_keys_apply_and_the_others_wait_for_a_restart() {
        let dir = std::env::temp_dir().join(format!("daimon-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut running = Config::default();
        running.make_paths_absolute(&dir);
        let s = source(
            &dir,
            json!({"socketmaxconnections": 3, "sockethandler": "unix://other.sock", "umask": "077"}),
        );
        let out = s.reload(&running).unwrap();
        assert_eq!(out.applied, ["socketmaxconnections"]);
        assert_eq!(out.restart_needed, ["sockethandler", "umask"]);
        assert_eq!(out.config.socketmaxconnections, 3);
        assert_eq!(out.config.sockethandler, running.sockethandler);
        assert_eq!(out.config.umask, running.umask);

        // A bad file names the key, and nothing is taken from it.
        let s = source(&dir, json!({"socketmaxconnections": 2, "sockettimeout": 0}));
        let e = s.reload(&running).err().unwrap().to_string();
        assert!(e.contains("sockettimeout"), "{e}");
        let s = source(&dir, json!({"socketmaxconections": 2}));
        let e = s.reload(&running).err().unwrap().to_string();
        assert!(e.contains("socketmaxconections"), "{e}");
        std::fs::write(dir.join("c.json"), "{\"socketbuffer\": ").unwrap();
        let e = s.reload(&running).err().unwrap().to_string();
        assert!(e.contains("c.json"), "{e}");
        // The application's check runs on the result.
        let s = Source {
            app: Box::new(|app| match app.get("threshold") {
                Some(v) if !v.is_u64() => Err(Error::config("app.threshold", "an integer")),
                _ => Ok(()),
            }),
            ..source(&dir, json!({"app": {"threshold": "high"}}))
        };
        let e = s.reload(&running).err().unwrap().to_string();
        assert!(e.contains("app.threshold"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
