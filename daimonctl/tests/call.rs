//! `daimonctl call` with named parameters and `daimonctl help` with the parameters' names,
//! against the `echo_daemon` example.

#[path = "../../tests/common/mod.rs"]
mod common;
mod ctl;

use common::{Foreground, TestDir};
use ctl::ctl;
use serde_json::Value;

#[test]
fn help_shows_description_and_signatures() {
    let dir = TestDir::new();
    let _daemon = Foreground::start(&dir, &[]);
    let out = ctl(&dir, &["help", "examples.echo"]);
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"I'm here to reply your data"),
        "{lines:?}"
    );
    // The parameters' names and types.
    assert!(
        lines.contains(&"string examples.echo(string message)"),
        "no signature line in {lines:?}"
    );
    let out = ctl(&dir, &["--json", "help", "examples.echo"]);
    out.assert_code(0);
    let help: Value = serde_json::from_str(&out.stdout).expect("help as JSON");
    assert_eq!(
        help["signatures"],
        serde_json::json!([["string", "string"]])
    );
    assert_eq!(
        help["params"],
        serde_json::json!([[{"name": "message", "type": "string"}]])
    );
    // A method of several signatures, one line each; a method without parameters.
    let out = ctl(&dir, &["help", "system.methodHelp"]);
    assert!(
        out.stdout
            .contains("string system.methodHelp(string method)"),
        "{}",
        out.stdout
    );
    let out = ctl(&dir, &["help", "system.listMethods"]);
    assert!(
        out.stdout.ends_with("array system.listMethods()\n"),
        "{}",
        out.stdout
    );
    ctl(&dir, &["help", "examples.nope"])
        .assert_code(1)
        .assert_stderr_has("examples.nope");
}

#[test]
fn call_takes_named_parameters() {
    let dir = TestDir::new();
    let _daemon = Foreground::start(&dir, &[]);
    let out = ctl(&dir, &["call", "examples.echo", "message=hello there"]);
    out.assert_code(0);
    assert_eq!(out.stdout, "hello there\n");
    // The value is JSON when it parses: 5 is a number, "5" a string.
    ctl(&dir, &["call", "examples.echo", "message=5"])
        .assert_code(1)
        .assert_stderr_has("-32602");
    let out = ctl(&dir, &["call", "examples.echo", "message=\"5\""]);
    assert_eq!(out.stdout, "5\n");
    // A wrong name: the daemon's error names the right one.
    ctl(&dir, &["call", "examples.echo", "msg=hi"])
        .assert_code(1)
        .assert_stderr_has("string message");
    // Positional as before, also a string holding '=' quoted as JSON.
    let out = ctl(&dir, &["call", "examples.echo", "\"a=b\""]);
    assert_eq!(out.stdout, "a=b\n");
    // Both forms at once: a usage error, nothing sent.
    ctl(&dir, &["call", "examples.echo", "message=hi", "x"])
        .assert_code(2)
        .assert_stderr_has("NAME=VALUE");
}
