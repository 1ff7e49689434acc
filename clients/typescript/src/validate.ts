/**
 * A validator for the part of JSON Schema that tally's job schemas use
 * (`docs/schemas/*.json`): type, properties, required, additionalProperties
 * (false), minimum, minLength, maxLength, enum, const, pattern. The
 * generator (`scripts/generate.mjs`) refuses a schema with any other keyword,
 * so this file never meets one silently. Kept here rather than taken from a
 * library so the package has no runtime dependency beyond ioredis.
 *
 * @module
 */

/** The subset of JSON Schema that tally's job schemas use. */
export interface JsonSchema {
  readonly type?: 'object' | 'string' | 'integer' | 'boolean' | (string & {});
  readonly properties?: { readonly [name: string]: JsonSchema };
  readonly required?: readonly string[];
  readonly additionalProperties?: boolean;
  readonly minimum?: number;
  readonly minLength?: number;
  readonly maxLength?: number;
  readonly enum?: readonly unknown[];
  readonly const?: unknown;
  readonly pattern?: string;
  readonly default?: unknown;
  readonly [annotation: string]: unknown;
}

/** Whether `value` is a plain JSON object (not an array, not null). */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function show(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (typeof value === 'bigint') return `${value}n`;
  const text = JSON.stringify(value);
  return text === undefined ? String(value) : text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

const patterns = new Map<string, RegExp>();

/**
 * Checks `value` against `schema`; returns one line per problem, each
 * starting with the path of the offending field (empty when valid).
 */
export function validate(schema: JsonSchema, value: unknown, path = ''): string[] {
  const at = path === '' ? '(root)' : path;
  const problems: string[] = [];
  if ('const' in schema && value !== schema.const) {
    problems.push(`${at}: must be ${show(schema.const)}, got ${show(value)}`);
    return problems;
  }
  if (schema.enum && !schema.enum.includes(value)) {
    problems.push(`${at}: must be one of ${schema.enum.map(show).join(', ')}, got ${show(value)}`);
    return problems;
  }
  switch (schema.type) {
    case undefined:
      break;
    case 'integer':
      if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
        problems.push(`${at}: must be a whole number (a safe integer), got ${show(value)}`);
        return problems;
      }
      break;
    case 'string':
      if (typeof value !== 'string') {
        problems.push(`${at}: must be a string, got ${show(value)}`);
        return problems;
      }
      break;
    case 'boolean':
      if (typeof value !== 'boolean') {
        problems.push(`${at}: must be true or false, got ${show(value)}`);
        return problems;
      }
      break;
    case 'object':
      if (!isObject(value)) {
        problems.push(`${at}: must be an object, got ${show(value)}`);
        return problems;
      }
      break;
    default:
      throw new Error(`JSON Schema type ${show(schema.type)} is not supported`);
  }
  if (typeof value === 'number' && schema.minimum !== undefined && value < schema.minimum) {
    problems.push(`${at}: must be >= ${schema.minimum}, got ${value}`);
  }
  if (typeof value === 'string') {
    // Lengths in Unicode code points, as JSON Schema counts them.
    const length = [...value].length;
    if (schema.minLength !== undefined && length < schema.minLength) {
      problems.push(`${at}: must be at least ${schema.minLength} character(s) long, got ${show(value)}`);
    }
    if (schema.maxLength !== undefined && length > schema.maxLength) {
      problems.push(`${at}: must be at most ${schema.maxLength} characters long, got ${length}`);
    }
    if (schema.pattern !== undefined) {
      let re = patterns.get(schema.pattern);
      if (!re) {
        re = new RegExp(schema.pattern, 'u');
        patterns.set(schema.pattern, re);
      }
      if (!re.test(value)) problems.push(`${at}: must match ${schema.pattern}, got ${show(value)}`);
    }
  }
  if (isObject(value)) {
    const properties = schema.properties ?? {};
    for (const name of schema.required ?? []) {
      if (!(name in value) || value[name] === undefined) problems.push(`${path === '' ? name : `${path}.${name}`}: is required`);
    }
    for (const [name, field] of Object.entries(value)) {
      const sub = properties[name];
      const where = path === '' ? name : `${path}.${name}`;
      if (sub === undefined) {
        if (schema.additionalProperties === false) {
          problems.push(`${where}: is not a field of this type (allowed: ${Object.keys(properties).join(', ') || 'none'})`);
        }
      } else if (field !== undefined) {
        problems.push(...validate(sub, field, where));
      }
    }
  }
  return problems;
}
