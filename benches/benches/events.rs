//! Criterion bench of a server pushing events to a client across cores:
//! the service's loop on one CPU sends bursts of 64 B events from its
//! handler (as a daemon broadcasting state changes does), a client on the
//! other CPU takes them. Throughput is events per second.
//!
//! - `events/burst/64 B`: the client asks for a burst of [`BURST`] events
//!   (a one-way request), the handler sends them back to back with
//!   `Connection::send_event` (each a lock of the connection's event
//!   channel, a record in the ring), and the client reads them with
//!   `event_recv`. A burst fits the client's ring, so no event waits in
//!   the server's queue: what is measured is the loop's sending and the
//!   client's reading, overlapped.
//! - `events/batch/64 B`: the same burst sent with one
//!   `Connection::send_events` (one taking of the channel's lock, the
//!   counters added once).
//!
//! The two threads are pinned to two different CPUs when there are two
//! (`RINGLINK_BENCH_PIN=0` turns that off). `ipc-bench --modes events`
//! measures the same direction between processes, against sockets.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use ringlink_benches::cpu;
use ringlink_ipcc::{Client, ConnectOptions};
use ringlink_ipcs::{Connection, Handler, Request, Service, ServiceAddr, ServiceOptions};

const SIZE: usize = 64;
/// Events per burst: well within the client's event ring (sized for the
/// default maximum message), so that none waits in a queue.
const BURST: u32 = 512;
const START: i32 = 1;
/// As `START`, the burst sent with one `Connection::send_events`.
const START_BATCH: i32 = 3;
const EVENT: i32 = 2;

/// Sends the burst a request asks for, from the loop's thread.
struct Burst;

impl Handler for Burst {
    fn message(&self, conn: &Connection, req: &Request<'_>) {
        if req.id() != START && req.id() != START_BATCH {
            return;
        }
        let n = req
            .payload()
            .get(..4)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
        let payload = [0x5au8; SIZE];
        if req.id() == START_BATCH {
            let events = vec![(EVENT, &payload[..]); n as usize];
            match conn.send_events(&events) {
                Ok(sent) if sent == events.len() => {}
                other => panic!("a burst of {n} not sent whole: {other:?}"),
            }
            return;
        }
        for i in 0..n {
            if let Err(e) = conn.send_event(EVENT, &payload) {
                panic!("event {i} of a burst of {n} not sent: {e}");
            }
        }
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let pin = std::env::var_os("RINGLINK_BENCH_PIN").is_none_or(|v| v != "0");
    let cpus = if pin {
        cpu::pair().expect("sched_getaffinity")
    } else {
        None
    };
    let addr = ServiceAddr::named(&format!("ringlink-bench-events-{}", std::process::id()));
    let mut service =
        Service::bind(addr.clone(), "events", ServiceOptions::default(), Burst).expect("bind");
    let control = service.control_handle();
    let server = std::thread::spawn(move || {
        if let Some((server_cpu, _)) = cpus {
            cpu::pin(server_cpu).expect("pin the loop");
        }
        service.run()
    });
    if let Some((_, client_cpu)) = cpus {
        cpu::pin(client_cpu).expect("pin the client");
    }
    let mut client = Client::connect(&addr, &ConnectOptions::new("events")).expect("connect");
    let mut buf = vec![0u8; SIZE];

    let mut g = c.benchmark_group("events");
    g.throughput(Throughput::Elements(1));
    for (name, ask) in [("burst/64 B", START), ("batch/64 B", START_BATCH)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let mut left = iters;
                while left > 0 {
                    let n = left.min(u64::from(BURST)) as u32;
                    client
                        .send_oneway(ask, &n.to_le_bytes(), None)
                        .expect("ask for a burst");
                    for _ in 0..n {
                        let m = client
                            .event_recv(&mut buf, Some(Duration::from_secs(5)))
                            .expect("an event of the burst");
                        assert_eq!((m.id, m.len), (EVENT, SIZE));
                    }
                    left -= u64::from(n);
                }
                start.elapsed()
            })
        });
    }
    g.finish();
    drop(client);
    control.shutdown();
    server.join().expect("loop thread").expect("loop");
    c.final_summary();
}
