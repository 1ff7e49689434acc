//! The console's settings: defaults, then the environment, validated at
//! start. A missing or bad value stops the binary with one line naming the
//! variable; the tokens are never shown (not in errors, not in `Debug`, not
//! in the start-up summary).

use std::{net::SocketAddr, time::Duration};

use tally_service::{Env, REDIS_SCHEMES, SettingsError, redact_url};

use crate::auth::{AdminToken, Tokens};

/// Everything the console reads from the environment.
#[derive(Clone)]
pub struct Settings {
    /// `ADMIN_BIND_ADDR`: where the dashboard, the API, the probes and the
    /// metrics listen (default `0.0.0.0:8081`).
    pub bind_addr: SocketAddr,
    /// `REDIS_URL`: the queues' Redis. Required: a console with write powers
    /// never guesses which Redis it repairs.
    pub redis_url: String,
    /// `TALLY_QUEUE_PREFIX`: key prefix of every queue key (default `tally`).
    pub queue_prefix: String,
    /// `ADMIN_TOKEN` (read-write, required) and `ADMIN_READ_TOKEN`
    /// (read-only, optional), each at least 16 characters.
    pub tokens: Tokens,
    /// `ADMIN_PUBLIC_ORIGIN` (optional), e.g. `https://console.example.com`:
    /// the only `Origin` a browser write may come from. Unset, a write's
    /// `Origin` must name the host the request was sent to (`Host`).
    pub public_origin: Option<String>,
    /// Whether the session cookie carries `Secure`: on when
    /// `ADMIN_PUBLIC_ORIGIN` is an `https://` origin.
    pub secure_cookie: bool,
    /// `ADMIN_SESSION_HOURS`: how long a browser login lasts (default 12).
    pub session_ttl: Duration,
    /// `ADMIN_SAMPLE_SECS`: how often the queues' counters are sampled for
    /// the completed/failed rates (default 5).
    pub sample_interval: Duration,
    /// `SHUTDOWN_TIMEOUT_SECS`: how long in-flight requests may finish after
    /// SIGTERM (default 10).
    pub shutdown_timeout: Duration,
}

impl std::fmt::Debug for Settings {
    // The Redis URL may hold a password; the tokens redact themselves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("bind_addr", &self.bind_addr)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("queue_prefix", &self.queue_prefix)
            .field("tokens", &self.tokens)
            .field("public_origin", &self.public_origin)
            .field("secure_cookie", &self.secure_cookie)
            .field("session_ttl", &self.session_ttl)
            .field("sample_interval", &self.sample_interval)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish()
    }
}

fn token(env: &Env, name: &'static str, required: bool) -> Result<Option<AdminToken>, SettingsError> {
    let raw = if required {
        Some(env.required(
            name,
            "a bearer token of at least 16 characters (e.g. openssl rand -hex 32)",
        )?)
    } else {
        env.raw(name)
    };
    raw.map(|raw| {
        AdminToken::new(&raw).map_err(|reason| SettingsError::Invalid {
            name,
            shown: "(hidden)".into(),
            reason,
        })
    })
    .transpose()
}

/// Checks an origin such as `https://console.example.com[:port]`: a scheme,
/// a host, no path.
fn origin(env: &Env) -> Result<Option<String>, SettingsError> {
    let Some(raw) = env.raw("ADMIN_PUBLIC_ORIGIN") else {
        return Ok(None);
    };
    let value = raw.trim().trim_end_matches('/').to_ascii_lowercase();
    let host = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .unwrap_or_default();
    if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
        return Err(SettingsError::Invalid {
            name: "ADMIN_PUBLIC_ORIGIN",
            shown: format!("{raw:?}"),
            reason: "expected an origin such as https://console.example.com (scheme and host, no path)".into(),
        });
    }
    Ok(Some(value))
}

impl Settings {
    /// Reads and validates the settings; the error names the variable.
    pub fn from_env(env: &Env) -> Result<Self, SettingsError> {
        let write = token(env, "ADMIN_TOKEN", true)?.ok_or(SettingsError::Missing {
            name: "ADMIN_TOKEN",
            help: "a bearer token of at least 16 characters",
        })?;
        let read = token(env, "ADMIN_READ_TOKEN", false)?;
        if read.as_ref().is_some_and(|read| read.same_as(&write)) {
            return Err(SettingsError::Invalid {
                name: "ADMIN_READ_TOKEN",
                shown: "(hidden)".into(),
                reason: "must differ from ADMIN_TOKEN".into(),
            });
        }
        let redis_url = match env.raw("REDIS_URL") {
            None => {
                return Err(SettingsError::Missing {
                    name: "REDIS_URL",
                    help: "the queues' Redis, e.g. redis://127.0.0.1:6379",
                });
            }
            Some(_) => env.url("REDIS_URL", None, REDIS_SCHEMES)?,
        };
        let public_origin = origin(env)?;
        let prefix = env.raw("TALLY_QUEUE_PREFIX").unwrap_or_else(|| "tally".into());
        if prefix.contains(['{', '}']) {
            return Err(SettingsError::Invalid {
                name: "TALLY_QUEUE_PREFIX",
                shown: format!("{prefix:?}"),
                reason: "must be free of braces".into(),
            });
        }
        Ok(Settings {
            bind_addr: env.socket_addr("ADMIN_BIND_ADDR", "0.0.0.0:8081")?,
            redis_url,
            queue_prefix: prefix,
            tokens: Tokens::new(write, read),
            secure_cookie: public_origin.as_deref().is_some_and(|o| o.starts_with("https://")),
            public_origin,
            session_ttl: Duration::from_secs(env.number("ADMIN_SESSION_HOURS", 12, 1, 24 * 30)? * 3600),
            sample_interval: env.seconds("ADMIN_SAMPLE_SECS", 5, 1, 60)?,
            shutdown_timeout: env.seconds("SHUTDOWN_TIMEOUT_SECS", 10, 0, 600)?,
        })
    }

    /// One line describing the configuration, safe to log (no token).
    pub fn summary(&self) -> String {
        format!(
            "bind={} redis={} prefix={} read_token={} origin={} session={}h sample={}s",
            self.bind_addr,
            redact_url(&self.redis_url),
            self.queue_prefix,
            if self.tokens.has_read_token() { "set" } else { "unset" },
            self.public_origin.as_deref().unwrap_or("(same as Host)"),
            self.session_ttl.as_secs() / 3600,
            self.sample_interval.as_secs(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRITE: (&str, &str) = ("ADMIN_TOKEN", "write-token-0123456789");
    const REDIS: (&str, &str) = ("REDIS_URL", "redis://:hunter2@127.0.0.1:6379");

    #[test]
    fn tokens_are_required_long_and_distinct() {
        let err = Settings::from_env(&Env::from_pairs([REDIS])).expect_err("no token");
        assert!(err.to_string().starts_with("missing setting ADMIN_TOKEN"), "{err}");
        let err = Settings::from_env(&Env::from_pairs([REDIS, ("ADMIN_TOKEN", "short")])).expect_err("short");
        assert_eq!(
            err.to_string(),
            "invalid setting ADMIN_TOKEN=(hidden): must be at least 16 characters"
        );
        let err = Settings::from_env(&Env::from_pairs([REDIS, WRITE, ("ADMIN_READ_TOKEN", "short")]))
            .expect_err("short read token");
        assert!(err.to_string().starts_with("invalid setting ADMIN_READ_TOKEN"), "{err}");
        let err = Settings::from_env(&Env::from_pairs([REDIS, WRITE, ("ADMIN_READ_TOKEN", WRITE.1)]))
            .expect_err("same token twice");
        assert!(err.to_string().contains("must differ"), "{err}");
    }

    #[test]
    fn redis_is_required_and_checked() {
        let err = Settings::from_env(&Env::from_pairs([WRITE])).expect_err("no redis");
        assert!(err.to_string().starts_with("missing setting REDIS_URL"), "{err}");
        let err = Settings::from_env(&Env::from_pairs([WRITE, ("REDIS_URL", "http://x")])).expect_err("scheme");
        assert!(err.to_string().starts_with("invalid setting REDIS_URL"), "{err}");
    }

    #[test]
    fn defaults_and_nothing_secret_shown() {
        let s = Settings::from_env(&Env::from_pairs([
            WRITE,
            REDIS,
            ("ADMIN_READ_TOKEN", "read-token-0123456789"),
        ]))
        .expect("valid");
        assert_eq!(s.bind_addr.port(), 8081);
        assert_eq!(s.queue_prefix, "tally");
        assert_eq!(s.session_ttl, Duration::from_secs(12 * 3600));
        assert!(!s.secure_cookie);
        let shown = format!("{s:?} {}", s.summary());
        for secret in ["write-token", "read-token", "hunter2"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn origins_are_checked() {
        for bad in ["console.example.com", "https://", "https://x.example/path", "ftp://x"] {
            let err =
                Settings::from_env(&Env::from_pairs([WRITE, REDIS, ("ADMIN_PUBLIC_ORIGIN", bad)])).expect_err(bad);
            assert!(err.to_string().contains("ADMIN_PUBLIC_ORIGIN"), "{err}");
        }
        let s = Settings::from_env(&Env::from_pairs([
            WRITE,
            REDIS,
            ("ADMIN_PUBLIC_ORIGIN", "https://Console.Example.com/"),
        ]))
        .expect("valid");
        assert_eq!(s.public_origin.as_deref(), Some("https://console.example.com"));
        assert!(s.secure_cookie);
    }

    #[test]
    fn bad_numbers_name_their_variable() {
        for (name, value) in [
            ("ADMIN_BIND_ADDR", "localhost"),
            ("ADMIN_SESSION_HOURS", "0"),
            ("ADMIN_SAMPLE_SECS", "often"),
            ("SHUTDOWN_TIMEOUT_SECS", "-1"),
            ("TALLY_QUEUE_PREFIX", "a{b}"),
        ] {
            let err = Settings::from_env(&Env::from_pairs([WRITE, REDIS, (name, value)])).expect_err(value);
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
