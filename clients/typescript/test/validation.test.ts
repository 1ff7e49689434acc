/**
 * Bad input is refused with a clear error before anything reaches Redis:
 * every case runs against a client whose every method fails the test, and
 * a batch with one bad job leaves a real Redis untouched.
 */

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import type { Redis } from 'ioredis';

import { TallyInputError, TallyProducer, type EnqueueOptions, type Job } from '../src/index.js';
import { startRedis, stopAll, type RedisServer } from './support/servers.js';

/** A client that fails the test on any use at all. */
const untouchable = new Proxy(
  {},
  {
    get(_target, name) {
      if (name === 'then') return undefined;
      return () => assert.fail(`Redis was called (${String(name)}) for input that should have been refused`);
    },
  },
) as Redis;

const producer = new TallyProducer(untouchable);

async function refused(
  what: string,
  run: () => Promise<unknown>,
  expected: RegExp,
): Promise<void> {
  await assert.rejects(run, (e: unknown) => {
    assert.ok(e instanceof TallyInputError, `${what}: expected a TallyInputError, got ${String(e)}`);
    assert.equal(e.code, 'TALLY_INVALID_INPUT');
    assert.match(e.message, expected, what);
    return true;
  });
}

const bad = (job: unknown): Job => job as Job;

test('a negative, zero, fractional or string match id is refused', async () => {
  await refused('negative', () => producer.enqueueScoreMatch(-1), /^score_match: payload\.matchId: must be >= 1, got -1$/);
  await refused('zero', () => producer.enqueueScoreMatch(0), /payload\.matchId: must be >= 1, got 0/);
  await refused('fraction', () => producer.enqueueScoreMatch(1.5), /payload\.matchId: must be a whole number/);
  await refused('string', () => producer.enqueueScoreMatch('42' as unknown as number), /payload\.matchId: must be a whole number .*"42"/);
  await refused('unsafe', () => producer.enqueueScoreMatch(2 ** 60), /payload\.matchId: must be a whole number/);
  await refused('points', () => producer.enqueuePointsCalculation(-5, 'high'), /^calculate_points: payload\.matchId: must be >= 1/);
});

test('an unknown scope or priority is refused', async () => {
  await refused(
    'scope',
    () => producer.enqueueViewRefresh('everything' as never),
    /^refresh_views: payload\.scope: must be one of "all", "leaderboard", "standings", got "everything"$/,
  );
  await refused('payload priority', () => producer.enqueuePointsCalculation(1, 'urgent' as never), /payload\.priority: must be one of/);
  await refused('option priority', () => producer.enqueueScoreMatch(1, { priority: 'urgent' as never }), /policy\.priority: must be one of/);
});

test('a payload the schema refuses is refused', async () => {
  await refused(
    'extra field',
    () => producer.enqueue(bad({ kind: 'score_match', payload: { matchId: 1, matchID: 2 } })),
    /payload\.matchID: is not a field of this type \(allowed: matchId\)/,
  );
  await refused('missing field', () => producer.enqueue(bad({ kind: 'score_match', payload: {} })), /payload\.matchId: is required/);
  await refused('payload not an object', () => producer.enqueue(bad({ kind: 'score_match', payload: 42 })), /payload: must be an object/);
  await refused('unknown kind', () => producer.enqueue(bad({ kind: 'send_email', payload: {} })), /kind: unknown job kind "send_email"/);
  await refused('not a job', () => producer.enqueue(bad(null)), /job: must be an object/);
});

test('bad options are refused', async () => {
  const job: Job = { kind: 'score_match', payload: { matchId: 1 } };
  const cases: [string, EnqueueOptions, RegExp][] = [
    ['negative delay', { delayMs: -1 }, /delayMs: must be a finite number >= 0/],
    ['NaN delay', { delayMs: Number.NaN }, /delayMs: must be a finite number >= 0/],
    ['invalid date', { runAt: new Date('not a date') }, /runAt: must be a valid Date/],
    ['zero attempts', { maxAttempts: 0 }, /policy\.maxAttempts: must be >= 1, got 0/],
    ['unknown backoff', { backoff: { type: 'linear' as never } }, /policy\.backoff\.type: must be one of "exponential", "fixed"/],
    ['negative base', { backoff: { baseMs: -5 } }, /policy\.backoff\.baseMs: must be >= 0/],
    ['zero timeout', { timeoutMs: 0 }, /policy\.timeoutMs: must be >= 1/],
    ['bad traceparent', { trace: { traceparent: 'not-a-traceparent' } }, /trace\.traceparent: must match/],
    ['empty id', { id: '' }, /^score_match: id: must be at least 1 character/],
    ['long id', { id: 'x'.repeat(129) }, /id: must be at most 128 characters long, got 129/],
    ['number dedup key', { dedupKey: 5 as never }, /dedupKey: must be a string or null/],
  ];
  for (const [what, options, expected] of cases) {
    await refused(what, () => producer.enqueue(job, options), expected);
  }
  await refused('id in a batch', () => producer.enqueueBatch([job], { id: 'x' } as never), /a batch gives each job a fresh id/);
  await refused('bad queue name', () => producer.queueStats('a{b}'), /queue name: must be non-empty and free of braces/);
  assert.throws(() => new TallyProducer(untouchable, { prefix: 'a{b}' }), /prefix: must be non-empty and free of braces/);
  assert.throws(() => new TallyProducer(untouchable, { maxEnvelopeBytes: 0 }), /maxEnvelopeBytes: must be a whole number >= 1/);
});

test("a queue name with '#' (the partition separator: stats#2 is partition 2 of stats) is refused before Redis", async () => {
  for (const name of ['stats#2', '#', 'a#b']) {
    await refused(name, () => producer.queueStats(name), /^queue name: must be non-empty and free of braces and '#', got "/);
    await refused(name, () => producer.partitions(name), /free of braces and '#'/);
    assert.throws(() => producer.keys(name), (e: unknown) => e instanceof TallyInputError && /free of braces and '#'/.test(e.message));
  }
  assert.throws(() => producer.keys('stats', 64), /partition: must be a whole number from 0 to 63, got 64/);
  assert.equal(producer.keys('stats', 2).jobs, 'tally:{stats#2}:jobs');
  assert.equal(producer.keys('stats', 0).jobs, 'tally:{stats}:jobs');
  assert.throws(() => new TallyProducer(untouchable, { partitionRefreshMs: -1 }), /partitionRefreshMs: must be a finite number >= 0/);
});

test('an envelope above the size limit is refused; the limit is configurable', async () => {
  const huge: EnqueueOptions = { dedupKey: 'k'.repeat(1024 * 1024) };
  await refused(
    'above 1 MiB',
    () => producer.enqueueScoreMatch(1, huge),
    /^score_match: job ".+" is \d+ bytes encoded, above the limit of 1048576 bytes \(maxEnvelopeBytes\)/,
  );
  const small = new TallyProducer(untouchable, { maxEnvelopeBytes: 100 });
  await refused('above 100 bytes', () => small.enqueueScoreMatch(1), /above the limit of 100 bytes/);
});

let redis: RedisServer;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis?.stop();
  await stopAll();
});

test('one bad job refuses its whole batch and Redis is left untouched', async () => {
  const client = redis.client();
  const real = new TallyProducer(client);
  const jobs: Job[] = [
    { kind: 'score_match', payload: { matchId: 1 } },
    { kind: 'refresh_views', payload: { scope: 'all' } },
    { kind: 'score_match', payload: { matchId: -3 } },
  ];
  await refused('batch', () => real.enqueueBatch(jobs), /^jobs\[2\]: score_match: payload\.matchId: must be >= 1, got -3$/);
  assert.equal(await client.dbsize(), 0);
  // The same batch without the bad job goes through (the check above is
  // not refusing everything).
  const ok = await real.enqueueBatch(jobs.slice(0, 2));
  assert.equal(ok.length, 2);
  assert.ok((await client.dbsize()) > 0);
  // With a larger configured limit, a large envelope is accepted.
  const roomy = new TallyProducer(client, { maxEnvelopeBytes: 2 * 1024 * 1024 });
  const big = await roomy.enqueueScoreMatch(7, { dedupKey: 'k'.repeat(1024 * 1024) });
  assert.ok((await client.hget(roomy.keys('scoring').jobs, big.id))!.length > 1024 * 1024);
});
