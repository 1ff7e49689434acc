//! JSON Schemas of the envelope, one per job kind, for producers in other
//! languages (the TypeScript app validates against `docs/schemas/*.json`).
//!
//! The payload part comes from [`Job::payload_schema`]; tests check it against
//! the serde form of [`Job::example`], and check the files in `docs/schemas/`
//! are what [`all`] produces, so neither can drift from the Rust types.

use serde_json::{Value, json};

use crate::{CalculatePoints, ENVELOPE_VERSION, Job, RefreshViews, RepairPipeline, ScoreMatch};

/// The schema of a whole envelope carrying job type `J`.
pub fn envelope_schema<J: Job>() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("https://tally.invalid/schemas/{}.json", J::KIND),
        "title": format!("tally job envelope: {}", J::KIND),
        "description": "Written by `cargo test -p tally-jobs` (UPDATE_SCHEMAS=1); do not edit by hand.",
        "type": "object",
        "properties": {
            "v": { "const": ENVELOPE_VERSION },
            "id": { "type": "string", "minLength": 1, "maxLength": 128 },
            "kind": { "const": J::KIND },
            "queue": { "const": J::QUEUE },
            "payload": J::payload_schema(),
            "policy": policy_schema(),
            "createdAtMs": { "type": "integer", "minimum": 0 },
            "dedupKey": { "type": "string", "minLength": 1 },
            "trace": {
                "type": "object",
                "properties": {
                    "traceparent": { "type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$" },
                    "tracestate": { "type": "string" }
                },
                "required": ["traceparent"],
                "additionalProperties": false
            }
        },
        "required": ["v", "id", "kind", "queue", "payload", "policy", "createdAtMs"],
        "additionalProperties": false
    })
}

fn policy_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "maxAttempts": { "type": "integer", "minimum": 1 },
            "backoff": {
                "type": "object",
                "properties": {
                    "type": { "type": "string", "enum": ["exponential", "fixed"] },
                    "baseMs": { "type": "integer", "minimum": 0 },
                    "maxMs": { "type": "integer", "minimum": 0 },
                    "jitter": { "type": "boolean" }
                },
                "required": ["type", "baseMs", "maxMs"],
                "additionalProperties": false
            },
            "timeoutMs": { "type": "integer", "minimum": 1 },
            "priority": { "type": "string", "enum": ["high", "normal", "low"] }
        },
        "required": ["maxAttempts", "backoff", "timeoutMs", "priority"],
        "additionalProperties": false
    })
}

/// Every job kind's envelope schema, as `(kind, schema)`, in a stable order.
pub fn all() -> Vec<(&'static str, Value)> {
    vec![
        (ScoreMatch::KIND, envelope_schema::<ScoreMatch>()),
        (CalculatePoints::KIND, envelope_schema::<CalculatePoints>()),
        (RefreshViews::KIND, envelope_schema::<RefreshViews>()),
        (RepairPipeline::KIND, envelope_schema::<RepairPipeline>()),
    ]
}
