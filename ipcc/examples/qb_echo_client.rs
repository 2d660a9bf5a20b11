//! Calls a libqb server and prints its reply.
//!
//! ```sh
//! cargo run -p ringlink-ipcc --example qb_echo_client -- --name NAME [--id ID] MESSAGE
//! ```
//!
//! Connects to libqb service NAME (a server built on libqb, or ringlink's
//! `qb_echo_server`), sends MESSAGE as a request of id ID (default 1),
//! prints the response's payload alone on stdout and exits 0; with no
//! server, prints an error and exits 1.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use ringlink_ipcc::{Client, ConnectOptions};

fn main() -> ExitCode {
    let mut name = None;
    let mut id = 1;
    let mut message = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--name" => match args.next() {
                Some(n) => name = Some(n),
                None => return usage(),
            },
            "--id" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => id = n,
                None => return usage(),
            },
            _ if message.is_none() => message = Some(a),
            _ => return usage(),
        }
    }
    let (Some(name), Some(message)) = (name, message) else {
        return usage();
    };
    let mut client = match Client::connect_libqb(&name, &ConnectOptions::new("")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("qb_echo_client: cannot connect to libqb service {name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut buf = vec![0u8; client.max_message()];
    match client.send_recv(
        id,
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
            eprintln!("qb_echo_client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: qb_echo_client --name NAME [--id ID] MESSAGE");
    ExitCode::from(2)
}
