//! Encode and decode of two 64-byte messages with postcard, bincode 2
//! (serde) and a hand-written fixed layout (the raw-bytes baseline), each
//! encoding into a buffer reused from message to message and decoding
//! from the bytes: the choice of the typed layer's codec
//! (`docs/TYPED.md`). Prints one table; every figure is the median of
//! several rounds, in nanoseconds per message.

use std::hint::black_box;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// A numeric message: 64 bytes as a fixed little-endian layout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Reading {
    seq: u64,
    sensor: u32,
    flags: u16,
    kind: u8,
    ok: bool,
    value: f64,
    min: f64,
    max: f64,
    counts: [u32; 4],
    stamp: u64,
}

/// A message with a string: 64 bytes as a fixed layout with a
/// length-prefixed name of 26 bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Command {
    target: String,
    op: u8,
    args: [i32; 4],
    deadline_ms: u64,
    seq: u64,
}

fn reading(i: u64) -> Reading {
    Reading {
        seq: 1_000_000 + i,
        sensor: 4021,
        flags: 0x8001,
        kind: 3,
        ok: true,
        value: 21.5 + (i % 7) as f64,
        min: -3.25,
        max: 48.0,
        counts: [17, 300, 70_000, (i % 5) as u32],
        stamp: 1_000_000 + i,
    }
}

fn command(i: u64) -> Command {
    Command {
        target: "pump-station-07/flow-valve".to_string(),
        op: 2,
        args: [1, -40, 125_000, (i % 9) as i32],
        deadline_ms: 1_733_400_000_000 + i,
        seq: 1_000_000 + i,
    }
}

// ---- the raw baseline: a fixed layout written and read by hand ----

trait Raw: Sized {
    fn raw_encode(&self, out: &mut Vec<u8>);
    fn raw_decode(b: &[u8]) -> Option<Self>;
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl Raw for Reading {
    fn raw_encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.sensor.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.push(self.kind);
        out.push(self.ok as u8);
        out.extend_from_slice(&self.value.to_le_bytes());
        out.extend_from_slice(&self.min.to_le_bytes());
        out.extend_from_slice(&self.max.to_le_bytes());
        for c in self.counts {
            out.extend_from_slice(&c.to_le_bytes());
        }
        out.extend_from_slice(&self.stamp.to_le_bytes());
    }

    fn raw_decode(b: &[u8]) -> Option<Reading> {
        if b.len() != 64 || b[15] > 1 {
            return None;
        }
        Some(Reading {
            seq: u64_at(b, 0)?,
            sensor: u32_at(b, 8)?,
            flags: u16::from_le_bytes([b[12], b[13]]),
            kind: b[14],
            ok: b[15] == 1,
            value: f64::from_bits(u64_at(b, 16)?),
            min: f64::from_bits(u64_at(b, 24)?),
            max: f64::from_bits(u64_at(b, 32)?),
            counts: [
                u32_at(b, 40)?,
                u32_at(b, 44)?,
                u32_at(b, 48)?,
                u32_at(b, 52)?,
            ],
            stamp: u64_at(b, 56)?,
        })
    }
}

impl Raw for Command {
    fn raw_encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.push(self.target.len() as u8);
        out.extend_from_slice(self.target.as_bytes());
        out.push(self.op);
        for a in self.args {
            out.extend_from_slice(&a.to_le_bytes());
        }
        out.extend_from_slice(&self.deadline_ms.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
    }

    fn raw_decode(b: &[u8]) -> Option<Command> {
        let n = *b.first()? as usize;
        let target = std::str::from_utf8(b.get(1..1 + n)?).ok()?.to_string();
        let r = b.get(1 + n..)?;
        if r.len() != 1 + 16 + 16 {
            return None;
        }
        let i32_at = |at| u32_at(r, at).map(|v| v as i32);
        Some(Command {
            target,
            op: r[0],
            args: [i32_at(1)?, i32_at(5)?, i32_at(9)?, i32_at(13)?],
            deadline_ms: u64_at(r, 17)?,
            seq: u64_at(r, 25)?,
        })
    }
}

// ---- postcard into a reused Vec: the flavor the typed layer uses ----

/// Appends to a borrowed, reused `Vec` (postcard's own `AllocVec` owns a
/// new one per message).
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();
    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }
    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// As [`Append`], copying short pieces (varints, scalars) byte by byte
/// instead of calling `memcpy` for each.
struct AppendShort<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendShort<'_> {
    type Output = ();
    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() <= 16 {
            self.0.reserve(data.len());
            for &b in data {
                self.0.push(b);
            }
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }
    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Writes into a `Vec` kept at its full length, at a cursor, growing it
/// when a message does not fit; truncated to the message at the end.
struct Cursor<'a> {
    buf: &'a mut Vec<u8>,
    at: usize,
}

impl Cursor<'_> {
    #[cold]
    fn grow(&mut self, more: usize) {
        let len = (self.buf.len() * 2).max(self.at + more).max(64);
        self.buf.resize(len, 0);
    }
}

impl postcard::ser_flavors::Flavor for Cursor<'_> {
    type Output = ();
    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if self.buf.len() - self.at < data.len() {
            self.grow(data.len());
        }
        let dst = &mut self.buf[self.at..self.at + data.len()];
        if data.len() <= 16 {
            for (d, s) in dst.iter_mut().zip(data) {
                *d = *s;
            }
        } else {
            dst.copy_from_slice(data);
        }
        self.at += data.len();
        Ok(())
    }
    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        if self.at == self.buf.len() {
            self.grow(1);
        }
        self.buf[self.at] = data;
        self.at += 1;
        Ok(())
    }
    fn finalize(self) -> postcard::Result<()> {
        self.buf.truncate(self.at);
        Ok(())
    }
}

fn postcard_cursor<T: Serialize>(v: &T, out: &mut Vec<u8>) {
    let cap = out.capacity();
    out.resize(cap, 0);
    postcard::serialize_with_flavor(v, Cursor { buf: out, at: 0 }).expect("encode");
}

fn postcard_append_short<T: Serialize>(v: &T, out: &mut Vec<u8>) {
    out.clear();
    postcard::serialize_with_flavor(v, AppendShort(out)).expect("encode");
}

// ---- the contenders ----

type Enc<T> = fn(&T, &mut Vec<u8>);
type Dec<T> = fn(&[u8]) -> T;

fn postcard_append<T: Serialize>(v: &T, out: &mut Vec<u8>) {
    out.clear();
    postcard::serialize_with_flavor(v, Append(out)).expect("encode");
}

fn postcard_extend<T: Serialize>(v: &T, out: &mut Vec<u8>) {
    out.clear();
    let taken = std::mem::take(out);
    *out = postcard::to_extend(v, taken).expect("encode");
}

fn postcard_slice<T: Serialize>(v: &T, out: &mut Vec<u8>) {
    out.resize(256, 0);
    let n = postcard::to_slice(v, out).expect("encode").len();
    out.truncate(n);
}

fn postcard_decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> T {
    let (v, rest) = postcard::take_from_bytes(b).expect("decode");
    assert!(rest.is_empty());
    v
}

fn bincode_slice<T: Serialize>(v: &T, out: &mut Vec<u8>) {
    out.resize(256, 0);
    let n = bincode::serde::encode_into_slice(v, out, bincode::config::standard()).expect("encode");
    out.truncate(n);
}

fn bincode_write<T: Serialize>(v: &T, out: &mut Vec<u8>) {
    out.clear();
    bincode::serde::encode_into_std_write(v, out, bincode::config::standard()).expect("encode");
}

fn bincode_decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> T {
    let (v, n) = bincode::serde::decode_from_slice(b, bincode::config::standard()).expect("decode");
    assert_eq!(n, b.len());
    v
}

fn bincode_fixed_slice<T: Serialize>(v: &T, out: &mut Vec<u8>) {
    out.resize(256, 0);
    let n = bincode::serde::encode_into_slice(v, out, bincode::config::legacy()).expect("encode");
    out.truncate(n);
}

fn bincode_fixed_decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> T {
    let (v, n) = bincode::serde::decode_from_slice(b, bincode::config::legacy()).expect("decode");
    assert_eq!(n, b.len());
    v
}

fn raw_encode<T: Raw>(v: &T, out: &mut Vec<u8>) {
    v.raw_encode(out);
}

fn raw_decode<T: Raw>(b: &[u8]) -> T {
    T::raw_decode(b).expect("decode")
}

const N: u64 = 300_000;
const ROUNDS: usize = 15;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One contender: a name, its encoder and decoder.
struct Codec<T> {
    name: &'static str,
    enc: Enc<T>,
    dec: Dec<T>,
}

/// ns per message of encode alone, decode alone, and both, for one round.
fn round<T: PartialEq + std::fmt::Debug>(
    msgs: &[T],
    encoded: &[Vec<u8>],
    c: &Codec<T>,
) -> [f64; 3] {
    let mut buf = Vec::with_capacity(256);
    let per = |t: Instant| t.elapsed().as_nanos() as f64 / N as f64;
    let t = Instant::now();
    for i in 0..N {
        (c.enc)(black_box(&msgs[(i & 63) as usize]), &mut buf);
        black_box(&buf);
    }
    let e = per(t);
    let t = Instant::now();
    for i in 0..N {
        black_box((c.dec)(black_box(&encoded[(i & 63) as usize])));
    }
    let d = per(t);
    let t = Instant::now();
    for i in 0..N {
        (c.enc)(black_box(&msgs[(i & 63) as usize]), &mut buf);
        black_box((c.dec)(black_box(&buf)));
    }
    [e, d, per(t)]
}

/// Every contender on the same messages, round after round in turn (so
/// that all see the same moments of a noisy machine); medians printed.
fn table<T>(title: &str, make: fn(u64) -> T)
where
    T: Clone + PartialEq + std::fmt::Debug + Serialize + serde::de::DeserializeOwned + Raw,
{
    let codecs: Vec<Codec<T>> = vec![
        Codec {
            name: "raw: fixed layout by hand",
            enc: raw_encode,
            dec: raw_decode,
        },
        Codec {
            name: "postcard 1.1.3: Flavor appending to a Vec",
            enc: postcard_append,
            dec: postcard_decode,
        },
        Codec {
            name: "postcard 1.1.3: Flavor, short pieces bytewise",
            enc: postcard_append_short,
            dec: postcard_decode,
        },
        Codec {
            name: "postcard 1.1.3: Flavor, cursor in a full Vec",
            enc: postcard_cursor,
            dec: postcard_decode,
        },
        Codec {
            name: "postcard 1.1.3: to_extend(Vec)",
            enc: postcard_extend,
            dec: postcard_decode,
        },
        Codec {
            name: "postcard 1.1.3: to_slice",
            enc: postcard_slice,
            dec: postcard_decode,
        },
        Codec {
            name: "bincode 2.0.1 serde, standard: slice",
            enc: bincode_slice,
            dec: bincode_decode,
        },
        Codec {
            name: "bincode 2.0.1 serde, standard: io::Write",
            enc: bincode_write,
            dec: bincode_decode,
        },
        Codec {
            name: "bincode 2.0.1 serde, legacy (fixint)",
            enc: bincode_fixed_slice,
            dec: bincode_fixed_decode,
        },
    ];
    // Messages made beforehand: building them is not the codec's cost.
    let msgs: Vec<T> = (0..64).map(make).collect();
    let encoded: Vec<Vec<Vec<u8>>> = codecs
        .iter()
        .map(|c| {
            msgs.iter()
                .map(|m| {
                    let mut b = Vec::new();
                    (c.enc)(m, &mut b);
                    assert_eq!(&(c.dec)(&b), m, "{} round trip", c.name);
                    b
                })
                .collect()
        })
        .collect();
    let mut samples = vec![[Vec::new(), Vec::new(), Vec::new()]; codecs.len()];
    for _ in 0..ROUNDS {
        for (i, c) in codecs.iter().enumerate() {
            let r = round(&msgs, &encoded[i], c);
            for k in 0..3 {
                samples[i][k].push(r[k]);
            }
        }
    }
    println!("{title}");
    println!(
        "  {:<46} {:>6} {:>8} {:>8} {:>9}",
        "codec (encoding into a reused buffer)", "size", "encode", "decode", "enc+dec"
    );
    for (i, c) in codecs.iter().enumerate() {
        let [e, d, b] = samples[i].clone().map(median);
        println!(
            "  {:<46} {:>4} B {e:>8.1} {d:>8.1} {b:>9.1}",
            c.name,
            encoded[i][0].len()
        );
    }
}

fn main() {
    println!(
        "codec comparison: median of {ROUNDS} rounds of {N} messages, ns per message (64 different \
         messages in turn; every codec once per round, in turn)"
    );
    table("Reading (numeric; 64 B as a fixed layout)", reading);
    table(
        "Command (a 26-byte string and numbers; 64 B as a fixed layout)",
        command,
    );
}
