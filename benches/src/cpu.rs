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

/// The CPU time (user and system, all threads) process `pid` has used,
/// from `/proc/PID/stat`, in clock ticks converted to a duration (a tick
/// is usually 10 ms: measure over long enough a time).
///
/// # Errors
///
/// If the process is gone or the file does not parse.
pub fn process_time(pid: u32) -> io::Result<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_ticks(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/PID/stat"))?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?
        .filter(|&t| t > 0)
        .unwrap_or(100) as u64;
    Ok(std::time::Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / per_second,
    ))
}

/// `utime + stime` from the text of `/proc/PID/stat`. The fields are
/// counted after the command name's closing parenthesis, as the name may
/// hold spaces and parentheses.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // Fields 3 (state) onwards; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_the_name() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0";
        assert_eq!(parse_stat_ticks(stat), Some(10));
        assert_eq!(parse_stat_ticks("garbage"), None);
        let own = process_time(std::process::id()).unwrap();
        assert!(own < std::time::Duration::from_secs(3600));
    }
}
