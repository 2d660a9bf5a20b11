//! Prints a service's events until Ctrl-C: the recipe for interrupting a
//! blocking call in a synchronous program.
//!
//! ```sh
//! cargo run -p ringlink-ipcc --example event_watcher -- --name NAME [--protocol P]
//! ```
//!
//! Waits for the service at the abstract name NAME (protocol id P,
//! default `echo`) to appear, then prints each event as `event ID LEN`
//! until SIGINT or SIGTERM, which interrupts the waiting `event_recv`
//! (`Client::interrupter`, called from a thread that waits for the
//! signals); then it says so and exits 0. Exits 1 if the service goes
//! away.

use std::process::ExitCode;
use std::time::Duration;

use ringlink_ipcc::{Client, ConnectOptions, Error, ServiceAddr};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut name, mut protocol) = (None, "echo".to_owned());
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--name", Some(n)) => name = Some(n),
            ("--protocol", Some(p)) => protocol = p,
            _ => {
                eprintln!("usage: event_watcher --name NAME [--protocol P]");
                return ExitCode::from(2);
            }
        }
    }
    let Some(name) = name else {
        eprintln!("usage: event_watcher --name NAME [--protocol P]");
        return ExitCode::from(2);
    };
    // Ctrl-C: the signals are caught from the start (one that comes
    // while connecting is kept); a thread waits for them and interrupts
    // the call the main thread is blocked in (the interrupter is also
    // safe to call from a signal handler itself).
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("event_watcher: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut opts = ConnectOptions::new(&protocol);
    opts.wait_for_server = true;
    opts.server_wait = Duration::MAX;
    let mut client = match Client::connect(&ServiceAddr::named(&name), &opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("event_watcher: cannot connect to {name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = client.interrupter();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            stop.interrupt();
        }
    });
    eprintln!("watching {name}");
    let mut buf = vec![0u8; client.max_message()];
    loop {
        match client.event_recv(&mut buf, None) {
            Ok(m) => println!("event {} {}", m.id, m.len),
            Err(Error::Interrupted) => {
                eprintln!("event_watcher: interrupted");
                return ExitCode::SUCCESS;
            }
            Err(Error::Lagged(n)) => println!("lagged {n}"),
            Err(e) => {
                eprintln!("event_watcher: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
}
