//! A dedicated PostgreSQL server that a test controls: stop it, start it
//! again on the same port and data directory.
//!
//! The shared server behind [`crate::database()`] is one of these, kept in a
//! static for the life of the test process. As root (sessions and CI) the
//! data directory belongs to the `postgres` user and `initdb` and `postgres`
//! run as that user, since PostgreSQL refuses root.

use std::os::unix::fs::{PermissionsExt as _, chown};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::binaries::PostgresBinaries;
use crate::process::{self, RunAs, Signal};
use crate::scratch::ScratchDir;

/// How long a starting server may take to accept a connection (usually
/// 0.1 s; crash recovery after a `SIGKILL` and a busy machine take longer).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a fast shutdown (`SIGINT`) may take before `SIGKILL`.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Attempts with a fresh port when the port picked was taken meanwhile.
const PORT_ATTEMPTS: usize = 3;

/// A PostgreSQL server of one test, on a free loopback port in its own
/// temporary directory, with superuser `postgres` and trust authentication.
/// Dropping it stops the server and removes the directory; a watchdog does
/// the same if the test process dies first.
#[derive(Debug)]
pub struct PostgresServer {
    /// `initdb` and `postgres`.
    binaries: PostgresBinaries,
    /// The user the server runs as, `None` for ourselves.
    run_as: Option<RunAs>,
    /// The loopback port, kept across restarts.
    port: u16,
    /// The running postmaster, `None` while stopped.
    child: Option<Child>,
    /// Holds `data/`, `sock/`, the logs and the pid file.
    dir: ScratchDir,
}

impl PostgresServer {
    /// Creates a data directory with `initdb` (about 1.3 s) and starts the
    /// server, waiting until it accepts connections.
    pub async fn start() -> Result<Self> {
        let binaries = crate::binaries::postgres()?;
        let dir = ScratchDir::create("pg", "INT")?;
        let run_as = process::postgres_run_as(dir.path())?;
        let mut server = Self {
            binaries,
            run_as,
            port: 0,
            child: None,
            dir,
        };
        server.init_data_dir().await?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            server.port = process::free_port()?;
            match server.spawn_and_wait().await {
                Ok(()) => return Ok(server),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("tally-testkit: postgres did not start")))
    }

    /// `postgres://postgres@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The loopback port, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's temporary directory (`data/`, `server.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server with a fast shutdown (`SIGINT`: sessions are
    /// disconnected, nothing is lost), or `SIGKILL` after 30 s. Does nothing
    /// when already stopped.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::stop(&mut child, Signal::SIGINT, STOP_GRACE).await;
            self.dir.clear_server_pid();
        }
    }

    /// Starts the stopped server again, same port, same data. Does nothing
    /// when it is running.
    pub async fn start_again(&mut self) -> Result<()> {
        if let Some(child) = &mut self.child {
            if !process::has_exited(child) {
                return Ok(());
            }
            self.child = None;
            self.dir.clear_server_pid();
        }
        self.spawn_and_wait().await
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// Makes `data/` (0700) and `sock/` owned by the server user and runs
    /// `initdb` as that user.
    async fn init_data_dir(&self) -> Result<()> {
        for (dir, mode) in [(self.data_dir(), 0o700), (self.socket_dir(), 0o755)] {
            std::fs::create_dir(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
            if let Some(user) = self.run_as {
                chown(&dir, Some(user.uid), Some(user.gid))
                    .with_context(|| format!("tally-testkit: cannot chown {}", dir.display()))?;
            }
        }
        let log = self.dir.path().join("initdb.log");
        let (stdout, stderr) = process::log_output(&log)?;
        let mut command = Command::new(&self.binaries.initdb);
        command
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        self.apply_user(&mut command);
        let initdb = self.binaries.initdb.clone();
        let status = tokio::task::spawn_blocking(move || command.status())
            .await
            .context("tally-testkit: initdb task failed")?
            .with_context(|| format!("tally-testkit: cannot run {}", initdb.display()))?;
        if !status.success() {
            bail!("tally-testkit: initdb failed ({status})\n{}", process::log_tail(&log));
        }
        Ok(())
    }

    fn apply_user(&self, command: &mut Command) {
        if let Some(user) = self.run_as {
            command.uid(user.uid).gid(user.gid);
        }
    }

    /// Starts the postmaster and waits until it accepts a connection; on
    /// failure the process is gone again and the error carries the log.
    async fn spawn_and_wait(&mut self) -> Result<()> {
        let log = self.dir.path().join("server.log");
        let (stdout, stderr) = process::log_output(&log)?;
        let mut command = Command::new(&self.binaries.postgres);
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.socket_dir())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                // Many tests at once, each with a pool, add up.
                "-c",
                "max_connections=200",
            ])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        self.apply_user(&mut command);
        let mut child = command
            .spawn()
            .with_context(|| format!("tally-testkit: cannot run {}", self.binaries.postgres.display()))?;
        if let Err(err) = self.dir.set_server_pid(child.id()) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err);
        }
        let url = self.url("postgres");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if process::has_exited(&mut child) {
                self.dir.clear_server_pid();
                bail!(
                    "tally-testkit: postgres on port {} exited during startup\n{}",
                    self.port,
                    process::log_tail(&log)
                );
            }
            if accepts_connections(&url).await {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                process::stop(&mut child, Signal::SIGINT, STOP_GRACE).await;
                self.dir.clear_server_pid();
                bail!(
                    "tally-testkit: postgres on port {} did not accept connections within {:?}\n{}",
                    self.port,
                    READY_TIMEOUT,
                    process::log_tail(&log)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::stop_blocking(&mut child, Signal::SIGINT, STOP_GRACE);
        }
        // `dir` drops next: directory removed, watchdog released.
    }
}

/// Whether the server completes a connection handshake (it refuses with
/// "starting up" until recovery is done).
async fn accepts_connections(url: &str) -> bool {
    let attempt = tokio_postgres::connect(url, tokio_postgres::NoTls);
    matches!(tokio::time::timeout(Duration::from_secs(2), attempt).await, Ok(Ok(_)))
}
