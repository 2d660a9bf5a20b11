//! Watches the counter (tokio): prints its value, then every change,
//! until Ctrl-C.
//!
//! ```sh
//! cargo run -p ringlink --features typed,tokio --example counter_watch [-- --name NAME]
//! ```
//!
//! Prints `value N` lines, and `missed N` where it fell behind and the
//! daemon dropped changes for it. Exit codes: 0 on Ctrl-C; 1 when there
//! is no daemon within 2 s, or it goes away; 2 for bad arguments.

use std::process::ExitCode;
use std::time::Duration;

use ringlink::client::{AsyncClient, ConnectOptions};
use ringlink::typed::{TypedAsyncClient, TypedError};
use ringlink::{Credentials, Error};
use tokio::signal::unix::{signal, SignalKind};

#[path = "counter/protocol.rs"]
mod protocol;
use protocol::{Changed, Subscribe, PROTOCOL};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let addr = protocol::address(&mut args);
    if !args.is_empty() {
        eprintln!("usage: counter_watch [--name NAME]");
        return ExitCode::from(2);
    }
    // Caught from the start: a Ctrl-C while connecting is kept.
    let Ok(mut ctrl_c) = signal(SignalKind::interrupt()) else {
        eprintln!("counter_watch: cannot catch SIGINT");
        return ExitCode::FAILURE;
    };
    let opts = ConnectOptions::new(PROTOCOL)
        .wait_for_server(true)
        .server_wait(Duration::from_secs(2))
        .server_uid(Some(Credentials::current().uid));
    let subscribed = match AsyncClient::connect(&addr, &opts).await {
        Ok(client) => client.call(&Subscribe).await.map(|value| (client, value)),
        Err(e) => Err(e.into()),
    };
    let client = match subscribed {
        Ok((client, value)) => {
            println!("value {value}");
            client
        }
        Err(e) => {
            eprintln!("counter_watch: no counter daemon at {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    loop {
        tokio::select! {
            _ = ctrl_c.recv() => {
                eprintln!("counter_watch: stopped");
                return ExitCode::SUCCESS;
            }
            change = client.event_recv_typed::<Changed>() => match change {
                Ok(Changed { value }) => println!("value {value}"),
                Err(TypedError::Ipc(Error::Lagged(n))) => println!("missed {n}"),
                Err(e) => {
                    eprintln!("counter_watch: the daemon is gone: {e}");
                    return ExitCode::from(1);
                }
            },
        }
    }
}
