/**
 * Where the repository's files are, seen from the compiled tests
 * (`clients/typescript/build/test/`): the golden envelopes, the Lua scripts,
 * and the Rust binaries built by `cargo build --workspace --bins`.
 */

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package directory, clients/typescript. */
export const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** The repository root. */
export const REPO = resolve(process.env['TALLY_REPO'] ?? join(PACKAGE_DIR, '..', '..'));

/** A golden envelope file of `crates/tally-jobs/tests/golden/`, as text. */
export function golden(kind: string): string {
  return readFileSync(join(REPO, 'crates', 'tally-jobs', 'tests', 'golden', `${kind}.json`), 'utf8');
}

/** A Lua script of the engine, with the shared helpers prepended (as src/scripts.rs does). */
export function engineScript(file: string): string {
  const lua = join(REPO, 'crates', 'tally-queue', 'lua');
  return readFileSync(join(lua, '_shared.lua'), 'utf8') + readFileSync(join(lua, file), 'utf8');
}

/** The path of a Rust binary; fails with the command that builds it. */
export function binary(name: string): string {
  const dir = process.env['TALLY_BIN_DIR'] ?? join(process.env['CARGO_TARGET_DIR'] ?? join(REPO, 'target'), 'debug');
  const path = join(dir, name);
  if (!existsSync(path)) {
    throw new Error(`${path} not found: build the binaries first (cargo build --workspace --bins; make test does)`);
  }
  return path;
}

/** Runs the `tally` CLI; returns its stdout, failing on a non-zero exit. */
export function tally(args: string[], env: Record<string, string>): string {
  const r = spawnSync(binary('tally'), args, { encoding: 'utf8', env: { ...process.env, ...env } });
  if (r.status !== 0) throw new Error(`tally ${args.join(' ')} exited ${r.status}:\n${r.stderr}${r.stdout}`);
  return r.stdout;
}
