//! Summaries of latency samples and formatting of rates.

/// Order statistics of a set of samples, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Smallest sample.
    pub min: u64,
    /// Median (nearest rank).
    pub median: u64,
    /// 99th percentile (nearest rank).
    pub p99: u64,
    /// Largest sample.
    pub max: u64,
    /// Arithmetic mean.
    pub mean: f64,
}

/// Sorts `samples` and summarises them. All zero for no samples.
pub fn summarize(samples: &mut [u64]) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    samples.sort_unstable();
    let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
    Summary {
        count: samples.len(),
        min: samples[0],
        median: percentile(samples, 50.0),
        p99: percentile(samples, 99.0),
        max: samples[samples.len() - 1],
        mean: sum as f64 / samples.len() as f64,
    }
}

/// The nearest-rank `p`th percentile of sorted, non-empty `sorted`.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A count per second with an SI suffix: `12.3 M`.
pub fn si(v: f64) -> String {
    let (div, suffix) = si_unit(v);
    format!("{:.2}{suffix}", v / div)
}

/// A range in the SI unit of `reference`: `9.1-12.7 M`.
pub fn si_range(lo: f64, hi: f64, reference: f64) -> String {
    let (div, suffix) = si_unit(reference);
    format!("{:.1}-{:.1}{suffix}", lo / div, hi / div)
}

fn si_unit(v: f64) -> (f64, &'static str) {
    if v >= 1e9 {
        (1e9, " G")
    } else if v >= 1e6 {
        (1e6, " M")
    } else if v >= 1e3 {
        (1e3, " k")
    } else {
        (1.0, "  ")
    }
}

/// A byte size as the benches name it: `8 B`, `64 KiB`.
pub fn size_label(size: usize) -> String {
    if size >= 1 << 20 && size % (1 << 20) == 0 {
        format!("{} MiB", size >> 20)
    } else if size >= 1 << 10 && size % (1 << 10) == 0 {
        format!("{} KiB", size >> 10)
    } else {
        format!("{size} B")
    }
}

/// Parses a size: a number with an optional `K`/`KiB`/`M`/`MiB` suffix
/// (binary multiples) or `B`.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits);
    let n: usize = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let s = summarize(&mut v);
        assert_eq!((s.min, s.median, s.p99, s.max), (1, 50, 99, 100));
        assert_eq!(s.count, 100);
        assert_eq!(summarize(&mut [7]).p99, 7);
        assert_eq!(summarize(&mut []).count, 0);
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("8"), Some(8));
        assert_eq!(parse_size("64K"), Some(65536));
        assert_eq!(parse_size("1KiB"), Some(1024));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("3Q"), None);
        assert_eq!(size_label(8), "8 B");
        assert_eq!(size_label(1024), "1 KiB");
        assert_eq!(size_label(65536), "64 KiB");
        assert_eq!(size_label(1000), "1000 B");
        assert_eq!(si(12_345_678.0), "12.35 M");
        assert_eq!(si_range(9.1e6, 12.7e6, 1.1e7), "9.1-12.7 M");
    }
}
