//! The one error type of the crate.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// The error type a `setup()` step, a worker's `spinup` may return: anything that displays.
pub type SetupError = Box<dyn std::error::Error>;

/// A `Result` whose error is daimon's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in daimon.
///
/// Messages are lowercase, without a trailing period, and name the file, key or value
/// involved, so they can be shown to an operator as they are.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error with no more context than the operation itself.
    Io(io::Error),
    /// An I/O error on a file: the path, what was being done, and the error.
    Path {
        /// The file or directory involved.
        path: PathBuf,
        /// What was being done, e.g. "creating pid file".
        doing: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// A configuration key or value was refused.
    Config {
        /// The key at fault.
        key: String,
        /// What was wrong and what was expected.
        message: String,
    },
    /// The command line could not be parsed.
    Usage(String),
    /// Another daemon holds the pid file lock.
    AlreadyRunning {
        /// The locked pid file.
        path: PathBuf,
        /// The pid written in it, when readable.
        pid: Option<i32>,
    },
    /// The control socket address is already served by a live process.
    SocketInUse(String),
    /// A subscription pattern is malformed (a `*` anywhere but at the end).
    BadPattern(String),
    /// A subscription token that is not (or no longer) subscribed.
    UnknownSubscription(u64),
    /// A timer that is not (or no longer) armed.
    UnknownTimer(u64),
    /// A signal that daimon never catches (SIGSEGV, SIGBUS, SIGFPE, SIGILL, job control...).
    UncatchableSignal(i32),
    /// The niceness could not be applied.
    Niceness {
        /// The niceness asked for.
        value: i32,
        /// The underlying error.
        source: io::Error,
    },
    /// The process has more than one thread where daimon needs exactly one (before `fork`).
    Threaded(usize),
    /// The user's `setup()` failed.
    Setup(String),
    /// The daemon process reported an error to its launcher before becoming ready.
    Daemon(String),
    /// An RPC call was answered with an error.
    Rpc {
        /// The error code (JSON-RPC's, or the handler's own).
        code: i64,
        /// The error message.
        message: String,
        /// The error's data, if any.
        data: Option<serde_json::Value>,
    },
    /// A peer broke the protocol (a malformed or unexpected reply).
    Protocol(String),
    /// An RPC method of that name is registered already.
    DuplicateMethod(String),
    /// A worker of that name is installed already (or the name is empty).
    DuplicateWorker(String),
    /// A request about a worker was refused: which worker, and why.
    Worker {
        /// The worker's name.
        name: String,
        /// Why the request was refused.
        kind: WorkerError,
    },
}

/// Why a request about a worker was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerError {
    /// No worker has that name.
    Unknown,
    /// It runs already (for a start).
    Running,
    /// It does not run (for a stop, a command, a pause).
    NotRunning,
    /// The daemon is stopping: no worker starts any more.
    ShuttingDown,
    /// The daemon has not started its workers yet.
    NotStarted,
    /// The command name is the supervisor's own (`stop`, `pause`, `resume`...): use the
    /// matching `worker.*` method.
    Reserved(String),
    /// The worker's ring is full now: nothing was sent; send again later (the other end
    /// reads a bounded amount per turn, and the daemon nothing while its bus is backed up).
    Full,
    /// The worker's channel refused the message for good (too large, too deep).
    Channel(String),
    /// It did not acknowledge in time, or exited before it did.
    NoAck(String),
    /// It did not reply to a call (`worker.call`) in time, or exited before it did.
    NoReply(String),
    /// This many calls wait for its replies already, the most allowed: call again later.
    TooManyCalls(usize),
    /// Forking or registering the worker failed.
    Spawn(String),
    /// The worker's settings are invalid (a zero looptime...).
    Invalid(String),
}

impl fmt::Display for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerError::Unknown => write!(f, "no such worker"),
            WorkerError::Running => write!(f, "it is running"),
            WorkerError::NotRunning => write!(f, "it is not running"),
            WorkerError::ShuttingDown => write!(f, "the daemon is stopping"),
            WorkerError::NotStarted => write!(f, "workers start with the daemon"),
            WorkerError::Reserved(c) => write!(
                f,
                "'{c}' is the supervisor's own command: call worker.{c} instead"
            ),
            WorkerError::Full => write!(f, "its channel is full: send again later"),
            WorkerError::Channel(e) => write!(f, "its channel refused the message: {e}"),
            WorkerError::NoAck(e) => write!(f, "{e}"),
            WorkerError::NoReply(e) => write!(f, "{e}"),
            WorkerError::TooManyCalls(n) => write!(
                f,
                "{n} calls wait for its replies already, the most allowed: call again later"
            ),
            WorkerError::Spawn(e) => write!(f, "cannot start it: {e}"),
            WorkerError::Invalid(e) => write!(f, "{e}"),
        }
    }
}

impl Error {
    /// Builds an [`Error::Path`].
    pub fn path(path: impl Into<PathBuf>, doing: &'static str, source: io::Error) -> Self {
        Error::Path {
            path: path.into(),
            doing,
            source,
        }
    }

    /// Builds an [`Error::Config`].
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Path {
                path,
                doing,
                source,
            } => {
                write!(f, "{doing} {}: {source}", path.display())
            }
            Error::Config { key, message } => write!(f, "configuration key '{key}': {message}"),
            Error::Usage(m) => write!(f, "{m}"),
            Error::AlreadyRunning { path, pid } => match pid {
                Some(pid) => write!(
                    f,
                    "already running: pid {pid} holds the lock on {}",
                    path.display()
                ),
                None => write!(
                    f,
                    "already running: another process holds the lock on {}",
                    path.display()
                ),
            },
            Error::SocketInUse(a) => write!(f, "socket {a} is in use by a live process"),
            Error::BadPattern(p) => write!(
                f,
                "bad subscription pattern '{p}': '*' may only end a pattern"
            ),
            Error::UnknownSubscription(id) => write!(f, "no subscription with token {id}"),
            Error::UnknownTimer(id) => write!(f, "no timer with id {id}"),
            Error::UncatchableSignal(s) => write!(f, "signal {s} is never caught by daimon"),
            Error::Niceness { value, source } => {
                write!(f, "setting niceness to {value}: {source}")?;
                if source.kind() == io::ErrorKind::PermissionDenied {
                    write!(f, " (lowering niceness needs root or CAP_SYS_NICE)")?;
                }
                Ok(())
            }
            Error::Threaded(n) => write!(
                f,
                "the process has {n} threads; daimon forks and must be single-threaded"
            ),
            Error::Setup(m) => write!(f, "setup failed: {m}"),
            Error::Daemon(m) => write!(f, "{m}"),
            Error::Rpc {
                code,
                message,
                data,
            } => {
                write!(f, "{message} ({code})")?;
                match data {
                    Some(serde_json::Value::String(d)) => write!(f, ": {d}"),
                    Some(d) => write!(f, ": {d}"),
                    None => Ok(()),
                }
            }
            Error::Protocol(m) => write!(f, "protocol error: {m}"),
            Error::DuplicateMethod(m) => write!(f, "method '{m}' is already registered"),
            Error::DuplicateWorker(w) if w.is_empty() => write!(f, "a worker needs a name"),
            Error::DuplicateWorker(w) => write!(f, "a worker named '{w}' is already installed"),
            Error::Worker {
                name,
                kind: WorkerError::Unknown,
            } => write!(f, "no worker named '{name}'"),
            Error::Worker { name, kind } => write!(f, "worker '{name}': {kind}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Path { source, .. } | Error::Niceness { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::Io(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_failed() {
        let e = Error::Niceness {
            value: -5,
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert!(e.to_string().starts_with("setting niceness to -5: "), "{e}");
        assert!(e.to_string().contains("CAP_SYS_NICE"), "{e}");
        let e = Error::path(
            "/run/x.pid",
            "opening pid file",
            io::ErrorKind::NotFound.into(),
        );
        assert_eq!(
            e.to_string(),
            "opening pid file /run/x.pid: entity not found"
        );
        assert!(std::error::Error::source(&e).is_some());
        let e = Error::AlreadyRunning {
            path: "/run/x.pid".into(),
            pid: Some(42),
        };
        assert_eq!(
            e.to_string(),
            "already running: pid 42 holds the lock on /run/x.pid"
        );
    }
}
