//! `database_from_template`: `init` runs once per key however many tests
//! ask at once, clones carry its result, and clones are independent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio_postgres::NoTls;

/// How often `migrate` ran in this process.
static INIT_CALLS: AtomicUsize = AtomicUsize::new(0);

/// A stand-in for migrations plus fixtures.
async fn migrate(url: String) -> anyhow::Result<()> {
    INIT_CALLS.fetch_add(1, Ordering::SeqCst);
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE teams (id serial PRIMARY KEY, name text NOT NULL);
             INSERT INTO teams (name) VALUES ('Ajax'), ('Benfica');",
        )
        .await?;
    // The client (and its connection) is still open when we return, as a
    // careless init would leave it: the kit must cope.
    Ok(())
}

async fn team_names(db: &tally_testkit::TestDatabase) -> Vec<String> {
    db.client()
        .await
        .query("SELECT name FROM teams ORDER BY id", &[])
        .await
        .expect("select teams")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_is_built_once_and_cloned() {
    let started = Instant::now();
    let (a, b, c) = tokio::join!(
        tally_testkit::database_from_template("teams", migrate),
        tally_testkit::database_from_template("teams", migrate),
        tally_testkit::database_from_template("teams", migrate),
    );
    let first = started.elapsed();
    let started = Instant::now();
    let d = tally_testkit::database_from_template("teams", migrate).await;
    let later = started.elapsed();
    eprintln!("three concurrent first clones: {first:?}; a later clone: {later:?}");

    assert_eq!(INIT_CALLS.load(Ordering::SeqCst), 1, "init ran once");
    let mut names = vec![&a.name, &b.name, &c.name, &d.name];
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 4, "four distinct databases");
    for db in [&a, &b, &c, &d] {
        assert_eq!(team_names(db).await, ["Ajax", "Benfica"]);
    }

    // Clones are independent copies.
    a.client()
        .await
        .execute("INSERT INTO teams (name) VALUES ('Celtic')", &[])
        .await
        .expect("insert");
    assert_eq!(team_names(&a).await.len(), 3);
    assert_eq!(team_names(&b).await.len(), 2);
}

#[tokio::test]
async fn failed_init_is_retried_by_the_next_caller() {
    let failing = tokio::spawn(tally_testkit::database_from_template("flaky", |_url| async {
        anyhow::bail!("migration 3 failed")
    }));
    let err = failing.await.expect_err("a failing init panics");
    assert!(err.is_panic());
    let message = err.into_panic();
    let message = message.downcast_ref::<String>().expect("panic message is a String");
    assert!(message.contains("migration 3 failed"), "{message}");
    assert!(message.contains("`flaky`"), "{message}");

    let db = tally_testkit::database_from_template("flaky", |url| async move {
        let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
        tokio::spawn(connection);
        client.batch_execute("CREATE TABLE ok (x int)").await?;
        Ok(())
    })
    .await;
    let client = db.client().await;
    client
        .batch_execute("SELECT x FROM ok")
        .await
        .expect("table from the retried init");
}
