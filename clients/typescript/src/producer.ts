/**
 * The producer: enqueues typed jobs by running tally's own enqueue script
 * (`crates/tally-queue/lua/_shared.lua` + `enqueue_jobs.lua`, bundled at build
 * time) on the app's ioredis client, single node or Cluster, and reads queue
 * statistics. A partitioned queue gets each job on one partition, chosen as
 * the Rust producer chooses (`docs/PROTOCOL.md`, "Partitions"), and its
 * statistics add the partitions up. Everything is checked before anything
 * is sent: a refused job throws {@link TallyInputError} and Redis sees nothing of its batch.
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
import { ENQUEUE_CHUNK, MAX_PARTITIONS, PARTITIONS_FIELD, QueueKeys, WAKE_CAP, checkQueueName, partitionForKey } from './keys.js';
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
  /**
   * How long a queue's partition count (`tally queue partitions`) is used
   * before it is read from Redis again, in ms (the Rust
   * `QueueConfig::partition_refresh`). A queue that grows is routed over its
   * new partitions within this time. Default 5000; 0 reads it on every call.
   */
  readonly partitionRefreshMs?: number;
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
  /** Most jobs in flight across every worker (`tally queue limit`), null when unlimited; of a partitioned queue, the sum of its partitions' shares. */
  readonly limit: number | null;
  /** How many partitions the queue has (`tally queue partitions`; 1 unless partitioned); every figure above adds them up. */
  readonly partitions: number;
}

const PRIORITY_LETTER = { high: 'h', normal: 'n', low: 'l' } as const;
const PRIORITIES = ['high', 'normal', 'low'] as const;

interface Prepared {
  readonly envelope: Envelope;
  readonly body: string;
  readonly dueMs: number;
}

/** The partition count from the `partitions` field of partition 0's `control` hash, as the Rust `parse_count`. */
function parsePartitionCount(queue: string, raw: string | null): number {
  if (raw === null) return 1;
  const count = /^\+?[0-9]+$/.test(raw) ? Number(raw) : Number.NaN;
  if (!(count >= 1 && count <= MAX_PARTITIONS)) {
    throw new Error(
      `tally: queue ${JSON.stringify(queue)} has an invalid partition count ${JSON.stringify(raw)} in its control hash ` +
        `(expected 1 to ${MAX_PARTITIONS})`,
    );
  }
  return count;
}

/** A whole number >= 0 from a hash field, else null (as the Rust engine reads `limit`). */
function wholeNumber(raw: string | null | undefined): number | null {
  return typeof raw === 'string' && /^\+?[0-9]+$/.test(raw) ? Number(raw) : null;
}

/** One partition's figures, before they are added up. */
interface PartitionStats {
  readonly ready: readonly [number, number, number];
  readonly scheduled: number;
  readonly inFlight: number;
  readonly dead: number;
  readonly oldestReadyAgeMs: number | null;
  readonly counters: Record<string, string>;
  readonly paused: boolean;
  readonly limit: number | null;
}

const COUNTERS = ['enqueued', 'completed', 'failed', 'retried', 'dead', 'recovered'] as const;

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
  readonly partitionRefreshMs: number;
  private readonly newId: () => string;
  /** Partition counts by queue: the read (or the read under way) and when it started. */
  private readonly partitionCounts = new Map<string, { readonly count: Promise<number>; readonly readAt: number }>();

  constructor(
    readonly redis: RedisClient,
    options: ProducerOptions = {},
  ) {
    this.prefix = options.prefix ?? 'tally';
    this.maxEnvelopeBytes = options.maxEnvelopeBytes ?? 1024 * 1024;
    this.now = options.now ?? Date.now;
    this.newId = options.newId ?? (() => uuidv7(this.now()));
    this.partitionRefreshMs = options.partitionRefreshMs ?? 5000;
    const problems: string[] = [];
    if (typeof this.prefix !== 'string' || this.prefix === '' || /[{}]/.test(this.prefix)) {
      problems.push(`prefix: must be non-empty and free of braces, got ${JSON.stringify(this.prefix)}`);
    }
    if (!Number.isSafeInteger(this.maxEnvelopeBytes) || this.maxEnvelopeBytes < 1) {
      problems.push(`maxEnvelopeBytes: must be a whole number >= 1, got ${String(this.maxEnvelopeBytes)}`);
    }
    if (typeof this.partitionRefreshMs !== 'number' || !Number.isFinite(this.partitionRefreshMs) || this.partitionRefreshMs < 0) {
      problems.push(`partitionRefreshMs: must be a finite number >= 0, got ${String(this.partitionRefreshMs)}`);
    }
    if (problems.length > 0) throw new TallyInputError('producer options', problems);
  }

  /** Key names of a queue (of one of its partitions, 0 by default: all of a queue that is not partitioned) under this producer's prefix. */
  keys(queue: string, partition = 0): QueueKeys {
    return new QueueKeys(this.prefix, queue, partition);
  }

  /**
   * How many partitions `queue` has (1 unless it was partitioned with
   * `tally queue partitions`), as read from Redis at most
   * `partitionRefreshMs` ago.
   *
   * @throws {Error} when the stored count is not a whole number from 1 to 64
   */
  async partitions(queue: string): Promise<number> {
    checkQueueName(queue);
    const now = performance.now();
    const known = this.partitionCounts.get(queue);
    if (known !== undefined && now - known.readAt < this.partitionRefreshMs) return known.count;
    // One read at a time per queue; a failed read is not remembered.
    const count = Promise.resolve(this.redis.hget(this.keys(queue).control, PARTITIONS_FIELD)).then((raw) =>
      parsePartitionCount(queue, raw),
    );
    const entry = { count, readAt: now };
    this.partitionCounts.set(queue, entry);
    count.catch(() => {
      if (this.partitionCounts.get(queue) === entry) this.partitionCounts.delete(queue);
    });
    return count;
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
   * per queue partition and thousand jobs (a job with a dedup key goes to
   * the partition its key hashes to, the others to the one their id hashes
   * to). Every job is
   * checked first; one refused job refuses the batch and nothing is sent.
   * Calls for different queues or partitions are separate, so a connection
   * lost half way may leave part of a batch enqueued (results are in the
   * order of `jobs`).
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

  /**
   * The partition of a job: by its dedup key, else by its id (as the Rust
   * engine), so a job sent again with the same key or id reaches the
   * partition holding its first copy.
   */
  private route(dedupKey: string | undefined, id: string, partitions: number): number {
    return partitionForKey(dedupKey ?? id, partitions);
  }

  /**
   * Sends prepared jobs, each to its queue's partition (by dedup key, else
   * by id), grouped by hash tag, a thousand per script call.
   */
  private async push(prepared: readonly Prepared[], now: number): Promise<Enqueued[]> {
    const queues = [...new Set(prepared.map((job) => job.envelope.queue))];
    const counts = new Map(await Promise.all(queues.map(async (queue) => [queue, await this.partitions(queue)] as const)));
    const groups = new Map<string, { keys: QueueKeys; items: { index: number; job: Prepared }[] }>();
    prepared.forEach((job, index) => {
      const { queue, dedupKey, id } = job.envelope;
      const keys = this.keys(queue, this.route(dedupKey, id, counts.get(queue) ?? 1));
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

  /** A queue's statistics: each partition's (one pipeline per partition, all at once), added up as the Rust `QueueAdmin::stats`. */
  private async oneQueueStats(queue: string): Promise<QueueStats> {
    checkQueueName(queue);
    const count = await this.partitions(queue);
    const parts = await Promise.all(Array.from({ length: count }, (_, p) => this.partitionStats(this.keys(queue, p))));
    const sum = (pick: (p: PartitionStats) => number): number => parts.reduce((n, p) => n + pick(p), 0);
    const ages = parts.map((p) => p.oldestReadyAgeMs).filter((age): age is number => age !== null);
    const limits = parts.map((p) => p.limit).filter((limit): limit is number => limit !== null);
    const counter = (name: (typeof COUNTERS)[number]): number => sum((p) => Number(p.counters[name] ?? 0));
    const [high, normal, low] = [0, 1, 2].map((i) => sum((p) => p.ready[i] ?? 0)) as [number, number, number];
    return {
      ready: high + normal + low,
      readyByPriority: { high, normal, low },
      scheduled: sum((p) => p.scheduled),
      inFlight: sum((p) => p.inFlight),
      dead: sum((p) => p.dead),
      oldestReadyAgeMs: ages.length > 0 ? Math.max(...ages) : null,
      counters: {
        enqueued: counter('enqueued'),
        completed: counter('completed'),
        failed: counter('failed'),
        retried: counter('retried'),
        dead: counter('dead'),
        recovered: counter('recovered'),
      },
      // A pause is written to every partition, a limit split between them.
      paused: parts.some((p) => p.paused),
      limit: limits.length > 0 ? limits.reduce((a, b) => a + b, 0) : null,
      partitions: count,
    };
  }

  /** One partition's figures: one pipeline on its slot, then the envelopes at the heads of its ready lists. */
  private async partitionStats(keys: QueueKeys): Promise<PartitionStats> {
    const ready = PRIORITIES.map((p) => keys.ready(p));
    const pipeline = this.redis.pipeline();
    for (const key of ready) pipeline.llen(key);
    pipeline.zcard(keys.scheduled).zcard(keys.leases).zcard(keys.dead).hgetall(keys.stats);
    for (const key of ready) pipeline.lindex(key, 0);
    pipeline.hmget(keys.control, 'paused', 'limit');
    const replies = (await pipeline.exec()) ?? [];
    const values = replies.map(([error, value]) => {
      if (error) throw error;
      return value;
    });
    const n = (i: number): number => Number(values[i] ?? 0);
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
      ready: [n(0), n(1), n(2)],
      scheduled: n(3),
      inFlight: n(4),
      dead: n(5),
      oldestReadyAgeMs,
      counters: (values[6] ?? {}) as Record<string, string>,
      paused: paused === '1',
      limit: wholeNumber(limit),
    };
  }
}
