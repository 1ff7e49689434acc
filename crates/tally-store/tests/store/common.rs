//! Shared fixtures: migrated databases and small hand-made worlds.

use tally_store::Store;
use tally_store::seed::{SeedOptions, SeedSummary};
use tally_testkit::TestDatabase;
use tokio_postgres::Client;

/// A migrated, empty database (cloned from a template migrated once per run).
pub async fn migrated_database() -> TestDatabase {
    tally_testkit::database_from_template("tally_store_migrated", |url| async move {
        tally_store::migrate_url(&url).await?;
        Ok(())
    })
    .await
}

/// A migrated database, a store on it (pool of 8) and a plain client.
pub async fn fresh() -> (TestDatabase, Store, Client) {
    let db = migrated_database().await;
    let store = Store::connect(&db.url, 8).await.expect("store connects");
    let client = db.client().await;
    (db, store, client)
}

/// A migrated database seeded with `options`.
pub async fn seeded(options: &SeedOptions) -> (TestDatabase, Store, Client, SeedSummary) {
    let (db, store, mut client) = fresh().await;
    let summary = tally_store::seed::seed(&mut client, options, &|_| {})
        .await
        .expect("seed succeeds");
    (db, store, client, summary)
}

/// Inserts a competition with the given rules and returns its id.
pub async fn competition(client: &Client, name: &str, exact: i32, outcome: i32) -> i64 {
    client
        .query_one(
            "INSERT INTO competitions (name, points_exact, points_outcome)
             VALUES ($1, $2, $3) RETURNING id",
            &[&name, &exact, &outcome],
        )
        .await
        .expect("competition inserted")
        .get(0)
}

/// Inserts a team and returns its id.
pub async fn team(client: &Client, name: &str) -> i64 {
    client
        .query_one("INSERT INTO teams (name) VALUES ($1) RETURNING id", &[&name])
        .await
        .expect("team inserted")
        .get(0)
}

/// Inserts a user and returns their id.
pub async fn user(client: &Client, name: &str) -> i64 {
    client
        .query_one("INSERT INTO users (username) VALUES ($1) RETURNING id", &[&name])
        .await
        .expect("user inserted")
        .get(0)
}

/// Inserts a scheduled match and returns its id.
pub async fn fixture(client: &Client, competition: i64, home: i64, away: i64) -> i64 {
    client
        .query_one(
            "INSERT INTO matches (competition_id, home_team_id, away_team_id, kickoff_at)
             VALUES ($1, $2, $3, now()) RETURNING id",
            &[&competition, &home, &away],
        )
        .await
        .expect("match inserted")
        .get(0)
}

/// Inserts a prediction.
pub async fn predict(client: &Client, user: i64, match_id: i64, home: i32, away: i32) {
    client
        .execute(
            "INSERT INTO predictions (user_id, match_id, home_score, away_score)
             VALUES ($1, $2, $3, $4)",
            &[&user, &match_id, &home, &away],
        )
        .await
        .expect("prediction inserted");
}

/// A small world: one default-rules competition, two teams, one scheduled
/// match and one user. Returns (competition, home, away, match, user).
pub async fn small_world(client: &Client) -> (i64, i64, i64, i64, i64) {
    let comp = competition(client, "Test League", 3, 1).await;
    let home = team(client, "Home FC").await;
    let away = team(client, "Away FC").await;
    let match_id = fixture(client, comp, home, away).await;
    let user = user(client, "alice").await;
    (comp, home, away, match_id, user)
}

/// Plays a match through the whole pipeline: result, scoring, points, refresh.
pub async fn play(store: &Store, match_id: i64, home: i32, away: i32) {
    store
        .record_result(match_id, home, away)
        .await
        .expect("result recorded");
    store.score_match(match_id).await.expect("scored");
    store.calculate_points(match_id).await.expect("points");
    store.refresh_views(tally_store::Scope::All).await.expect("refreshed");
}
