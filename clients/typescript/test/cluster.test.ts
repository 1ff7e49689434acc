/**
 * The package on a real Redis Cluster (three masters started here with
 * `redis-cli --cluster create`), through ioredis's Cluster client: jobs of
 * queues in different slots, dedup and queueStats, and the Rust side (the
 * `tally` CLI with a `redis+cluster://` URL) reading what the package wrote.
 */

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, test } from 'node:test';

import { Cluster } from 'ioredis';

import { TallyProducer, partitionForKey } from '../src/index.js';
import { tally } from './support/repo.js';
import { startRedis, stopAll, waitFor, type RedisServer } from './support/servers.js';

let nodes: RedisServer[] = [];
let cluster: Cluster;

before(async () => {
  for (let i = 0; i < 3; i++) {
    nodes.push(await startRedis(['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf']));
  }
  const create = spawnSync(
    'redis-cli',
    ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'],
    { encoding: 'utf8' },
  );
  assert.equal(create.status, 0, `redis-cli --cluster create failed:\n${create.stdout}${create.stderr}`);
  for (const node of nodes) {
    const probe = node.client();
    await waitFor(`cluster_state:ok on ${node.port}`, undefined, async () =>
      String(await probe.call('CLUSTER', 'INFO')).includes('cluster_state:ok'),
    );
  }
  cluster = new Cluster(nodes.map((n) => ({ host: '127.0.0.1', port: n.port })));
});

after(async () => {
  cluster?.disconnect();
  for (const node of nodes) await node.stop();
  await stopAll();
  nodes = [];
});

test('jobs, dedup and queueStats on a cluster, read back by the Rust CLI', async () => {
  const producer = new TallyProducer(cluster);
  // The two queues hash to different slots (and masters).
  const slot = async (key: string): Promise<number> => Number(await cluster.call('CLUSTER', 'KEYSLOT', key));
  assert.notEqual(await slot(producer.keys('scoring').jobs), await slot(producer.keys('stats').jobs));

  const one = await producer.enqueueScoreMatch(17);
  assert.equal(one.deduplicated, false);
  const batch = await producer.enqueueBatch([
    { kind: 'score_match', payload: { matchId: 18 } },
    { kind: 'score_match', payload: { matchId: 19 } },
  ]);
  assert.equal(batch.length, 2);
  const refresh = await producer.enqueueViewRefresh('all');
  assert.deepStrictEqual(await producer.enqueueViewRefresh('all'), { id: refresh.id, deduplicated: true });
  await producer.enqueuePointsCalculation(17, 'high');

  const stats = await producer.queueStats();
  assert.equal(stats.scoring.ready, 3);
  assert.deepStrictEqual(stats.stats.readyByPriority, { high: 1, normal: 1, low: 0 });

  // The Rust engine, connected to the same cluster, sees the same queues.
  const url = `redis+cluster://${nodes.map((n) => `127.0.0.1:${n.port}`).join(',')}`;
  const cli = JSON.parse(tally(['--json', 'queue', 'stats'], { REDIS_URL: url, TALLY_QUEUE_PREFIX: 'tally' })) as {
    queues: Record<string, { ready: number; readyByPriority: Record<string, number> }>;
  };
  assert.equal(cli.queues['scoring']?.ready, 3);
  assert.deepStrictEqual(cli.queues['stats']?.readyByPriority, { high: 1, normal: 1, low: 0 });
});

test('a partitioned queue on a cluster: its partitions on several masters, jobs spread and keyed, queueStats and the Rust CLI agree', async () => {
  const url = `redis+cluster://${nodes.map((n) => `127.0.0.1:${n.port}`).join(',')}`;
  const env = { REDIS_URL: url, TALLY_QUEUE_PREFIX: 'tallyp' };
  const grown = JSON.parse(tally(['--json', 'queue', 'partitions', 'stats', '4'], env)) as { partitions: number };
  assert.equal(grown.partitions, 4);
  const producer = new TallyProducer(cluster, { prefix: 'tallyp' });
  assert.equal(await producer.partitions('stats'), 4);
  // The partitions' hash tags sit on more than one master.
  const owners = new Set<string>();
  for (let p = 0; p < 4; p++) {
    const slot = Number(await cluster.call('CLUSTER', 'KEYSLOT', producer.keys('stats', p).jobs));
    const shards = (await cluster.call('CLUSTER', 'SLOTS')) as [number, number, [string, number]][];
    const owner = shards.find(([from, to]) => slot >= from && slot <= to);
    owners.add(String(owner?.[2][1]));
  }
  assert.ok(owners.size >= 2, `the 4 partitions are served by ${owners.size} master(s)`);

  const jobs = Array.from({ length: 40 }, (_, i) => ({ kind: 'calculate_points' as const, payload: { matchId: i + 1 } }));
  const out = await producer.enqueueBatch([...jobs, { kind: 'refresh_views', payload: { scope: 'leaderboard' } }]);
  assert.equal(out.length, 41);
  const lens = await Promise.all([0, 1, 2, 3].map((p) => cluster.llen(producer.keys('stats', p).ready('normal'))));
  // Each job on the partition its id (the refresh: its key) hashes to.
  const expected = [0, 0, 0, 0];
  out.forEach((e, i) => expected[partitionForKey(i === 40 ? 'refresh_views:leaderboard' : e.id, 4)]! += 1);
  assert.deepStrictEqual(lens, expected);
  assert.ok(lens.filter((n) => n > 0).length >= 2, `41 jobs over several partitions: ${lens.join(', ')}`);
  assert.deepStrictEqual(await producer.enqueueViewRefresh('leaderboard'), { id: out[40]!.id, deduplicated: true });

  const mine = await producer.queueStats('stats');
  assert.deepStrictEqual([mine.ready, mine.partitions, mine.counters.enqueued], [41, 4, 41]);
  const cli = JSON.parse(tally(['--json', 'queue', 'stats', '--queue', 'stats'], env)) as {
    queues: { stats: { ready: number; partitions: number; counters: { enqueued: number } } };
  };
  assert.deepStrictEqual([cli.queues.stats.ready, cli.queues.stats.partitions, cli.queues.stats.counters.enqueued], [41, 4, 41]);
});
