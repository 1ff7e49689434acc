//! The PostgreSQL server shared by all tests of one process, and the
//! per-test databases that isolate tests from each other on it (behind the
//! `postgres` feature, on by default: a crate whose tests need only Redis
//! turns it off and links no Postgres client).
//!
//! As in `shared`, statics hold only what outlives a test's runtime: URLs,
//! the server handle and the templates built so far.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;

use crate::PostgresServer;
use crate::shared::short_id;

/// Points the database functions at an existing server (its URL names the
/// database to connect to for `CREATE DATABASE`) instead of starting one.
const DATABASE_URL_VAR: &str = "TEST_DATABASE_URL";

/// How long dropping a [`TestDatabase`] waits for `DROP DATABASE`.
const DROP_TIMEOUT: Duration = Duration::from_secs(10);

/// A fresh database for one test, dropped (`WITH (FORCE)`, so open
/// connections do not block it) when the handle is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    /// URL of this database, usable with `tokio_postgres::connect` and
    /// `deadpool_postgres`.
    pub url: String,
    /// Its name, `t_<32 hex digits>`.
    pub name: String,
    /// URL of the database we connect to for `CREATE`/`DROP DATABASE`.
    admin_url: String,
}

impl TestDatabase {
    /// A new client on the caller's runtime; its connection task is spawned
    /// there and ends with the client.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await.unwrap_or_else(|err| panic!("{err:#}"))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop may run inside the test's runtime, where blocking on another
        // future is not allowed: a helper thread with its own small runtime
        // does the work, and we wait a bounded time so the disk space is
        // back before the next test.
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let (done, finished) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("tally-testkit-dropdb".into())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                    return;
                };
                runtime.block_on(async {
                    if let Ok(client) = connect(&admin_url).await {
                        let _ = client.batch_execute(&sql).await;
                    }
                });
                let _ = done.send(());
            });
        if spawned.is_ok() {
            let _ = finished.recv_timeout(DROP_TIMEOUT);
        }
    }
}

/// Where the shared databases live.
enum PostgresTarget {
    /// Our own server.
    Own(PostgresServer),
    /// `TEST_DATABASE_URL`.
    External(String),
}

impl PostgresTarget {
    /// URL of database `db` on the target server.
    fn url(&self, db: &str) -> String {
        match self {
            Self::Own(server) => server.url(db),
            Self::External(url) => with_dbname(url, db),
        }
    }

    /// URL to connect to for `CREATE`/`DROP DATABASE`.
    fn admin_url(&self) -> String {
        match self {
            Self::Own(server) => server.url("postgres"),
            Self::External(url) => url.clone(),
        }
    }
}

static POSTGRES: OnceCell<PostgresTarget> = OnceCell::const_new();

/// The shared Postgres, started on first use.
async fn shared_postgres() -> &'static PostgresTarget {
    POSTGRES
        .get_or_init(|| async {
            if let Ok(url) = std::env::var(DATABASE_URL_VAR) {
                return PostgresTarget::External(url);
            }
            match PostgresServer::start().await {
                Ok(server) => PostgresTarget::Own(server),
                Err(err) => panic!("{err:#}"),
            }
        })
        .await
}

/// A new, empty database on the shared Postgres, starting the server on
/// first use (or using `TEST_DATABASE_URL`). Panics with the reason on
/// failure.
pub async fn database() -> TestDatabase {
    create_database(shared_postgres().await, None)
        .await
        .unwrap_or_else(|err| panic!("{err:#}"))
}

/// Templates built so far in this process, by key. A cell per key lets
/// concurrent callers of one key wait for a single build while other keys
/// build in parallel.
static TEMPLATES: LazyLock<Mutex<HashMap<String, Arc<OnceCell<String>>>>> = LazyLock::new(Mutex::default);

/// A database cloned from a template built once per process per `key` by
/// running `init(template_url)` (e.g. migrations and fixtures). Cloning uses
/// `CREATE DATABASE .. TEMPLATE ..`, milliseconds instead of re-running
/// `init`. Concurrent callers with one key run `init` once; the first
/// caller's `init` wins, so a key must always mean the same setup. If `init`
/// fails the next caller tries again. Panics with the reason on failure.
pub async fn database_from_template<F, Fut>(key: &str, init: F) -> TestDatabase
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let target = shared_postgres().await;
    let cell = TEMPLATES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key.to_owned())
        .or_default()
        .clone();
    let template = cell
        .get_or_try_init(|| build_template(target, key, init))
        .await
        .unwrap_or_else(|err| panic!("{err:#}"));
    create_database(target, Some(template))
        .await
        .unwrap_or_else(|err| panic!("{err:#}"))
}

/// Creates the template database for `key`, runs `init` on it, then closes
/// it to connections: `CREATE DATABASE .. TEMPLATE` fails while anyone is
/// connected to the template.
async fn build_template<F, Fut>(target: &PostgresTarget, key: &str, init: F) -> Result<String>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    // Unique per process, so processes sharing TEST_DATABASE_URL do not
    // collide; identifiers stay unquoted-safe (lowercase, digits, `_`).
    let sanitized: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let name = format!("tpl_{sanitized}_{}", short_id());
    let admin = connect(&target.admin_url()).await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .with_context(|| format!("tally-testkit: cannot create template database {name}"))?;
    if let Err(err) = init(target.url(&name)).await {
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
        return Err(err.context(format!("tally-testkit: template init for key `{key}` failed")));
    }
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false IS_TEMPLATE true"
        ))
        .await
        .with_context(|| format!("tally-testkit: cannot mark {name} as a template"))?;
    // Connections `init` left open (a pool not yet closed) would block every
    // clone; best effort, as on a foreign server we may lack the right.
    let _ = admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&name],
        )
        .await;
    Ok(name)
}

/// `CREATE DATABASE t_<uuid> [TEMPLATE template]` on the target.
async fn create_database(target: &PostgresTarget, template: Option<&str>) -> Result<TestDatabase> {
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let admin_url = target.admin_url();
    let admin = connect(&admin_url).await?;
    let sql = match template {
        Some(template) => format!("CREATE DATABASE {name} TEMPLATE {template}"),
        None => format!("CREATE DATABASE {name}"),
    };
    admin
        .batch_execute(&sql)
        .await
        .with_context(|| format!("tally-testkit: `{sql}` failed"))?;
    Ok(TestDatabase {
        url: target.url(&name),
        name,
        admin_url,
    })
}

/// Connects and spawns the connection task on the current runtime.
async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("tally-testkit: cannot connect to {url}"))?;
    // The task ends when the client is dropped or the server goes away;
    // chaos tests cause the latter on purpose, so its error is not news.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `url` with its database replaced by `db`: the path of a
/// `postgres://` URL, or a `dbname=` appended to a key=value string (the
/// last occurrence wins).
fn with_dbname(url: &str, db: &str) -> String {
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let (before_query, query) = match rest.find('?') {
                Some(at) => rest.split_at(at),
                None => (rest, ""),
            };
            let authority = before_query.split('/').next().unwrap_or_default();
            return format!("{scheme}{authority}/{db}{query}");
        }
    }
    format!("{url} dbname={db}")
}

#[cfg(test)]
mod tests {
    use super::with_dbname;

    #[test]
    fn with_dbname_replaces_the_database() {
        assert_eq!(
            with_dbname("postgres://u:p@h:5432/app?sslmode=disable", "t_1"),
            "postgres://u:p@h:5432/t_1?sslmode=disable"
        );
        assert_eq!(with_dbname("postgresql://h", "t_1"), "postgresql://h/t_1");
        assert_eq!(
            with_dbname("host=h user=u dbname=app", "t_1"),
            "host=h user=u dbname=app dbname=t_1"
        );
    }
}
