//! The async echo client: sends one message to the echo service from a
//! tokio task and prints the reply. (`async_many_tasks` shares one
//! connection between many tasks; `event_watcher` prints a service's
//! events.)
//!
//! ```sh
//! cargo run -p ringlink-ipcc --features tokio --example async_echo_client -- [--name NAME] MESSAGE
//! ```
//!
//! Prints the reply alone on stdout and exits 0; with no server at
//! `@NAME` (default `ringlink-echo`), prints an error and exits 1.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use ringlink_ipcc::{AsyncClient, ConnectOptions, ServiceAddr};

#[tokio::main]
async fn main() -> ExitCode {
    let mut name = String::from("ringlink-echo");
    let mut message = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--name" => match args.next() {
                Some(n) => name = n,
                None => return usage(),
            },
            _ if message.is_none() => message = Some(a),
            _ => return usage(),
        }
    }
    let Some(message) = message else {
        return usage();
    };
    let addr = ServiceAddr::named(&name);
    let client = match AsyncClient::connect(&addr, &ConnectOptions::new("echo")).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("async_echo_client: cannot connect to @{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        client.send_recv(0, message.as_bytes()),
    );
    match reply.await {
        Ok(Ok(reply)) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&reply.payload);
            let _ = out.write_all(b"\n");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("async_echo_client: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("async_echo_client: no reply within 5 s");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: async_echo_client [--name NAME] MESSAGE");
    ExitCode::from(2)
}
