/**
 * The envelopes this package writes into Redis equal the Rust golden files
 * (`crates/tally-jobs/tests/golden/`), field for field and byte for byte in
 * their compact form, for each job kind: the same example job, id, creation
 * time and trace context as `crates/tally-jobs/tests/contract.rs` uses.
 */

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';

import { KINDS, QUEUE_OF, TallyProducer, type Job } from '../src/index.js';
import { startRedis, stopAll, type RedisServer } from './support/servers.js';
import { golden } from './support/repo.js';

const ID = '0192f5a4-7b1e-7c3d-9a2b-5f6e7d8c9b0a';
const CREATED_AT_MS = 1_764_288_000_000;
const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

/** Rust's `Job::example()` of each kind. */
const EXAMPLES: Record<(typeof KINDS)[number], Job> = {
  score_match: { kind: 'score_match', payload: { matchId: 42 } },
  calculate_points: { kind: 'calculate_points', payload: { matchId: 42, priority: 'high' } },
  refresh_views: { kind: 'refresh_views', payload: { scope: 'all' } },
  repair_pipeline: { kind: 'repair_pipeline', payload: { graceSecs: 120, batch: 200 } },
};

let redis: RedisServer;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis?.stop();
  await stopAll();
});

async function written(producer: TallyProducer, job: Job, run: () => Promise<unknown>): Promise<string> {
  await run();
  const queue = producer.keys(QUEUE_OF[job.kind]);
  const body = await redis.client().hget(queue.jobs, ID);
  assert.ok(body, `no envelope under ${queue.jobs} ${ID}`);
  return body;
}

for (const kind of KINDS) {
  test(`${kind}: the envelope in Redis equals the Rust golden file`, async () => {
    const client = redis.client();
    await client.flushall();
    const producer = new TallyProducer(client, { now: () => CREATED_AT_MS });
    const job = EXAMPLES[kind];
    const body = await written(producer, job, () => producer.enqueue(job, { id: ID, trace: { traceparent: TRACEPARENT } }));
    const expected = golden(kind);
    // Field for field.
    assert.deepStrictEqual(JSON.parse(body), JSON.parse(expected));
    // And byte for byte: the Rust producer writes the compact form of the
    // same fields in the same order.
    assert.equal(body, JSON.stringify(JSON.parse(expected)));
  });
}

test('the traceparent of the active OpenTelemetry span is written, as in the golden file', async () => {
  const manager = new AsyncLocalStorageContextManager().enable();
  context.setGlobalContextManager(manager);
  try {
    const client = redis.client();
    await client.flushall();
    const producer = new TallyProducer(client, { now: () => CREATED_AT_MS });
    const span = trace.wrapSpanContext({
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      spanId: '00f067aa0ba902b7',
      traceFlags: 1,
    });
    const job = EXAMPLES.score_match;
    const body = await written(producer, job, () =>
      context.with(trace.setSpan(context.active(), span), () => producer.enqueue(job, { id: ID })),
    );
    assert.deepStrictEqual(JSON.parse(body), JSON.parse(golden('score_match')));

    // No active span: no trace; trace: false: none even with a span.
    await client.flushall();
    const none = await written(producer, job, () => producer.enqueue(job, { id: ID }));
    assert.equal(JSON.parse(none).trace, undefined);
    await client.flushall();
    const off = await written(producer, job, () =>
      context.with(trace.setSpan(context.active(), span), () => producer.enqueue(job, { id: ID, trace: false })),
    );
    assert.equal(JSON.parse(off).trace, undefined);
  } finally {
    context.disable();
  }
});
