//! The examples, run for real: the two-terminal demo of the README (the
//! `echo_server` example of `ringlink-ipcs` and the `echo_client` example
//! of `ringlink-ipcc`), and their tokio counterparts (`async_echo_server`,
//! `async_echo_client`, `async_many_tasks`), and the libqb ones
//! (`qb_echo_server`, `qb_echo_client`) against libqb's own C programs.
//!
//! Cargo does not build other packages' examples for this package's
//! tests, nor tell a test where they are; a workspace test run (`cargo
//! nextest run --workspace`, the README's command) builds them into
//! `target/<profile>/examples/`, next to this test's own `deps/`
//! directory, and that is where this test looks. If they are not there
//! (e.g. `cargo test -p ringlink-tests` on a clean tree), the test says
//! so on stderr and passes, unless `RINGLINK_REQUIRE_EXAMPLES` is set,
//! in which case it fails.

use std::path::PathBuf;
use std::time::Duration;

use ringlink_ipcc::{Client, ConnectOptions, Error, ServiceAddr};
use ringlink_tests::peer::describe;
use ringlink_tests::procs::Helper;
use ringlink_tests::tmp::unique_name;

const EXIT: Duration = Duration::from_secs(30);

/// `target/<profile>/examples/<name>`, if it was built.
fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/ipc_examples-<hash>
    let profile_dir = exe.parent()?.parent()?;
    let p = profile_dir.join("examples").join(name);
    p.is_file().then_some(p)
}

#[test]
fn echo_server_and_echo_client() {
    let (Some(server_bin), Some(client_bin)) = (example("echo_server"), example("echo_client"))
    else {
        let msg =
            "the echo examples are not built (cargo build --examples, or a workspace test run)";
        assert!(
            std::env::var_os("RINGLINK_REQUIRE_EXAMPLES").is_none(),
            "{msg}"
        );
        eprintln!("skipped: {msg}");
        return;
    };
    let (server_bin, client_bin) = (server_bin.to_str().unwrap(), client_bin.to_str().unwrap());
    let name = unique_name("echo");

    // No server yet: the client says so and exits 1.
    let fin = Helper::spawn(client_bin, &["--name", &name, "hello"]).wait(EXIT);
    assert_eq!(describe(fin.status), "exit 1", "{fin}");
    assert!(fin.stderr.contains("cannot connect"), "{fin}");

    let mut server = Helper::spawn(server_bin, &["--name", &name]);
    // Wait until it listens, with a client of our own.
    let mut o = ConnectOptions::new("echo");
    o.wait_for_server = true;
    o.timeout = Duration::from_secs(60);
    o.server_wait = o.timeout;
    let mut ours = Client::connect(&ServiceAddr::named(&name), &o).expect("connect to echo_server");
    let mut buf = vec![0u8; ours.max_message()];
    let m = ours
        .send_recv(7, b"ping", &mut buf, Some(Duration::from_secs(60)))
        .expect("echo");
    assert_eq!((m.id, &buf[..m.len]), (7, &b"ping"[..]));

    for msg in ["hello, ringlink", "x"] {
        let fin = Helper::spawn(client_bin, &["--name", &name, msg]).wait(EXIT);
        fin.assert_success();
        assert_eq!(fin.stdout, format!("{msg}\n"), "{fin}");
    }
    let fin = Helper::spawn(client_bin, &["--name", &name]).wait(EXIT);
    assert_eq!(describe(fin.status), "exit 2", "no message: usage\n{fin}");

    // SIGTERM: the server closes every connection and exits 0.
    server.signal(libc::SIGTERM);
    let fin = server.wait(EXIT);
    fin.assert_success();
    assert!(fin.stderr.contains("shut down"), "{fin}");
    match ours.recv(&mut buf, Some(Duration::from_secs(60))) {
        Err(Error::Disconnected) => {}
        other => panic!("our client after the server's exit: {other:?}"),
    }

    // The same pair over the socket transport; a shared-memory client is
    // refused by that server (transport mismatch).
    let name = unique_name("echo-socket");
    let mut server = Helper::spawn(server_bin, &["--name", &name, "--transport", "socket"]);
    let mut o = ConnectOptions::new("echo");
    o.wait_for_server = true;
    o.timeout = Duration::from_secs(60);
    o.server_wait = o.timeout;
    o.transport = ringlink_ipcc::Transport::Socket;
    drop(Client::connect(&ServiceAddr::named(&name), &o).expect("connect over sockets"));
    let args = ["--name", &name, "--transport", "socket", "over sockets"];
    let fin = Helper::spawn(client_bin, &args).wait(EXIT);
    fin.assert_success();
    assert_eq!(fin.stdout, "over sockets\n", "{fin}");
    let fin = Helper::spawn(client_bin, &["--name", &name, "over rings"]).wait(EXIT);
    assert_eq!(describe(fin.status), "exit 1", "{fin}");
    assert!(fin.stderr.contains("transport mismatch"), "{fin}");
    server.signal(libc::SIGTERM);
    server.wait(EXIT).assert_success();
}

#[test]
fn async_examples() {
    let bins = ["async_echo_server", "async_echo_client", "async_many_tasks"].map(example);
    let [Some(server_bin), Some(client_bin), Some(many_bin)] = bins else {
        let msg =
            "the async examples are not built (the `tokio` feature, and a workspace test run)";
        assert!(
            std::env::var_os("RINGLINK_REQUIRE_EXAMPLES").is_none(),
            "{msg}"
        );
        eprintln!("skipped: {msg}");
        return;
    };
    let [server_bin, client_bin, many_bin] =
        [&server_bin, &client_bin, &many_bin].map(|p| p.to_str().unwrap().to_owned());
    let name = unique_name("async-echo");
    let mut server = Helper::spawn(&server_bin, &["--name", &name]);
    let mut o = ConnectOptions::new("echo");
    o.wait_for_server = true;
    o.timeout = Duration::from_secs(60);
    o.server_wait = o.timeout;
    let mut ours = Client::connect(&ServiceAddr::named(&name), &o).expect("connect");
    let mut buf = vec![0u8; ours.max_message()];
    let m = ours
        .send_recv(3, b"ping", &mut buf, Some(Duration::from_secs(60)))
        .expect("echo from spawned tasks");
    assert_eq!((m.id, &buf[..m.len]), (3, &b"ping"[..]));

    let fin = Helper::spawn(&client_bin, &["--name", &name, "hello, tokio"]).wait(EXIT);
    fin.assert_success();
    assert_eq!(fin.stdout, "hello, tokio\n", "{fin}");
    // 200 tasks x 10 round trips on one connection.
    let fin = Helper::spawn(&many_bin, &["--name", &name, "200", "10"]).wait(EXIT);
    fin.assert_success();
    assert!(
        fin.stdout.starts_with("2000 round trips from 200 tasks"),
        "{fin}"
    );

    // Ctrl-C: the shutdown future completes, every connection closes.
    server.signal(libc::SIGINT);
    let fin = server.wait(EXIT);
    fin.assert_success();
    assert!(fin.stderr.contains("shut down"), "{fin}");
    match ours.recv(&mut buf, Some(Duration::from_secs(60))) {
        Err(Error::Disconnected) => {}
        other => panic!("our client after the server's exit: {other:?}"),
    }
}

/// The libqb examples: `qb_echo_server` serving libqb's own C client
/// (`tests/c/qb_client.c`) and ringlink's `qb_echo_client`, and
/// `qb_echo_client` calling a libqb C server (`tests/c/qb_server.c`).
#[test]
fn libqb_examples() {
    let (Some(server_bin), Some(client_bin)) =
        (example("qb_echo_server"), example("qb_echo_client"))
    else {
        let msg =
            "the libqb examples are not built (cargo build --examples, or a workspace test run)";
        assert!(
            std::env::var_os("RINGLINK_REQUIRE_EXAMPLES").is_none(),
            "{msg}"
        );
        eprintln!("skipped: {msg}");
        return;
    };
    if !ringlink_tests::qbc::require("libqb_examples") {
        return;
    }
    let (server_bin, client_bin) = (server_bin.to_str().unwrap(), client_bin.to_str().unwrap());
    let name = unique_name("qb-echo");
    let mut server = Helper::spawn(server_bin, &["--name", &name]);
    let mut o = ConnectOptions::new("");
    o.wait_for_server = true;
    o.timeout = Duration::from_secs(60);
    o.server_wait = o.timeout;
    drop(Client::connect_libqb(&name, &o).expect("connect to qb_echo_server"));
    let fin =
        Helper::spawn(client_bin, &["--name", &name, "--id", "42", "hello, libqb"]).wait(EXIT);
    fin.assert_success();
    assert_eq!(fin.stdout, "hello, libqb\n", "{fin}");
    // libqb's own client.
    let c_bin = ringlink_tests::qbc::build("qb_client", env!("CARGO_TARGET_TMPDIR"));
    let mut c = Helper::spawn::<&str>(c_bin.to_str().unwrap(), &[]);
    c.expect("ready", EXIT);
    c.send(&format!("connect {name} 0"));
    assert!(c.line(EXIT).starts_with("ok"));
    c.send("echo 5 1000 5000");
    assert_eq!(c.line(EXIT), "ok");
    c.send("disconnect");
    assert_eq!(c.line(EXIT), "ok");
    server.signal(libc::SIGTERM);
    let fin = server.wait(EXIT);
    fin.assert_success();
    assert!(fin.stderr.contains("shut down"), "{fin}");

    // Over libqb's socket transport.
    let name = unique_name("qb-echo-socket");
    let mut server = Helper::spawn(server_bin, &["--name", &name, "--transport", "socket"]);
    drop(Client::connect_libqb(&name, &o).expect("connect to qb_echo_server over sockets"));
    let fin = Helper::spawn(client_bin, &["--name", &name, "over libqb's sockets"]).wait(EXIT);
    fin.assert_success();
    assert_eq!(fin.stdout, "over libqb's sockets\n", "{fin}");
    server.signal(libc::SIGTERM);
    server.wait(EXIT).assert_success();

    // qb_echo_client against a server built on libqb itself.
    let name = unique_name("qb-c-server");
    let s_bin = ringlink_tests::qbc::build("qb_server", env!("CARGO_TARGET_TMPDIR"));
    let mut s = Helper::spawn(s_bin.to_str().unwrap(), &[name.as_str(), "shm"]);
    s.expect("ready", EXIT);
    let fin = Helper::spawn(client_bin, &["--name", &name, "from ringlink"]).wait(EXIT);
    fin.assert_success();
    assert_eq!(fin.stdout, "from ringlink\n", "{fin}");
    // No server: exit 1.
    s.send("exit");
    assert_eq!(s.line(EXIT), "ok");
    let fin = Helper::spawn(client_bin, &["--name", &name, "nobody"]).wait(EXIT);
    assert_eq!(describe(fin.status), "exit 1", "{fin}");
}

/// `event_watcher`: prints the events of a service (here the test server,
/// which sends one from `connection_created`), and Ctrl-C interrupts its
/// blocking `event_recv`: it says so and exits 0.
#[test]
fn event_watcher_stops_on_ctrl_c() {
    let Some(watcher) = example("event_watcher") else {
        let msg =
            "the ipcc examples are not built (cargo build --examples, or a workspace test run)";
        assert!(
            std::env::var_os("RINGLINK_REQUIRE_EXAMPLES").is_none(),
            "{msg}"
        );
        eprintln!("skipped: {msg}");
        return;
    };
    let name = unique_name("watch");
    let addr = ServiceAddr::named(&name);
    let mut server = ringlink_tests::procs::ServerProc::spawn(
        env!("CARGO_BIN_EXE_test_server"),
        &addr,
        &["--event-on-create"],
    );
    let args = [
        "--name",
        name.as_str(),
        "--protocol",
        ringlink_tests::ipc::PROTOCOL,
    ];
    let mut w = Helper::spawn(watcher.to_str().unwrap(), &args);
    // Connected, and its event sent: the watcher reads it before it
    // waits again.
    let deadline = std::time::Instant::now() + EXIT;
    while server.stats().u("created") < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the watcher did not connect"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    w.signal(libc::SIGINT);
    let fin = w.wait(EXIT);
    fin.assert_success();
    assert!(
        fin.stdout
            .starts_with(&format!("event {} ", ringlink_tests::ipc::id::HELLO)),
        "{fin}"
    );
    assert!(fin.stderr.contains("interrupted"), "{fin}");
    server.shutdown();
}
