// Generates src/generated/ from the Rust side of the repository, so nothing
// of the contract is copied by hand:
//
//   jobs.ts            job types, kinds, queues and the JSON Schemas
//                      themselves (for validation), from docs/schemas/*.json
//   enqueue-script.ts  crates/tally-queue/lua/_shared.lua + enqueue_jobs.lua
//                      (the exact text the Rust producer runs), its SHA-1,
//                      and the KEYS layout read from the script's header
//
// It fails (exit 1, one line naming the file) on anything it does not
// understand: a JSON Schema keyword the validator does not implement, or an
// enqueue script whose ARGV layout is not the one src/producer.ts writes.
// A change to the Rust contract therefore stops `npm run build` here, or
// later in tsc (a payload field the helpers do not fill), or in the golden
// tests. TALLY_REPO overrides the repository root (default: ../..).

import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = resolve(here, '..');
const repo = resolve(process.env.TALLY_REPO ?? join(pkg, '..', '..'));
const outDir = resolve(process.env.TALLY_GENERATED_DIR ?? join(pkg, 'src', 'generated'));
const schemaDir = join(repo, 'docs', 'schemas');
const luaDir = join(repo, 'crates', 'tally-queue', 'lua');

function fail(message) {
  console.error(`generate: ${message}`);
  process.exit(1);
}

// ---- job types from the JSON Schemas -------------------------------------

// Keywords the runtime validator (src/validate.ts) implements. Annotations
// are allowed anywhere; anything else fails the build.
const ANNOTATIONS = new Set(['$id', '$schema', 'title', 'description', 'default']);
const KEYWORDS = new Set([
  'type',
  'properties',
  'required',
  'additionalProperties',
  'minimum',
  'minLength',
  'maxLength',
  'enum',
  'const',
  'pattern',
]);
const TYPES = new Set(['object', 'string', 'integer', 'boolean']);

function checkKeywords(schema, where) {
  for (const [key, value] of Object.entries(schema)) {
    if (ANNOTATIONS.has(key)) continue;
    if (!KEYWORDS.has(key)) fail(`${where}: JSON Schema keyword "${key}" is not supported by src/validate.ts`);
    if (key === 'type' && !TYPES.has(value)) fail(`${where}: type "${value}" is not supported by src/validate.ts`);
    if (key === 'additionalProperties' && value !== false) fail(`${where}: only additionalProperties: false is supported`);
    if (key === 'properties') {
      for (const [name, sub] of Object.entries(value)) checkKeywords(sub, `${where}.${name}`);
    }
  }
  if (schema.type === 'object' && schema.additionalProperties !== false) {
    fail(`${where}: objects must say additionalProperties: false (the Rust types deny unknown fields)`);
  }
}

function pascal(kind) {
  return kind
    .split('_')
    .map((w) => w[0].toUpperCase() + w.slice(1))
    .join('');
}

// TypeScript for a schema. `input`: fields with a default are optional
// (the producer fills them in, as serde's #[serde(default)] does).
function tsType(schema, indent, input) {
  if ('const' in schema) return JSON.stringify(schema.const);
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(' | ');
  switch (schema.type) {
    case 'string':
      return 'string';
    case 'integer':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'object': {
      const required = new Set(schema.required ?? []);
      const pad = '  '.repeat(indent + 1);
      const lines = Object.entries(schema.properties ?? {}).map(([name, sub]) => {
        const optional = !required.has(name) && (input || !('default' in sub)) ? '?' : '';
        const doc = describe(sub);
        return `${doc ? `${pad}/** ${doc} */\n` : ''}${pad}readonly ${name}${optional}: ${tsType(sub, indent + 1, input)};`;
      });
      return lines.length ? `{\n${lines.join('\n')}\n${'  '.repeat(indent)}}` : 'Record<string, never>';
    }
    default:
      fail(`no TypeScript type for ${JSON.stringify(schema)}`);
  }
}

function describe(schema) {
  const parts = [];
  if (schema.type === 'integer') parts.push('integer');
  if ('minimum' in schema) parts.push(`>= ${schema.minimum}`);
  if ('minLength' in schema) parts.push(`length >= ${schema.minLength}`);
  if ('maxLength' in schema) parts.push(`length <= ${schema.maxLength}`);
  if ('pattern' in schema) parts.push(`matches ${schema.pattern.replaceAll('*/', '*\\/')}`);
  if ('default' in schema) parts.push(`default ${JSON.stringify(schema.default)}`);
  return parts.join(', ');
}

// The envelope's own fields, with the shared parts named.
function envelopeType(schema, name) {
  const required = new Set(schema.required);
  const named = { payload: `${name}WirePayload`, policy: 'Policy', trace: 'TraceContext' };
  const lines = Object.entries(schema.properties).map(([prop, sub]) => {
    const doc = describe(sub);
    const type = named[prop] ?? tsType(sub, 1, false);
    return `${doc ? `  /** ${doc} */\n` : ''}  readonly ${prop}${required.has(prop) ? '' : '?'}: ${type};`;
  });
  return `{\n${lines.join('\n')}\n}`;
}

let files;
try {
  files = readdirSync(schemaDir)
    .filter((f) => f.endsWith('.json'))
    .sort();
} catch (e) {
  fail(`cannot read ${schemaDir}: ${e.message} (set TALLY_REPO to the repository root)`);
}
if (files.length === 0) fail(`no schemas in ${schemaDir}`);

const kinds = [];
for (const file of files) {
  const path = join(schemaDir, file);
  const schema = JSON.parse(readFileSync(path, 'utf8'));
  checkKeywords(schema, path);
  const kind = schema.properties?.kind?.const;
  const queue = schema.properties?.queue?.const;
  if (typeof kind !== 'string' || typeof queue !== 'string') fail(`${path}: kind and queue must be consts`);
  if (`${kind}.json` !== file) fail(`${path}: kind "${kind}" does not match the file name`);
  for (const part of ['payload', 'policy', 'trace']) {
    if (!schema.properties[part]) fail(`${path}: no "${part}" property`);
  }
  kinds.push({ kind, queue, schema, name: pascal(kind) });
}

// Policy and trace are the same in every schema (one Rust type each); the
// generated Policy / TraceContext types come from the first, and the others
// must agree.
const first = kinds[0].schema;
for (const { schema, kind } of kinds) {
  for (const part of ['policy', 'trace', 'v', 'id', 'createdAtMs', 'dedupKey']) {
    if (JSON.stringify(schema.properties[part]) !== JSON.stringify(first.properties[part])) {
      fail(`${kind}: "${part}" differs between schemas; the generator expects one shared definition`);
    }
  }
}

const q = (v) => JSON.stringify(v);
let jobs = `// Generated by scripts/generate.mjs from docs/schemas/*.json. Do not edit:
// run \`npm run generate\` (the build does) after the Rust contract changes.

import type { JsonSchema } from '../validate.js';

/** Envelope version written by this package. */
export const ENVELOPE_VERSION = ${q(first.properties.v.const)} as const;

/** Every job kind of the contract, in file order. */
export const KINDS = [${kinds.map((k) => q(k.kind)).join(', ')}] as const;

/** A job kind (\`score_match\`, …). */
export type Kind = (typeof KINDS)[number];

/** The queue each kind is enqueued on. */
export const QUEUE_OF = {
${kinds.map((k) => `  ${k.kind}: ${q(k.queue)},`).join('\n')}
} as const;

/** A queue name of the contract. */
export type QueueName = (typeof QUEUE_OF)[Kind];

/** Retry, timeout and priority policy, as written into every envelope. */
export type Policy = ${tsType(first.properties.policy, 0, false)};

/** Priority within a queue: every high job is claimed before any normal one, every normal before any low. */
export type Priority = Policy['priority'];

/** Delay between attempts. */
export type Backoff = Policy['backoff'];

/** W3C trace context carried to the worker. */
export type TraceContext = ${tsType(first.properties.trace, 0, false)};
`;

for (const { kind, name, schema } of kinds) {
  jobs += `
/** Payload of a \`${kind}\` job as the caller gives it (fields with a default may be left out). */
export type ${name}Payload = ${tsType(schema.properties.payload, 0, true)};

/** Payload of a \`${kind}\` job as written on the wire (defaults filled in). */
export type ${name}WirePayload = ${tsType(schema.properties.payload, 0, false)};

/** A whole \`${kind}\` envelope, as stored in Redis. */
export type ${name}Envelope = ${envelopeType(schema, name)};
`;
}

jobs += `
/** A job: its kind and its payload. */
export type Job =
${kinds.map((k) => `  | { readonly kind: ${q(k.kind)}; readonly payload: ${k.name}Payload }`).join('\n')};

/** The payload type of each kind. */
export interface PayloadOf {
${kinds.map((k) => `  ${k.kind}: ${k.name}Payload;`).join('\n')}
}

/** The wire payload type of each kind (defaults filled in). */
export interface WirePayloadOf {
${kinds.map((k) => `  ${k.kind}: ${k.name}WirePayload;`).join('\n')}
}

/** Any envelope of the contract. */
export type Envelope = ${kinds.map((k) => `${k.name}Envelope`).join(' | ')};

/** The JSON Schema of each kind's envelope, exactly as in docs/schemas/. */
export const SCHEMAS: { readonly [K in Kind]: JsonSchema } = {
${kinds.map((k) => `  ${k.kind}: ${JSON.stringify(k.schema)},`).join('\n')}
};
`;

// ---- the enqueue script ---------------------------------------------------

const shared = readFileSync(join(luaDir, '_shared.lua'), 'utf8');
const enqueue = readFileSync(join(luaDir, 'enqueue_jobs.lua'), 'utf8');
// The same text the Rust producer sends: concat!(include_str!(_shared.lua), include_str!(enqueue_jobs.lua)).
const script = shared + enqueue;
const sha1 = createHash('sha1').update(script).digest('hex');

const keyParts = [];
for (const m of enqueue.matchAll(/^-- KEYS\[(\d+)\] +(\S+)/gm)) {
  const n = Number(m[1]);
  let part = m[2];
  if (n !== keyParts.length + 1) fail(`enqueue_jobs.lua: KEYS[${n}] out of order`);
  // "ready:normal" / "ready:low" follow "ready:high" in the header.
  keyParts.push(part);
}
const expectedKeys = ['jobs', 'state', 'scheduled', 'dedup', 'stats', 'wake', 'ready:high', 'ready:normal', 'ready:low'];
for (const part of keyParts) {
  if (!expectedKeys.includes(part)) fail(`enqueue_jobs.lua: KEYS part "${part}" has no key in src/keys.ts`);
}
if (keyParts.length !== expectedKeys.length) {
  fail(`enqueue_jobs.lua takes ${keyParts.length} KEYS, src/keys.ts knows ${expectedKeys.length}`);
}

// The ARGV layout src/producer.ts writes. If the script's header says
// anything else, the producer must be changed with it: stop here.
const argvBlock = enqueue
  .split('\n')
  .filter((l) => /^-- (ARGV\[|\s{2,})/.test(l))
  .join('\n');
const expectedArgv = `-- ARGV[1] now, ms since the epoch, on the caller's clock: due times are
--         moved to Redis's clock by their distance from it (a delay runs on
--         Redis's clock whatever the caller's skew)
-- ARGV[2] channel to PUBLISH a due time on when it is earlier than any scheduled
-- ARGV[3] wake marker cap
-- ARGV[4..] five per job: id, envelope, prio (h|n|l), due ms (<= now: ready now),
--           dedup key ('' for none)`;
const argvStart = argvBlock.indexOf('-- ARGV[1]');
const argvText = argvBlock.slice(argvStart, argvStart + expectedArgv.length);
if (argvStart < 0 || argvText !== expectedArgv) {
  fail(
    `${join(luaDir, 'enqueue_jobs.lua')}: the ARGV layout in its header is not the one src/producer.ts writes; ` +
      `update the producer, then the expected text in scripts/generate.mjs`,
  );
}

const lua = `// Generated by scripts/generate.mjs from crates/tally-queue/lua/_shared.lua +
// enqueue_jobs.lua (the text the Rust producer runs). Do not edit.

/** The enqueue script: \`_shared.lua\` followed by \`enqueue_jobs.lua\`. */
export const ENQUEUE_JOBS_LUA = ${JSON.stringify(script)};

/** SHA-1 of {@link ENQUEUE_JOBS_LUA}, for EVALSHA. */
export const ENQUEUE_JOBS_SHA1 = ${q(sha1)};

/** The script's KEYS, in order, as key parts (\`<prefix>:{<queue>}:<part>\`). */
export const ENQUEUE_KEY_PARTS = ${JSON.stringify(keyParts)} as const;
`;

mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, 'jobs.ts'), jobs);
writeFileSync(join(outDir, 'enqueue-script.ts'), lua);
console.log(`generate: ${kinds.length} job kinds from ${schemaDir}, enqueue script ${sha1.slice(0, 12)} -> ${outDir}`);
