//! Nothing is left behind when a test process is killed with `SIGKILL`:
//! this test re-runs its own binary as a child that starts the shared and
//! dedicated servers (the shared Redis once a server, once a cluster), kills
//! it, and waits for the watchdogs to stop every server process and remove
//! every directory.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Set in the child process: it then starts servers instead of returning.
const CHILD_VAR: &str = "TALLY_TESTKIT_LEFTOVERS_CHILD";

/// The line the child prints once all its servers run.
const READY_LINE: &str = "tally-testkit-leftovers-child-ready";

/// How long the watchdogs may take after the kill (Postgres's fast shutdown
/// takes a fraction of a second).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(15);

/// The child's half: start every kind of server the kit has, say so, and
/// wait to be killed. Without `CHILD_VAR` it returns at once.
#[tokio::test]
#[ignore = "helper process of sigkill_leaves_no_servers_or_directories"]
async fn leftovers_child() {
    if std::env::var_os(CHILD_VAR).is_none() {
        return;
    }
    let _redis = tally_testkit::redis().await;
    let _db = tally_testkit::database().await;
    let _dedicated_redis = tally_testkit::RedisServer::start(tally_testkit::RedisOptions {
        appendonly: true,
        ..tally_testkit::RedisOptions::default()
    })
    .await
    .expect("dedicated redis");
    let _dedicated_postgres = tally_testkit::PostgresServer::start()
        .await
        .expect("dedicated postgres");
    println!("{READY_LINE}");
    tokio::time::sleep(Duration::from_mins(10)).await;
}

/// Our scratch directories belonging to process `pid`.
fn scratch_dirs_of(pid: u32) -> Vec<PathBuf> {
    let marker = format!("-{pid}-");
    std::fs::read_dir(std::env::temp_dir())
        .expect("read temp dir")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("tally-testkit-") && name.contains(&marker))
        })
        .collect()
}

/// Every live process as (pid, parent pid, command line).
fn processes() -> Vec<(u32, u32, String)> {
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // Fields after the command name: state, ppid, ...
            let mut after = stat.rsplit_once(") ")?.1.split(' ');
            let state = after.next()?;
            let ppid: u32 = after.next()?.parse().ok()?;
            if state.starts_with('Z') {
                return None;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            Some((pid, ppid, String::from_utf8_lossy(&cmdline).replace('\0', " ")))
        })
        .collect()
}

/// The pids in `roots` that still live, and their live descendants.
fn live_tree(roots: &[u32]) -> Vec<(u32, String)> {
    let all = processes();
    let mut tree: Vec<(u32, String)> = all
        .iter()
        .filter(|(pid, _, _)| roots.contains(pid))
        .map(|(pid, _, cmd)| (*pid, cmd.clone()))
        .collect();
    let mut index = 0;
    while index < tree.len() {
        let parent = tree[index].0;
        tree.extend(
            all.iter()
                .filter(|(_, ppid, _)| *ppid == parent)
                .map(|(pid, _, cmd)| (*pid, cmd.clone())),
        );
        index += 1;
    }
    tree
}

/// Live processes whose command line names one of `dirs` (the watchdogs,
/// the postmasters).
fn mentioning(dirs: &[PathBuf]) -> Vec<(u32, String)> {
    processes()
        .into_iter()
        .filter(|(_, _, cmd)| dirs.iter().any(|dir| cmd.contains(&*dir.to_string_lossy())))
        .map(|(pid, _, cmd)| (pid, cmd))
        .collect()
}

fn server_pid(dir: &Path) -> u32 {
    std::fs::read_to_string(dir.join("server.pid"))
        .expect("server.pid of a running server")
        .trim()
        .parse()
        .expect("a pid")
}

#[test]
fn sigkill_leaves_no_servers_or_directories() {
    sigkill_leaves_nothing("single", 4, "two shared and two dedicated servers");
}

/// The same with the shared Redis a cluster: its six nodes go too.
#[test]
fn sigkill_leaves_no_cluster_nodes_or_directories() {
    sigkill_leaves_nothing(
        "cluster",
        9,
        "six nodes of the shared cluster, the shared PostgreSQL and two dedicated servers",
    );
}

/// Runs the child with the shared Redis of `backend` (`TALLY_TEST_REDIS`),
/// expecting `expected_dirs` server directories, kills it, and waits for
/// every server, watchdog and directory to go.
fn sigkill_leaves_nothing(backend: &str, expected_dirs: usize, what: &str) {
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "leftovers_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_VAR, "1")
        .env(tally_testkit::BACKEND_VAR, backend)
        // The child must start its own servers whatever this process uses.
        .env_remove("TEST_REDIS_URL")
        .env_remove("TEST_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child test process");
    let stdout = child.stdout.take().expect("child stdout");
    let (ready, wait_ready) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                // libtest prints "test leftovers_child ... " without a newline first.
                Ok(line) if line.trim_end().ends_with(READY_LINE) => {
                    let _ = ready.send(());
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    if wait_ready.recv_timeout(Duration::from_mins(2)).is_err() {
        let _ = child.kill();
        panic!("child never reported its servers running");
    }

    let dirs = scratch_dirs_of(child.id());
    assert_eq!(dirs.len(), expected_dirs, "{what}: {dirs:?}");
    let servers: Vec<u32> = dirs.iter().map(|dir| server_pid(dir)).collect();
    let before = live_tree(&servers);
    assert!(
        before.len() > expected_dirs,
        "postgres has helper processes: {before:?}"
    );
    assert!(!mentioning(&dirs).is_empty(), "watchdogs run");

    child.kill().expect("SIGKILL the child"); // `Child::kill` is SIGKILL
    child.wait().expect("reap the child");

    let deadline = Instant::now() + CLEANUP_TIMEOUT;
    loop {
        let left_dirs: Vec<&PathBuf> = dirs.iter().filter(|dir| dir.exists()).collect();
        let left_servers: Vec<(u32, String)> = before
            .iter()
            .filter(|(pid, _)| live_tree(&[*pid]).iter().any(|(p, _)| p == pid))
            .cloned()
            .collect();
        let left_watchdogs = mentioning(&dirs);
        if left_dirs.is_empty() && left_servers.is_empty() && left_watchdogs.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left after {CLEANUP_TIMEOUT:?}: dirs {left_dirs:?}, servers {left_servers:?}, \
             other processes {left_watchdogs:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
