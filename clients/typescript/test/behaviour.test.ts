/**
 * Dedup, delay, priority and ids behave as the Rust producer's do: the same
 * expectations as crates/tally-queue/tests/basics.rs, checked on Redis with
 * the engine's own claim script, and side by side with the Rust producer
 * itself (the `tally` CLI) on the same Redis.
 */

import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';

import type { Redis } from 'ioredis';

import { TallyProducer, type Job } from '../src/index.js';
import { engineScript, tally } from './support/repo.js';
import { startRedis, stopAll, type RedisServer } from './support/servers.js';

let redis: RedisServer;
let client: Redis;
before(async () => {
  redis = await startRedis();
  client = redis.client();
});
after(async () => {
  await redis?.stop();
  await stopAll();
});
beforeEach(async () => {
  await client.flushall();
});

const CLAIM = engineScript('claim_jobs.lua');
let claims = 0;

/** Claims up to `max` jobs of `queue` as a worker does (claim_jobs.lua); returns their envelopes in claim order. */
async function claim(producer: TallyProducer, queue: string, max: number): Promise<{ id: string; payload: Record<string, unknown> }[]> {
  const k = producer.keys(queue);
  claims += 1;
  const keys = [
    k.ready('high'),
    k.ready('normal'),
    k.ready('low'),
    k.jobs,
    k.part('state'),
    k.leases,
    k.part('token'),
    k.part('dedup'),
    k.part('wake'),
    k.stats,
    k.part('claim:test'),
    k.part('control'),
  ];
  const reply = (await client.eval(CLAIM, keys.length, ...keys, `n:req-${claims}`, 60_000, max, max)) as unknown[];
  const out = [];
  // The acknowledgements (none here), the throttled flag, the first token
  // (when jobs were claimed), then three values per job: id, envelope, meta.
  for (let i = 3; i + 3 <= reply.length; i += 3) {
    const envelope = JSON.parse(String(reply[i + 1])) as { id: string; payload: Record<string, unknown> };
    out.push(envelope);
  }
  return out;
}

async function redisNowMs(): Promise<number> {
  const [s, us] = await client.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

test('priorities: strict order high, normal, low, FIFO within each (as basics.rs s07)', async () => {
  const producer = new TallyProducer(client);
  const order: [number, 'high' | 'normal' | 'low'][] = [
    [1, 'low'],
    [2, 'normal'],
    [3, 'high'],
    [4, 'low'],
    [5, 'high'],
    [6, 'normal'],
  ];
  for (const [n, priority] of order) await producer.enqueuePointsCalculation(n, priority);
  // An override through the options wins over the job's own priority.
  await producer.enqueuePointsCalculation(7, 'low', { priority: 'high' });
  const stats = await producer.queueStats('stats');
  assert.deepStrictEqual(stats.readyByPriority, { high: 3, normal: 2, low: 2 });
  const claimed = await claim(producer, 'stats', 10);
  assert.deepStrictEqual(
    claimed.map((e) => e.payload['matchId']),
    [3, 5, 7, 2, 6, 1, 4],
  );
});

test('dedup: coalesces while waiting, also within a batch; a new job once the waiting one started (as basics.rs s08)', async () => {
  const producer = new TallyProducer(client);
  const first = await producer.enqueueViewRefresh('all');
  assert.equal(first.deduplicated, false);
  for (let i = 0; i < 5; i++) {
    assert.deepStrictEqual(await producer.enqueueViewRefresh(), { id: first.id, deduplicated: true });
  }
  const batch = await producer.enqueueBatch([
    { kind: 'refresh_views', payload: { scope: 'all' } },
    { kind: 'refresh_views', payload: {} },
  ]);
  assert.ok(batch.every((e) => e.deduplicated && e.id === first.id));
  // A different key, or an explicit key, or none, is its own job.
  const standings = await producer.enqueueViewRefresh('standings');
  assert.equal(standings.deduplicated, false);
  const custom = await producer.enqueueScoreMatch(1, { dedupKey: 'score:1' });
  assert.deepStrictEqual(await producer.enqueueScoreMatch(2, { dedupKey: 'score:1' }), { id: custom.id, deduplicated: true });
  const never = await producer.enqueueViewRefresh('all', { dedupKey: null });
  assert.equal(never.deduplicated, false);
  assert.notEqual(never.id, first.id);
  assert.equal((await producer.queueStats('stats')).ready, 3);
  assert.equal((await producer.queueStats('stats')).counters.enqueued, 3);

  // Once the waiting job is claimed, a request makes a new job, which then
  // absorbs the next ones.
  const started = await claim(producer, 'stats', 1);
  assert.deepStrictEqual(started.map((e) => e.id), [first.id]);
  const fresh = await producer.enqueueViewRefresh('all');
  assert.equal(fresh.deduplicated, false);
  assert.notEqual(fresh.id, first.id);
  assert.deepStrictEqual(await producer.enqueueViewRefresh('all'), { id: fresh.id, deduplicated: true });
});

test('an id enqueued twice is one job, now or scheduled (as basics.rs)', async () => {
  const producer = new TallyProducer(client);
  assert.deepStrictEqual(await producer.enqueueScoreMatch(1, { id: 'fixed-1' }), { id: 'fixed-1', deduplicated: false });
  assert.deepStrictEqual(await producer.enqueueScoreMatch(2, { id: 'fixed-1' }), { id: 'fixed-1', deduplicated: true });
  await producer.enqueueScoreMatch(3, { id: 'fixed-2', delayMs: 60_000 });
  assert.deepStrictEqual(await producer.enqueueScoreMatch(4, { id: 'fixed-2' }), { id: 'fixed-2', deduplicated: true });
  const stats = await producer.queueStats('scoring');
  assert.deepStrictEqual([stats.ready, stats.scheduled, stats.counters.enqueued], [1, 1, 2]);
  // The first payload stays.
  assert.equal(JSON.parse((await client.hget(producer.keys('scoring').jobs, 'fixed-1'))!).payload.matchId, 1);
});

test("delay and run-at are kept as distances from the producer's clock, whatever its skew", async () => {
  // This producer's clock is an hour behind Redis's (and stands still, so
  // the expected due times are exact).
  const producerNow = Date.now() - 3_600_000;
  const producer = new TallyProducer(client, { now: () => producerNow });
  const k = producer.keys('scoring');
  const before = await redisNowMs();
  const delayed = await producer.enqueueScoreMatch(1, { delayMs: 60_000 });
  const at = await producer.enqueueScoreMatch(2, { runAt: new Date(producerNow + 30_000) });
  const afterMs = await redisNowMs();
  // Due a minute (and half a minute) after the enqueue on Redis's clock,
  // not an hour early: between the two readings of Redis's clock around
  // the calls, plus the distance.
  for (const [id, distance] of [[delayed.id, 60_000], [at.id, 30_000]] as const) {
    const due = Number(await client.zscore(k.scheduled, id));
    assert.ok(due >= before + distance && due <= afterMs + distance, `due ${due}, Redis clock ${before}..${afterMs}, distance ${distance}`);
  }
  // Nothing is ready, and a claim finds nothing.
  const stats = await producer.queueStats('scoring');
  assert.deepStrictEqual([stats.ready, stats.scheduled], [0, 2]);
  assert.deepStrictEqual(await claim(producer, 'scoring', 10), []);
  // The scheduled job keeps its priority for the promoter (state record), as the Rust producer writes it.
  assert.equal(await client.hget(k.part('state'), delayed.id), '0:0:0:0:n');
  // A run-at in the past, or no delay, is ready now.
  await producer.enqueueScoreMatch(3, { runAt: producerNow - 5_000 });
  await producer.enqueueScoreMatch(4, { delayMs: 0 });
  assert.deepStrictEqual((await claim(producer, 'scoring', 10)).map((e) => e.payload['matchId']), [3, 4]);
});

test('a batch of 2,500 jobs over two queues: results in order, one script call per thousand', async () => {
  const producer = new TallyProducer(client);
  const jobs: Job[] = [];
  for (let i = 1; i <= 2500; i++) {
    jobs.push(i % 2 ? { kind: 'score_match', payload: { matchId: i } } : { kind: 'calculate_points', payload: { matchId: i } });
  }
  const out = await producer.enqueueBatch(jobs);
  assert.equal(out.length, 2500);
  assert.equal(new Set(out.map((e) => e.id)).size, 2500);
  const scoring = producer.keys('scoring');
  const stats = producer.keys('stats');
  for (const i of [0, 1, 998, 999, 1000, 2499]) {
    const queue = jobs[i]!.kind === 'score_match' ? scoring : stats;
    assert.equal(JSON.parse((await client.hget(queue.jobs, out[i]!.id))!).payload.matchId, i + 1, `job ${i}`);
  }
  assert.equal(await client.llen(scoring.ready('normal')), 1250);
  assert.equal(await client.llen(stats.ready('normal')), 1250);
});

test('the script is sent again after SCRIPT FLUSH (NOSCRIPT)', async () => {
  const producer = new TallyProducer(client);
  await producer.enqueueScoreMatch(1);
  await client.script('FLUSH');
  const again = await producer.enqueueScoreMatch(2);
  assert.equal(again.deduplicated, false);
  assert.equal((await producer.queueStats('scoring')).ready, 2);
});

test('beside the Rust producer: the same envelope and state, and dedup across the two', async () => {
  const env = { REDIS_URL: redis.url, TALLY_QUEUE_PREFIX: 'tally' };
  const producer = new TallyProducer(client);
  // ScoreMatch from each: identical but for id and creation time.
  const rust = JSON.parse(tally(['--json', 'enqueue', 'score-match', '7'], env)) as { id: string };
  const ours = await producer.enqueueScoreMatch(7, { trace: false });
  const k = producer.keys('scoring');
  const strip = (text: string | null): unknown => {
    const { id: _id, createdAtMs: _c, ...rest } = JSON.parse(text!) as Record<string, unknown>;
    return rest;
  };
  assert.deepStrictEqual(strip(await client.hget(k.jobs, ours.id)), strip(await client.hget(k.jobs, rust.id)));
  assert.deepStrictEqual(await client.lrange(k.ready('normal'), 0, -1), [rust.id, ours.id]);
  assert.deepStrictEqual(await client.hgetall(k.part('state')), {});

  // A refresh from Rust absorbs ours, and ours absorbs Rust's.
  const rustAll = JSON.parse(tally(['--json', 'enqueue', 'refresh-views'], env)) as { id: string };
  assert.deepStrictEqual(await producer.enqueueViewRefresh('all'), { id: rustAll.id, deduplicated: true });
  const oursStandings = await producer.enqueueViewRefresh('standings');
  // The CLI's JSON may carry more keys (it names the Redis it used): compare the contract's.
  const { id: rustId, deduplicated: rustDedup } = JSON.parse(
    tally(['--json', 'enqueue', 'refresh-views', '--scope', 'standings'], env),
  ) as { id: string; deduplicated: boolean };
  assert.deepStrictEqual({ id: rustId, deduplicated: rustDedup }, { id: oursStandings.id, deduplicated: true });
  const s = producer.keys('stats');
  assert.equal(await client.hget(s.part('state'), oursStandings.id), await client.hget(s.part('state'), rustAll.id).then((v) => v!.replace(':all', ':standings')));

  // queueStats() reads what `tally queue stats --json` reads.
  await producer.enqueueScoreMatch(8, { delayMs: 60_000 });
  await producer.enqueuePointsCalculation(9, 'high');
  const cli = JSON.parse(tally(['--json', 'queue', 'stats'], env)) as { queues: Record<string, Record<string, unknown>> };
  const all = await producer.queueStats();
  assert.deepStrictEqual(Object.keys(all).sort(), Object.keys(cli.queues).sort());
  for (const [name, theirs] of Object.entries(cli.queues)) {
    const mine = all[name as 'scoring' | 'stats'];
    const { oldestReadyAgeMs: a, ...mineRest } = mine;
    const { oldestReadyAgeMs: b, ...theirsRest } = theirs;
    assert.deepStrictEqual(mineRest, theirsRest, name);
    assert.equal(typeof a, 'number');
    assert.equal(typeof b, 'number');
  }
  assert.deepStrictEqual(all.scoring.scheduled, 1);
  assert.deepStrictEqual(all.stats.readyByPriority, { high: 1, normal: 2, low: 0 });

  // A paused, limited queue reads the same way from both.
  tally(['queue', 'pause', 'stats'], env);
  tally(['queue', 'limit', 'stats', '4'], env);
  const controlled = await producer.queueStats('stats');
  assert.deepStrictEqual([controlled.paused, controlled.limit], [true, 4]);
  const cliControlled = JSON.parse(tally(['--json', 'queue', 'stats', '--queue', 'stats'], env)) as { queues: { stats: { paused: boolean; limit: number | null } } };
  assert.deepStrictEqual([cliControlled.queues.stats.paused, cliControlled.queues.stats.limit], [true, 4]);
  tally(['queue', 'resume', 'stats'], env);
  tally(['queue', 'limit', 'stats', 'none'], env);
  assert.deepStrictEqual([(await producer.queueStats('stats')).paused, (await producer.queueStats('stats')).limit], [false, null]);
});

test('attempts, backoff and timeout overrides are written into the envelope, for one job and a batch', async () => {
  const producer = new TallyProducer(client);
  const overrides = { maxAttempts: 5, backoff: { baseMs: 1000, jitter: true }, timeoutMs: 60_000, priority: 'low' } as const;
  const one = await producer.enqueueScoreMatch(1, overrides);
  const [a, b] = await producer.enqueueBatch(
    [
      { kind: 'score_match', payload: { matchId: 2 } },
      { kind: 'refresh_views', payload: {} },
    ],
    overrides,
  );
  const policy = async (queue: string, id: string): Promise<unknown> =>
    JSON.parse((await client.hget(producer.keys(queue).jobs, id))!).policy;
  const expected = {
    maxAttempts: 5,
    backoff: { type: 'exponential', baseMs: 1000, maxMs: 600_000, jitter: true },
    timeoutMs: 60_000,
    priority: 'low',
  };
  assert.deepStrictEqual(await policy('scoring', one.id), expected);
  assert.deepStrictEqual(await policy('scoring', a!.id), expected);
  assert.deepStrictEqual(await policy('stats', b!.id), expected);
  assert.deepStrictEqual(await client.lrange(producer.keys('scoring').ready('low'), 0, -1), [one.id, a!.id]);
});
