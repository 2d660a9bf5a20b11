//! The server SIGKILLed while 32 clients wait on it: four client
//! processes of eight connections each, every connection in a thread of
//! its own blocked with no timeout in `send_recv` or `recv` (on a
//! request the server holds) or in `event_recv`, each asleep in the
//! kernel when the kill comes. Every one returns `Disconnected`, within
//! a deadline of a few seconds (generous: the measured figure, printed
//! and recorded in `docs/RELIABILITY.md`, is far below it).
//!
//! The one-client versions (a blocked call in a thread or a process,
//! after a shutdown, a kill or a disconnect) are in `ipc_lifecycle`.

use std::time::Duration;

use ringlink_tests::ipc::Kv;
use ringlink_tests::peer::describe;
use ringlink_tests::procfs::{self, Proc};
use ringlink_tests::procs::{addr_args, unique_addr, Helper, ServerProc, LINE_DEADLINE};

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_test_client");

const PROCESSES: usize = 4;
const PER_PROCESS: usize = 8;

/// What "promptly" is held to: every blocked call returns within this of
/// the kill.
const PROMPT: Duration = Duration::from_secs(5);

ringlink_tests::transport_test! {
fn a_killed_server_wakes_thirty_two_blocked_clients() {
    let server = ServerProc::spawn(SERVER, &unique_addr("kill32"), &[]);
    let mut args = vec!["block-many".to_owned()];
    args.extend(addr_args(server.addr()));
    args.push(PER_PROCESS.to_string());
    let mut clients: Vec<Helper> = (0..PROCESSES).map(|_| Helper::spawn(CLIENT, &args)).collect();
    for c in &mut clients {
        let p = Proc::Pid(c.pid());
        for _ in 0..PER_PROCESS {
            let tid = Kv::parse(&c.expect("blocking", LINE_DEADLINE)).num("tid") as i32;
            procfs::wait_asleep(p, tid, LINE_DEADLINE);
        }
    }
    let killed_at = procfs::monotonic_ns();
    let fin = server.kill();
    assert_eq!(describe(fin.status), "signal 9");
    let mut after = Vec::new();
    let mut calls = [0usize; 3];
    for c in &mut clients {
        for _ in 0..PER_PROCESS {
            let r = c.expect("result", PROMPT);
            let mut words = r.split_whitespace();
            let i: usize = words.next().and_then(|w| w.parse().ok()).expect("index");
            assert_eq!(words.next(), Some("Disconnected"), "thread {i}: {r}");
            let at: u64 = Kv::parse(&r).num("at_ns") as u64;
            after.push(Duration::from_nanos(at.saturating_sub(killed_at)));
            calls[i % 3] += 1;
        }
    }
    for c in clients {
        c.wait(LINE_DEADLINE).assert_success();
    }
    after.sort();
    eprintln!(
        "server SIGKILLed under {} blocked clients ({} in send_recv, {} in recv, {} in \
         event_recv) over {}: all returned Disconnected; after the kill: median {:?}, \
         max {:?}",
        after.len(),
        calls[0],
        calls[1],
        calls[2],
        ringlink_tests::transport::name(ringlink_tests::transport::current()),
        after[after.len() / 2],
        after[after.len() - 1]
    );
    assert!(after[after.len() - 1] < PROMPT);
}
}
