//! The standard POSIX signals by number and canonical name, and which ones daimon never
//! catches.

use nix::libc;

/// Signals daimon never catches: faults (handling them hides the crash) and job control
/// (catching them breaks the terminal), plus the two that cannot be caught at all.
pub const NEVER_CAUGHT: &[i32] = &[
    libc::SIGKILL,
    libc::SIGSTOP,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

/// Canonical names of the standard signals (never the aliases SIGIOT, SIGCLD, SIGPOLL).
pub(super) const NAMES: &[(i32, &str)] = &[
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGILL, "SIGILL"),
    (libc::SIGTRAP, "SIGTRAP"),
    (libc::SIGABRT, "SIGABRT"),
    (libc::SIGBUS, "SIGBUS"),
    (libc::SIGFPE, "SIGFPE"),
    (libc::SIGKILL, "SIGKILL"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGSEGV, "SIGSEGV"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGPIPE, "SIGPIPE"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGTERM, "SIGTERM"),
    #[cfg(any(target_os = "linux", target_os = "android"))]
    (libc::SIGSTKFLT, "SIGSTKFLT"),
    (libc::SIGCHLD, "SIGCHLD"),
    (libc::SIGCONT, "SIGCONT"),
    (libc::SIGSTOP, "SIGSTOP"),
    (libc::SIGTSTP, "SIGTSTP"),
    (libc::SIGTTIN, "SIGTTIN"),
    (libc::SIGTTOU, "SIGTTOU"),
    (libc::SIGURG, "SIGURG"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGXFSZ, "SIGXFSZ"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGWINCH, "SIGWINCH"),
    (libc::SIGIO, "SIGIO"),
    #[cfg(any(target_os = "linux", target_os = "android"))]
    (libc::SIGPWR, "SIGPWR"),
    (libc::SIGSYS, "SIGSYS"),
];

/// A POSIX signal: its number and canonical name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Signal {
    number: i32,
    name: &'static str,
}

impl Signal {
    /// `SIGHUP`.
    pub const HUP: Signal = Signal {
        number: libc::SIGHUP,
        name: "SIGHUP",
    };
    /// `SIGINT`.
    pub const INT: Signal = Signal {
        number: libc::SIGINT,
        name: "SIGINT",
    };
    /// `SIGQUIT`.
    pub const QUIT: Signal = Signal {
        number: libc::SIGQUIT,
        name: "SIGQUIT",
    };
    /// `SIGKILL`.
    pub const KILL: Signal = Signal {
        number: libc::SIGKILL,
        name: "SIGKILL",
    };
    /// `SIGUSR1`.
    pub const USR1: Signal = Signal {
        number: libc::SIGUSR1,
        name: "SIGUSR1",
    };
    /// `SIGUSR2`.
    pub const USR2: Signal = Signal {
        number: libc::SIGUSR2,
        name: "SIGUSR2",
    };
    /// `SIGPIPE`.
    pub const PIPE: Signal = Signal {
        number: libc::SIGPIPE,
        name: "SIGPIPE",
    };
    /// `SIGALRM`.
    pub const ALRM: Signal = Signal {
        number: libc::SIGALRM,
        name: "SIGALRM",
    };
    /// `SIGTERM`.
    pub const TERM: Signal = Signal {
        number: libc::SIGTERM,
        name: "SIGTERM",
    };
    /// `SIGCHLD`.
    pub const CHLD: Signal = Signal {
        number: libc::SIGCHLD,
        name: "SIGCHLD",
    };
    /// `SIGCONT`.
    pub const CONT: Signal = Signal {
        number: libc::SIGCONT,
        name: "SIGCONT",
    };
    /// `SIGWINCH`.
    pub const WINCH: Signal = Signal {
        number: libc::SIGWINCH,
        name: "SIGWINCH",
    };

    /// The signal with this number, if it is a standard signal.
    pub fn from_number(number: i32) -> Option<Signal> {
        NAMES
            .iter()
            .find(|(n, _)| *n == number)
            .map(|&(number, name)| Signal { number, name })
    }

    /// The signal with this name (`SIGTERM` or `TERM`; aliases such as `SIGCLD` are accepted).
    pub fn from_name(name: &str) -> Option<Signal> {
        let bare = name.strip_prefix("SIG").unwrap_or(name);
        let canonical = match bare {
            "IOT" => "ABRT",
            "CLD" => "CHLD",
            "POLL" => "IO",
            other => other,
        };
        NAMES
            .iter()
            .find(|(_, n)| &n[3..] == canonical)
            .map(|&(number, name)| Signal { number, name })
    }

    /// Every standard signal daimon can catch.
    pub fn catchable() -> impl Iterator<Item = Signal> {
        NAMES
            .iter()
            .filter(|(n, _)| !NEVER_CAUGHT.contains(n))
            .map(|&(number, name)| Signal { number, name })
    }

    /// The signal number.
    pub fn number(self) -> i32 {
        self.number
    }

    /// The canonical name, e.g. `SIGCHLD`.
    pub fn name(self) -> &'static str {
        self.name
    }

    /// Whether daimon may catch this signal.
    pub fn is_catchable(self) -> bool {
        !NEVER_CAUGHT.contains(&self.number)
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}
