//! Property test: random sequences of push / reserve / abort / peek / pop
//! of random sizes (the maximum included) against a `VecDeque` model that
//! also predicts, byte for byte, when the ring must report `Full`.
#![cfg(not(loom))]

use std::collections::VecDeque;
use std::io::IoSlice;

use proptest::prelude::*;
use ringlink_ringbuf::layout::{max_payload, record_size};
use ringlink_ringbuf::{PopError, PushError, Ring};

#[derive(Clone, Debug)]
enum Op {
    /// Write a record of `len` bytes in one of five ways.
    Push { len: usize, how: u8 },
    /// Read a record in one of four ways.
    Pop { how: u8 },
}

fn op(max: usize) -> impl Strategy<Value = Op> {
    let len = prop_oneof![
        0..=16usize,
        0..=max,
        Just(max),
        Just(max.saturating_sub(1)),
        Just(max + 1)
    ];
    prop_oneof![
        3 => (len, 0u8..5).prop_map(|(len, how)| Op::Push { len, how }),
        2 => (0u8..4).prop_map(|how| Op::Pop { how }),
    ]
}

/// The specification, restated: where each record goes and when the ring
/// is full.
struct Model {
    cap: u64,
    head: u64,
    tail: u64,
    /// (padding released with the record, payload)
    queue: VecDeque<(u64, Vec<u8>)>,
}

impl Model {
    /// Padding and total bytes a record of `len` needs at the current tail.
    fn placement(&self, len: usize) -> (u64, u64) {
        let size = record_size(len) as u64;
        let to_end = self.cap - self.tail % self.cap;
        let pad = if size <= to_end { 0 } else { to_end };
        (pad, pad + size)
    }

    /// The record, its padding, and the word after it (which the
    /// producer clears before publishing) must be released space.
    fn fits(&self, len: usize) -> bool {
        self.tail - self.head + self.placement(len).1 + 8 <= self.cap
    }

    /// A peek releases the padding before the record at once.
    fn peek(&mut self) -> Option<&[u8]> {
        let front = self.queue.front_mut()?;
        self.head += front.0;
        front.0 = 0;
        Some(&front.1)
    }

    fn release(&mut self) -> Vec<u8> {
        let (_, data) = self.queue.pop_front().unwrap();
        self.head += record_size(data.len()) as u64;
        data
    }
}

fn run(cap: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let ring = Ring::heap(cap).unwrap();
    let mut tx = ring.producer().unwrap();
    let mut rx = ring.consumer().unwrap();
    let max = max_payload(cap);
    let mut model = Model {
        cap: cap as u64,
        head: 0,
        tail: 0,
        queue: VecDeque::new(),
    };
    let mut counter = 0u8;
    let mut buf = vec![0u8; cap];
    for op in ops {
        match op {
            Op::Push { len, how } => {
                let data: Vec<u8> = (0..len)
                    .map(|i| counter.wrapping_add(i as u8).rotate_left(3))
                    .collect();
                counter = counter.wrapping_add(1);
                if len > max {
                    prop_assert_eq!(
                        tx.try_push(&data).unwrap_err(),
                        PushError::TooLarge { len, max }
                    );
                    continue;
                }
                let fits = model.fits(len);
                // The hint read without the consumer's position never
                // promises room the ring does not have.
                prop_assert!(
                    fits || !tx.surely_fits(len),
                    "surely_fits({}) with no room",
                    len
                );
                let result = match how {
                    0 => tx.try_push(&data).map(|()| Some(data.clone())),
                    1 => tx.try_reserve(len).map(|mut g| {
                        g.copy_from_slice(&data);
                        g.commit();
                        Some(data.clone())
                    }),
                    // Reserve and abort: nothing published.
                    2 => tx.try_reserve(len).map(|mut g| {
                        g.fill(0xAA);
                        None
                    }),
                    // Reserve, then commit a prefix.
                    3 => tx.try_reserve(len).map(|mut g| {
                        let short = len / 2;
                        g[..short].copy_from_slice(&data[..short]);
                        g.commit_len(short);
                        Some(data[..short].to_vec())
                    }),
                    _ => {
                        let (a, b) = data.split_at(len / 3);
                        tx.try_push_vectored(&[IoSlice::new(a), IoSlice::new(b)])
                            .map(|()| Some(data.clone()))
                    }
                };
                match result {
                    Ok(Some(published)) => {
                        prop_assert!(
                            fits,
                            "ring accepted {} bytes the model says do not fit",
                            len
                        );
                        // A committed prefix is placed as reserved: the
                        // padding decision was made for the full length.
                        let (pad, _) = model.placement(len);
                        model.tail += pad + record_size(published.len()) as u64;
                        model.queue.push_back((pad, published));
                    }
                    Ok(None) => prop_assert!(fits),
                    Err(PushError::Full) => {
                        prop_assert!(!fits, "ring full but the model has room for {} bytes", len)
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("push: {e:?}"))),
                }
            }
            Op::Pop { how } => {
                let expected = model.peek().map(<[u8]>::to_vec);
                match how {
                    0 => match rx.try_pop_into(&mut buf) {
                        Ok(n) => {
                            prop_assert_eq!(Some(&buf[..n]), expected.as_deref());
                            model.release();
                        }
                        Err(PopError::Empty) => prop_assert!(expected.is_none()),
                        Err(e) => return Err(TestCaseError::fail(format!("pop: {e:?}"))),
                    },
                    1 | 2 => match rx.try_peek() {
                        Ok(rec) => {
                            prop_assert_eq!(Some(&*rec), expected.as_deref());
                            if how == 1 {
                                rec.release();
                                model.release();
                            }
                        }
                        Err(PopError::Empty) => prop_assert!(expected.is_none()),
                        Err(e) => return Err(TestCaseError::fail(format!("peek: {e:?}"))),
                    },
                    _ => {
                        let mut small = [0u8; 3];
                        match rx.try_pop_into(&mut small) {
                            Ok(n) => {
                                prop_assert_eq!(Some(&small[..n]), expected.as_deref());
                                model.release();
                            }
                            Err(PopError::BufferTooSmall { needed }) => {
                                prop_assert_eq!(Some(needed), expected.as_ref().map(Vec::len));
                                prop_assert!(needed > 3);
                            }
                            Err(PopError::Empty) => prop_assert!(expected.is_none()),
                            Err(e) => return Err(TestCaseError::fail(format!("pop: {e:?}"))),
                        }
                    }
                }
            }
        }
        // Out of range, never.
        prop_assert!(!tx.surely_fits(max + 1));
        prop_assert_eq!(rx.pending_bytes() as u64, model.tail - model.head);
        // The consumer's hint: something is published at its position
        // exactly when the model holds a record (with this producer,
        // padding comes only with the record after it).
        prop_assert_eq!(rx.has_record(), !model.queue.is_empty());
    }
    // Drain: everything the model holds comes out, in order.
    drop(tx);
    while let Some(expected) = model.peek().map(<[u8]>::to_vec) {
        let n = rx.try_pop_into(&mut buf).unwrap();
        prop_assert_eq!(&buf[..n], &expected[..]);
        model.release();
    }
    prop_assert_eq!(rx.try_pop_into(&mut buf).unwrap_err(), PopError::Closed);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 8 } else { 512 }))]

    #[test]
    fn ring_matches_model_64(ops in prop::collection::vec(op(max_payload(64)), 1..400)) {
        run(64, ops)?;
    }

    #[test]
    fn ring_matches_model_256(ops in prop::collection::vec(op(max_payload(256)), 1..400)) {
        run(256, ops)?;
    }

    #[test]
    fn ring_matches_model_4096(ops in prop::collection::vec(op(max_payload(4096)), 1..200)) {
        run(4096, ops)?;
    }
}
