/**
 * Redis key names of a queue, built in this one place, as
 * `crates/tally-queue/src/keys.rs` builds them for the Rust engine:
 * `<prefix>:{<queue>}:<part>`. The `{<queue>}` hash tag puts every key of a
 * queue in one Redis Cluster slot, so one script call may touch them all.
 *
 * A partitioned queue (`tally queue partitions <queue> <K>`, see
 * `crates/tally-queue/src/partitions.rs` and the "Partitions" section of
 * `docs/PROTOCOL.md`) is K such key sets: partition 0 is `{<queue>}` (the
 * layout above, so a queue that was never partitioned is partition 0 of
 * itself), partition `p` >= 1 is `{<queue>#<p>}`, a slot of its own.
 * Everything that talks to Redis groups its work by {@link QueueKeys.tag}
 * (one script call or pipeline per partition).
 *
 * @module
 */

import { TallyInputError } from './errors.js';

/** Most wake markers kept in `…:wake` (the Rust engine's `WAKE_CAP`). */
export const WAKE_CAP = 64;

/** Most jobs one enqueue script call carries (the Rust engine's `ENQUEUE_CHUNK`). */
export const ENQUEUE_CHUNK = 1000;

/** Most partitions a queue may have (the Rust engine's `MAX_PARTITIONS`). */
export const MAX_PARTITIONS = 64;

/** The field of partition 0's `control` hash that holds the partition count. */
export const PARTITIONS_FIELD = 'partitions';

/**
 * Refuses what the Rust engine refuses as a queue name (`check_queue_name`):
 * empty, braces (they would break the hash tag) or `#` (it separates a queue
 * from its partition number: `stats#2` would be partition 2 of `stats`).
 */
export function checkQueueName(queue: string): void {
  if (typeof queue !== 'string' || queue === '' || /[{}#]/.test(queue)) {
    throw new TallyInputError('queue name', [`must be non-empty and free of braces and '#', got ${JSON.stringify(queue)}`]);
  }
}

/**
 * 32-bit FNV-1a of the UTF-8 bytes of `text` (offset basis `0x811c9dc5`,
 * prime `0x01000193`), as an unsigned number: `"a"` gives `0xe40c292c`,
 * `"foobar"` `0xbf9cf968`.
 */
export function fnv1a32(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

/**
 * The partition of a job with dedup key `key` in a queue of `partitions`
 * partitions: `fnv1a32(key) mod partitions` (0 when there is one), the
 * Rust engine's `partition_for_key`. A second enqueue with that key thus
 * meets the waiting job and coalesces, whichever producer sends it.
 */
export function partitionForKey(key: string, partitions: number): number {
  if (!(partitions > 1)) return 0;
  return fnv1a32(key) % partitions;
}

/** Key names of one queue (of one partition of it). */
export class QueueKeys {
  /** `<prefix>:{<queue>}:` (`<prefix>:{<queue>#<p>}:` for partition p >= 1), the common start of every key; also the hash tag's scope. */
  readonly tag: string;

  constructor(
    readonly prefix: string,
    readonly queue: string,
    /** Which partition these are the keys of (0: all of a queue that is not partitioned). */
    readonly partition: number = 0,
  ) {
    checkQueueName(queue);
    if (!Number.isSafeInteger(partition) || partition < 0 || partition >= MAX_PARTITIONS) {
      throw new TallyInputError('partition', [`must be a whole number from 0 to ${MAX_PARTITIONS - 1}, got ${String(partition)}`]);
    }
    this.tag = partition === 0 ? `${prefix}:{${queue}}:` : `${prefix}:{${queue}#${partition}}:`;
  }

  /** A key of the queue by its part name (`jobs`, `ready:high`, …). */
  part(part: string): string {
    return this.tag + part;
  }

  /** The ready list of a priority (KEDA scales on its length, summed over the partitions). */
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

  /**
   * Hash of the operators' controls: `paused`, `limit` (of a partitioned
   * queue, this partition's share); on partition 0 also `partitions`, the
   * queue's partition count (absent: 1).
   */
  get control(): string {
    return this.part('control');
  }

  /** Pub/sub channel on which due times are announced to promoters. */
  get dueChannel(): string {
    return this.part('due');
  }
}
