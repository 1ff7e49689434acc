//! Who may do what: the two tokens, browser sessions, CSRF tokens and the
//! `Origin` check.
//!
//! - **Tokens.** `ADMIN_TOKEN` may read and write, `ADMIN_READ_TOKEN` (when
//!   set) only read. Only their SHA-256 digests are kept, and a presented
//!   token is hashed and compared with both digests with `subtle`, so the
//!   comparison takes the same time whatever the presented value. Neither
//!   has a `Display`, and their `Debug` is redacted.
//! - **API clients** send `Authorization: Bearer <token>`. A request with a
//!   bearer header is judged by it alone (a wrong one is refused even with a
//!   valid cookie).
//! - **Browsers** log in once with the token (a form POST) and get a cookie
//!   `HttpOnly; SameSite=Strict` holding `<role>.<issued>.<mac>`, where the
//!   MAC is HMAC-SHA256, under a random key made at process start, of the
//!   role, the issue time and the token's digest. The token itself is never
//!   in the cookie; a session ends after `ADMIN_SESSION_HOURS`, when the token
//!   changes, or when the process restarts (new key).
//! - **Browser writes** (cookie, any method but GET/HEAD) also need the
//!   session's CSRF token in `X-CSRF-Token` (or a `csrf` form field), itself
//!   an HMAC of the session value, and an `Origin` naming this console.
//!   Bearer writes need neither: a browser never attaches a bearer header by
//!   itself.

use std::time::Duration;

use actix_web::http::header::{self, HeaderMap};
use hmac::{Hmac, KeyInit as _, Mac as _};
use rand::Rng as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Minimum token length.
pub const MIN_TOKEN_LEN: usize = 16;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "tally_admin_session";

/// Header carrying the CSRF token of a browser write.
pub const CSRF_HEADER: &str = "x-csrf-token";

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// One configured token, kept as its SHA-256 digest.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

impl AdminToken {
    /// Accepts a token of at least [`MIN_TOKEN_LEN`] characters without
    /// surrounding whitespace (a trailing newline from a mounted file would
    /// otherwise lock everyone out).
    pub fn new(token: &str) -> Result<Self, String> {
        if token.trim() != token {
            return Err("must not start or end with whitespace".into());
        }
        if token.chars().count() < MIN_TOKEN_LEN {
            return Err(format!("must be at least {MIN_TOKEN_LEN} characters"));
        }
        Ok(AdminToken {
            digest: sha256(token.as_bytes()),
        })
    }

    fn matches_digest(&self, digest: &[u8; 32]) -> bool {
        bool::from(self.digest.ct_eq(digest))
    }

    /// Whether two tokens are the same.
    pub fn same_as(&self, other: &AdminToken) -> bool {
        self.matches_digest(&other.digest)
    }
}

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything: reads, dead-set retry and purge, pause, resume, limits.
    Write,
    /// Reads only.
    Read,
}

impl Role {
    fn tag(self) -> &'static str {
        match self {
            Role::Write => "w",
            Role::Read => "r",
        }
    }

    /// The name the pages show.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Write => "read-write",
            Role::Read => "read-only",
        }
    }
}

/// The configured tokens.
#[derive(Debug, Clone)]
pub struct Tokens {
    write: AdminToken,
    read: Option<AdminToken>,
}

impl Tokens {
    /// The read-write token and the optional read-only one.
    pub fn new(write: AdminToken, read: Option<AdminToken>) -> Self {
        Tokens { write, read }
    }

    /// Whether a read-only token is configured.
    pub fn has_read_token(&self) -> bool {
        self.read.is_some()
    }

    /// The role a presented token grants, if any. Both digests are always
    /// compared, so the time taken does not say which one (if any) matched.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let digest = sha256(presented.as_bytes());
        let write = self.write.matches_digest(&digest);
        let read = self.read.as_ref().is_some_and(|r| r.matches_digest(&digest));
        match (write, read) {
            (true, _) => Some(Role::Write),
            (false, true) => Some(Role::Read),
            (false, false) => None,
        }
    }

    fn digest_of(&self, role: Role) -> Option<&[u8; 32]> {
        match role {
            Role::Write => Some(&self.write.digest),
            Role::Read => self.read.as_ref().map(|r| &r.digest),
        }
    }
}

/// A valid browser session.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// What the session may do.
    pub role: Role,
    /// The cookie value (the CSRF token is derived from it).
    value: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Issues and checks sessions and CSRF tokens under a per-process key.
pub struct Sessions {
    key: [u8; 64],
    tokens: Tokens,
    ttl: Duration,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("tokens", &self.tokens)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Sessions issued this far in the future (a clock step) are refused.
const CLOCK_SLACK_SECS: u64 = 60;

impl Sessions {
    /// Sessions for these tokens, under a fresh random key.
    pub fn new(tokens: Tokens, ttl: Duration) -> Self {
        let mut key = [0_u8; 64];
        rand::rng().fill(&mut key[..]);
        Sessions { key, tokens, ttl }
    }

    /// The tokens.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn mac(&self, parts: &[&[u8]]) -> String {
        let mut mac = Hmac::<Sha256>::new(&self.key.into());
        for part in parts {
            // Length-prefixed, so no two part lists hash alike.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        hex(&mac.finalize().into_bytes())
    }

    fn session_mac(&self, role: Role, issued: u64) -> Option<String> {
        let digest = self.tokens.digest_of(role)?;
        Some(self.mac(&[b"session", role.tag().as_bytes(), &issued.to_be_bytes(), digest]))
    }

    /// A new session value for `role`, issued at `now_secs` (Unix time).
    pub fn issue(&self, role: Role, now_secs: u64) -> Option<Session> {
        let mac = self.session_mac(role, now_secs)?;
        Some(Session {
            role,
            value: format!("{}.{now_secs}.{mac}", role.tag()),
        })
    }

    /// The session a cookie value stands for, if it is valid now.
    pub fn verify(&self, value: &str, now_secs: u64) -> Option<Session> {
        let mut parts = value.splitn(3, '.');
        let role = match parts.next()? {
            "w" => Role::Write,
            "r" => Role::Read,
            _ => return None,
        };
        let issued: u64 = parts.next()?.parse().ok()?;
        let presented = parts.next()?;
        if issued > now_secs + CLOCK_SLACK_SECS || now_secs.saturating_sub(issued) >= self.ttl.as_secs() {
            return None;
        }
        let expected = self.session_mac(role, issued)?;
        bool::from(expected.as_bytes().ct_eq(presented.as_bytes())).then(|| Session {
            role,
            value: value.to_owned(),
        })
    }

    /// The CSRF token of a session (stable for the session's life).
    pub fn csrf_token(&self, session: &Session) -> String {
        self.mac(&[b"csrf", session.value.as_bytes()])
    }

    /// Whether `presented` is the session's CSRF token.
    pub fn check_csrf(&self, session: &Session, presented: Option<&str>) -> bool {
        let expected = self.csrf_token(session);
        presented.is_some_and(|p| bool::from(expected.as_bytes().ct_eq(p.trim().as_bytes())))
    }

    /// The `Set-Cookie` value that stores `session`.
    pub fn cookie(&self, session: &Session, secure: bool) -> String {
        format!(
            "{SESSION_COOKIE}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}",
            session.value,
            self.ttl.as_secs(),
            if secure { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub fn clear_cookie(secure: bool) -> String {
        format!(
            "{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
            if secure { "; Secure" } else { "" }
        )
    }
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
}

/// What the `Authorization` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bearer<'a> {
    /// No `Authorization` header.
    Absent,
    /// `Bearer <token>`.
    Token(&'a str),
    /// Anything else (another scheme, not text).
    Malformed,
}

/// Reads the `Authorization` header.
pub fn bearer(headers: &HeaderMap) -> Bearer<'_> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Bearer::Absent;
    };
    match value.to_str().ok().and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .map(str::trim)
    }) {
        Some(token) => Bearer::Token(token),
        None => Bearer::Malformed,
    }
}

/// Whether the request's `Origin` is this console: `public_origin` when
/// configured, otherwise any origin whose host (and port) is the request's
/// `Host`. A missing or `null` origin is refused.
pub fn origin_allowed(headers: &HeaderMap, public_origin: Option<&str>) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin = origin.trim().to_ascii_lowercase();
    if let Some(public) = public_origin {
        return origin == public;
    }
    let Some(host) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let Some(request_host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    !host.is_empty() && host.eq_ignore_ascii_case(request_host.trim())
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(
            AdminToken::new("write-token-0123456789").expect("valid"),
            Some(AdminToken::new("read-token-0123456789").expect("valid")),
        )
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn tokens_grant_their_role_and_nothing_else() {
        let t = tokens();
        assert_eq!(t.role_of("write-token-0123456789"), Some(Role::Write));
        assert_eq!(t.role_of("read-token-0123456789"), Some(Role::Read));
        assert_eq!(t.role_of("write-token-012345678"), None);
        assert_eq!(t.role_of(""), None);
        assert!(AdminToken::new("short").is_err());
        assert!(AdminToken::new(" padded-token-0123456789").is_err());
        assert_eq!(format!("{t:?}").matches("***").count(), 2, "{t:?}");
    }

    #[test]
    fn sessions_hold_no_token_expire_and_cannot_be_forged() {
        let sessions = Sessions::new(tokens(), Duration::from_secs(3600));
        let now = 1_800_000_000;
        let session = sessions.issue(Role::Write, now).expect("issued");
        let cookie = sessions.cookie(&session, false);
        assert!(!cookie.contains("write-token"), "{cookie}");
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        assert_eq!(sessions.verify(&session.value, now + 10), Some(session.clone()));
        assert_eq!(sessions.verify(&session.value, now + 3600), None, "expired");
        assert_eq!(sessions.verify(&session.value, now - 3600), None, "from the future");
        // A read session cannot be turned into a write one.
        let read = sessions.issue(Role::Read, now).expect("issued");
        let forged = read.value.replacen('r', "w", 1);
        assert_eq!(sessions.verify(&forged, now), None);
        // Another process (another key) does not accept it.
        let other = Sessions::new(tokens(), Duration::from_secs(3600));
        assert_eq!(other.verify(&session.value, now), None);
        for junk in ["", "w", "w.1", "x.1.00", "w.notanumber.00"] {
            assert_eq!(sessions.verify(junk, now), None, "{junk}");
        }
        // A changed token ends the sessions it issued.
        let rotated = Sessions {
            key: sessions.key,
            tokens: Tokens::new(AdminToken::new("rotated-token-0123456789").expect("valid"), None),
            ttl: sessions.ttl,
        };
        assert_eq!(rotated.verify(&session.value, now), None);
        assert_eq!(rotated.issue(Role::Read, now), None, "no read token configured");
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let sessions = Sessions::new(tokens(), Duration::from_secs(3600));
        let a = sessions.issue(Role::Write, 100).expect("issued");
        let b = sessions.issue(Role::Write, 101).expect("issued");
        let token = sessions.csrf_token(&a);
        assert!(sessions.check_csrf(&a, Some(&token)));
        assert!(!sessions.check_csrf(&b, Some(&token)));
        assert!(!sessions.check_csrf(&a, None));
        assert!(!sessions.check_csrf(&a, Some("")));
    }

    #[test]
    fn cookies_and_bearer_headers_parse() {
        let h = headers(&[
            ("cookie", "a=1; tally_admin_session=w.1.abc"),
            ("authorization", "Bearer tok"),
        ]);
        assert_eq!(cookie_value(&h, SESSION_COOKIE), Some("w.1.abc"));
        assert_eq!(cookie_value(&h, "b"), None);
        assert_eq!(bearer(&h), Bearer::Token("tok"));
        assert_eq!(bearer(&headers(&[("authorization", "Basic x")])), Bearer::Malformed);
        assert_eq!(bearer(&headers(&[])), Bearer::Absent);
    }

    #[test]
    fn origins_must_name_this_console() {
        let same = headers(&[("host", "127.0.0.1:8081"), ("origin", "http://127.0.0.1:8081")]);
        assert!(origin_allowed(&same, None));
        let other = headers(&[("host", "127.0.0.1:8081"), ("origin", "http://evil.example")]);
        assert!(!origin_allowed(&other, None));
        let port = headers(&[("host", "127.0.0.1:8081"), ("origin", "http://127.0.0.1:9999")]);
        assert!(!origin_allowed(&port, None));
        assert!(
            !origin_allowed(&headers(&[("host", "127.0.0.1:8081")]), None),
            "no origin"
        );
        let null = headers(&[("host", "127.0.0.1:8081"), ("origin", "null")]);
        assert!(!origin_allowed(&null, None));
        let public = headers(&[("host", "10.0.0.1:8081"), ("origin", "https://console.example.com")]);
        assert!(origin_allowed(&public, Some("https://console.example.com")));
        assert!(!origin_allowed(&same, Some("https://console.example.com")));
    }
}
