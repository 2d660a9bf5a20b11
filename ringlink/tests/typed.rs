//! Typed messages (`ringlink::typed`) between a service and clients in
//! this process, over both transports: round trips, application errors,
//! requests that do not decode, unknown ids, answers the server cannot
//! send, typed events, blocking and deferred routes, the async client.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ringlink::client::{Client, ConnectOptions};
use ringlink::server::{ControlHandle, Dispatch, Service, ServiceOptions};
use ringlink::typed::{
    decode, decode_event, AppError, Event, Request, TypedClient, TypedConnection, TypedDispatch,
    TypedError, ERROR_DECODE, ERROR_ENCODE,
};
use ringlink::{ServiceAddr, Transport, ERROR_UNKNOWN_ID};
use serde::{Deserialize, Serialize};

const PROTOCOL: &str = "typed-test";
const TIMEOUT: Option<Duration> = Some(Duration::from_secs(10));
const TRANSPORTS: [Transport; 2] = [Transport::Shm, Transport::Socket];

/// Adds `by` to the connection's counter.
#[derive(Debug, Serialize, Deserialize)]
struct Incr {
    by: i64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Counter {
    value: i64,
    note: String,
}

impl Request for Incr {
    const ID: i32 = 1;
    type Response = Counter;
}

/// The application's code for an increment that would overflow; its
/// detail is the counter's value.
const OVERFLOW: i32 = 7;

/// Another request type on `Incr`'s id: what a client built against
/// another version of the protocol sends.
#[derive(Debug, Serialize, Deserialize)]
struct NotIncr {
    name: String,
    flags: Vec<u64>,
}

impl Request for NotIncr {
    const ID: i32 = Incr::ID;
    type Response = Counter;
}

/// A request no route serves.
#[derive(Debug, Serialize, Deserialize)]
struct Nobody;

impl Request for Nobody {
    const ID: i32 = 99;
    type Response = ();
}

/// Asks for a response of `len` bytes.
#[derive(Debug, Serialize, Deserialize)]
struct Blob {
    len: u32,
}

impl Request for Blob {
    const ID: i32 = 2;
    type Response = Vec<u8>;
}

/// Asks for `count` ticks and one alarm as events, then answers.
#[derive(Debug, Serialize, Deserialize)]
struct Subscribe {
    count: u32,
}

impl Request for Subscribe {
    const ID: i32 = 3;
    type Response = u32;
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Tick {
    n: u32,
}

impl Event for Tick {
    const ID: i32 = 100;
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Alarm {
    Low(f32),
    High { level: f32, source: String },
}

impl Event for Alarm {
    const ID: i32 = 101;
}

/// Doubled on a worker thread (a blocking route).
#[derive(Debug, Serialize, Deserialize)]
struct Double(u64);

impl Request for Double {
    const ID: i32 = 4;
    type Response = u64;
}

/// Answered later, from a thread of its own.
#[derive(Debug, Serialize, Deserialize)]
struct Later(String);

impl Request for Later {
    const ID: i32 = 5;
    type Response = String;
}

/// The service's table: every route these tests use.
fn table() -> Dispatch {
    let counter = Arc::new(AtomicI64::new(0));
    Dispatch::new()
        .route(|_conn, k: Key| Ok(std::str::from_utf8(k.key.as_bytes()).is_ok()))
        .route(move |_conn, req: Incr| {
            let old = counter.load(Ordering::SeqCst);
            let value = old
                .checked_add(req.by)
                .ok_or_else(|| AppError::with_detail(OVERFLOW, &old))?;
            counter.store(value, Ordering::SeqCst);
            Ok(Counter {
                value,
                note: format!("added {}", req.by),
            })
        })
        .route(|_conn, req: Blob| Ok(vec![0xab; req.len as usize]))
        .route(|conn, req: Subscribe| {
            for n in 0..req.count {
                conn.send_typed_event(&Tick { n })
                    .map_err(|e| AppError::with_detail(1, &e.to_string()))?;
            }
            let alarm = Alarm::High {
                level: 0.5,
                source: "pump".into(),
            };
            conn.send_typed_event(&alarm)
                .map_err(|e| AppError::with_detail(1, &e.to_string()))?;
            Ok(req.count)
        })
        .route_blocking(|_conn, Double(n): Double| Ok(n * 2))
        .on(Later::ID, |conn, req| {
            let (conn, seq) = (conn.clone(), req.seq());
            let parsed = decode::<Later>(req.payload());
            std::thread::spawn(move || {
                let _ = match parsed {
                    Ok(Later(s)) => conn.respond_typed::<Later>(seq, &Ok(s.to_uppercase())),
                    Err(e) => conn.reject_typed::<Later>(seq, &e),
                };
            });
        })
}

/// A service on a thread of its own, stopped and joined when dropped.
struct Server {
    addr: ServiceAddr,
    transport: Transport,
    control: ControlHandle,
    thread: Option<JoinHandle<ringlink::Result<()>>>,
}

fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "ringlink-typed-{}-{}-{tag}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Server {
    fn start(tag: &str, transport: Transport) -> Server {
        let addr = ServiceAddr::named(&unique_name(tag));
        let opts = ServiceOptions::default().transport(transport);
        let mut service = Service::bind(addr.clone(), PROTOCOL, opts, table()).expect("bind");
        let control = service.control_handle();
        let thread = std::thread::spawn(move || service.run());
        Server {
            addr,
            transport,
            control,
            thread: Some(thread),
        }
    }

    fn connect(&self) -> Client {
        let opts = ConnectOptions::new(PROTOCOL)
            .transport(self.transport)
            .wait_for_server(true);
        Client::connect(&self.addr, &opts).expect("connect")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.control.shutdown();
        if let Some(t) = self.thread.take() {
            let ran = t.join().expect("the service's thread panicked");
            if !std::thread::panicking() {
                ran.expect("the service failed");
            }
        }
    }
}

#[test]
fn a_typed_call_round_trips() {
    for t in TRANSPORTS {
        let server = Server::start("round-trip", t);
        let mut client = server.connect();
        for (by, value) in [(2, 2), (40, 42), (-50, -8)] {
            let got = client.call(&Incr { by }, TIMEOUT).unwrap();
            assert_eq!(
                got,
                Counter {
                    value,
                    note: format!("added {by}")
                },
                "{t:?}"
            );
        }
        // A response of several KiB, and an empty one.
        assert_eq!(
            client.call(&Blob { len: 5000 }, TIMEOUT).unwrap(),
            vec![0xab; 5000]
        );
        assert_eq!(
            client.call(&Blob { len: 0 }, TIMEOUT).unwrap(),
            Vec::<u8>::new()
        );
        // Blocking and deferred routes.
        assert_eq!(client.call(&Double(21), TIMEOUT).unwrap(), 42);
        assert_eq!(client.call(&Later("late".into()), TIMEOUT).unwrap(), "LATE");
    }
}

#[test]
fn an_application_error_carries_its_code_and_detail() {
    for t in TRANSPORTS {
        let server = Server::start("app-error", t);
        let mut client = server.connect();
        client.call(&Incr { by: 5 }, TIMEOUT).unwrap();
        let err = client.call(&Incr { by: i64::MAX }, TIMEOUT).unwrap_err();
        let app = err.app().unwrap_or_else(|| panic!("{t:?}: {err:?}"));
        assert_eq!(app.code(), OVERFLOW);
        assert_eq!(app.detail::<i64>().unwrap(), 5);
        // The failed call changed nothing, and the connection goes on.
        assert_eq!(client.call(&Incr { by: 1 }, TIMEOUT).unwrap().value, 6);
        // On the wire: the code in the error field, the detail as payload.
        let mut buf = vec![0; client.max_message()];
        let mut payload = Vec::new();
        ringlink::typed::encode(&Incr { by: i64::MAX }, &mut payload).unwrap();
        let m = client
            .send_recv(Incr::ID, &payload, &mut buf, TIMEOUT)
            .unwrap();
        assert_eq!((m.id, m.error), (Incr::ID, OVERFLOW));
        assert_eq!(decode::<i64>(&buf[..m.len]).unwrap(), 6);
    }
}

#[test]
fn a_request_that_does_not_decode_is_answered_with_the_decode_error() {
    for t in TRANSPORTS {
        let server = Server::start("decode", t);
        let mut client = server.connect();
        let mut buf = vec![0; client.max_message()];
        // Raw bytes on the typed id: not a varint that ends, then an
        // empty payload, then a valid Incr with a byte too many.
        let mut extra = Vec::new();
        ringlink::typed::encode(&Incr { by: 3 }, &mut extra).unwrap();
        extra.push(0);
        for bytes in [&[0xff; 12][..], &[], &extra] {
            let m = client
                .send_recv(Incr::ID, bytes, &mut buf, TIMEOUT)
                .unwrap();
            assert_eq!((m.id, m.error), (Incr::ID, ERROR_DECODE), "{t:?} {bytes:?}");
            let why = std::str::from_utf8(&buf[..m.len]).unwrap();
            assert!(why.contains("did not decode"), "{why}");
            assert!(m.len <= ringlink::typed::MAX_REASON);
        }
        // A typed client of another type on that id sees Rejected.
        let other = NotIncr {
            name: "x".repeat(40),
            flags: vec![1, 2, 3],
        };
        match client.call(&other, TIMEOUT) {
            Err(TypedError::Rejected(why)) => assert!(why.contains("did not decode"), "{why}"),
            other => panic!("{t:?}: expected Rejected, got {other:?}"),
        }
        // The deferred route rejects the same way.
        let m = client
            .send_recv(Later::ID, &[0x80], &mut buf, TIMEOUT)
            .unwrap();
        assert_eq!(m.error, ERROR_DECODE);
        // Nothing ran: the counter is untouched.
        assert_eq!(client.call(&Incr { by: 1 }, TIMEOUT).unwrap().value, 1);
    }
}

#[test]
fn a_one_way_request_runs_its_route_and_is_not_answered() {
    for t in TRANSPORTS {
        let server = Server::start("one-way", t);
        let mut client = server.connect();
        let mut payload = Vec::new();
        ringlink::typed::encode(&Incr { by: 10 }, &mut payload).unwrap();
        client.send_oneway(Incr::ID, &payload, TIMEOUT).unwrap();
        // Garbage one way: nothing to answer, nothing runs.
        client.send_oneway(Incr::ID, &[0xff; 3], TIMEOUT).unwrap();
        // The next response is the call's own: nothing was answered before.
        let mut buf = vec![0; client.max_message()];
        ringlink::typed::encode(&Incr { by: 1 }, &mut payload).unwrap();
        let seq = client.send(Incr::ID, &payload).unwrap();
        let m = client.recv(&mut buf, TIMEOUT).unwrap();
        assert_eq!((m.seq, m.error), (seq, 0), "{t:?}");
        assert_eq!(decode::<Counter>(&buf[..m.len]).unwrap().value, 11);
    }
}

#[test]
fn an_unknown_id_is_a_typed_error() {
    for t in TRANSPORTS {
        let server = Server::start("unknown", t);
        let mut client = server.connect();
        match client.call(&Nobody, TIMEOUT) {
            Err(TypedError::UnknownId(id)) => assert_eq!(id, Nobody::ID),
            other => panic!("{t:?}: expected UnknownId, got {other:?}"),
        }
        assert_eq!(ERROR_UNKNOWN_ID, -38);
        assert_eq!(client.call(&Incr { by: 1 }, TIMEOUT).unwrap().value, 1);
    }
}

#[test]
fn a_response_larger_than_the_connection_allows_is_answered_with_the_encode_error() {
    for t in TRANSPORTS {
        let server = Server::start("too-large", t);
        let mut client = server.connect();
        let max = client.max_message();
        let len = u32::try_from(max).unwrap() + 1;
        match client.call(&Blob { len }, TIMEOUT) {
            Err(TypedError::ServerEncode(why)) => {
                assert!(why.contains("above the connection's maximum"), "{why}")
            }
            other => panic!(
                "{t:?}: expected ServerEncode, got {:?}",
                other.map(|v| v.len())
            ),
        }
        let mut buf = vec![0; max];
        let mut payload = Vec::new();
        ringlink::typed::encode(&Blob { len }, &mut payload).unwrap();
        let m = client
            .send_recv(Blob::ID, &payload, &mut buf, TIMEOUT)
            .unwrap();
        assert_eq!(m.error, ERROR_ENCODE);
        // The largest response that fits still goes (its length prefix
        // takes 3 bytes).
        let fits = u32::try_from(max - 3).unwrap();
        assert_eq!(
            client.call(&Blob { len: fits }, TIMEOUT).unwrap().len(),
            max - 3
        );
    }
}

#[test]
fn typed_events_arrive_in_order_and_decode_by_id() {
    for t in TRANSPORTS {
        let server = Server::start("events", t);
        let mut client = server.connect();
        assert_eq!(client.call(&Subscribe { count: 3 }, TIMEOUT).unwrap(), 3);
        for n in 0..3 {
            assert_eq!(
                client.event_recv_typed::<Tick>(TIMEOUT).unwrap(),
                Tick { n }
            );
        }
        // The alarm is not a tick: an error naming both ids.
        match client.event_recv_typed::<Tick>(TIMEOUT) {
            Err(TypedError::UnexpectedId { expected, got }) => {
                assert_eq!((expected, got), (Tick::ID, Alarm::ID))
            }
            other => panic!("{t:?}: expected UnexpectedId, got {other:?}"),
        }
        // Several types on one stream: receive, then decode by id.
        client.call(&Subscribe { count: 1 }, TIMEOUT).unwrap();
        let mut buf = vec![0; client.max_message()];
        let mut got = Vec::new();
        for _ in 0..2 {
            let m = client.event_recv(&mut buf, TIMEOUT).unwrap();
            let payload = &buf[..m.len];
            got.push(match m.id {
                Tick::ID => format!("{:?}", decode_event::<Tick>(m.id, payload).unwrap()),
                Alarm::ID => format!("{:?}", decode_event::<Alarm>(m.id, payload).unwrap()),
                id => panic!("unexpected event id {id}"),
            });
        }
        assert_eq!(
            got,
            ["Tick { n: 0 }", "High { level: 0.5, source: \"pump\" }"]
        );
        // An event decoded as the wrong type is a decode error.
        client.call(&Subscribe { count: 0 }, TIMEOUT).unwrap();
        let m = client.event_recv(&mut buf, TIMEOUT).unwrap();
        assert!(matches!(
            decode_event::<Tick>(Tick::ID, &buf[..m.len]),
            Err(TypedError::Decode(_))
        ));
    }
}

#[test]
#[should_panic(expected = "already has a route")]
fn two_request_types_on_one_id_are_refused() {
    let _ = Dispatch::new()
        .route(|_conn, _req: Incr| Err(AppError::new(1)))
        .route(|_conn, _req: NotIncr| Err(AppError::new(1)));
}

#[cfg(feature = "tokio")]
#[test]
fn the_async_client_calls_and_receives_typed() {
    use ringlink::client::AsyncClient;
    use ringlink::typed::TypedAsyncClient;

    fn within<F: std::future::Future>(f: F) -> tokio::time::Timeout<F> {
        tokio::time::timeout(TIMEOUT.unwrap(), f)
    }

    for t in TRANSPORTS {
        let server = Server::start("async", t);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let opts = ConnectOptions::new(PROTOCOL)
                .transport(t)
                .wait_for_server(true);
            let client = AsyncClient::connect(&server.addr, &opts).await.unwrap();
            // Two calls in flight at once, from one task.
            let (a, b) = tokio::join!(
                within(client.call(&Incr { by: 1 })),
                within(client.call(&Double(8)))
            );
            assert_eq!(a.unwrap().unwrap().value, 1);
            assert_eq!(b.unwrap().unwrap(), 16);
            let err = within(client.call(&Incr { by: i64::MAX }))
                .await
                .unwrap()
                .unwrap_err();
            assert_eq!(err.app().map(|e| e.code()), Some(OVERFLOW), "{err:?}");
            assert!(matches!(
                within(client.call(&Nobody)).await.unwrap(),
                Err(TypedError::UnknownId(Nobody::ID))
            ));
            assert_eq!(
                within(client.call(&Subscribe { count: 1 }))
                    .await
                    .unwrap()
                    .unwrap(),
                1
            );
            let tick = within(client.event_recv_typed::<Tick>()).await.unwrap();
            assert_eq!(tick.unwrap(), Tick { n: 0 });
            let alarm = within(client.event_recv_typed::<Alarm>()).await.unwrap();
            assert!(matches!(alarm.unwrap(), Alarm::High { .. }));
        });
    }
}

/// A request holding a string, answered with whether the route got it
/// as valid UTF-8.
#[derive(Debug, Serialize, Deserialize)]
struct Key {
    key: String,
}

impl Request for Key {
    const ID: i32 = 20;
    type Response = bool;
}

/// A hostile client rewrites a byte of a string in the request it has
/// published, without pause, while the service's loop decodes it where
/// it lies: postcard checks a string's bytes are UTF-8, then copies
/// them, and a byte changed in between gave the route a `String` that is
/// not UTF-8 (undefined behaviour for the route that uses it). A typed
/// loop route decodes from a copy: each request is valid or refused
/// (`ERROR_DECODE`), never an invalid `String`.
#[test]
fn a_string_rewritten_while_decoded_is_valid_or_refused() {
    use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64};
    let server = Server::start("utf8", Transport::Shm);
    let mut client = server.connect();

    // The hostile side: a thread flipping one byte of the published
    // request between 'a' and 0xff while `TARGET` points at it.
    static TARGET: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
    static ASKED: AtomicU64 = AtomicU64::new(0);
    static STOPPED: AtomicU64 = AtomicU64::new(0);
    static QUIT: AtomicBool = AtomicBool::new(false);
    let flipper = std::thread::spawn(|| {
        let mut v = 0u8;
        while !QUIT.load(Ordering::Relaxed) {
            let p = TARGET.load(Ordering::Acquire);
            if p.is_null() {
                STOPPED.store(ASKED.load(Ordering::Acquire), Ordering::Release);
                std::hint::spin_loop();
                continue;
            }
            v ^= 1;
            // SAFETY: `p` points into this process's mapping of the
            // client's request ring, inside the record just published,
            // for as long as `TARGET` holds it: the main thread clears it
            // and waits for this thread to see that before the record's
            // room can be reused. Volatile: the peer's writes, as a
            // hostile client makes them.
            unsafe { std::ptr::write_volatile(p, if v == 0 { b'a' } else { 0xff }) };
        }
    });

    let n = 16 * 1024usize;
    let mut encoded = Vec::new();
    ringlink::typed::encode(&Key { key: "a".repeat(n) }, &mut encoded).expect("encode");
    let at = encoded.len() - n / 2;
    let (mut valid, mut refused) = (0u32, 0u32);
    for i in 0..300 {
        let r = client.send_recv_in_place(
            Key::ID,
            encoded.len(),
            TIMEOUT,
            |buf| {
                buf.copy_from_slice(&encoded);
                TARGET.store(buf[at..].as_mut_ptr(), Ordering::Release);
            },
            |m, payload| (m.error, payload.to_vec()),
        );
        TARGET.store(std::ptr::null_mut(), Ordering::Release);
        let asked = ASKED.fetch_add(1, Ordering::AcqRel) + 1;
        while STOPPED.load(Ordering::Acquire) < asked {
            std::hint::spin_loop();
        }
        match r.expect("an answer") {
            (0, p) => {
                assert!(
                    decode::<bool>(&p).expect("a bool"),
                    "request {i}: the route got a String that is not UTF-8"
                );
                valid += 1;
            }
            (ERROR_DECODE, _) => refused += 1,
            (e, _) => panic!("request {i}: error {e}"),
        }
    }
    QUIT.store(true, Ordering::Relaxed);
    flipper.join().expect("flipper");
    eprintln!("{valid} valid, {refused} refused (0xff seen)");
}
