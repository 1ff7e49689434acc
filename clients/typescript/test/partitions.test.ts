/**
 * Partitioned queues (docs/PROTOCOL.md, "Partitions"): the package routes
 * each job to the partition the Rust producer would choose (checked against
 * the Rust side itself: the `tally` CLI enqueues keyed jobs on a queue it
 * partitioned, and the package's enqueues of the same keys coalesce into
 * them, and the other way round), spreads jobs without a key evenly, reads
 * the partition count again every `partitionRefreshMs` (and refuses a bad
 * one), and adds the partitions up in `queueStats`, as
 * `tally queue stats --json` does.
 */

import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import type { Redis } from 'ioredis';

import { TallyProducer, fnv1a32, partitionForKey, type Job, type QueueStats } from '../src/index.js';
import { idIn } from './support/partitions.js';
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

const env = (): Record<string, string> => ({ REDIS_URL: redis.url, TALLY_QUEUE_PREFIX: 'tally' });

/** Partitions `queue` into `count` with the Rust CLI (`QueueAdmin::set_partitions`). */
function partition(queue: 'scoring' | 'stats', count: number): void {
  const out = JSON.parse(tally(['--json', 'queue', 'partitions', queue, String(count)], env())) as { partitions: number };
  assert.equal(out.partitions, count);
}

/** The partitions of `queue` (of `count`) whose `jobs` hash holds `id`. */
async function partitionsHolding(producer: TallyProducer, queue: string, count: number, id: string): Promise<number[]> {
  const found: number[] = [];
  for (let p = 0; p < count; p++) {
    if ((await client.hexists(producer.keys(queue, p).jobs, id)) === 1) found.push(p);
  }
  return found;
}

/** Ready (normal) jobs in each partition, read from the keys themselves. */
async function readyPerPartition(producer: TallyProducer, queue: string, count: number): Promise<number[]> {
  const lens: number[] = [];
  for (let p = 0; p < count; p++) lens.push(await client.llen(producer.keys(queue, p).ready('normal')));
  return lens;
}

test('fnv1a32 gives the published FNV-1a vectors over UTF-8 bytes; partitionForKey is it modulo the count', () => {
  assert.equal(fnv1a32('a'), 0xe40c292c);
  assert.equal(fnv1a32('foobar'), 0xbf9cf968);
  assert.equal(fnv1a32(''), 0x811c9dc5, 'no bytes: the offset basis');
  // Multi-byte UTF-8 (C3 A9; C3 BC E6 97 A5 E6 9C AC), not UTF-16 code
  // units; the values are from a byte-wise implementation in Python.
  assert.equal(fnv1a32('é'), 0x1e9de8c1);
  assert.equal(fnv1a32('ü日本'), 0x029c4746);
  // As the Rust unit test keys_route_by_fnv1a: the hash itself under a huge
  // count, a remainder otherwise, 0 for one partition.
  assert.equal(partitionForKey('a', 0xffffffff), 0xe40c292c);
  assert.equal(partitionForKey('foobar', 1000), 0xbf9cf968 % 1000);
  assert.equal(partitionForKey('anything', 1), 0);
  for (const key of ['refresh:all', 'match:42', '']) assert.ok(partitionForKey(key, 3) < 3);
});

test('keyed jobs go where the Rust producer puts them: dedup across the two on a partitioned queue, both ways', async () => {
  const scopes = ['all', 'leaderboard', 'standings'] as const;
  const seen = new Set<number>();
  for (const count of [3, 2, 4, 5, 7, 8, 16, 31, 64]) {
    // Rust first: the Rust producer chooses the partition, the package's
    // enqueue must meet the job there.
    await client.flushall();
    partition('stats', count);
    const producer = new TallyProducer(client);
    for (const scope of scopes) {
      const rust = JSON.parse(tally(['--json', 'enqueue', 'refresh-views', '--scope', scope], env())) as { id: string; deduplicated: boolean };
      assert.equal(rust.deduplicated, false);
      const where = await partitionsHolding(producer, 'stats', count, rust.id);
      assert.deepStrictEqual(where, [partitionForKey(`refresh_views:${scope}`, count)], `${scope} of ${count}: the Rust choice`);
      seen.add(where[0]!);
      assert.deepStrictEqual(await producer.enqueueViewRefresh(scope), { id: rust.id, deduplicated: true }, `${scope} of ${count}`);
    }
    // The package first: the Rust producer's enqueue meets the package's job.
    await client.flushall();
    partition('stats', count);
    const other = new TallyProducer(client);
    for (const scope of scopes) {
      const ours = await other.enqueueViewRefresh(scope);
      assert.equal(ours.deduplicated, false);
      const rust = JSON.parse(tally(['--json', 'enqueue', 'refresh-views', '--scope', scope], env())) as { id: string; deduplicated: boolean };
      assert.deepStrictEqual({ id: rust.id, deduplicated: rust.deduplicated }, { id: ours.id, deduplicated: true }, `${scope} of ${count}`);
    }
    const stats = await other.queueStats('stats');
    assert.deepStrictEqual([stats.ready, stats.counters.enqueued, stats.partitions], [3, 3, count]);
  }
  // The keys did not all land on partition 0 (where an unpartitioned producer writes).
  assert.ok(seen.size >= 5, `partitions used: ${[...seen].join(', ')}`);
});

test('a dedup key lands on its partition and coalesces there, from another producer and within a batch', async () => {
  partition('stats', 4);
  const keyed = (k: number): Job => ({ kind: 'calculate_points', payload: { matchId: k + 1 } });
  const first = new TallyProducer(client);
  const ids: string[] = [];
  for (let k = 0; k < 40; k++) {
    const e = await first.enqueue(keyed(k), { dedupKey: `refresh:${k}` });
    assert.equal(e.deduplicated, false);
    ids.push(e.id);
    const p = partitionForKey(`refresh:${k}`, 4);
    assert.deepStrictEqual(await partitionsHolding(first, 'stats', 4, e.id), [p], `job ${k}`);
    assert.equal(await client.hget(first.keys('stats', p).part('dedup'), `refresh:${k}`), e.id);
  }
  assert.equal(new Set(Array.from({ length: 40 }, (_, k) => partitionForKey(`refresh:${k}`, 4))).size, 4, '40 keys use every partition');
  // Another producer (another process of the app), one enqueue and then a batch.
  const second = new TallyProducer(client);
  assert.deepStrictEqual(await second.enqueue(keyed(0), { dedupKey: 'refresh:0' }), { id: ids[0], deduplicated: true });
  for (let k = 0; k < 40; k++) {
    const [again] = await second.enqueueBatch([keyed(k)], { dedupKey: `refresh:${k}` });
    assert.deepStrictEqual(again, { id: ids[k], deduplicated: true }, `job ${k}`);
  }
  const stats = await second.queueStats('stats');
  assert.deepStrictEqual([stats.ready, stats.counters.enqueued, stats.partitions], [40, 40, 4]);
  // The Rust side counts the same.
  const cli = JSON.parse(tally(['--json', 'queue', 'stats', '--queue', 'stats'], env())) as { queues: { stats: { ready: number; partitions: number } } };
  assert.deepStrictEqual([cli.queues.stats.ready, cli.queues.stats.partitions], [40, 4]);
});

test('jobs without a key go to the partition their id hashes to; a mixed batch keeps its order over partitions and chunks', async () => {
  partition('scoring', 3);
  partition('stats', 2);
  const producer = new TallyProducer(client);
  const jobs: Job[] = Array.from({ length: 600 }, (_, i) => ({ kind: 'score_match', payload: { matchId: i + 1 } }));
  const sent = await producer.enqueueBatch(jobs);
  const spread = await readyPerPartition(producer, 'scoring', 3);
  assert.equal(spread.reduce((a, b) => a + b, 0), 600);
  assert.ok(spread.every((n) => n >= 140 && n <= 260), `as the Rust producer: about a third each, got ${spread.join(', ')}`);
  for (const { id } of sent.slice(0, 20)) {
    assert.deepStrictEqual(await partitionsHolding(producer, 'scoring', 3, id), [partitionForKey(id, 3)], id);
  }
  // Sent again under its id (as a relay does after a lost reply), a job
  // meets its first copy in its partition.
  for (let i = 0; i < 12; i++) {
    const first = await producer.enqueueScoreMatch(2000 + i, { id: `outbox-${i}` });
    const again = await producer.enqueueScoreMatch(2000 + i, { id: `outbox-${i}` });
    assert.deepStrictEqual([first.deduplicated, again.deduplicated, again.id], [false, true, `outbox-${i}`]);
  }
  assert.equal((await producer.queueStats('scoring')).ready, 612);

  // 5,000 jobs over both queues, keyed and not: more than a thousand per
  // partition (several script calls each), results in the order given.
  const mixed: Job[] = [];
  for (let i = 1; i <= 5000; i++) {
    if (i % 5 === 0) {
      mixed.push({ kind: 'refresh_views', payload: { scope: (['all', 'leaderboard', 'standings'] as const)[i % 3]! } });
    } else if (i % 2 === 0) {
      mixed.push({ kind: 'calculate_points', payload: { matchId: i } });
    } else {
      mixed.push({ kind: 'score_match', payload: { matchId: i } });
    }
  }
  await client.flushall();
  partition('scoring', 3);
  partition('stats', 2);
  const fresh = new TallyProducer(client);
  const out = await fresh.enqueueBatch(mixed);
  assert.equal(out.length, 5000);
  const refreshes = out.filter((_, i) => mixed[i]!.kind === 'refresh_views');
  assert.equal(new Set(refreshes.map((e) => e.id)).size, 3, 'the refreshes coalesced per scope');
  const scoring = await readyPerPartition(fresh, 'scoring', 3);
  assert.equal(scoring.reduce((a, b) => a + b, 0), 2000);
  assert.ok(scoring.every((n) => n > 600), `score_match jobs per partition: ${scoring.join(', ')}`);
  const stats = await readyPerPartition(fresh, 'stats', 2);
  assert.equal(stats.reduce((a, b) => a + b, 0), 2003);
  assert.ok(stats.every((n) => n > 900), `stats jobs per partition: ${stats.join(', ')}`);
  for (const i of [0, 1, 4, 998, 999, 1000, 1001, 2999, 3000, 4998, 4999]) {
    const job = mixed[i]!;
    const queue = job.kind === 'score_match' ? 'scoring' : 'stats';
    const count = queue === 'scoring' ? 3 : 2;
    const where = await partitionsHolding(fresh, queue, count, out[i]!.id);
    assert.equal(where.length, 1, `job ${i} in one partition`);
    if (job.kind === 'refresh_views') assert.equal(where[0], partitionForKey(`refresh_views:${job.payload.scope}`, 2), `job ${i}`);
    const envelope = JSON.parse((await client.hget(fresh.keys(queue, where[0]!).jobs, out[i]!.id))!) as Job;
    assert.equal(envelope.kind, job.kind, `job ${i}`);
    if (job.kind === 'refresh_views') assert.equal((envelope.payload as { scope?: string }).scope, job.payload.scope, `job ${i}`);
    else assert.equal((envelope.payload as { matchId?: number }).matchId, (job.payload as { matchId: number }).matchId, `job ${i}`);
  }
});

test('the partition count is read again every partitionRefreshMs; a bad count is refused, naming the queue and the value', async () => {
  const slow = new TallyProducer(client, { partitionRefreshMs: 60_000 });
  const quick = new TallyProducer(client, { partitionRefreshMs: 1000 });
  assert.equal(await slow.partitions('scoring'), 1);
  assert.equal(await quick.partitions('scoring'), 1);
  partition('scoring', 2);
  // Within the refresh time both still route by the count they read.
  for (let i = 0; i < 4; i++) {
    await slow.enqueueScoreMatch(i + 1);
    await quick.enqueueScoreMatch(i + 10);
  }
  assert.deepStrictEqual(await readyPerPartition(slow, 'scoring', 2), [8, 0]);
  await sleep(1100);
  for (let i = 0; i < 4; i++) {
    await slow.enqueueScoreMatch(i + 20, { id: idIn(1, 2, `slow-${i}`) });
    await quick.enqueueScoreMatch(i + 30, { id: idIn(i % 2, 2, `quick-${i}`) });
  }
  // The slow one still writes to partition 0 only (even ids that hash to
  // partition 1); the quick one spreads by id.
  assert.deepStrictEqual(await readyPerPartition(slow, 'scoring', 2), [14, 2]);
  assert.equal(await slow.partitions('scoring'), 1);
  assert.equal(await quick.partitions('scoring'), 2);
  // A producer that never read the count routes by the new one at once.
  assert.equal(await new TallyProducer(client).partitions('scoring'), 2);

  const control = new TallyProducer(client).keys('scoring').control;
  for (const bad of ['0', '65', 'x', '-1', '2.5', '']) {
    await client.hset(control, 'partitions', bad);
    const producer = new TallyProducer(client);
    const expected = (e: unknown): boolean => {
      assert.ok(e instanceof Error);
      assert.match(e.message, /^tally: queue "scoring" has an invalid partition count /);
      assert.ok(e.message.includes(`invalid partition count ${JSON.stringify(bad)} in its control hash (expected 1 to 64)`), e.message);
      return true;
    };
    await assert.rejects(producer.enqueueScoreMatch(99), expected, `count ${JSON.stringify(bad)}`);
    await assert.rejects(producer.queueStats('scoring'), expected);
    // The Rust side refuses it too.
    assert.throws(() => tally(['queue', 'stats', '--queue', 'scoring'], env()), /invalid partition count/);
  }
  await client.hset(control, 'partitions', '64');
  assert.equal((await new TallyProducer(client).queueStats('scoring')).partitions, 64);
});

const CLAIM = engineScript('claim_jobs.lua');

/** Claims up to `max` jobs of one partition as a worker does (claim_jobs.lua). */
async function claim(producer: TallyProducer, queue: string, p: number, max: number): Promise<void> {
  const k = producer.keys(queue, p);
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
    k.control,
  ];
  await client.eval(CLAIM, keys.length, ...keys, `n:req-${queue}-${p}`, 60_000, max, max);
}

test('queueStats adds up every partition and reports the count, as tally queue stats --json does', async () => {
  tally(['queue', 'limit', 'stats', '7'], env());
  partition('stats', 3);
  const producer = new TallyProducer(client);
  // By id over the partitions in turn: high, normal, low, then again.
  const priorities = ['high', 'normal', 'low', 'normal', 'normal', 'high'] as const;
  for (const [i, priority] of priorities.entries()) {
    await producer.enqueuePointsCalculation(i + 1, priority, { id: idIn(i % 3, 3, `points-${i}`) });
  }
  await producer.enqueuePointsCalculation(50, 'normal', { delayMs: 60_000 });
  await producer.enqueuePointsCalculation(51, 'normal', { delayMs: 60_000 });
  // The oldest ready job waits in a partition other than 0.
  const old = new TallyProducer(client, { now: () => Date.now() - 120_000 });
  const aged = await old.enqueueViewRefresh('standings');
  const agedIn = partitionForKey('refresh_views:standings', 3);
  assert.notEqual(agedIn, 0);
  assert.deepStrictEqual(await partitionsHolding(producer, 'stats', 3, aged.id), [agedIn]);
  // Jobs in flight in two partitions, a dead entry in the last one.
  await claim(producer, 'stats', 1, 1);
  await claim(producer, 'stats', 2, 1);
  await client.zadd(producer.keys('stats', 2).dead, Date.now(), 'some-dead-job');
  tally(['queue', 'pause', 'stats'], env());

  const mine = await producer.queueStats('stats');
  assert.equal(mine.partitions, 3);
  assert.equal(mine.inFlight, 2);
  assert.equal(mine.dead, 1);
  assert.equal(mine.scheduled, 2);
  assert.equal(mine.ready, 5);
  assert.equal(mine.counters.enqueued, 9);
  assert.deepStrictEqual([mine.paused, mine.limit], [true, 7], 'the pause on every partition, the shares added up');
  assert.ok(mine.oldestReadyAgeMs !== null && mine.oldestReadyAgeMs >= 120_000, `oldest ${mine.oldestReadyAgeMs}`);
  // Per-partition shares of the limit, as the Rust engine split it.
  assert.deepStrictEqual(
    await Promise.all([0, 1, 2].map((p) => client.hget(producer.keys('stats', p).control, 'limit'))),
    ['3', '2', '2'],
  );

  const cli = JSON.parse(tally(['--json', 'queue', 'stats'], env())) as { queues: Record<string, QueueStats> };
  const all = await producer.queueStats();
  for (const name of ['scoring', 'stats'] as const) {
    const { oldestReadyAgeMs: a, ...mineRest } = all[name];
    const { oldestReadyAgeMs: b, ...theirsRest } = cli.queues[name]!;
    assert.deepStrictEqual(mineRest, theirsRest, name);
    assert.equal(a === null, b === null, name);
    if (a !== null && b !== null) assert.ok(Math.abs(a - b) < 10_000, `${name}: oldest ${a} here, ${b} from the CLI`);
  }
  assert.equal(all.scoring.partitions, 1);
});
