/**
 * Redis key names of a queue, built in this one place, as
 * `crates/tally-queue/src/keys.rs` builds them for the Rust engine:
 * `<prefix>:{<queue>}:<part>`. The `{<queue>}` hash tag puts every key of a
 * queue in one Redis Cluster slot, so one script call may touch them all.
 *
 * Everything that talks to Redis groups its work by {@link QueueKeys.tag}
 * (one script call or pipeline per tag): when partitioned queues arrive
 * (one logical queue over several hash tags), only this file and the choice
 * of tag per job change.
 *
 * @module
 */

import { TallyInputError } from './errors.js';

/** Most wake markers kept in `…:wake` (the Rust engine's `WAKE_CAP`). */
export const WAKE_CAP = 64;

/** Most jobs one enqueue script call carries (the Rust engine's `ENQUEUE_CHUNK`). */
export const ENQUEUE_CHUNK = 1000;

/** Refuses what the Rust engine refuses as a queue name (`check_queue_name`). */
export function checkQueueName(queue: string): void {
  if (typeof queue !== 'string' || queue === '' || /[{}]/.test(queue)) {
    throw new TallyInputError('queue name', [`must be non-empty and free of braces, got ${JSON.stringify(queue)}`]);
  }
}

/** Key names of one queue. */
export class QueueKeys {
  /** `<prefix>:{<queue>}:`, the common start of every key; also the hash tag's scope. */
  readonly tag: string;

  constructor(
    readonly prefix: string,
    readonly queue: string,
  ) {
    checkQueueName(queue);
    this.tag = `${prefix}:{${queue}}:`;
  }

  /** A key of the queue by its part name (`jobs`, `ready:high`, …). */
  part(part: string): string {
    return this.tag + part;
  }

  /** The ready list of a priority (KEDA scales on its length). */
  ready(priority: 'high' | 'normal' | 'low'): string {
    return this.part(`ready:${priority}`);
  }

  /** Hash: job id -> envelope JSON. */
  get jobs(): string {
    return this.part('jobs');
  }

  /** Sorted set: job id by due time. */
  get scheduled(): string {
    return this.part('scheduled');
  }

  /** Sorted set: job id by lease expiry (jobs in flight). */
  get leases(): string {
    return this.part('leases');
  }

  /** Sorted set: dead job id by time of death. */
  get dead(): string {
    return this.part('dead');
  }

  /** Hash of counters (enqueued, completed, …). */
  get stats(): string {
    return this.part('stats');
  }

  /** Pub/sub channel on which due times are announced to promoters. */
  get dueChannel(): string {
    return this.part('due');
  }
}
