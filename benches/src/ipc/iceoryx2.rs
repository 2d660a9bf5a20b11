//! `--iceoryx2`: iceoryx2's request-response beside ringlink, measured in
//! the same rounds.
//!
//! iceoryx2 is not a dependency of this crate: its peer is the crate
//! `benches/iceoryx2` (outside the workspace; iceoryx2 0.10 needs Rust
//! 1.89), which [`build`] builds with cargo into `benches/iceoryx2/target`
//! the first time (later builds are no-ops). That binary,
//! `ringlink-iceoryx2-peer`, is a server or a client of an iceoryx2
//! request-response service; `benches/iceoryx2/README.md` says what it
//! measures and why the comparison is fair.
//!
//! Every round of an iceoryx2 transport starts a server process, pinned
//! where ipc-bench's servers run, and a client process, pinned where its
//! first client runs; the client answers the go signal as ipc-bench's
//! own clients do, with a [`RunReport`] as one JSON line, and both exit
//! when the round is over. So nothing of iceoryx2 runs (or spins) while
//! another transport is measured. The peers live in an iceoryx2 domain
//! of the coordinator's own (file prefix `iox2rlb<PID>_`, directory
//! `/tmp/iceoryx2-ringlink-bench-<PID>/`), which [`Peer::cleanup`]
//! removes after the run, with whatever killed peers left; the domains
//! of earlier runs whose coordinator died are removed at the next run's
//! start ([`clean_stale_domains`]).

use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

use super::control::{Budget, RunReport};
use crate::driver::ChildGuard;

/// The peer crate's directory (`benches/iceoryx2` of the source tree
/// this binary was built from).
pub fn crate_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("iceoryx2")
}

/// The peer binary's name.
pub const PEER: &str = "ringlink-iceoryx2-peer";

/// The iceoryx2 version the peer is built with (its Cargo.toml pins it).
pub const ICEORYX2_VERSION: &str = "0.10.0";

/// The directory of an iceoryx2 domain of the bench.
const DOMAIN_DIR_PREFIX: &str = "iceoryx2-ringlink-bench-";

/// How the two sides of an iceoryx2 transport wait for each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Both poll in a spin loop.
    Busy,
    /// Both block on iceoryx2 event services between messages.
    Event,
}

impl Wait {
    fn arg(self) -> &'static str {
        match self {
            Wait::Busy => "busy",
            Wait::Event => "event",
        }
    }
}

/// Builds the peer with cargo (its output on standard error, where the
/// progress is) and returns the binary's path.
///
/// # Errors
///
/// A message that says what the build needs if cargo cannot run or the
/// build fails.
pub fn build() -> Result<PathBuf, String> {
    let dir = crate_dir();
    let manifest = dir.join("Cargo.toml");
    let target = dir.join("target");
    if !manifest.is_file() {
        return Err(format!(
            "--iceoryx2: no {} (the peer crate of the source tree ipc-bench was built from)",
            manifest.display()
        ));
    }
    // The cargo that runs ipc-bench, if it does (`cargo run`).
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .stdin(Stdio::null())
        // Standard output is the bench's report: cargo's messages go
        // to standard error.
        .stdout(Stdio::from(io::stderr()));
    eprintln!(
        "ipc-bench: building the iceoryx2 peer: {} build --release --locked --manifest-path {} \
         --target-dir {} (from nothing: about a minute on two cores)",
        Path::new(&cargo).display(),
        manifest.display(),
        target.display()
    );
    let status = cmd.status().map_err(|e| {
        format!(
            "--iceoryx2: cannot run {}: {e} (the peer is built with cargo)",
            Path::new(&cargo).display()
        )
    })?;
    if !status.success() {
        return Err(format!(
            "--iceoryx2: building the iceoryx2 peer failed ({status}; cargo's messages are \
             above). It needs Rust 1.89 or newer (iceoryx2 {ICEORYX2_VERSION}'s minimum: \
             `rustup update`), a C compiler and linker (Debian: gcc, libc6-dev; \
             scripts/install-bench-deps installs them), and crates.io the first time, for \
             the crates in benches/iceoryx2/Cargo.lock"
        ));
    }
    let exe = target.join("release").join(PEER);
    if !exe.is_file() {
        return Err(format!("--iceoryx2: the build made no {}", exe.display()));
    }
    Ok(exe)
}

/// What `ringlink-iceoryx2-peer cleanup` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cleanup {
    /// Dead nodes (killed peers) whose resources it removed.
    pub cleaned: u64,
    /// Dead nodes it could not clean up.
    pub failed: u64,
    /// Nodes of the domain still alive (the domain is kept then).
    pub alive: u64,
    /// Files and directories of the domain it could not remove.
    pub left: Vec<String>,
}

impl Cleanup {
    /// Parses the peer's line.
    ///
    /// # Errors
    ///
    /// If it is not one.
    pub fn parse(line: &str) -> Result<Cleanup, String> {
        serde_json::from_str(line.trim())
            .map_err(|e| format!("not a cleanup report ({e}): {line:?}"))
    }

    /// Whether the domain is gone entirely.
    pub fn complete(&self) -> bool {
        self.failed == 0 && self.alive == 0 && self.left.is_empty()
    }
}

/// Parses the client's report of a run, and checks that it holds
/// together: as many latency samples as measured round trips, no more
/// measured than sent, a measured phase that does not end before it
/// starts.
///
/// # Errors
///
/// If the line is not such a report.
pub fn parse_report(line: &str) -> Result<RunReport, String> {
    let r: RunReport = serde_json::from_str(line.trim())
        .map_err(|e| format!("not a run report from the iceoryx2 peer ({e}): {line:?}"))?;
    let samples: u64 = r.hist.iter().map(|&(_, c)| c).sum();
    if samples != r.measured || r.measured > r.total || r.end_ns < r.start_ns {
        return Err(format!(
            "an inconsistent run report from the iceoryx2 peer ({} measured, {} sent, {samples} \
             samples, from {} to {} ns)",
            r.measured, r.total, r.start_ns, r.end_ns
        ));
    }
    Ok(r)
}

/// The built peer and the coordinator's iceoryx2 domain, which it
/// removes when dropped if [`cleanup`](Peer::cleanup) has not.
#[derive(Debug)]
pub struct Peer {
    exe: PathBuf,
    domain: String,
    services: u64,
    cleaned: bool,
}

/// A peer process of one round.
#[derive(Debug)]
struct Proc {
    // Closing it ends the process; dropped before `child`.
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    child: ChildGuard,
}

impl Proc {
    fn spawn(exe: &Path, args: &[String]) -> io::Result<Proc> {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let child = ChildGuard(child);
        let stdout = stdout.ok_or_else(|| io::Error::other("no stdout"))?;
        let mut p = Proc {
            stdin,
            stdout: BufReader::new(stdout),
            child,
        };
        let line = p.line()?;
        if line.trim() != "ready" {
            return Err(io::Error::other(format!(
                "the iceoryx2 {} did not start{}",
                args[0],
                if line.is_empty() {
                    " (its message is above)".to_string()
                } else {
                    format!(": {line:?}")
                }
            )));
        }
        Ok(p)
    }

    /// The next line of its output; empty at its end.
    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        Ok(line)
    }

    /// Closes its input and waits for it to exit.
    fn finish(mut self, what: &str) -> Result<(), String> {
        drop(self.stdin.take());
        match self.child.reap(Duration::from_secs(5)) {
            Ok(Some(s)) if s.success() => Ok(()),
            Ok(Some(s)) => Err(format!("the iceoryx2 {what} exited with {s}")),
            Ok(None) => Err(format!("the iceoryx2 {what} did not exit; killed")),
            Err(e) => Err(format!("the iceoryx2 {what}: {e}")),
        }
    }
}

/// One round's server and client, both ready.
#[derive(Debug)]
pub struct Round {
    server: Proc,
    client: Proc,
}

impl Round {
    /// The server's process id (for its CPU time).
    pub fn server_pid(&self) -> u32 {
        self.server.child.0.id()
    }

    /// Tells the client the go signal and the phases, and reads its
    /// report.
    ///
    /// # Errors
    ///
    /// If the client fails (its message is on standard error) or its
    /// report does not parse.
    pub fn run(
        &mut self,
        start_ns: u64,
        warm: Budget,
        measure: Budget,
    ) -> Result<RunReport, String> {
        let budget = |b: Budget| match b {
            Budget::UntilNs(ns) => format!("t{ns}"),
            Budget::Count(n) => format!("n{n}"),
        };
        let cmd = format!("run {start_ns} {} {}\n", budget(warm), budget(measure));
        let stdin = self
            .client
            .stdin
            .as_mut()
            .ok_or_else(|| "the iceoryx2 client's input is closed".to_string())?;
        stdin
            .write_all(cmd.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("the iceoryx2 client is gone ({e}; its message is above)"))?;
        let line = self
            .client
            .line()
            .map_err(|e| format!("the iceoryx2 client: {e}"))?;
        if line.is_empty() {
            return Err("the iceoryx2 client exited (its message is above)".into());
        }
        parse_report(&line)
    }

    /// Ends both processes (client first) and waits for them.
    ///
    /// # Errors
    ///
    /// If either exits unsuccessfully.
    pub fn finish(self) -> Result<(), String> {
        let client = self.client.finish("client");
        let server = self.server.finish("server");
        client.and(server)
    }
}

impl Peer {
    /// The peer at `exe`, in the coordinator's own domain.
    pub fn new(exe: PathBuf) -> Peer {
        Peer {
            exe,
            domain: std::process::id().to_string(),
            services: 0,
            cleaned: false,
        }
    }

    /// Starts a server (on `server_cpu`) and a client (on `client_cpu`)
    /// of a new service for messages of `size` bytes, and waits until
    /// both are ready.
    ///
    /// # Errors
    ///
    /// If either does not start.
    pub fn start(
        &mut self,
        wait: Wait,
        size: usize,
        server_cpu: Option<usize>,
        client_cpu: Option<usize>,
    ) -> Result<Round, String> {
        self.services += 1;
        let service = format!("ringlink-bench/{}-{size}-{}", wait.arg(), self.services);
        let args = |role: &str, cpu: Option<usize>| {
            let mut a: Vec<String> = [
                role,
                "--domain",
                &self.domain,
                "--service",
                &service,
                "--wait",
                wait.arg(),
                "--size",
                &size.to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if let Some(cpu) = cpu {
                a.push("--cpu".into());
                a.push(cpu.to_string());
            }
            a
        };
        let server =
            Proc::spawn(&self.exe, &args("server", server_cpu)).map_err(|e| e.to_string())?;
        let client = match Proc::spawn(&self.exe, &args("client", client_cpu)) {
            Ok(c) => c,
            Err(e) => {
                let _ = server.finish("server");
                return Err(e.to_string());
            }
        };
        Ok(Round { server, client })
    }

    /// Removes the domain (see [`cleanup`]).
    ///
    /// # Errors
    ///
    /// As [`cleanup`].
    pub fn cleanup(mut self) -> Result<Cleanup, String> {
        self.cleaned = true;
        cleanup(&self.exe, &self.domain)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if !self.cleaned {
            let _ = cleanup(&self.exe, &self.domain);
        }
    }
}

/// Runs `exe cleanup --domain DOMAIN`: removes what killed peers of the
/// domain left, then the domain itself.
///
/// # Errors
///
/// If the peer cannot run or says nothing useful.
pub fn cleanup(exe: &Path, domain: &str) -> Result<Cleanup, String> {
    let out = Command::new(exe)
        .args(["cleanup", "--domain", domain])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    if !out.status.success() {
        return Err(format!("the iceoryx2 cleanup failed ({})", out.status));
    }
    Cleanup::parse(&String::from_utf8_lossy(&out.stdout))
}

/// The domains (coordinator pids) whose directory is in `tmp` and whose
/// coordinator is no longer running: earlier runs that were killed
/// before they could clean up.
pub fn stale_domains(tmp: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(tmp) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let name = e.ok()?.file_name().into_string().ok()?;
        let pid: u32 = name.strip_prefix(DOMAIN_DIR_PREFIX)?.parse().ok()?;
        let alive = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim() == "ipc-bench")
            && !zombie(pid);
        (!alive && pid != std::process::id()).then(|| pid.to_string())
    })
    .collect()
}

/// Whether process `pid` has exited and awaits its parent.
fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // After the name: the state.
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_ascii_whitespace().next())
            == Some("Z")
    })
}

/// Removes the domains of [`stale_domains`] in `/tmp`; returns what the
/// peer found there.
pub fn clean_stale_domains(exe: &Path) -> Vec<(String, Result<Cleanup, String>)> {
    stale_domains(Path::new("/tmp"))
        .into_iter()
        .map(|d| {
            let r = cleanup(exe, &d);
            (d, r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_as_the_peer_writes_them() {
        // The peer's format (benches/iceoryx2/src/main.rs, `report`).
        let line = "{\"measured\":3,\"total\":5,\"start_ns\":10,\"end_ns\":20,\"late_ns\":1,\
                    \"hist\":[[3,1],[1000,2]]}\n";
        let r = parse_report(line).unwrap();
        assert_eq!(
            r,
            RunReport {
                measured: 3,
                total: 5,
                start_ns: 10,
                end_ns: 20,
                late_ns: 1,
                hist: vec![(3, 1), (1000, 2)],
            }
        );
        // A run that started too late: nothing measured.
        let late = "{\"measured\":0,\"total\":0,\"start_ns\":0,\"end_ns\":0,\"late_ns\":9,\
                    \"hist\":[]}";
        assert_eq!(parse_report(late).unwrap().late_ns, 9);
    }

    #[test]
    fn bad_reports_are_refused() {
        for bad in [
            "",
            "ready",
            "{\"measured\":3}",
            // Samples and round trips disagree.
            "{\"measured\":3,\"total\":5,\"start_ns\":10,\"end_ns\":20,\"late_ns\":1,\"hist\":[[3,1]]}",
            // More measured than sent.
            "{\"measured\":1,\"total\":0,\"start_ns\":10,\"end_ns\":20,\"late_ns\":1,\"hist\":[[3,1]]}",
            // Ends before it starts.
            "{\"measured\":1,\"total\":1,\"start_ns\":30,\"end_ns\":20,\"late_ns\":1,\"hist\":[[3,1]]}",
            "{\"measured\":-1,\"total\":1,\"start_ns\":0,\"end_ns\":0,\"late_ns\":0,\"hist\":[]}",
        ] {
            assert!(parse_report(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cleanup_reports_parse() {
        let c = Cleanup::parse("{\"cleaned\":2,\"failed\":0,\"alive\":0,\"left\":[]}\n").unwrap();
        assert_eq!(c.cleaned, 2);
        assert!(c.complete());
        let c = Cleanup::parse(
            "{\"cleaned\":0,\"failed\":0,\"alive\":0,\"left\":[\"/dev/shm/iox2rlb7_x\"]}",
        )
        .unwrap();
        assert!(!c.complete());
        assert!(Cleanup::parse("{\"cleaned\":1}").is_err());
        assert!(Cleanup::parse("cleaned").is_err());
    }

    #[test]
    fn stale_domains_are_those_of_dead_coordinators() {
        let tmp = std::env::temp_dir().join(format!("ice-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).unwrap();
        // No process has pid 0x7fff_fff0 (above the kernel's pid_max).
        for name in [
            format!("{DOMAIN_DIR_PREFIX}{}", 0x7fff_fff0u32),
            format!("{DOMAIN_DIR_PREFIX}{}", std::process::id()),
            format!("{DOMAIN_DIR_PREFIX}x"),
            "iceoryx2".to_string(),
        ] {
            std::fs::create_dir(tmp.join(name)).unwrap();
        }
        let stale = stale_domains(&tmp);
        std::fs::remove_dir_all(&tmp).unwrap();
        assert_eq!(stale, vec![0x7fff_fff0u32.to_string()]);
    }

    #[test]
    fn the_peer_crate_is_beside_this_one() {
        assert!(crate_dir().join("Cargo.toml").is_file());
        let manifest = std::fs::read_to_string(crate_dir().join("Cargo.toml")).unwrap();
        assert!(manifest.contains(&format!("iceoryx2 = \"={ICEORYX2_VERSION}\"")));
        assert!(manifest.contains(&format!("name = \"{PEER}\"")));
    }
}
