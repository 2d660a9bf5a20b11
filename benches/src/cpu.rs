//! Pinning a process (or thread) to one CPU.

use std::io;

use nix::sched::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// The CPUs this process may run on, in increasing order.
///
/// # Errors
///
/// If `sched_getaffinity` fails.
pub fn available() -> io::Result<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0))?;
    Ok((0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect())
}

/// Restricts the calling thread (the whole process if it has one thread)
/// to `cpu`.
///
/// # Errors
///
/// If `cpu` is out of range or not allowed.
pub fn pin(cpu: usize) -> io::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set)?;
    Ok(())
}

/// Two distinct CPUs for the two sides of a benchmark, if there are two.
///
/// # Errors
///
/// As [`available`].
pub fn pair() -> io::Result<Option<(usize, usize)>> {
    let cpus = available()?;
    Ok(match cpus.as_slice() {
        [a, b, ..] => Some((*a, *b)),
        _ => None,
    })
}

/// The CPU the calling thread runs on now, if the kernel says.
pub fn current() -> Option<usize> {
    sched_getcpu().ok()
}
