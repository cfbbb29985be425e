//! The daemon's own logger put together: where it writes ([`Output`]), the format switch,
//! the ring tee, and the tee in front of a user's own logger.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use slog::{Drain, Logger, Never, OwnedKVList, Record, o};

use super::{Control, Counted, LogFile, drains, syslog};
use crate::error::Result;

/// Where the daemon's own logger writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Output {
    /// Standard error (the foreground); journal lines when `JOURNAL_STREAM` is set.
    Terminal { journal: bool },
    /// The `logfile`.
    File(PathBuf),
    /// The local syslog socket, with this ident.
    Syslog(String),
    /// Nowhere (a detached daemon with no logfile and no syslog).
    Discard,
}

impl Output {
    /// Where a daemon logs: the terminal in the foreground, else `logfile`, else syslog when
    /// `/dev/log` exists, else nowhere.
    pub(crate) fn choose(detached: bool, logfile: Option<&Path>, ident: &str) -> Output {
        if !detached {
            let journal = std::env::var("JOURNAL_STREAM").is_ok_and(|v| stderr_is(&v));
            return Output::Terminal { journal };
        }
        match logfile {
            Some(path) => Output::File(path.to_owned()),
            None if Path::new(syslog::DEV_LOG).exists() => Output::Syslog(ident.to_owned()),
            None => Output::Discard,
        }
    }

    /// What the launcher says at start about where the log goes.
    pub(crate) fn describe(&self) -> String {
        match self {
            Output::Terminal { journal: true } => "logging to the journal (stderr)".to_owned(),
            Output::Terminal { journal: false } => "logging to stderr".to_owned(),
            Output::File(path) => format!("logging to {}", path.display()),
            Output::Syslog(ident) => format!("logging to syslog (ident {ident})"),
            Output::Discard => {
                "no logfile and no syslog (/dev/log): logs are discarded; set logfile".to_owned()
            }
        }
    }
}

/// Whether standard error is the stream `JOURNAL_STREAM` names (`DEVICE:INODE`, as systemd
/// sets it): only then is it the journal, not a redirection a wrapper made.
fn stderr_is(journal_stream: &str) -> bool {
    let Some((dev, ino)) = journal_stream.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    nix::sys::stat::fstat(std::io::stderr()).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// The daemon's logger: `output` in the control's format at the level `-v` chose, teeing
/// every record into the daemon's ring; with the log file to reopen, if it writes one.
///
/// # Errors
///
/// [`Error::Path`](crate::Error::Path) if the log file cannot be opened, or
/// [`Error::Io`](crate::Error::Io) if the syslog socket cannot be reached.
pub(crate) fn build(
    output: &Output,
    verbose: bool,
    control: &Control,
) -> Result<(Logger, Option<LogFile>)> {
    if verbose {
        control.set_level(slog::Level::Debug);
    }
    let tee = drains::RingTee(control.clone());
    let (drain, file): (Box<dyn SendSyncDrain>, _) = match output {
        Output::Terminal { journal } => {
            let text: Box<dyn SendSyncDrain> = if *journal {
                Box::new(Counted(drains::Journal(Mutex::new(drains::Stderr))))
            } else if std::io::stderr().is_terminal() {
                let decorator = slog_term::TermDecorator::new().stderr().build();
                Box::new(Counted(Mutex::new(
                    slog_term::FullFormat::new(decorator).build(),
                )))
            } else {
                // Redirected (a file, a pipe, a container's log): the same text, each record
                // gathered and written in one call, not a call per field.
                let decorator = slog_term::PlainSyncDecorator::new(drains::Stderr);
                Box::new(Counted(slog_term::FullFormat::new(decorator).build()))
            };
            let json = drains::json(drains::Stderr);
            (Box::new(switch(control, text, json)), None)
        }
        Output::File(path) => {
            let file = LogFile::open(path)?;
            let decorator = slog_term::PlainSyncDecorator::new(file.clone());
            let text = slog_term::FullFormat::new(decorator).build();
            let json = drains::json(file.clone());
            (Box::new(switch(control, text, json)), Some(file))
        }
        Output::Syslog(ident) => {
            let path = Path::new(syslog::DEV_LOG);
            let socket = syslog::Syslog::connect(path, ident)
                .map_err(|e| crate::Error::path(path, "connecting to syslog at", e))?;
            (Box::new(Counted(socket)), None)
        }
        Output::Discard => (Box::new(slog::Discard), None),
    };
    let drain = AtLevel(control.clone(), slog::Duplicate(tee, Forward(drain)));
    Ok((Logger::root(Counted(drain), o!()), file))
}

/// Passes on the records at the control's level or more severe: the level can change at
/// run time (`loglevel` at a reload).
struct AtLevel<D>(Control, D);

impl<D: Drain> Drain for AtLevel<D> {
    type Ok = Option<D::Ok>;
    type Err = D::Err;

    fn log(
        &self,
        record: &Record<'_>,
        values: &OwnedKVList,
    ) -> std::result::Result<Self::Ok, Self::Err> {
        if record.level().is_at_least(self.0.level()) {
            self.1.log(record, values).map(Some)
        } else {
            Ok(None)
        }
    }

    fn is_enabled(&self, level: slog::Level) -> bool {
        level.is_at_least(self.0.level()) && self.1.is_enabled(level)
    }
}

/// The user's own logger (`with_logger`), with the daemon's ring teed in front of it so
/// `daemon.log` still works; the user's logger keeps its own format, destination and level.
pub(crate) fn tee_custom(user: Logger, control: &Control) -> Logger {
    let drain = slog::Duplicate(drains::RingTee(control.clone()), Forward(Box::new(user)));
    Logger::root(Counted(drain), o!())
}

/// A boxed drain that never fails (its failures counted inside).
trait SendSyncDrain:
    Drain<Ok = (), Err = Never> + Send + Sync + std::panic::RefUnwindSafe + std::panic::UnwindSafe
{
}

impl<D> SendSyncDrain for D where
    D: Drain<Ok = (), Err = Never>
        + Send
        + Sync
        + std::panic::RefUnwindSafe
        + std::panic::UnwindSafe
{
}

struct Forward(Box<dyn SendSyncDrain>);

impl Drain for Forward {
    type Ok = ();
    type Err = Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> std::result::Result<(), Never> {
        self.0.log(record, values)
    }
}

pub(super) fn switch<T: Drain, J: Drain>(
    control: &Control,
    text: T,
    json: J,
) -> Counted<drains::Switch<T, J>> {
    Counted(drains::Switch {
        control: control.clone(),
        text,
        json,
    })
}
