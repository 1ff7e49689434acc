//! A bounded fuzz run of the real gateway: a few hundred requests with random
//! methods, paths, query strings, headers and bodies, well-formed and not,
//! sent as raw bytes to a server bound on a free port with a real Redis.
//!
//! Whatever arrives, the gateway must not panic, must not answer 5xx (Redis
//! is up, so nothing here is the server's fault), must answer every
//! well-formed request, must never enqueue a job (nor answer 200 on the cron
//! route) unless the request carried the right secret, and must not turn
//! invented methods into metric labels. The run is reproducible: set
//! `FUZZ_SEED` to the seed a failure names.
//!
//! This file is its own test binary so that the panic hook it installs sees
//! only the gateway's panics.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use cron_gateway::{Application, Settings, auth::CronSecret};
use rand::{Rng, SeedableRng as _, rngs::StdRng, seq::IndexedRandom as _};
use tally_jobs::{Job as _, RepairPipeline};
use tally_queue::{QueueAdmin, QueueClient, QueueConfig};
use tally_testkit::http::get;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::oneshot,
};

const SECRET: &str = "fuzz-secret-0123456789";
const MAX_BODY: usize = 1024;
const CRON: &str = "/api/cron/update-stats";

/// Panics anywhere in this process (the gateway's workers included).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
}

/// One generated request.
#[derive(Debug)]
struct Request {
    /// The bytes sent.
    bytes: Vec<u8>,
    /// Valid HTTP/1.1 that the server must answer.
    well_formed: bool,
    /// Carries `Authorization: Bearer <SECRET>` (or a spelling the gateway
    /// accepts as the same secret).
    authorized: bool,
    /// Goes to the cron route (so a 200 there enqueued a job).
    cron: bool,
}

/// Characters the server accepts in a method besides letters and digits
/// (`#$%&'` make it answer 400 before routing).
const METHOD_SYMBOLS: &[u8] = b"!*+-.^_`|~";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Safe in a path or query without encoding.
const PATH_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/";
/// Visible ASCII and space: a header value needs nothing else.
const VALUE_CHARS: &[u8] =
    b" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";

fn pick(rng: &mut StdRng, alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| char::from(*alphabet.choose(rng).expect("non-empty")))
        .collect()
}

fn method(rng: &mut StdRng) -> String {
    match rng.random_range(0..20) {
        0..=11 => ["GET", "POST"].choose(rng).expect("some").to_string(),
        12 => ["PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
            .choose(rng)
            .expect("some")
            .to_string(),
        13 | 14 => ["CONNECT", "TRACE", "get", "post", "PROPFIND", "PURGE"]
            .choose(rng)
            .expect("some")
            .to_string(),
        _ => {
            let alphabet: Vec<u8> = ALNUM.iter().chain(METHOD_SYMBOLS).copied().collect();
            let len = rng.random_range(1..24);
            pick(rng, &alphabet, len)
        }
    }
}

fn query(rng: &mut StdRng) -> String {
    let pairs = rng.random_range(0..4);
    let mut out = Vec::new();
    for _ in 0..pairs {
        let key = if rng.random_bool(0.6) {
            "scope".to_owned()
        } else {
            let len = rng.random_range(0..8);
            pick(rng, ALNUM, len)
        };
        let value = match rng.random_range(0..6) {
            0 => "all".to_owned(),
            1 => "leaderboard".to_owned(),
            2 => "standings".to_owned(),
            3 => ["%zz", "%", "%00", "%ff%fe", "ALL", "all%20", "+"]
                .choose(rng)
                .expect("some")
                .to_string(),
            _ => {
                let len = rng.random_range(0..40);
                pick(rng, PATH_CHARS, len)
            }
        };
        out.push(if rng.random_bool(0.9) {
            format!("{key}={value}")
        } else {
            key
        });
    }
    out.join("&")
}

fn path(rng: &mut StdRng) -> (String, bool) {
    let base = match rng.random_range(0..10) {
        0..=5 => CRON.to_owned(),
        6 => [
            "/api/cron/update-stats/",
            "/api/cron",
            "/api/cron/update-stats/x",
            "//api/cron/update-stats",
        ]
        .choose(rng)
        .expect("some")
        .to_string(),
        7 => ["/healthz", "/readyz", "/metrics", "/", "*"]
            .choose(rng)
            .expect("some")
            .to_string(),
        8 => format!("http://gateway.invalid{CRON}"),
        _ => {
            let len = rng.random_range(0..200);
            format!("/{}", pick(rng, PATH_CHARS, len))
        }
    };
    let cron = base == CRON || base.ends_with(&format!("invalid{CRON}"));
    if rng.random_bool(0.6) {
        (format!("{base}?{}", query(rng)), cron)
    } else {
        (base, cron)
    }
}

/// An `Authorization` header value, and whether it is the right secret.
fn authorization(rng: &mut StdRng) -> Option<(String, bool)> {
    let wrong = [
        format!("Bearer {}", &SECRET[..SECRET.len() - 1]),
        format!("Bearer {SECRET}x"),
        format!("Bearer {}", SECRET.to_uppercase()),
        format!("Basic {SECRET}"),
        SECRET.to_owned(),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        format!("BEARER {SECRET}"),
        format!("Bearer{SECRET}"),
        "Bearer wrong-secret-0123456789".to_owned(),
    ];
    match rng.random_range(0..10) {
        0 | 1 => None,
        2..=4 => Some((format!("Bearer {SECRET}"), true)),
        5 => Some((format!("bearer   {SECRET}"), true)),
        6..=8 => Some((wrong.choose(rng).expect("some").clone(), false)),
        _ => {
            let len = rng.random_range(0..60);
            Some((pick(rng, VALUE_CHARS, len).trim().to_owned(), false))
        }
    }
}

fn headers(rng: &mut StdRng) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for _ in 0..rng.random_range(0..8) {
        let (name, value) = match rng.random_range(0..6) {
            0 => ("Content-Type".to_owned(), {
                let len = rng.random_range(0..30);
                pick(rng, VALUE_CHARS, len)
            }),
            1 => ("traceparent".to_owned(), {
                if rng.random_bool(0.5) {
                    format!("00-{:032x}-{:016x}-01", rng.random::<u128>(), rng.random::<u64>())
                } else {
                    let len = rng.random_range(0..60);
                    pick(rng, VALUE_CHARS, len)
                }
            }),
            2 => (
                ["Accept", "Cookie", "X-Forwarded-For", "User-Agent", "Origin"]
                    .choose(rng)
                    .expect("some")
                    .to_string(),
                {
                    let len = rng.random_range(0..100);
                    pick(rng, VALUE_CHARS, len)
                },
            ),
            _ => {
                let name_len = rng.random_range(1..20);
                let value_len = rng.random_range(0..200);
                (
                    format!("x-{}", pick(rng, ALNUM, name_len)),
                    pick(rng, VALUE_CHARS, value_len),
                )
            }
        };
        out.push((name, value.trim().to_owned()));
    }
    out
}

fn body(rng: &mut StdRng) -> Vec<u8> {
    let len = match rng.random_range(0..5) {
        0 | 1 => 0,
        2 => rng.random_range(1..64),
        3 => rng.random_range(64..=MAX_BODY),
        _ => rng.random_range(MAX_BODY + 1..3 * MAX_BODY),
    };
    (0..len).map(|_| rng.random()).collect()
}

fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body.chunks(100) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A well-formed request, then (sometimes) broken in one of many ways.
fn request(rng: &mut StdRng) -> Request {
    let method = method(rng);
    let (target, cron) = path(rng);
    let mut headers = headers(rng);
    let auth = authorization(rng);
    let authorized = auth.as_ref().is_some_and(|(_, ok)| *ok);
    if let Some((value, _)) = auth {
        let at = rng.random_range(0..=headers.len());
        headers.insert(at, ("Authorization".to_owned(), value));
    }
    let body = body(rng);
    let use_chunked = !body.is_empty() && rng.random_bool(0.2);
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: gateway.invalid\r\nConnection: close\r\n");
    for (name, value) in &headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    let payload = if use_chunked {
        head.push_str("Transfer-Encoding: chunked\r\n");
        chunked(&body)
    } else {
        if !body.is_empty() || rng.random_bool(0.3) {
            let _ = write!(head, "Content-Length: {}\r\n", body.len());
        }
        body
    };
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&payload);
    let mut request = Request {
        bytes,
        well_formed: true,
        authorized,
        cron,
    };
    if rng.random_bool(0.35) {
        break_request(rng, &mut request);
    }
    request
}

/// Turns a request into something no HTTP/1.1 client would send.
fn break_request(rng: &mut StdRng, request: &mut Request) {
    request.well_formed = false;
    let bytes = &mut request.bytes;
    let end_of_line = bytes.iter().position(|&b| b == b'\r').unwrap_or(bytes.len());
    match rng.random_range(0..10) {
        // Cut anywhere.
        0 => bytes.truncate(rng.random_range(0..bytes.len())),
        // A random byte replaced, anywhere.
        1 => {
            let at = rng.random_range(0..bytes.len());
            bytes[at] = rng.random();
        }
        // Control bytes or non-ASCII in the request line.
        2 => {
            let at = rng.random_range(0..end_of_line);
            let junk = [b"\0".as_slice(), b" ", b"\n", b"\xc3\xa9", b"\x7f", b"#$%&'"];
            let insert = junk.choose(rng).expect("some");
            bytes.splice(at..at, insert.iter().copied());
        }
        // Another protocol version.
        3 => {
            let line = String::from_utf8_lossy(&bytes[..end_of_line]).into_owned();
            let version = ["HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "http/1.1", "HTTP/1.1 extra", ""]
                .choose(rng)
                .expect("some");
            let fixed = line.replace("HTTP/1.1", version);
            bytes.splice(..end_of_line, fixed.into_bytes());
        }
        // A header line without a colon, or with a bare LF or NUL in it.
        4 => {
            let extra = [
                b"NoColonHere\r\n".as_slice(),
                b"X-Bad: a\nb\r\n",
                b"X-Nul: a\0b\r\n",
                b" leading-space: x\r\n",
                b"X-Bad Name: x\r\n",
                b"X-Utf8: \xff\xfe\r\n",
            ];
            let insert = extra.choose(rng).expect("some");
            let at = end_of_line + 2;
            bytes.splice(at..at, insert.iter().copied());
        }
        // Content-Length that lies, or is not a number, or comes twice.
        5 => {
            let value = [
                "99999",
                "-1",
                "abc",
                "1, 2",
                "18446744073709551616",
                "0\r\nContent-Length: 7",
            ]
            .choose(rng)
            .expect("some");
            let line = format!("Content-Length: {value}\r\n");
            let at = end_of_line + 2;
            bytes.splice(at..at, line.into_bytes());
        }
        // Broken chunked encoding.
        6 => {
            let line = b"Transfer-Encoding: chunked\r\n";
            let at = end_of_line + 2;
            bytes.splice(at..at, line.iter().copied());
            bytes.extend_from_slice(b"zz\r\nnot a chunk\r\n");
        }
        // Far too many headers, or one far too long.
        7 => {
            let at = end_of_line + 2;
            let extra = if rng.random_bool(0.5) {
                (0..200).fold(String::new(), |mut s, i| {
                    let _ = write!(s, "X-Many-{i}: {i}\r\n");
                    s
                })
            } else {
                format!("X-Long: {}\r\n", "x".repeat(140_000))
            };
            bytes.splice(at..at, extra.into_bytes());
        }
        // Pure noise.
        8 => {
            let len = rng.random_range(1..512);
            *bytes = (0..len).map(|_| rng.random()).collect();
        }
        // Two requests in one, the second garbage.
        _ => bytes.extend_from_slice(b"GARBAGE / HTTP/1.1\r\nHost: \0\r\n\r\n"),
    }
}

/// What came back: the status of the first response, if any, and the body.
#[derive(Debug)]
struct Answer {
    status: Option<u16>,
    text: String,
}

async fn send(addr: SocketAddr, bytes: &[u8]) -> Result<Answer, String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        // The server may answer and close before reading everything.
        let _ = stream.write_all(bytes).await;
        let _ = stream.shutdown().await;
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        // `HTTP/1.1 200 OK`, or `HTTP/1.0 …` to an HTTP/1.0 request.
        let status = text
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(|code| code.parse().ok());
        Ok(Answer { status, text })
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
}

fn preview(bytes: &[u8]) -> String {
    let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
    format!("{shown:?}{}", if bytes.len() > 300 { "…" } else { "" })
}

/// What a run of requests saw.
#[derive(Debug, Default)]
struct Tally {
    /// Answers per status class (index 2 is 2xx).
    classes: [usize; 6],
    /// Job ids answered to authorized requests.
    job_ids: std::collections::HashSet<String>,
    /// Authorized requests sent.
    authorized: usize,
}

/// Sends `n` generated requests (only unauthorized ones when `anonymous`)
/// and checks each answer as it comes.
async fn fuzz(addr: SocketAddr, rng: &mut StdRng, seed: u64, n: usize, anonymous: bool) -> Tally {
    let mut tally = Tally::default();
    let mut sent = 0;
    while sent < n {
        let request = request(rng);
        if anonymous && request.authorized {
            continue;
        }
        sent += 1;
        let context = || {
            format!(
                "FUZZ_SEED={seed}, request {sent} (well-formed: {}, authorized: {}):\n{}",
                request.well_formed,
                request.authorized,
                preview(&request.bytes)
            )
        };
        let answer = send(addr, &request.bytes)
            .await
            .unwrap_or_else(|e| panic!("{e}; {}", context()));
        assert_eq!(PANICS.load(Ordering::SeqCst), 0, "the gateway panicked; {}", context());
        if request.well_formed {
            assert!(
                answer.status.is_some(),
                "no response to a well-formed request: {:?}; {}",
                answer.text,
                context()
            );
        }
        tally.authorized += usize::from(request.authorized);
        let Some(status) = answer.status else { continue };
        tally.classes[usize::from(status / 100).min(5)] += 1;
        assert!(status < 500, "{status} answer: {}; {}", answer.text, context());
        let enqueued = status == 200 && answer.text.contains(r#""success":true"#);
        if enqueued || (status == 200 && request.cron) {
            assert!(
                request.authorized,
                "200 on the cron route without the secret: {}; {}",
                answer.text,
                context()
            );
        }
        if enqueued && let Some(at) = answer.text.find(r#""jobId":""#) {
            let id: String = answer.text[at + 9..].chars().take_while(|&c| c != '"').collect();
            tally.job_ids.insert(id);
        }
    }
    tally
}

#[tokio::test]
async fn random_requests_never_panic_never_5xx_and_never_enqueue_without_the_secret() {
    tally_telemetry::init_for_tests();
    count_panics();
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let mut rng = StdRng::seed_from_u64(seed);

    let redis = tally_testkit::redis().await;
    let settings = Settings {
        bind_addr: "127.0.0.1:0".parse().expect("addr"),
        redis_url: redis.url.clone(),
        cron_secret: CronSecret::new(SECRET).expect("secret"),
        queue_prefix: redis.namespace.clone(),
        max_body_bytes: MAX_BODY,
        shutdown_timeout: Duration::from_secs(1),
        repair: Some(RepairPipeline::default()),
        database_url_set: false,
    };
    let app = Application::build(settings).await.expect("gateway builds");
    let addr = app.addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let client = QueueClient::new(&redis.url, QueueConfig::with_prefix(&redis.namespace)).expect("client");
    let admin = QueueAdmin::new(client);

    // Without the secret, whatever the request, nothing reaches the queue.
    let anonymous = fuzz(addr, &mut rng, seed, 300, true).await;
    let stats = admin.stats("stats").await.expect("stats");
    assert_eq!(stats.counters.enqueued, 0, "FUZZ_SEED={seed}: {stats:?}");
    assert_eq!(stats.ready, 0, "FUZZ_SEED={seed}: {stats:?}");
    assert!(anonymous.job_ids.is_empty());
    let repairs = admin.stats(RepairPipeline::QUEUE).await.expect("stats");
    assert_eq!(
        repairs.counters.enqueued, 0,
        "FUZZ_SEED={seed}: no repair either: {repairs:?}"
    );

    // Mixed in with the secret: every job enqueued was answered to a request
    // that carried it.
    let mixed = fuzz(addr, &mut rng, seed, 500, false).await;
    let stats = admin.stats("stats").await.expect("stats");
    assert_eq!(
        stats.counters.enqueued,
        mixed.job_ids.len() as u64,
        "FUZZ_SEED={seed}: jobs enqueued vs job ids answered to authorized requests {:?}",
        mixed.job_ids
    );
    assert!(
        mixed.authorized > 0 && mixed.classes[2] > 0 && mixed.classes[4] > 0,
        "FUZZ_SEED={seed}: a varied run: {mixed:?} {anonymous:?}"
    );

    // And whatever methods came in, the metrics name only the standard ones.
    let metrics = get(addr, "/metrics").await.expect("metrics");
    assert_eq!(metrics.status, 200);
    let allowed = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other"];
    for labels in metrics.body.split(r#"method=""#).skip(1) {
        let method = labels.split('"').next().unwrap_or_default();
        assert!(
            allowed.contains(&method),
            "FUZZ_SEED={seed}: method label {method:?} in:\n{}",
            metrics.body
        );
    }

    assert_eq!(get(addr, "/healthz").await.expect("healthz").status, 200);
    assert_eq!(PANICS.load(Ordering::SeqCst), 0);
    let _ = stop.send(());
    server.await.expect("joined").expect("clean shutdown");
}
