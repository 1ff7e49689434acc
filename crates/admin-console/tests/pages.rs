//! The dashboard's pages as HTML, over real HTTP and a real Redis: every
//! page renders for a logged-in operator, unknown things get an HTML error
//! page with the right status, and whatever a producer wrote is escaped.

mod common;

use common::{BrowserSession, Console, READ_TOKEN, TOKEN};
use tally_jobs::{Envelope, ScoreMatch};

async fn page(console: &Console, session: &BrowserSession, path: &str) -> (u16, String) {
    let r = console
        .call("GET", path, &[("Cookie", session.cookie.as_str())], "")
        .await;
    assert!(
        r.header("content-type").is_some_and(|c| c.starts_with("text/html")),
        "{path}: {:?}",
        r.headers
    );
    (r.status, r.body)
}

/// A dead job whose id, kind, payload and error all carry markup.
async fn hostile_dead_job(console: &Console) -> String {
    let id = r#"evil"><script>alert('id')</script>"#.to_owned();
    let mut envelope = Envelope::new(&ScoreMatch { match_id: 1 }, id.clone(), tally_queue::now_ms()).expect("envelope");
    envelope.kind = "<img src=x onerror=alert('kind')>".into();
    envelope.payload = serde_json::json!({ "note": "</pre><script>alert('payload')</script>" });
    console.producer.enqueue_envelope(envelope).await.expect("enqueue");
    // A real worker refuses the unknown kind: the job dies with a reason
    // that quotes the kind.
    let behaviour = common::Behaviour::completing();
    let worker = common::TestWorker::start(&console.client, "scoring", &behaviour, false);
    common::eventually(
        "the hostile job is dead",
        std::time::Duration::from_secs(20),
        || async { console.admin.stats("scoring").await.expect("stats").dead == 1 },
    )
    .await;
    worker.stop().await;
    id
}

#[tokio::test]
async fn a_job_whose_payload_holds_a_script_renders_as_text() {
    let console = Console::start().await;
    let id = hostile_dead_job(&console).await;
    let session = console.login(TOKEN).await;
    let job_path = format!("/queues/scoring/jobs/{}", admin_console::html::segment(&id));
    for path in ["/queues/scoring?state=dead", job_path.as_str()] {
        let (status, body) = page(&console, &session, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        // The only scripts are the page's own; no producer markup survives.
        assert_eq!(body.matches("<script").count(), 1, "{path}: {body}");
        assert!(body.contains(r#"<script src="/static/app.js" defer></script>"#));
        assert!(!body.contains("<img"), "{path}: {body}");
        assert!(
            body.contains("&lt;script&gt;alert(&#39;id&#39;)&lt;/script&gt;"),
            "{path}: {body}"
        );
    }
    let (_, job) = page(&console, &session, &job_path).await;
    assert!(
        job.contains("&lt;/pre&gt;&lt;script&gt;alert(&#39;payload&#39;)"),
        "{job}"
    );
    assert!(job.contains("&lt;img src=x onerror=alert(&#39;kind&#39;)&gt;"), "{job}");
    console.stop().await;
}

#[tokio::test]
async fn every_page_renders_for_an_operator() {
    let console = Console::start().await;
    common::dead_jobs(&console, 2).await;
    let session = console.login(TOKEN).await;

    let (status, overview) = page(&console, &session, "/").await;
    assert_eq!(status, 200);
    for queue in tally_jobs::QUEUES {
        assert!(overview.contains(&format!(r#"data-queue="{queue}""#)), "{overview}");
    }
    assert!(
        overview.contains(r#"href="/queues/scoring?state=dead" data-field="dead">2</a>"#),
        "{overview}"
    );

    for state in ["ready", "scheduled", "inFlight", "dead"] {
        let (status, body) = page(&console, &session, &format!("/queues/scoring?state={state}")).await;
        assert_eq!(status, 200, "{state}: {body}");
        assert!(body.contains(&format!(r#"data-state="{state}""#)), "{body}");
        assert!(
            body.contains(r#"data-action="pause""#),
            "a read-write session gets the controls"
        );
    }
    let (_, dead) = page(&console, &session, "/queues/scoring?state=dead").await;
    assert!(dead.contains(r#"data-action="retry-selected""#) && dead.contains(r#"href="/queues/scoring/jobs/dead-0""#));
    assert!(dead.contains("1–2 of 2"), "{dead}");

    let (status, job) = page(&console, &session, "/queues/scoring/jobs/dead-1").await;
    assert_eq!(status, 200, "{job}");
    assert!(job.contains("test handler refused match 2"), "{job}");
    assert!(job.contains("&quot;matchId&quot;: 2"), "pretty-printed envelope: {job}");

    let (status, workers) = page(&console, &session, "/workers").await;
    assert_eq!(status, 200);
    assert!(workers.contains("No worker process is running."), "{workers}");

    // The read-only session sees the data but no controls.
    let read = console.login(READ_TOKEN).await;
    let (_, dead) = page(&console, &read, "/queues/scoring?state=dead").await;
    assert!(dead.contains("dead-0") && !dead.contains("data-action"), "{dead}");
    assert!(dead.contains("read-only"), "{dead}");
    console.stop().await;
}

#[tokio::test]
async fn unknown_things_get_an_html_error_with_the_right_status() {
    let console = Console::start().await;
    let session = console.login(TOKEN).await;
    for (path, status, text) in [
        ("/queues/nope", 404, "unknown queue"),
        ("/queues/stats?state=running", 400, "invalid state"),
        ("/queues/stats?limit=9999", 400, "invalid limit"),
        ("/queues/stats/jobs/no-such-job", 404, "No job no-such-job"),
        ("/no/such/page", 404, "no such route"),
    ] {
        let (got, body) = page(&console, &session, path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(body.contains(text), "{path}: {body}");
    }
    console.stop().await;
}
