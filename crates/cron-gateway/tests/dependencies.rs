//! The gateway needs Redis only (docs/ARCHITECTURE.md): its dependency
//! tree, dev-dependencies included, has no Postgres client, so a change that
//! brings one back (a dependency on the store, the test kit with its
//! `postgres` feature) fails here rather than in a review.

use std::process::Command;

#[test]
fn no_postgres_client_in_the_dependency_tree() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "cron-gateway",
            "-e",
            "normal,build,dev",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The tree is the real one: Redis and the queue are in it.
    for expected in ["tally-queue ", "redis "] {
        assert!(
            tree.lines().any(|l| l.starts_with(expected)),
            "no {expected}in:\n{tree}"
        );
    }
    let postgres: Vec<&str> = tree
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("postgres"))
        .collect();
    assert!(
        postgres.is_empty(),
        "a Postgres client in the gateway's tree: {postgres:?}"
    );
}
