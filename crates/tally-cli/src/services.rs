//! Starting tally's service binaries as child processes, for the demo and
//! the end-to-end tests: each on a free loopback port, its output in a log
//! file, readiness awaited through its own `/readyz`, stopped with SIGTERM
//! (or SIGKILL, to test crashes).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tally_testkit::http;

/// Where the service binaries are: `TALLY_BIN_DIR`, else beside the running
/// executable (`target/<profile>/`, also from `target/<profile>/deps/` where
/// test binaries live).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TALLY_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; the service binds it
/// next): the test kit's.
pub use tally_testkit::free_port;

/// A running service process.
#[derive(Debug)]
pub struct Service {
    /// Instance name, e.g. `stats-worker-2`.
    pub name: String,
    /// Its probe/API address.
    pub addr: SocketAddr,
    /// Its combined stdout/stderr.
    pub log: PathBuf,
    binary: PathBuf,
    env: Vec<(String, String)>,
    addr_var: String,
    child: Option<tokio::process::Child>,
}

impl Service {
    /// Starts `binary` (a name in [`bin_dir`]) with `env`, listening on a free
    /// port passed in `addr_var` (`BIND_ADDR` or `HEALTH_ADDR`).
    pub fn start(
        binary: &str,
        name: &str,
        env: &[(String, String)],
        addr_var: &str,
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let path = bin_dir().join(binary);
        anyhow::ensure!(
            path.exists(),
            "{} not found: build the binaries first (cargo build --bins)",
            path.display()
        );
        std::fs::create_dir_all(log_dir).with_context(|| format!("cannot create {}", log_dir.display()))?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut service = Service {
            name: name.to_owned(),
            addr,
            log: log_dir.join(format!("{name}.log")),
            binary: path,
            env: env.to_vec(),
            addr_var: addr_var.to_owned(),
            child: None,
        };
        service.spawn()?;
        Ok(service)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = tokio::process::Command::new(&self.binary)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(&self.addr_var, self.addr.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Starts the same service again (same port, same log), e.g. after a kill.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is still running", self.name);
        self.spawn()
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// Waits until `/readyz` answers 200 (Redis and Postgres reachable).
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                anyhow::bail!(
                    "{} exited with {status} before it was ready:\n{}",
                    self.name,
                    self.log_tail(20)
                );
            }
            if let Ok(r) = http::get(self.addr, "/readyz").await
                && r.status == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("{} not ready after {timeout:?}:\n{}", self.name, self.log_tail(20));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit (SIGKILL after it).
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .with_context(|| format!("{} is not running", self.name))?;
        if let Some(pid) = child.id() {
            tally_testkit::send_signal(pid, tally_testkit::Signal::SIGTERM);
        }
        if let Ok(status) = tokio::time::timeout(timeout, child.wait()).await {
            Ok(status?)
        } else {
            child.kill().await?;
            anyhow::bail!(
                "{} did not exit within {timeout:?} of SIGTERM:\n{}",
                self.name,
                self.log_tail(20)
            )
        }
    }

    /// SIGKILL: the process dies at once, holding whatever it held.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// The last `n` lines of the service's log.
    pub fn log_tail(&self, n: usize) -> String {
        tally_testkit::last_lines(&self.log, n)
    }
}
