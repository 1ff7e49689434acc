//! Transactions state their isolation level instead of inheriting it.
//!
//! Points and refreshes are only right under READ COMMITTED (they lock, then
//! read in a later statement with a newer snapshot). Each test sets the
//! database's default to SERIALIZABLE, as an administrator might, and checks
//! the store's transactions still run at READ COMMITTED.

use std::time::Duration;

use tally_store::tx::{self, Budget};
use tally_store::{Scope, Store};
use tokio_postgres::IsolationLevel;

use crate::common::{fixture, fresh, predict, small_world};

async fn default_serializable(db: &tally_testkit::TestDatabase) {
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} SET default_transaction_isolation = 'serializable'",
            db.name
        ))
        .await
        .expect("database default changed");
    let fresh_session = db.client().await;
    let level: String = fresh_session
        .query_one("SHOW transaction_isolation", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(level, "serializable", "the default applies to new sessions");
}

#[tokio::test]
async fn the_transaction_helper_sets_read_committed_and_the_budget() {
    let (db, _store, _client) = fresh().await;
    default_serializable(&db).await;
    let mut client = db.client().await;

    let tx = tx::begin(
        &mut client,
        IsolationLevel::ReadCommitted,
        Budget::within(Duration::from_secs(20)),
    )
    .await
    .expect("begin");
    let row = tx
        .query_one(
            "SELECT current_setting('transaction_isolation'),
                    current_setting('statement_timeout'),
                    current_setting('lock_timeout')",
            &[],
        )
        .await
        .expect("settings");
    let shown: String = tx
        .query_one("SHOW transaction_isolation", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(shown, "read committed");
    assert_eq!(row.get::<_, String>(0), "read committed");
    let statement_timeout: String = row.get(1);
    let lock_timeout: String = row.get(2);
    // 90% of ~20 s, shown in seconds by PostgreSQL.
    assert!(
        statement_timeout.ends_with('s') && statement_timeout != "0",
        "{statement_timeout}"
    );
    assert_eq!(statement_timeout, lock_timeout);
    tx.commit().await.expect("commit");

    let after = client
        .query_one("SELECT current_setting('statement_timeout')", &[])
        .await
        .expect("setting")
        .get::<_, String>(0);
    assert_eq!(after, "0", "SET LOCAL ends with the transaction");

    let tx = tx::begin(&mut client, IsolationLevel::ReadCommitted, Budget::UNBOUNDED)
        .await
        .expect("begin");
    let row = tx
        .query_one(
            "SELECT current_setting('transaction_isolation'), current_setting('statement_timeout')",
            &[],
        )
        .await
        .expect("settings");
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("read committed".to_owned(), "0".to_owned()),
        "unbounded: the session's timeouts"
    );
}

#[tokio::test]
async fn every_store_write_runs_read_committed_whatever_the_database_default() {
    let (db, _old_store, client) = fresh().await;
    // Each write notes the isolation level of the transaction it runs in.
    client
        .batch_execute(
            "CREATE TABLE isolation_seen (tbl text NOT NULL, op text NOT NULL, level text NOT NULL);
             CREATE FUNCTION note_isolation() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO isolation_seen VALUES (TG_TABLE_NAME, TG_OP, current_setting('transaction_isolation'));
                 RETURN NULL;
             END $$;
             CREATE TRIGGER noted AFTER INSERT OR UPDATE OR DELETE ON matches
                 FOR EACH STATEMENT EXECUTE FUNCTION note_isolation();
             CREATE TRIGGER noted AFTER INSERT OR UPDATE OR DELETE ON predictions
                 FOR EACH STATEMENT EXECUTE FUNCTION note_isolation();
             CREATE TRIGGER noted AFTER INSERT OR UPDATE OR DELETE ON user_totals
                 FOR EACH STATEMENT EXECUTE FUNCTION note_isolation();
             CREATE TRIGGER noted AFTER INSERT OR UPDATE OR DELETE ON leaderboard_changes
                 FOR EACH STATEMENT EXECUTE FUNCTION note_isolation();
             CREATE TRIGGER noted AFTER INSERT OR UPDATE OR DELETE ON leaderboard_entries
                 FOR EACH STATEMENT EXECUTE FUNCTION note_isolation();
             CREATE TRIGGER noted AFTER INSERT OR UPDATE OR DELETE ON standings
                 FOR EACH STATEMENT EXECUTE FUNCTION note_isolation();",
        )
        .await
        .expect("triggers");
    let (comp, home, away, match_id, user) = small_world(&client).await;
    predict(&client, user, match_id, 1, 0).await;
    let other = fixture(&client, comp, away, home).await;
    predict(&client, user, other, 0, 0).await;
    client
        .batch_execute("TRUNCATE isolation_seen")
        .await
        .expect("clean slate");

    default_serializable(&db).await;
    // A new pool: its sessions start with the new default.
    let store = Store::connect(&db.url, 2).await.expect("store");
    let bounded = store.with_budget(Budget::within(Duration::from_secs(30)));
    bounded.record_result(match_id, 1, 0).await.expect("result");
    bounded.score_match(match_id).await.expect("scored");
    bounded.calculate_points(match_id).await.expect("points");
    bounded.refresh_views(Scope::All).await.expect("refresh");
    store.postpone_match(other).await.expect("postponed");
    store.score_match(other).await.expect("voided");
    store.calculate_points(other).await.expect("points");
    store.rebuild_totals().await.expect("rebuild");
    store.refresh_views(Scope::All).await.expect("refresh");

    let seen = client
        .query(
            "SELECT level, string_agg(DISTINCT tbl, ',' ORDER BY tbl) FROM isolation_seen GROUP BY level",
            &[],
        )
        .await
        .expect("seen")
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect::<Vec<_>>();
    assert_eq!(
        seen,
        vec![(
            "read committed".to_owned(),
            "leaderboard_changes,leaderboard_entries,matches,predictions,standings,user_totals".to_owned()
        )],
        "every write at READ COMMITTED, on every table the pipeline writes"
    );
}
