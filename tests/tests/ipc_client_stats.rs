//! The client's side of the counters and the trace (miniRPC keeps both
//! sides' counts; lwmsg traces both directions), against a server in a
//! process of its own: `Client::stats` counts what went and came, the
//! trace hook sees each message in order, and `stats(true)` starts over.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringlink_ipcc::ClientTrace;
use ringlink_tests::ipc::id;
use ringlink_tests::procs::{connect, unique_addr, ServerProc};

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");

/// Only catches hangs.
const PROMPT: Option<Duration> = Some(Duration::from_secs(60));

ringlink_tests::transport_test! {
    fn the_client_counts_and_traces_both_directions() {
        let addr = unique_addr("cstats");
        let server = ServerProc::spawn(SERVER, &addr, &["--event-on-create"]);
        let mut c = connect(&addr, 0);
        let log: Arc<Mutex<Vec<ClientTrace>>> = Arc::default();
        let l = log.clone();
        c.set_trace_hook(move |t| l.lock().unwrap().push(*t));
        let mut buf = [0u8; 64];
        // The event sent from connection_created.
        let hello = c.event_recv(&mut buf, PROMPT).expect("hello event");
        assert_eq!(hello.id, id::HELLO);
        for p in [&b"a"[..], b"bb", b"ccc"] {
            c.send_recv(id::ECHO, p, &mut buf, PROMPT).expect("echo");
        }
        c.send_oneway(id::ECHO, b"dddd", PROMPT).expect("one-way");
        c.send_oneway(id::ECHO, b"eeeee", PROMPT).expect("one-way");
        let s = c.stats(true);
        assert_eq!(
            (s.requests, s.one_way, s.responses, s.events),
            (5, 2, 3, 1),
            "{s:?}"
        );
        assert_eq!(s.bytes_sent, 1 + 2 + 3 + 4 + 5, "{s:?}");
        assert_eq!(s.bytes_received, u64::from(hello.len as u32) + 1 + 2 + 3, "{s:?}");
        let log = log.lock().unwrap().clone();
        let want = vec![
            ClientTrace::Received { id: id::HELLO, seq: 0, error: 0, len: hello.len, event: true },
            ClientTrace::Sent { id: id::ECHO, seq: 1, len: 1 },
            ClientTrace::Received { id: id::ECHO, seq: 1, error: 0, len: 1, event: false },
            ClientTrace::Sent { id: id::ECHO, seq: 2, len: 2 },
            ClientTrace::Received { id: id::ECHO, seq: 2, error: 0, len: 2, event: false },
            ClientTrace::Sent { id: id::ECHO, seq: 3, len: 3 },
            ClientTrace::Received { id: id::ECHO, seq: 3, error: 0, len: 3, event: false },
            ClientTrace::Sent { id: id::ECHO, seq: 0, len: 4 },
            ClientTrace::Sent { id: id::ECHO, seq: 0, len: 5 },
        ];
        assert_eq!(log, want);
        // Cleared: counting starts over.
        c.send_recv(id::ECHO, b"f", &mut buf, PROMPT).expect("echo");
        let s = c.stats(false);
        assert_eq!((s.requests, s.responses, s.bytes_sent), (1, 1, 1), "{s:?}");
        drop(c);
        server.shutdown();
    }
}
