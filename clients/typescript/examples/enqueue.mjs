// A first look at @tally/producer: enqueue a leaderboard refresh twice (the
// second coalesces into the first), optionally score a match, show that bad
// input is refused before it reaches Redis, and print the queues' stats.
//
//   examples/run.sh [MATCH_ID]        one command: builds, starts the demo's Redis if needed
//   REDIS_URL=redis://… node examples/enqueue.mjs [MATCH_ID]
//
// Nothing here starts workers: the jobs wait in Redis until tally's workers
// (`make demo` runs them) take them.

import { Redis } from 'ioredis';
import { TallyInputError, TallyProducer } from '@tally/producer';

const url = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const redis = new Redis(url, { maxRetriesPerRequest: 1 });
const tally = new TallyProducer(redis, { prefix: process.env.TALLY_QUEUE_PREFIX || 'tally' });

try {
  const first = await tally.enqueueViewRefresh('leaderboard');
  const second = await tally.enqueueViewRefresh('leaderboard');
  console.log(`refresh of the leaderboard: job ${first.id} (deduplicated: ${first.deduplicated})`);
  console.log(`the same request again:     job ${second.id} (deduplicated: ${second.deduplicated})`);

  const matchId = process.argv[2];
  if (matchId !== undefined) {
    const scored = await tally.enqueueScoreMatch(Number(matchId));
    console.log(`scoring of match ${matchId}:     job ${scored.id}`);
  }

  try {
    await tally.enqueueScoreMatch(-1);
  } catch (e) {
    if (!(e instanceof TallyInputError)) throw e;
    console.log(`refused before Redis:       ${e.message}`);
  }

  console.log(`queues at ${url}:`);
  console.log(JSON.stringify(await tally.queueStats(), null, 2));
} finally {
  redis.disconnect();
}
