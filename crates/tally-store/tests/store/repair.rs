//! The repair work list: every way a match can be left behind is found,
//! scans are bounded and oldest first, and the pipeline (or a rebuild)
//! clears what it completed, never what changed after it looked.

use tally_store::migrate::{MIGRATIONS, migrate};
use tally_store::repair::Missing;
use tally_store::seed::SeedOptions;
use tally_store::{MatchStatus, Scope};

use crate::common::{fixture, fresh, play, predict, seeded, small_world, user};

/// (match id, what it needs) of a scan with no grace period.
async fn lost(store: &tally_store::Store) -> Vec<(i64, Missing)> {
    let mut found: Vec<(i64, Missing)> = store
        .repair_scan(0.0, 1000)
        .await
        .expect("scan")
        .lost
        .iter()
        .map(|l| (l.match_id, l.missing))
        .collect();
    found.sort_by_key(|(m, _)| *m);
    found
}

#[tokio::test]
async fn every_way_a_match_can_be_left_behind_is_found() {
    let (_db, store, client) = fresh().await;
    let (comp, home, away, written_directly, alice) = small_world(&client).await;
    let bob = user(&client, "bob").await;
    let scored_only = fixture(&client, comp, home, away).await;
    let cancelled = fixture(&client, comp, home, away).await;
    let complete = fixture(&client, comp, home, away).await;
    let rescheduled = fixture(&client, comp, home, away).await;
    for m in [written_directly, scored_only, cancelled, complete, rescheduled] {
        predict(&client, alice, m, 1, 0).await;
    }
    assert!(lost(&store).await.is_empty(), "nothing final yet");

    // A result written straight into the database, no job at all.
    client
        .execute(
            "UPDATE matches SET status = 'finished', home_score = 2, away_score = 0 WHERE id = $1",
            &[&written_directly],
        )
        .await
        .expect("psql-style result");
    // Scored, but its CalculatePoints was lost.
    store.record_result(scored_only, 1, 0).await.expect("result");
    store.score_match(scored_only).await.expect("scored");
    // Cancelled, its ScoreMatch (which voids) lost.
    store.cancel_match(cancelled).await.expect("cancelled");
    // The whole pipeline ran.
    play(&store, complete, 0, 0).await;
    // Postponed, then rescheduled before anything ran: nothing is owed.
    store.postpone_match(rescheduled).await.expect("postponed");
    store
        .set_match_status(rescheduled, MatchStatus::Scheduled)
        .await
        .expect("rescheduled");

    assert_eq!(
        lost(&store).await,
        vec![
            (written_directly, Missing::Scoring),
            (scored_only, Missing::Points),
            (cancelled, Missing::Voiding),
        ]
    );

    // A prediction added after the pipeline completed needs scoring again.
    predict(&client, bob, complete, 0, 0).await;
    assert!(lost(&store).await.contains(&(complete, Missing::Scoring)));

    // Running what is missing clears each one, and only through the step
    // that puts the points into the totals.
    for m in [written_directly, cancelled, complete] {
        store.score_match(m).await.expect("scored");
    }
    assert_eq!(
        lost(&store).await,
        vec![
            (written_directly, Missing::Points),
            (scored_only, Missing::Points),
            (cancelled, Missing::Points),
            (complete, Missing::Points),
        ]
    );
    for m in [written_directly, scored_only, cancelled, complete] {
        store.calculate_points(m).await.expect("points");
    }
    assert!(lost(&store).await.is_empty());
    store.refresh_views(Scope::All).await.expect("refresh");
}

#[tokio::test]
async fn scans_are_bounded_oldest_first_and_respect_the_grace_period() {
    let (_db, store, client) = fresh().await;
    let (comp, home, away, first, alice) = small_world(&client).await;
    let mut matches = vec![first];
    for _ in 0..4 {
        matches.push(fixture(&client, comp, home, away).await);
    }
    for (i, &m) in matches.iter().enumerate() {
        predict(&client, alice, m, 1, 1).await;
        store
            .record_result(m, 1, i32::try_from(i).expect("small"))
            .await
            .expect("result");
    }
    // Markers are ordered by time, then id; make the order differ from ids.
    client
        .execute(
            "UPDATE match_pipeline_pending SET marked_at = marked_at - interval '1 hour' WHERE match_id = $1",
            &[&matches[3]],
        )
        .await
        .expect("age one marker");

    let scan = store.repair_scan(0.0, 2).await.expect("scan");
    let ids: Vec<i64> = scan.lost.iter().map(|l| l.match_id).collect();
    assert_eq!(ids, vec![matches[3], matches[0]]);
    assert_eq!(scan.remaining, 3);

    // Only the marker an hour old is past a ten-minute grace period.
    let scan = store.repair_scan(600.0, 10).await.expect("scan");
    assert_eq!(scan.lost.len(), 1);
    assert_eq!((scan.lost[0].match_id, scan.remaining), (matches[3], 0));

    // Repaired markers go to the back of the line; a renewed one (another
    // generation) is not moved.
    let read: Vec<(i64, i64)> = store
        .repair_scan(0.0, 2)
        .await
        .expect("scan")
        .lost
        .iter()
        .map(|l| (l.match_id, l.generation))
        .collect();
    let renewed = (read[1].0, read[1].1 + 1_000);
    assert_eq!(store.repair_touch(&[read[0], renewed]).await.expect("touch"), 1);
    let order: Vec<i64> = store
        .repair_scan(0.0, 10)
        .await
        .expect("scan")
        .lost
        .iter()
        .map(|l| l.match_id)
        .collect();
    assert_eq!(order.first(), Some(&matches[0]), "the untouched one is now first");
    assert_eq!(order.last(), Some(&matches[3]), "the touched one is last");

    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(store.repair_scan(bad, 10).await.is_err(), "{bad}");
    }
}

#[tokio::test]
async fn a_marker_renewed_after_it_was_read_is_not_cleared() {
    let (_db, store, client) = fresh().await;
    let (_comp, _home, _away, match_id, alice) = small_world(&client).await;
    predict(&client, alice, match_id, 1, 0).await;
    store.record_result(match_id, 1, 0).await.expect("result");
    let scan = store.repair_scan(0.0, 10).await.expect("scan");
    let read = scan.lost[0];
    // Something changed since: the marker has a new generation.
    client
        .execute(
            "UPDATE match_pipeline_pending SET generation = nextval('match_pipeline_generation')",
            &[],
        )
        .await
        .expect("renew");
    // Not stale (the match is finished), and not the generation read anyway.
    assert!(
        !store
            .clear_stale_marker(match_id, read.generation)
            .await
            .expect("clear")
    );
    assert_eq!(lost(&store).await, vec![(match_id, Missing::Scoring)]);

    // A stale marker (inserted by hand on a scheduled match) with the
    // generation read is cleared.
    let other = {
        let comp = crate::common::competition(&client, "Other", 3, 1).await;
        let h = crate::common::team(&client, "H2").await;
        let a = crate::common::team(&client, "A2").await;
        fixture(&client, comp, h, a).await
    };
    client
        .execute("INSERT INTO match_pipeline_pending (match_id) VALUES ($1)", &[&other])
        .await
        .expect("stale marker");
    let stale = store
        .repair_scan(0.0, 10)
        .await
        .expect("scan")
        .lost
        .into_iter()
        .find(|l| l.match_id == other)
        .expect("found");
    assert_eq!(stale.missing, Missing::Nothing);
    assert!(
        !store
            .clear_stale_marker(other, stale.generation + 1)
            .await
            .expect("wrong generation")
    );
    assert!(
        store
            .clear_stale_marker(other, stale.generation)
            .await
            .expect("cleared")
    );
    assert_eq!(lost(&store).await, vec![(match_id, Missing::Scoring)]);
}

#[tokio::test]
async fn a_rebuild_of_the_totals_clears_what_it_covered_and_a_seed_leaves_nothing() {
    let (_db, store, _client, summary) = seeded(&SeedOptions {
        users: 40,
        predictions: 600,
        competitions: 2,
        teams_per_competition: 4,
        played_fraction: 0.5,
        seed: 3,
    })
    .await;
    assert!(summary.finished_matches > 0);
    assert!(lost(&store).await.is_empty(), "a seeded database owes nothing");

    let open = summary.open_match_ids[0];
    let other = summary.open_match_ids[1];
    store.record_result(open, 1, 0).await.expect("result");
    store.score_match(open).await.expect("scored");
    store.record_result(other, 2, 2).await.expect("result");
    assert_eq!(
        lost(&store).await.len(),
        2,
        "both owe their points; one is not even scored"
    );
    store.rebuild_totals().await.expect("rebuild");
    // The scored one is in the rebuilt totals now; the unscored one is not.
    let left = lost(&store).await;
    assert_eq!(left, vec![(other, Missing::Scoring)], "{left:?}");
}

#[tokio::test]
async fn migrating_a_database_with_results_already_in_it_marks_the_unscored_ones() {
    let db = tally_testkit::database().await;
    let mut client = db.client().await;
    // The schema as it was before the outbox migration.
    for m in &MIGRATIONS[..2] {
        client.batch_execute(m.sql).await.expect("old migration");
    }
    client
        .batch_execute(
            "CREATE TABLE schema_migrations (
                 version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .expect("bookkeeping");
    for m in &MIGRATIONS[..2] {
        client
            .execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                &[&m.version, &m.name, &m.checksum()],
            )
            .await
            .expect("recorded");
    }
    let (_comp, _home, _away, unscored, alice) = small_world(&client).await;
    predict(&client, alice, unscored, 1, 0).await;
    client
        .execute(
            "UPDATE matches SET status = 'finished', home_score = 1, away_score = 0 WHERE id = $1",
            &[&unscored],
        )
        .await
        .expect("finished before the migration");

    let applied = migrate(&mut client).await.expect("migrate");
    assert_eq!(applied.len(), MIGRATIONS.len() - 2);
    let store = tally_store::Store::connect(&db.url, 2).await.expect("store");
    assert_eq!(lost(&store).await, vec![(unscored, Missing::Scoring)]);
}
