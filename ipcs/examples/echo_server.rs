//! An echo service: answers every request with its own payload.
//!
//! ```sh
//! cargo run -p ringlink-ipcs --example echo_server [-- --name NAME] [--transport shm|socket]
//! ```
//!
//! Listens on the abstract socket `@NAME` (default `ringlink-echo`) for
//! clients of the protocol id `echo`, over shared-memory rings (the
//! default) or the socket transport, until SIGINT or SIGTERM, then
//! closes every connection and exits. A client written from
//! `docs/PROTOCOL.md` can be tried against both transports with it.

use std::process::ExitCode;

use ringlink_ipcs::{
    Connection, Handler, Request, Service, ServiceAddr, ServiceOptions, Transport,
};

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
    let mut opts = ServiceOptions::default();
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().as_deref()) {
            ("--name", Some(n)) => name = n.to_owned(),
            ("--transport", Some("shm")) => opts.transport = Transport::Shm,
            ("--transport", Some("socket")) => opts.transport = Transport::Socket,
            _ => {
                eprintln!("usage: echo_server [--name NAME] [--transport shm|socket]");
                return ExitCode::from(2);
            }
        }
    }
    let mut service = match Service::bind(ServiceAddr::named(&name), "echo", opts, Echo) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("echo_server: cannot listen on @{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = service.control_handle();
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
