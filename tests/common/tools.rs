//! Programs a test runs from the machine: `prometheus` and `promtool` (Debian's `prometheus`
//! package ships both).
//!
//! One lookup and one skip rule for every caller: the path in the program's `WAYMARK_*`
//! variable when set (a path that is not a file is a mistake and fails), else the first on
//! `PATH`. A missing program fails the test under `CI=true`, where it means a broken CI image;
//! elsewhere the test says `SKIPPED` and why, and returns early.

use std::io::Write as _;
use std::path::PathBuf;

/// The `prometheus` server: `WAYMARK_PROMETHEUS`, else `PATH`. `None` after saying the test is
/// skipped; panics under `CI=true`.
pub fn prometheus() -> Option<PathBuf> {
    find_or_skip("prometheus", "WAYMARK_PROMETHEUS")
}

/// `promtool`: `WAYMARK_PROMTOOL`, else `PATH`. `None` after saying the test is skipped; panics
/// under `CI=true`.
pub fn promtool() -> Option<PathBuf> {
    find_or_skip("promtool", "WAYMARK_PROMTOOL")
}

fn find_or_skip(name: &str, variable: &str) -> Option<PathBuf> {
    if let Some(named) = std::env::var_os(variable) {
        let named = PathBuf::from(named);
        assert!(
            named.is_file(),
            "{variable} names {}, which is not a file; point it at the `{name}` binary or unset it",
            named.display()
        );
        return Some(named);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|directory| directory.join(name))
            .find(|candidate| candidate.is_file())
    });
    found.or_else(|| skip(&format!("no `{name}` on PATH and no {variable}")))
}

/// Says why the test is skipped and returns `None`, or panics under `CI=true`.
fn skip<T>(reason: &str) -> Option<T> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{reason}: CI=true needs it; install Debian's `prometheus` package");
    }
    // Written to stderr directly: the test harness captures `println!` and `eprintln!` of a
    // passing test, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {reason}; install Debian's `prometheus` package to run this test"
    );
    None
}
