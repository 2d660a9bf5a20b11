//! An echo service: answers every request with its own payload.
//!
//! ```sh
//! cargo run -p ringlink-ipcs --example echo_server [-- --name NAME]
//! ```
//!
//! Listens on the abstract socket `@NAME` (default `ringlink-echo`) until
//! SIGINT or SIGTERM, then closes every connection and exits.

use std::process::ExitCode;

use ringlink_ipcs::{Connection, Handler, Request, Service, ServiceAddr, ServiceOptions};

struct Echo;

impl Handler for Echo {
    fn connection_created(&self, conn: &Connection) {
        let c = conn.credentials();
        eprintln!(
            "client {} connected (pid {}, uid {})",
            conn.id(),
            c.pid,
            c.uid
        );
    }

    fn message(&self, conn: &Connection, req: &Request<'_>) {
        if let Err(e) = conn.respond(req.seq(), req.id(), req.payload()) {
            eprintln!("client {}: cannot respond: {e}", conn.id());
        }
    }

    fn connection_closed(&self, conn: &Connection) {
        eprintln!("client {} disconnected", conn.id());
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut name = String::from("ringlink-echo");
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--name", Some(n)) => name = n,
            _ => {
                eprintln!("usage: echo_server [--name NAME]");
                return ExitCode::from(2);
            }
        }
    }
    let mut service = match Service::bind(
        ServiceAddr::named(&name),
        "echo",
        ServiceOptions::default(),
        Echo,
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo_server: cannot listen on @{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = service.shutdown_handle();
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo_server: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            handle.shutdown();
        }
    });
    eprintln!("echo_server: listening on @{name}");
    if let Err(e) = service.run() {
        eprintln!("echo_server: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("echo_server: shut down");
    ExitCode::SUCCESS
}
