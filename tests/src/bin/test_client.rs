//! The client process of the IPC integration tests: a real
//! `ringlink_ipcc::Client` of the test protocol (`ringlink_tests::ipc`),
//! for the cases where the client must be a process of its own (killed,
//! another user, many at once). It connects with `wait_for_server`, so it
//! may start before its server, and reports `key ...` lines on the
//! socket it inherits (`ringlink_tests::peer`) and on stdout.
//!
//! ```text
//! test_client MODE (--name NAME | --path PATH) [--max-message N]
//!             [--as-uid UID --as-gid GID] [ARGS...]
//! ```
//!
//! Modes:
//!
//! - `block recv|event`: connects (`connected id=..`), for `recv` sends a
//!   request the server holds, reports `blocking tid=..`, then waits in
//!   `recv` / `event_recv` with no timeout; when that returns, reports
//!   `result KIND connected=BOOL after=KIND` (what the call returned,
//!   `is_connected()` then, and what a following `send` returned).
//! - `farewell`: connects (`connected id=..`), sends a request the
//!   server holds, reports `blocking tid=..`, then waits in `recv` and
//!   then in `event_recv` (no timeouts) for what the server's
//!   `farewell-all` publishes before it disconnects, and reports `result
//!   resp=KIND event=KIND after=KIND` (`Ok` when the right message came;
//!   `after` is a last `recv`).
//! - `stream`: connects (`connected id=..`), then echoes requests of
//!   varying sizes, checking each answer, until killed.
//! - `burst-hold COUNT`: asks for a burst of COUNT maximum-size events,
//!   reports `requested`, and never reads them, until killed.
//! - `whoami`: connects and reports `whoami ...` (what the server sees),
//!   `server pid=.. uid=.. gid=..` (`server_credentials()`) and `self
//!   pid=.. uid=.. gid=..`; or `rejected KIND` if refused.
//! - `half`: runs the handshake by hand (over the transport of
//!   `RINGLINK_TEST_TRANSPORT`) up to the server's answer and stops
//!   there, never confirming: reports `half status=N fds=N prefix=PATH`
//!   (the named-ring path prefix, `-` if none) and waits until killed.
//!   The rings (or sockets) stay the server's, mid-handshake.
//! - `load THREADS COUNT SEED MAX_DATA`: THREADS clients at once, each
//!   doing COUNT checked request/responses; reports `done ...` or
//!   `error ...` (exit 1).
//! - `chaos SEED`: a client to be SIGKILLed at a random moment. Says
//!   nothing; connects and runs, until killed, a random mix (from SEED)
//!   of checked requests up to the connection's maximum (the kill lands
//!   mid-write or mid-read of large ones), bursts of events filling the
//!   event ring and read back, pipelined echoes, waits in `recv` on a
//!   request the server holds and in `event_recv` with nothing coming,
//!   and reconnections. Every answer is checked: a wrong one exits 1.
//! - `block-many N`: N connections, each in a thread of its own, which
//!   reports `blocking I tid=..` and then waits with no timeout: thread I
//!   in `send_recv` (I % 3 = 0) or `recv` (1) of a request the server
//!   holds, or in `event_recv` (2). When the call returns it reports
//!   `result I KIND at_ns=..` (`CLOCK_MONOTONIC`, see
//!   `procfs::monotonic_ns`).
//! - `tear SIZE`: connects by hand (`ringlink_tests::attack`, wishing for
//!   1 MiB messages), does three checked round trips, then starts the
//!   fourth checked request, of SIZE payload bytes, and stops half-way:
//!   shared memory, a reserved record with the header and half the
//!   payload written, never committed; sockets, the first datagram (the
//!   header and half the payload) of a message whose rest never comes.
//!   Reports `torn`, then waits to be killed.
//!
//! - `freeze`: the shared-fd attack (issue 11), written from the
//!   protocol documents (`ringlink_tests::attack`): connects by hand,
//!   then, on every fd the connection brought into this process (but
//!   those it signals the server through itself), drains
//!   and saturates it if it is an eventfd and clears `O_NONBLOCK` on its
//!   open file description (shared with the server for any fd that came
//!   over `SCM_RIGHTS`); raises every waiting flag a client may raise and
//!   sends echo requests whose answers it never reads, so that the
//!   server signals it. Reports `armed fds=N sent=N did=...`, then keeps
//!   raising the flags and sending what fits, every millisecond, until
//!   killed. The server must go on serving everyone else.
//!
//! - `flood-wakes`: connects by hand over shared memory and writes bytes
//!   on its stream socket as fast as the socket takes them (each byte is
//!   a wake-up for the server), with an echo round trip every thousand
//!   writes; reports `flooding` once the first write went, then goes on
//!   until killed.
//! - `attach-fds`: attaches, with `SCM_RIGHTS`, a TCP socket whose last
//!   close would wait two minutes (`raw::lingering_socket_on`; a fresh
//!   one each time, whose only other copy it closes at once, so that the
//!   server's would be the last) to every byte it can: the request, the
//!   confirmation, then (shared memory) a wake-up byte, or (sockets) an
//!   echo request's datagram, each echoed back. Where the server's socket
//!   refuses fds (`SO_PASSRIGHTS` off) the sends fail and the bytes go
//!   without. Reports `attached request=R confirm=R message=R` (`ok` or
//!   the error kind), then goes on attaching to wake-ups every
//!   millisecond until killed.
//! - `hold COUNT`: raises its soft `RLIMIT_NOFILE` to the hard limit,
//!   then opens up to COUNT connections one after the other (no waiting
//!   for the server: each must be accepted or refused at once), each
//!   checked with an echo, and stops at the first refusal. Reports `held
//!   N refused=KIND` (`-` if none was refused) and keeps them until
//!   killed.
//!
//! Exit status: 0 when the mode ran to its end, 1 on an error, 3 when the
//! watchdog fired.

use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ringlink_ipcc::{Client, ConnectOptions, Credentials, Error, ServiceAddr};
use ringlink_tests::ipc::{self, id, Burst, Defer, DEFER_HEADER};
use ringlink_tests::lines::Lines;
use ringlink_tests::payload;
use ringlink_tests::peer::{inherited_socket, start_watchdog};
use ringlink_tests::procfs::gettid;
use ringlink_tests::procs::switch_user;

/// Deadline of each call that should complete: only catches hangs.
const CALL: Option<Duration> = Some(Duration::from_secs(60));

struct Args {
    mode: String,
    addr: ServiceAddr,
    max_message: u32,
    ids: Option<(u32, u32)>,
    rest: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().ok_or("no mode")?;
    let (mut addr, mut max_message, mut uid, mut gid, mut rest) = (None, 0, None, None, vec![]);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--name" => addr = Some(ServiceAddr::named(&value()?)),
            "--path" => addr = Some(ServiceAddr::Path(value()?.into())),
            "--max-message" => max_message = num(&value()?)? as u32,
            "--as-uid" => uid = Some(num(&value()?)? as u32),
            "--as-gid" => gid = Some(num(&value()?)? as u32),
            _ => rest.push(a),
        }
    }
    Ok(Args {
        mode,
        addr: addr.ok_or("--name or --path is required")?,
        max_message,
        ids: uid.zip(gid),
        rest,
    })
}

fn num(s: &str) -> Result<u64, String> {
    s.parse().map_err(|e| format!("{s:?}: {e}"))
}

/// Reports a line on the socket and on stdout.
struct Out {
    lines: Lines,
}

impl Out {
    fn say(&mut self, line: &str) {
        println!("{line}");
        let _ = self.lines.send(line);
    }
}

fn connect(a: &Args) -> Result<Client, Error> {
    let mut o = ConnectOptions::new(ipc::PROTOCOL);
    o.wait_for_server = true;
    o.timeout = Duration::from_secs(60);
    o.server_wait = o.timeout;
    o.max_message = a.max_message;
    o.transport = ringlink_tests::transport::from_env();
    Client::connect(&a.addr, &o)
}

fn kind(r: &Result<impl Sized, Error>) -> String {
    match r {
        Ok(_) => "Ok".into(),
        Err(e) => ipc::error_kind(e),
    }
}

fn main() -> ExitCode {
    start_watchdog("test_client");
    let mut out = match inherited_socket().and_then(|s| Lines::new(&s)) {
        Ok(lines) => Out { lines },
        Err(e) => {
            eprintln!("test_client: socket: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("test_client: {e}");
            out.say(&format!("error {e}"));
            ExitCode::FAILURE
        }
    }
}

fn run(out: &mut Out) -> Result<(), String> {
    let a = parse_args()?;
    if let Some((uid, gid)) = a.ids {
        switch_user(uid, gid).map_err(|e| format!("switch to {uid}:{gid}: {e}"))?;
    }
    let rest: Vec<&str> = a.rest.iter().map(String::as_str).collect();
    match (a.mode.as_str(), rest.as_slice()) {
        ("block", [which]) => block(&a, out, which),
        ("stream", []) => stream(&a, out),
        ("farewell", []) => farewell(&a, out),
        ("burst-hold", [count]) => burst_hold(&a, out, num(count)?),
        ("whoami", []) => whoami(&a, out),
        ("half", []) => half(&a, out),
        ("chaos", [seed]) => chaos(&a, num(seed)?),
        ("block-many", [n]) => block_many(&a, out, num(n)? as usize),
        ("tear", [size]) => tear(&a, out, num(size)? as usize),
        ("freeze", []) => freeze(&a, out),
        ("hold", [count]) => hold(&a, out, num(count)? as usize),
        ("flood-wakes", []) => flood_wakes(&a, out),
        ("attach-fds", []) => attach_fds(&a, out),
        ("load", [threads, count, seed, max_data]) => load(
            &a,
            out,
            num(threads)? as usize,
            num(count)?,
            num(seed)?,
            num(max_data)? as usize,
        ),
        _ => Err(format!("bad mode or arguments: {} {rest:?}", a.mode)),
    }
}

fn freeze(a: &Args, out: &mut Out) -> Result<(), String> {
    use ringlink_tests::attack::RawClient;
    use ringlink_tests::raw;
    let transport = ringlink_tests::transport::from_env();
    let before = raw::open_fds();
    let mut c = RawClient::connect(&a.addr, transport);
    let mut did = Vec::new();
    let own = c.fds_it_signals();
    for &fd in raw::open_fds().difference(&before) {
        if own.contains(&fd) {
            continue;
        }
        did.push(raw::poison_fd(fd).map_err(|e| format!("fd {fd}: {e}"))?);
    }
    let turn = |c: &mut RawClient, sent: &mut u64| -> Result<(), String> {
        c.raise_all_flags();
        while *sent < 100_000 && c.try_send(id::ECHO, b"freeze")?.is_some() {
            *sent += 1;
        }
        Ok(())
    };
    let mut sent = 0u64;
    turn(&mut c, &mut sent)?;
    out.say(&format!(
        "armed fds={} sent={sent} did={}",
        did.len(),
        did.join(",").replace(' ', "_")
    ));
    loop {
        // The server may have lowered the flags (it swaps them to 0 when
        // it signals) or taken requests: again.
        turn(&mut c, &mut sent)?;
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn attach_fds(a: &Args, out: &mut Out) -> Result<(), String> {
    use ringlink_common::wire::{Confirm, MsgHeader, MSG_HEADER_LEN};
    use ringlink_tests::attack::{self, RawClient};
    use ringlink_tests::raw;
    use std::io::Write;
    use std::os::fd::AsFd;
    let transport = ringlink_tests::transport::from_env();
    // Kept until killed: its closing would reset the connections.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let said = |r: std::io::Result<usize>| match r {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("{:?}", e.kind()),
    };
    // Attached, or (refused) sent plainly.
    let send = |sock: &std::os::unix::net::UnixStream, bytes: &[u8]| -> Result<String, String> {
        let r = raw::send_lingering(sock.as_fd(), bytes, &listener);
        let what = said(
            r.as_ref()
                .map(|n| *n)
                .map_err(|e| std::io::Error::from(e.kind())),
        );
        match r {
            Ok(n) if n == bytes.len() => {}
            Ok(n) => (&*sock).write_all(&bytes[n..]).map_err(|e| e.to_string())?,
            Err(_) => (&*sock).write_all(bytes).map_err(|e| e.to_string())?,
        }
        Ok(what)
    };
    let sock = attack::dial(&a.addr);
    let request = send(&sock, &attack::request(transport, 0))?;
    let c = RawClient::accept_answer(sock, transport);
    let confirm = send(&c.sock, &Confirm.encode())?;
    let mut c = c;
    let message = match transport {
        ringlink_common::Transport::Socket => {
            let mut d = vec![0u8; MSG_HEADER_LEN + 4];
            MsgHeader {
                id: id::ECHO,
                size: 4,
                error: 0,
                flags: 0,
                seq: 1,
            }
            .encode_into(&mut d);
            d[MSG_HEADER_LEN..].copy_from_slice(b"fd!?");
            let ringlink_tests::attack::Channels::Sock(s) = &c.ch else {
                return Err("not a socket connection".into());
            };
            let r = raw::send_lingering(s.tx.fd(), &d, &listener);
            let what = said(
                r.as_ref()
                    .map(|n| *n)
                    .map_err(|e| std::io::Error::from(e.kind())),
            );
            if r.is_err() {
                c.send_datagram(&d);
            }
            let (h, p) = c
                .recv(CALL.expect("a deadline"))
                .map_err(|e| format!("echo: {e:?}"))?;
            if h.seq != 1 || p != b"fd!?" {
                return Err("wrong echo".into());
            }
            what
        }
        _ => {
            let r = send(&c.sock, &[1])?;
            c.echo(b"after an attached wake-up")?;
            r
        }
    };
    out.say(&format!(
        "attached request={request} confirm={confirm} message={message}"
    ));
    loop {
        if transport != ringlink_common::Transport::Socket {
            let _ = raw::send_lingering(c.sock.as_fd(), &[1], &listener);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn flood_wakes(a: &Args, out: &mut Out) -> Result<(), String> {
    use ringlink_tests::attack::RawClient;
    use std::os::fd::AsFd;
    let mut c = RawClient::connect(&a.addr, ringlink_tests::transport::from_env());
    let junk = [0x5Au8; 4096];
    let mut said = false;
    for n in 0u64.. {
        let _ = ringlink_tests::raw::send_datagram(c.sock.as_fd(), &junk, libc::MSG_DONTWAIT);
        if !said {
            out.say("flooding");
            said = true;
        }
        if n % 1000 == 999 {
            c.echo(b"still here")?;
        }
    }
    Ok(())
}

fn hold(a: &Args, out: &mut Out, count: usize) -> Result<(), String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit: {e}"))?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|e| format!("setrlimit: {e}"))?;
    let mut held = Vec::with_capacity(count);
    let mut refused = "-".to_owned();
    let mut buf = [0u8; 8];
    for i in 0..count {
        let mut o = ConnectOptions::new(ipc::PROTOCOL);
        o.timeout = Duration::from_secs(60);
        o.max_message = a.max_message;
        o.transport = ringlink_tests::transport::from_env();
        match Client::connect(&a.addr, &o) {
            Ok(mut c) => {
                c.send_recv(id::ECHO, b"hold", &mut buf, CALL)
                    .map_err(|e| format!("echo on connection {i}: {e}"))?;
                held.push(c);
            }
            Err(e) => {
                refused = ipc::error_kind(&e);
                break;
            }
        }
    }
    out.say(&format!("held {} refused={refused}", held.len()));
    loop {
        std::thread::park();
    }
}

fn half(a: &Args, out: &mut Out) -> Result<(), String> {
    use ringlink_tests::attack::{self, Answer};
    use std::io::{Read, Write};
    let sock = attack::dial(&a.addr);
    let request = attack::request(ringlink_tests::transport::from_env(), a.max_message);
    (&sock)
        .write_all(&request)
        .map_err(|e| format!("write: {e}"))?;
    let (answer, fds) = match attack::read_answer(&sock).map_err(|e| format!("read: {e}"))? {
        Answer::Response { response, fds } => (response, fds),
        Answer::Closed { got } => {
            return Err(format!("server closed the socket after {got} bytes"))
        }
    };
    let mut prefix = vec![0u8; answer.path_len as usize];
    (&sock)
        .read_exact(&mut prefix)
        .map_err(|e| format!("read: {e}"))?;
    let prefix = if prefix.is_empty() {
        "-".to_owned()
    } else {
        String::from_utf8_lossy(&prefix).into_owned()
    };
    out.say(&format!(
        "half status={} fds={} prefix={prefix}",
        answer.status as u16,
        fds.len()
    ));
    loop {
        std::thread::park();
    }
}

fn block(a: &Args, out: &mut Out, which: &str) -> Result<(), String> {
    let mut c = connect(a).map_err(|e| format!("connect: {e}"))?;
    out.say(&format!("connected id={}", c.id()));
    let mut buf = vec![0u8; c.max_message()];
    if which == "recv" {
        // A request the server holds (it waits for a batch of 1000).
        let mut req = [0u8; DEFER_HEADER];
        Defer {
            batch: 1000,
            order_seed: 0,
        }
        .encode_into(&mut req);
        c.send(id::DEFER, &req).map_err(|e| format!("send: {e}"))?;
    }
    out.say(&format!("blocking tid={}", gettid()));
    let r = match which {
        "recv" => c.recv(&mut buf, None),
        "event" => c.event_recv(&mut buf, None),
        _ => return Err(format!("block what? {which}")),
    };
    let connected = c.is_connected();
    let after = c.send(id::ECHO, b"after");
    out.say(&format!(
        "result {} connected={connected} after={}",
        kind(&r),
        kind(&after)
    ));
    Ok(())
}

fn farewell(a: &Args, out: &mut Out) -> Result<(), String> {
    let mut c = connect(a).map_err(|e| format!("connect: {e}"))?;
    out.say(&format!("connected id={}", c.id()));
    let mut req = [0u8; DEFER_HEADER];
    Defer {
        batch: 1000,
        order_seed: 0,
    }
    .encode_into(&mut req);
    let seq = c.send(id::DEFER, &req).map_err(|e| format!("send: {e}"))?;
    out.say(&format!("blocking tid={}", gettid()));
    let mut buf = vec![0u8; c.max_message()];
    let resp = match c.recv(&mut buf, None) {
        Ok(m) if m.seq == seq && buf[..m.len] == req => "Ok".to_owned(),
        Ok(m) => format!("Wrong(seq={},len={})", m.seq, m.len),
        Err(e) => ipc::error_kind(&e),
    };
    let event = match c.event_recv(&mut buf, None) {
        Ok(m) if m.id == id::FAREWELL && &buf[..m.len] == b"bye" => "Ok".to_owned(),
        Ok(m) => format!("Wrong(id={},len={})", m.id, m.len),
        Err(e) => ipc::error_kind(&e),
    };
    let after = c.recv(&mut buf, None);
    out.say(&format!(
        "result resp={resp} event={event} after={}",
        kind(&after)
    ));
    Ok(())
}

fn stream(a: &Args, out: &mut Out) -> Result<(), String> {
    let mut c = connect(a).map_err(|e| format!("connect: {e}"))?;
    out.say(&format!("connected id={}", c.id()));
    let max = c.max_message();
    let (mut req, mut buf) = (vec![0u8; max], vec![0u8; max]);
    for i in 0u64.. {
        let len = payload::record_len(1, i, max);
        payload::fill(1, i, &mut req[..len]);
        let m = c
            .send_recv(id::ECHO, &req[..len], &mut buf, CALL)
            .map_err(|e| format!("request {i}: {e}"))?;
        if m.len != len || buf[..len] != req[..len] {
            return Err(format!("request {i}: wrong answer ({} bytes)", m.len));
        }
    }
    Ok(())
}

fn burst_hold(a: &Args, out: &mut Out, count: u64) -> Result<(), String> {
    let mut c = connect(a).map_err(|e| format!("connect: {e}"))?;
    out.say(&format!("connected id={}", c.id()));
    let b = Burst {
        count,
        big_every: 1,
        seed: 5,
    };
    let mut buf = [0u8; 64];
    c.send_recv(id::BURST, &b.encode(), &mut buf, CALL)
        .map_err(|e| format!("burst request: {e}"))?;
    out.say("requested");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn whoami(a: &Args, out: &mut Out) -> Result<(), String> {
    let mut c = match connect(a) {
        Ok(c) => c,
        Err(e @ Error::Rejected(_)) => {
            out.say(&format!("rejected {}", ipc::error_kind(&e)));
            return Ok(());
        }
        Err(e) => return Err(format!("connect: {e}")),
    };
    let mut buf = vec![0u8; c.max_message()];
    let m = c
        .send_recv(id::WHOAMI, b"", &mut buf, CALL)
        .map_err(|e| format!("whoami: {e}"))?;
    out.say(&format!(
        "whoami {}",
        String::from_utf8_lossy(&buf[..m.len])
    ));
    let s = c.server_credentials();
    out.say(&format!("server pid={} uid={} gid={}", s.pid, s.uid, s.gid));
    let me = Credentials::current();
    out.say(&format!(
        "self pid={} uid={} gid={}",
        me.pid, me.uid, me.gid
    ));
    Ok(())
}

/// One client of the load: `count` checked requests, each answer checked.
fn load_one(c: &mut Client, count: u64, seed: u64, max_data: usize) -> Result<(), String> {
    let (mut req, mut buf) = (Vec::new(), vec![0u8; c.max_message()]);
    for n in 0..count {
        ipc::checked_request(seed, n, max_data, &mut req);
        let m = c
            .send_recv(id::CHECKED, &req, &mut buf, CALL)
            .map_err(|e| format!("request {n}: {e}"))?;
        if m.id != id::CHECKED || m.error != 0 {
            return Err(format!("request {n}: answer id {} error {}", m.id, m.error));
        }
        if buf[..m.len] != req[..] {
            return Err(format!("request {n}: answer differs ({} bytes)", m.len));
        }
    }
    Ok(())
}

fn load(
    a: &Args,
    out: &mut Out,
    threads: usize,
    count: u64,
    seed: u64,
    max_data: usize,
) -> Result<(), String> {
    // Everyone connects first, then all start together.
    let barrier = Arc::new(Barrier::new(threads));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let barrier = barrier.clone();
            let (addr, max) = (a.addr.clone(), a.max_message);
            std::thread::spawn(move || -> Result<(), String> {
                let mut o = ConnectOptions::new(ipc::PROTOCOL);
                o.wait_for_server = true;
                o.timeout = Duration::from_secs(60);
                o.server_wait = o.timeout;
                o.max_message = max;
                o.transport = ringlink_tests::transport::from_env();
                let c = Client::connect(&addr, &o);
                barrier.wait();
                let mut c = c.map_err(|e| format!("thread {t}: connect: {e}"))?;
                load_one(&mut c, count, seed ^ ((t as u64) << 32), max_data)
                    .map_err(|e| format!("thread {t} (conn {}): {e}", c.id()))
            })
        })
        .collect();
    let mut errors = Vec::new();
    for w in workers {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("a thread panicked".into()),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    out.say(&format!(
        "done clients={threads} requests={count} elapsed_ms={}",
        start.elapsed().as_millis()
    ));
    Ok(())
}

fn chaos(a: &Args, seed: u64) -> Result<(), String> {
    let mut dice = payload::Dice::new(seed);
    loop {
        let mut c = connect(a).map_err(|e| format!("connect: {e}"))?;
        let max = c.max_message();
        let mut buf = vec![0u8; max];
        let mut req = Vec::new();
        let mut checked = 0u64;
        for _ in 0..20 + dice.below(200) {
            match dice.below(100) {
                // A checked request: one in four as large as the
                // connection allows.
                0..=39 => {
                    let max_data = if dice.below(4) == 0 {
                        max - ipc::CHECKED_HEADER
                    } else {
                        1 + dice.below(8192) as usize
                    };
                    ipc::checked_request(seed, checked, max_data, &mut req);
                    let m = c
                        .send_recv(id::CHECKED, &req, &mut buf, CALL)
                        .map_err(|e| format!("checked {checked}: {e}"))?;
                    if m.error != 0 || buf[..m.len] != req[..] {
                        return Err(format!("checked {checked}: wrong answer"));
                    }
                    checked += 1;
                }
                // Events until the ring is full, read back.
                40..=54 => {
                    let len = 1 + dice.below(32 * 1024);
                    let m = c
                        .send_recv(id::FILL, &len.to_le_bytes(), &mut buf, CALL)
                        .map_err(|e| format!("fill: {e}"))?;
                    if m.len != 8 {
                        return Err("fill: wrong answer".into());
                    }
                    let n = u64::from_le_bytes(buf[..8].try_into().map_err(|_| "fill answer")?);
                    let mut want = vec![0u8; len as usize];
                    for i in 0..n {
                        let e = c
                            .event_recv(&mut buf, CALL)
                            .map_err(|e| format!("event {i}: {e}"))?;
                        ipc::fill_event(i, &mut want);
                        if e.id != id::FILL_EVENT || buf[..e.len] != want[..] {
                            return Err(format!("fill event {i}: wrong"));
                        }
                    }
                }
                // Pipelined echoes.
                55..=69 => {
                    let k = 1 + dice.below(32);
                    let mut sent = Vec::new();
                    for i in 0..k {
                        let p = dice.roll().to_le_bytes();
                        sent.push((
                            c.send(id::ECHO, &p).map_err(|e| format!("echo {i}: {e}"))?,
                            p,
                        ));
                    }
                    for (seq, p) in sent {
                        let m = c
                            .recv(&mut buf, CALL)
                            .map_err(|e| format!("echo {seq}: {e}"))?;
                        if m.seq != seq || buf[..m.len] != p {
                            return Err(format!("echo {seq}: wrong answer"));
                        }
                    }
                }
                // Blocked in recv on a request the server holds.
                70..=79 => {
                    let seq = c
                        .send(id::DEFER, &Defer::held())
                        .map_err(|e| format!("hold: {e}"))?;
                    match c.recv(&mut buf, Some(Duration::from_millis(1 + dice.below(20)))) {
                        Err(Error::TimedOut) => {}
                        other => return Err(format!("held {seq}: {:?}", other.map(|m| m.seq))),
                    }
                }
                // Blocked in event_recv with nothing coming.
                80..=89 => {
                    match c.event_recv(&mut buf, Some(Duration::from_millis(1 + dice.below(10)))) {
                        Err(Error::TimedOut) => {}
                        other => return Err(format!("idle event_recv: {:?}", other.map(|m| m.id))),
                    }
                }
                // An echo sent back as an event.
                90..=95 => {
                    let p = dice.roll().to_le_bytes();
                    c.send(id::EVENT_ONLY, &p)
                        .map_err(|e| format!("event-only: {e}"))?;
                    let m = c
                        .event_recv(&mut buf, CALL)
                        .map_err(|e| format!("event-only: {e}"))?;
                    if m.id != id::EVENT_ONLY || buf[..m.len] != p {
                        return Err("event-only: wrong event".into());
                    }
                }
                // Leave and come back.
                _ => break,
            }
        }
    }
}

fn block_many(a: &Args, out: &mut Out, n: usize) -> Result<(), String> {
    let say = std::sync::Mutex::new(out);
    let tell = |line: String| say.lock().unwrap_or_else(|e| e.into_inner()).say(&line);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..n)
            .map(|i| {
                let tell = &tell;
                scope.spawn(move || -> Result<(), String> {
                    let mut c = connect(a).map_err(|e| format!("thread {i}: connect: {e}"))?;
                    let mut buf = vec![0u8; c.max_message()];
                    let hold = Defer::held();
                    if i % 3 == 1 {
                        c.send(id::DEFER, &hold)
                            .map_err(|e| format!("thread {i}: send: {e}"))?;
                    }
                    tell(format!("blocking {i} tid={}", gettid()));
                    let r = match i % 3 {
                        0 => c.send_recv(id::DEFER, &hold, &mut buf, None),
                        1 => c.recv(&mut buf, None),
                        _ => c.event_recv(&mut buf, None),
                    };
                    let at = ringlink_tests::procfs::monotonic_ns();
                    tell(format!("result {i} {} at_ns={at}", kind(&r)));
                    Ok(())
                })
            })
            .collect();
        for t in threads {
            t.join().map_err(|_| "a thread panicked")??;
        }
        Ok(())
    })
}

fn tear(a: &Args, out: &mut Out, size: usize) -> Result<(), String> {
    use ringlink_common::wire::{MsgHeader, MSG_HEADER_LEN};
    use ringlink_tests::attack::{Channels, RawClient, HANG};
    let transport = ringlink_tests::transport::from_env();
    let mut c = RawClient::connect_with(&a.addr, transport, 1 << 20);
    let seed = 0x7EA2;
    let mut req = Vec::new();
    for n in 0..3 {
        ipc::checked_request(seed, n, 1000, &mut req);
        let seq = c.send(id::CHECKED, &req)?;
        let (h, p) = c.recv(HANG).map_err(|e| format!("checked {n}: {e:?}"))?;
        if h.seq != seq || h.error != 0 || p != req {
            return Err(format!("checked {n}: wrong answer"));
        }
    }
    // Request 3, whole, as it would have been sent (no larger than the
    // connection allows).
    let size = size.min(c.max_message - ipc::CHECKED_HEADER);
    let mut whole = Vec::with_capacity(ipc::CHECKED_HEADER + size);
    whole.extend_from_slice(&3u64.to_le_bytes());
    whole.extend_from_slice(&seed.to_le_bytes());
    whole.resize(ipc::CHECKED_HEADER + size, 0);
    payload::fill(seed, 3, &mut whole[ipc::CHECKED_HEADER..]);
    let header = MsgHeader {
        id: id::CHECKED,
        size: whole.len() as u32,
        error: 0,
        flags: 0,
        seq: 4,
    };
    let half = whole.len() / 2;
    let _grant = match &mut c.ch {
        Channels::Shm(s) => {
            let mut g = s
                .request
                .try_reserve(MSG_HEADER_LEN + whole.len())
                .map_err(|e| format!("reserve: {e}"))?;
            header.encode_into(&mut g);
            g[MSG_HEADER_LEN..MSG_HEADER_LEN + half].copy_from_slice(&whole[..half]);
            Some(g) // held, never committed
        }
        Channels::Sock(_) => {
            // The message's first datagram, no larger than a real client
            // sends one (64 KiB; a larger one can exceed the kernel's
            // socket buffer), with at most half the payload.
            let half = half.min((64 << 10) - MSG_HEADER_LEN);
            let mut first = vec![0u8; MSG_HEADER_LEN + half];
            header.encode_into(&mut first);
            first[MSG_HEADER_LEN..].copy_from_slice(&whole[..half]);
            c.send_datagram(&first);
            None
        }
    };
    out.say("torn");
    loop {
        std::thread::park();
    }
}
