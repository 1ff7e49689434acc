/**
 * `@tally/producer`: enqueue tally jobs from Node.js.
 *
 * ```ts
 * import { Redis } from 'ioredis';
 * import { TallyProducer } from '@tally/producer';
 *
 * const tally = new TallyProducer(new Redis(process.env.REDIS_URL));
 * await tally.enqueueScoreMatch(42);
 * ```
 *
 * The job types come from `docs/schemas/` and the enqueue script from
 * `crates/tally-queue/lua/`, both bundled at build time.
 *
 * @module
 */

export { DEFAULT_POLICY, KIND_RULES, REPAIR_POLICY, buildEnvelope, encodeEnvelope, type EnvelopeOptions } from './envelope.js';
export { TallyInputError } from './errors.js';
export {
  ENVELOPE_VERSION,
  KINDS,
  QUEUE_OF,
  SCHEMAS,
  type Backoff,
  type CalculatePointsEnvelope,
  type CalculatePointsPayload,
  type Envelope,
  type Job,
  type Kind,
  type PayloadOf,
  type Policy,
  type Priority,
  type QueueName,
  type RefreshViewsEnvelope,
  type RefreshViewsPayload,
  type ScoreMatchEnvelope,
  type ScoreMatchPayload,
  type TraceContext,
} from './generated/jobs.js';
export { MAX_PARTITIONS, QueueKeys, checkQueueName, fnv1a32, partitionForKey } from './keys.js';
export {
  TallyProducer,
  type BatchOptions,
  type EnqueueOptions,
  type Enqueued,
  type ProducerOptions,
  type QueueCounters,
  type QueueStats,
  type ReadyByPriority,
  type RedisClient,
} from './producer.js';
export { activeTraceContext } from './trace.js';
export { validate, type JsonSchema } from './validate.js';

import type { CalculatePointsPayload, RefreshViewsPayload } from './generated/jobs.js';

/** The old BullMQ app's name for the points job's data: `{ matchId, priority? }`. */
export type CalculateStatsJob = CalculatePointsPayload;

/** The old BullMQ app's name for the refresh job's data: `{ scope? }`. */
export type RefreshViewsJob = RefreshViewsPayload;

/**
 * The stats work's job kinds under the names the old app used. In BullMQ
 * these named the jobs (and, as fixed job ids, deduplicated them); in tally
 * a job's kind names it and `refresh_views` deduplicates by scope on its own.
 */
export const STATS_JOB_IDS = {
  CALCULATE_POINTS: 'calculate_points',
  REFRESH_VIEWS: 'refresh_views',
} as const satisfies Record<string, import('./generated/jobs.js').Kind>;
