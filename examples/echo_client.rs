//! The ancestor's echo client: calls `examples.echo` on the `echo_daemon` example, once
//! over JSON-RPC and once over MessagePack-RPC.
//!
//! ```text
//! cargo run --example echo_daemon -- -f &
//! cargo run --example echo_client
//! cargo run --example echo_client -- unix:///tmp/echo.sock "Hello again"
//! ```

use std::process::ExitCode;
use std::time::Duration;

use daimon::client::{Client, Protocol};
use serde_json::{Value, json};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "unix://daemon.sock".into());
    let message = args.next().unwrap_or_else(|| "Hello, daimon".into());
    match run(&address, &message) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(address: &str, message: &str) -> daimon::Result<()> {
    // JSON-RPC 2.0, newline-delimited, with the default 5 s timeout.
    let mut client = Client::connect(address)?;
    let reply = client.call("examples.echo", json!([message]))?;
    println!("JSON-RPC:        {}", text(&reply));

    // The same call over MessagePack-RPC.
    let address = address.parse()?;
    let mut client = Client::connect_with(&address, Protocol::MessagePack, Duration::from_secs(5))?;
    let reply = client.call("examples.echo", json!([message]))?;
    println!("MessagePack-RPC: {}", text(&reply));
    Ok(())
}

/// A string reply as it is, anything else as JSON.
fn text(reply: &Value) -> String {
    match reply {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
