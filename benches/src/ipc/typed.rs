//! The typed messages of transport `shm-typed` (`ipc-bench --typed`):
//! ringlink over shared memory with `ringlink::typed` instead of raw
//! bytes. Its round trip is a typed call of a [`Sample`], a 64-byte
//! struct of ten fields (64 bytes laid out by hand, as the raw row
//! sends; postcard encodes it in 40 to 58, 44 for most of a run: see
//! [`Sample`]), which
//! the server decodes, checks and answers with another it encodes, and
//! the client decodes and checks: what a typed application pays on top
//! of the raw round trip of the same size.

use std::io;

use ringlink::server::{Connection, Dispatch, Handler, Request as RawRequest};
use ringlink::typed::{AppError, Request, TypedDispatch};
use serde::{Deserialize, Serialize};

/// The only size `shm-typed` measures: the size of a [`Sample`] laid out
/// by hand.
pub const TYPED_SIZE: usize = 64;

/// A reading, as a typed application would send one: 64 bytes of fields
/// (8 + 4 + 2 + 1 + 1 + 3 × 8 + 4 × 4 + 8). `seq` and `stamp` carry the
/// connection's sequence number at both ends, as the raw payloads do;
/// every other field is checked too. Postcard writes the integers as
/// varints: 44 bytes while the sequence number is between 16,384 and
/// 2,097,151, 40 below 128, 58 at most.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The request's sequence number.
    pub seq: u64,
    /// A sensor id.
    pub sensor: u32,
    /// Flags.
    pub flags: u16,
    /// A kind.
    pub kind: u8,
    /// Whether the reading is good.
    pub ok: bool,
    /// The value.
    pub value: f64,
    /// The lowest value seen.
    pub min: f64,
    /// The highest value seen.
    pub max: f64,
    /// Counters.
    pub counts: [u32; 4],
    /// The sequence number again, at the end.
    pub stamp: u64,
}

impl Request for Sample {
    const ID: i32 = 1;
    type Response = Sample;
}

impl Sample {
    /// The sample numbered `seq`; `reply` marks the server's.
    pub fn new(seq: u64, reply: bool) -> Sample {
        Sample {
            seq,
            sensor: 4021,
            flags: if reply { 0x8002 } else { 0x8001 },
            kind: 3,
            ok: true,
            value: 21.5 + (seq % 7) as f64,
            min: -3.25,
            max: 48.0,
            counts: [17, 300, 70_000, (seq % 5) as u32],
            stamp: seq,
        }
    }

    /// Checks that this is the sample numbered `seq` (`reply`: the
    /// server's); returns a value to feed to `black_box`.
    ///
    /// # Errors
    ///
    /// `InvalidData` if it is not.
    pub fn check(&self, seq: u64, reply: bool) -> io::Result<u64> {
        if *self != Sample::new(seq, reply) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("typed sample mismatch: expected number {seq}, got {self:?}"),
            ));
        }
        Ok(self.seq ^ self.value.to_bits())
    }
}

/// The application's error code the server answers a wrong sample with
/// (the client reports it and the run fails).
pub const WRONG_SAMPLE: i32 = 1;

/// The number the next sample of a connection must carry.
#[derive(Debug, Default)]
struct Expected(std::sync::atomic::AtomicU64);

/// The `shm-typed` server's handler: a typed route for [`Sample`] on a
/// [`Dispatch`], and the connection's expected number as its context
/// (as the raw handler keeps it).
#[derive(Debug)]
pub struct TypedBench {
    table: Dispatch,
}

impl TypedBench {
    /// The handler.
    pub fn new() -> TypedBench {
        let table = Dispatch::new().route(|conn: &Connection, sample: Sample| {
            let Some(expected) = conn.context::<Expected>() else {
                return Err(AppError::with_detail(WRONG_SAMPLE, "no context"));
            };
            // Relaxed: only the loop thread touches it.
            let seq = expected
                .0
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match sample.check(seq, false) {
                Ok(acc) => {
                    std::hint::black_box(acc);
                    Ok(Sample::new(seq, true))
                }
                Err(e) => Err(AppError::with_detail(WRONG_SAMPLE, &e.to_string())),
            }
        });
        TypedBench { table }
    }
}

impl Default for TypedBench {
    fn default() -> TypedBench {
        TypedBench::new()
    }
}

impl Handler for TypedBench {
    fn connection_created(&self, conn: &Connection) {
        conn.set_context(Expected::default());
    }

    fn message(&self, conn: &Connection, req: &RawRequest<'_>) {
        self.table.dispatch(conn, req);
    }

    fn ready(&self, conn: &Connection, id: i32) -> bool {
        self.table.ready(conn, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_64_bytes_by_hand_and_40_to_58_encoded() {
        let s = Sample::new(1_000_000, false);
        let by_hand = 8 + 4 + 2 + 1 + 1 + 3 * 8 + 4 * 4 + 8;
        assert_eq!(by_hand, TYPED_SIZE);
        let mut buf = Vec::new();
        ringlink::typed::encode(&s, &mut buf).unwrap();
        assert_eq!(buf.len(), 44);
        let back: Sample = ringlink::typed::decode(&buf).unwrap();
        back.check(1_000_000, false).unwrap();
        assert!(back.check(1_000_001, false).is_err());
        assert!(back.check(1_000_000, true).is_err());
        for (seq, len) in [(0, 40), (u64::MAX, 58)] {
            ringlink::typed::encode(&Sample::new(seq, true), &mut buf).unwrap();
            assert_eq!(buf.len(), len, "{seq}");
        }
    }
}
