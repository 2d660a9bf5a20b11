//! What `/proc` says about a process: open fds, mappings, resident
//! memory, ids, and whether one of its threads sleeps. The leak tests
//! compare these before and after; the "call already blocked" tests wait
//! until the blocked thread really sleeps in the kernel.

use std::io;

/// Which process: this one, or another by pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proc {
    /// `/proc/self`.
    Current,
    /// `/proc/<pid>`.
    Pid(u32),
}

impl Proc {
    fn dir(self) -> String {
        match self {
            Proc::Current => "/proc/self".to_owned(),
            Proc::Pid(p) => format!("/proc/{p}"),
        }
    }
}

/// Number of open fds (entries of `/proc/<pid>/fd`). For
/// [`Proc::Current`] the directory handle used to count is not counted.
///
/// # Errors
///
/// If the directory cannot be read (the process is gone).
pub fn fd_count(p: Proc) -> io::Result<usize> {
    let n = std::fs::read_dir(format!("{}/fd", p.dir()))?.count();
    // Listing /proc/self/fd opens one fd of our own, which it lists.
    Ok(match p {
        Proc::Current => n.saturating_sub(1),
        Proc::Pid(_) => n,
    })
}

/// Number of memory mappings (lines of `/proc/<pid>/maps`).
///
/// # Errors
///
/// If the file cannot be read.
pub fn map_count(p: Proc) -> io::Result<usize> {
    Ok(std::fs::read_to_string(format!("{}/maps", p.dir()))?
        .lines()
        .count())
}

/// A `Key:   value ...` line of `/proc/<pid>/status`, without the key.
///
/// # Errors
///
/// If the file cannot be read or has no such line.
pub fn status_field(p: Proc, key: &str) -> io::Result<String> {
    let text = std::fs::read_to_string(format!("{}/status", p.dir()))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no {key} in status")))
}

/// Resident memory in KiB (`VmRSS`).
///
/// # Errors
///
/// As [`status_field`], or if the value is not a number.
pub fn rss_kib(p: Proc) -> io::Result<u64> {
    let v = status_field(p, "VmRSS")?;
    v.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("VmRSS {v:?}")))
}

/// The effective uid and gid (second field of the `Uid:` and `Gid:`
/// lines).
///
/// # Errors
///
/// As [`status_field`], or if a line is malformed.
pub fn effective_ids(p: Proc) -> io::Result<(u32, u32)> {
    let second = |key: &str| -> io::Result<u32> {
        let v = status_field(p, key)?;
        v.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("{key} {v:?}")))
    };
    Ok((second("Uid")?, second("Gid")?))
}

/// The scheduler state letter of thread `tid` of process `p` (`R`
/// running, `S` sleeping, ...), from `/proc/<pid>/task/<tid>/stat`.
///
/// # Errors
///
/// If the file cannot be read (thread gone) or is malformed.
pub fn thread_state(p: Proc, tid: i32) -> io::Result<char> {
    let stat = std::fs::read_to_string(format!("{}/task/{tid}/stat", p.dir()))?;
    // "tid (comm) S ...": comm may contain spaces and parentheses, so
    // take what follows the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed stat"))
}

/// CPU time (user + system, in clock ticks) thread `tid` of `p` has used.
///
/// # Errors
///
/// As [`thread_state`].
pub fn thread_cpu_ticks(p: Proc, tid: i32) -> io::Result<u64> {
    cpu_ticks(&format!("{}/task/{tid}/stat", p.dir()))
}

/// `utime + stime` from a `stat` file (stat(5)).
fn cpu_ticks(path: &str) -> io::Result<u64> {
    let stat = std::fs::read_to_string(path)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed stat");
    let (_, rest) = stat.rsplit_once(')').ok_or_else(bad)?;
    // After the comm: state is field 3 of stat(5), utime 14, stime 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| -> io::Result<u64> {
        fields.get(i).and_then(|f| f.parse().ok()).ok_or_else(bad)
    };
    Ok(num(11)? + num(12)?)
}

/// The calling thread's kernel id.
pub fn gettid() -> i32 {
    // SAFETY: gettid(2) has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Names of the entries of `/dev/shm` containing `ringlink` (any case),
/// sorted: what a crashed ringlink process could leave behind.
pub fn shm_leftovers() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.to_ascii_lowercase().contains("ringlink"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// CPU time (user + system, in clock ticks) all threads of `p` have used
/// (`utime + stime` of `/proc/<pid>/stat`).
///
/// # Errors
///
/// If the file cannot be read (process gone) or is malformed.
pub fn process_cpu_ticks(p: Proc) -> io::Result<u64> {
    cpu_ticks(&format!("{}/stat", p.dir()))
}

/// Waits until thread `tid` of `p` has been asleep in the kernel (state
/// `S`) for five looks in a row, 2 ms apart: the call it makes is really
/// blocked (after any spinning), not about to start.
///
/// # Panics
///
/// If it is not within `timeout`, or the thread cannot be looked at.
pub fn wait_asleep(p: Proc, tid: i32, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    let mut asleep = 0;
    while asleep < 5 {
        match thread_state(p, tid) {
            Ok('S') => asleep += 1,
            Ok(_) => asleep = 0,
            Err(e) => panic!("thread {tid} of {p:?}: {e}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "thread {tid} of {p:?} never went to sleep"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process of the
/// machine, so that a time taken in a helper compares with one taken in
/// the test.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live local the kernel fills; the clock id is
    // valid.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(r, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
