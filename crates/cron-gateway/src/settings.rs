//! The gateway's settings: defaults, then the environment, validated at start.

use std::{net::SocketAddr, time::Duration};

use tally_jobs::RepairPipeline;
use tally_service::{Env, REDIS_SCHEMES, SettingsError, redact_url};

use crate::auth::CronSecret;

/// Everything the gateway reads from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `BIND_ADDR`: where the API, probes and metrics listen (default `0.0.0.0:8080`).
    pub bind_addr: SocketAddr,
    /// `REDIS_URL`: the queue's Redis (default `redis://127.0.0.1:6379`).
    pub redis_url: String,
    /// `CRON_SECRET`: the bearer token the CronJob presents (required, ≥ 16 characters).
    pub cron_secret: CronSecret,
    /// `TALLY_QUEUE_PREFIX`: key prefix of every queue key (default `tally`).
    pub queue_prefix: String,
    /// `MAX_BODY_BYTES`: larger request bodies get 413 (default 4096).
    pub max_body_bytes: usize,
    /// `SHUTDOWN_TIMEOUT_SECS`: how long in-flight requests may finish after SIGTERM (default 10).
    pub shutdown_timeout: Duration,
    /// `REPAIR_ENABLED` (default on) with `REPAIR_GRACE_SECS` and
    /// `REPAIR_BATCH`: the repair every cron call asks scoring-worker for
    /// (a deduplicated `RepairPipeline` job); `None` when disabled.
    pub repair: Option<RepairPipeline>,
    /// Whether `DATABASE_URL` is set. The gateway no longer reads it (the
    /// repair runs in scoring-worker) and says so once at start.
    pub database_url_set: bool,
}

impl Settings {
    /// Reads and validates the settings; the error names the variable.
    pub fn from_env(env: &Env) -> Result<Self, SettingsError> {
        let raw_secret = env.required(
            "CRON_SECRET",
            "the bearer secret the CronJob presents, at least 16 characters",
        )?;
        let cron_secret = CronSecret::new(&raw_secret).map_err(|reason| SettingsError::Invalid {
            name: "CRON_SECRET",
            shown: "(hidden)".into(),
            reason,
        })?;
        let settings = Settings {
            bind_addr: env.socket_addr("BIND_ADDR", "0.0.0.0:8080")?,
            redis_url: env.url("REDIS_URL", Some("redis://127.0.0.1:6379"), REDIS_SCHEMES)?,
            cron_secret,
            queue_prefix: env.raw("TALLY_QUEUE_PREFIX").unwrap_or_else(|| "tally".into()),
            max_body_bytes: env.number("MAX_BODY_BYTES", 4096, 64, 1 << 20)? as usize,
            shutdown_timeout: env.seconds("SHUTDOWN_TIMEOUT_SECS", 10, 0, 600)?,
            repair: repair_from_env(env)?,
            database_url_set: env.raw("DATABASE_URL").is_some(),
        };
        Ok(settings)
    }

    /// One line describing the configuration, safe to log.
    pub fn summary(&self) -> String {
        let repair = self.repair.map_or_else(
            || "off (REPAIR_ENABLED=off)".to_owned(),
            |r| format!("on (grace={}s batch={}, run by scoring-worker)", r.grace_secs, r.batch),
        );
        format!(
            "bind={} redis={} prefix={} max_body={}B repair={repair}",
            self.bind_addr,
            redact_url(&self.redis_url),
            self.queue_prefix,
            self.max_body_bytes
        )
    }
}

/// `REPAIR_ENABLED`, `REPAIR_GRACE_SECS`, `REPAIR_BATCH`. The bounds are
/// checked even when the repair is off, so turning it on later cannot
/// reveal a bad value.
fn repair_from_env(env: &Env) -> Result<Option<RepairPipeline>, SettingsError> {
    let enabled = env.switch("REPAIR_ENABLED", true)?;
    let defaults = RepairPipeline::default();
    let repair = RepairPipeline {
        grace_secs: env.number(
            "REPAIR_GRACE_SECS",
            defaults.grace_secs,
            0,
            RepairPipeline::MAX_GRACE_SECS,
        )?,
        batch: env.number(
            "REPAIR_BATCH",
            u64::from(defaults.batch),
            1,
            u64::from(RepairPipeline::MAX_BATCH),
        )? as u32,
    };
    Ok(enabled.then_some(repair))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: (&str, &str) = ("CRON_SECRET", "0123456789abcdef-secret");

    #[test]
    fn refuses_to_start_without_a_good_secret() {
        let err = Settings::from_env(&Env::from_pairs([])).expect_err("no secret");
        assert!(err.to_string().starts_with("missing setting CRON_SECRET"), "{err}");
        let err = Settings::from_env(&Env::from_pairs([("CRON_SECRET", "tooshort")])).expect_err("short");
        assert_eq!(
            err.to_string(),
            "invalid setting CRON_SECRET=(hidden): must be at least 16 characters"
        );
    }

    #[test]
    fn the_repair_is_on_by_default_and_checks_its_bounds() {
        let s = Settings::from_env(&Env::from_pairs([SECRET])).expect("valid");
        assert_eq!(s.repair, Some(RepairPipeline::default()));
        assert_eq!(s.repair.map(|r| (r.grace_secs, r.batch)), Some((120, 200)));
        assert!(
            s.summary().contains("repair=on (grace=120s batch=200"),
            "{}",
            s.summary()
        );
        let s = Settings::from_env(&Env::from_pairs([
            SECRET,
            ("REPAIR_BATCH", "50"),
            ("REPAIR_GRACE_SECS", "0"),
        ]))
        .expect("valid");
        assert_eq!(s.repair.map(|r| (r.grace_secs, r.batch)), Some((0, 50)));
        for (name, value) in [
            ("REPAIR_BATCH", "0"),
            ("REPAIR_BATCH", "10001"),
            ("REPAIR_GRACE_SECS", "soon"),
            ("REPAIR_GRACE_SECS", "86401"),
            ("REPAIR_ENABLED", "maybe"),
        ] {
            let err = Settings::from_env(&Env::from_pairs([SECRET, (name, value)])).expect_err(value);
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn repair_enabled_false_turns_it_off_but_still_checks_the_bounds() {
        for off in ["false", "off", "0", "no", "FALSE"] {
            let s = Settings::from_env(&Env::from_pairs([SECRET, ("REPAIR_ENABLED", off)])).expect(off);
            assert_eq!(s.repair, None, "{off}");
            assert!(s.summary().contains("repair=off"), "{}", s.summary());
        }
        let on = Settings::from_env(&Env::from_pairs([SECRET, ("REPAIR_ENABLED", "true")])).expect("on");
        assert!(on.repair.is_some());
        let err = Settings::from_env(&Env::from_pairs([
            SECRET,
            ("REPAIR_ENABLED", "false"),
            ("REPAIR_BATCH", "0"),
        ]))
        .expect_err("bad batch");
        assert!(err.to_string().contains("REPAIR_BATCH"), "{err}");
    }

    #[test]
    fn a_database_url_is_noticed_but_neither_read_nor_shown() {
        let s = Settings::from_env(&Env::from_pairs([SECRET])).expect("valid");
        assert!(!s.database_url_set);
        // Not even checked: any value starts the gateway.
        let s = Settings::from_env(&Env::from_pairs([SECRET, ("DATABASE_URL", "mysql://tally:hunter2@db")]))
            .expect("valid");
        assert!(s.database_url_set);
        let shown = format!("{s:?} {}", s.summary());
        assert!(!shown.contains("hunter2") && !shown.contains("mysql"), "{shown}");
    }

    #[test]
    fn defaults_and_secret_redaction() {
        let s = Settings::from_env(&Env::from_pairs([SECRET])).expect("valid");
        assert_eq!(s.bind_addr.port(), 8080);
        assert_eq!(s.queue_prefix, "tally");
        let shown = format!("{s:?} {}", s.summary());
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }
}
