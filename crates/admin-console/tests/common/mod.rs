//! Shared harness of the console's tests: a console running in process on
//! a free port over a real Redis (a namespace of the test kit's shared
//! server, or a server of the test's own), real workers of tally's job
//! types whose handlers a test switches between completing and refusing,
//! HTTP calls with a bearer token or a browser session, and a poll helper.

#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use admin_console::auth::{AdminToken, Tokens};
use admin_console::{Application, Settings};
use tally_jobs::{CalculatePoints, RefreshViews, ScoreMatch};
use tally_queue::{JobContext, JobError, Producer, QueueAdmin, QueueClient, QueueConfig, Worker, WorkerReport};
use tally_testkit::http::HttpResponse;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

/// The read-write token of every test console.
pub const TOKEN: &str = "test-admin-token-0123456789";
/// The read-only token of every test console.
pub const READ_TOKEN: &str = "test-read-token-0123456789";

/// Engine settings for tests: a short lease so a worker's registry entry
/// and leases behave within a second, a quick throttle poll.
pub fn fast_config(prefix: &str) -> QueueConfig {
    QueueConfig {
        prefix: prefix.to_owned(),
        lease: Duration::from_millis(1500),
        reap_interval: Duration::from_millis(200),
        throttle_poll: Duration::from_millis(50),
        idle_poll: Duration::from_millis(500),
        drain_timeout: Duration::from_secs(2),
        ..QueueConfig::default()
    }
}

/// The settings of a test console.
pub fn settings(redis_url: &str, prefix: &str) -> Settings {
    Settings {
        bind_addr: "127.0.0.1:0".parse().expect("addr"),
        redis_url: redis_url.to_owned(),
        queue_prefix: prefix.to_owned(),
        tokens: Tokens::new(
            AdminToken::new(TOKEN).expect("token"),
            Some(AdminToken::new(READ_TOKEN).expect("read token")),
        ),
        public_origin: None,
        secure_cookie: false,
        session_ttl: Duration::from_secs(3600),
        sample_interval: Duration::from_secs(1),
        shutdown_timeout: Duration::from_secs(1),
    }
}

/// A console serving on a free port, with the engine handles a test uses
/// to set the scene.
pub struct Console {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Key prefix of its queues.
    pub prefix: String,
    /// The Redis it reads.
    pub redis_url: String,
    /// Engine client on the same Redis and prefix.
    pub client: QueueClient,
    /// Enqueues the test's jobs.
    pub producer: Producer,
    /// Reads what the console should show.
    pub admin: QueueAdmin,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Console {
    /// A console on a fresh namespace of the test kit's shared Redis.
    pub async fn start() -> Console {
        let redis = tally_testkit::redis().await;
        Console::start_with(settings(&redis.url, &redis.namespace)).await
    }

    /// A console with these settings.
    pub async fn start_with(settings: Settings) -> Console {
        tally_telemetry::init_for_tests();
        let prefix = settings.queue_prefix.clone();
        let redis_url = settings.redis_url.clone();
        let app = Application::build(settings).await.expect("console builds");
        let addr = app.addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        let client = QueueClient::new(&redis_url, fast_config(&prefix)).expect("client");
        Console {
            addr,
            prefix,
            redis_url,
            producer: Producer::new(client.clone()),
            admin: QueueAdmin::new(client.clone()),
            client,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the console gracefully.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("joined").expect("clean shutdown");
        }
    }

    /// A request with these headers (redirects are not followed).
    pub async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        request(self.addr, method, path, headers, body).await
    }

    /// A request with the read-write bearer token.
    pub async fn admin_call(&self, method: &str, path: &str, body: &str) -> HttpResponse {
        self.bearer(TOKEN, method, path, body).await
    }

    /// A request with a bearer token.
    pub async fn bearer(&self, token: &str, method: &str, path: &str, body: &str) -> HttpResponse {
        let auth = format!("Bearer {token}");
        self.call(
            method,
            path,
            &[("Authorization", auth.as_str()), ("Content-Type", "application/json")],
            body,
        )
        .await
    }

    /// `GET` with the read-write token, expecting 200 and JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.admin_call("GET", path, "").await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    }

    /// Logs in as a browser would (form POST of the token) and returns the
    /// session.
    pub async fn login(&self, token: &str) -> BrowserSession {
        let form = format!("token={token}&next=%2F");
        let origin = self.base();
        let r = self
            .call(
                "POST",
                "/login",
                &[
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("Origin", origin.as_str()),
                ],
                &form,
            )
            .await;
        assert_eq!(r.status, 303, "login: {}", r.body);
        let set_cookie = r.header("set-cookie").expect("a session cookie").to_owned();
        let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
        let page = self.call("GET", "/", &[("Cookie", cookie.as_str())], "").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let csrf = page
            .body
            .split(r#"<meta name="csrf-token" content=""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the page carries its CSRF token")
            .to_owned();
        BrowserSession {
            cookie,
            set_cookie,
            csrf,
        }
    }
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        // The workspace's reqwest has rustls without a provider (Sentry's
        // transport shares it); plain HTTP never uses it, building does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client")
    })
}

/// Sends one request and reads the whole answer, as the test kit's HTTP
/// client does, but without following redirects: the login and the pages'
/// redirects to it are what the tests look at.
pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut builder = client().request(method.clone(), format!("http://{addr}{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    if !body.is_empty() || method != reqwest::Method::GET {
        builder = builder.body(body.to_owned());
    }
    let response = builder.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response.text().await.expect("body");
    HttpResponse { status, headers, body }
}

/// A browser's session: its cookie and the CSRF token of its pages.
#[derive(Debug, Clone)]
pub struct BrowserSession {
    /// `tally_admin_session=…`, as a `Cookie` header sends it.
    pub cookie: String,
    /// The whole `Set-Cookie` value the login answered with.
    pub set_cookie: String,
    /// The CSRF token of the session's pages.
    pub csrf: String,
}

/// What the test workers' handlers do, switchable while they run.
#[derive(Debug, Default)]
pub struct Behaviour {
    /// Refuse every job (not retryable): it goes straight to the dead set.
    pub refuse: AtomicBool,
    /// Jobs completed.
    pub completed: AtomicUsize,
    /// Handlers running now.
    pub running: AtomicUsize,
    /// The most handlers seen running at once.
    pub max_running: AtomicUsize,
    /// When set, handlers wait for a permit before finishing.
    pub gate: Option<Arc<Semaphore>>,
}

impl Behaviour {
    /// Handlers that complete every job.
    pub fn completing() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Handlers that refuse every job until told otherwise.
    pub fn refusing() -> Arc<Self> {
        let b = Self::default();
        b.refuse.store(true, Ordering::SeqCst);
        Arc::new(b)
    }

    /// Handlers that complete each job once a permit is added to `gate`.
    pub fn gated(gate: Arc<Semaphore>) -> Arc<Self> {
        Arc::new(Self {
            gate: Some(gate),
            ..Self::default()
        })
    }

    /// Switches between refusing and completing.
    pub fn set_refuse(&self, refuse: bool) {
        self.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Jobs completed so far.
    pub fn completed(&self) -> usize {
        self.completed.load(Ordering::SeqCst)
    }

    async fn run(self: Arc<Self>, what: String) -> Result<(), JobError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        let outcome = if self.refuse.load(Ordering::SeqCst) {
            Err(JobError::give_up(format!("test handler refused {what}")))
        } else {
            if let Some(gate) = &self.gate {
                gate.acquire().await.expect("gate open").forget();
            }
            self.completed.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        self.running.fetch_sub(1, Ordering::SeqCst);
        outcome
    }
}

/// A real worker of `queue` (`scoring` or `stats`) on its own task.
pub struct TestWorker {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<WorkerReport, tally_queue::QueueError>>,
}

impl TestWorker {
    /// Starts a worker with these handlers; `background` runs the promoter
    /// and the reaper too.
    pub fn start(client: &QueueClient, queue: &str, behaviour: &Arc<Behaviour>, background: bool) -> TestWorker {
        let builder = Worker::builder(client.clone(), queue)
            .concurrency(5)
            .background_tasks(background);
        let builder = match queue {
            "scoring" => {
                let b = behaviour.clone();
                builder
                    .handle(move |job: ScoreMatch, _ctx: JobContext| b.clone().run(format!("match {}", job.match_id)))
            }
            "stats" => {
                let (b1, b2) = (behaviour.clone(), behaviour.clone());
                builder
                    .handle(move |job: CalculatePoints, _ctx: JobContext| {
                        b1.clone().run(format!("points of match {}", job.match_id))
                    })
                    .handle(move |job: RefreshViews, _ctx: JobContext| b2.clone().run(format!("refresh {}", job.scope)))
            }
            other => panic!("no test handlers for queue {other}"),
        };
        let worker = builder.build().expect("worker builds");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(worker.run_until(async move {
            let _ = rx.await;
        }));
        TestWorker { stop: Some(tx), handle }
    }

    /// Graceful shutdown.
    pub async fn stop(mut self) -> WorkerReport {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.handle).await.expect("worker task").expect("worker run")
    }
}

pub use tally_testkit::eventually;

/// Script calls (`EVALSHA`/`EVAL`) a Redis server has answered: with the
/// promoter and the reaper off, a worker's claims.
pub async fn script_calls(url: &str) -> u64 {
    let mut conn = redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    tally_testkit::script_calls(&mut conn).await
}

/// Makes `n` dead `ScoreMatch` jobs (ids `dead-<i>`) by running them through
/// a worker that refuses them; returns their ids.
pub async fn dead_jobs(console: &Console, n: usize) -> Vec<String> {
    let behaviour = Behaviour::refusing();
    let worker = TestWorker::start(&console.client, "scoring", &behaviour, false);
    let mut ids = Vec::new();
    for i in 0..n {
        let options = tally_queue::EnqueueOptions {
            id: Some(format!("dead-{i}")),
            ..tally_queue::EnqueueOptions::default()
        };
        let job = ScoreMatch { match_id: i as i64 + 1 };
        ids.push(console.producer.enqueue_with(&job, options).await.expect("enqueue").id);
    }
    eventually("the jobs are dead", Duration::from_secs(20), || async {
        console.admin.stats("scoring").await.expect("stats").dead == n as u64
    })
    .await;
    worker.stop().await;
    ids
}

/// The real `admin-console` binary as a process, its output kept in a file.
pub struct ConsoleProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl ConsoleProcess {
    /// Starts the binary with the test tokens, `REDIS_URL`, the queue
    /// prefix and `extra` settings, and waits until `/healthz` answers.
    pub async fn start(redis_url: &str, prefix: &str, extra: &[(&str, &str)]) -> ConsoleProcess {
        let dir = std::env::temp_dir().join(format!("admin-console-test-{}-{prefix}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("log dir");
        let log = dir.join("console.log");
        for _ in 0..3 {
            let port = tally_testkit::free_port().expect("free port");
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
            let out = std::fs::File::create(&log).expect("log file");
            let err = out.try_clone().expect("log file");
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_admin-console"))
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("ADMIN_TOKEN", TOKEN)
                .env("ADMIN_READ_TOKEN", READ_TOKEN)
                .env("REDIS_URL", redis_url)
                .env("TALLY_QUEUE_PREFIX", prefix)
                .env("ADMIN_BIND_ADDR", addr.to_string())
                .env("ADMIN_SAMPLE_SECS", "1")
                .envs(extra.iter().copied())
                .stdin(std::process::Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("admin-console starts");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if tally_testkit::http::get(addr, "/healthz")
                    .await
                    .is_ok_and(|r| r.status == 200)
                {
                    return ConsoleProcess { addr, child, log };
                }
                if tokio::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!(
            "admin-console did not start; its output:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit; returns the exit status and the
    /// whole output.
    pub async fn stop(mut self) -> (std::process::ExitStatus, String) {
        tally_testkit::send_signal(self.child.id(), tally_testkit::Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().expect("wait");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let output = self.output();
        if let Some(dir) = self.log.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
        (status, output)
    }
}

impl Drop for ConsoleProcess {
    fn drop(&mut self) {
        // A test that panicked before stop(): never leave the process behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
