//! The gateway's settings: defaults, then the environment, validated at start.

use std::{net::SocketAddr, time::Duration};

use crate::repair::RepairSettings;
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
    /// `DATABASE_URL` (optional) with `REPAIR_GRACE_SECS` and `REPAIR_BATCH`:
    /// with a database, every cron call also runs the repairing safety net
    /// (`crate::repair`); without one, it only enqueues the refresh.
    pub repair: Option<RepairConfig>,
}

/// The database the repair reads, and its bounds.
#[derive(Clone)]
pub struct RepairConfig {
    /// `DATABASE_URL`.
    pub database_url: String,
    /// `REPAIR_GRACE_SECS`, `REPAIR_BATCH`.
    pub settings: RepairSettings,
}

impl std::fmt::Debug for RepairConfig {
    // The URL may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepairConfig")
            .field("database_url", &redact_url(&self.database_url))
            .field("settings", &self.settings)
            .finish()
    }
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
            repair: match env.raw("DATABASE_URL") {
                None => None,
                Some(_) => Some(RepairConfig {
                    database_url: env.url("DATABASE_URL", None, &["postgres://", "postgresql://"])?,
                    settings: RepairSettings::from_env(env)?,
                }),
            },
        };
        Ok(settings)
    }

    /// One line describing the configuration, safe to log.
    pub fn summary(&self) -> String {
        let repair = self.repair.as_ref().map_or_else(
            || "off (no DATABASE_URL)".to_owned(),
            |r| {
                format!(
                    "database={} grace={}s batch={}",
                    redact_url(&r.database_url),
                    r.settings.grace.as_secs(),
                    r.settings.batch
                )
            },
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_repair_needs_a_database_url_and_checks_its_bounds() {
        let secret = ("CRON_SECRET", "0123456789abcdef-secret");
        let s = Settings::from_env(&Env::from_pairs([secret])).expect("valid");
        assert!(s.repair.is_none(), "no DATABASE_URL: no repair");
        assert!(s.summary().contains("repair=off"), "{}", s.summary());
        let s = Settings::from_env(&Env::from_pairs([
            secret,
            ("DATABASE_URL", "postgres://tally:hunter2@db/tally"),
            ("REPAIR_BATCH", "50"),
        ]))
        .expect("valid");
        let repair = s.repair.as_ref().expect("repair on");
        assert_eq!((repair.settings.batch, repair.settings.grace.as_secs()), (50, 120));
        let shown = format!("{s:?} {}", s.summary());
        assert!(!shown.contains("hunter2"), "{shown}");
        for (name, value) in [
            ("DATABASE_URL", "mysql://db"),
            ("REPAIR_BATCH", "0"),
            ("REPAIR_GRACE_SECS", "soon"),
        ] {
            let mut pairs = vec![secret, ("DATABASE_URL", "postgres://db/tally")];
            pairs.push((name, value));
            let err = Settings::from_env(&Env::from_pairs(pairs)).expect_err(value);
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn defaults_and_secret_redaction() {
        let s = Settings::from_env(&Env::from_pairs([("CRON_SECRET", "0123456789abcdef-secret")])).expect("valid");
        assert_eq!(s.bind_addr.port(), 8080);
        assert_eq!(s.queue_prefix, "tally");
        let shown = format!("{s:?} {}", s.summary());
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }
}
