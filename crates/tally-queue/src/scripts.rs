//! The Lua scripts, loaded once per process.
//!
//! Each file in `lua/` is one atomic state change; helpers shared by several
//! scripts (state format, dead-set rules) live in `lua/_shared.lua` and are
//! prepended at compile time. [`redis::Script`] sends `EVALSHA` and falls
//! back to loading the script when Redis answers `NOSCRIPT` (after a restart
//! or `SCRIPT FLUSH`), so nothing has to be reloaded by hand.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($name:ident, $file:literal) => {
        #[doc = concat!("`lua/", $file, "` with the shared helpers.")]
        pub(crate) static $name: LazyLock<Script> = LazyLock::new(|| {
            Script::new(concat!(
                include_str!("../lua/_shared.lua"),
                include_str!(concat!("../lua/", $file))
            ))
        });
    };
}

script!(ENQUEUE_JOBS, "enqueue_jobs.lua");
script!(CLAIM_JOBS, "claim_jobs.lua");
script!(COMPLETE_JOBS, "complete_jobs.lua");
script!(FAIL_JOB, "fail_job.lua");
script!(EXTEND_LEASES, "extend_leases.lua");
script!(REQUEUE_JOBS, "requeue_jobs.lua");
script!(PROMOTE_DUE, "promote_due.lua");
script!(REAP_EXPIRED, "reap_expired.lua");
script!(RETRY_DEAD, "retry_dead.lua");
script!(PURGE_DEAD, "purge_dead.lua");
