//! Deterministic demo and benchmark data, loaded with COPY.
//!
//! The same [`SeedOptions`] always produce the same rows (the generator is a
//! self-contained SplitMix64, so the output does not change with a `rand`
//! upgrade). Shape: users; competitions with their scoring rules (every third
//! one uses custom rules, 5 / 2); teams; a double round-robin per competition
//! (circle method, a round a week); the first rounds already played; each
//! user predicting distinct matches; goals drawn from Poisson distributions
//! (home 1.5, away 1.15 for results; 1.4 / 1.1 for predictions), which gives
//! the usual mix of 1-0, 1-1 and 2-1.
//!
//! Everything is written in one transaction: COPY for the rows (predictions
//! of played matches arrive already scored, computed with
//! [`crate::scoring::verdict`]), then the totals and the published views are
//! built with the same SQL the services use, so a seeded database is in the
//! state the pipeline would have produced. A failed seed leaves nothing.
//! The predictions' foreign keys are dropped for the COPY and re-added (and
//! so re-validated) before commit, which holds an exclusive lock on
//! `predictions` meanwhile: seeding is for empty databases only.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Instant;

use bytes::BytesMut;
use chrono::{DateTime, Duration, TimeZone, Utc};
use futures::SinkExt;
use serde::Serialize;
use tokio_postgres::{Client, IsolationLevel, Transaction};

use crate::error::StoreError;
use crate::model::Scope;
use crate::scoring::{ScoringRules, verdict};
use crate::tx::{self, Budget};
use crate::views;

const REBUILD_TOTALS_SQL: &str = include_str!("../sql/rebuild_totals.sql");
/// COPY data is sent in chunks of about this many bytes.
const CHUNK_BYTES: usize = 1 << 20;

/// Sizes and randomness of a seed.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedOptions {
    /// Users to create.
    pub users: u32,
    /// Predictions to create in total (spread evenly over users, each user
    /// predicting distinct matches).
    pub predictions: u64,
    /// Competitions to create.
    pub competitions: u32,
    /// Teams per competition (even numbers give no byes).
    pub teams_per_competition: u32,
    /// Fraction of each competition's rounds already played, 0.0 to 1.0.
    pub played_fraction: f64,
    /// The random seed.
    pub seed: u64,
}

impl Default for SeedOptions {
    fn default() -> Self {
        Self {
            users: 1_000,
            predictions: 10_000,
            competitions: 4,
            teams_per_competition: 20,
            played_fraction: 0.5,
            seed: 42,
        }
    }
}

/// The step a seed is in, for progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SeedStage {
    /// Users are being copied.
    Users,
    /// Competitions are being copied.
    Competitions,
    /// Teams are being copied.
    Teams,
    /// Fixtures are being copied.
    Matches,
    /// Predictions are being copied.
    Predictions,
    /// Per-user totals are being computed.
    Totals,
    /// Leaderboards and standings are being published.
    Views,
}

/// A progress report: `done` of `total` units of `stage`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedProgress {
    /// Current step.
    pub stage: SeedStage,
    /// Units done in this step (rows, or 0 / 1 for the SQL steps).
    pub done: u64,
    /// Units in this step.
    pub total: u64,
}

/// What a seed created.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedSummary {
    /// Users created.
    pub users: u64,
    /// Competitions created.
    pub competitions: u64,
    /// Teams created.
    pub teams: u64,
    /// Matches created.
    pub matches: u64,
    /// Matches created already finished.
    pub finished_matches: u64,
    /// Predictions created.
    pub predictions: u64,
    /// Predictions created already scored (those of finished matches).
    pub scored_predictions: u64,
    /// Ids of the matches not yet played, in kickoff order.
    pub open_match_ids: Vec<i64>,
    /// Wall time of the whole seed, in milliseconds.
    pub elapsed_ms: u64,
}

/// SplitMix64: tiny, fast, and stable forever, which is what a seed needs.
#[derive(Debug, Clone)]
pub struct SeedRng(u64);

impl SeedRng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Goals from a Poisson distribution with mean `lambda`, capped at 9.
    pub fn goals(&mut self, lambda: f64) -> i32 {
        // Knuth's method: fine for small means.
        let limit = (-lambda).exp();
        let mut product = self.unit();
        let mut goals = 0;
        while product > limit && goals < 9 {
            goals += 1;
            product *= self.unit();
        }
        goals
    }
}

const TOWNS: &[&str] = &[
    "Ashford",
    "Bramley",
    "Carlow",
    "Dunmore",
    "Eastwick",
    "Fairhaven",
    "Glenbrook",
    "Harrow",
    "Ivybridge",
    "Juniper",
    "Kingsbury",
    "Longford",
    "Marston",
    "Newbury",
    "Oakham",
    "Pembroke",
    "Queensferry",
    "Rothwell",
    "Stanton",
    "Thornbury",
    "Upton",
    "Vale",
    "Westfield",
    "Yarmouth",
];
const SUFFIXES: &[&str] = &[
    "United",
    "City",
    "Rovers",
    "Athletic",
    "Town",
    "Wanderers",
    "Albion",
    "Rangers",
];
const COMPETITIONS: &[&str] = &[
    "Premier Division",
    "Championship",
    "League One",
    "League Two",
    "National League",
    "Northern League",
    "Southern League",
    "Western League",
];

fn team_name(index: usize) -> String {
    let town = TOWNS[index % TOWNS.len()];
    let suffix = SUFFIXES[(index / TOWNS.len()) % SUFFIXES.len()];
    let lap = index / (TOWNS.len() * SUFFIXES.len());
    if lap == 0 {
        format!("{town} {suffix}")
    } else {
        format!("{town} {suffix} {}", lap + 1)
    }
}

fn competition_name(index: usize) -> String {
    match COMPETITIONS.get(index) {
        Some(name) => (*name).to_owned(),
        None => format!("Competition {}", index + 1),
    }
}

/// Competition `index`'s rules: every third one rewards risk more.
pub fn competition_rules(index: usize) -> ScoringRules {
    if index % 3 == 2 {
        ScoringRules {
            points_exact: 5,
            points_outcome: 2,
        }
    } else {
        ScoringRules::default()
    }
}

/// One generated fixture.
#[derive(Debug, Clone)]
struct Fixture {
    id: i64,
    competition: usize,
    home: i64,
    away: i64,
    kickoff: DateTime<Utc>,
    result: Option<(i32, i32)>,
}

/// Double round-robin by the circle method: team 0 stays, the others rotate;
/// the second half repeats the first with home and away swapped.
fn round_robin(teams: usize) -> Vec<Vec<(usize, usize)>> {
    let mut slots: Vec<Option<usize>> = (0..teams).map(Some).collect();
    if teams % 2 == 1 {
        slots.push(None); // a bye
    }
    let n = slots.len();
    let mut first_half = Vec::with_capacity(n - 1);
    for round in 0..n - 1 {
        let mut pairs = Vec::with_capacity(n / 2);
        for i in 0..n / 2 {
            if let (Some(a), Some(b)) = (slots[i], slots[n - 1 - i]) {
                // Alternate home advantage so nobody plays at home every week.
                pairs.push(if (round + i) % 2 == 0 { (a, b) } else { (b, a) });
            }
        }
        first_half.push(pairs);
        slots[1..].rotate_right(1);
    }
    let second_half: Vec<_> = first_half
        .iter()
        .map(|round| round.iter().map(|&(h, a)| (a, h)).collect())
        .collect();
    first_half.into_iter().chain(second_half).collect()
}

fn validate(options: &SeedOptions) -> Result<(), StoreError> {
    if options.users == 0 || options.competitions == 0 {
        return Err(StoreError::Seed("need at least one user and one competition".into()));
    }
    if options.teams_per_competition < 2 {
        return Err(StoreError::Seed("need at least two teams per competition".into()));
    }
    if !(0.0..=1.0).contains(&options.played_fraction) {
        return Err(StoreError::Seed("played fraction must be between 0 and 1".into()));
    }
    Ok(())
}

/// A catalog name as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S+00").to_string()
}

/// Streams COPY text data in chunks.
struct CopyWriter {
    buffer: BytesMut,
}

impl CopyWriter {
    fn new() -> Self {
        Self {
            buffer: BytesMut::with_capacity(CHUNK_BYTES + 4096),
        }
    }

    fn full(&self) -> bool {
        self.buffer.len() >= CHUNK_BYTES
    }
}

async fn copy_all(
    tx: &Transaction<'_>,
    statement: &str,
    rows: u64,
    stage: SeedStage,
    progress: &(dyn Fn(SeedProgress) + Send + Sync),
    mut write_row: impl FnMut(u64, &mut BytesMut),
) -> Result<(), StoreError> {
    let sink = tx.copy_in(statement).await?;
    futures::pin_mut!(sink);
    let mut writer = CopyWriter::new();
    for index in 0..rows {
        write_row(index, &mut writer.buffer);
        if writer.full() {
            sink.send(writer.buffer.split().freeze()).await?;
            progress(SeedProgress {
                stage,
                done: index + 1,
                total: rows,
            });
        }
    }
    if !writer.buffer.is_empty() {
        sink.send(writer.buffer.split().freeze()).await?;
    }
    sink.finish().await?;
    progress(SeedProgress {
        stage,
        done: rows,
        total: rows,
    });
    Ok(())
}

/// Fills an empty, migrated database. Refuses a database that already has
/// users or matches ([`StoreError::Seed`]).
pub async fn seed(
    client: &mut Client,
    options: &SeedOptions,
    progress: &(dyn Fn(SeedProgress) + Send + Sync),
) -> Result<SeedSummary, StoreError> {
    validate(options)?;
    let started = Instant::now();
    let competitions = options.competitions as usize;
    let teams_per = options.teams_per_competition as usize;
    let mut rng = SeedRng::new(options.seed);

    // Fixtures first: predictions need to know which matches exist.
    let schedule = round_robin(teams_per);
    let rounds = schedule.len();
    let played_rounds = (options.played_fraction * rounds as f64).floor() as usize;
    let season_start = Utc
        .with_ymd_and_hms(2026, 8, 1, 15, 0, 0)
        .single()
        .expect("a valid constant date");
    let mut fixtures = Vec::new();
    for competition in 0..competitions {
        let first_team = (competition * teams_per) as i64 + 1;
        for (round, pairs) in schedule.iter().enumerate() {
            for (slot, &(home, away)) in pairs.iter().enumerate() {
                let kickoff = season_start
                    + Duration::weeks(round as i64)
                    + Duration::hours(competition as i64)
                    + Duration::minutes(slot as i64);
                let result = (round < played_rounds).then(|| (rng.goals(1.5), rng.goals(1.15)));
                fixtures.push(Fixture {
                    id: fixtures.len() as i64 + 1,
                    competition,
                    home: first_team + home as i64,
                    away: first_team + away as i64,
                    kickoff,
                    result,
                });
            }
        }
    }
    let match_count = fixtures.len() as u64;
    let users = u64::from(options.users);
    if options.predictions > users * match_count {
        return Err(StoreError::Seed(format!(
            "{} predictions do not fit: {users} users × {match_count} matches",
            options.predictions
        )));
    }

    // READ COMMITTED, stated so that a database default of SERIALIZABLE
    // cannot turn a long bulk load into a serialization failure; nothing
    // here relies on a snapshot spanning statements.
    let tx = tx::begin(client, IsolationLevel::ReadCommitted, Budget::UNBOUNDED).await?;
    let existing: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM matches)",
            &[],
        )
        .await?
        .get(0);
    if existing {
        return Err(StoreError::Seed("the database already has users or matches".into()));
    }

    copy_all(
        &tx,
        "COPY users (id, username) FROM STDIN",
        users,
        SeedStage::Users,
        progress,
        |i, out| {
            let _ = writeln!(out, "{}\tuser{:06}", i + 1, i + 1);
        },
    )
    .await?;

    copy_all(
        &tx,
        "COPY competitions (id, name, points_exact, points_outcome) FROM STDIN",
        competitions as u64,
        SeedStage::Competitions,
        progress,
        |i, out| {
            let rules = competition_rules(i as usize);
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}",
                i + 1,
                competition_name(i as usize),
                rules.points_exact,
                rules.points_outcome
            );
        },
    )
    .await?;
    copy_all(
        &tx,
        "COPY teams (id, name) FROM STDIN",
        (competitions * teams_per) as u64,
        SeedStage::Teams,
        progress,
        |i, out| {
            let _ = writeln!(out, "{}\t{}", i + 1, team_name(i as usize));
        },
    )
    .await?;

    copy_all(
        &tx,
        "COPY matches (id, competition_id, home_team_id, away_team_id, kickoff_at, status,
                       home_score, away_score, finished_at) FROM STDIN",
        match_count,
        SeedStage::Matches,
        progress,
        |i, out| {
            let f = &fixtures[i as usize];
            let kickoff = timestamp(f.kickoff);
            let _ = match f.result {
                Some((home, away)) => writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{kickoff}\tfinished\t{home}\t{away}\t{}",
                    f.id,
                    f.competition + 1,
                    f.home,
                    f.away,
                    timestamp(f.kickoff + Duration::hours(2)),
                ),
                None => writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{kickoff}\tscheduled\t\\N\t\\N\t\\N",
                    f.id,
                    f.competition + 1,
                    f.home,
                    f.away,
                ),
            };
        },
    )
    .await?;

    // Foreign keys are checked row by row during COPY (two lookups per row:
    // 24 s of a 1M-row load here); re-adding them afterwards validates all
    // rows in one set-based pass (under a second). The definitions come from
    // the catalog, so this follows whatever the migrations declare, and the
    // data is exactly as constrained as before. Identifiers cannot be query
    // parameters; they are catalog names, quoted.
    let foreign_keys: Vec<(String, String)> = tx
        .query(
            "SELECT conname::text, pg_get_constraintdef(oid)
             FROM pg_constraint
             WHERE conrelid = 'predictions'::regclass AND contype = 'f'
             ORDER BY conname",
            &[],
        )
        .await?
        .iter()
        .map(|row| (quote_ident(row.get(0)), row.get(1)))
        .collect();
    if !foreign_keys.is_empty() {
        let drops: Vec<String> = foreign_keys
            .iter()
            .map(|(name, _)| format!("DROP CONSTRAINT {name}"))
            .collect();
        tx.batch_execute(&format!("ALTER TABLE predictions {}", drops.join(", ")))
            .await?;
    }

    // The repair trigger on predictions would collect every copied row in a
    // transition table to find predictions added to final matches; these
    // arrive already scored, and the totals are rebuilt below (which also
    // clears the markers the copied finished matches got). Off for the COPY.
    tx.batch_execute("ALTER TABLE predictions DISABLE TRIGGER predictions_pipeline_insert")
        .await?;

    // Predictions: user by user, each picking distinct matches (Floyd's
    // algorithm: exactly k draws, no retries, deterministic order).
    let base = options.predictions / users;
    let extra = options.predictions % users;
    let rules: Vec<ScoringRules> = (0..competitions).map(competition_rules).collect();
    let mut scored = 0u64;
    let mut current_user = 0u64;
    let mut picks: Vec<u64> = Vec::new();
    let mut pick_index = 0usize;
    let mut chosen = BTreeSet::new();
    copy_all(
        &tx,
        "COPY predictions (user_id, match_id, home_score, away_score, points, exact,
                           correct_outcome, scored_at) FROM STDIN",
        options.predictions,
        SeedStage::Predictions,
        progress,
        |_, out| {
            while pick_index >= picks.len() {
                current_user += 1;
                let k = base + u64::from(current_user <= extra);
                chosen.clear();
                for j in match_count - k..match_count {
                    let t = rng.below(j + 1);
                    if !chosen.insert(t) {
                        chosen.insert(j);
                    }
                }
                picks.clear();
                picks.extend(chosen.iter().copied());
                pick_index = 0;
            }
            let fixture = &fixtures[picks[pick_index] as usize];
            pick_index += 1;
            let predicted = (rng.goals(1.4), rng.goals(1.1));
            let _ = match fixture.result {
                Some(result) => {
                    scored += 1;
                    let v = verdict(predicted, result, rules[fixture.competition]);
                    writeln!(
                        out,
                        "{current_user}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        fixture.id,
                        predicted.0,
                        predicted.1,
                        v.points,
                        v.exact,
                        v.correct_outcome,
                        timestamp(fixture.kickoff + Duration::hours(2)),
                    )
                }
                None => writeln!(
                    out,
                    "{current_user}\t{}\t{}\t{}\t\\N\tf\tf\t\\N",
                    fixture.id, predicted.0, predicted.1,
                ),
            };
        },
    )
    .await?;

    tx.batch_execute("ALTER TABLE predictions ENABLE TRIGGER predictions_pipeline_insert")
        .await?;

    if !foreign_keys.is_empty() {
        let adds: Vec<String> = foreign_keys
            .iter()
            .map(|(name, definition)| format!("ADD CONSTRAINT {name} {definition}"))
            .collect();
        tx.batch_execute(&format!("ALTER TABLE predictions {}", adds.join(", ")))
            .await?;
    }

    // Explicit ids were copied: move the identity sequences past them.
    tx.batch_execute(
        "SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users));
         SELECT setval(pg_get_serial_sequence('competitions', 'id'), (SELECT max(id) FROM competitions));
         SELECT setval(pg_get_serial_sequence('teams', 'id'), (SELECT max(id) FROM teams));
         SELECT setval(pg_get_serial_sequence('matches', 'id'), (SELECT max(id) FROM matches));
         ANALYZE users, competitions, teams, matches, predictions;",
    )
    .await?;

    progress(SeedProgress {
        stage: SeedStage::Totals,
        done: 0,
        total: 1,
    });
    tx.query_one(REBUILD_TOTALS_SQL, &[]).await?;
    progress(SeedProgress {
        stage: SeedStage::Totals,
        done: 1,
        total: 1,
    });
    progress(SeedProgress {
        stage: SeedStage::Views,
        done: 0,
        total: 1,
    });
    tx.batch_execute("ANALYZE user_totals, standings_dirty").await?;
    views::refresh_views_in(&tx, Scope::All).await?;
    tx.commit().await?;
    // Fresh statistics and visibility maps, so the first queries after a
    // seed plan and run like they will in steady state.
    client
        .batch_execute(
            "VACUUM (ANALYZE) users, matches, predictions, user_totals, leaderboard_changes,
                              leaderboard_entries, leaderboard_ranks, standings_dirty, standings",
        )
        .await?;
    progress(SeedProgress {
        stage: SeedStage::Views,
        done: 1,
        total: 1,
    });

    let mut open: Vec<&Fixture> = fixtures.iter().filter(|f| f.result.is_none()).collect();
    open.sort_by_key(|f| (f.kickoff, f.id));
    let finished = fixtures.iter().filter(|f| f.result.is_some()).count() as u64;
    Ok(SeedSummary {
        users,
        competitions: competitions as u64,
        teams: (competitions * teams_per) as u64,
        matches: match_count,
        finished_matches: finished,
        predictions: options.predictions,
        scored_predictions: scored,
        open_match_ids: open.iter().map(|f| f.id).collect(),
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}
