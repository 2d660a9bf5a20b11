//! Fds in messages under flow control, each a defect a review found and
//! this guards: wake-ups read off the stream with a request's fds still
//! wake the service (its queued events flow); a client held by the
//! service's in-flight limit sleeps rather than spins; responses with
//! fds to pipelined requests all arrive (the service takes a request only
//! when its answer's fds fit the client's limit); a blocking route takes
//! its request's fds; a client dropped with a server's fds queued to it
//! does not close them in its own thread. In-process services, both
//! transports where the defect could be.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ringlink_common::wire::FdTerms;
use ringlink_ipcc::Client;
use ringlink_ipcs::{
    Connection, Dispatch, EventQueue, Handler, QueuePolicy, Request, Service, ServiceOptions,
};
use ringlink_tests::ipc::PROTOCOL;
use ringlink_tests::procs::{client_options, unique_addr};

const PROMPT: Option<Duration> = Some(Duration::from_secs(60));

/// A service on its own thread; dropped, it shuts down.
struct Running(
    Option<ringlink_ipcs::ControlHandle>,
    Option<std::thread::JoinHandle<()>>,
);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.shutdown();
        }
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

fn serve<H: Handler>(
    tag: &str,
    opts: ServiceOptions,
    h: H,
) -> (ringlink_common::ServiceAddr, Running) {
    let addr = unique_addr(tag);
    let opts = opts.transport(ringlink_tests::transport::current());
    let mut s = Service::bind(addr.clone(), PROTOCOL, opts, h).expect("bind");
    let control = s.control_handle();
    let t = std::thread::spawn(move || {
        let _ = s.run();
    });
    (addr, Running(Some(control), Some(t)))
}

fn null() -> std::fs::File {
    std::fs::File::open("/dev/null").expect("/dev/null")
}

struct Queuing;
impl Handler for Queuing {
    fn message(&self, conn: &Connection, req: &Request<'_>) {
        match req.id() {
            // Ten events of 60 KiB: the ring takes some, the queue the rest.
            1 => {
                for _ in 0..10 {
                    conn.send_event(9, &vec![7u8; 60 << 10])
                        .expect("event queued");
                }
            }
            // The loop busy while the client frees room.
            2 => std::thread::sleep(Duration::from_millis(300)),
            _ => {}
        }
        let _ = conn.respond(req.seq(), req.id(), b"ok");
    }
}

ringlink_tests::transport_test! {
fn wake_ups_read_with_a_requests_fds_still_wake_the_service() {
    let opts = ServiceOptions::default()
        .accept_fds(FdTerms::per_message(4))
        .event_queue(Some(EventQueue { capacity: 100, policy: QueuePolicy::Refuse }));
    let (addr, _running) = serve("fds-wake", opts, Queuing);
    let mut c = Client::connect(&addr, &client_options(0)).expect("connect");
    let mut buf = vec![0u8; c.max_message()];
    c.send_recv(1, b"fill", &mut buf, PROMPT).expect("fill");
    c.send(2, b"busy").expect("send");
    std::thread::sleep(Duration::from_millis(50));
    // Room made while the loop is busy: its wake-up waits on the stream,
    // ahead of the fds of the request that follows.
    let mut got = 0;
    while c.event_recv(&mut buf, Some(Duration::ZERO)).is_ok() {
        got += 1;
    }
    let f = null();
    c.send_with_fds(3, b"fds", &[f.as_fd()], PROMPT).expect("send with an fd");
    c.recv(&mut buf, PROMPT).expect("answer 2");
    c.recv(&mut buf, PROMPT).expect("answer 3");
    while got < 10 {
        c.event_recv(&mut buf, PROMPT).expect("the queued events flow");
        got += 1;
    }
}
}

struct Slow;
impl Handler for Slow {
    fn message(&self, conn: &Connection, req: &Request<'_>) {
        if req.id() == 2 {
            std::thread::sleep(Duration::from_millis(500));
        }
        drop(req.take_fds());
        let _ = conn.respond(req.seq(), req.id(), b"ok");
    }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[test]
fn a_client_held_by_the_fds_in_flight_limit_sleeps() {
    // Shared memory: the sender counts the fds the reader holds.
    let opts = ServiceOptions::default().accept_fds(FdTerms::per_message(4)); // 16 in flight
    let (addr, _running) = serve("fds-held", opts, Slow);
    let mut c = Client::connect(&addr, &client_options(0)).expect("connect");
    let f = null();
    let fds = [f.as_fd(), f.as_fd(), f.as_fd(), f.as_fd()];
    c.send(2, b"busy").expect("send");
    std::thread::sleep(Duration::from_millis(20));
    for _ in 0..4 {
        c.send_with_fds(3, b"x", &fds, PROMPT)
            .expect("within the limit");
    }
    let (t0, c0) = (Instant::now(), thread_cpu());
    c.send_with_fds(3, b"x", &fds, PROMPT)
        .expect("the fifth, once room is made");
    let (wall, cpu) = (t0.elapsed(), thread_cpu() - c0);
    assert!(
        cpu < wall / 4 + Duration::from_millis(30),
        "held for {wall:?}, {cpu:?} of CPU: it spun"
    );
}

struct Giving;
impl Handler for Giving {
    fn message(&self, conn: &Connection, req: &Request<'_>) {
        let f = null();
        let fds = [f.as_fd(), f.as_fd(), f.as_fd(), f.as_fd()];
        conn.respond_with_fds(req.seq(), req.id(), b"ok", &fds)
            .expect("the service took the request only with room for the answer's fds");
    }
}

ringlink_tests::transport_test! {
fn pipelined_requests_all_get_their_answers_fds() {
    let (addr, _running) = serve("fds-pipe", ServiceOptions::default(), Giving);
    let o = client_options(0).accept_fds(FdTerms::per_message(4)); // 16 in flight
    let mut c = Client::connect(&addr, &o).expect("connect");
    for _ in 0..12 {
        c.send(1, b"q").expect("send");
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut buf = [0u8; 8];
    for seq in 1..=12 {
        let m = c.recv(&mut buf, PROMPT).expect("an answer to every request");
        assert_eq!((m.seq, m.fds), (seq, 4));
        assert_eq!(c.take_fds().len(), 4);
    }
}
}

ringlink_tests::transport_test! {
fn a_blocking_route_takes_its_requests_fds() {
    let table = Dispatch::new().workers(1, 4).on_blocking(5, |conn, req| {
        let n = req.take_fds().len();
        let _ = conn.respond(req.seq(), 5, &[n as u8]);
    });
    let opts = ServiceOptions::default().accept_fds(FdTerms::per_message(4));
    let (addr, _running) = serve("fds-pool", opts, table);
    let mut c = Client::connect(&addr, &client_options(0)).expect("connect");
    let f = null();
    c.send_with_fds(5, b"", &[f.as_fd(), f.as_fd(), f.as_fd()], PROMPT).expect("send");
    let mut buf = [0u8; 8];
    let m = c.recv(&mut buf, PROMPT).expect("answer");
    assert_eq!(&buf[..m.len], [3]);
}
}

/// Sends, with an event, a TCP socket whose last close waits (unsent
/// data, `SO_LINGER` of 5 s), keeping its listener.
struct Lingering(Mutex<Vec<std::net::TcpListener>>);
impl Handler for Lingering {
    fn message(&self, conn: &Connection, _req: &Request<'_>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let mut s = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        s.set_nonblocking(true).expect("nonblocking");
        while s.write(&[0u8; 65536]).is_ok() {}
        let lg = libc::linger {
            l_onoff: 1,
            l_linger: 5,
        };
        // SAFETY: setsockopt reads a live local `linger`.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&lg as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(r, 0);
        let s: OwnedFd = s.into();
        conn.send_event_with_fds(7, b"sock", &[s.as_fd()])
            .expect("event");
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(l);
    }
}

ringlink_tests::transport_test! {
fn a_client_dropped_with_fds_queued_to_it_does_not_close_them_itself() {
    let (addr, _running) = serve("fds-drop", ServiceOptions::default(), Lingering(Mutex::new(Vec::new())));
    let o = client_options(0).accept_fds(FdTerms::per_message(4));
    let mut c = Client::connect(&addr, &o).expect("connect");
    c.send_oneway(1, b"q", PROMPT).expect("send");
    // The event (and, over shared memory, its fd's byte) is there.
    assert!(ringlink_tests::procs::readable(&c, 60_000));
    let t = Instant::now();
    drop(c);
    // Its last close would have waited the 5 s linger here.
    assert!(t.elapsed() < Duration::from_secs(4), "the drop waited {:?}", t.elapsed());
}
}
