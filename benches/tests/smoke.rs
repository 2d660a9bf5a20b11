//! Smoke test of the `ring-bench` command: `--quick` must run to the end
//! and print every table, so the bench cannot silently break.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn ring_bench_quick_prints_the_table() {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ring-bench"))
        .arg("--quick")
        .output()
        .expect("run ring-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ring-bench --quick failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for header in [
        "One-way throughput",
        "ring msgs/s",
        "seqpacket msgs/s",
        "Round-trip latency",
        "ring spin",
        "ring no-spin",
        "spin floor",
        "bare shm",
        "memcpy",
        "ring % of memcpy",
        "Targets",
    ] {
        assert!(stdout.contains(header), "no {header:?} in:\n{stdout}");
    }
    for size in ["8 B", "64 B", "1 KiB", "64 KiB"] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(size)),
            "no row for {size} in:\n{stdout}"
        );
    }
    // Informational only: never assert a maximum runtime.
    if started.elapsed() > Duration::from_secs(30) {
        eprintln!("ring-bench --quick took {:?}", started.elapsed());
    }
}

#[test]
fn ring_bench_rejects_unknown_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_ring-bench"))
        .arg("--no-such-flag")
        .output()
        .expect("run ring-bench");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn ring_bench_rejects_sizes_out_of_range() {
    for sizes in ["0", "1M", "8,x"] {
        let out = Command::new(env!("CARGO_BIN_EXE_ring-bench"))
            .args(["--sizes", sizes])
            .output()
            .expect("run ring-bench");
        assert_eq!(out.status.code(), Some(2), "--sizes {sizes}");
    }
}

#[test]
fn ring_bench_help_exits_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_ring-bench"))
        .arg("--help")
        .output()
        .expect("run ring-bench");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--quick"));
}
