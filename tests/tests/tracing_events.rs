//! The `tracing` feature: a service and a client, each under a collector
//! of its own thread (no process-wide subscriber), report the connection
//! lifecycle with the close reason, a refusal, a protocol violation with
//! its fault, and a flow-control change, as events a Rust user's
//! subscriber sees (targets `ringlink::server`, `ringlink::client`).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringlink_common::wire::MsgHeader;
use ringlink_common::RateLimit;
use ringlink_ipcc::{Client, Error};
use ringlink_ipcs::{Connection, Handler, Request, Service, ServiceOptions};
use ringlink_tests::attack::RawClient;
use ringlink_tests::procs::{client_options, unique_addr};

/// What a collector wrote, shared with the test.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    fn collector(&self) -> impl tracing::Subscriber + Send + Sync {
        let log = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || log.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish()
    }
}

struct Echo;
impl Handler for Echo {
    fn message(&self, conn: &Connection, req: &Request<'_>) {
        let _ = conn.respond(req.seq(), req.id(), req.payload());
    }
}

ringlink_tests::transport_test! {
fn lifecycle_refusals_violations_and_flow_control_are_traced() {
    let addr = unique_addr("tracing");
    let server_log = Log::default();
    let opts = ServiceOptions::default()
        .max_clients(2)
        .transport(ringlink_tests::transport::current());
    let collector = server_log.collector();
    let mut service = tracing::subscriber::with_default(collector, || {
        Service::bind(addr.clone(), ringlink_tests::ipc::PROTOCOL, opts, Echo).expect("bind")
    });
    let control = service.control_handle();
    let collector = server_log.collector();
    let server = std::thread::spawn(move || {
        tracing::subscriber::with_default(collector, || service.run())
    });

    let client_log = Log::default();
    tracing::subscriber::with_default(client_log.collector(), || {
        let mut c = Client::connect(&addr, &client_options(0)).expect("connect");
        let mut buf = [0u8; 8];
        c.send_recv(1, b"hi", &mut buf, Some(Duration::from_secs(60))).expect("echo");
        // A liar: a flag this version does not define.
        let mut liar = RawClient::connect(&addr, ringlink_tests::transport::current());
        let lie = MsgHeader { id: 1, size: 0, error: 0, flags: 1 << 7, seq: 1 };
        liar.send_header(lie, b"").expect("sent");
        liar.kick();
        assert!(liar.server_closed(Duration::from_secs(60)));
        drop(liar);
        // Full: the third is refused (c and the liar's slot, freed, then a
        // second honest client take the two).
        let c2 = Client::connect(&addr, &client_options(0)).expect("second client");
        match Client::connect(&addr, &client_options(0)) {
            Err(Error::Rejected(_)) => {}
            other => panic!("a third client: {:?}", other.map(|c| c.id())),
        }
        control.set_rate_limit(RateLimit::Off);
        // The level change reached the loop once a round trip completes
        // after it... which it cannot at Off: wait for the event instead.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !server_log.text().contains("flow-control level changed") {
            assert!(std::time::Instant::now() < deadline, "{}", server_log.text());
            std::thread::sleep(Duration::from_millis(10));
        }
        control.set_rate_limit(RateLimit::Normal);
        drop(c2);
        control.shutdown();
        server.join().expect("server thread").expect("run");
        // The server closed us: the client says so.
        assert!(c.send_recv(1, b"hi", &mut buf, Some(Duration::from_secs(60))).is_err());
    });

    let s = server_log.text();
    for want in [
        "ringlink::server",
        "service listening",
        "connection created",
        "connection refused",
        "TooManyClients",
        "fault",
        "unknown flag",
        "reason=protocol violation",
        "connection closed conn=",
        "flow-control level changed",
        "service shutting down",
        "reason=the service shut down",
    ] {
        assert!(s.contains(want), "the server's log lacks `{want}`:\n{s}");
    }
    let c = client_log.text();
    for want in ["ringlink::client", "connected", "connection failed", "disconnected"] {
        assert!(c.contains(want), "the client's log lacks `{want}`:\n{c}");
    }
}
}
