//! Sends one message to the echo service and prints the reply.
//!
//! ```sh
//! cargo run -p ringlink-ipcc --example echo_client -- [--name NAME] [--transport shm|socket] MESSAGE
//! ```
//!
//! Connects with the protocol id `echo` over shared memory (the default)
//! or the socket transport (which must be the server's), prints the
//! server's reply alone on stdout and exits 0; with no server at `@NAME`
//! (default `ringlink-echo`), prints an error and exits 1.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use ringlink_ipcc::{Client, ConnectOptions, ServiceAddr, Transport};

fn main() -> ExitCode {
    let mut name = String::from("ringlink-echo");
    let mut opts = ConnectOptions::new("echo");
    let mut message = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--name" => match args.next() {
                Some(n) => name = n,
                None => return usage(),
            },
            "--transport" => match args.next().as_deref() {
                Some("shm") => opts.transport = Transport::Shm,
                Some("socket") => opts.transport = Transport::Socket,
                _ => return usage(),
            },
            _ if message.is_none() => message = Some(a),
            _ => return usage(),
        }
    }
    let Some(message) = message else {
        return usage();
    };
    let mut client = match Client::connect(&ServiceAddr::named(&name), &opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("echo_client: cannot connect to @{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut buf = vec![0u8; client.max_message()];
    match client.send_recv(
        0,
        message.as_bytes(),
        &mut buf,
        Some(Duration::from_secs(5)),
    ) {
        Ok(reply) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&buf[..reply.len]);
            let _ = out.write_all(b"\n");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("echo_client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: echo_client [--name NAME] [--transport shm|socket] MESSAGE");
    ExitCode::from(2)
}
