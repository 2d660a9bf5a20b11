//! Blocking routes on a worker pool (`Dispatch::on_blocking`, lwmsg's
//! `LWMSG_DISPATCH_BLOCK`), with the server in a process of its own: a
//! route that blocks holds a worker, not the loop, so other clients are
//! served meanwhile; with every worker busy and the queue full, the
//! client's further requests wait in its ring (`Handler::ready`), and
//! every one is answered once the route unblocks.

use std::time::{Duration, Instant};

use ringlink_tests::ipc::id;
use ringlink_tests::procs::{connect, unique_addr, ServerProc};

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");

/// Only catches hangs.
const PROMPT: Duration = Duration::from_secs(60);

ringlink_tests::transport_test! {
    fn a_blocking_route_holds_a_worker_not_the_loop() {
        let addr = unique_addr("blocking");
        let mut server = ServerProc::spawn(SERVER, &addr, &[]);
        assert_eq!(server.command("gate close"), "ok");
        // Ten blocking requests: two run (and wait at the gate), two wait
        // in the pool's queue, six wait in the client's ring.
        let mut slow = connect(&addr, 0);
        for i in 0..10u32 {
            slow.send_timeout(id::SLOW, &i.to_le_bytes(), Some(PROMPT))
                .expect("send");
        }
        let deadline = Instant::now() + PROMPT;
        while server.stats().u("slow_started") < 2 {
            assert!(Instant::now() < deadline, "the workers did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The loop is free: another client's round trips go through
        // while both workers are blocked.
        let mut other = connect(&addr, 0);
        let mut buf = [0u8; 16];
        for _ in 0..100 {
            let m = other
                .send_recv(id::ECHO, b"meanwhile", &mut buf, Some(PROMPT))
                .expect("served while the route blocks");
            assert_eq!(&buf[..m.len], b"meanwhile");
        }
        let st = server.stats();
        assert_eq!(st.u("slow_started"), 2, "{st}");
        // Handed to the handler: the hundred echoes, the two running and
        // the two queued; the six others are still in the ring.
        assert_eq!(st.u("messages"), 104, "{st}");
        assert_eq!(server.command("gate open"), "ok");
        // Two workers answer in the order they finish: each response
        // carries its request's number, and every one comes once.
        let mut answers: Vec<(u64, Vec<u8>)> = (0..10)
            .map(|_| {
                let m = slow.recv(&mut buf, Some(PROMPT)).expect("answered");
                (m.seq, buf[..m.len].to_vec())
            })
            .collect();
        answers.sort();
        let expected: Vec<(u64, Vec<u8>)> =
            (0..10u32).map(|i| (u64::from(i) + 1, i.to_le_bytes().to_vec())).collect();
        assert_eq!(answers, expected);
        let st = server.stats();
        assert_eq!(st.u("slow_started"), 10, "{st}");
        assert_eq!(st.u("violations"), 0, "{st}");
        server.shutdown();
    }
}
