//! Golden files for the renderers' tests: `src/cli/testdata/<name>` holds the expected output.
//! Run the tests with `WAYMARK_BLESS=1` to write what the renderers print now, then review the
//! diff before committing it.

use std::path::PathBuf;

/// The path of golden file `name`.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/cli/testdata")
        .join(name)
}

/// Fails unless `actual` equals golden file `name` (or writes it with `WAYMARK_BLESS=1`).
pub fn assert_golden(name: &str, actual: &str) {
    let path = path(name);
    if std::env::var("WAYMARK_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, actual).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {} unreadable ({e}); run with WAYMARK_BLESS=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        let first_difference = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the output, first at line {}:\n  expected: {:?}\n  actual:   {:?}\nfull output:\n{actual}\nrun with WAYMARK_BLESS=1 to rewrite it if the change is intended",
            path.display(),
            first_difference + 1,
            expected.lines().nth(first_difference).unwrap_or("<end>"),
            actual.lines().nth(first_difference).unwrap_or("<end>"),
        );
    }
}
