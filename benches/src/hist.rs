//! A latency histogram that many processes fill and one merges.
//!
//! Log-linear buckets: values below 128 ns have a bucket each; above,
//! every power of two is split into 128 buckets, so a bucket is at most
//! 1/128 of its values wide and a reported percentile (the bucket's
//! midpoint) is within 0.4% of the true sample. Recording is a couple of
//! instructions, the memory fixed (58 KiB) whatever the number of
//! samples, and histograms merge exactly: `ipc-bench` sends each client
//! process's histogram to the coordinator in the sparse form
//! ([`Histogram::to_sparse`]) and reports percentiles over all
//! connections' samples.

use std::fmt;

/// Bits of sub-bucket resolution per power of two.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets for every `u64`: 128 exact ones, then 128 per power of two
/// from 2^7 to 2^63.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

/// Counts of samples (nanoseconds) per bucket.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("p50", &self.percentile(50.0))
            .field("p99", &self.percentile(99.0))
            .finish_non_exhaustive()
    }
}

/// The bucket of value `v`.
#[inline]
fn index(v: u64) -> usize {
    if v < SUB {
        v as usize
    } else {
        let msb = 63 - v.leading_zeros(); // >= SUB_BITS
        let shift = msb - SUB_BITS;
        let mantissa = (v >> shift) - SUB; // 0..SUB
        ((u64::from(shift) + 1) * SUB + mantissa) as usize
    }
}

/// The smallest value of bucket `i` and the bucket's width.
fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB {
        (i, 1)
    } else {
        let shift = i / SUB - 1;
        let mantissa = i % SUB;
        ((SUB + mantissa) << shift, 1 << shift)
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }

    /// Records one sample.
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.counts[index(ns)] += 1;
        self.total += 1;
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// The nearest-rank `p`th percentile (the midpoint of its bucket), or
    /// `None` if the histogram is empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil() as u64;
        let rank = rank.clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, width) = bounds(i);
                return Some(lo + (width - 1) / 2);
            }
        }
        None // unreachable: the counts add up to `total`
    }

    /// The non-empty buckets as `(bucket, count)` pairs: the form sent
    /// between processes.
    pub fn to_sparse(&self) -> Vec<(u32, u64)> {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| (i as u32, c))
            .collect()
    }

    /// Adds the samples of a histogram in sparse form.
    ///
    /// # Errors
    ///
    /// A bucket index out of range (the pairs were not made by
    /// [`to_sparse`](Self::to_sparse)); nothing is added then.
    pub fn merge_sparse(&mut self, pairs: &[(u32, u64)]) -> Result<(), String> {
        if let Some((i, _)) = pairs.iter().find(|(i, _)| *i as usize >= BUCKETS) {
            return Err(format!("histogram bucket {i} out of range"));
        }
        for &(i, c) in pairs {
            self.counts[i as usize] += c;
            self.total += c;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for v in (0..5000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let i = index(v);
            assert!(i < BUCKETS, "{v}");
            assert!(i >= last, "{v}");
            last = i;
            let (lo, width) = bounds(i);
            assert!(lo <= v && v - lo < width, "{v} in [{lo}, +{width})");
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_are_close_to_exact_ones() {
        let mut h = Histogram::new();
        let mut exact: Vec<u64> = (0..10_000u64).map(|i| 500 + i * i % 97_531).collect();
        for &v in &exact {
            h.record(v);
        }
        exact.sort_unstable();
        for p in [50.0, 99.0, 99.9] {
            let want = crate::stats::percentile(&exact, p) as f64;
            let got = h.percentile(p).unwrap() as f64;
            assert!((got - want).abs() / want < 0.01, "p{p}: {got} vs {want}");
        }
        assert_eq!(Histogram::new().percentile(50.0), None);
    }

    #[test]
    fn sparse_form_merges_exactly() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        for v in [3, 70, 1000, 1_000_000] {
            a.record(v);
            b.record(v * 2);
        }
        let mut merged = a.clone();
        merged.merge(&b);
        let mut via_sparse = a.clone();
        via_sparse.merge_sparse(&b.to_sparse()).unwrap();
        assert_eq!(merged, via_sparse);
        assert_eq!(merged.len(), 8);
        assert!(via_sparse.merge_sparse(&[(BUCKETS as u32, 1)]).is_err());
        assert_eq!(via_sparse.len(), 8);
    }
}
