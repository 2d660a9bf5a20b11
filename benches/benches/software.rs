//! Criterion benches of ringlink's own work per message, with no core
//! in between: a server (`ipcs::Service`) and a client (`ipcc::Client`)
//! on one thread, the client sending, one turn of the service's loop
//! (`Service::dispatch` with a zero timeout) handling, the client taking
//! the response. Every cache line stays in this core, so what is measured
//! is the instructions of the layers (the ring, the channel's framing and
//! checks, the loop, the handler's dispatch, the client's bookkeeping),
//! which the cross-core figures of `ipc-bench` and `benches/ipc.rs` add
//! to the cache-line transfers. A regression here is a regression of
//! every round trip.
//!
//! - `software/round_trip/64 B`: `send`, one turn, `recv`.
//! - `software/one_way/64 B`: two one-way `send`s, one turn that takes
//!   both.
//! - `software/async_one_way/64 B`: the same through an `AsyncClient`,
//!   each call's future polled once (it completes at its first poll when
//!   there is room), as a task on a runtime would.

use std::future::Future;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use ringlink_benches::ipc::link::noop_waker;
use ringlink_ipcc::{AsyncClient, Client, ConnectOptions};
use ringlink_ipcs::{Connection, Handler, Request, Service, ServiceAddr, ServiceOptions};

/// Answers every request that wants an answer with its own payload.
struct Echo;

impl Handler for Echo {
    fn message(&self, conn: &Connection, req: &Request<'_>) {
        if req.needs_response() {
            let _ = conn.respond(req.seq(), req.id(), req.payload());
        }
    }
}

const SIZE: usize = 64;

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let addr = ServiceAddr::named(&format!("ringlink-bench-sw-{}", std::process::id()));
    let mut service =
        Service::bind(addr.clone(), "software", ServiceOptions::default(), Echo).expect("bind");
    // The handshake needs the loop: the client connects from a thread
    // while this one turns it.
    let connecting = std::thread::spawn(move || {
        Client::connect(&addr, &ConnectOptions::new("software")).expect("connect")
    });
    while !connecting.is_finished() {
        // Busy or idle, the loop turns again until the client is in.
        let _ = service
            .dispatch(Some(Duration::from_millis(1)))
            .expect("dispatch");
    }
    let mut client = connecting.join().expect("connecting thread");
    let payload = [0x5au8; SIZE];
    let mut buf = vec![0u8; SIZE];
    let now = Some(Duration::ZERO);

    let mut g = c.benchmark_group("software");
    g.throughput(Throughput::Elements(1));
    g.bench_function("round_trip/64 B", |b| {
        b.iter(|| {
            client.send(1, &payload).expect("send");
            let turn = service.dispatch(now).expect("dispatch");
            assert!(turn.is_busy(), "the request was handled");
            let m = client.recv(&mut buf, now).expect("the response, at once");
            assert_eq!(m.len, SIZE);
        })
    });
    g.throughput(Throughput::Elements(2));
    g.bench_function("one_way/64 B", |b| {
        b.iter(|| {
            client.send_oneway(2, &payload, None).expect("send");
            client.send_oneway(2, &payload, None).expect("send");
            let turn = service.dispatch(now).expect("dispatch");
            assert!(turn.is_busy(), "the requests were handled");
        })
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = {
        let _in_rt = rt.enter();
        AsyncClient::from_client(client).expect("async client")
    };
    let waker = noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    // Polls a send's future once: with room in the ring it is ready.
    macro_rules! at_once {
        ($f:expr) => {
            match std::pin::pin!($f).poll(&mut cx) {
                std::task::Poll::Ready(r) => r.expect("send"),
                std::task::Poll::Pending => panic!("room in the ring, yet the send waited"),
            }
        };
    }
    g.bench_function("async_one_way/64 B", |b| {
        b.iter(|| {
            at_once!(client.send_oneway(2, &payload));
            at_once!(client.send_oneway(2, &payload));
            let turn = service.dispatch(now).expect("dispatch");
            assert!(turn.is_busy(), "the requests were handled");
        })
    });
    g.finish();
    drop(client);
    c.final_summary();
}
