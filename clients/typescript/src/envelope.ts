/**
 * Building the envelope of a job exactly as the Rust producer does
 * (`tally_jobs::Envelope::new` followed by the producer's options), checking
 * it against its kind's JSON Schema, and encoding it with the Rust field
 * order, so the bytes in Redis are the bytes the Rust producer would write.
 *
 * What the schemas cannot say is here, per kind, in {@link KIND_RULES}: the
 * dedup key a job type declares, its default policy and the priority it
 * takes from its payload (Rust's `Job::dedup_key` and `Job::policy`). The
 * table is typed by the generated kinds, so a kind added to the Rust
 * contract fails the build until it has an entry.
 *
 * @module
 */

import { TallyInputError } from './errors.js';
import {
  ENVELOPE_VERSION,
  KINDS,
  QUEUE_OF,
  SCHEMAS,
  type Backoff,
  type Envelope,
  type Job,
  type Kind,
  type Policy,
  type Priority,
  type TraceContext,
  type WirePayloadOf,
} from './generated/jobs.js';
import { isObject, validate, type JsonSchema } from './validate.js';

/** The default policy of every job type (Rust's `JobPolicy::DEFAULT`): the old BullMQ setup's. */
export const DEFAULT_POLICY: Policy = {
  maxAttempts: 3,
  backoff: { type: 'exponential', baseMs: 5000, maxMs: 600_000, jitter: false },
  timeoutMs: 120_000,
  priority: 'normal',
};

/** The policy of `repair_pipeline` jobs (Rust's `RepairPipeline::POLICY`): five attempts from 5 s, capped at a minute, one-minute timeout. */
export const REPAIR_POLICY: Policy = {
  maxAttempts: 5,
  backoff: { type: 'exponential', baseMs: 5000, maxMs: 60_000, jitter: false },
  timeoutMs: 60_000,
  priority: 'normal',
};

/** What each job type declares in Rust beyond its schema. */
export const KIND_RULES: {
  readonly [K in Kind]: {
    /** `Job::dedup_key`: the key a job coalesces under by default. */
    readonly dedupKey: (payload: WirePayloadOf[K]) => string | undefined;
    /** `Job::policy()` apart from its priority: attempts, backoff, timeout. */
    readonly policy: Policy;
    /** `Job::policy().priority`. */
    readonly priority: (payload: WirePayloadOf[K]) => Priority;
  };
} = {
  score_match: { dedupKey: () => undefined, policy: DEFAULT_POLICY, priority: () => DEFAULT_POLICY.priority },
  calculate_points: { dedupKey: () => undefined, policy: DEFAULT_POLICY, priority: (p) => p.priority },
  refresh_views: {
    dedupKey: (p) => `refresh_views:${p.scope}`,
    policy: DEFAULT_POLICY,
    priority: () => DEFAULT_POLICY.priority,
  },
  repair_pipeline: { dedupKey: () => 'repair_pipeline', policy: REPAIR_POLICY, priority: () => REPAIR_POLICY.priority },
};

/** Per-enqueue choices that end up inside the envelope. */
export interface EnvelopeOptions {
  /** Priority override (written into the policy, as the Rust producer does). */
  readonly priority?: Priority | undefined;
  /** Dedup key override: a key, or `null` never to coalesce (undefined: the job type's own). */
  readonly dedupKey?: string | null | undefined;
  /** Attempts override (failures allowed, and separately crashes allowed). */
  readonly maxAttempts?: number | undefined;
  /** Backoff override, merged over the default. */
  readonly backoff?: Partial<Backoff> | undefined;
  /** Per-attempt timeout override, in ms. */
  readonly timeoutMs?: number | undefined;
  /** Trace context to carry (undefined: none). */
  readonly trace?: TraceContext | undefined;
}

function withDefaults(schema: JsonSchema, payload: Record<string, unknown>): Record<string, unknown> {
  // Schema order for the known fields (serde writes struct order; the Rust
  // types' fields are in this order today), defaults filled in as serde's
  // #[serde(default)] would, unknown fields kept so validation names them.
  const out: Record<string, unknown> = {};
  for (const [name, sub] of Object.entries(schema.properties ?? {})) {
    if (payload[name] !== undefined) out[name] = payload[name];
    else if ('default' in sub) out[name] = sub.default;
  }
  for (const [name, value] of Object.entries(payload)) {
    if (!(name in out) && value !== undefined) out[name] = value;
  }
  return out;
}

/**
 * The envelope of `job`, checked against its schema.
 *
 * @throws {TallyInputError} when the job, a payload field or an option is refused
 */
export function buildEnvelope(job: Job, id: string, createdAtMs: number, options: EnvelopeOptions = {}): Envelope {
  if (!isObject(job)) throw new TallyInputError('job', [`must be an object { kind, payload }, got ${String(job)}`]);
  const kind = job.kind as unknown;
  if (typeof kind !== 'string' || !(KINDS as readonly string[]).includes(kind)) {
    throw new TallyInputError('job', [`kind: unknown job kind ${JSON.stringify(kind)} (known: ${KINDS.join(', ')})`]);
  }
  const k = kind as Kind;
  const schema = SCHEMAS[k];
  const payloadSchema = schema.properties?.['payload'] ?? {};
  const given = (job as { payload?: unknown }).payload ?? {};
  if (!isObject(given)) {
    throw new TallyInputError(k, [`payload: must be an object, got ${JSON.stringify(given)}`]);
  }
  const payload = withDefaults(payloadSchema, given);
  const payloadProblems = validate(payloadSchema, payload, 'payload');
  if (payloadProblems.length > 0) throw new TallyInputError(k, payloadProblems);

  // Only now is the payload known to have its kind's shape.
  const rules = KIND_RULES[k] as {
    dedupKey: (p: unknown) => string | undefined;
    policy: Policy;
    priority: (p: unknown) => Priority;
  };
  const policy: Policy = {
    maxAttempts: options.maxAttempts ?? rules.policy.maxAttempts,
    backoff: { ...rules.policy.backoff, ...definedOnly(options.backoff ?? {}) } as Backoff,
    timeoutMs: options.timeoutMs ?? rules.policy.timeoutMs,
    priority: options.priority ?? rules.priority(payload),
  };
  let dedupKey = options.dedupKey === undefined ? rules.dedupKey(payload) : (options.dedupKey ?? undefined);
  if (dedupKey === '') dedupKey = undefined;

  const envelope: Record<string, unknown> = {
    v: ENVELOPE_VERSION,
    id,
    kind: k,
    queue: QUEUE_OF[k],
    payload,
    policy: {
      maxAttempts: policy.maxAttempts,
      backoff: {
        type: policy.backoff.type,
        baseMs: policy.backoff.baseMs,
        maxMs: policy.backoff.maxMs,
        jitter: policy.backoff.jitter,
      },
      timeoutMs: policy.timeoutMs,
      priority: policy.priority,
    },
    createdAtMs,
  };
  if (dedupKey !== undefined) envelope['dedupKey'] = dedupKey;
  if (options.trace !== undefined) {
    const { traceparent, tracestate, ...rest } = options.trace as TraceContext & Record<string, unknown>;
    envelope['trace'] = tracestate === undefined ? { traceparent, ...rest } : { traceparent, tracestate, ...rest };
  }
  const problems = validate(schema, envelope);
  if (problems.length > 0) throw new TallyInputError(k, problems);
  return envelope as unknown as Envelope;
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** The JSON stored in Redis: compact, fields in the order the Rust producer writes them. */
export function encodeEnvelope(envelope: Envelope): string {
  return JSON.stringify(envelope);
}
