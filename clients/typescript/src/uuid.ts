/**
 * UUID version 7 job ids, as the Rust producer makes them (`Uuid::now_v7`):
 * 48 bits of Unix milliseconds, then random bits, so ids sort by creation.
 *
 * @module
 */

import { randomBytes } from 'node:crypto';

/** A fresh UUID v7 string with the given millisecond timestamp. */
export function uuidv7(nowMs: number = Date.now()): string {
  const bytes = randomBytes(16);
  let ms = Math.max(0, Math.floor(nowMs));
  for (let i = 5; i >= 0; i--) {
    bytes[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x70;
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80;
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
