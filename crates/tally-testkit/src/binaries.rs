//! Finding the server programs.
//!
//! `PATH` comes first; PostgreSQL falls back to Debian's versioned
//! `/usr/lib/postgresql/<version>/bin`, because on a fresh Debian machine the
//! server programs are only there. A missing program is an error of one line
//! naming the Debian package to install: a test that silently skips would
//! pass without testing anything.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};

/// Where Debian installs one directory per PostgreSQL major version.
#[cfg(feature = "postgres")]
const DEBIAN_POSTGRES_ROOT: &str = "/usr/lib/postgresql";

/// The two PostgreSQL programs the kit runs, always from one directory so
/// their versions match.
#[cfg(feature = "postgres")]
#[derive(Debug, Clone)]
pub(crate) struct PostgresBinaries {
    /// Creates a data directory.
    pub(crate) initdb: PathBuf,
    /// The server itself.
    pub(crate) postgres: PathBuf,
}

/// The `redis-server` program on `PATH`.
pub(crate) fn redis_server() -> Result<PathBuf> {
    find_on_path("redis-server").ok_or_else(|| {
        anyhow!(
            "tally-testkit: `redis-server` not found on PATH; \
             install the Debian package `redis-server` (apt-get install redis-server)"
        )
    })
}

/// The `redis-cli` program on `PATH` (Debian's `redis-tools`, which
/// `redis-server` depends on), to create test clusters.
pub(crate) fn redis_cli() -> Result<PathBuf> {
    find_on_path("redis-cli").ok_or_else(|| {
        anyhow!(
            "tally-testkit: `redis-cli` not found on PATH; \
             install the Debian package `redis-tools` (apt-get install redis-tools)"
        )
    })
}

/// The `faketime` program (Debian's `faketime`, libfaketime) on `PATH`, for
/// tests that run a process on a shifted clock.
pub fn faketime() -> Result<PathBuf> {
    find_on_path("faketime").ok_or_else(|| {
        anyhow!(
            "tally-testkit: `faketime` not found on PATH; \
             install the Debian package `faketime` (apt-get install faketime)"
        )
    })
}

/// `initdb` and `postgres` from the first directory that has both: the
/// directory of a `postgres` or `initdb` found on `PATH` (symlinks resolved),
/// else the highest version under `/usr/lib/postgresql/*/bin`.
#[cfg(feature = "postgres")]
pub(crate) fn postgres() -> Result<PostgresBinaries> {
    let mut dirs: Vec<PathBuf> = ["postgres", "initdb"]
        .iter()
        .filter_map(|name| find_on_path(name))
        .filter_map(|path| std::fs::canonicalize(path).ok())
        .filter_map(|path| path.parent().map(Path::to_path_buf))
        .collect();
    dirs.extend(debian_postgres_dirs());
    dirs.into_iter()
        .map(|dir| PostgresBinaries {
            initdb: dir.join("initdb"),
            postgres: dir.join("postgres"),
        })
        .find(|bins| is_executable(&bins.initdb) && is_executable(&bins.postgres))
        .ok_or_else(|| {
            anyhow!(
                "tally-testkit: PostgreSQL server programs (`initdb`, `postgres`) not found on PATH \
                 or under {DEBIAN_POSTGRES_ROOT}/*/bin; install the Debian package `postgresql` \
                 (apt-get install postgresql)"
            )
        })
}

/// `/usr/lib/postgresql/<version>/bin`, highest version first.
#[cfg(feature = "postgres")]
fn debian_postgres_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(DEBIAN_POSTGRES_ROOT) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            // "9.6" and "15" compare numerically, part by part.
            let version = name.split('.').map(str::parse).collect::<Result<Vec<u32>, _>>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

/// The first executable file called `name` in a `PATH` directory.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}
