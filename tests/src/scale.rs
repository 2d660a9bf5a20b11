//! How big the soak and crash runs are.
//!
//! CI runs them at a size that keeps the whole suite within its budget
//! on a 2-core machine. `RINGLINK_SOAK_SCALE=1` runs the figures of the
//! issue that asked for them (1,000 client kills, 256 clients of 100,000
//! round trips each, ...); any other positive number runs that fraction
//! of them (`0.1`: a tenth). `docs/RELIABILITY.md` records the full-size
//! runs.

/// The environment variable read by [`count`].
pub const ENV: &str = "RINGLINK_SOAK_SCALE";

/// The scale factor set in [`ENV`], if any (a positive number).
///
/// # Panics
///
/// If [`ENV`] is set to anything but a positive number.
pub fn factor() -> Option<f64> {
    let v = std::env::var(ENV).ok()?;
    match v.trim().parse::<f64>() {
        Ok(f) if f > 0.0 && f.is_finite() => Some(f),
        _ => panic!("{ENV}={v}: expected a positive number (1 = the full figures)"),
    }
}

/// How many to run: `ci` when [`ENV`] is unset, else `full` times its
/// value (at least 1).
pub fn count(ci: u64, full: u64) -> u64 {
    match factor() {
        None => ci,
        Some(f) => ((full as f64 * f).round() as u64).max(1),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unset_means_the_ci_size() {
        if std::env::var_os(super::ENV).is_none() {
            assert_eq!(super::count(5, 1000), 5);
        }
    }
}
