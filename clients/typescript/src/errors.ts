/**
 * The one error this package throws of its own: input refused before
 * anything is sent to Redis. Errors from Redis itself (connection lost, a
 * script error) are ioredis's, passed through unchanged.
 *
 * @module
 */

/** A job, its options or the producer's settings were refused; nothing reached Redis. */
export class TallyInputError extends Error {
  /** Always `'TALLY_INVALID_INPUT'`, for callers that test codes rather than classes. */
  readonly code = 'TALLY_INVALID_INPUT';
  /** One line per problem, each starting with the path of the field. */
  readonly problems: readonly string[];

  constructor(what: string, problems: readonly string[]) {
    super(`${what}: ${problems.join('; ')}`);
    this.name = 'TallyInputError';
    this.problems = problems;
  }
}
