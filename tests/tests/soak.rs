//! Soak: 256 client processes at once against one server, each doing
//! numbered, checked request/responses (`test_client load`): request `n`
//! of a connection carries `n` and a seed, and its every byte follows
//! from them (`ringlink_tests::ipc::checked_request`); the server checks
//! the number (a lost, duplicated or reordered request breaks the
//! sequence) and every byte (stronger than a checksum) and echoes it,
//! and the client checks the answer's sequence number and every byte.
//! Nothing may be lost, duplicated, reordered or corrupted, and the
//! server's memory after the soak is within a few percent of what it was
//! after warming up with as many clients at once.
//!
//! 100,000 round trips per client (25.6 million in all) with
//! `RINGLINK_SOAK_SCALE=1`; fewer in CI (`ringlink_tests::scale`).

use std::time::{Duration, Instant};

use ringlink_tests::ipc::{id, Kv};
use ringlink_tests::procs::{addr_args, connect, unique_addr, Helper, ServerProc};
use ringlink_tests::scale;

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_test_client");

const CLIENTS: u64 = 256;
/// Largest checked data in a request (most are far smaller).
const MAX_DATA: &str = "2048";

/// Runs `CLIENTS` processes of `requests` checked round trips each;
/// returns how long the slowest took.
fn round(server: &mut ServerProc, requests: u64, seed: u64, deadline: Duration) -> Duration {
    let before = server.stats();
    let start = Instant::now();
    let mut clients: Vec<Helper> = (0..CLIENTS)
        .map(|p| {
            // One connection doing `requests` round trips of its own seed.
            let per_client = [requests.to_string(), (seed + p).to_string()];
            let mut args: Vec<String> = vec!["load".into(), "1".into()];
            args.extend(per_client);
            args.push(MAX_DATA.into());
            args.extend(addr_args(server.addr()));
            Helper::spawn_with_watchdog(CLIENT, &args, deadline + Duration::from_secs(60))
        })
        .collect();
    for c in &mut clients {
        let done = Kv::parse(&c.expect("done", deadline));
        assert_eq!((done.u("clients"), done.u("requests")), (1, requests));
    }
    let took = start.elapsed();
    for c in clients {
        c.wait(Duration::from_secs(60)).assert_success();
    }
    let s = server.wait_stats("every client's end", Duration::from_secs(60), |s| {
        s.u("destroyed") == before.u("destroyed") + CLIENTS
    });
    assert_eq!(
        s.u("messages") - before.u("messages"),
        CLIENTS * requests,
        "requests lost or duplicated: {s}"
    );
    for bad in [
        "check_failures",
        "respond_failed",
        "respond_to_gone",
        "violations",
    ] {
        if s.u(bad) != 0 {
            let v = server.command("violations");
            panic!("{bad}: {s}\n{v}");
        }
    }
    took
}

/// Connects `CLIENTS` clients from this process, all at once, and an
/// echo on each; then closes them all.
fn all_at_once(server: &mut ServerProc) {
    let before = server.stats().u("destroyed");
    let mut clients: Vec<_> = (0..CLIENTS).map(|_| connect(server.addr(), 0)).collect();
    let mut buf = vec![0u8; 4096];
    for c in &mut clients {
        c.send_recv(
            id::ECHO,
            &[7u8; 4000],
            &mut buf,
            Some(Duration::from_secs(60)),
        )
        .expect("warm-up echo");
    }
    drop(clients);
    server.wait_stats("the warm-up's end", Duration::from_secs(60), |s| {
        s.u("destroyed") == before + CLIENTS
    });
}

ringlink_tests::transport_test! {
fn two_hundred_fifty_six_clients_lose_nothing_and_leak_nothing() {
    let requests = scale::count(1000, 100_000);
    // Generous: only a hang fails (about 20 µs a round trip on 2 CPUs,
    // ten times over).
    let deadline = Duration::from_secs(120) + Duration::from_micros(200) * (CLIENTS * requests) as u32;
    let mut server = ServerProc::spawn_with_watchdog(
        SERVER,
        &unique_addr("soak"),
        &[],
        deadline * 2 + Duration::from_secs(120),
    );
    // Warm-up: as many connections at once as the soak will have, twice
    // (the first grows the allocator's heap; the second reuses, and so
    // touches, what the first freed), then a short round of the soak's
    // processes.
    for _ in 0..2 {
        all_at_once(&mut server);
    }
    let first = server.stats();
    round(&mut server, 20, 0x50A0_0000, deadline);
    let base = server.stats();
    let took = round(&mut server, requests, 0x50A1_0000, deadline);
    let after = server.stats();
    let total = CLIENTS * requests;
    let rss_growth = after.u("rss_kib") as f64 / base.u("rss_kib") as f64 - 1.0;
    eprintln!(
        "soak over {}: {CLIENTS} client processes x {requests} checked round trips = {total} \
         in {took:?} ({:.0}/s); nothing lost, duplicated, reordered or corrupted; server \
         rss {} KiB after warming up, {} after a short round, {} after the soak ({:+.1}%), \
         fds {} -> {}, mappings {} -> {}",
        ringlink_tests::transport::name(ringlink_tests::transport::current()),
        total as f64 / took.as_secs_f64(),
        first.u("rss_kib"),
        base.u("rss_kib"),
        after.u("rss_kib"),
        rss_growth * 100.0,
        base.u("fds"),
        after.u("fds"),
        base.u("maps"),
        after.u("maps"),
    );
    assert_eq!(after.u("fds"), base.u("fds"), "{base} -> {after}");
    assert!(after.u("maps") <= base.u("maps") + 4, "{base} -> {after}");
    assert!(
        rss_growth <= 0.05,
        "server memory grew {:.1}% over the soak: {base} -> {after}",
        rss_growth * 100.0
    );
    let (fin, _) = server.shutdown();
    assert_eq!(fin.u("live"), 0, "{fin}");
}
}
