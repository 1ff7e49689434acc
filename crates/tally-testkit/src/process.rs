//! Process plumbing shared by the Redis and Postgres servers: free ports,
//! signals, graceful stops, log files and the user a server runs as.
//!
//! Signals go through `nix` (safe `kill(2)`): `Child::kill` only knows
//! `SIGKILL`, which would skip Postgres's shutdown and Redis's final AOF
//! write.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
pub use nix::sys::signal::Signal;

/// How much of a server log goes into an error message.
const LOG_TAIL_BYTES: u64 = 4096;

/// A loopback port that was free a moment ago. Another process may take it
/// before the server binds it, so callers retry with a new port when the
/// server fails to start.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("tally-testkit: cannot bind 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Sends `signal` to `pid`; a process already gone is not an error.
pub fn send_signal(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

/// Whether the child has exited (and is now reaped).
pub(crate) fn has_exited(child: &mut Child) -> bool {
    !matches!(child.try_wait(), Ok(None))
}

/// Stops `child` gracefully with `signal`, waiting up to `grace` before
/// `SIGKILL`; for async callers.
pub(crate) async fn stop(child: &mut Child, signal: Signal, grace: Duration) {
    send_signal(child.id(), signal);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if has_exited(child) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Same as [`stop`], for `Drop`.
pub(crate) fn stop_blocking(child: &mut Child, signal: Signal, grace: Duration) {
    send_signal(child.id(), signal);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if has_exited(child) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Opens `path` for appending (restarts add to the same log) and returns
/// it twice, for a child's stdout and stderr.
pub(crate) fn log_output(path: &Path) -> Result<(Stdio, Stdio)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("tally-testkit: cannot open {}", path.display()))?;
    let copy = file.try_clone()?;
    Ok((Stdio::from(file), Stdio::from(copy)))
}

/// The last few kilobytes of a log file, for an error message.
pub(crate) fn log_tail(path: &Path) -> String {
    match read_tail(path, LOG_TAIL_BYTES) {
        Ok(text) => format!("--- {} ---\n{}", path.display(), text.trim_end()),
        Err(err) => format!("(cannot read {}: {err})", path.display()),
    }
}

/// The last `n` lines of a log file (of its last 64 KiB, so a huge log is
/// not read whole); empty when it cannot be read. For error messages.
pub fn last_lines(path: &Path, n: usize) -> String {
    let text = read_tail(path, 64 * 1024).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last `limit` bytes of a file, as text.
fn read_tail(path: &Path, limit: u64) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(limit)))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    Ok(String::from_utf8_lossy(&tail).into_owned())
}

/// User and group ids a Postgres server runs as.
#[cfg(feature = "postgres")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunAs {
    /// User id.
    pub(crate) uid: u32,
    /// Primary group id.
    pub(crate) gid: u32,
}

/// `None` when we are not root (the server runs as us); as root, the
/// `postgres` user, because PostgreSQL refuses to run as root. `owned_dir`
/// is a directory we just created: its owner is our effective user id,
/// which tells us without `unsafe` whether we are root.
#[cfg(feature = "postgres")]
pub(crate) fn postgres_run_as(owned_dir: &Path) -> Result<Option<RunAs>> {
    use std::os::unix::fs::MetadataExt as _;

    if std::fs::metadata(owned_dir)?.uid() != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").context("tally-testkit: cannot read /etc/passwd")?;
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if let [name, _, uid, gid, ..] = fields[..]
            && name == "postgres"
        {
            return Ok(Some(RunAs {
                uid: uid.parse().context("bad uid for postgres in /etc/passwd")?,
                gid: gid.parse().context("bad gid for postgres in /etc/passwd")?,
            }));
        }
    }
    anyhow::bail!(
        "tally-testkit: running as root, and PostgreSQL refuses root, but there is no `postgres` \
         user; install the Debian package `postgresql` (it creates the user)"
    )
}
