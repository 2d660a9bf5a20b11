//! Clients SIGKILLed at random points against one live server: before
//! they connect, mid-handshake, mid-write and mid-read of messages up to
//! 1 MiB, while blocked in `recv` or `event_recv`, between calls. The
//! server stays up, a control client (`attack::Bystander`, checked round
//! trips) is served throughout, every connection that was created is
//! closed and destroyed exactly once, no request it dispatched was torn
//! (the server checks every byte of every checked request), and it ends
//! with the fds and mappings it had before.
//!
//! 1,000 kills on every run (`RINGLINK_SOAK_SCALE` scales them, see
//! `ringlink_tests::scale`).
//!
//! Also: a request torn by a client killed mid-write (a reserved ring
//! record half written, or the first datagram of a message whose rest
//! never comes) is never delivered.

use std::time::{Duration, Instant};

use ringlink_tests::attack::{Bystander, HANG};
use ringlink_tests::payload::Dice;
use ringlink_tests::peer::describe;
use ringlink_tests::procfs;
use ringlink_tests::procs::{addr_args, unique_addr, Helper, ServerProc, LINE_DEADLINE};
use ringlink_tests::scale;

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_test_client");

/// Victims alive at once.
const AT_ONCE: usize = 4;
/// A victim is killed up to this long after it was spawned.
const MAX_LIFE_MS: u64 = 60;

/// The violations the test server recorded, less those that only say a
/// response could not reach a client that was dead by then (over
/// sockets, a send to a dead peer fails at once).
fn real_violations(server: &mut ServerProc) -> Vec<String> {
    let l = server.command("violations");
    l.strip_prefix("violations")
        .unwrap_or_default()
        .split(" | ")
        .map(str::trim)
        .filter(|v| !v.is_empty() && !v.ends_with("failed: Disconnected"))
        .map(str::to_owned)
        .collect()
}

/// Kills `n` victims; returns how many were of each kind (chaos, half
/// handshake).
fn massacre(server: &ServerProc, n: u64, seed: u64) -> (u64, u64) {
    let mut alive: Vec<(Helper, Instant)> = Vec::new();
    let (mut chaos, mut half) = (0, 0);
    let mut spawned = 0u64;
    let mut dice = Dice::new(seed);
    let mut roll = |k: u64| dice.below(k);
    while spawned < n || !alive.is_empty() {
        while spawned < n && alive.len() < AT_ONCE {
            let mut args = if roll(7) == 0 {
                half += 1;
                vec!["half".to_owned()]
            } else {
                chaos += 1;
                vec!["chaos".to_owned(), (seed ^ spawned).to_string()]
            };
            args.extend(addr_args(server.addr()));
            if roll(4) == 0 {
                args.extend(["--max-message".to_owned(), (1u32 << 20).to_string()]);
            }
            let life = Duration::from_millis(roll(MAX_LIFE_MS + 1));
            alive.push((Helper::spawn(CLIENT, &args), Instant::now() + life));
            spawned += 1;
        }
        let now = Instant::now();
        let mut i = 0;
        while i < alive.len() {
            if alive[i].1 <= now {
                let (victim, _) = alive.swap_remove(i);
                let fin = victim.kill();
                // A victim never ends by itself: an exit means it found
                // something wrong.
                assert_eq!(
                    describe(fin.status),
                    "signal 9",
                    "a victim ended by itself:\n{fin}"
                );
            } else {
                i += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (chaos, half)
}

ringlink_tests::transport_test! {
fn clients_killed_at_random_points_leave_the_server_whole() {
    // The figure is also the CI size: about 12 s per transport.
    let kills = scale::count(1000, 1000);
    let watchdog = Duration::from_secs(240).max(Duration::from_millis(kills * 200));
    let mut server = ServerProc::spawn_with_watchdog(
        SERVER,
        &unique_addr("massacre"),
        &["--handshake-timeout-ms", "2000"],
        watchdog,
    );
    let mut control = Bystander::start(server.addr());
    control.served(10);
    // Warm-up: the same mix, so that one-time allocations (slab growth,
    // allocator arenas, the event threads' stacks) are in the baseline.
    massacre(&server, 20, 0x5EED);
    let settled = |server: &mut ServerProc| {
        server.wait_stats("every victim's connection gone", HANG, |s| {
            s.u("live") == 1 && s.u("closed") == s.u("created") - 1
        })
    };
    // Handshakes in progress hold fds too: wait for the count to settle.
    let mut base = settled(&mut server);
    let deadline = Instant::now() + HANG;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let again = server.stats();
        if again.u("fds") == base.u("fds") {
            break;
        }
        assert!(Instant::now() < deadline, "the server's fd count never settled: {again}");
        base = again;
    }
    let shm_before = procfs::shm_leftovers();
    let abandoned = |server: &mut ServerProc| server.sstats(false).u("abandoned");
    let abandoned_before = abandoned(&mut server);
    let started = Instant::now();
    let (chaos, half) = massacre(&server, kills, 0xDEAD_BEEF);
    let took = started.elapsed();
    control.served(10);
    settled(&mut server);
    let s = server.wait_stats("the fds of the dead released", HANG, |s| s.u("fds") == base.u("fds"));
    let cut = abandoned(&mut server) - abandoned_before;
    let report = control.finish();
    eprintln!(
        "{kills} clients SIGKILLed at random ({chaos} busy, {half} mid-handshake by design) \
         in {took:?} over {}: {} connections created and destroyed, {} handshakes cut short, \
         {} requests dispatched (every byte checked: {} bad); the control client did {} \
         checked round trips meanwhile (median {:?}, max {:?}); server fds {} -> {}, \
         mappings {} -> {}, rss {} -> {} KiB",
        ringlink_tests::transport::name(ringlink_tests::transport::current()),
        s.u("created") - base.u("created"),
        cut,
        s.u("messages") - base.u("messages"),
        s.u("check_failures"),
        report.requests,
        report.median,
        report.max,
        base.u("fds"),
        s.u("fds"),
        base.u("maps"),
        s.u("maps"),
        base.u("rss_kib"),
        s.u("rss_kib"),
    );
    // Most victims must have been connected when killed, or this tested
    // little but process start-up (a machine this slow needs a longer
    // MAX_LIFE_MS).
    let created = s.u("created") - base.u("created");
    assert!(
        created >= kills / 2,
        "only {created} of {kills} victims connected before their kill"
    );
    assert_eq!(s.u("check_failures"), 0, "{s}");
    assert_eq!(procfs::shm_leftovers(), shm_before, "left in /dev/shm");
    assert_eq!(s.u("destroyed"), s.u("closed"), "{s}");
    assert_eq!(s.u("fds"), base.u("fds"), "server fds: {s}");
    assert!(s.u("maps") <= base.u("maps"), "server mappings grew: {base} -> {s}");
    let v = real_violations(&mut server);
    assert!(v.is_empty(), "{v:?}");
    let (fin, _) = server.shutdown();
    assert_eq!(fin.u("live"), 0, "{fin}");
}
}

ringlink_tests::transport_test! {
fn a_request_torn_by_a_client_killed_mid_write_is_never_delivered() {
    let mut server = ServerProc::spawn(SERVER, &unique_addr("torn"), &["--log-faults"]);
    for size in [100usize, 200_000, 1 << 20] {
        let before = server.stats();
        let mut args = vec!["tear".to_owned()];
        args.extend(addr_args(server.addr()));
        args.push(size.to_string());
        let mut client = Helper::spawn(CLIENT, &args);
        client.expect("torn", LINE_DEADLINE);
        // Three whole requests came before the torn one.
        let s = server.wait_stats("the whole requests", HANG, |s| {
            s.u("messages") == before.u("messages") + 3
        });
        // Half of it is there, and stays undelivered while the writer
        // lives...
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(server.stats().u("messages"), s.u("messages"), "a torn request was delivered");
        // ...and after it dies.
        let fin = client.kill();
        assert_eq!(describe(fin.status), "signal 9", "{fin}");
        let s = server.wait_stats("the torn writer's end", HANG, |s| {
            s.u("destroyed") == before.u("destroyed") + 1
        });
        assert_eq!(s.u("messages"), before.u("messages") + 3, "{s}");
        assert_eq!((s.u("check_failures"), s.u("violations")), (0, 0), "{s}");
        eprintln!("a {size}-byte request torn half-way by a SIGKILL: not delivered");
    }
    // A writer that dies mid-message is no protocol violation.
    let faults = server.faults();
    assert!(faults.is_empty(), "{faults:?}");
    server.shutdown();
}
}
