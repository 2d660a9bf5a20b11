//! The echo service as a tokio task: each request is answered by a task
//! of its own (asynchronous completion through a clone of the
//! connection), and Ctrl-C shuts the service down gracefully.
//!
//! ```sh
//! cargo run -p ringlink-ipcs --features tokio --example async_echo_server [-- --name NAME]
//! ```
//!
//! Listens on the abstract socket `@NAME` (default `ringlink-echo`);
//! any echo client works with it (`echo_client`, `async_echo_client`,
//! `async_many_tasks`).

use std::process::ExitCode;

use ringlink_ipcs::{Connection, Handler, Request, Service, ServiceAddr, ServiceOptions};

struct Echo;

impl Handler for Echo {
    fn message(&self, conn: &Connection, req: &Request<'_>) {
        // The request lives in the ring only during this call: copy it
        // out, answer from a task.
        let (conn, seq, id, payload) = (conn.clone(), req.seq(), req.id(), req.payload().to_vec());
        tokio::spawn(async move {
            if let Err(e) = conn.respond(seq, id, &payload) {
                eprintln!("client {}: cannot respond: {e}", conn.id());
            }
        });
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut name = String::from("ringlink-echo");
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--name", Some(n)) => name = n,
            _ => {
                eprintln!("usage: async_echo_server [--name NAME]");
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
            eprintln!("async_echo_server: cannot listen on @{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("async_echo_server: listening on @{name}; Ctrl-C stops");
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match service.run_until(ctrl_c).await {
        Ok(()) => {
            eprintln!("async_echo_server: shut down");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("async_echo_server: {e}");
            ExitCode::FAILURE
        }
    }
}
