//! The dashboard in a real browser: Debian's Chromium, headless, driven
//! through chromedriver (WebDriver, `fantoccini` over plain HTTP), against
//! the real `admin-console` binary, a real Redis and real workers running
//! in this test.
//!
//! The story: a wrong token shows the login page and no data; the right
//! one shows the queues; a dead job is inspected and retried, and the
//! worker completes it; a job whose payload holds a script shows it as
//! text; a paused queue takes jobs and none is claimed, until it is
//! resumed and drains; a limit is set and removed; the workers page lists
//! the processes; the overview fits a phone's width; and the console's
//! output never holds a token. Every wait polls the page (or Redis) for
//! its condition: no fixed sleeps.
//!
//! With `ADMIN_SCREENSHOTS=1` it saves the main pages to `docs/img/`
//! (the README shows them); otherwise it writes nothing.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian packages
//! `chromium` and `chromium-driver`; `scripts/ensure-deps.sh` installs them).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Behaviour, ConsoleProcess, READ_TOKEN, TOKEN, TestWorker, eventually, fast_config, script_calls};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tally_jobs::{CalculatePoints, Envelope, Priority, ScoreMatch};
use tally_queue::{EnqueueOptions, Producer, QueueAdmin, QueueClient};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// A bound on every wait (never reached when things work; generous because
/// `make test` runs every test binary at once on two cores).
const WAIT: Duration = Duration::from_secs(60);

/// chromedriver on a free port, stopped (by its pid) on drop.
struct Driver {
    child: Child,
    url: String,
    profile: PathBuf,
}

impl Driver {
    async fn start() -> Driver {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(program).exists(),
                "{program} is missing: install the Debian packages chromium and chromium-driver (scripts/ensure-deps.sh does, as root)"
            );
        }
        let profile = std::env::temp_dir().join(format!("admin-console-chromium-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).expect("profile dir");
        for _ in 0..3 {
            let port = tally_testkit::free_port().expect("port");
            let mut child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts");
            let addr = format!("127.0.0.1:{port}").parse().expect("addr");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                if let Ok(r) = tally_testkit::http::get(addr, "/status").await
                    && r.status == 200
                    && r.json()["value"]["ready"] == true
                {
                    return Driver {
                        child,
                        url: format!("http://127.0.0.1:{port}"),
                        profile,
                    };
                }
                if tokio::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("chromedriver did not start");
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--window-size=1280,860",
                    "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", self.profile.display()),
                ],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Clicks the element `css` selects (which must be there).
async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("find {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Runs `expr` (a JavaScript expression) in the page until it is truthy.
async fn until(browser: &Client, what: &str, expr: &str) {
    let script = format!("try {{ return Boolean({expr}); }} catch (e) {{ return false; }}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if browser.execute(&script, vec![]).await.expect("script runs") == json!(true) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let url = browser.current_url().await.map(|u| u.to_string()).unwrap_or_default();
            let body = browser
                .execute("return document.body ? document.body.innerText : ''", vec![])
                .await
                .unwrap_or(Value::Null);
            panic!(
                "timed out waiting for: {what} ({expr}) on {url}; the page says:\n{}",
                body.as_str().unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The trimmed text of the first element matching `css`, if any.
async fn text(browser: &Client, css: &str) -> Option<String> {
    let v = browser
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : null;",
            vec![json!(css)],
        )
        .await
        .expect("script runs");
    v.as_str().map(str::to_owned)
}

/// A JavaScript expression: the text of `css` equals `value`.
fn text_is(css: &str, value: &str) -> String {
    format!(
        "(document.querySelector({css}) || {{}}).textContent === {value}",
        css = json!(css),
        value = json!(value)
    )
}

/// Waits until the page's script has refreshed it after `since` (ms since
/// the epoch), so what it shows was read after that moment.
async fn refreshed_after(browser: &Client, since: u64) {
    until(
        browser,
        "a refresh of the page",
        &format!("Number(document.body.dataset.refreshed || 0) > {since}"),
    )
    .await;
}

async fn path(browser: &Client) -> String {
    browser.current_url().await.expect("url").path().to_owned()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Saves a screenshot of the page to `docs/img/<name>.png` when
/// `ADMIN_SCREENSHOTS=1`.
async fn screenshot(browser: &Client, name: &str) {
    if std::env::var("ADMIN_SCREENSHOTS").as_deref() != Ok("1") {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/img");
    std::fs::create_dir_all(&dir).expect("docs/img");
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("write the screenshot");
}

async fn log_in(browser: &Client, base: &str, token: &str) {
    browser.goto(&format!("{base}/login")).await.expect("login page");
    let field = browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#token"))
        .await
        .expect("token field");
    field.send_keys(token).await.expect("type the token");
    click(browser, "#login-submit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_the_queues_in_a_real_browser() {
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    // The story runs on a task of its own, so that when it fails the
    // browser session is still closed (chromedriver then stops Chromium)
    // before the failure is reported.
    let outcome = tokio::spawn(story(browser.clone())).await;
    let _ = browser.close().await;
    drop(driver);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn story(browser: Client) {
    let redis = tally_testkit::redis().await;
    let client = QueueClient::connect(&redis.url, fast_config(&redis.namespace))
        .await
        .expect("redis");
    let producer = Producer::new(client.clone());
    let admin = QueueAdmin::new(client.clone());
    let console = ConsoleProcess::start(&redis.url, &redis.namespace, &[("RUST_LOG", "debug")]).await;
    let base = console.base();

    // Dead jobs on scoring: refused by a real worker, and one whose kind no
    // worker knows and whose payload carries a script.
    let scoring = Behaviour::refusing();
    let scoring_worker = TestWorker::start(&client, "scoring", &scoring, false);
    for (id, match_id) in [("match-17-score", 17), ("match-18-score", 18), ("match-21-score", 21)] {
        let options = EnqueueOptions {
            id: Some(id.into()),
            ..EnqueueOptions::default()
        };
        producer
            .enqueue_with(&ScoreMatch { match_id }, options)
            .await
            .expect("enqueue");
    }
    let mut hostile =
        Envelope::new(&ScoreMatch { match_id: 99 }, "hostile-1", tally_queue::now_ms()).expect("envelope");
    hostile.kind = "import_<b>fixtures</b>".into();
    hostile.payload =
        json!({ "note": "<script>window.__pwned = true</script><img src=x onerror=\"window.__pwned = true\">" });
    producer.enqueue_envelope(hostile).await.expect("enqueue");
    eventually("four dead jobs", WAIT, || async {
        admin.stats("scoring").await.expect("stats").dead == 4
    })
    .await;
    let stats = Behaviour::completing();
    let stats_worker = TestWorker::start(&client, "stats", &stats, false);

    // 1. No session: the login page, no data. A wrong token: the same.
    browser.goto(&format!("{base}/")).await.expect("open");
    until(&browser, "the login page", "document.querySelector('#token') !== null").await;
    assert_eq!(path(&browser).await, "/login");
    log_in(&browser, &base, "wrong-token-0123456789").await;
    until(
        &browser,
        "the refusal",
        "document.querySelector('#login-error') !== null",
    )
    .await;
    assert_eq!(path(&browser).await, "/login");
    let shown = text(&browser, "body").await.unwrap_or_default();
    for data in ["scoring", "match-17", "Dead"] {
        assert!(!shown.contains(data), "the login page shows {data:?}: {shown}");
    }
    assert!(
        browser.find(Locator::Css(".card")).await.is_err(),
        "no queue card without a session"
    );

    // 2. The token: the overview, with the dead jobs.
    log_in(&browser, &base, TOKEN).await;
    until(&browser, "the overview", "document.body.dataset.page === 'overview'").await;
    until(
        &browser,
        "four dead on scoring",
        &text_is(r#".card[data-queue="scoring"] [data-field="dead"]"#, "4"),
    )
    .await;

    // 3. The dead set, then one dead job.
    click(&browser, r#".card[data-queue="scoring"] a[data-field="dead"]"#).await;
    until(&browser, "the dead set", "document.body.dataset.state === 'dead'").await;
    until(
        &browser,
        "the dead rows",
        "document.querySelectorAll('#jobs tr').length === 4",
    )
    .await;
    let error = text(&browser, r#"tr[data-id="match-17-score"] td.error-text"#)
        .await
        .unwrap_or_default();
    assert!(error.contains("refused match 17"), "{error}");
    screenshot(&browser, "dead-set").await;

    click(&browser, r#"tr[data-id="match-17-score"] a.job-link"#).await;
    until(&browser, "the job page", "document.body.dataset.page === 'job'").await;
    assert_eq!(
        text(&browser, r#".badge[data-field="state"]"#).await.as_deref(),
        Some("Dead")
    );
    assert!(
        text(&browser, "#envelope")
            .await
            .unwrap_or_default()
            .contains(r#""matchId": 17"#)
    );
    assert!(
        text(&browser, "#job-error")
            .await
            .unwrap_or_default()
            .contains("refused match 17")
    );
    screenshot(&browser, "job").await;

    // 4. Retry it; the worker (fixed now) completes it.
    scoring.set_refuse(false);
    click(&browser, r#"button[data-action="retry-job"]"#).await;
    until(
        &browser,
        "the job has completed and left the queue",
        "!document.getElementById('gone').hidden",
    )
    .await;
    assert_eq!(scoring.completed(), 1, "the worker ran it");
    browser
        .goto(&format!("{base}/queues/scoring"))
        .await
        .expect("queue page");
    until(
        &browser,
        "one completed on scoring",
        &text_is(r#"[data-field="completed"]"#, "1"),
    )
    .await;
    until(&browser, "three left dead", &text_is(r#"[data-count="dead"]"#, "3")).await;

    // 5. A payload with a script is shown as text and never runs.
    browser
        .goto(&format!("{base}/queues/scoring/jobs/hostile-1"))
        .await
        .expect("hostile job");
    until(
        &browser,
        "the hostile job's page",
        "document.body.dataset.page === 'job'",
    )
    .await;
    let envelope = text(&browser, "#envelope").await.unwrap_or_default();
    assert!(
        envelope.contains("<script>window.__pwned = true</script>"),
        "shown as text: {envelope}"
    );
    assert!(
        text(&browser, "#job-error")
            .await
            .unwrap_or_default()
            .contains("import_<b>fixtures</b>")
    );
    refreshed_after(&browser, now_ms()).await;
    let verdict = browser
        .execute(
            "return [typeof window.__pwned, document.scripts.length, document.querySelectorAll('main img, main b').length];",
            vec![],
        )
        .await
        .expect("script runs");
    assert_eq!(verdict, json!(["undefined", 1, 0]), "no producer markup became a node");

    // 6. Pause stats, enqueue: nothing is claimed. Only the stats worker
    //    sends scripts to this Redis from now on (its claims).
    scoring_worker.stop().await;
    browser.goto(&format!("{base}/queues/stats")).await.expect("stats page");
    until(&browser, "the stats page", "document.body.dataset.queue === 'stats'").await;
    click(&browser, "#pause").await;
    until(
        &browser,
        "paused",
        &text_is(r#"h1 .badge[data-field="state"]"#, "paused"),
    )
    .await;
    until(
        &browser,
        "the resume button",
        "!document.getElementById('resume').hidden",
    )
    .await;
    for match_id in 1..=3 {
        let job = CalculatePoints {
            match_id,
            priority: if match_id == 1 {
                Priority::High
            } else {
                Priority::Normal
            },
        };
        producer.enqueue(&job).await.expect("enqueue");
    }
    let calls = script_calls(&redis.url).await;
    eventually("the stats worker asks for jobs, several times", WAIT, || async {
        script_calls(&redis.url).await >= calls + 5
    })
    .await;
    refreshed_after(&browser, now_ms()).await;
    until(&browser, "three ready", &text_is(r#"[data-count="ready"]"#, "3")).await;
    assert_eq!(
        text(&browser, r#"[data-count="inFlight"]"#).await.as_deref(),
        Some("0"),
        "nothing claimed"
    );
    assert_eq!(
        text(&browser, r#"[data-field="completed"]"#).await.as_deref(),
        Some("0")
    );
    assert_eq!(stats.completed(), 0);
    until(
        &browser,
        "the ready rows",
        "document.querySelectorAll('#jobs tr').length === 3",
    )
    .await;
    screenshot(&browser, "queue").await;
    browser.goto(&format!("{base}/")).await.expect("overview");
    until(
        &browser,
        "stats paused on the overview",
        &text_is(r#".card[data-queue="stats"] .badge"#, "paused"),
    )
    .await;
    refreshed_after(&browser, now_ms()).await;
    screenshot(&browser, "overview").await;

    // 7. Resume: it drains.
    browser.goto(&format!("{base}/queues/stats")).await.expect("stats page");
    until(
        &browser,
        "the resume button",
        "!document.getElementById('resume').hidden",
    )
    .await;
    click(&browser, "#resume").await;
    until(
        &browser,
        "running",
        &text_is(r#"h1 .badge[data-field="state"]"#, "running"),
    )
    .await;
    until(
        &browser,
        "drained",
        &format!(
            "{} && {}",
            text_is(r#"[data-count="ready"]"#, "0"),
            text_is(r#"[data-field="completed"]"#, "3")
        ),
    )
    .await;
    assert_eq!(stats.completed(), 3);

    // 8. A concurrency limit, set and removed.
    let input = browser.find(Locator::Css("#limit-input")).await.expect("limit input");
    input.clear().await.expect("clear");
    input.send_keys("2").await.expect("type");
    click(&browser, "#limit-form button[type=submit]").await;
    until(&browser, "the limit shown", &text_is(r#"[data-field="limit"]"#, "2")).await;
    assert_eq!(admin.control("stats").await.expect("control").limit, Some(2));
    click(&browser, r#"button[data-action="unlimit"]"#).await;
    until(&browser, "no limit", &text_is(r#"[data-field="limit"]"#, "none")).await;
    assert_eq!(admin.control("stats").await.expect("control").limit, None);

    // 9. The workers page lists the live processes.
    let scoring_worker = TestWorker::start(&client, "scoring", &scoring, false);
    browser.goto(&format!("{base}/workers")).await.expect("workers");
    until(
        &browser,
        "both workers listed",
        "document.querySelectorAll('#workers tr').length === 2",
    )
    .await;
    let rows = text(&browser, "#workers").await.unwrap_or_default();
    assert!(rows.contains("scoring") && rows.contains("stats"), "{rows}");
    screenshot(&browser, "workers").await;

    // 10. Phone width: the overview fits, nothing scrolls sideways.
    browser.set_window_size(390, 844).await.expect("resize");
    browser.goto(&format!("{base}/")).await.expect("overview");
    until(&browser, "the overview", "document.body.dataset.page === 'overview'").await;
    refreshed_after(&browser, now_ms()).await;
    let widths = browser
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await
        .expect("widths");
    assert!(
        widths[0].as_u64() <= widths[1].as_u64(),
        "the overview scrolls sideways on a phone: {widths}"
    );
    screenshot(&browser, "overview-phone").await;
    browser
        .goto(&format!("{base}/queues/scoring?state=dead"))
        .await
        .expect("dead set");
    until(
        &browser,
        "the dead rows",
        "document.querySelectorAll('#jobs tr').length === 3",
    )
    .await;
    let widths = browser
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await
        .expect("widths");
    assert!(
        widths[0].as_u64() <= widths[1].as_u64(),
        "the dead set scrolls sideways on a phone: {widths}"
    );
    browser
        .execute("document.querySelector('.toolbar').scrollIntoView();", vec![])
        .await
        .expect("scroll");
    screenshot(&browser, "dead-set-phone").await;
    browser.set_window_size(1280, 860).await.expect("resize");

    // 11. A read-only login sees the data and no controls; logging out ends
    //     the session.
    click(&browser, "form.logout button").await;
    until(&browser, "the login page", "document.querySelector('#token') !== null").await;
    log_in(&browser, &base, READ_TOKEN).await;
    until(&browser, "the overview", "document.body.dataset.page === 'overview'").await;
    browser
        .goto(&format!("{base}/queues/scoring?state=dead"))
        .await
        .expect("dead set");
    until(
        &browser,
        "the dead rows",
        "document.querySelectorAll('#jobs tr').length === 3",
    )
    .await;
    assert!(
        browser.find(Locator::Css("[data-action]")).await.is_err(),
        "no controls for a read-only session"
    );

    scoring_worker.stop().await;
    stats_worker.stop().await;
    let (status, output) = console.stop().await;
    assert!(status.success(), "{status}\n{output}");
    assert!(
        output.contains("queue paused") && output.contains("dead jobs retried"),
        "{output}"
    );
    for secret in [TOKEN, READ_TOKEN] {
        assert!(
            !output.contains(secret),
            "the console's output holds a token:\n{output}"
        );
    }
}
