//! The daemon's command line: `-d -f -s -v -h`, `--socket`, `--pidfile`, `--config`, and the
//! user's own arguments next to them.

use std::path::PathBuf;

use argh::FromArgs;

use crate::error::{Error, Result};

/// The standard options of every daimon daemon.
#[derive(FromArgs, Debug, Default, Clone, PartialEq, Eq)]
pub struct Console {
    /// run as a daemon: detach, and return once the daemon is ready
    #[argh(switch, short = 'd')]
    pub daemon: bool,

    /// run in the foreground
    #[argh(switch, short = 'f')]
    pub foreground: bool,

    /// remove a stale pid file and socket before starting (refused while a daemon is alive)
    #[argh(switch, short = 's')]
    pub hardstart: bool,

    /// log at debug level
    #[argh(switch, short = 'v')]
    pub verbose: bool,

    /// control socket address, unix://PATH or tcp://HOST:PORT (overrides sockethandler)
    #[argh(option)]
    pub socket: Option<String>,

    /// pid file path (overrides pidfile)
    #[argh(option)]
    pub pidfile: Option<PathBuf>,

    /// a JSON file of configuration keys (overrides the configuration given in code)
    #[argh(option)]
    pub config: Option<PathBuf>,
}

/// No arguments beyond the standard ones.
#[derive(FromArgs, Debug, Default, Clone, PartialEq, Eq)]
pub struct NoArgs {}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed<A> {
    /// Print this text on standard output and exit 0 (`-h`, or neither `-d` nor `-f`).
    Help(String),
    /// Run with these options.
    Run(Console, A),
}

/// Options of [`Console`] that take a value.
const VALUED: &[&str] = &["--socket", "--pidfile", "--config"];
/// Switches of [`Console`], short and long.
const SWITCHES: &[&str] = &[
    "-d",
    "--daemon",
    "-f",
    "--foreground",
    "-s",
    "--hardstart",
    "-v",
    "--verbose",
];

/// Parses `args` (without the program name): the standard options go to [`Console`], every
/// other argument to `A`. `description` heads the help text.
///
/// # Errors
///
/// [`Error::Usage`] with argh's message and the usage.
pub fn parse<A: FromArgs>(program: &str, description: &str, args: &[String]) -> Result<Parsed<A>> {
    let mut standard: Vec<&str> = Vec::new();
    let mut extra: Vec<&str> = Vec::new();
    let mut help = args.is_empty();
    let mut iter = args.iter().map(String::as_str);
    while let Some(arg) = iter.next() {
        if arg == "-h" || arg == "--help" {
            help = true;
        } else if SWITCHES.contains(&arg) {
            standard.push(arg);
        } else if VALUED.contains(&arg) {
            standard.push(arg);
            match iter.next() {
                Some(value) => standard.push(value),
                None => return Err(usage_error(program, format!("{arg} needs a value"))),
            }
        } else if arg == "--" {
            extra.push(arg);
            extra.extend(iter.by_ref());
        } else {
            extra.push(arg);
        }
    }
    if help {
        return Ok(Parsed::Help(help_text::<A>(program, description)));
    }
    let console =
        Console::from_args(&[program], &standard).map_err(|e| usage_error(program, e.output))?;
    let user = A::from_args(&[program], &extra).map_err(|e| usage_error(program, e.output))?;
    if !console.daemon && !console.foreground {
        return Ok(Parsed::Help(help_text::<A>(program, description)));
    }
    Ok(Parsed::Run(console, user))
}

fn usage_error(program: &str, message: String) -> Error {
    Error::Usage(format!(
        "{}\nRun '{program} --help' for the options.",
        message.trim_end()
    ))
}

/// The help text: the description banner, the usage, the standard options, then `A`'s.
pub fn help_text<A: FromArgs>(program: &str, description: &str) -> String {
    let standard = early_output::<Console>(program);
    let usage = standard.lines().next().unwrap_or_default();
    let mut text = format!(
        "{description}\n\n{usage}\n\nOptions:{}",
        options_of(&standard)
    );
    let extra = options_of(&early_output::<A>(program));
    if !extra.trim().is_empty() {
        text.push_str("\n\nOptions of this daemon:");
        text.push_str(&extra);
    }
    text.push('\n');
    text
}

/// The option lines of argh's help output, without its own `--help` line.
fn options_of(help: &str) -> String {
    let Some(i) = help.find("Options:") else {
        return String::new();
    };
    let lines: Vec<&str> = help[i + "Options:".len()..]
        .lines()
        .filter(|l| !l.trim_start().starts_with("--help"))
        .collect();
    lines.join("\n").trim_end().to_owned()
}

fn early_output<A: FromArgs>(program: &str) -> String {
    match A::from_args(&[program], &["--help"]) {
        Ok(_) => String::new(),
        Err(e) => e.output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[derive(FromArgs, Debug, PartialEq)]
    /// Extra
    struct Extra {
        /// the directory to watch
        #[argh(option)]
        dir: Option<String>,
    }

    #[test]
    fn no_arguments_and_h_print_help_with_the_banner() {
        for a in [&[][..], &["-h"], &["-f", "--help"]] {
            match parse::<NoArgs>("echo", "Echo Daemon", &args(a)).unwrap() {
                Parsed::Help(text) => {
                    assert!(text.starts_with("Echo Daemon\n"), "{text}");
                    assert!(text.contains("--foreground"), "{text}");
                }
                other => panic!("{a:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn neither_d_nor_f_is_help() {
        assert!(matches!(
            parse::<NoArgs>("echo", "Echo", &args(&["-v"])).unwrap(),
            Parsed::Help(_)
        ));
    }

    #[test]
    fn standard_options_parse() {
        let a = args(&[
            "-f",
            "-v",
            "--socket",
            "tcp://127.0.0.1:1",
            "--pidfile",
            "x.pid",
            "-s",
        ]);
        match parse::<NoArgs>("echo", "Echo", &a).unwrap() {
            Parsed::Run(c, NoArgs {}) => {
                assert!(c.foreground && c.verbose && c.hardstart && !c.daemon);
                assert_eq!(c.socket.as_deref(), Some("tcp://127.0.0.1:1"));
                assert_eq!(c.pidfile, Some(PathBuf::from("x.pid")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn user_arguments_sit_next_to_the_standard_ones() {
        let a = args(&["--dir", "/tmp/x", "-d"]);
        match parse::<Extra>("copy", "Copy", &a).unwrap() {
            Parsed::Run(c, extra) => {
                assert!(c.daemon);
                assert_eq!(extra.dir.as_deref(), Some("/tmp/x"));
            }
            other => panic!("{other:?}"),
        }
        match parse::<Extra>("copy", "Copy Daemon", &args(&["-h"])).unwrap() {
            Parsed::Help(text) => {
                assert!(text.contains("Options of this daemon:"), "{text}");
                assert!(text.contains("--dir"), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_or_incomplete_options_are_usage_errors() {
        let e = parse::<NoArgs>("echo", "Echo", &args(&["-f", "--bogus"])).unwrap_err();
        assert!(e.to_string().contains("--bogus"), "{e}");
        let e = parse::<NoArgs>("echo", "Echo", &args(&["-f", "--socket"])).unwrap_err();
        assert!(e.to_string().contains("--socket needs a value"), "{e}");
    }
}
