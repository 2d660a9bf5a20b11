//! Load on a real server process: 64 concurrent clients (four client
//! processes of sixteen threads, each thread its own connection) doing
//! 10,000 checked request/responses each, and 5,000 connect/disconnect
//! cycles after which neither the server nor the client process holds
//! more fds, mappings or memory than before.
//!
//! The tests take a process-wide lock, so that `cargo test` (tests on
//! threads of one process) runs one at a time: they measure their own
//! process too. `RINGLINK_LOAD_REQUESTS` and `RINGLINK_LOAD_CYCLES`
//! override the counts (e.g. for a quick local run); run times go to
//! stderr, and are never asserted.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ringlink_ipcc::Client;
use ringlink_tests::ipc::{id, Kv};
use ringlink_tests::procfs::{self, Proc};
use ringlink_tests::procs::{addr_args, client_options, unique_addr, Helper, ServerProc};

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_test_client");

/// Past this a load is declared hung (nextest kills a test at 300 s).
const LOAD_DEADLINE: Duration = Duration::from_secs(240);

static HEAVY: Mutex<()> = Mutex::new(());

fn count(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

ringlink_tests::transport_test! {
fn sixty_four_clients_of_ten_thousand_requests() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    const PROCESSES: u64 = 4;
    const THREADS: u64 = 16;
    let requests = count("RINGLINK_LOAD_REQUESTS", 10_000);
    let mut server = ServerProc::spawn(SERVER, &unique_addr("load"), &[]);
    let start = Instant::now();
    let mut clients: Vec<Helper> = (0..PROCESSES)
        .map(|p| {
            let mut args = vec!["load".to_owned()];
            args.extend(addr_args(server.addr()));
            args.extend([
                THREADS.to_string(),
                requests.to_string(),
                (0x10ad + p).to_string(),
                "2048".into(),
            ]);
            Helper::spawn(CLIENT, &args)
        })
        .collect();
    let mut per_process = Vec::new();
    for c in &mut clients {
        let done = Kv::parse(&c.expect("done", LOAD_DEADLINE));
        assert_eq!((done.u("clients"), done.u("requests")), (THREADS, requests));
        per_process.push(done.u("elapsed_ms"));
    }
    let elapsed = start.elapsed();
    for c in clients {
        c.wait(Duration::from_secs(30)).assert_success();
    }
    let s = server.wait_stats("every client's end", Duration::from_secs(60), |s| {
        s.u("destroyed") == PROCESSES * THREADS
    });
    eprintln!(
        "{} clients x {requests} request/responses: {elapsed:?} in all \
         (each process's own run, ms: {per_process:?})",
        PROCESSES * THREADS
    );
    assert_eq!(s.u("messages"), PROCESSES * THREADS * requests, "{s}");
    assert_eq!(
        (
            s.u("check_failures"),
            s.u("respond_failed"),
            s.u("respond_to_gone"),
            s.u("violations")
        ),
        (0, 0, 0, 0),
        "{s}\n{}",
        server.command("violations")
    );
    assert_eq!(
        (s.u("created"), s.u("closed"), s.u("live")),
        (64, 64, 0),
        "{s}"
    );
}
}

/// Resource use of a process.
#[derive(Clone, Copy, Debug)]
struct Usage {
    fds: u64,
    maps: u64,
    rss_kib: u64,
}

impl Usage {
    fn of_server(s: &Kv) -> Usage {
        Usage {
            fds: s.u("fds"),
            maps: s.u("maps"),
            rss_kib: s.u("rss_kib"),
        }
    }

    fn of_self() -> Usage {
        Usage {
            fds: procfs::fd_count(Proc::Current).expect("fds") as u64,
            maps: procfs::map_count(Proc::Current).expect("maps") as u64,
            rss_kib: procfs::rss_kib(Proc::Current).expect("rss"),
        }
    }

    /// Panics if `after` grew past `self`: fds not at all, mappings by at
    /// most a few (allocator arenas), memory by at most 4 MiB.
    fn assert_no_growth(self, after: Usage, who: &str, cycles: u64) {
        assert_eq!(
            after.fds, self.fds,
            "{who}: open fds after {cycles} connections: {self:?} -> {after:?}"
        );
        assert!(
            after.maps <= self.maps + 8,
            "{who}: mappings after {cycles} connections: {self:?} -> {after:?}"
        );
        assert!(
            after.rss_kib <= self.rss_kib + 4096,
            "{who}: resident memory after {cycles} connections: {self:?} -> {after:?}"
        );
    }
}

ringlink_tests::transport_test! {
fn connect_disconnect_cycles_leak_nothing() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let cycles = count("RINGLINK_LOAD_CYCLES", 5_000);
    let mut server = ServerProc::spawn(SERVER, &unique_addr("cycles"), &[]);
    let addr = server.addr().clone();
    let mut opts = client_options(0);
    opts.wait_for_server = false;
    let run = |n: u64| {
        let mut buf = [0u8; 64];
        for i in 0..n {
            let mut c =
                Client::connect(&addr, &opts).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            let m = c
                .send_recv(id::ECHO, &i.to_le_bytes(), &mut buf, Some(LOAD_DEADLINE))
                .unwrap_or_else(|e| panic!("connection {i}: echo: {e}"));
            assert_eq!(&buf[..m.len], &i.to_le_bytes());
        }
    };
    let settled = |server: &mut ServerProc, n: u64| {
        server.wait_stats("every connection's end", Duration::from_secs(60), |s| {
            s.u("destroyed") == n && s.u("live") == 0
        })
    };
    // Warm-up: one-time allocations (allocator arenas, slab slots).
    const WARM_UP: u64 = 200;
    run(WARM_UP);
    let base_server = Usage::of_server(&settled(&mut server, WARM_UP));
    let base_self = Usage::of_self();
    let start = Instant::now();
    run(cycles);
    let elapsed = start.elapsed();
    let s = settled(&mut server, WARM_UP + cycles);
    let (after_server, after_self) = (Usage::of_server(&s), Usage::of_self());
    eprintln!(
        "{cycles} connect/echo/disconnect cycles in {elapsed:?}; server {base_server:?} -> \
         {after_server:?}; client {base_self:?} -> {after_self:?}"
    );
    base_server.assert_no_growth(after_server, "server", cycles);
    base_self.assert_no_growth(after_self, "client (this process)", cycles);
    assert_eq!(
        (s.u("created"), s.u("closed"), s.u("violations")),
        (WARM_UP + cycles, WARM_UP + cycles, 0),
        "{s}"
    );
}
}
