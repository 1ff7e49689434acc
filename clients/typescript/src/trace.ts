/**
 * The caller's OpenTelemetry context as a W3C `traceparent`, read from
 * `@opentelemetry/api` when the app has it installed (an optional peer
 * dependency, loaded on first use) and a valid span is active. Without the
 * package, or without an active span, jobs carry no trace context.
 *
 * The API keeps its state on `globalThis`, so the context the app set
 * through its own copy (ESM or CommonJS) is the one read here.
 *
 * @module
 */

import type { TraceContext } from './generated/jobs.js';

type OtelApi = typeof import('@opentelemetry/api');

let loading: Promise<OtelApi | null> | undefined;

function load(): Promise<OtelApi | null> {
  loading ??= import('@opentelemetry/api').then(
    (api) => api,
    () => null,
  );
  return loading;
}

/** The active span's context as `{ traceparent, tracestate? }`, or undefined. */
export async function activeTraceContext(): Promise<TraceContext | undefined> {
  const api = await load();
  if (api === null) return undefined;
  const span = api.trace.getActiveSpan();
  if (span === undefined) return undefined;
  const context = span.spanContext();
  if (!api.isSpanContextValid(context)) return undefined;
  const flags = (context.traceFlags & 0xff).toString(16).padStart(2, '0');
  const traceparent = `00-${context.traceId}-${context.spanId}-${flags}`;
  const tracestate = context.traceState?.serialize();
  return tracestate ? { traceparent, tracestate } : { traceparent };
}
