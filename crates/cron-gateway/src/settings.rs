//! The gateway's settings: defaults, then the environment, validated at start.

use std::{net::SocketAddr, time::Duration};

use tally_service::{Env, SettingsError, redact_url};

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
            redis_url: env.url("REDIS_URL", Some("redis://127.0.0.1:6379"), &["redis://", "rediss://"])?,
            cron_secret,
            queue_prefix: env.raw("TALLY_QUEUE_PREFIX").unwrap_or_else(|| "tally".into()),
            max_body_bytes: env.number("MAX_BODY_BYTES", 4096, 64, 1 << 20)? as usize,
            shutdown_timeout: env.seconds("SHUTDOWN_TIMEOUT_SECS", 10, 0, 600)?,
        };
        Ok(settings)
    }

    /// One line describing the configuration, safe to log.
    pub fn summary(&self) -> String {
        format!(
            "bind={} redis={} prefix={} max_body={}B",
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
    fn defaults_and_secret_redaction() {
        let s = Settings::from_env(&Env::from_pairs([("CRON_SECRET", "0123456789abcdef-secret")])).expect("valid");
        assert_eq!(s.bind_addr.port(), 8080);
        assert_eq!(s.queue_prefix, "tally");
        let shown = format!("{s:?} {}", s.summary());
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }
}
