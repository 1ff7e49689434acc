/**
 * The producer: enqueues typed jobs by running tally's own enqueue script
 * (`crates/tally-queue/lua/_shared.lua` + `enqueue_jobs.lua`, bundled at build
 * time) on the app's ioredis client, single node or Cluster, and reads queue
 * statistics. Everything is checked before anything is sent: a refused job
 * throws {@link TallyInputError} and Redis sees nothing of its batch.
 *
 * @module
 */

import type { Cluster, Redis } from 'ioredis';

import { buildEnvelope, encodeEnvelope } from './envelope.js';
import { TallyInputError } from './errors.js';
import { ENQUEUE_JOBS_LUA, ENQUEUE_JOBS_SHA1, ENQUEUE_KEY_PARTS } from './generated/enqueue-script.js';
import {
  QUEUE_OF,
  type Backoff,
  type CalculatePointsPayload,
  type Envelope,
  type Job,
  type Priority,
  type QueueName,
  type RefreshViewsPayload,
  type TraceContext,
} from './generated/jobs.js';
import { ENQUEUE_CHUNK, QueueKeys, WAKE_CAP, checkQueueName } from './keys.js';
import { activeTraceContext } from './trace.js';
import { uuidv7 } from './uuid.js';

/** The Redis clients the producer works with: an ioredis client or cluster client. */
export type RedisClient = Redis | Cluster;

/** Settings of a producer. */
export interface ProducerOptions {
  /** First part of every key, `<prefix>:{<queue>}:…`; the services' `TALLY_QUEUE_PREFIX`. Default `tally`. */
  readonly prefix?: string;
  /** Largest encoded envelope accepted, in bytes (the Rust `QueueConfig::max_envelope_bytes`). Default 1 MiB. */
  readonly maxEnvelopeBytes?: number;
  /** This process's clock, ms since the epoch (for tests). Default `Date.now`. */
  readonly now?: () => number;
  /** New job ids (for tests). Default: UUID v7, as the Rust producer. */
  readonly newId?: () => string;
}

/** Options of one enqueue; all optional. */
export interface EnqueueOptions {
  /** Job id to use instead of a fresh UUID v7. An id already live in the queue is not added twice: the enqueue reports `deduplicated: true` with that id. */
  readonly id?: string;
  /** Start no earlier than this many ms from now (measured on Redis's clock). */
  readonly delayMs?: number;
  /** Start no earlier than this time, read on this process's clock (wins over `delayMs`). */
  readonly runAt?: Date | number;
  /** Priority override (the job type's own otherwise). */
  readonly priority?: Priority;
  /** Dedup key override: a key, or `null` never to coalesce. Undefined: the job type's own (`refresh_views:<scope>` for view refreshes, none otherwise). */
  readonly dedupKey?: string | null;
  /** Attempts override: failures allowed, and separately crashes allowed (default 3). */
  readonly maxAttempts?: number;
  /** Backoff override, merged over the default (exponential, 5 s base, 10 min cap, no jitter). */
  readonly backoff?: Partial<Backoff>;
  /** Per-attempt timeout override in ms (default 120000). */
  readonly timeoutMs?: number;
  /** Trace context to carry; `false` for none. Default: the active OpenTelemetry span's, when `@opentelemetry/api` is installed. */
  readonly trace?: TraceContext | false;
}

/** Options shared by every job of a batch (each job gets its own fresh id). */
export type BatchOptions = Omit<EnqueueOptions, 'id'>;

/** What happened to an enqueued job. */
export interface Enqueued {
  /** The id the job lives under: its own, or the waiting job's when coalesced into it. */
  readonly id: string;
  /** True when a waiting job with the same dedup key (or the same id) absorbed this enqueue. */
  readonly deduplicated: boolean;
}

/** Ready jobs per priority. */
export interface ReadyByPriority {
  readonly high: number;
  readonly normal: number;
  readonly low: number;
}

/** Lifetime counters of a queue. */
export interface QueueCounters {
  readonly enqueued: number;
  readonly completed: number;
  readonly failed: number;
  readonly retried: number;
  readonly dead: number;
  readonly recovered: number;
}

/** A snapshot of one queue, the shape of `tally queue stats --json` (Rust `QueueStats`). */
export interface QueueStats {
  /** Ready jobs, all priorities. */
  readonly ready: number;
  /** Ready jobs per priority. */
  readonly readyByPriority: ReadyByPriority;
  /** Delayed jobs and retries waiting for their due time. */
  readonly scheduled: number;
  /** Jobs claimed by a worker. */
  readonly inFlight: number;
  /** Jobs in the dead set. */
  readonly dead: number;
  /** Age of the oldest job at the head of a ready list, from its `createdAtMs` (null when none). */
  readonly oldestReadyAgeMs: number | null;
  /** Lifetime counters. */
  readonly counters: QueueCounters;
  /** Whether an operator paused the queue (`tally queue pause`): jobs are accepted, none is claimed. */
  readonly paused: boolean;
  /** Most jobs in flight across every worker (`tally queue limit`), null when unlimited. */
  readonly limit: number | null;
}

const PRIORITY_LETTER = { high: 'h', normal: 'n', low: 'l' } as const;
const PRIORITIES = ['high', 'normal', 'low'] as const;

interface Prepared {
  readonly envelope: Envelope;
  readonly body: string;
  readonly dueMs: number;
}

function checkNumber(name: string, value: number | undefined, problems: string[]): void {
  if (value !== undefined && (typeof value !== 'number' || !Number.isFinite(value) || value < 0)) {
    problems.push(`${name}: must be a finite number >= 0, got ${String(value)}`);
  }
}

/**
 * Enqueues tally jobs on an ioredis client (or cluster client) the app
 * already has, and reads queue statistics. Holds no connection of its own:
 * closing the client is the app's business.
 */
export class TallyProducer {
  readonly prefix: string;
  readonly maxEnvelopeBytes: number;
  private readonly now: () => number;
  private readonly newId: () => string;

  constructor(
    readonly redis: RedisClient,
    options: ProducerOptions = {},
  ) {
    this.prefix = options.prefix ?? 'tally';
    this.maxEnvelopeBytes = options.maxEnvelopeBytes ?? 1024 * 1024;
    this.now = options.now ?? Date.now;
    this.newId = options.newId ?? (() => uuidv7(this.now()));
    const problems: string[] = [];
    if (typeof this.prefix !== 'string' || this.prefix === '' || /[{}]/.test(this.prefix)) {
      problems.push(`prefix: must be non-empty and free of braces, got ${JSON.stringify(this.prefix)}`);
    }
    if (!Number.isSafeInteger(this.maxEnvelopeBytes) || this.maxEnvelopeBytes < 1) {
      problems.push(`maxEnvelopeBytes: must be a whole number >= 1, got ${String(this.maxEnvelopeBytes)}`);
    }
    if (problems.length > 0) throw new TallyInputError('producer options', problems);
  }

  /** Key names of a queue under this producer's prefix. */
  keys(queue: string): QueueKeys {
    return new QueueKeys(this.prefix, queue);
  }

  /**
   * Enqueues one job: now, after `delayMs`, or at `runAt`.
   *
   * @throws {TallyInputError} before anything reaches Redis, when the job or an option is refused
   */
  async enqueue(job: Job, options: EnqueueOptions = {}): Promise<Enqueued> {
    const trace = await this.traceFor(options);
    const now = this.now();
    const prepared = this.prepare(job, options.id ?? this.newId(), now, options, trace);
    const [result] = await this.push([prepared], now);
    if (result === undefined) throw new Error('tally: the enqueue script returned no result');
    return result;
  }

  /**
   * Enqueues many jobs, of any kinds, with the same options: one script call
   * per queue and thousand jobs. Every job is checked first; one refused job
   * refuses the batch and nothing is sent. Calls for different queues are
   * separate, so a connection lost half way may leave part of a batch
   * enqueued (results are in the order of `jobs`).
   *
   * @throws {TallyInputError} before anything reaches Redis, when a job or an option is refused
   */
  async enqueueBatch(jobs: readonly Job[], options: BatchOptions = {}): Promise<Enqueued[]> {
    if (!Array.isArray(jobs)) throw new TallyInputError('enqueueBatch', ['jobs: must be an array']);
    if ('id' in options) throw new TallyInputError('enqueueBatch', ['id: a batch gives each job a fresh id']);
    const trace = await this.traceFor(options);
    const now = this.now();
    const prepared = jobs.map((job, i) => {
      try {
        return this.prepare(job, this.newId(), now, options, trace);
      } catch (e) {
        if (e instanceof TallyInputError) throw new TallyInputError(`jobs[${i}]`, [e.message]);
        throw e;
      }
    });
    return this.push(prepared, now);
  }

  /** Enqueues `ScoreMatch` for a finished match (then `CalculatePoints` and `RefreshViews` follow, enqueued by the workers). */
  enqueueScoreMatch(matchId: number, options?: EnqueueOptions): Promise<Enqueued> {
    return this.enqueue({ kind: 'score_match', payload: { matchId } }, options);
  }

  /** Enqueues `CalculatePoints` for a scored match (normally the scoring worker's job). */
  enqueuePointsCalculation(
    matchId: number,
    priority?: CalculatePointsPayload['priority'],
    options?: EnqueueOptions,
  ): Promise<Enqueued> {
    const payload: CalculatePointsPayload = priority === undefined ? { matchId } : { matchId, priority };
    return this.enqueue({ kind: 'calculate_points', payload }, options);
  }

  /** Enqueues a `RefreshViews` of a scope (default `all`), coalesced into one already waiting for that scope. */
  enqueueViewRefresh(scope?: RefreshViewsPayload['scope'], options?: EnqueueOptions): Promise<Enqueued> {
    const payload: RefreshViewsPayload = scope === undefined ? {} : { scope };
    return this.enqueue({ kind: 'refresh_views', payload }, options);
  }

  /** Statistics of every queue of the contract, by name. */
  queueStats(): Promise<Record<QueueName, QueueStats>>;
  /** Statistics of one queue (read-only: lengths, counters and the oldest ready job's age). */
  queueStats(queue: string): Promise<QueueStats>;
  async queueStats(queue?: string): Promise<QueueStats | Record<string, QueueStats>> {
    if (queue !== undefined) return this.oneQueueStats(queue);
    const names = [...new Set(Object.values(QUEUE_OF))].sort();
    const stats = await Promise.all(names.map(async (name) => [name, await this.oneQueueStats(name)] as const));
    return Object.fromEntries(stats);
  }

  private async traceFor(options: BatchOptions): Promise<TraceContext | undefined> {
    if (options.trace === false) return undefined;
    if (options.trace !== undefined) return options.trace;
    return activeTraceContext();
  }

  private prepare(
    job: Job,
    id: string,
    now: number,
    options: BatchOptions,
    trace: TraceContext | undefined,
  ): Prepared {
    const problems: string[] = [];
    checkNumber('delayMs', options.delayMs, problems);
    if (options.runAt !== undefined) {
      const at = options.runAt instanceof Date ? options.runAt.getTime() : options.runAt;
      if (typeof at !== 'number' || !Number.isFinite(at)) {
        problems.push(`runAt: must be a valid Date or ms since the epoch, got ${String(options.runAt)}`);
      }
    }
    if (options.dedupKey !== undefined && options.dedupKey !== null && typeof options.dedupKey !== 'string') {
      problems.push(`dedupKey: must be a string or null, got ${String(options.dedupKey)}`);
    }
    if (typeof id !== 'string') problems.push(`id: must be a string, got ${String(id)}`);
    if (problems.length > 0) throw new TallyInputError('enqueue options', problems);

    const envelope = buildEnvelope(job, id, now, {
      priority: options.priority,
      dedupKey: options.dedupKey,
      maxAttempts: options.maxAttempts,
      backoff: options.backoff,
      timeoutMs: options.timeoutMs,
      trace,
    });
    const body = encodeEnvelope(envelope);
    const bytes = Buffer.byteLength(body, 'utf8');
    if (bytes > this.maxEnvelopeBytes) {
      throw new TallyInputError(envelope.kind, [
        `job ${JSON.stringify(id)} is ${bytes} bytes encoded, above the limit of ${this.maxEnvelopeBytes} bytes ` +
          '(maxEnvelopeBytes): pass a reference to large data, not the data',
      ]);
    }
    // As the Rust producer: an absolute time wins; a delay is counted from
    // `now`; 0 means now. The script moves both to Redis's clock by their
    // distance from `now`.
    let dueMs = 0;
    if (options.runAt !== undefined) {
      dueMs = Math.max(0, Math.floor(options.runAt instanceof Date ? options.runAt.getTime() : options.runAt));
    } else if (options.delayMs !== undefined) {
      dueMs = now + Math.floor(options.delayMs);
    }
    return { envelope, body, dueMs };
  }

  /** Sends prepared jobs, grouped by hash tag, a thousand per script call. */
  private async push(prepared: readonly Prepared[], now: number): Promise<Enqueued[]> {
    const groups = new Map<string, { keys: QueueKeys; items: { index: number; job: Prepared }[] }>();
    prepared.forEach((job, index) => {
      const keys = this.keys(job.envelope.queue);
      let group = groups.get(keys.tag);
      if (!group) {
        group = { keys, items: [] };
        groups.set(keys.tag, group);
      }
      group.items.push({ index, job });
    });
    const results: Enqueued[] = new Array<Enqueued>(prepared.length);
    const calls: Promise<void>[] = [];
    for (const { keys, items } of groups.values()) {
      for (let start = 0; start < items.length; start += ENQUEUE_CHUNK) {
        const chunk = items.slice(start, start + ENQUEUE_CHUNK);
        calls.push(
          this.runEnqueue(keys, chunk.map((c) => c.job), now).then((out) => {
            chunk.forEach((c, i) => {
              const r = out[i];
              if (r === undefined) throw new Error('tally: the enqueue script returned too few results');
              results[c.index] = r;
            });
          }),
        );
      }
    }
    await Promise.all(calls);
    return results;
  }

  private async runEnqueue(keys: QueueKeys, jobs: readonly Prepared[], now: number): Promise<Enqueued[]> {
    const keyNames = ENQUEUE_KEY_PARTS.map((part) => keys.part(part));
    const args: (string | number)[] = [String(now), keys.dueChannel, String(WAKE_CAP)];
    for (const { envelope, body, dueMs } of jobs) {
      args.push(
        envelope.id,
        body,
        PRIORITY_LETTER[envelope.policy.priority],
        String(dueMs),
        envelope.dedupKey ?? '',
      );
    }
    let reply: unknown;
    try {
      reply = await this.redis.evalsha(ENQUEUE_JOBS_SHA1, keyNames.length, ...keyNames, ...args);
    } catch (e) {
      // After a restart or SCRIPT FLUSH Redis no longer has the script:
      // send it whole (which also caches it again).
      if (!(e instanceof Error) || !e.message.startsWith('NOSCRIPT')) throw e;
      reply = await this.redis.eval(ENQUEUE_JOBS_LUA, keyNames.length, ...keyNames, ...args);
    }
    if (!Array.isArray(reply) || reply.length !== jobs.length * 2) {
      throw new Error(`tally: unexpected enqueue reply ${JSON.stringify(reply)}`);
    }
    const out: Enqueued[] = [];
    for (let i = 0; i < reply.length; i += 2) {
      out.push({ id: String(reply[i]), deduplicated: Number(reply[i + 1]) === 1 });
    }
    return out;
  }

  private async oneQueueStats(queue: string): Promise<QueueStats> {
    checkQueueName(queue);
    const keys = this.keys(queue);
    const ready = PRIORITIES.map((p) => keys.ready(p));
    const pipeline = this.redis.pipeline();
    for (const key of ready) pipeline.llen(key);
    pipeline.zcard(keys.scheduled).zcard(keys.leases).zcard(keys.dead).hgetall(keys.stats);
    for (const key of ready) pipeline.lindex(key, 0);
    pipeline.hmget(keys.part('control'), 'paused', 'limit');
    const replies = (await pipeline.exec()) ?? [];
    const values = replies.map(([error, value]) => {
      if (error) throw error;
      return value;
    });
    const n = (i: number): number => Number(values[i] ?? 0);
    const counters = (values[6] ?? {}) as Record<string, string>;
    const counter = (name: string): number => Number(counters[name] ?? 0);
    const heads = values.slice(7, 10).filter((v): v is string => typeof v === 'string');
    const [paused, limit] = (values[10] ?? [null, null]) as [string | null, string | null];
    let oldestReadyAgeMs: number | null = null;
    if (heads.length > 0) {
      const envelopes = await this.redis.hmget(keys.jobs, ...heads);
      const now = this.now();
      for (const text of envelopes) {
        if (text === null) continue;
        let created: unknown;
        try {
          created = (JSON.parse(text) as { createdAtMs?: unknown }).createdAtMs;
        } catch {
          continue; // unreadable envelope: the worker will send it to the dead set
        }
        if (typeof created !== 'number') continue;
        const age = Math.max(0, now - created);
        oldestReadyAgeMs = oldestReadyAgeMs === null ? age : Math.max(oldestReadyAgeMs, age);
      }
    }
    return {
      ready: n(0) + n(1) + n(2),
      readyByPriority: { high: n(0), normal: n(1), low: n(2) },
      scheduled: n(3),
      inFlight: n(4),
      dead: n(5),
      oldestReadyAgeMs,
      counters: {
        enqueued: counter('enqueued'),
        completed: counter('completed'),
        failed: counter('failed'),
        retried: counter('retried'),
        dead: counter('dead'),
        recovered: counter('recovered'),
      },
      paused: paused === '1',
      limit: limit === null ? null : Number(limit),
    };
  }
}
