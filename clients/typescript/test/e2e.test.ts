/**
 * End to end: the package enqueues ScoreMatch for a finished match, and the
 * real scoring-worker and stats-worker binaries (target/debug, built by
 * `cargo build --workspace --bins`) carry it to a fresh leaderboard, checked
 * against a brute-force recomputation from the raw rows.
 *
 * As the Node app would: the result is written to PostgreSQL by the app
 * (here with SQL), then its scoring is enqueued through this package. The
 * database is migrated and seeded with the `tally` CLI, as the demo does.
 */

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import type { ChildProcess } from 'node:child_process';
import type { Redis } from 'ioredis';

import { TallyProducer, type QueueStats } from '../src/index.js';
import { idIn } from './support/partitions.js';
import { binary, tally } from './support/repo.js';
import {
  freePort,
  outputTail,
  startChild,
  startPostgres,
  startRedis,
  stopAll,
  stopChild,
  waitFor,
  type PostgresServer,
  type RedisServer,
} from './support/servers.js';

let redis: RedisServer;
let postgres: PostgresServer;
let client: Redis;
const workers: { name: string; child: ChildProcess }[] = [];

before(async () => {
  [redis, postgres] = await Promise.all([startRedis(), startPostgres('tally_e2e')]);
  client = redis.client();
});

after(async () => {
  for (const w of workers) await stopChild(w.child, 'SIGKILL');
  await redis?.stop();
  await postgres?.stop();
  await stopAll();
});

function env(prefix = 'tally'): Record<string, string> {
  return { REDIS_URL: redis.url, DATABASE_URL: postgres.url, TALLY_QUEUE_PREFIX: prefix, RUST_LOG: 'info' };
}

let seeded = false;
/** Migrates and seeds the database once (with the `tally` CLI, as the demo does). */
function seed(): void {
  if (seeded) return;
  tally(['migrate'], env());
  tally(['seed', '--users', '60', '--predictions', '600', '--competitions', '2', '--teams', '6', '--played', '0.3', '--seed', '7'], env());
  seeded = true;
}

/** The overall leaderboard as published: user id -> points. */
function published(): Map<number, number> {
  const rows = JSON.parse(tally(['--json', 'leaderboard', '--top', '100000'], env())) as { userId: number; points: number }[];
  return new Map(rows.map((r) => [r.userId, r.points]));
}

/** The overall leaderboard recomputed from predictions and finished matches (as crates/tally-cli/src/verify.rs). */
function recomputed(): Map<number, number> {
  const out = postgres.psql(`
    SELECT p.user_id,
           sum(CASE WHEN p.home_score = m.home_score AND p.away_score = m.away_score THEN c.points_exact
                    WHEN sign(p.home_score - p.away_score) = sign(m.home_score - m.away_score) THEN c.points_outcome
                    ELSE 0 END)
      FROM predictions p
      JOIN matches m ON m.id = p.match_id
      JOIN competitions c ON c.id = m.competition_id
     WHERE m.status = 'finished'
     GROUP BY p.user_id`);
  return new Map(
    out
      .split('\n')
      .filter(Boolean)
      .map((line) => line.split('|').map(Number) as [number, number]),
  );
}

/** Users with points, compared: zero-point users may be absent from either side. */
function differences(a: Map<number, number>, b: Map<number, number>): string[] {
  const users = new Set([...a.keys(), ...b.keys()]);
  return [...users].filter((u) => (a.get(u) ?? 0) !== (b.get(u) ?? 0)).map((u) => `user ${u}: ${a.get(u) ?? 0} published, ${b.get(u) ?? 0} expected`);
}

/**
 * Waits (at most a minute) until the chain has run: at least `scoring` scoring
 * jobs done, nothing left waiting or running anywhere, and the leaderboard
 * equal to the recomputation. Dead jobs fail at once.
 */
async function waitSettled(producer: TallyProducer, scoring: number): Promise<void> {
  const deadline = Date.now() + 60_000;
  let last = '';
  for (;;) {
    const all = await producer.queueStats();
    const dead = Object.entries(all).filter(([, s]) => s.dead > 0);
    assert.deepStrictEqual(dead, [], 'no job died');
    const busy = Object.values(all).reduce((n, s: QueueStats) => n + s.ready + s.scheduled + s.inFlight, 0);
    if (all.scoring.counters.completed >= scoring && busy === 0) {
      const diff = differences(published(), recomputed());
      if (diff.length === 0) return;
      last = diff.slice(0, 5).join('; ');
    } else {
      last = `scoring completed ${all.scoring.counters.completed}, ${busy} job(s) not finished`;
    }
    if (Date.now() > deadline) {
      const logs = workers.map((w) => `--- ${w.name}:\n${outputTail(w.child)}`).join('\n');
      assert.fail(`not settled after 60 s: ${last}\n${logs}`);
    }
    await sleep(100);
  }
}

async function startWorker(name: 'scoring-worker' | 'stats-worker', prefix = 'tally'): Promise<ChildProcess> {
  const port = await freePort();
  const child = startChild(binary(name), [], {
    ...process.env,
    ...env(prefix),
    HEALTH_ADDR: `127.0.0.1:${port}`,
    LEASE_SECS: '2',
    SHUTDOWN_TIMEOUT_SECS: '5',
  });
  workers.push({ name, child });
  await waitFor(name, child, async () => {
    try {
      return (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200;
    } catch {
      return false;
    }
  });
  return child;
}

test('ScoreMatch enqueued by the package reaches a fresh leaderboard through the real workers', async () => {
  seed();
  assert.deepStrictEqual(differences(published(), recomputed()), [], 'the seeded leaderboard is consistent');

  // A scheduled match with predictions; its result is one user's exact
  // prediction, so the leaderboard must change.
  const [matchId, home, away] = postgres
    .psql(
      `SELECT p.match_id, p.home_score, p.away_score FROM predictions p JOIN matches m ON m.id = p.match_id
        WHERE m.status = 'scheduled' ORDER BY m.kickoff_at, m.id, p.user_id LIMIT 1`,
    )
    .split('|')
    .map(Number) as [number, number, number];
  assert.ok(matchId > 0, 'the seed left a scheduled match with predictions');
  postgres.psql(
    `UPDATE matches SET status = 'finished', home_score = ${home}, away_score = ${away}, finished_at = now() WHERE id = ${matchId}`,
  );
  assert.notDeepStrictEqual(differences(published(), recomputed()), [], 'the result is not on the leaderboard yet');

  const producer = new TallyProducer(client);
  const enqueued = await producer.enqueueScoreMatch(matchId);
  assert.equal(enqueued.deduplicated, false);
  const waiting = await producer.queueStats('scoring');
  assert.equal(waiting.ready, 1);
  assert.deepStrictEqual(await client.lrange(producer.keys('scoring').ready('normal'), 0, -1), [enqueued.id]);

  await startWorker('scoring-worker');
  await startWorker('stats-worker');

  await waitSettled(producer, 1);

  // Only the package's job went through the scoring queue, and the chain
  // reached the stats queue (points, then the refresh).
  const done = await producer.queueStats();
  assert.equal(done.scoring.counters.enqueued, 1);
  assert.equal(done.scoring.counters.completed, 1);
  assert.ok(done.stats.counters.completed >= 2, `stats jobs completed: ${done.stats.counters.completed}`);
  assert.equal(postgres.psql(`SELECT count(*) FROM predictions WHERE match_id = ${matchId} AND points IS NULL`), '0');

  // The workers stop cleanly.
  for (const w of workers) {
    const exited = new Promise<number | null>((resolve) => w.child.once('exit', (code) => resolve(code)));
    w.child.kill('SIGTERM');
    assert.equal(await exited, 0, `${w.name} exit code`);
  }
});

test('partitioned queues: the package spreads ScoreMatch jobs over the partitions and the real workers finish every one', async () => {
  seed();
  // Fresh queues under their own prefix, partitioned before the workers start.
  const prefix = 'tallyparts';
  tally(['queue', 'partitions', 'scoring', '3'], env(prefix));
  tally(['queue', 'partitions', 'stats', '4'], env(prefix));
  const producer = new TallyProducer(client, { prefix });
  const matches = postgres
    .psql(
      `SELECT m.id FROM matches m WHERE m.status = 'scheduled'
          AND EXISTS (SELECT 1 FROM predictions p WHERE p.match_id = m.id)
        ORDER BY m.kickoff_at, m.id LIMIT 6`,
    )
    .split('\n')
    .filter(Boolean)
    .map(Number);
  assert.equal(matches.length, 6, 'the seed left six scheduled matches with predictions');
  postgres.psql(
    `UPDATE matches SET status = 'finished', home_score = 2, away_score = 1, finished_at = now() WHERE id IN (${matches.join(', ')})`,
  );
  // Ids chosen so that each scoring partition gets two (a job without a
  // dedup key goes to the partition its id hashes to).
  const enqueued = await Promise.all(matches.map((matchId, i) => producer.enqueueScoreMatch(matchId, { id: idIn(i % 3, 3, `e2e-${matchId}`) })));
  assert.ok(enqueued.every((e) => !e.deduplicated));
  // Keyed refreshes too (coalesced per scope, on their keys' partitions).
  for (const scope of ['all', 'leaderboard', 'standings'] as const) await producer.enqueueViewRefresh(scope);
  // Two ScoreMatch jobs in each scoring partition.
  const perPartition = await Promise.all([0, 1, 2].map((p) => client.llen(producer.keys('scoring', p).ready('normal'))));
  assert.deepStrictEqual(perPartition, [2, 2, 2]);
  assert.equal((await producer.queueStats('scoring')).partitions, 3);

  const started = [await startWorker('scoring-worker', prefix), await startWorker('stats-worker', prefix)];
  await waitSettled(producer, 6);
  const done = await producer.queueStats();
  assert.deepStrictEqual([done.scoring.counters.enqueued, done.scoring.counters.completed, done.scoring.partitions], [6, 6, 3]);
  assert.equal(done.stats.partitions, 4);
  assert.ok(done.stats.counters.completed >= 9, `stats jobs completed: ${done.stats.counters.completed}`);
  // Every scoring partition ran its two jobs.
  const completed = await Promise.all([0, 1, 2].map((p) => client.hget(producer.keys('scoring', p).stats, 'completed')));
  assert.deepStrictEqual(completed, ['2', '2', '2']);
  assert.equal(postgres.psql(`SELECT count(*) FROM predictions WHERE match_id IN (${matches.join(', ')}) AND points IS NULL`), '0');
  for (const child of started) {
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0, 'worker exit code');
  }
});
