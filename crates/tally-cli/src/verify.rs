//! A brute-force recomputation of every leaderboard and league table from
//! the raw rows (predictions, matches, competitions' rules), compared with
//! what the pipeline published. Deliberately naive and independent of the
//! store's SQL: it is the yardstick the demo and the end-to-end tests use.

use std::collections::{BTreeMap, HashMap};

use tally_store::{LeaderboardRow, StandingRow, Store};

/// What was compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checked {
    /// Leaderboards compared (the overall one included).
    pub boards: usize,
    /// Leaderboard rows compared.
    pub rows: usize,
    /// League tables compared.
    pub tables: usize,
    /// Finished matches the yardstick counted.
    pub finished_matches: usize,
}

/// One league table line as compared: (team, played, won, drawn, lost,
/// goals for, goals against, points).
type TableRow = (i64, i64, i64, i64, i64, i64, i64, i64);

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    points: i64,
    exact: i64,
    outcome: i64,
    scored: i64,
}

fn outcome(home: i32, away: i32) -> std::cmp::Ordering {
    home.cmp(&away)
}

/// Recomputes and compares. `Err` names the first difference.
pub async fn verify(store: &Store) -> anyhow::Result<Result<Checked, String>> {
    let client = store.pool().get().await?;
    let rows = client
        .query(
            "SELECT p.user_id, p.home_score, p.away_score, m.home_score, m.away_score,
                    m.competition_id, c.points_exact, c.points_outcome
               FROM predictions p
               JOIN matches m ON m.id = p.match_id
               JOIN competitions c ON c.id = m.competition_id
              WHERE m.status = 'finished'",
            &[],
        )
        .await?;
    // Board None = overall.
    let mut boards: BTreeMap<Option<i64>, HashMap<i64, Totals>> = BTreeMap::new();
    for row in &rows {
        let (user, ph, pa, mh, ma, comp, exact_pts, outcome_pts): (i64, i32, i32, i32, i32, i64, i32, i32) = (
            row.get(0),
            row.get(1),
            row.get(2),
            row.get(3),
            row.get(4),
            row.get(5),
            row.get(6),
            row.get(7),
        );
        let (points, exact, right) = if (ph, pa) == (mh, ma) {
            (exact_pts, 1, 0)
        } else if outcome(ph, pa) == outcome(mh, ma) {
            (outcome_pts, 0, 1)
        } else {
            (0, 0, 0)
        };
        for board in [None, Some(comp)] {
            let t = boards.entry(board).or_default().entry(user).or_default();
            t.points += i64::from(points);
            t.exact += exact;
            t.outcome += right;
            t.scored += 1;
        }
    }
    let mut checked = Checked::default();
    let competitions: Vec<i64> = client
        .query("SELECT id FROM competitions ORDER BY id", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for board in std::iter::once(None).chain(competitions.iter().copied().map(Some)) {
        let expected = boards.get(&board).cloned().unwrap_or_default();
        let mut published: Vec<LeaderboardRow> = store.leaderboard(board, 10_000_000, 0).await?;
        published.sort_by_key(|r| r.user_id);
        if published.len() != expected.len() {
            return Ok(Err(format!(
                "board {board:?}: {} users published, {} expected",
                published.len(),
                expected.len()
            )));
        }
        for r in &published {
            let Some(t) = expected.get(&r.user_id) else {
                return Ok(Err(format!(
                    "board {board:?}: user {} published but has no scored prediction",
                    r.user_id
                )));
            };
            let rank = 1 + expected.values().filter(|o| o.points > t.points).count() as i64;
            let want = (t.points, t.exact, t.outcome, t.scored, rank);
            let got = (
                r.points,
                r.exact_scores,
                r.correct_outcomes,
                r.predictions_scored,
                r.rank,
            );
            if want != got {
                return Ok(Err(format!(
                    "board {board:?}, user {}: published (points, exact, outcome, scored, rank) {got:?}, expected {want:?}",
                    r.user_id
                )));
            }
        }
        checked.boards += 1;
        checked.rows += published.len();
    }
    for &competition in &competitions {
        let expected = brute_standings(&client, competition).await?;
        let published: Vec<StandingRow> = store.standings(competition).await?;
        let got: Vec<TableRow> = published
            .iter()
            .map(|r| {
                (
                    r.team_id,
                    r.played,
                    r.won,
                    r.drawn,
                    r.lost,
                    r.goals_for,
                    r.goals_against,
                    r.points,
                )
            })
            .collect();
        if got != expected {
            return Ok(Err(format!(
                "standings of competition {competition}: published {got:?}, expected {expected:?}"
            )));
        }
        checked.tables += 1;
    }
    checked.finished_matches = usize::try_from(
        client
            .query_one("SELECT count(*) FROM matches WHERE status = 'finished'", &[])
            .await?
            .get::<_, i64>(0),
    )
    .unwrap_or(0);
    Ok(Ok(checked))
}

/// The league table from finished matches: (team, P, W, D, L, GF, GA, pts),
/// ordered by points, goal difference, goals for, then name.
async fn brute_standings(client: &tokio_postgres::Client, competition: i64) -> anyhow::Result<Vec<TableRow>> {
    let teams = client
        .query(
            "SELECT DISTINCT t.id, t.name FROM teams t JOIN matches m
               ON t.id IN (m.home_team_id, m.away_team_id) WHERE m.competition_id = $1",
            &[&competition],
        )
        .await?;
    let mut table: HashMap<i64, (String, [i64; 7])> = teams
        .iter()
        .map(|r| (r.get::<_, i64>(0), (r.get::<_, String>(1), [0; 7])))
        .collect();
    let matches = client
        .query(
            "SELECT home_team_id, away_team_id, home_score, away_score FROM matches
              WHERE competition_id = $1 AND status = 'finished'",
            &[&competition],
        )
        .await?;
    for m in &matches {
        let (home, away, hs, aws): (i64, i64, i32, i32) = (m.get(0), m.get(1), m.get(2), m.get(3));
        for (team, gf, ga) in [(home, hs, aws), (away, aws, hs)] {
            let Some((_, s)) = table.get_mut(&team) else { continue };
            // [played, won, drawn, lost, gf, ga, points]
            s[0] += 1;
            match gf.cmp(&ga) {
                std::cmp::Ordering::Greater => {
                    s[1] += 1;
                    s[6] += 3;
                }
                std::cmp::Ordering::Equal => {
                    s[2] += 1;
                    s[6] += 1;
                }
                std::cmp::Ordering::Less => s[3] += 1,
            }
            s[4] += i64::from(gf);
            s[5] += i64::from(ga);
        }
    }
    let mut rows: Vec<(i64, String, [i64; 7])> = table.into_iter().map(|(id, (name, s))| (id, name, s)).collect();
    rows.sort_by(|a, b| {
        (b.2[6], b.2[4] - b.2[5], b.2[4])
            .cmp(&(a.2[6], a.2[4] - a.2[5], a.2[4]))
            .then_with(|| a.1.cmp(&b.1))
    });
    Ok(rows
        .into_iter()
        .map(|(id, _, s)| (id, s[0], s[1], s[2], s[3], s[4], s[5], s[6]))
        .collect())
}
