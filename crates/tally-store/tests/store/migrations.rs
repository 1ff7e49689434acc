//! Migrations: applied once, safe to run concurrently, edits detected.

use tally_store::StoreError;
use tally_store::migrate::{MIGRATIONS, migrate};

#[tokio::test]
async fn running_migrations_twice_applies_nothing_the_second_time() {
    let db = tally_testkit::database().await;
    let mut client = db.client().await;
    let first = migrate(&mut client).await.expect("first run");
    assert_eq!(first.len(), MIGRATIONS.len());
    let second = migrate(&mut client).await.expect("second run");
    assert!(second.is_empty(), "nothing to apply: {second:?}");
    let recorded: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(recorded, MIGRATIONS.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_apply_each_migration_once() {
    let db = tally_testkit::database().await;
    let mut a = db.client().await;
    let mut b = db.client().await;
    let (ra, rb) = tokio::join!(migrate(&mut a), migrate(&mut b));
    let (ra, rb) = (ra.expect("run a"), rb.expect("run b"));
    assert_eq!(ra.len() + rb.len(), MIGRATIONS.len(), "{ra:?} {rb:?}");
    assert!(ra.is_empty() || rb.is_empty());
}

#[tokio::test]
async fn an_edited_migration_is_refused() {
    let db = tally_testkit::database().await;
    let mut client = db.client().await;
    migrate(&mut client).await.expect("first run");
    client
        .execute(
            "UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1",
            &[],
        )
        .await
        .expect("tamper");
    let error = migrate(&mut client).await.expect_err("checksum mismatch");
    assert!(
        matches!(error, StoreError::MigrationChecksum { version: 1, .. }),
        "{error}"
    );
}

#[test]
fn every_migration_file_is_registered_in_order() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("migrations directory")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .map(|path| path.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    files.sort();
    let registered: Vec<String> = MIGRATIONS
        .iter()
        .map(|m| format!("{:04}_{}.sql", m.version, m.name))
        .collect();
    assert_eq!(files, registered);
    for pair in MIGRATIONS.windows(2) {
        assert!(pair[0].version < pair[1].version);
    }
}
