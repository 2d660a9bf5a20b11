//! Role claims across processes: each role of a ring can be claimed once,
//! by any process, and a second claim anywhere gets `ClaimError::Taken`
//! naming the claimant's pid.

use std::io::Read;
use std::net::Shutdown;
use std::time::Duration;

use ringlink_ringbuf::{ClaimError, Ring, Role};
use ringlink_tests::peer::Peer;

const PEER: &str = env!("CARGO_BIN_EXE_ring_peer");
const WAIT: Duration = Duration::from_secs(60);

fn taken(role: Role, owner: u32) -> String {
    format!("taken {role} owner={owner}")
}

#[test]
fn second_producer_in_another_process_is_taken() {
    let ring = Ring::create(4096).expect("Ring::create");
    let _tx = ring.producer().expect("claim producer");
    let peer = Peer::spawn(PEER, &["claim", "producer", "consumer"]);
    peer.send_ring(&ring).expect("send ring");
    let child = peer.pid();
    let out = peer.wait(WAIT);
    out.assert_success();
    assert_eq!(
        out.line("claim producer"),
        Some(&*taken(Role::Producer, std::process::id())),
        "{out}"
    );
    assert_eq!(out.line("claim consumer"), Some("ok"), "{out}");
    // And back here: the helper's consumer claim stands after its exit.
    match ring.consumer() {
        Err(ClaimError::Taken {
            role: Role::Consumer,
            owner,
        }) => assert_eq!(owner, child),
        other => panic!("second consumer claim: {other:?}"),
    }
}

#[test]
fn roles_held_by_a_live_process_are_taken_everywhere_else() {
    let ring = Ring::create(4096).expect("Ring::create");
    let mut holder = Peer::spawn(PEER, &["claim", "--hold", "producer", "consumer"]);
    holder.send_ring(&ring).expect("send ring");
    // The holder says `claimed` on the socket once it holds both roles.
    let mut said = [0u8; 8];
    holder
        .socket()
        .set_read_timeout(Some(WAIT))
        .expect("timeout");
    if let Err(e) = (&mut holder.socket()).read_exact(&mut said) {
        holder.fail(&format!("no `claimed` line: {e}"));
    }
    assert_eq!(&said, b"claimed\n");

    let other = Peer::spawn(PEER, &["claim", "producer", "consumer"]);
    other.send_ring(&ring).expect("send ring");
    let out = other.wait(WAIT);
    out.assert_success();
    assert_eq!(
        out.line("claim producer"),
        Some(&*taken(Role::Producer, holder.pid())),
        "{out}"
    );
    assert_eq!(
        out.line("claim consumer"),
        Some(&*taken(Role::Consumer, holder.pid())),
        "{out}"
    );

    for (role, r) in [
        (Role::Producer, ring.producer().map(drop)),
        (Role::Consumer, ring.consumer().map(drop)),
    ] {
        assert_eq!(
            r,
            Err(ClaimError::Taken {
                role,
                owner: holder.pid()
            })
        );
    }

    // Let the holder go.
    holder.socket().shutdown(Shutdown::Both).expect("shutdown");
    let out = holder.wait(WAIT);
    out.assert_success();
    assert_eq!(out.line("claim producer"), Some("ok"), "{out}");
    assert_eq!(out.line("claim consumer"), Some("ok"), "{out}");
}
