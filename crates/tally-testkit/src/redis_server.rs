//! A dedicated `redis-server` that a test controls: stop it, restart it on
//! the same port and directory, with or without AOF persistence.
//!
//! The shared server behind [`crate::redis()`] is one of these, kept in a
//! static for the life of the test process.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::process::{self, Signal};
use crate::scratch::ScratchDir;

/// How long a starting server may take to answer `PING` (usually 25 ms; AOF
/// loading and a busy machine take longer).
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a `SIGTERM`ed server may take to write its AOF and exit.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Attempts with a fresh port when the port picked was taken meanwhile.
const PORT_ATTEMPTS: usize = 3;

/// How a [`RedisServer`] is configured.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// Append-only file with `appendfsync everysec`, so data survives
    /// [`RedisServer::restart`]. Off by default: no persistence at all.
    pub appendonly: bool,
    /// More `redis-server` arguments, appended last so they win, e.g.
    /// `["--hz", "100"]`.
    pub extra_args: Vec<String>,
}

/// A `redis-server` of one test, on a free loopback port in its own
/// temporary directory. Dropping it stops the server and removes the
/// directory; a watchdog does the same if the test process dies first.
#[derive(Debug)]
pub struct RedisServer {
    /// The `redis-server` program.
    binary: PathBuf,
    /// The loopback port, kept across restarts.
    port: u16,
    /// The configuration, kept across restarts.
    options: RedisOptions,
    /// The running server, `None` while stopped.
    child: Option<Child>,
    /// Working directory (AOF, log, pid file); dropped after the server stops.
    dir: ScratchDir,
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING`.
    pub async fn start(options: RedisOptions) -> Result<Self> {
        let binary = crate::binaries::redis_server()?;
        let dir = ScratchDir::create("redis", "TERM")?;
        let mut server = Self {
            binary,
            port: 0,
            options,
            child: None,
            dir,
        };
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            server.port = process::free_port()?;
            match server.spawn_and_wait().await {
                Ok(()) => return Ok(server),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("tally-testkit: redis-server did not start")))
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The loopback port, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's temporary directory (AOF files, `server.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server with `SIGTERM` (it writes its AOF and exits), or
    /// `SIGKILL` after 10 s. Does nothing when already stopped.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::stop(&mut child, Signal::SIGTERM, STOP_GRACE).await;
            self.dir.clear_server_pid();
        }
    }

    /// Kills the server with `SIGKILL`, as a crash would: nothing is
    /// flushed (with AOF `everysec`, up to a second of writes is lost).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::stop(&mut child, Signal::SIGKILL, STOP_GRACE).await;
            self.dir.clear_server_pid();
        }
    }

    /// Stops the server if it runs, then starts it again on the same port
    /// with the same directory, so with [`RedisOptions::appendonly`] the data
    /// survives.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await;
        self.spawn_and_wait().await
    }

    fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--port".into(),
            self.port.to_string().into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            self.dir.path().into(),
            "--daemonize".into(),
            "no".into(),
            "--save".into(),
            "".into(),
        ];
        let aof: [&str; 4] = if self.options.appendonly {
            ["--appendonly", "yes", "--appendfsync", "everysec"]
        } else {
            ["--appendonly", "no", "--appendfsync", "no"]
        };
        args.extend(aof.iter().map(OsString::from));
        args.extend(self.options.extra_args.iter().map(OsString::from));
        args
    }

    /// Starts the process and waits for `PING`; on failure the process is
    /// gone again and the error carries the server log.
    async fn spawn_and_wait(&mut self) -> Result<()> {
        let log = self.dir.path().join("server.log");
        let (stdout, stderr) = process::log_output(&log)?;
        let mut child = Command::new(&self.binary)
            .args(self.args())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .with_context(|| format!("tally-testkit: cannot run {}", self.binary.display()))?;
        if let Err(err) = self.dir.set_server_pid(child.id()) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err);
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if process::has_exited(&mut child) {
                self.dir.clear_server_pid();
                bail!(
                    "tally-testkit: redis-server on port {} exited during startup\n{}",
                    self.port,
                    process::log_tail(&log)
                );
            }
            if ping(self.port).await {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.dir.clear_server_pid();
                bail!(
                    "tally-testkit: redis-server on port {} did not answer PING within {:?}\n{}",
                    self.port,
                    READY_TIMEOUT,
                    process::log_tail(&log)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::stop_blocking(&mut child, Signal::SIGTERM, STOP_GRACE);
        }
        // `dir` drops next: directory removed, watchdog released.
    }
}

/// Whether a server on `port` answers `PING` with `PONG` (not `-LOADING`).
/// A raw exchange keeps readiness independent of client configuration.
async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0_u8; 7];
        stream.read_exact(&mut reply).await?;
        std::io::Result::Ok(&reply == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Ok(true))
    )
}
