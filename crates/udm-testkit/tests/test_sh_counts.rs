//! scripts/test.sh's count of a `cargo test --no-fail-fast` log: each failing test
//! counts once, a test binary that died without a result line counts as one
//! failure, and so does a compile error. The logs were captured from a scratch crate.

use std::path::Path;
use std::process::Command;

fn count(log: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let log = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cargo-test-logs")
        .join(log);
    let out = Command::new("bash")
        .arg(root.join("scripts/test.sh"))
        .arg("--count")
        .arg(&log)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "test.sh --count {}: {}{}",
        log.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn one_failing_test_counts_once() {
    // lib: 1 passed; tests/one.rs: 1 passed, 1 failed.
    assert_eq!(count("one-failure.log"), "2 1");
}

#[test]
fn a_test_binary_that_aborts_counts_as_one_failure() {
    // one.rs: 1 passed 1 failed; three.rs: 2 failed; two.rs: aborted, no result line.
    assert_eq!(count("failures-and-a-crash.log"), "2 4");
}

#[test]
fn a_compile_error_counts_as_a_failure() {
    assert_eq!(count("compile-error.log"), "0 1");
}
