//! The counter daemon: INCR, GET and SUBSCRIBE for clients of its own
//! user; on Ctrl-C (or SIGTERM), it closes every connection, prints its
//! statistics and exits.
//!
//! ```sh
//! cargo run -p ringlink --features typed --example counter_daemon [-- --name NAME]
//! ```
//!
//! Listens at the abstract name NAME (default `ringlink-counter`). Exit
//! codes: 0 after a signal, 1 if it cannot listen (another process holds
//! the name: it says which), 2 for bad arguments. Its clients:
//! `counter_cli` and `counter_watch`.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use ringlink::server::{Connection, Dispatch, EventQueue, Handler, QueuePolicy, Reject, Request};
use ringlink::server::{Service, ServiceOptions};
use ringlink::typed::{AppError, TypedConnection, TypedDispatch};
use ringlink::Credentials;
use signal_hook::consts::{SIGINT, SIGTERM};

#[path = "counter/protocol.rs"]
mod protocol;
use protocol::{Changed, Get, Incr, Subscribe, OVERFLOW, PROTOCOL};

#[derive(Default)]
struct Counter {
    value: i64,
    increments: u64,
    subscribers: Vec<Connection>,
}

/// The uid check, then the typed routes.
struct Daemon {
    uid: u32,
    routes: Dispatch,
}

impl Handler for Daemon {
    fn accept(&self, client: &Credentials) -> Result<(), Reject> {
        if client.uid == self.uid {
            Ok(())
        } else {
            Err(Reject::PermissionDenied)
        }
    }

    fn message(&self, conn: &Connection, req: &Request<'_>) {
        self.routes.dispatch(conn, req);
    }
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let addr = protocol::address(&mut args);
    if !args.is_empty() {
        eprintln!("usage: counter_daemon [--name NAME]");
        return ExitCode::from(2);
    }
    // Caught from the start: a signal during start-up stops the service.
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("counter_daemon: cannot catch signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let counter = Arc::new(Mutex::new(Counter::default()));
    let (c1, c2, c3) = (counter.clone(), counter.clone(), counter.clone());
    let routes = Dispatch::new()
        .route(move |_, req: Incr| {
            let mut c = c1.lock().unwrap();
            let value = c.value.checked_add(req.by);
            let value = value.ok_or_else(|| AppError::with_detail(OVERFLOW, &c.value))?;
            c.value = value;
            c.increments += 1;
            // Subscribers that left are dropped. One that falls behind
            // loses the oldest changes (the queue below) and is told.
            c.subscribers
                .retain(|s| s.send_typed_event(&Changed { value }).is_ok());
            Ok(value)
        })
        .route(move |_, _: Get| Ok(c2.lock().unwrap().value))
        .route(move |conn, _: Subscribe| {
            let mut c = c3.lock().unwrap();
            c.subscribers.push(conn.clone());
            Ok(c.value)
        });
    let opts = ServiceOptions::default()
        .min_message(1024) // messages of a few bytes: the smallest rings
        .max_message(1024)
        .event_queue(Some(EventQueue {
            capacity: 64,
            policy: QueuePolicy::DropOldest,
        }));
    let daemon = Daemon {
        uid: Credentials::current().uid,
        routes,
    };
    let mut service = match Service::bind(addr.clone(), PROTOCOL, opts, daemon) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("counter_daemon: cannot listen at {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let control = service.control_handle();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            control.shutdown();
        }
    });
    eprintln!("counter_daemon: listening at {addr}");
    if let Err(e) = service.run() {
        eprintln!("counter_daemon: {e}");
        return ExitCode::FAILURE;
    }
    let (c, stats) = (counter.lock().unwrap(), service.stats(false));
    println!(
        "counter_daemon: value {}, {} increments, {} clients served, {} refused",
        c.value, c.increments, stats.closed_connections, stats.rejected.permission_denied
    );
    ExitCode::SUCCESS
}
