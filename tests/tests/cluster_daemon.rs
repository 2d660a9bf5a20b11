//! ringlink against a real cluster daemon, unmodified, from Debian: a
//! single-node Corosync on loopback. Its `cmap` service (libqb IPC) is
//! what `corosync-cmapctl`, the reference client, reads the cluster's
//! configuration through:
//!
//! - ringlink's client reads keys and iterates a prefix, and gets what
//!   `corosync-cmapctl` prints, and keeps doing so over a thousand calls;
//! - then, Corosync stopped, a ringlink server serves `cmap` itself, and
//!   `corosync-cmapctl` reads keys from it, and is told of a missing one.
//!
//! One test, because both sides need the one name `cmap` (where a
//! Corosync runs already, the first half reads it and the second is
//! skipped, saying so). Needs Debian's
//! `corosync` (`scripts/install-test-deps`) and root (Corosync's
//! realtime scheduling and its files); skips with the reason otherwise,
//! unless `RINGLINK_REQUIRE_COROSYNC` is set (CI sets it).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringlink_ipcc::{Client, ConnectOptions};
use ringlink_ipcs::{Connection, Handler, Request, Service, ServiceOptions};
use ringlink_tests::cmap::{self, cs, Value};

const T: Duration = Duration::from_secs(60);
const CALL: Option<Duration> = Some(Duration::from_secs(30));

fn skip_or_fail(why: &str) {
    assert!(
        std::env::var_os("RINGLINK_REQUIRE_COROSYNC").is_none(),
        "{why}, and RINGLINK_REQUIRE_COROSYNC is set"
    );
    eprintln!("SKIPPED cluster_daemon: {why}");
}

/// A Corosync started for the test: stopped, and its leftovers in
/// `/dev/shm` (its log's blackbox) removed, on drop.
struct Corosync {
    child: Child,
    _dir: ringlink_tests::tmp::TempDir,
}

impl Corosync {
    fn start() -> Corosync {
        let dir = ringlink_tests::tmp::TempDir::new("corosync");
        let conf = dir.path().join("corosync.conf");
        std::fs::write(
            &conf,
            "totem {\n version: 2\n cluster_name: ringlink-test\n transport: knet\n \
             crypto_cipher: none\n crypto_hash: none\n}\n\
             nodelist {\n node {\n ring0_addr: 127.0.0.1\n name: node1\n nodeid: 1\n }\n}\n\
             quorum {\n provider: corosync_votequorum\n}\n\
             logging {\n to_stderr: yes\n to_syslog: no\n to_logfile: no\n}\n",
        )
        .expect("config");
        let child = Command::new("corosync")
            .arg("-f")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start corosync");
        Corosync { child, _dir: dir }
    }

    fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        let pid = self.child.id();
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let leftover = format!("qb-corosync-{pid}-");
        if let Ok(d) = std::fs::read_dir("/dev/shm") {
            for e in d.flatten() {
                if e.file_name().to_string_lossy().starts_with(&leftover) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

impl Drop for Corosync {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// `corosync-cmapctl ARGS`: stdout, stderr, whether it succeeded.
fn cmapctl(args: &[&str]) -> (String, String, bool) {
    let out = Command::new("corosync-cmapctl")
        .args(args)
        .output()
        .expect("run corosync-cmapctl");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

fn opts() -> ConnectOptions {
    let mut o = ConnectOptions::new("");
    o.timeout = Duration::from_secs(10);
    o
}

/// Reads `key` through ringlink's client: the length and type first (no
/// buffer offered), then the value, as `cmap_get` does.
fn get(c: &mut Client, key: &str) -> Result<Value, i32> {
    let mut buf = vec![0u8; c.max_message()];
    let m = c
        .send_recv(cmap::id::GET, &cmap::get_request(key, 0), &mut buf, CALL)
        .expect("cmap get");
    if m.error != cs::OK {
        return Err(m.error);
    }
    let len = u64::from_le_bytes(buf[..8].try_into().unwrap());
    let m = c
        .send_recv(cmap::id::GET, &cmap::get_request(key, len), &mut buf, CALL)
        .expect("cmap get");
    assert_eq!(m.id, cmap::id::GET);
    if m.error != cs::OK {
        return Err(m.error);
    }
    Ok(cmap::read_get_response(&buf[..m.len]).expect("a GET response"))
}

/// The keys under `prefix`, with their values, through ringlink's client.
fn list(c: &mut Client, prefix: &str) -> Vec<String> {
    let mut buf = vec![0u8; c.max_message()];
    let m = c
        .send_recv(
            cmap::id::ITER_INIT,
            &cmap::iter_init_request(prefix),
            &mut buf,
            CALL,
        )
        .expect("iter init");
    assert_eq!(m.error, cs::OK, "iter init");
    let h = cmap::read_handle(&buf[..m.len]).expect("a handle");
    let mut keys = Vec::new();
    loop {
        let m = c
            .send_recv(cmap::id::ITER_NEXT, &cmap::handle(h), &mut buf, CALL)
            .expect("iter next");
        if m.error == cs::NO_SECTIONS {
            break;
        }
        assert_eq!(m.error, cs::OK, "iter next");
        let (key, _, _) = cmap::read_iter_next_response(&buf[..m.len]).expect("a key");
        keys.push(key);
    }
    let m = c
        .send_recv(cmap::id::ITER_FINALIZE, &cmap::handle(h), &mut buf, CALL)
        .expect("iter finalize");
    assert_eq!(m.error, cs::OK, "iter finalize");
    keys.into_iter()
        .map(|k| {
            let v = get(c, &k).unwrap_or_else(|e| panic!("{k}: cs error {e}"));
            format!("{k} {}", v.show())
        })
        .collect()
}

#[test]
fn corosync_and_corosync_cmapctl() {
    let have = |bin: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("corosync") || !have("corosync-cmapctl") {
        return skip_or_fail("corosync is not installed (scripts/install-test-deps installs it)");
    }
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return skip_or_fail("Corosync needs root");
    }
    // The real daemon, read by ringlink's client: ours, or one that runs
    // here already (then the name is taken for the second half).
    let daemon = if Client::connect_libqb("cmap", &opts()).is_ok() {
        eprintln!("a Corosync already runs here: reading that one");
        None
    } else {
        Some(Corosync::start())
    };
    let deadline = Instant::now() + T;
    let mut c = loop {
        if let Ok(c) = Client::connect_libqb("cmap", &opts()) {
            break c;
        }
        assert!(Instant::now() < deadline, "Corosync's cmap never came up");
        std::thread::sleep(Duration::from_millis(100));
    };
    for key in [
        "totem.cluster_name",
        "totem.version",
        "nodelist.node.0.ring0_addr",
        "nodelist.node.0.nodeid",
        "runtime.votequorum.this_node_id",
    ] {
        let (out, err, ok) = cmapctl(&["-g", key]);
        assert!(ok, "corosync-cmapctl -g {key}: {err}");
        let ours = get(&mut c, key).unwrap_or_else(|e| panic!("{key}: cs error {e}"));
        assert_eq!(format!("{key} {}", ours.show()), out.trim_end(), "{key}");
        eprintln!("{}", out.trim_end());
    }
    assert_eq!(get(&mut c, "no.such.key"), Err(cs::NOT_EXIST));
    let (out, err, ok) = cmapctl(&["totem."]);
    assert!(ok, "corosync-cmapctl totem.: {err}");
    let theirs: Vec<&str> = out.lines().collect();
    assert_eq!(list(&mut c, "totem."), theirs, "the keys under totem.");
    let name = get(&mut c, "totem.cluster_name");
    let t0 = Instant::now();
    for _ in 0..1000 {
        assert_eq!(get(&mut c, "totem.cluster_name"), name);
    }
    eprintln!("2000 cmap round trips with Corosync in {:?}", t0.elapsed());
    drop(c);
    let Some(daemon) = daemon else {
        eprintln!("SKIPPED the second half: the name cmap belongs to the Corosync that runs here");
        return;
    };
    daemon.stop();

    // A ringlink server as `cmap`, read by Corosync's own tool.
    let map: BTreeMap<String, Value> = [
        (
            "totem.cluster_name",
            Value::Str("served-by-ringlink".into()),
        ),
        ("runtime.votequorum.this_node_id", Value::U32(7)),
        ("totem.version", Value::U32(2)),
        ("quorum.expected_votes", Value::U32(3)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut service =
        Service::unbound("cmap", ServiceOptions::default(), Cmap::new(map)).expect("service");
    service
        .listen_libqb("cmap", ringlink_common::qb::QbTransport::Shm)
        .expect("listen as cmap");
    let stop = service.control_handle();
    let server = std::thread::spawn(move || service.run());
    for (key, want) in [
        (
            "totem.cluster_name",
            "totem.cluster_name (str) = served-by-ringlink",
        ),
        (
            "runtime.votequorum.this_node_id",
            "runtime.votequorum.this_node_id (u32) = 7",
        ),
    ] {
        let (out, err, ok) = cmapctl(&["-g", key]);
        assert!(ok, "corosync-cmapctl -g {key} against ringlink: {err}");
        assert_eq!(out.trim_end(), want);
    }
    let (_, err, ok) = cmapctl(&["-g", "no.such.key"]);
    assert!(
        !ok && err.contains("CS_ERR_NOT_EXIST"),
        "a missing key: {err}"
    );
    let (out, err, ok) = cmapctl(&["totem."]);
    assert!(ok, "corosync-cmapctl totem. against ringlink: {err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "totem.cluster_name (str) = served-by-ringlink",
            "totem.version (u32) = 2"
        ]
    );
    stop.shutdown();
    server.join().expect("join").expect("run");
}

/// A `cmap` service over a fixed map: choosing the map, `GET` and
/// iteration, as Corosync's `exec/cmap.c` answers them.
struct Cmap {
    map: BTreeMap<String, Value>,
    iters: Mutex<BTreeMap<u64, Vec<String>>>,
    next: Arc<Mutex<u64>>,
}

impl Cmap {
    fn new(map: BTreeMap<String, Value>) -> Cmap {
        Cmap {
            map,
            iters: Mutex::new(BTreeMap::new()),
            next: Arc::new(Mutex::new(1)),
        }
    }

    fn answer(&self, conn: &Connection, req: &Request<'_>, error: i32, payload: &[u8]) {
        let _ = conn.respond_vectored(
            req.seq(),
            req.id(),
            error,
            &[std::io::IoSlice::new(payload)],
        );
    }
}

impl Handler for Cmap {
    fn message(&self, conn: &Connection, req: &Request<'_>) {
        let p = req.payload();
        match req.id() {
            cmap::id::GET => {
                let Some((key, offered)) = cmap::read_get_request(p) else {
                    return self.answer(conn, req, cs::INVALID_PARAM, &[0; 16]);
                };
                match self.map.get(&key) {
                    None => self.answer(conn, req, cs::NOT_EXIST, &[]),
                    Some(v) if offered != 0 && (offered as usize) < v.bytes().len() => {
                        self.answer(conn, req, cs::INVALID_PARAM, &[])
                    }
                    Some(v) => {
                        self.answer(conn, req, cs::OK, &cmap::get_response(Some(v), offered))
                    }
                }
            }
            cmap::id::ITER_INIT => {
                let prefix = cmap::read_iter_init_request(p).unwrap_or_default();
                let keys: Vec<String> = self
                    .map
                    .keys()
                    .filter(|k| k.starts_with(&prefix))
                    .rev()
                    .cloned()
                    .collect();
                let h = {
                    let mut n = self.next.lock().unwrap();
                    *n += 1;
                    *n
                };
                self.iters.lock().unwrap().insert(h, keys);
                self.answer(conn, req, cs::OK, &cmap::handle(h));
            }
            cmap::id::ITER_NEXT => {
                let h = cmap::read_handle(p).unwrap_or(0);
                let next = self.iters.lock().unwrap().get_mut(&h).and_then(Vec::pop);
                match next.and_then(|k| self.map.get(&k).map(|v| (k, v))) {
                    Some((k, v)) => {
                        self.answer(conn, req, cs::OK, &cmap::iter_next_response(&k, v))
                    }
                    None => self.answer(conn, req, cs::NO_SECTIONS, &[0; cmap::NAME_LEN + 16]),
                }
            }
            // Only the default map here: the request is acknowledged.
            cmap::id::SET_CURRENT_MAP => self.answer(conn, req, cs::OK, &[]),
            cmap::id::ITER_FINALIZE => {
                let h = cmap::read_handle(p).unwrap_or(0);
                self.iters.lock().unwrap().remove(&h);
                self.answer(conn, req, cs::OK, &[]);
            }
            _ => self.answer(conn, req, cs::INVALID_PARAM, &[]),
        }
    }
}
