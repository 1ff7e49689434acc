//! Reading settings from the environment with one clear error per bad value.
//!
//! Each binary declares a settings struct and fills it through [`Env`], which
//! records the variable name in every error so the program can stop with a
//! single line such as `invalid setting WORKER_CONCURRENCY="zero": expected a
//! whole number`. Secrets and URL passwords never appear in errors or `Debug`.

use std::{fmt::Display, net::SocketAddr, str::FromStr, time::Duration};

/// The schemes `REDIS_URL` may use: one server (`redis://`, `rediss://`) or
/// a Redis Cluster (`redis+cluster://host:port,host:port`, with TLS
/// `rediss+cluster://`).
pub const REDIS_SCHEMES: &[&str] = &["redis://", "rediss://", "redis+cluster://", "rediss+cluster://"];

/// A setting that is missing or does not parse.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A required variable is not set (or is empty).
    #[error("missing setting {name}: {help}")]
    Missing {
        /// The environment variable.
        name: &'static str,
        /// What it should hold.
        help: &'static str,
    },
    /// A variable is set to something unusable.
    #[error("invalid setting {name}={shown}: {reason}")]
    Invalid {
        /// The environment variable.
        name: &'static str,
        /// The value as it may be shown (secrets are masked).
        shown: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// How [`Env`] reads one variable.
type Lookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A view of the environment; tests pass a map instead of the real one.
pub struct Env {
    lookup: Lookup,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Env")
    }
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Env {
            lookup: Box::new(|name| std::env::var(name).ok()),
        }
    }

    /// A fixed set of variables, for tests.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let map: std::collections::HashMap<String, String> =
            pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        Env {
            lookup: Box::new(move |name| map.get(name).cloned()),
        }
    }

    /// The raw value, `None` when unset or empty.
    pub fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    /// A required string.
    pub fn required(&self, name: &'static str, help: &'static str) -> Result<String, SettingsError> {
        self.raw(name).ok_or(SettingsError::Missing { name, help })
    }

    /// An optional value parsed with `FromStr`, or `default` when unset.
    pub fn parsed<T>(&self, name: &'static str, default: T, expected: &str) -> Result<T, SettingsError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.raw(name) {
            None => Ok(default),
            Some(value) => value.trim().parse().map_err(|e: T::Err| SettingsError::Invalid {
                name,
                shown: format!("{value:?}"),
                reason: format!("expected {expected} ({e})"),
            }),
        }
    }

    /// A whole number within `min..=max`.
    pub fn number(&self, name: &'static str, default: u64, min: u64, max: u64) -> Result<u64, SettingsError> {
        let value = self.parsed(name, default, "a whole number")?;
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(SettingsError::Invalid {
                name,
                shown: value.to_string(),
                reason: format!("must be between {min} and {max}"),
            })
        }
    }

    /// An on/off switch: `on`, `true`, `1`, `yes` or `off`, `false`, `0`,
    /// `no` (any case); `default` when unset.
    pub fn switch(&self, name: &'static str, default: bool) -> Result<bool, SettingsError> {
        let Some(value) = self.raw(name) else {
            return Ok(default);
        };
        match value.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "1" | "yes" => Ok(true),
            "off" | "false" | "0" | "no" => Ok(false),
            _ => Err(SettingsError::Invalid {
                name,
                shown: format!("{value:?}"),
                reason: "expected on or off".into(),
            }),
        }
    }

    /// A duration given in whole seconds, within `min..=max` seconds.
    pub fn seconds(&self, name: &'static str, default: u64, min: u64, max: u64) -> Result<Duration, SettingsError> {
        self.number(name, default, min, max).map(Duration::from_secs)
    }

    /// A socket address such as `0.0.0.0:8080`.
    pub fn socket_addr(&self, name: &'static str, default: &str) -> Result<SocketAddr, SettingsError> {
        let raw = self.raw(name).unwrap_or_else(|| default.to_owned());
        raw.parse().map_err(|e| SettingsError::Invalid {
            name,
            shown: format!("{raw:?}"),
            reason: format!("expected host:port such as 0.0.0.0:8080 ({e})"),
        })
    }

    /// A URL that must start with one of `schemes` (e.g. `redis://`).
    pub fn url(&self, name: &'static str, default: Option<&str>, schemes: &[&str]) -> Result<String, SettingsError> {
        let value = match (self.raw(name), default) {
            (Some(v), _) => v,
            (None, Some(d)) => d.to_owned(),
            (None, None) => {
                return Err(SettingsError::Missing {
                    name,
                    help: "a connection URL",
                });
            }
        };
        if schemes.iter().any(|s| value.starts_with(s)) {
            Ok(value)
        } else {
            Err(SettingsError::Invalid {
                name,
                shown: format!("{:?}", redact_url(&value)),
                reason: format!("expected a URL starting with {}", schemes.join(" or ")),
            })
        }
    }
}

/// A URL with its password (if it has one) replaced by `***`, safe for logs
/// and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        // A user without a password is shown as it is: `:***` there would
        // suggest a password that is not set.
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => format!("{scheme}://{userinfo}@{host}{tail}"),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_checked_and_errors_name_the_variable() {
        let env = Env::from_pairs([("WORKER_CONCURRENCY", "zero"), ("BIG", "100000")]);
        let err = env.number("WORKER_CONCURRENCY", 5, 1, 1000).expect_err("not a number");
        assert!(
            err.to_string()
                .starts_with("invalid setting WORKER_CONCURRENCY=\"zero\""),
            "{err}"
        );
        let err = env.number("BIG", 5, 1, 1000).expect_err("too big");
        assert_eq!(
            err.to_string(),
            "invalid setting BIG=100000: must be between 1 and 1000"
        );
        assert_eq!(env.number("UNSET", 5, 1, 1000).expect("default"), 5);
    }

    #[test]
    fn urls_are_checked_without_leaking_passwords() {
        let env = Env::from_pairs([("REDIS_URL", "http://u:hunter2@h:1/0")]);
        let err = env.url("REDIS_URL", None, REDIS_SCHEMES).expect_err("wrong scheme");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("REDIS_URL"), "{err}");
        assert!(matches!(
            env.url("DATABASE_URL", None, &["postgres://"]),
            Err(SettingsError::Missing { .. })
        ));
    }

    #[test]
    fn redaction_keeps_user_and_host() {
        assert_eq!(
            redact_url("postgres://app:pw@db:5432/tally"),
            "postgres://app:***@db:5432/tally"
        );
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact_url("redis://:pw@r:6379/0"), "redis://:***@r:6379/0");
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/tally"),
            "postgres://postgres@127.0.0.1:5432/tally",
            "no password, nothing to hide"
        );
    }

    #[test]
    fn switches_take_on_and_off_and_nothing_else() {
        let env = Env::from_pairs([("A", "ON"), ("B", "false"), ("C", "sometimes")]);
        assert!(env.switch("A", false).expect("on"));
        assert!(!env.switch("B", true).expect("off"));
        assert!(env.switch("UNSET", true).expect("default"));
        let err = env.switch("C", true).expect_err("not a switch");
        assert_eq!(err.to_string(), "invalid setting C=\"sometimes\": expected on or off");
    }

    #[test]
    fn socket_addrs_parse() {
        let env = Env::from_pairs([("BIND_ADDR", "localhost")]);
        assert!(env.socket_addr("BIND_ADDR", "0.0.0.0:8080").is_err());
        assert_eq!(
            env.socket_addr("HEALTH_ADDR", "0.0.0.0:9090").expect("default").port(),
            9090
        );
    }
}
