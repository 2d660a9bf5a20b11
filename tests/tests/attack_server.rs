//! The other direction: a hostile server. The server here is written in
//! the test from `docs/PROTOCOL.md` (a thread with a listening socket of
//! its own, no `ringlink-ipcs`), and the real client connects to it. A
//! handshake answer that lies, rings that are not what the answer says,
//! and rings corrupted or overfilled after the handshake must each give
//! the client a typed error: no panic, no hang, no SIGBUS, and every call
//! after it fails too instead of reading on from a broken connection.
//!
//! Shared memory only: the socket transport's reassembly of hostile
//! datagrams is the same code on both sides and is covered by
//! `fuzz_decoders` and `ipc_control::error_hook_sees_broken_socket_framing`.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use ringlink_common::fdpass::send_fds;
use ringlink_common::wire::{
    ConnectResponse, MsgHeader, Status, FLAG_CALL, MAX_MESSAGE, MSG_HEADER_LEN, RESPONSE_LEN,
};
use ringlink_common::{ServiceAddr, Transport};
use ringlink_ipcc::{AsyncClient, Client, ConnectOptions, Error};
use ringlink_ringbuf::layout::KIND_DATA;
use ringlink_ringbuf::Ring;
use ringlink_tests::attack::HANG;
use ringlink_tests::hostile::{self, fds, hold, read_request};
use ringlink_tests::ipc::PROTOCOL;
use ringlink_tests::procfs;
use ringlink_tests::raw::RawRing;
use ringlink_tests::tmp::TempDir;

/// The payload maximum the hostile server grants.
const MAX: usize = 4096;

/// Client options: shared memory, a deadline that only catches hangs.
fn options(timeout: Duration) -> ConnectOptions {
    let mut o = ConnectOptions::new(PROTOCOL);
    o.wait_for_server = false;
    o.timeout = timeout;
    o.max_message = MAX as u32;
    o.transport = Transport::Shm;
    o
}

/// The hostile server: [`ringlink_tests::hostile::listen`].
fn hostile<T: Send + 'static>(
    tag: &str,
    script: impl FnOnce(Arc<UnixStream>) -> T + Send + 'static,
) -> (ServiceAddr, JoinHandle<T>) {
    hostile::listen(tag, script)
}

/// Three rings for [`MAX`], waking the client through `sock`.
fn rings(sock: &Arc<UnixStream>) -> [Ring; 3] {
    hostile::rings(MAX, sock)
}

/// An honest answer for `rings`.
fn answer_for(rings: &[Ring; 3]) -> ConnectResponse {
    hostile::answer_for(rings, MAX)
}

/// Connects to `addr` and returns the error, which must come.
fn refused(addr: &ServiceAddr, timeout: Duration) -> Error {
    match Client::connect(addr, &options(timeout)) {
        Ok(c) => panic!("connected to a lying server: {c:?}"),
        Err(e) => e,
    }
}

fn assert_protocol(e: &Error, what: &str, says: &str) {
    match e {
        Error::Protocol(v) if v.to_string().contains(says) => {}
        other => panic!("{what}: expected a protocol error saying `{says}`, got {other:?}"),
    }
}

#[test]
fn a_server_that_never_answers_times_the_handshake_out() {
    let (addr, server) = hostile("mute", |sock| {
        read_request(&sock);
        hold(&sock);
    });
    let e = refused(&addr, Duration::from_millis(300));
    assert!(matches!(e, Error::TimedOut), "{e:?}");
    server.join().expect("server thread");
}

/// The server's side of the call tests: once the client says its request
/// ring is full, `n` calls (id 7, four bytes) in the response ring and a
/// wake-up. The producer is returned: dropped, it would close the ring.
fn calls_once_filled(
    sock: &UnixStream,
    rings: &[Ring; 3],
    filled: &mpsc::Receiver<()>,
    n: usize,
) -> ringlink_ringbuf::Producer {
    filled
        .recv_timeout(HANG)
        .expect("the client filled its ring");
    let mut rec = vec![0u8; MSG_HEADER_LEN + 4];
    MsgHeader {
        id: 7,
        size: 4,
        error: 0,
        flags: FLAG_CALL,
        seq: 1,
    }
    .encode_into(&mut rec);
    let mut tx = rings[1].producer().expect("response producer");
    for _ in 0..n {
        tx.try_push(&rec).expect("room for a call");
    }
    hostile::kick(sock);
    tx
}

/// The client's side: a handler that answers calls, and its request ring
/// full to the last byte (smaller and smaller requests, down to empty
/// ones, so that not even a reply of a few bytes fits).
fn fill_requests_and_answer_calls(c: &mut Client) {
    c.set_call_handler(|_| (0, b"reply".to_vec()));
    let mut filled = 0;
    for size in [MAX, 1024, 64, 0] {
        while c
            .send_oneway(1, &vec![0u8; size], Some(Duration::ZERO))
            .is_ok()
        {
            filled += 1;
        }
    }
    assert!(filled > 0, "nothing sent");
}

/// Calls the client cannot answer: the server sends two after it has
/// stopped reading requests, so the client's request ring stays full;
/// the first call's reply waits for room, and holds the second call (and
/// all behind it) at the front of the response ring. A receive waits
/// for that room, asleep, instead of spinning on the call (it used to
/// spin, and never saw the server leave), and ends with `Disconnected`
/// when the server hangs up. With `held`, the server also answered a
/// request behind the calls: once it is gone, nobody can take the
/// replies, and the receive reads that answer (three bytes) instead.
/// `receive` receives on its own thread, the one whose CPU time is
/// counted, and drops the client.
fn stuck_call(held: bool, receive: impl FnOnce(Client) -> Result<usize, Error> + Send + 'static) {
    const SILENCE: Duration = Duration::from_millis(500);
    let (filled_tx, filled_rx) = mpsc::channel::<()>();
    let (called_tx, called_rx) = mpsc::channel::<()>();
    let (addr, server) = hostile("stuck-call", move |sock| {
        let rings = hostile::handshake(&sock, MAX);
        // Two: the first is served and its reply kept, the second waits.
        let mut calls = calls_once_filled(&sock, &rings, &filled_rx, 2);
        if held {
            let mut answer = vec![0u8; MSG_HEADER_LEN + 3];
            MsgHeader {
                id: 1,
                size: 3,
                error: 0,
                flags: 0,
                seq: 1,
            }
            .encode_into(&mut answer);
            calls.try_push(&answer).expect("room for the answer");
        }
        called_tx.send(()).expect("tell the test");
        std::thread::sleep(SILENCE);
        let _ = sock.shutdown(std::net::Shutdown::Both);
        rings
    });
    let mut c = Client::connect(&addr, &options(HANG)).expect("an honest handshake");
    if held {
        c.send(1, b"ask").expect("the request the server answers");
    }
    fill_requests_and_answer_calls(&mut c);
    filled_tx.send(()).expect("tell the server");
    called_rx.recv_timeout(HANG).expect("the call went");
    let (done_tx, done_rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let tid = procfs::gettid();
        let got = receive(c);
        let ticks = procfs::thread_cpu_ticks(procfs::Proc::Current, tid).expect("own stat");
        done_tx.send((got, ticks)).expect("tell the test");
    });
    let (got, ticks) = done_rx
        .recv_timeout(SILENCE + HANG)
        .expect("the receive never ended after the server left");
    if held {
        assert!(matches!(got, Ok(3)), "{got:?}");
    } else {
        assert!(matches!(got, Err(Error::Disconnected)), "{got:?}");
    }
    // A spinning wait takes the whole silence, 50 ticks of 10 ms.
    assert!(
        ticks < 20,
        "the receive spun: {ticks} ticks of CPU in {SILENCE:?}"
    );
    waiter.join().expect("the waiter");
    drop(server.join().expect("server thread"));
}

/// [`stuck_call`]'s receive by the blocking client.
fn blocking_recv(mut c: Client) -> Result<usize, Error> {
    let mut buf = vec![0u8; MAX];
    c.recv(&mut buf, None).map(|m| m.len)
}

/// [`stuck_call`]'s receive by the async client, which waits through its
/// own path.
fn async_recv(c: Client) -> Result<usize, Error> {
    // One thread: the reactor's work is counted with the wait's.
    current_thread().block_on(async move {
        let c = AsyncClient::from_client(c)?;
        c.recv().await.map(|r| r.payload.len())
    })
}

#[test]
fn a_call_whose_reply_has_no_room_is_waited_for_asleep() {
    stuck_call(false, blocking_recv);
}

#[test]
fn an_async_receive_waits_asleep_for_room_for_a_calls_reply() {
    stuck_call(false, async_recv);
}

#[test]
fn an_answer_held_behind_unanswerable_calls_is_read_once_the_server_left() {
    stuck_call(true, blocking_recv);
}

#[test]
fn an_async_receive_reads_an_answer_held_behind_calls_once_the_server_left() {
    stuck_call(true, async_recv);
}

/// A tokio runtime on the calling thread.
fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A call whose reply waits for room, with nothing behind it: the
/// server sends one call after the client filled its request ring, then
/// reads the ring out and sends nothing more until the reply comes. A
/// client waiting for an event sleeps; the room the server makes must
/// wake it, so that the reply goes (it used to sleep on its event and
/// response rings alone, and the two waited on each other).
/// `event_recv` waits for the event (at most 4 s) and drops the client;
/// it returns the event's id and length.
fn reply_room(event_recv: impl FnOnce(Client) -> Result<(i32, usize), Error>) {
    let (filled_tx, filled_rx) = mpsc::channel::<()>();
    let (addr, server) = hostile("reply-room", move |sock| {
        let rings = hostile::handshake(&sock, MAX);
        let _calls = calls_once_filled(&sock, &rings, &filled_rx, 1);
        // Long enough for the client to take the call and fall asleep.
        std::thread::sleep(Duration::from_millis(200));
        // Reads everything, then waits for the reply behind it.
        let mut requests = rings[0].consumer().expect("request consumer");
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut replied = false;
        while !replied && std::time::Instant::now() < deadline {
            match requests.try_peek() {
                Ok(r) => {
                    replied = MsgHeader::decode(&r).is_ok_and(|h| h.is_reply());
                    r.release();
                }
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        if replied {
            push_event(&rings);
            hostile::kick(&sock);
        }
        hold(&sock);
        (replied, rings)
    });
    let mut c = Client::connect(&addr, &options(HANG)).expect("an honest handshake");
    fill_requests_and_answer_calls(&mut c);
    filled_tx.send(()).expect("tell the server");
    let got = event_recv(c);
    let (replied, _rings) = server.join().expect("server thread");
    assert!(
        replied,
        "the reply never came: the room did not wake the client"
    );
    assert_eq!(got.expect("the event after the reply"), (9, 2));
}

/// Event 9, two bytes, in the event ring: the ring's producer wakes the
/// client through the socket if its flag is up.
fn push_event(rings: &[Ring; 3]) {
    let mut event = vec![0u8; MSG_HEADER_LEN + 2];
    MsgHeader {
        id: 9,
        size: 2,
        error: 0,
        flags: 0,
        seq: 0,
    }
    .encode_into(&mut event);
    rings[2]
        .producer()
        .expect("event producer")
        .try_push(&event)
        .expect("room for the event");
}

/// Calls held as in [`stuck_call`] hold back responses, not events: an
/// event the server sends 300 ms later, woken only by the event ring's
/// own wake-up (no extra byte), reaches a client waiting for events (its
/// wait for the replies' room used to leave the event ring's flag down,
/// and it slept until its deadline, 4 s: the last look there found the
/// event, so the test asks for it within 3). `event_recv` as in
/// [`reply_room`].
fn held_calls_event(event_recv: impl FnOnce(Client) -> Result<(i32, usize), Error>) {
    let (filled_tx, filled_rx) = mpsc::channel::<()>();
    let (addr, server) = hostile("held-calls-event", move |sock| {
        let rings = hostile::handshake(&sock, MAX);
        let _calls = calls_once_filled(&sock, &rings, &filled_rx, 2);
        std::thread::sleep(Duration::from_millis(300));
        push_event(&rings);
        hold(&sock);
        rings
    });
    let mut c = Client::connect(&addr, &options(HANG)).expect("an honest handshake");
    fill_requests_and_answer_calls(&mut c);
    filled_tx.send(()).expect("tell the server");
    let started = std::time::Instant::now();
    let got = event_recv(c);
    let took = started.elapsed();
    drop(server.join().expect("server thread"));
    assert_eq!(got.expect("the event behind the held calls"), (9, 2));
    assert!(
        took < Duration::from_secs(3),
        "the event's wake-up was missed: it came at the deadline, after {took:?}"
    );
}

#[test]
fn an_event_wait_behind_held_calls_gets_its_event() {
    held_calls_event(blocking_event_recv);
}

#[test]
fn an_async_event_wait_behind_held_calls_gets_its_event() {
    held_calls_event(async_event_recv);
}

/// [`reply_room`]'s and [`held_calls_event`]'s receive by the blocking
/// client.
fn blocking_event_recv(mut c: Client) -> Result<(i32, usize), Error> {
    let mut buf = vec![0u8; MAX];
    c.event_recv(&mut buf, Some(Duration::from_secs(4)))
        .map(|m| (m.id, m.len))
}

/// The same by the async client.
fn async_event_recv(c: Client) -> Result<(i32, usize), Error> {
    current_thread().block_on(async move {
        let c = AsyncClient::from_client(c)?;
        match tokio::time::timeout(Duration::from_secs(4), c.event_recv()).await {
            Ok(got) => got.map(|e| (e.id, e.payload.len())),
            Err(_) => Err(Error::TimedOut),
        }
    })
}

#[test]
fn room_for_a_waiting_reply_wakes_a_sleeping_receive() {
    reply_room(blocking_event_recv);
}

/// The same, for the async client's wait.
#[test]
fn room_for_a_waiting_reply_wakes_a_sleeping_async_receive() {
    reply_room(async_event_recv);
}

#[test]
fn a_server_that_hangs_up_mid_handshake_is_an_error() {
    // After the request; and after half an answer.
    let (addr, server) = hostile("hangup", |sock| {
        read_request(&sock);
    });
    let e = refused(&addr, HANG);
    assert!(
        matches!(e, Error::Disconnected | Error::Protocol(_)),
        "{e:?}"
    );
    server.join().expect("server thread");

    let (addr, server) = hostile("half-answer", |sock| {
        read_request(&sock);
        let rings = rings(&sock);
        (&*sock)
            .write_all(&answer_for(&rings).encode()[..20])
            .expect("half an answer");
    });
    let e = refused(&addr, HANG);
    assert!(
        matches!(e, Error::Disconnected | Error::Protocol(_)),
        "{e:?}"
    );
    server.join().expect("server thread");
}

/// Lies in the handshake answer's fields, then in its bytes, each with
/// what the client's error must say.
#[test]
fn lying_handshake_answers_are_protocol_errors() {
    type Field = fn(&mut ConnectResponse);
    type Bytes = fn(&mut [u8; RESPONSE_LEN]);
    let fields: [(&str, Field, &str); 4] = [
        (
            "a maximum above ringlink's ceiling",
            |a| a.max_message = (MAX_MESSAGE + 1) as u32,
            "above ringlink's",
        ),
        (
            "ring capacities that disagree with the rings",
            |a| a.response_capacity *= 2,
            "ring size disagrees",
        ),
        (
            "fewer fds announced than sent",
            |a| a.fd_count = 1,
            "announced 1, 3 came",
        ),
        (
            "a ring path longer than allowed",
            |a| a.path_len = 300,
            "connect response",
        ),
    ];
    let bytes: [(&str, Bytes, &str); 2] = [
        ("wrong magic", |b| b[0] ^= 0xff, "connect response"),
        ("an unknown status", |b| b[6] = 0xee, "connect response"),
    ];
    let cases = fields
        .into_iter()
        .map(|(what, f, says)| (what, Some(f), None, says))
        .chain(
            bytes
                .into_iter()
                .map(|(what, b, says)| (what, None, Some(b), says)),
        );
    for (what, field, byte, says) in cases {
        let (addr, server) = hostile("lie", move |sock| {
            read_request(&sock);
            let rings = rings(&sock);
            let mut answer = answer_for(&rings);
            if let Some(f) = field {
                f(&mut answer);
            }
            let mut b = answer.encode();
            if let Some(f) = byte {
                f(&mut b);
            }
            let mut b = b.to_vec();
            b.extend_from_slice(&ringlink_common::wire::FdTerms::NONE.encode());
            send_fds(&sock, &b, &fds(&rings)).expect("send the answer");
            hold(&sock);
        });
        let e = refused(&addr, HANG);
        eprintln!("{what}: {e}");
        assert_protocol(&e, what, says);
        server.join().expect("server thread");
    }
}

/// A server of another protocol version (1, before wake-ups moved to the
/// socket; 4, before ring layout 2; or any other): a clear refusal, not a
/// protocol error.
#[test]
fn a_server_of_another_version_is_a_version_mismatch() {
    for version in [1u16, 3, 4, u16::MAX] {
        let (addr, server) = hostile("version", move |sock| {
            read_request(&sock);
            // What a version-1 server sends a client it does not speak
            // with: a rejection whose version field is its own.
            let mut b = ConnectResponse::reject(Status::VersionMismatch).encode();
            b[4..6].copy_from_slice(&version.to_le_bytes());
            (&*sock).write_all(&b).expect("send the answer");
            hold(&sock);
        });
        let e = refused(&addr, HANG);
        assert!(
            matches!(e, Error::Rejected(Status::VersionMismatch)),
            "version {version}: {e:?}"
        );
        server.join().expect("server thread");
    }
}

#[test]
fn rings_that_are_not_sealed_memfds_are_refused() {
    // A file without seals could be truncated under the client (SIGBUS
    // on its next access): refused.
    let dir = TempDir::new("unsealed");
    let path = dir.path().join("ring");
    let (addr, server) = hostile("unsealed", move |sock| {
        read_request(&sock);
        let rings = rings(&sock);
        let plain = unsealed_file(&path, rings[0].capacity());
        let mut fds = fds(&rings);
        fds[0] = plain.as_fd();
        send_fds(&sock, &hostile::accepting(&answer_for(&rings)), &fds).expect("send the answer");
        hold(&sock);
    });
    let e = refused(&addr, HANG);
    eprintln!("an unsealed file as ring memory: {e}");
    assert_protocol(&e, "an unsealed file", "ring from server");
    server.join().expect("server thread");

    let (addr, server) = hostile("no-fds", |sock| {
        read_request(&sock);
        let rings = rings(&sock);
        // Status Ok and three fds announced, none attached.
        (&*sock)
            .write_all(&hostile::accepting(&answer_for(&rings)))
            .expect("send the answer");
        hold(&sock);
    });
    let e = refused(&addr, HANG);
    assert_protocol(&e, "no fds", "announced 3, 0 came");
    server.join().expect("server thread");
}

/// Named rings whose paths lead to FIFOs. Linux opens a FIFO for
/// reading and writing without waiting, but other special files (a
/// terminal device) may wait in `open`; the client opens with
/// `O_NONBLOCK`, so none can, and refuses anything but a regular file
/// before it maps it.
#[test]
fn a_fifo_planted_as_a_named_ring_is_refused_at_once() {
    use std::os::unix::ffi::OsStrExt;
    let dir = TempDir::new("fifo-ring");
    let prefix = dir.path().join("ring-");
    for name in ["request", "response", "event"] {
        let p = dir.path().join(format!("ring-{name}"));
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    }
    let bytes = prefix.as_os_str().as_bytes().to_vec();
    let (addr, server) = hostile("fifo", move |sock| {
        read_request(&sock);
        let rings = rings(&sock);
        let mut answer = answer_for(&rings);
        answer.fd_count = 0;
        answer.path_len = bytes.len() as u16;
        let mut b = hostile::accepting(&answer);
        b.extend_from_slice(&bytes);
        (&*sock).write_all(&b).expect("send the answer");
        hold(&sock);
    });
    let t = std::time::Instant::now();
    let e = refused(&addr, HANG);
    eprintln!("FIFOs as named rings: {e} after {:?}", t.elapsed());
    assert_protocol(&e, "a FIFO", "not a regular file");
    server.join().expect("server thread");
}

/// A file the size of a ring at `path`, which cannot be sealed.
fn unsealed_file(path: &std::path::Path, capacity: usize) -> OwnedFd {
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .expect("a plain file");
    f.set_len((capacity + ringlink_ringbuf::layout::HEADER_SIZE) as u64)
        .expect("size");
    f.into()
}

/// After an honest handshake, the server breaks its rings in one of
/// these ways before the client reads.
#[derive(Clone, Copy, Debug)]
enum Break {
    /// A response whose payload is over the negotiated maximum.
    Oversize,
    /// A response header with its reserved field set.
    Reserved,
    /// A record word of no known kind where the client's next response
    /// goes.
    GarbageWord,
    /// An event record announcing more bytes than the ring holds.
    EventTooLong,
    /// Responses to requests the client never sent (it sent none): a
    /// server that could grow what the client keeps for `send_recv`.
    Unasked,
}

#[test]
fn rings_broken_after_the_handshake_are_protocol_errors() {
    for brk in [
        Break::Oversize,
        Break::Reserved,
        Break::GarbageWord,
        Break::EventTooLong,
        Break::Unasked,
    ] {
        let (done_tx, done_rx) = mpsc::channel();
        let (addr, server) = hostile("broken", move |sock| {
            let rings = hostile::handshake(&sock, MAX);
            match brk {
                Break::Oversize | Break::Reserved | Break::Unasked => {
                    let size = if matches!(brk, Break::Oversize) {
                        MAX + 1
                    } else {
                        8
                    };
                    let mut rec = vec![0u8; MSG_HEADER_LEN + size];
                    MsgHeader {
                        id: 1,
                        size: size as u32,
                        error: 0,
                        flags: 0,
                        seq: 1,
                    }
                    .encode_into(&mut rec);
                    if matches!(brk, Break::Reserved) {
                        rec[12] = 1;
                    }
                    let mut tx = rings[1].producer().expect("response producer");
                    tx.try_push(&rec).expect("room for the record");
                    if matches!(brk, Break::Unasked) {
                        // As many as fit, all answering nothing.
                        while tx.try_push(&rec).is_ok() {}
                    }
                }
                Break::GarbageWord => {
                    let raw = RawRing::map(&rings[1]).expect("map");
                    raw.set_record_word(raw.head(), 8, 0xdead_beef);
                    hostile::kick(&sock);
                }
                Break::EventTooLong => {
                    let raw = RawRing::map(&rings[2]).expect("map");
                    raw.set_record_word(raw.head(), u32::MAX, KIND_DATA);
                    hostile::kick(&sock);
                }
            }
            done_tx.send(()).expect("tell the test");
            hold(&sock);
            rings
        });
        let mut c = Client::connect(&addr, &options(HANG)).expect("an honest handshake");
        done_rx
            .recv_timeout(HANG)
            .expect("the server broke its rings");
        let mut buf = vec![0u8; MAX];
        let first = match brk {
            Break::EventTooLong => c.event_recv(&mut buf, Some(HANG)),
            _ => c.recv(&mut buf, Some(HANG)),
        };
        let e = first.expect_err("a broken ring read as a message");
        eprintln!("{brk:?}: {e}");
        assert!(matches!(e, Error::Protocol(_)), "{brk:?}: {e:?}");
        // Nothing after it reads on from the broken connection.
        let again = c.send_recv(1, b"more?", &mut buf, Some(Duration::from_secs(1)));
        assert!(
            matches!(again, Err(Error::Protocol(_) | Error::Disconnected)),
            "{brk:?}: the call after the error gave {again:?}"
        );
        drop(c);
        drop(server.join().expect("server thread"));
    }
}

/// A server that lies about its rings' producer positions, three laps
/// ahead, misaligned, behind: the client finds records by their words
/// (ring layout 2) and never reads those positions after its claim, so
/// the events the server then publishes honestly all arrive.
#[test]
fn lies_about_a_rings_producer_position_are_harmless() {
    const EVENTS: u64 = 10;
    let (done_tx, done_rx) = mpsc::channel();
    let (addr, server) = hostile("tail-lie", move |sock| {
        let rings = hostile::handshake(&sock, MAX);
        let raw = RawRing::map(&rings[2]).expect("map");
        let mut tx = rings[2].producer().expect("event producer");
        let lies = [3 * raw.capacity() as u64, 3, 0u64.wrapping_sub(64)];
        for i in 0..EVENTS {
            raw.set_tail(raw.tail().wrapping_add(lies[i as usize % 3]));
            let mut rec = vec![0u8; MSG_HEADER_LEN + 8];
            MsgHeader {
                id: 7,
                size: 8,
                error: 0,
                flags: 0,
                seq: 0,
            }
            .encode_into(&mut rec);
            rec[MSG_HEADER_LEN..].copy_from_slice(&i.to_le_bytes());
            tx.try_push(&rec).expect("room for the event");
            raw.set_tail(raw.tail().wrapping_add(lies[(i as usize + 1) % 3]));
            hostile::kick(&sock);
        }
        done_tx.send(()).expect("tell the test");
        hold(&sock);
        rings
    });
    let mut c = Client::connect(&addr, &options(HANG)).expect("an honest handshake");
    done_rx
        .recv_timeout(HANG)
        .expect("the server sent its events");
    let mut buf = vec![0u8; MAX];
    for i in 0..EVENTS {
        let n = c
            .event_recv(&mut buf, Some(HANG))
            .unwrap_or_else(|e| panic!("event {i}: {e:?}"));
        assert_eq!(&buf[..8], &i.to_le_bytes(), "event {i} ({n:?})");
    }
    drop(c);
    drop(server.join().expect("server thread"));
}

/// A server that sends fds against the client's terms (ringlink's
/// rings carry them on the stream socket, ahead of their message): a
/// directory to a client that refuses them, a message announcing fds
/// that never came, fds to a client that takes none. Each is a protocol
/// error naming the fault, never a hang, and the fds that came are not
/// kept.
#[test]
fn fds_against_the_clients_terms_are_protocol_errors() {
    use ringlink_common::wire::FdTerms;
    use ringlink_common::{FdFault, FdKind, Violation};
    // What the hostile server sends ahead of its response: fds on the
    // stream (with the response channel's byte), and the count the
    // response announces; whether the client takes any.
    type Case = (&'static str, bool, u16, u16, fn(&FdFault) -> bool);
    let cases: [Case; 4] = [
        ("a directory", true, 1, 1, |f| {
            *f == FdFault::Kind(FdKind::Directory)
        }),
        ("announced, never sent", true, 0, 1, |f| {
            matches!(f, FdFault::Missing { announced: 1, .. })
        }),
        ("two where one is taken", true, 2, 2, |f| {
            matches!(f, FdFault::PerMessage { count: 2, max: 1 })
        }),
        ("to a client that takes none", false, 0, 1, |f| {
            *f == FdFault::NotAccepted
        }),
    ];
    for (what, takes, sent, announced, fault) in cases {
        let (done_tx, done_rx) = mpsc::channel();
        let (addr, server) = hostile("fds", move |sock| {
            let rings = hostile::handshake(&sock, MAX);
            let dir = std::fs::File::open("/").expect("open /");
            if sent > 0 {
                let fds = vec![dir.as_fd(); usize::from(sent)];
                ringlink_channel::fds::send_attached(sock.as_fd(), 0x81, &fds)
                    .expect("fds on the stream");
            }
            let mut rec = vec![0u8; MSG_HEADER_LEN + 1];
            MsgHeader {
                id: 1,
                size: 1,
                error: 0,
                flags: 0,
                seq: 1,
            }
            .with_fds(announced)
            .encode_into(&mut rec);
            let mut tx = rings[1].producer().expect("response producer");
            tx.try_push(&rec).expect("room for the record");
            hostile::kick(&sock);
            done_tx.send(()).expect("tell the test");
            hold(&sock);
            rings
        });
        let mut o = options(HANG);
        if takes {
            o = o.accept_fds(FdTerms::per_message(1));
        }
        let mut c = Client::connect(&addr, &o).expect("an honest handshake");
        c.send(1, b"?").expect("a request");
        done_rx.recv_timeout(HANG).expect("the server sent");
        let mut buf = vec![0u8; MAX];
        match c.recv(&mut buf, Some(HANG)) {
            Err(Error::Protocol(Violation::Fds { fault: f, .. })) if fault(&f) => {
                eprintln!("{what}: {f}");
            }
            other => panic!("{what}: {other:?}"),
        }
        drop(c);
        server.join().expect("server thread");
    }
}
