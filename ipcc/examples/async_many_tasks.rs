//! One connection, a thousand tasks: each task sends requests and awaits
//! its own responses (`send_recv`), all in flight at once on one
//! connection to the echo service; responses are matched by sequence
//! number, whichever task reads them from the ring.
//!
//! ```sh
//! cargo run -p ringlink-ipcs --example echo_server &
//! cargo run --release -p ringlink-ipcc --features tokio --example async_many_tasks -- [--name NAME] [TASKS] [ROUNDS]
//! ```
//!
//! Prints the round trips completed and their rate; exits 1 on any error
//! or a reply that is not the request's echo.

use std::process::ExitCode;
use std::time::Instant;

use ringlink_ipcc::{AsyncClient, ConnectOptions, ServiceAddr};

#[tokio::main]
async fn main() -> ExitCode {
    let mut name = String::from("ringlink-echo");
    let mut numbers = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), a.parse::<usize>()) {
            ("--name", _) => match args.next() {
                Some(n) => name = n,
                None => return usage(),
            },
            (_, Ok(n)) => numbers.push(n),
            _ => return usage(),
        }
    }
    let tasks = numbers.first().copied().unwrap_or(1000);
    let rounds = numbers.get(1).copied().unwrap_or(100);
    let mut opts = ConnectOptions::new("echo");
    opts.wait_for_server = true;
    let client = match AsyncClient::connect(&ServiceAddr::named(&name), &opts).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("async_many_tasks: cannot connect to @{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let client = client.clone();
        set.spawn(async move {
            for r in 0..rounds {
                let payload = format!("task {t} round {r}");
                let reply = client.send_recv(0, payload.as_bytes()).await?;
                if reply.payload != payload.as_bytes() {
                    return Err(format!(
                        "task {t}: got {:?}",
                        String::from_utf8_lossy(&reply.payload)
                    )
                    .into());
                }
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        });
    }
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("async_many_tasks: {e}");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("async_many_tasks: a task failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let n = tasks * rounds;
    let took = start.elapsed();
    println!(
        "{n} round trips from {tasks} tasks on one connection in {took:.2?} ({:.0}/s)",
        n as f64 / took.as_secs_f64()
    );
    ExitCode::SUCCESS
}

fn usage() -> ExitCode {
    eprintln!("usage: async_many_tasks [--name NAME] [TASKS] [ROUNDS]");
    ExitCode::from(2)
}
