//! Exhaustive interleaving checks (loom) of the ring's publication and of
//! its sleep/wake handshake: no record lost or reordered, no lost
//! wake-up (a lost wake-up shows as a deadlock, which loom reports), and
//! closing always wakes a sleeper.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" cargo test -p ringlink-ringbuf --test loom --release`
#![cfg(loom)]

use std::time::Duration;

use loom::thread;
use ringlink_ringbuf::{PopError, PushError, Ring};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

/// Three max-size records through a ring that holds two: the producer must
/// sleep for space and the consumer for data, in every interleaving.
#[test]
fn publish_consume_with_both_sides_sleeping() {
    model(|| {
        let ring = Ring::heap(64).unwrap();
        let mut tx = ring.producer().unwrap();
        let mut rx = ring.consumer().unwrap();
        tx.set_spin(Duration::ZERO);
        rx.set_spin(Duration::ZERO);
        let t = thread::spawn(move || {
            for i in 0..3u8 {
                tx.push(&[i; 24]).unwrap();
            }
        });
        for i in 0..3u8 {
            let mut b = [0u8; 24];
            assert_eq!(rx.pop_into(&mut b), Ok(24));
            assert_eq!(b, [i; 24]);
        }
        t.join().unwrap();
        assert_eq!(rx.pop_into(&mut [0u8; 24]), Err(PopError::Closed));
    });
}

/// A record published and the producer closed while the consumer decides
/// to sleep: it gets the record, then `Closed`, never a hang.
#[test]
fn close_wakes_a_sleeping_consumer() {
    model(|| {
        let ring = Ring::heap(64).unwrap();
        let mut tx = ring.producer().unwrap();
        let mut rx = ring.consumer().unwrap();
        rx.set_spin(Duration::ZERO);
        let t = thread::spawn(move || {
            tx.push(b"x").unwrap();
            drop(tx);
        });
        let mut b = [0u8; 8];
        assert_eq!(rx.pop_into(&mut b), Ok(1));
        assert_eq!(rx.pop_into(&mut b), Err(PopError::Closed));
        t.join().unwrap();
    });
}

/// A producer asleep on a full ring is woken by the consumer closing.
#[test]
fn close_wakes_a_sleeping_producer() {
    model(|| {
        let ring = Ring::heap(64).unwrap();
        let mut tx = ring.producer().unwrap();
        let rx = ring.consumer().unwrap();
        tx.set_spin(Duration::ZERO);
        tx.push(&[0; 24]).unwrap();
        tx.push(&[0; 24]).unwrap();
        let t = thread::spawn(move || drop(rx));
        assert_eq!(tx.push(&[0; 24]), Err(PushError::Closed));
        t.join().unwrap();
    });
}
