//! Message payloads: written by the sender, checked and read by the
//! receiver.

use std::io;

/// A message buffer of `size` bytes filled with a non-trivial pattern.
pub fn pattern(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8).wrapping_mul(31) ^ 0x5a)
        .collect()
}

/// Writes `seq` into the first 8 bytes of `buf` (as much as fits) and,
/// when there is room for both, into its last 8 bytes.
#[inline]
pub fn stamp(buf: &mut [u8], seq: u64) {
    let b = seq.to_le_bytes();
    let len = buf.len();
    let n = len.min(8);
    buf[..n].copy_from_slice(&b[..n]);
    if len >= 16 {
        buf[len - 8..].copy_from_slice(&b);
    }
}

/// Checks a received message: its length and the stamps of
/// [`stamp`]; then reads one word of every 64-byte line, so that the
/// whole payload reaches the receiver's cache. Returns a value to feed to
/// `black_box`.
///
/// # Errors
///
/// `InvalidData` if the length or a stamp is wrong.
#[inline]
pub fn check(buf: &[u8], size: usize, seq: u64) -> io::Result<u64> {
    let b = seq.to_le_bytes();
    let len = buf.len();
    let n = len.min(8);
    // Whole words where there are (a slice comparison of unknown length
    // would be a call to memcmp per stamp).
    let stamps_ok = match (buf.first_chunk::<8>(), buf.last_chunk::<8>()) {
        (Some(first), Some(last)) if len >= 16 => *first == b && *last == b,
        _ => buf[..n] == b[..n],
    };
    if len != size || !stamps_ok {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "payload mismatch: expected {size} bytes with seq {seq}, got {len} bytes starting {:?}",
                &buf[..n]
            ),
        ));
    }
    let mut acc = 0u64;
    let mut i = 0;
    while i + 8 <= len {
        let mut w = [0u8; 8];
        w.copy_from_slice(&buf[i..i + 8]);
        acc ^= u64::from_ne_bytes(w);
        i += 64;
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        for size in [0, 1, 7, 8, 9, 15, 16, 64, 1024, 65536] {
            let mut buf = pattern(size);
            stamp(&mut buf, 0x0102_0304_0506_0708);
            check(&buf, size, 0x0102_0304_0506_0708).unwrap();
            if size > 0 {
                assert!(check(&buf, size, 7).is_err());
            }
            assert!(check(&buf, size + 1, 0x0102_0304_0506_0708).is_err());
        }
    }

    #[test]
    fn a_wrong_tail_is_caught() {
        let mut buf = pattern(64);
        stamp(&mut buf, 5);
        buf[63] ^= 1;
        assert!(check(&buf, 64, 5).is_err());
    }
}
