/**
 * Job ids chosen for a partition: a job without a dedup key goes to the
 * partition its id hashes to, so a test that needs jobs in given partitions
 * gives them such ids.
 */

import { partitionForKey } from '../../src/index.js';

/** The first id `<seed>-<n>` that lands in `partition` of `count`. */
export function idIn(partition: number, count: number, seed: string): string {
  for (let n = 0; ; n++) {
    const id = `${seed}-${n}`;
    if (partitionForKey(id, count) === partition) return id;
  }
}
