//! Programs written in C against the system's libqb (`tests/c/`), built
//! for the tests that prove ringlink against the real library: Debian's
//! `libqb-dev`, which `scripts/install-test-deps` installs (CI runs it).
//!
//! Where libqb is not installed, [`require`] says so on stderr and the
//! test returns early, unless `RINGLINK_REQUIRE_LIBQB` is set (CI sets
//! it): then a missing libqb fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variable that turns a missing libqb into a failure.
pub const REQUIRE_ENV: &str = "RINGLINK_REQUIRE_LIBQB";

/// Whether libqb's headers and library are installed.
pub fn installed() -> bool {
    Path::new("/usr/include/qb/qbipcc.h").exists()
        && Command::new("pkg-config")
            .args(["--exists", "libqb"])
            .status()
            .map(|s| s.success())
            .unwrap_or_else(|_| {
                // No pkg-config: look for the library itself.
                [
                    "/usr/lib/x86_64-linux-gnu/libqb.so",
                    "/usr/lib/aarch64-linux-gnu/libqb.so",
                    "/usr/lib/libqb.so",
                ]
                .iter()
                .any(|p| Path::new(p).exists())
            })
}

/// Whether the test may go on: libqb is installed. Otherwise says why on
/// stderr (the test then returns, passing), or panics if
/// [`REQUIRE_ENV`] is set.
///
/// # Panics
///
/// Without libqb, under [`REQUIRE_ENV`].
pub fn require(test: &str) -> bool {
    if installed() {
        return true;
    }
    let why = "libqb-dev is not installed (scripts/install-test-deps installs it)";
    assert!(
        std::env::var_os(REQUIRE_ENV).is_none(),
        "{test}: {why}, and {REQUIRE_ENV} is set"
    );
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// Builds `tests/c/<name>.c` against libqb into `dir` (a test's
/// `CARGO_TARGET_TMPDIR`), unless the binary there is newer than the
/// source; returns its path. Concurrent builds (tests in parallel
/// processes) each write their own file and rename it into place.
///
/// # Panics
///
/// If gcc fails.
pub fn build(name: &str, dir: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("c")
        .join(format!("{name}.c"));
    let out = Path::new(dir).join(name);
    let fresh = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    if let (Some(b), Some(s)) = (fresh(&out), fresh(&src)) {
        if b >= s {
            return out;
        }
    }
    std::fs::create_dir_all(dir).expect("the build directory");
    let tmp = Path::new(dir).join(format!("{name}.{}.tmp", std::process::id()));
    let built = Command::new("gcc")
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&tmp)
        .arg(&src)
        .arg("-lqb")
        .output()
        .expect("run gcc");
    assert!(
        built.status.success(),
        "gcc {}: {}",
        src.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    std::fs::rename(&tmp, &out).expect("move the build into place");
    out
}

/// Runs the function `NAME(transport)` as two tests, one for each of
/// libqb's transports: `NAME::shm` and `NAME::socket`.
#[macro_export]
macro_rules! libqb_test {
    ($name:ident) => {
        mod $name {
            #[test]
            fn shm() {
                super::$name("shm")
            }
            #[test]
            fn socket() {
                super::$name("socket")
            }
        }
    };
}
