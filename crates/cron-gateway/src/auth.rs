//! The cron secret and its constant-time check.
//!
//! Both the configured secret and the presented token are hashed with SHA-256
//! and the digests compared with `subtle`, so the comparison takes the same
//! time whatever the presented value's length or content. The secret has no
//! `Display` and a redacting `Debug`, so it cannot reach a log by accident.

use actix_web::http::header::{AUTHORIZATION, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Minimum secret length (docs/CONTRACTS.md).
pub const MIN_SECRET_LEN: usize = 16;

/// The shared secret the CronJob presents as a bearer token.
#[derive(Clone)]
pub struct CronSecret {
    digest: [u8; 32],
}

impl std::fmt::Debug for CronSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CronSecret(***)")
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

impl CronSecret {
    /// Accepts a secret of at least [`MIN_SECRET_LEN`] characters, without
    /// surrounding whitespace (a trailing newline from a mounted file is the
    /// classic way to lock a CronJob out).
    pub fn new(secret: &str) -> Result<Self, String> {
        if secret.trim() != secret {
            return Err("must not start or end with whitespace".into());
        }
        if secret.chars().count() < MIN_SECRET_LEN {
            return Err(format!("must be at least {MIN_SECRET_LEN} characters"));
        }
        Ok(CronSecret {
            digest: sha256(secret.as_bytes()),
        })
    }

    /// Checks an `Authorization` header value (`Bearer <secret>`).
    pub fn verify_header(&self, header: Option<&str>) -> bool {
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer "))) else {
            return false;
        };
        bool::from(sha256(token.trim().as_bytes()).ct_eq(&self.digest))
    }

    /// Checks the `Authorization` header of a request.
    pub fn verify_request(&self, headers: &HeaderMap) -> bool {
        self.verify_header(headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_padded_secrets_are_refused() {
        assert!(CronSecret::new("short").is_err());
        assert!(CronSecret::new(" sixteen-chars-ok-but-padded").is_err());
        assert!(CronSecret::new("exactly-16-chars").is_ok());
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let s = CronSecret::new("a-long-enough-secret").expect("valid");
        assert!(s.verify_header(Some("Bearer a-long-enough-secret")));
        assert!(!s.verify_header(Some("Bearer a-long-enough-secreT")));
        assert!(!s.verify_header(Some("Bearer a-long-enough-secret-and-more")));
        assert!(!s.verify_header(Some("Basic a-long-enough-secret")));
        assert!(!s.verify_header(Some("a-long-enough-secret")));
        assert!(!s.verify_header(None));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = CronSecret::new("a-long-enough-secret").expect("valid");
        assert_eq!(format!("{s:?}"), "CronSecret(***)");
    }
}
