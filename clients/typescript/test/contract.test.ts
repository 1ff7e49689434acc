/**
 * A change to the Rust contract that the package does not follow fails the
 * build: the generator run on a copy of the repository's schemas and Lua,
 * changed the way a Rust change would change them.
 */

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';

import { PACKAGE_DIR, REPO } from './support/repo.js';

const temps: string[] = [];
after(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});

/** A copy of the package and of the contract files; `change` edits the copy before the build. */
function copy(change: (repo: string) => void): { repo: string; pkg: string } {
  const repo = mkdtempSync(join(tmpdir(), 'tally-ts-contract-'));
  temps.push(repo);
  cpSync(join(REPO, 'docs', 'schemas'), join(repo, 'docs', 'schemas'), { recursive: true });
  cpSync(join(REPO, 'crates', 'tally-queue', 'lua'), join(repo, 'crates', 'tally-queue', 'lua'), { recursive: true });
  const pkg = join(repo, 'clients', 'typescript');
  for (const part of ['src', 'scripts']) cpSync(join(PACKAGE_DIR, part), join(pkg, part), { recursive: true });
  for (const file of ['package.json', 'tsconfig.json']) cpSync(join(PACKAGE_DIR, file), join(pkg, file));
  symlinkSync(join(PACKAGE_DIR, 'node_modules'), join(pkg, 'node_modules'));
  change(repo);
  return { repo, pkg };
}

function generate(pkg: string): { status: number | null; output: string } {
  // The generator finds the repository from its own place (../..): the copy.
  const env = { ...process.env };
  delete env['TALLY_REPO'];
  delete env['TALLY_GENERATED_DIR'];
  const r = spawnSync(process.execPath, [join(pkg, 'scripts', 'generate.mjs')], { encoding: 'utf8', env });
  return { status: r.status, output: r.stdout + r.stderr };
}

function typecheck(pkg: string): { status: number | null; output: string } {
  const tsc = join(PACKAGE_DIR, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = spawnSync(process.execPath, [tsc, '--noEmit', '-p', join(pkg, 'tsconfig.json')], { encoding: 'utf8' });
  return { status: r.status, output: r.stdout + r.stderr };
}

function editJson(path: string, edit: (value: Record<string, any>) => void): void {
  const value = JSON.parse(readFileSync(path, 'utf8')) as Record<string, any>;
  edit(value);
  writeFileSync(path, JSON.stringify(value, null, 2));
}

test('the unchanged contract builds (the baseline of the cases below)', () => {
  const { pkg } = copy(() => {});
  const gen = generate(pkg);
  assert.equal(gen.status, 0, gen.output);
  const tsc = typecheck(pkg);
  assert.equal(tsc.status, 0, tsc.output);
});

test('a new required payload field fails the type check of the helpers', () => {
  const { pkg } = copy((repo) =>
    editJson(join(repo, 'docs', 'schemas', 'score_match.json'), (s) => {
      s['properties'].payload.properties.competitionId = { type: 'integer', minimum: 1 };
      s['properties'].payload.required.push('competitionId');
    }),
  );
  assert.equal(generate(pkg).status, 0);
  const tsc = typecheck(pkg);
  assert.notEqual(tsc.status, 0);
  assert.match(tsc.output, /src\/producer\.ts.*competitionId/s);
});

test('a new job kind fails the type check until the package has rules for it', () => {
  const { pkg } = copy((repo) => {
    const path = join(repo, 'docs', 'schemas', 'score_match.json');
    const schema = JSON.parse(readFileSync(path, 'utf8')) as Record<string, any>;
    schema['properties'].kind.const = 'void_match';
    writeFileSync(join(repo, 'docs', 'schemas', 'void_match.json'), JSON.stringify(schema));
  });
  assert.equal(generate(pkg).status, 0);
  const tsc = typecheck(pkg);
  assert.notEqual(tsc.status, 0);
  assert.match(tsc.output, /src\/envelope\.ts.*void_match/s);
});

test('a JSON Schema keyword the validator does not implement stops the generator', () => {
  const { pkg } = copy((repo) =>
    editJson(join(repo, 'docs', 'schemas', 'refresh_views.json'), (s) => {
      s['properties'].payload.properties.scope.maxItems = 3;
    }),
  );
  const gen = generate(pkg);
  assert.equal(gen.status, 1);
  assert.match(gen.output, /refresh_views\.json\.payload\.scope: JSON Schema keyword "maxItems" is not supported/);
});

test("a change to the enqueue script's ARGV layout stops the generator", () => {
  const { pkg } = copy((repo) => {
    const path = join(repo, 'crates', 'tally-queue', 'lua', 'enqueue_jobs.lua');
    writeFileSync(path, readFileSync(path, 'utf8').replace('five per job: id, envelope,', 'six per job: id, kind, envelope,'));
  });
  const gen = generate(pkg);
  assert.equal(gen.status, 1);
  assert.match(gen.output, /enqueue_jobs\.lua: the ARGV layout in its header is not the one src\/producer\.ts writes/);
});

test("a change to the enqueue script's KEYS stops the generator", () => {
  const { pkg } = copy((repo) => {
    const path = join(repo, 'crates', 'tally-queue', 'lua', 'enqueue_jobs.lua');
    writeFileSync(path, readFileSync(path, 'utf8').replace('-- KEYS[9] ready:low', '-- KEYS[9] ready:low\n-- KEYS[10] paused      string'));
  });
  const gen = generate(pkg);
  assert.equal(gen.status, 1);
  assert.match(gen.output, /KEYS part "paused" has no key in src\/keys\.ts/);
});
