/**
 * Throwaway servers for the tests: a redis-server and a PostgreSQL on free
 * loopback ports in temporary directories, stopped and removed when the
 * test file ends (and killed if the test process exits early). PostgreSQL
 * runs as the `postgres` user when the tests run as root, as the Rust test
 * kit and scripts/servers.sh do.
 */

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, realpathSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { Redis } from 'ioredis';

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

/** A free TCP port on 127.0.0.1 (bound, read and released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === 'object') resolve(address.port);
        else reject(new Error('no port'));
      });
    });
  });
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    children.delete(child);
    return;
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
  children.delete(child);
}

/** Stops every process started here (for `after` hooks, whatever state the test left). */
export async function stopAll(): Promise<void> {
  await Promise.all([...children].map((child) => stopChild(child)));
}

/** Starts `command`; its output goes to `log` (inherited when TEST_LOG is set). */
export function startChild(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): ChildProcess {
  const child = spawn(command, args, {
    env,
    stdio: ['ignore', process.env['TEST_LOG'] ? 'inherit' : 'pipe', process.env['TEST_LOG'] ? 'inherit' : 'pipe'],
  });
  children.add(child);
  // Keep the last output for error messages.
  let tail = '';
  const keep = (chunk: Buffer): void => {
    tail = (tail + chunk.toString()).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  Object.defineProperty(child, 'outputTail', { get: () => tail });
  return child;
}

/** The last output of a child started by {@link startChild}. */
export function outputTail(child: ChildProcess): string {
  return (child as ChildProcess & { outputTail?: string }).outputTail ?? '';
}

/** A private redis-server. */
export interface RedisServer {
  readonly url: string;
  readonly port: number;
  /** A new client (closed by `stop`). */
  client(): Redis;
  stop(): Promise<void>;
}

export async function startRedis(extraArgs: string[] = []): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), 'tally-ts-redis-'));
  const port = await freePort();
  const child = startChild('redis-server', [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    'no',
    ...extraArgs,
  ]);
  const clients: Redis[] = [];
  const client = (): Redis => {
    const c = new Redis({ port, host: '127.0.0.1', lazyConnect: false, maxRetriesPerRequest: 1 });
    clients.push(c);
    return c;
  };
  await waitFor(`redis-server on port ${port}`, child, async () => {
    const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
    probe.on('error', () => {});
    try {
      await probe.connect();
      return (await probe.ping()) === 'PONG';
    } catch {
      return false;
    } finally {
      probe.disconnect();
    }
  });
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    client,
    async stop() {
      for (const c of clients) c.disconnect();
      await stopChild(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Polls `ready` until it holds; fails if the child exits first or after 30 s. */
export async function waitFor(what: string, child: ChildProcess | undefined, ready: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child && (child.exitCode !== null || child.signalCode !== null)) {
      throw new Error(`${what}: the process exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${outputTail(child)}`);
    }
    if (await ready()) return;
    if (Date.now() > deadline) {
      throw new Error(`${what}: not ready after 30 s${child ? `:\n${outputTail(child)}` : ''}`);
    }
    await sleep(50);
  }
}

/** The directory of PostgreSQL's server binaries (initdb, postgres, psql, pg_isready). */
export function pgBinDir(): string {
  const which = spawnSync('sh', ['-c', 'command -v initdb'], { encoding: 'utf8' });
  // Resolved, since a PATH entry may be a link to initdb alone (the
  // directory it links into has pg_isready and psql too).
  if (which.status === 0 && which.stdout.trim()) return dirname(realpathSync(which.stdout.trim()));
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base)
    ? readdirSync(base)
        .filter((v) => existsSync(join(base, v, 'bin', 'initdb')))
        .sort((a, b) => Number(a) - Number(b))
    : [];
  const newest = versions.at(-1);
  if (newest === undefined) throw new Error('PostgreSQL server binaries not found: install the Debian package postgresql');
  return join(base, newest, 'bin');
}

/** A private PostgreSQL with one database. */
export interface PostgresServer {
  readonly url: string;
  /** Runs SQL with psql; returns its unaligned, tuples-only output. */
  psql(sql: string): string;
  stop(): Promise<void>;
}

export async function startPostgres(database = 'tally'): Promise<PostgresServer> {
  const bin = pgBinDir();
  const root = process.getuid?.() === 0;
  const asPostgres = (command: string, args: string[]): [string, string[]] =>
    root ? ['setpriv', ['--reuid=postgres', '--regid=postgres', '--init-groups', command, ...args]] : [command, args];
  const dir = mkdtempSync(join(tmpdir(), 'tally-ts-pg-'));
  const data = join(dir, 'data');
  if (root) {
    chownSync(dir, uidOf('postgres'), gidOf('postgres'));
    // The postgres user must be able to reach its directory.
    chmodSync(dir, 0o700);
  }
  const [initCmd, initArgs] = asPostgres(join(bin, 'initdb'), [
    '-D',
    data,
    '-U',
    'postgres',
    '--auth=trust',
    '--no-sync',
    '-E',
    'UTF8',
    '--locale=C',
  ]);
  const init = spawnSync(initCmd, initArgs, { encoding: 'utf8' });
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr}${init.stdout}`);
  const port = await freePort();
  const [pgCmd, pgArgs] = asPostgres(join(bin, 'postgres'), [
    '-D',
    data,
    '-p',
    String(port),
    '-k',
    dir,
    '-c',
    'listen_addresses=127.0.0.1',
    '-c',
    'fsync=off',
    '-c',
    'synchronous_commit=off',
    '-c',
    'full_page_writes=off',
  ]);
  const child = startChild(pgCmd, pgArgs);
  await waitFor(`PostgreSQL on port ${port}`, child, async () => {
    const r = spawnSync(join(bin, 'pg_isready'), ['-h', '127.0.0.1', '-p', String(port), '-q']);
    return r.status === 0;
  });
  const psqlAt = (db: string, sql: string): string => {
    const r = spawnSync(
      join(bin, 'psql'),
      ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', db, '-qAt', '-v', 'ON_ERROR_STOP=1', '-c', sql],
      { encoding: 'utf8' },
    );
    if (r.status !== 0) throw new Error(`psql: ${sql}\n${r.stderr}`);
    return r.stdout.trim();
  };
  psqlAt('postgres', `CREATE DATABASE ${database}`);
  return {
    url: `postgres://postgres@127.0.0.1:${port}/${database}`,
    psql: (sql) => psqlAt(database, sql),
    async stop() {
      await stopChild(child, 'SIGINT');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function idOf(flag: '-u' | '-g', user: string): number {
  const r = spawnSync('id', [flag, user], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`no user ${user}: install the Debian package postgresql`);
  return Number(r.stdout.trim());
}
const uidOf = (user: string): number => idOf('-u', user);
const gidOf = (user: string): number => idOf('-g', user);

export { stopChild };
