//! Property tests of the envelope decoder and the backoff: whatever bytes
//! another producer writes, decoding returns an error instead of panicking,
//! every envelope tally writes decodes to itself, and the worker's one-pass
//! decoder agrees with it.

use proptest::prelude::*;
use tally_jobs::{Backoff, BackoffKind, Envelope, EnvelopeError, EnvelopeRef, JobPolicy, Priority, TraceContext};

fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![Just(Priority::High), Just(Priority::Normal), Just(Priority::Low)]
}

fn backoff() -> impl Strategy<Value = Backoff> {
    (
        prop_oneof![Just(BackoffKind::Exponential), Just(BackoffKind::Fixed)],
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(kind, base_ms, max_ms, jitter)| Backoff {
            kind,
            base_ms,
            max_ms,
            jitter,
        })
}

/// A JSON value of bounded depth (the payload of another producer).
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".*".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        ".{1,40}",
        "[a-z_]{1,20}",
        "[a-z]{1,10}",
        json(),
        (1_u32..100, backoff(), any::<u64>(), priority()),
        any::<u64>(),
        proptest::option::of(".{0,30}"),
        proptest::option::of((".{0,60}", proptest::option::of(".{0,20}"))),
    )
        .prop_map(
            |(
                id,
                kind,
                queue,
                payload,
                (max_attempts, backoff, timeout_ms, priority),
                created_at_ms,
                dedup_key,
                trace,
            )| {
                Envelope {
                    v: 1,
                    id,
                    kind,
                    queue,
                    payload,
                    policy: JobPolicy {
                        max_attempts,
                        backoff,
                        timeout_ms,
                        priority,
                    },
                    created_at_ms,
                    dedup_key,
                    trace: trace.map(|(traceparent, tracestate)| TraceContext {
                        traceparent,
                        tracestate,
                    }),
                }
            },
        )
}

/// The worker's one-pass decoder ([`EnvelopeRef`]) accepts what
/// [`Envelope::decode`] accepts, with the same fields, and refuses what it
/// refuses, for the same reason.
fn decoders_agree(bytes: &[u8]) -> Result<(), TestCaseError> {
    match (Envelope::decode(bytes), EnvelopeRef::decode(bytes)) {
        (Ok(owned), Ok(borrowed)) => {
            prop_assert_eq!(owned.v, borrowed.v);
            prop_assert_eq!(&owned.id, &borrowed.id);
            prop_assert_eq!(&owned.kind, &borrowed.kind);
            prop_assert_eq!(&owned.queue, &borrowed.queue);
            prop_assert_eq!(owned.policy, borrowed.policy);
            prop_assert_eq!(owned.created_at_ms, borrowed.created_at_ms);
            prop_assert_eq!(owned.dedup_key.as_deref(), borrowed.dedup_key.as_deref());
            prop_assert_eq!(&owned.trace, &borrowed.trace);
            let payload: serde_json::Value = serde_json::from_str(borrowed.payload.get()).expect("raw payload is JSON");
            prop_assert_eq!(owned.payload, payload);
        }
        (Err(EnvelopeError::UnsupportedVersion { found: a }), Err(EnvelopeError::UnsupportedVersion { found: b })) => {
            prop_assert_eq!(a, b);
        }
        (Err(EnvelopeError::Malformed(_)), Err(EnvelopeError::Malformed(_))) => {}
        (owned, borrowed) => prop_assert!(false, "Envelope: {owned:?}, EnvelopeRef: {borrowed:?}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_workers_decoder_agrees_with_the_envelope_on_any_input(
        envelope in envelope(),
        value in json(),
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        cut in any::<prop::sample::Index>(),
        junk in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let encoded = envelope.encode().into_bytes();
        decoders_agree(&encoded)?;
        decoders_agree(value.to_string().as_bytes())?;
        decoders_agree(&bytes)?;
        let mut damaged = encoded.clone();
        let at = cut.index(damaged.len() + 1);
        damaged.splice(at..at, junk);
        decoders_agree(&damaged)?;
        damaged.truncate(at);
        decoders_agree(&damaged)?;
        // Another version with the same fields, and a payload left out.
        let mut other = serde_json::to_value(&envelope).expect("value");
        other["v"] = serde_json::json!(2);
        decoders_agree(other.to_string().as_bytes())?;
        other["v"] = serde_json::json!(1);
        other.as_object_mut().expect("object").remove("payload");
        decoders_agree(other.to_string().as_bytes())?;
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Envelope::decode(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics_the_decoder(value in json()) {
        let _ = Envelope::decode(value.to_string().as_bytes());
    }

    #[test]
    fn every_envelope_decodes_to_itself(envelope in envelope()) {
        let decoded = Envelope::decode(envelope.encode().as_bytes());
        prop_assert_eq!(decoded.ok(), Some(envelope));
    }

    #[test]
    fn a_damaged_envelope_is_an_error_or_an_envelope_never_a_panic(
        envelope in envelope(),
        cut in any::<prop::sample::Index>(),
        junk in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut bytes = envelope.encode().into_bytes();
        let at = cut.index(bytes.len() + 1);
        bytes.splice(at..at, junk);
        let _ = Envelope::decode(&bytes);
        bytes.truncate(at);
        let _ = Envelope::decode(&bytes);
    }

    #[test]
    fn backoff_delays_never_overflow_and_respect_the_cap(
        backoff in backoff(),
        attempt in any::<u32>(),
        unit in any::<f64>(),
    ) {
        let delay = backoff.delay_ms(attempt, unit);
        prop_assert!(delay <= backoff.max_ms);
    }
}
