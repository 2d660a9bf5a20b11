//! The counter's command line: adds to the counter or reads it.
//!
//! ```sh
//! cargo run -p ringlink --features typed --example counter_cli -- [--name NAME] incr [BY] | get
//! ```
//!
//! Waits up to 2 s for the daemon (`counter_daemon`, run by the same
//! user) to appear, then prints the counter's value. Exit codes: 0 done;
//! 1 no daemon (none within 2 s, or one of another user, or it refused
//! us); 2 bad arguments; 3 the request failed (the counter would
//! overflow, the daemon went away).

use std::process::ExitCode;
use std::time::Duration;

use ringlink::client::{Client, ConnectOptions};
use ringlink::typed::{TypedClient, TypedError};
use ringlink::Credentials;

#[path = "counter/protocol.rs"]
mod protocol;
use protocol::{Get, Incr, OVERFLOW, PROTOCOL};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let addr = protocol::address(&mut args);
    let incr = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["get"] => None,
        ["incr"] => Some(1),
        ["incr", by] => match by.parse() {
            Ok(by) => Some(by),
            Err(_) => return usage(),
        },
        _ => return usage(),
    };
    let opts = ConnectOptions::new(PROTOCOL)
        .wait_for_server(true)
        .server_wait(Duration::from_secs(2))
        // Our own user's daemon, not whoever took the name first.
        .server_uid(Some(Credentials::current().uid));
    let mut client = match Client::connect(&addr, &opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("counter_cli: no counter daemon at {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let timeout = Some(Duration::from_secs(5));
    let answer = match incr {
        Some(by) => client.call(&Incr { by }, timeout),
        None => client.call(&Get, timeout),
    };
    match answer {
        Ok(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Err(TypedError::App(e)) if e.code() == OVERFLOW => {
            let value: i64 = e.detail().unwrap_or_default();
            eprintln!("counter_cli: the counter ({value}) would overflow");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("counter_cli: {e}");
            ExitCode::from(3)
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: counter_cli [--name NAME] incr [BY] | get");
    ExitCode::from(2)
}
