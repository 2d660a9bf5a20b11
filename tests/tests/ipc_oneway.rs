//! One-way requests (Legato's `le_msg_Send`), with the server in a
//! process of its own: the handler sees `needs_response` false, a
//! response to one is refused with `Error::OneWay` and never reaches the
//! client, and a client's numbered requests are answered as before. A
//! hostile client that marks a numbered request one-way, or sets a flag
//! this version does not define, is dropped with the reason, and a
//! bystander is served throughout.

use std::time::Duration;

use ringlink_common::wire::{MsgHeader, FLAG_ONE_WAY};
use ringlink_ipcc::Error;
use ringlink_tests::attack::RawClient;
use ringlink_tests::ipc::id;
use ringlink_tests::procs::{connect, unique_addr, ServerProc};

const SERVER: &str = env!("CARGO_BIN_EXE_test_server");

/// Only catches hangs.
const PROMPT: Duration = Duration::from_secs(60);

ringlink_tests::transport_test! {
    fn one_way_requests_take_no_response() {
        let addr = unique_addr("oneway");
        let mut server = ServerProc::spawn(SERVER, &addr, &[]);
        let mut c = connect(&addr, 0);
        for i in 0..1000u32 {
            c.send_oneway(id::ECHO, &i.to_le_bytes(), Some(PROMPT))
                .expect("one-way send");
        }
        // Numbered requests still go from 1, and their answers are the
        // only ones that come.
        let mut buf = [0u8; 16];
        for n in 1..=3u64 {
            let m = c
                .send_recv(id::ECHO, b"numbered", &mut buf, Some(PROMPT))
                .expect("echo");
            assert_eq!((m.seq, &buf[..m.len]), (n, &b"numbered"[..]));
        }
        match c.recv(&mut buf, Some(Duration::ZERO)) {
            Err(Error::WouldBlock | Error::TimedOut) => {}
            other => panic!("a response came for a one-way request: {other:?}"),
        }
        let st = server.stats();
        assert_eq!(st.u("oneway"), 1000, "{st}");
        assert_eq!(st.u("oneway_refused"), 1000, "{st}");
        assert_eq!(st.u("violations"), 0, "{st}");
        server.shutdown();
    }
}

ringlink_tests::transport_test! {
    /// One-way requests sent just before the client leaves are all
    /// served: the server reads what the client sent before it takes
    /// the hang-up for the end of the connection.
    fn one_way_requests_sent_just_before_leaving_are_all_served() {
        let addr = unique_addr("oneway-leaving");
        let mut server = ServerProc::spawn(SERVER, &addr, &[]);
        for round in 1..=20u64 {
            let mut c = connect(&addr, 0);
            for i in 0..100u32 {
                c.send_oneway(id::ECHO, &i.to_le_bytes(), Some(PROMPT))
                    .expect("one-way send");
            }
            drop(c);
            let st = server.wait_stats("the client's end", PROMPT, |s| {
                s.u("destroyed") == round
            });
            assert_eq!(st.u("oneway"), round * 100, "round {round}: {st}");
        }
        server.shutdown();
    }
}

ringlink_tests::transport_test! {
    fn lying_flags_are_violations_and_a_bystander_goes_on() {
        let addr = unique_addr("oneway-lies");
        let mut server = ServerProc::spawn(SERVER, &addr, &["--log-faults"]);
        let mut bystander = connect(&addr, 0);
        let mut buf = [0u8; 16];
        let mut served = |n: usize| {
            for _ in 0..n {
                bystander
                    .send_recv(id::ECHO, b"by", &mut buf, Some(PROMPT))
                    .expect("the bystander is served");
            }
        };
        served(3);
        let lies = [
            ("one-way with a number", FLAG_ONE_WAY, 5),
            ("an undefined flag", 1 << 7, 1),
            ("every flag", u32::MAX, 0),
        ];
        for (what, flags, seq) in lies {
            let mut liar = RawClient::connect(&addr, ringlink_tests::transport::current());
            let header = MsgHeader {
                id: id::ECHO,
                size: 0,
                error: 0,
                flags,
                seq,
            };
            liar.send_header(header, b"lie").expect("sent");
            liar.kick();
            assert!(liar.server_closed(PROMPT), "{what}: the liar was not dropped");
            served(3);
        }
        let faults = server.faults();
        assert_eq!(faults.len(), lies.len(), "{faults:?}");
        assert!(
            faults[0].1.contains("one-way message with a sequence number"),
            "{faults:?}"
        );
        assert!(faults[1..].iter().all(|(_, f)| f.contains("unknown flag")), "{faults:?}");
        served(3);
        server.shutdown();
    }
}
