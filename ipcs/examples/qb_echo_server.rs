//! An echo service for libqb's clients: answers every request with a
//! response of the same id and payload.
//!
//! ```sh
//! cargo run -p ringlink-ipcs --example qb_echo_server -- --name NAME [--transport shm|socket]
//! ```
//!
//! Serves programs linked with libqb that call
//! `qb_ipcc_connect("NAME", ...)`, over libqb's shared-memory transport
//! (its default) or its socket transport, until SIGINT or SIGTERM, then
//! closes every connection and exits (`docs/LIBQB.md`).

use std::process::ExitCode;

use ringlink_ipcs::{Connection, Handler, QbTransport, Request, Service, ServiceOptions};

struct Echo;

impl Handler for Echo {
    fn connection_created(&self, conn: &Connection) {
        let c = conn.credentials();
        eprintln!(
            "libqb client {} connected (pid {}, uid {})",
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
        eprintln!("libqb client {} disconnected", conn.id());
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut name = None;
    let mut transport = QbTransport::Shm;
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().as_deref()) {
            ("--name", Some(n)) => name = Some(n.to_owned()),
            ("--transport", Some("shm")) => transport = QbTransport::Shm,
            ("--transport", Some("socket")) => transport = QbTransport::Socket,
            _ => return usage(),
        }
    }
    let Some(name) = name else {
        return usage();
    };
    let mut service = match Service::unbound("echo", ServiceOptions::default(), Echo) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("qb_echo_server: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = service.listen_libqb(&name, transport) {
        eprintln!("qb_echo_server: cannot listen on libqb name {name}: {e}");
        return ExitCode::FAILURE;
    }
    let handle = service.control_handle();
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("qb_echo_server: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            handle.shutdown();
        }
    });
    eprintln!("qb_echo_server: listening on libqb name {name}");
    if let Err(e) = service.run() {
        eprintln!("qb_echo_server: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("qb_echo_server: shut down");
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("usage: qb_echo_server --name NAME [--transport shm|socket]");
    ExitCode::from(2)
}
