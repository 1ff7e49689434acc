//! What the environment switches on, read once at start and validated.
//!
//! Reading goes through `tally_settings::Env`, the reader every tally crate
//! uses, so tests can feed a map (setting process variables is `unsafe` in
//! edition 2024 and races with other tests).

use std::fmt;

use tally_settings::Env;

use crate::TelemetryError;

/// Default `RUST_LOG` directive when the variable is unset or empty.
pub const DEFAULT_FILTER: &str = "info";

/// Shape of the log lines written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default), coloured when stderr is a terminal.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// Everything `init` needs from the environment.
///
/// `Debug` never shows the Sentry DSN: it carries a key.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// The `RUST_LOG` directives (default [`DEFAULT_FILTER`]).
    pub filter: String,
    /// `LOG_FORMAT`: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// The OTLP traces endpoint when export is on (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// or `OTEL_EXPORTER_OTLP_ENDPOINT`), `None` when tracing export is off.
    pub otlp_endpoint: Option<String>,
    /// `SENTRY_DSN` when set and non-empty.
    pub sentry_dsn: Option<String>,
    /// `SENTRY_ENVIRONMENT` when set and non-empty (Sentry's own default otherwise).
    pub sentry_environment: Option<String>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("filter", &self.filter)
            .field("log_format", &self.log_format)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("sentry_dsn", &self.sentry_dsn.as_ref().map(|_| "<redacted>"))
            .field("sentry_environment", &self.sentry_environment)
            .finish()
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, TelemetryError> {
        Self::read(&Env::process())
    }

    /// Reads settings from `env`; empty values count as unset.
    pub fn read(env: &Env) -> Result<Self, TelemetryError> {
        let get = |name: &str| env.raw(name).map(|value| value.trim().to_owned());

        let filter = get("RUST_LOG").unwrap_or_else(|| DEFAULT_FILTER.to_owned());

        let log_format = match get("LOG_FORMAT").map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(_) => {
                return Err(TelemetryError::InvalidSetting {
                    name: "LOG_FORMAT",
                    reason: "expected `text` or `json`".to_owned(),
                });
            }
        };

        // The SDK's own switches turn export off even when an endpoint is set.
        let sdk_disabled = get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let exporter_none = get("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let otlp_endpoint = if sdk_disabled || exporter_none {
            None
        } else {
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        };

        Ok(Self {
            filter,
            log_format,
            otlp_endpoint,
            sentry_dsn: get("SENTRY_DSN"),
            sentry_environment: get("SENTRY_ENVIRONMENT"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, TelemetryError> {
        Settings::read(&Env::from_pairs(vars.iter().copied()))
    }

    #[test]
    fn defaults_are_text_info_and_everything_off() {
        let s = settings(&[]).expect("defaults are valid");
        assert_eq!(s.filter, "info");
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.otlp_endpoint, None);
        assert_eq!(s.sentry_dsn, None);
        assert_eq!(s.sentry_environment, None);
    }

    #[test]
    fn empty_values_count_as_unset() {
        let s = settings(&[
            ("RUST_LOG", ""),
            ("LOG_FORMAT", " "),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            ("SENTRY_DSN", ""),
        ])
        .expect("empty values are valid");
        assert_eq!(s.filter, "info");
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.otlp_endpoint, None);
        assert_eq!(s.sentry_dsn, None);
    }

    #[test]
    fn json_format_and_bad_format() {
        let s = settings(&[("LOG_FORMAT", "JSON")]).expect("json is valid");
        assert_eq!(s.log_format, LogFormat::Json);
        let err = settings(&[("LOG_FORMAT", "yaml")]).expect_err("yaml is not a format");
        assert!(err.to_string().contains("LOG_FORMAT"), "{err}");
    }

    #[test]
    fn otlp_endpoint_prefers_the_traces_variable_and_obeys_the_sdk_switches() {
        let s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]).expect("valid");
        assert_eq!(s.otlp_endpoint.as_deref(), Some("http://collector:4318"));

        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/v1/traces"),
        ])
        .expect("valid");
        assert_eq!(s.otlp_endpoint.as_deref(), Some("http://traces:4318/v1/traces"));

        for switch in [("OTEL_SDK_DISABLED", "true"), ("OTEL_TRACES_EXPORTER", "none")] {
            let s = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"), switch]).expect("valid");
            assert_eq!(s.otlp_endpoint, None, "{switch:?} turns export off");
        }
    }

    #[test]
    fn debug_output_hides_the_dsn() {
        let s = settings(&[("SENTRY_DSN", "https://secretkey@sentry.example/1")]).expect("valid");
        let shown = format!("{s:?}");
        assert!(!shown.contains("secretkey"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
