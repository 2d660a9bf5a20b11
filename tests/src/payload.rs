//! The deterministic record stream.
//!
//! Record `seq` of a stream with seed `seed` has length
//! [`record_len`]`(seed, seq, max)` and contents [`fill`]`(seed, seq, ..)`:
//! when it is at least 8 bytes long, its first 8 bytes are `seq`
//! (little-endian, so a failure message can say which record turned up),
//! and every other byte comes from a xorshift stream keyed by `seed`,
//! `seq` and the length. A reader that knows the seed recomputes each
//! record and compares every byte: a lost, duplicated or reordered record
//! changes the expected length or contents at that point, and a torn or
//! overwritten one changes its bytes.

/// The SplitMix64 finaliser: a cheap, well-mixed 64-bit hash.
#[inline]
pub const fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A deterministic stream of random numbers (SplitMix64): the same
/// seed makes the same choices on every run, so that a failure repeats.
#[derive(Clone, Debug)]
pub struct Dice(u64);

impl Dice {
    /// A stream from `seed`.
    pub const fn new(seed: u64) -> Dice {
        Dice(seed)
    }

    /// The next number.
    pub fn roll(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }

    /// The next number below `n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.roll() % n.max(1)
    }
}

/// Length of record `seq` in a ring whose largest payload is `max`.
///
/// 10 % are empty, 40 % small (1..=16 bytes), 40 % odd-ish medium sizes
/// (17..=255), 9.8 % larger (256..=2047), and 0.2 % within 16 bytes of
/// `max` (`max` itself included); all capped at `max`.
#[inline]
pub fn record_len(seed: u64, seq: u64, max: usize) -> usize {
    let h = mix(seed ^ mix(seq));
    let r = (h >> 16) as usize;
    let len = match h % 1000 {
        0..=99 => 0,
        100..=499 => 1 + r % 16,
        500..=899 => 17 + r % 239,
        900..=997 => 256 + r % 1792,
        _ => max.saturating_sub(r % 16),
    };
    len.min(max)
}

/// Start of the byte stream of a record (never zero: xorshift state).
#[inline]
fn stream_start(seed: u64, seq: u64, len: usize) -> u64 {
    mix(seed ^ 0x05EE_D0FB_17E5 ^ mix(seq ^ ((len as u64) << 40))) | 1
}

/// Next word of a record's byte stream (xorshift64*).
#[inline]
fn next_word(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// Writes the contents of record `seq` into `buf` (its length is the
/// record's length).
#[inline]
pub fn fill(seed: u64, seq: u64, buf: &mut [u8]) {
    let mut state = stream_start(seed, seq, buf.len());
    let mut chunks = buf.chunks_exact_mut(8);
    for (i, chunk) in (&mut chunks).enumerate() {
        let w = if i == 0 { seq } else { next_word(&mut state) };
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let w = next_word(&mut state);
        let n = rest.len();
        rest.copy_from_slice(&w.to_le_bytes()[..n]);
    }
}

/// Checks that `data` holds exactly the contents of record `seq` for its
/// length.
///
/// # Errors
///
/// A description of the first difference.
#[inline]
pub fn check(seed: u64, seq: u64, data: &[u8]) -> Result<(), String> {
    let mut state = stream_start(seed, seq, data.len());
    let mut chunks = data.chunks_exact(8);
    for (i, chunk) in (&mut chunks).enumerate() {
        let want = if i == 0 { seq } else { next_word(&mut state) };
        let got = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
        if got != want {
            return Err(mismatch(seq, data, i * 8, got, want));
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let want = next_word(&mut state).to_le_bytes();
        if rest != &want[..rest.len()] {
            let at = data.len() - rest.len();
            let mut got = [0u8; 8];
            got[..rest.len()].copy_from_slice(rest);
            let mut want = want;
            want[rest.len()..].fill(0);
            return Err(mismatch(
                seq,
                data,
                at,
                u64::from_le_bytes(got),
                u64::from_le_bytes(want),
            ));
        }
    }
    Ok(())
}

#[cold]
fn mismatch(seq: u64, data: &[u8], at: usize, got: u64, want: u64) -> String {
    format!(
        "record {seq} ({} bytes{}): bytes at offset {at} are {got:#018x}, expected {want:#018x}",
        data.len(),
        seq_field(data)
    )
}

/// ", carrying seq N" for records long enough to carry one.
fn seq_field(data: &[u8]) -> String {
    match data.get(..8) {
        Some(b) => format!(
            ", carrying seq {}",
            u64::from_le_bytes(b.try_into().expect("8 bytes"))
        ),
        None => String::new(),
    }
}

/// Checks that `data` is record `seq` of the stream `seed` in a ring
/// whose largest payload is `max`: its length, then every byte.
///
/// # Errors
///
/// A description of the difference (expected and actual length, the seq
/// the record carries, or the first differing bytes).
#[inline]
pub fn check_record(seed: u64, seq: u64, max: usize, data: &[u8]) -> Result<(), String> {
    let want = record_len(seed, seq, max);
    if data.len() != want {
        return Err(format!(
            "record {seq}: length {}, expected {want}{}",
            data.len(),
            seq_field(data)
        ));
    }
    check(seed, seq, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_then_check_round_trips_every_length() {
        let mut buf = [0u8; 100];
        for len in 0..100 {
            fill(7, 42, &mut buf[..len]);
            check(7, 42, &buf[..len]).unwrap();
            if len > 0 {
                buf[len - 1] ^= 1;
                assert!(check(7, 42, &buf[..len]).is_err(), "len {len}");
            }
        }
    }

    #[test]
    fn neighbouring_records_differ() {
        let (mut a, mut b) = ([0u8; 5], [0u8; 5]);
        fill(1, 10, &mut a);
        fill(1, 11, &mut b);
        assert_ne!(a, b);
        let mut c = [0u8; 16];
        fill(1, 10, &mut c);
        assert_eq!(u64::from_le_bytes(c[..8].try_into().unwrap()), 10);
        assert!(check(1, 11, &c).unwrap_err().contains("carrying seq 10"));
    }

    #[test]
    fn lengths_cover_the_classes() {
        let max = 2040;
        let lens: Vec<usize> = (0..100_000).map(|s| record_len(3, s, max)).collect();
        assert!(lens.iter().all(|&l| l <= max));
        assert!(lens.contains(&0));
        assert!(lens.contains(&max));
        assert!(lens.iter().any(|&l| l % 2 == 1));
        assert!(lens.iter().any(|&l| l > max - 16 && l < max));
    }
}
