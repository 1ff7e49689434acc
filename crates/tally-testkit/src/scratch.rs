//! Temporary server directories and the watchdog that removes them.
//!
//! Each server gets one directory, named after the owning process id so a
//! leftover is easy to trace. Next to it runs a watchdog: a few lines of `sh`
//! whose stdin is a pipe from the test process. Only the test process holds
//! the write end (Rust opens pipes close-on-exec, so no other child inherits
//! it), and the kernel closes it when the process ends for any reason,
//! `SIGKILL` included. On end-of-file the watchdog signals the pid recorded in
//! `server.pid`, waits for the server to exit and removes the directory. This
//! is why the shared servers may live in statics that are never dropped.
//!
//! Watchdogs and servers run in their own process group, so a Ctrl-C at the
//! terminal interrupts only the test process and the cleanup still runs.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

/// Name of the file holding the pid of the running server, read by the
/// watchdog. It exists only while the server process does.
const PID_FILE: &str = "server.pid";

/// The watchdog. `$1` is the directory, `$2` the signal that stops the
/// server gracefully. It gives the server 30 s before `SIGKILL`, then removes
/// the directory either way. A zombie counts as gone: whether it is reaped
/// depends on whoever inherits it, not on us.
const WATCHDOG: &str = r#"
trap '' INT HUP QUIT PIPE
dir=$1
sig=$2
while read -r _; do :; done
alive() {
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    state=${stat##*) }
    case $state in Z*|X*) return 1 ;; esac
    return 0
}
if pid=$(cat "$dir/server.pid" 2>/dev/null) && [ -n "$pid" ]; then
    kill -s "$sig" "$pid" 2>/dev/null
    i=0
    while alive "$pid" && [ "$i" -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    if alive "$pid"; then kill -s KILL "$pid" 2>/dev/null; fi
fi
rm -rf "$dir"
"#;

/// A temporary directory watched by a watchdog; removed on drop, or by the
/// watchdog when the process ends without dropping it.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    /// The directory, `$TMPDIR/tally-testkit-<kind>-<pid>-<random>`.
    path: PathBuf,
    /// Our end of the watchdog's pipe; dropping it releases the watchdog.
    watchdog_pipe: Option<ChildStdin>,
    /// The watchdog process, reaped on drop.
    watchdog: Child,
}

impl ScratchDir {
    /// Creates the directory (mode 0755, so a server running as another user
    /// can traverse it) and starts its watchdog. `stop_signal` is the signal
    /// name (`INT`, `TERM`) that shuts the server down gracefully.
    pub(crate) fn create(kind: &str, stop_signal: &str) -> Result<Self> {
        let random = uuid::Uuid::new_v4().simple().to_string();
        let path = std::env::temp_dir().join(format!("tally-testkit-{kind}-{}-{}", std::process::id(), &random[..8]));
        DirBuilder::new()
            .mode(0o755)
            .create(&path)
            .with_context(|| format!("tally-testkit: cannot create {}", path.display()))?;
        // The umask may have narrowed the mode given above.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("tally-testkit: cannot chmod {}", path.display()))?;
        let spawned = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("tally-testkit-watchdog")
            .arg(&path)
            .arg(stop_signal)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        let mut watchdog = match spawned {
            Ok(child) => child,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&path);
                return Err(err).context("tally-testkit: cannot start the watchdog (/bin/sh)");
            }
        };
        Ok(Self {
            path,
            watchdog_pipe: watchdog.stdin.take(),
            watchdog,
        })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Records the pid of the server just started, for the watchdog.
    pub(crate) fn set_server_pid(&self, pid: u32) -> Result<()> {
        std::fs::write(self.path.join(PID_FILE), pid.to_string()).context("tally-testkit: cannot write server.pid")
    }

    /// Forgets the server pid once its process has exited, so the watchdog
    /// never signals a recycled pid.
    pub(crate) fn clear_server_pid(&self) {
        let _ = std::fs::remove_file(self.path.join(PID_FILE));
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Remove first: the watchdog, released next, then finds nothing to do.
        let _ = std::fs::remove_dir_all(&self.path);
        drop(self.watchdog_pipe.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if !matches!(self.watchdog.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
