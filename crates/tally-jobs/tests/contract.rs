//! The wire contract, pinned: golden envelopes, round trips, and the JSON
//! Schemas in `docs/schemas/`.
//!
//! A field renamed in a job type changes its serde form, so the golden file
//! comparison fails, and the schema check fails too because the serialised
//! keys no longer match the schema's properties. To accept an intended change,
//! run with `UPDATE_GOLDEN=1` / `UPDATE_SCHEMAS=1` and review the diff.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tally_jobs::{
    CalculatePoints, Envelope, EnvelopeError, Job, Priority, RefreshScope, RefreshViews, RepairPipeline, ScoreMatch,
    TraceContext, schema,
};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/schemas")
}

/// A fixed envelope of `J::example()` so the golden bytes are stable.
fn golden_envelope<J: Job>() -> Envelope {
    let mut envelope = Envelope::new(&J::example(), "0192f5a4-7b1e-7c3d-9a2b-5f6e7d8c9b0a", 1_764_288_000_000)
        .expect("example encodes");
    envelope.trace = Some(TraceContext {
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        tracestate: None,
    });
    envelope
}

fn check_golden<J: Job + PartialEq + std::fmt::Debug>() {
    let path = golden_dir().join(format!("{}.json", J::KIND));
    let envelope = golden_envelope::<J>();
    let pretty = serde_json::to_string_pretty(&envelope).expect("serialises") + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &pretty).expect("write golden");
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display()));
    assert_eq!(
        pretty,
        expected,
        "wire format of {} changed; see {}",
        J::KIND,
        path.display()
    );

    // And the golden bytes decode back into the same job.
    let decoded = Envelope::decode(expected.as_bytes()).expect("golden decodes");
    assert_eq!(decoded, envelope);
    assert_eq!(decoded.payload_as::<J>().expect("payload decodes"), J::example());
}

#[test]
fn golden_score_match() {
    check_golden::<ScoreMatch>();
}

#[test]
fn golden_calculate_points() {
    check_golden::<CalculatePoints>();
}

#[test]
fn golden_refresh_views() {
    check_golden::<RefreshViews>();
}

#[test]
fn golden_repair_pipeline() {
    check_golden::<RepairPipeline>();
}

#[test]
fn every_job_round_trips_through_the_compact_encoding() {
    fn round_trip<J: Job + PartialEq + std::fmt::Debug>(job: &J) {
        let envelope = Envelope::new(job, "id-1", 7).expect("encodes");
        let back = Envelope::decode(envelope.encode().as_bytes()).expect("decodes");
        assert_eq!(back, envelope);
        assert_eq!(&back.payload_as::<J>().expect("payload"), job);
    }
    round_trip(&ScoreMatch { match_id: i64::MAX });
    for priority in Priority::ALL {
        round_trip(&CalculatePoints { match_id: 1, priority });
    }
    for scope in RefreshScope::ALL {
        round_trip(&RefreshViews { scope });
    }
    round_trip(&RepairPipeline {
        grace_secs: 0,
        batch: RepairPipeline::MAX_BATCH,
    });
}

#[test]
fn policies_and_dedup_keys_are_declared_by_the_job_types() {
    let e = Envelope::new(
        &CalculatePoints {
            match_id: 5,
            priority: Priority::Low,
        },
        "x",
        0,
    )
    .expect("encodes");
    assert_eq!((e.queue.as_str(), e.kind.as_str()), ("stats", "calculate_points"));
    assert_eq!(e.policy.priority, Priority::Low);
    assert_eq!(e.policy.max_attempts, 3);
    assert_eq!(e.policy.backoff.base_ms, 5_000);
    assert_eq!(e.policy.timeout_ms, 120_000);
    assert_eq!(e.dedup_key, None);

    let r = Envelope::new(
        &RefreshViews {
            scope: RefreshScope::Standings,
        },
        "y",
        0,
    )
    .expect("encodes");
    assert_eq!(r.dedup_key.as_deref(), Some("refresh_views:standings"));
    assert_eq!(
        Envelope::new(&ScoreMatch { match_id: 1 }, "z", 0)
            .expect("encodes")
            .queue,
        "scoring"
    );

    // Repairs coalesce with each other whatever their bounds, on the
    // scoring queue, with their own policy.
    let repair = Envelope::new(&RepairPipeline::default(), "r", 0).expect("encodes");
    assert_eq!(
        (repair.queue.as_str(), repair.kind.as_str()),
        ("scoring", "repair_pipeline")
    );
    assert_eq!(repair.dedup_key.as_deref(), Some("repair_pipeline"));
    assert_eq!(
        Envelope::new(
            &RepairPipeline {
                grace_secs: 0,
                batch: 1
            },
            "s",
            0
        )
        .expect("encodes")
        .dedup_key,
        repair.dedup_key
    );
    assert_eq!(
        (
            repair.policy.max_attempts,
            repair.policy.timeout_ms,
            repair.policy.backoff.max_ms
        ),
        (5, 60_000, 60_000)
    );
}

#[test]
fn a_repair_checks_its_bounds_and_defaults_them() {
    let e = Envelope::decode(
        br#"{"v":1,"id":"a","kind":"repair_pipeline","queue":"scoring","payload":{},
             "policy":{"maxAttempts":5,"backoff":{"type":"exponential","baseMs":5000,"maxMs":60000},"timeoutMs":60000,"priority":"normal"},
             "createdAtMs":1}"#,
    )
    .expect("minimal envelope decodes");
    let repair = e.payload_as::<RepairPipeline>().expect("payload");
    assert_eq!(repair, RepairPipeline::default());
    assert_eq!((repair.grace_secs, repair.batch), (120, 200));
    assert_eq!(repair.out_of_bounds(), None);
    for (grace_secs, batch) in [
        (0, 0),
        (0, RepairPipeline::MAX_BATCH + 1),
        (RepairPipeline::MAX_GRACE_SECS + 1, 1),
    ] {
        let bad = RepairPipeline { grace_secs, batch };
        assert!(bad.out_of_bounds().is_some(), "{bad:?}");
    }
    let edges = RepairPipeline {
        grace_secs: RepairPipeline::MAX_GRACE_SECS,
        batch: RepairPipeline::MAX_BATCH,
    };
    assert_eq!(edges.out_of_bounds(), None);
}

#[test]
fn defaults_let_producers_omit_optional_fields() {
    let e = Envelope::decode(
        br#"{"v":1,"id":"a","kind":"refresh_views","queue":"stats","payload":{},
             "policy":{"maxAttempts":3,"backoff":{"type":"exponential","baseMs":5000,"maxMs":600000},"timeoutMs":120000,"priority":"normal"},
             "createdAtMs":1}"#,
    )
    .expect("minimal envelope decodes");
    assert_eq!(
        e.payload_as::<RefreshViews>().expect("payload").scope,
        RefreshScope::All
    );
    assert!(!e.policy.backoff.jitter);
}

#[test]
fn bad_input_is_classified() {
    assert!(matches!(
        Envelope::decode(b"not json"),
        Err(EnvelopeError::Malformed(_))
    ));
    assert!(matches!(
        Envelope::decode(br#"{"v":1}"#),
        Err(EnvelopeError::Malformed(_))
    ));
    let mut future = serde_json::to_value(golden_envelope::<ScoreMatch>()).expect("value");
    future["v"] = 2.into();
    let err = Envelope::decode(future.to_string().as_bytes()).expect_err("v2 refused");
    assert!(matches!(err, EnvelopeError::UnsupportedVersion { found: 2 }));
    assert!(err.to_string().contains("unsupported envelope version 2"), "{err}");

    let envelope = golden_envelope::<ScoreMatch>();
    assert!(matches!(
        envelope.payload_as::<RefreshViews>(),
        Err(EnvelopeError::KindMismatch { .. })
    ));
    let mut wrong_shape = envelope.clone();
    wrong_shape.payload = serde_json::json!({"matchId": "forty-two"});
    let err = wrong_shape.payload_as::<ScoreMatch>().expect_err("string id refused");
    assert!(
        err.to_string().contains("payload does not match kind \"score_match\""),
        "{err}"
    );
    let mut extra = envelope;
    extra.payload = serde_json::json!({"matchId": 1, "matchID": 2});
    assert!(matches!(
        extra.payload_as::<ScoreMatch>(),
        Err(EnvelopeError::BadPayload { .. })
    ));
}

#[test]
fn checked_in_schemas_are_fresh() {
    let dir = schema_dir();
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    for (kind, schema) in schema::all() {
        let path = dir.join(format!("{kind}.json"));
        let text = serde_json::to_string_pretty(&schema).expect("serialises") + "\n";
        if update {
            std::fs::create_dir_all(&dir).expect("mkdir docs/schemas");
            std::fs::write(&path, &text).expect("write schema");
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run UPDATE_SCHEMAS=1 cargo test -p tally-jobs)",
                path.display()
            )
        });
        assert_eq!(
            on_disk,
            text,
            "{} is stale: run UPDATE_SCHEMAS=1 cargo test -p tally-jobs",
            path.display()
        );
    }
}

#[test]
fn examples_and_golden_envelopes_validate_against_their_schemas() {
    fn check<J: Job>() {
        let schema = schema::envelope_schema::<J>();
        let envelope = serde_json::to_value(golden_envelope::<J>()).expect("value");
        if let Err(e) = validate(&schema, &envelope, "$") {
            panic!("{} envelope does not match its schema: {e}", J::KIND);
        }
        // Every property the payload schema declares is one serde writes,
        // and the other way round: a renamed field breaks this.
        let payload = serde_json::to_value(J::example()).expect("value");
        let written: Vec<&String> = payload.as_object().expect("object").keys().collect();
        let payload_schema = J::payload_schema();
        let declared: Vec<&String> = payload_schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .collect();
        let (mut written, mut declared) = (written, declared);
        written.sort();
        declared.sort();
        assert_eq!(
            written,
            declared,
            "{}: payload fields and schema properties differ",
            J::KIND
        );
    }
    check::<ScoreMatch>();
    check::<CalculatePoints>();
    check::<RefreshViews>();
    check::<RepairPipeline>();
}

#[test]
fn the_schema_rejects_what_the_decoder_rejects() {
    let schema = schema::envelope_schema::<ScoreMatch>();
    let mut bad = serde_json::to_value(golden_envelope::<ScoreMatch>()).expect("value");
    bad["payload"] = serde_json::json!({"match_id": 42});
    assert!(validate(&schema, &bad, "$").is_err(), "snake_case field accepted");
    let mut bad = serde_json::to_value(golden_envelope::<ScoreMatch>()).expect("value");
    bad["policy"]["priority"] = "urgent".into();
    assert!(validate(&schema, &bad, "$").is_err(), "unknown priority accepted");
}

/// The subset of JSON Schema our schemas use: type, const, enum, minimum,
/// minLength, properties, required, additionalProperties. Small enough to
/// keep here rather than pull a validator crate into a serde-only crate.
fn validate(schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(expected) = schema.get("const")
        && expected != value
    {
        return Err(format!("{at}: expected {expected}, found {value}"));
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        return Err(format!("{at}: {value} not one of {options:?}"));
    }
    if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        let ok = match ty {
            "object" => value.is_object(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            other => return Err(format!("{at}: validator does not know type {other}")),
        };
        if !ok {
            return Err(format!("{at}: expected {ty}, found {value}"));
        }
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_i64), value.as_i64())
        && n < min
    {
        return Err(format!("{at}: {n} < minimum {min}"));
    }
    if let (Some(min), Some(s)) = (schema.get("minLength").and_then(Value::as_u64), value.as_str())
        && (s.chars().count() as u64) < min
    {
        return Err(format!("{at}: shorter than {min}"));
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                return Err(format!("{at}: missing required {name}"));
            }
        }
        for (name, field) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(sub) => validate(sub, field, &format!("{at}.{name}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{at}: unexpected property {name}"));
                }
                None => {}
            }
        }
    }
    Ok(())
}
