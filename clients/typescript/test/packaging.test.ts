/**
 * The two builds: `dist/esm` loads with `import`, `dist/cjs` with `require`
 * (in a separate CommonJS process), both export the same names, and the
 * CommonJS build enqueues through a real Redis.
 */

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { PACKAGE_DIR } from './support/repo.js';
import { startRedis, stopAll, type RedisServer } from './support/servers.js';

let redis: RedisServer;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis?.stop();
  await stopAll();
});

test('the package resolves to the ESM build for import and the CommonJS build for require', async () => {
  const manifest = JSON.parse(readFileSync(join(PACKAGE_DIR, 'package.json'), 'utf8')) as {
    exports: { '.': { import: { default: string }; require: { default: string } } };
    dependencies?: Record<string, string>;
  };
  assert.equal(manifest.dependencies, undefined, 'no runtime dependency: ioredis and @opentelemetry/api are peers');
  const esm = (await import(join(PACKAGE_DIR, manifest.exports['.'].import.default))) as Record<string, unknown>;
  const script = `
    const tally = require(${JSON.stringify(join(PACKAGE_DIR, manifest.exports['.'].require.default))});
    const { Redis } = require('ioredis');
    (async () => {
      const redis = new Redis(${JSON.stringify(redis.url)});
      const producer = new tally.TallyProducer(redis);
      const first = await producer.enqueueViewRefresh('leaderboard');
      const again = await producer.enqueueViewRefresh('leaderboard');
      let refused = '';
      try { await producer.enqueueScoreMatch(-1); } catch (e) { refused = e instanceof tally.TallyInputError ? e.message : String(e); }
      console.log(JSON.stringify({ names: Object.keys(tally).sort(), first, again, refused }));
      redis.disconnect();
    })();`;
  // require() of an ES module fails on Node 20: this loads the CommonJS build.
  const r = spawnSync(process.execPath, ['-e', script], { cwd: PACKAGE_DIR, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { names: string[]; first: { id: string }; again: unknown; refused: string };
  assert.deepStrictEqual(out.names, Object.keys(esm).filter((n) => n !== 'default').sort());
  assert.deepStrictEqual(out.again, { id: out.first.id, deduplicated: true });
  assert.match(out.refused, /^score_match: payload\.matchId: must be >= 1, got -1$/);
  const envelope = await redis.client().hget('tally:{stats}:jobs', out.first.id);
  assert.equal(JSON.parse(envelope!).payload.scope, 'leaderboard');
});

test('the example runs against a Redis and leaves one deduplicated refresh waiting', async () => {
  const client = redis.client();
  await client.flushall();
  const r = spawnSync(process.execPath, [join(PACKAGE_DIR, 'examples', 'enqueue.mjs'), '5'], {
    cwd: PACKAGE_DIR,
    encoding: 'utf8',
    env: { ...process.env, REDIS_URL: redis.url, TALLY_QUEUE_PREFIX: '' },
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /the same request again: +job \S+ \(deduplicated: true\)/);
  assert.match(r.stdout, /refused before Redis: +score_match: payload\.matchId: must be >= 1, got -1/);
  assert.equal(await client.llen('tally:{stats}:ready:normal'), 1);
  assert.equal(await client.llen('tally:{scoring}:ready:normal'), 1);
});
