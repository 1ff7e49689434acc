//! Property test of the per-job state format (`lua/_shared.lua`), run in
//! the real Redis Lua: whatever the counters, flags and dedup key, a state
//! written by `format_state` reads back the same through `parse_state`, and
//! `holds_token` recognises exactly the token it was written with.

use proptest::prelude::*;

/// The shared helpers, then a body that formats, parses and reports.
const ROUND_TRIP: &str = concat!(
    include_str!("../lua/_shared.lua"),
    r"
local st = {
  token = tonumber(ARGV[1]),
  attempts = tonumber(ARGV[2]),
  crashes = tonumber(ARGV[3]),
  errors = tonumber(ARGV[4]),
  prio = ARGV[5],
  held = ARGV[6] == '1',
  held_losses = tonumber(ARGV[7]),
}
if ARGV[8] ~= '' then
  st.dedup = ARGV[8]
end
local s = format_state(st)
local p = parse_state(s)
if not p then
  return { s, 'unparsed' }
end
return {
  s,
  int(p.token), p.attempts, p.crashes, p.errors, p.prio,
  p.held and 1 or 0, p.held_losses, p.dedup or '',
  holds_token(s, ARGV[9]) and 1 or 0,
}
"
);

#[derive(Debug, Clone)]
struct State {
    token: u64,
    attempts: u32,
    crashes: u32,
    errors: u32,
    prio: &'static str,
    held: bool,
    held_losses: u32,
    dedup: String,
}

fn state() -> impl Strategy<Value = State> {
    (
        // Tokens are Redis's clock in µs and up: below 2^53.
        prop_oneof![Just(0_u64), 1_u64..1000, 1_000_000_000_000_000_u64..(1_u64 << 53)],
        0_u32..200,
        0_u32..200,
        0_u32..200,
        prop_oneof![Just("h"), Just("n"), Just("l")],
        any::<bool>(),
        0_u32..200,
        // Dedup keys are free text: colons, digits, letters, unicode.
        prop_oneof![Just(String::new()), "[0-9:a-zA-Z]{1,12}", ".{1,20}"],
    )
        .prop_map(
            |(token, attempts, crashes, errors, prio, held, held_losses, dedup)| State {
                token,
                attempts,
                crashes,
                errors,
                prio,
                held,
                held_losses,
                dedup,
            },
        )
}

#[test]
fn per_job_state_round_trips_through_the_lua_format() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let redis = runtime.block_on(tally_testkit::redis());
    let conn = runtime.block_on(redis.connection());
    let script = redis::Script::new(ROUND_TRIP);
    let config = ProptestConfig::with_cases(300);
    proptest!(config, |(st in state(), other in prop_oneof![Just(None), any::<u64>().prop_map(Some)])| {
        let probe = other.unwrap_or(st.token);
        let reply: Vec<redis::Value> = runtime.block_on(async {
            let mut conn = conn.clone();
            script
                .arg(st.token)
                .arg(st.attempts)
                .arg(st.crashes)
                .arg(st.errors)
                .arg(st.prio)
                .arg(if st.held { "1" } else { "0" })
                .arg(st.held_losses)
                .arg(&st.dedup)
                .arg(probe)
                .invoke_async(&mut conn)
                .await
        }).expect("eval");
        let text: String = redis::from_redis_value_ref(&reply[0]).expect("state");
        prop_assert_eq!(reply.len(), 10, "state {:?} did not parse", text);
        let field = |i: usize| -> String { redis::from_redis_value_ref(&reply[i]).expect("field") };
        let number = |i: usize| -> u64 { redis::from_redis_value_ref(&reply[i]).expect("number") };
        prop_assert_eq!(field(1), st.token.to_string(), "token of {}", text);
        prop_assert_eq!(
            (number(2), number(3), number(4)),
            (u64::from(st.attempts), u64::from(st.crashes), u64::from(st.errors)),
            "counters of {}", text
        );
        prop_assert_eq!(field(5), st.prio, "priority of {}", text);
        prop_assert_eq!(number(6) == 1, st.held, "held flag of {}", text);
        prop_assert_eq!(number(7), u64::from(st.held_losses), "held losses of {}", text);
        prop_assert_eq!(field(8), st.dedup.clone(), "dedup key of {}", text);
        let holds = number(9) == 1;
        prop_assert_eq!(holds, st.token != 0 && probe == st.token, "holds_token({}, {})", text, probe);
    });
}
