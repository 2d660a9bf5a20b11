//! The counter examples (`counter_daemon`, `counter_cli`, `counter_watch`),
//! run as the processes a user would start: the command line waiting
//! for a daemon that is not there, INCR and GET, the tokio watchers
//! seeing SUBSCRIBE's events, an overflow refused, Ctrl-C to a watcher,
//! and SIGINT to the daemon, which prints its statistics and exits 0;
//! and, when the test may switch users (root), the uid checks of both
//! sides.
//!
//! Cargo builds a package's examples for its tests but does not tell the
//! tests where they are: they are in `target/<profile>/examples/`, next
//! to this test's `deps/` directory (as `ringlink-tests`'s
//! `ipc_examples` finds the role crates' examples). If they are not
//! there, the test says so and passes, unless `RINGLINK_REQUIRE_EXAMPLES`
//! is set (CI sets it), in which case it fails.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ringlink::client::{Client, ConnectOptions};
use ringlink::{Credentials, Error, ServiceAddr, Status};

/// Deadline of anything a test waits for: generous, it only turns a
/// hang into a failure.
const DEADLINE: Duration = Duration::from_secs(60);

/// `target/<profile>/examples/<name>`, if it was built.
fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/counter_examples-<hash>
    let p = exe.parent()?.parent()?.join("examples").join(name);
    p.is_file().then_some(p)
}

/// The three examples, or `None` (the test is skipped) if they are not
/// built and not required.
fn examples() -> Option<[String; 3]> {
    let bins = ["counter_daemon", "counter_cli", "counter_watch"].map(example);
    if let [Some(d), Some(c), Some(w)] = bins {
        return Some([d, c, w].map(|p| p.to_str().expect("UTF-8 path").to_owned()));
    }
    let msg =
        "the counter examples are not built (cargo test -p ringlink --all-features builds them)";
    assert!(
        std::env::var_os("RINGLINK_REQUIRE_EXAMPLES").is_none(),
        "{msg}"
    );
    eprintln!("skipped: {msg}");
    None
}

/// A process of an example, its output read line by line as it comes.
/// Killed and reaped on drop, whatever the test did.
struct Proc {
    what: String,
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    /// The lines read so far, for failure messages.
    seen: Vec<String>,
}

/// The lines of `r`, sent to the receiver as they come.
fn lines(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Proc {
    fn spawn<S: AsRef<str>>(bin: &str, args: &[S]) -> Proc {
        Proc::spawn_as(bin, args, None)
    }

    /// Spawned as user `uid` (group `uid` too), if given.
    fn spawn_as<S: AsRef<str>>(bin: &str, args: &[S], uid: Option<u32>) -> Proc {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        let mut cmd = Command::new(bin);
        cmd.args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let stdout = lines(child.stdout.take().expect("stdout"));
        let stderr = lines(child.stderr.take().expect("stderr"));
        let name = bin.rsplit('/').next().unwrap_or(bin);
        Proc {
            what: format!("{name} {}", args.join(" ")),
            child,
            stdout,
            stderr,
            seen: Vec::new(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid() as i32), sig).expect("kill");
    }

    /// Waits for a line of stdout (or, with `err`, stderr) that contains
    /// `want`, skipping others.
    fn expect(&mut self, err: bool, want: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let rx = if err { &self.stderr } else { &self.stdout };
            match rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(want) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "{}: no line with {want:?} ({e}); seen {:?}",
                    self.what, self.seen
                ),
            }
        }
    }

    /// Waits for the process to exit; its status and the rest of its
    /// stdout and stderr.
    fn finish(mut self) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.what);
            std::thread::sleep(Duration::from_millis(10));
        };
        // The pipes end with the process: the readers see their end.
        let rest = |rx: &Receiver<String>| -> String { rx.iter().map(|l| l + "\n").collect() };
        (status, rest(&self.stdout), rest(&self.stderr))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the command line to its end: its exit code, stdout and stderr.
fn cli<S: AsRef<str>>(bin: &str, args: &[S]) -> (i32, String, String) {
    let p = Proc::spawn(bin, args);
    let what = p.what.clone();
    let (status, out, err) = p.finish();
    let code = status
        .code()
        .unwrap_or_else(|| panic!("{what}: killed by a signal ({status}); stderr: {err}"));
    (code, out, err)
}

/// The entries of `/dev/shm`.
fn shm() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Checks that nothing new in `/dev/shm` (against `before`) names one of
/// `pids` or `name`.
fn assert_no_leftovers(before: &BTreeSet<String>, pids: &[u32], name: &str) {
    let left: Vec<String> = shm()
        .difference(before)
        .filter(|f| f.contains(name) || pids.iter().any(|p| f.contains(&p.to_string())))
        .cloned()
        .collect();
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
}

#[test]
fn counter_daemon_cli_and_watchers() {
    let Some([daemon_bin, cli_bin, watch_bin]) = examples() else {
        return;
    };
    let before = shm();
    let name = format!("ringlink-test-{}-counter", std::process::id());
    let at = |args: &[&str]| -> Vec<String> {
        let mut v = vec!["--name".to_owned(), name.clone()];
        v.extend(args.iter().map(|a| a.to_string()));
        v
    };

    // No daemon: the command line waits 2 s for one, then says so.
    let started = Instant::now();
    let (code, _, err) = cli(&cli_bin, &at(&["get"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no counter daemon"), "{err}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "it did not wait"
    );
    let (code, _, err) = cli(&cli_bin, &at(&["incr", "many"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("usage"), "{err}");

    let mut daemon = Proc::spawn(&daemon_bin, &at(&[]));
    daemon.expect(true, "listening");
    let mut watchers = [0, 1].map(|_| Proc::spawn(&watch_bin, &at(&[])));
    for w in &mut watchers {
        w.expect(false, "value 0"); // subscribed: the value now
    }

    for (args, out) in [(&["incr"][..], "1"), (&["incr", "5"], "6"), (&["get"], "6")] {
        let (code, stdout, err) = cli(&cli_bin, &at(args));
        assert_eq!((code, stdout.trim()), (0, out), "{args:?}: {err}");
    }
    for w in &mut watchers {
        w.expect(false, "value 1");
        w.expect(false, "value 6");
    }
    // An overflow: refused with the application's error, nothing changed.
    let (code, _, err) = cli(&cli_bin, &at(&["incr", &i64::MAX.to_string()]));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("would overflow"), "{err}");

    // Ctrl-C to a watcher: it stops, exit 0.
    let [first, mut second] = watchers;
    first.signal(Signal::SIGINT);
    let (status, _, err) = first.finish();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("stopped"), "{err}");

    // SIGINT to the daemon: every connection closes (the other watcher
    // sees it), the statistics, exit 0. Clients served: 4 command lines
    // (the first two never connected) and 2 watchers.
    let daemon_pid = daemon.pid();
    daemon.signal(Signal::SIGINT);
    let (status, out, err) = daemon.finish();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(
        out.contains("value 6, 2 increments, 6 clients served, 0 refused"),
        "{out}{err}"
    );
    second.expect(true, "the daemon is gone");
    let (status, _, err) = second.finish();
    assert_eq!(status.code(), Some(1), "{err}");
    let (code, _, err) = cli(&cli_bin, &at(&["get"]));
    assert_eq!(code, 1, "{err}");

    assert_no_leftovers(&before, &[daemon_pid], &name);
}

/// The uid checks: a daemon of another user refuses the test's client
/// (its `Handler::accept`), and the command line refuses the daemon
/// (`ConnectOptions::server_uid`). Needs root, to run the daemon as
/// `nobody`; skipped otherwise.
#[test]
fn counter_uid_checks() {
    let Some([daemon_bin, cli_bin, _]) = examples() else {
        return;
    };
    if Credentials::current().uid != 0 {
        eprintln!("skipped: needs root, to run the daemon as another user");
        return;
    }
    const NOBODY: u32 = 65534;
    let before = shm();
    let name = format!("ringlink-test-{}-counter-nobody", std::process::id());
    let mut daemon = Proc::spawn_as(&daemon_bin, &["--name", &name], Some(NOBODY));
    daemon.expect(true, "listening");

    // Root is not the daemon's user: refused in the handshake.
    let opts = ConnectOptions::new("counter");
    match Client::connect(&ServiceAddr::named(&name), &opts) {
        Err(Error::Rejected(Status::PermissionDenied)) => {}
        other => panic!("a client of another user: {other:?}"),
    }
    // The command line wants a daemon of its own user.
    let (code, _, err) = cli(&cli_bin, &["--name", &name, "incr"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not uid 0"), "{err}");

    let daemon_pid = daemon.pid();
    daemon.signal(Signal::SIGINT);
    let (status, out, err) = daemon.finish();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(
        out.contains("value 0, 0 increments, 0 clients served, 1 refused"),
        "{out}{err}"
    );
    assert_no_leftovers(&before, &[daemon_pid], &name);
}
