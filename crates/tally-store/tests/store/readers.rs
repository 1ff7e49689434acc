//! Readers never wait on a refresh and never see uncommitted points.
//!
//! The reader sets `lock_timeout = 50ms`: if it had to wait for any lock the
//! refresh holds, it would fail with `lock_not_available` instead of
//! succeeding. The control test shows the same reader does fail against the
//! naive design (`REFRESH MATERIALIZED VIEW` holds an exclusive lock), so the
//! check can fail.

use tally_store::seed::SeedOptions;
use tally_store::tx::{self, Budget};
use tally_store::{Scope, views};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, IsolationLevel};

use crate::common::seeded;

fn options() -> SeedOptions {
    SeedOptions {
        users: 120,
        predictions: 120 * 15,
        competitions: 2,
        teams_per_competition: 6,
        played_fraction: 0.5,
        seed: 11,
    }
}

async fn impatient_reader(db: &tally_testkit::TestDatabase) -> Client {
    let reader = db.client().await;
    reader
        .batch_execute("SET lock_timeout = '50ms'; SET statement_timeout = '5s'")
        .await
        .expect("timeouts set");
    reader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_is_not_blocked_by_an_open_refresh_and_sees_the_last_commit() {
    let (db, store, mut writer, summary) = seeded(&options()).await;
    let reader = impatient_reader(&db).await;
    let match_id = summary.open_match_ids[0];
    let competition: i64 = writer
        .query_one("SELECT competition_id FROM matches WHERE id = $1", &[&match_id])
        .await
        .expect("competition")
        .get(0);

    store.record_result(match_id, 3, 0).await.expect("recorded");
    store.score_match(match_id).await.expect("scored");
    store.calculate_points(match_id).await.expect("points");
    let before_board = views::leaderboard(&reader, None, 10_000, 0).await.expect("read");
    let before_table = views::standings(&reader, competition).await.expect("read");

    // A refresh, done but not committed.
    let tx = tx::begin(&mut writer, IsolationLevel::ReadCommitted, Budget::UNBOUNDED)
        .await
        .expect("begin");
    let outcome = views::refresh_views_in(&tx, Scope::All).await.expect("refresh");
    assert!(outcome.leaderboard_upserted > 0, "the refresh has work: {outcome:?}");
    assert_eq!(outcome.standings_refreshed, vec![competition]);

    // The reader neither waits nor sees the uncommitted refresh.
    let during_board = views::leaderboard(&reader, None, 10_000, 0)
        .await
        .expect("leaderboard read during refresh");
    let during_table = views::standings(&reader, competition)
        .await
        .expect("standings read during refresh");
    assert_eq!(during_board, before_board);
    assert_eq!(during_table, before_table);
    for board in [Some(competition), None] {
        views::leaderboard(&reader, board, 50, 20)
            .await
            .expect("paged read during refresh");
    }
    reader
        .query("SELECT * FROM leaderboard WHERE board_id = 0 LIMIT 5", &[])
        .await
        .expect("view read during refresh");

    tx.commit().await.expect("commit");
    let after_board = views::leaderboard(&reader, None, 10_000, 0).await.expect("read");
    let after_table = views::standings(&reader, competition).await.expect("read");
    assert_ne!(after_board, before_board, "the refresh published new points");
    assert_ne!(after_table, before_table, "and a new table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_points_never_reach_the_leaderboard() {
    let (db, store, mut writer, summary) = seeded(&options()).await;
    let reader = impatient_reader(&db).await;
    let match_id = summary.open_match_ids[1];
    store.record_result(match_id, 0, 1).await.expect("recorded");
    store.score_match(match_id).await.expect("scored");
    let before = views::leaderboard(&reader, None, 10_000, 0).await.expect("read");

    // Points computed inside a transaction that is then rolled back: a
    // concurrent refresh publishes nothing of it.
    let tx = tx::begin(&mut writer, IsolationLevel::ReadCommitted, Budget::UNBOUNDED)
        .await
        .expect("begin");
    tx.execute("UPDATE user_totals SET points = points + 1000 WHERE board_id = 0", &[])
        .await
        .expect("uncommitted totals");
    tx.execute(
        "INSERT INTO leaderboard_changes (board_ids, user_ids)
         SELECT array_agg(0::bigint), array_agg(user_id) FROM user_totals WHERE board_id = 0",
        &[],
    )
    .await
    .expect("uncommitted work list entry");
    let refreshed = store.refresh_views(Scope::Leaderboard).await.expect("refresh");
    assert_eq!(refreshed.leaderboard_claimed, 0, "uncommitted changes are not claimed");
    let during = views::leaderboard(&reader, None, 10_000, 0).await.expect("read");
    assert_eq!(during, before);
    tx.rollback().await.expect("rollback");

    // The real points job and refresh then publish the real numbers.
    store.calculate_points(match_id).await.expect("points");
    store.refresh_views(Scope::Leaderboard).await.expect("refresh");
    let after = views::leaderboard(&reader, None, 10_000, 0).await.expect("read");
    assert!(after.iter().all(|row| row.points < 1000));
    assert_ne!(after, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_the_naive_materialized_view_refresh_does_block_readers() {
    let (db, _store, mut writer, _) = seeded(&options()).await;
    let reader = impatient_reader(&db).await;
    writer
        // The benchmark's baseline design, which lives with the benchmark.
        .batch_execute(include_str!("../../../tally-bench/sql/naive_views.sql"))
        .await
        .expect("naive views");
    writer
        .batch_execute("REFRESH MATERIALIZED VIEW naive_leaderboard")
        .await
        .expect("populated");
    let tx = tx::begin(&mut writer, IsolationLevel::ReadCommitted, Budget::UNBOUNDED)
        .await
        .expect("begin");
    tx.batch_execute("REFRESH MATERIALIZED VIEW naive_leaderboard")
        .await
        .expect("refresh");
    let error = reader
        .query("SELECT * FROM naive_leaderboard WHERE board_id = 0 LIMIT 10", &[])
        .await
        .expect_err("the naive refresh blocks the reader");
    assert_eq!(error.code(), Some(&SqlState::LOCK_NOT_AVAILABLE), "{error}");
    tx.commit().await.expect("commit");
}

/// A page found through `leaderboard_ranks` (a deep page skips only the
/// entries of its first points value, `sql/leaderboard.sql`) holds the rows
/// `ORDER BY points DESC, user_id OFFSET n` gives: at every offset, for
/// several page sizes, on every board, and past the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_equals_the_plain_offset_query() {
    let (_db, store, writer, _summary) = seeded(&options()).await;
    let boards: Vec<i64> = writer
        .query("SELECT DISTINCT board_id FROM leaderboard_entries ORDER BY 1", &[])
        .await
        .expect("boards")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(boards.len() >= 3, "the overall board and two competitions: {boards:?}");
    let plain = "SELECT e.user_id, r.rank::bigint, e.points::bigint
                 FROM leaderboard_entries AS e
                 JOIN leaderboard_ranks AS r ON r.board_id = e.board_id AND r.points = e.points
                 WHERE e.board_id = $1
                 ORDER BY e.points DESC, e.user_id
                 LIMIT $2 OFFSET $3";
    let mut ties = 0;
    for &board in &boards {
        let total: i64 = writer
            .query_one(
                "SELECT count(*) FROM leaderboard_entries WHERE board_id = $1",
                &[&board],
            )
            .await
            .expect("count")
            .get(0);
        let competition = (board != 0).then_some(board);
        for limit in [1_i64, 7, 50] {
            for offset in 0..=total + 2 {
                let got: Vec<(i64, i64, i64)> = store
                    .leaderboard(competition, limit, offset)
                    .await
                    .expect("page")
                    .iter()
                    .map(|r| (r.user_id, r.rank, r.points))
                    .collect();
                let want: Vec<(i64, i64, i64)> = writer
                    .query(plain, &[&board, &limit, &offset])
                    .await
                    .expect("plain page")
                    .iter()
                    .map(|row| (row.get(0), row.get(1), row.get(2)))
                    .collect();
                assert_eq!(got, want, "board {board}, limit {limit}, offset {offset}");
                ties += usize::from(want.windows(2).any(|w| w[0].2 == w[1].2));
            }
        }
    }
    assert!(
        ties > 0,
        "the boards have tied points, so pages start inside a points value"
    );
}
