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
//! - `half`: runs the handshake by hand up to the server's answer and
//!   stops there, never confirming: reports `half status=N fds=N
//!   prefix=PATH` (the named-ring path prefix, `-` if none) and waits
//!   until killed. The rings stay the server's, mid-handshake.
//! - `load THREADS COUNT SEED MAX_DATA`: THREADS clients at once, each
//!   doing COUNT checked request/responses; reports `done ...` or
//!   `error ...` (exit 1).
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

fn half(a: &Args, out: &mut Out) -> Result<(), String> {
    use ringlink_common::fdpass::recv_fds;
    use ringlink_common::wire::{
        ConnectRequest, ConnectResponse, Transport, PROTOCOL_VERSION, RESPONSE_LEN,
    };
    use std::io::{Read, Write};
    let path = match &a.addr {
        ServiceAddr::Abstract(name) => format!("\0{name}"),
        ServiceAddr::Path(p) => p.display().to_string(),
    };
    let sock = if let Some(name) = path.strip_prefix('\0') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .map_err(|e| format!("address: {e}"))?;
        std::os::unix::net::UnixStream::connect_addr(&addr)
    } else {
        std::os::unix::net::UnixStream::connect(&path)
    }
    .map_err(|e| format!("connect: {e}"))?;
    let request = ConnectRequest {
        version: PROTOCOL_VERSION,
        transport: Transport::Shm,
        max_message: a.max_message,
        protocol: ipc::PROTOCOL.into(),
    };
    (&sock)
        .write_all(&request.encode())
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; RESPONSE_LEN];
    let mut got = 0;
    let mut fds = Vec::new();
    while got < RESPONSE_LEN {
        let (n, more) = recv_fds(&sock, &mut buf[got..]).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("server closed the socket".into());
        }
        fds.extend(more);
        got += n;
    }
    let answer = ConnectResponse::decode(&buf).map_err(|e| format!("response: {e}"))?;
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
