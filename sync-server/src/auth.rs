//! Authentication: argon2id password hashes, short-lived HS256 JWT bearer
//! tokens with a role, and a login rate limiter.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{AuthConfig, ConfigError, Environment, MIN_SECRET_BYTES};

/// Shortest password accepted for a user.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including devices, groups, users and forgetting people.
    Admin,
    /// Day-to-day enrollment: identities, photos, search, verify, membership.
    Operator,
    /// Read-only access to the audit trail and device status.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Operator, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Self::Admin),
            "operator" => Ok(Self::Operator),
            "auditor" => Ok(Self::Auditor),
            other => Err(AuthError::UnknownRole(other.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("the bearer token is malformed")]
    Malformed,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid (bad signature, issuer or claims)")]
    Invalid,
    #[error("this needs one of the roles {required}; the token has {actual}")]
    Forbidden { required: String, actual: Role },
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("too many failed logins; try again in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("unknown role {0:?} (admin, operator, auditor)")]
    UnknownRole(String),
    #[error("the password must have at least {MIN_PASSWORD_CHARS} characters")]
    WeakPassword,
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("token signing failed: {0}")]
    Signing(String),
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
}

/// Signs and checks access tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    issuer: String,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys").field("ttl", &self.ttl).field("issuer", &self.issuer).finish()
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl TokenKeys {
    /// HS256 with `secret`.
    pub fn hs256(secret: &[u8], ttl: Duration, issuer: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
            issuer: issuer.to_string(),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A token for `user` with `role`, valid for the configured lifetime.
    pub fn issue(&self, user: &str, role: Role) -> Result<(String, Claims), AuthError> {
        self.issue_at(user, role, unix_now())
    }

    /// A token issued at `iat` (tests make expired ones with this).
    pub fn issue_at(&self, user: &str, role: Role, iat: u64) -> Result<(String, Claims), AuthError> {
        let claims =
            Claims { sub: user.to_string(), role, iat, exp: iat + self.ttl.as_secs(), iss: self.issuer.clone() };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Signing(e.to_string()))?;
        Ok((token, claims))
    }

    /// Checks signature, algorithm, issuer and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => Err(match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                    AuthError::Malformed
                }
                _ => AuthError::Invalid,
            }),
        }
    }
}

/// Why a secret is too weak (`None`: acceptable).
pub fn secret_weakness(secret: &[u8]) -> Option<String> {
    if secret.len() < MIN_SECRET_BYTES {
        return Some(format!("it has {} bytes; at least {MIN_SECRET_BYTES} are required", secret.len()));
    }
    let mut distinct = secret.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 12 {
        return Some(format!(
            "it uses only {} distinct bytes; use random bytes (openssl rand -hex 32)",
            distinct.len()
        ));
    }
    let lower = String::from_utf8_lossy(secret).to_ascii_lowercase();
    for weak in ["changeme", "secret", "password", "example", "facegate"] {
        if lower.contains(weak) {
            return Some(format!("it contains the word {weak:?}"));
        }
    }
    None
}

/// The JWT secret from the configuration (file or value, the environment
/// having been applied already). Refuses a missing or weak secret.
pub fn load_secret(config: &AuthConfig, _env: &dyn Environment) -> Result<Vec<u8>, ConfigError> {
    let secret = match (&config.jwt_secret, &config.jwt_secret_file) {
        (Some(s), _) => s.trim().as_bytes().to_vec(),
        (None, Some(path)) => {
            let bytes = std::fs::read(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
            let text = String::from_utf8_lossy(&bytes);
            text.trim().as_bytes().to_vec()
        }
        (None, None) => {
            return Err(ConfigError::Invalid {
                key: "auth.jwt-secret-file",
                message: "no JWT secret configured: set auth.jwt-secret-file or FACEGATE__AUTH__JWT_SECRET \
                          (only `demo` runs without one)"
                    .into(),
            });
        }
    };
    if let Some(why) = secret_weakness(&secret) {
        return Err(ConfigError::Invalid {
            key: "auth.jwt-secret",
            message: format!("the JWT secret is too weak: {why}"),
        });
    }
    Ok(secret)
}

/// An argon2id PHC hash of `password` (slow on purpose: call off the executor).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AuthError::WeakPassword);
    }
    let salt_bytes = crate::crypto::random_bytes::<16>().map_err(|e| AuthError::Hashing(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| AuthError::Hashing(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hashing(e.to_string()))
}

/// Whether `password` matches the stored hash.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .is_ok_and(|parsed| argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// Failed-login limiter: at most `limit` failures per key in a sliding
/// minute; keys are the user name and the client address, so neither one
/// user nor one client can guess quickly.
#[derive(Debug)]
pub struct LoginLimiter {
    limit: u32,
    window: Duration,
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl LoginLimiter {
    pub fn new(limit_per_minute: u32) -> Self {
        Self { limit: limit_per_minute, window: Duration::from_secs(60), failures: Mutex::new(HashMap::new()) }
    }

    /// `Err` with the wait when any key is over its limit.
    pub fn check(&self, keys: &[String], now: Instant) -> Result<(), AuthError> {
        let Ok(mut map) = self.failures.lock() else {
            return Ok(());
        };
        let mut wait = Duration::ZERO;
        for key in keys {
            if let Some(times) = map.get_mut(key) {
                times.retain(|t| now.duration_since(*t) < self.window);
                if times.len() >= self.limit as usize
                    && let Some(oldest) = times.first()
                {
                    wait = wait.max(self.window.saturating_sub(now.duration_since(*oldest)));
                }
            }
        }
        if wait > Duration::ZERO {
            return Err(AuthError::RateLimited { retry_after_secs: wait.as_secs().max(1) });
        }
        Ok(())
    }

    pub fn record_failure(&self, keys: &[String], now: Instant) {
        if let Ok(mut map) = self.failures.lock() {
            if map.len() > 100_000 {
                map.retain(|_, times| times.last().is_some_and(|t| now.duration_since(*t) < self.window));
            }
            for key in keys {
                map.entry(key.clone()).or_default().push(now);
            }
        }
    }

    pub fn record_success(&self, keys: &[String]) {
        if let Ok(mut map) = self.failures.lock() {
            for key in keys {
                map.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

    #[test]
    fn tokens_round_trip_and_carry_the_role() {
        let keys = TokenKeys::hs256(SECRET, Duration::from_secs(900), "t");
        let (token, claims) = keys.issue("ada", Role::Operator).unwrap();
        assert_eq!(keys.verify(&token).unwrap(), claims);
        assert_eq!(claims.exp - claims.iat, 900);
    }

    #[test]
    fn expired_forged_and_garbage_tokens_are_refused() {
        let keys = TokenKeys::hs256(SECRET, Duration::from_secs(60), "t");
        let (old, _) = keys.issue_at("ada", Role::Admin, unix_now() - 3600).unwrap();
        assert!(matches!(keys.verify(&old), Err(AuthError::Expired)));
        let other = TokenKeys::hs256(b"zyxwvutsrqponmlkjihgfedcba9876543210", Duration::from_secs(60), "t");
        let (forged, _) = other.issue("ada", Role::Admin).unwrap();
        assert!(matches!(keys.verify(&forged), Err(AuthError::Invalid)));
        let wrong_issuer = TokenKeys::hs256(SECRET, Duration::from_secs(60), "elsewhere");
        let (token, _) = wrong_issuer.issue("ada", Role::Admin).unwrap();
        assert!(matches!(keys.verify(&token), Err(AuthError::Invalid)));
        assert!(matches!(keys.verify("not.a.token"), Err(AuthError::Malformed)));
        // alg=none is refused.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhZGEiLCJyb2xlIjoiYWRtaW4iLCJpYXQiOjEsImV4cCI6OTk5OTk5OTk5OSwiaXNzIjoidCJ9.";
        assert!(keys.verify(none).is_err());
    }

    #[test]
    fn weak_secrets_are_named() {
        assert!(secret_weakness(b"short").is_some());
        assert!(secret_weakness(&[b'a'; 64]).is_some());
        assert!(secret_weakness(b"changeme-changeme-changeme-changeme-1234567").is_some());
        assert!(secret_weakness(SECRET).is_none());
    }

    #[test]
    fn passwords_hash_and_verify() {
        assert!(matches!(hash_password("short"), Err(AuthError::WeakPassword)));
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse battery!"));
        assert!(!verify_password("garbage", "x"));
    }

    #[test]
    fn the_limiter_blocks_after_the_limit_and_forgets_after_a_minute() {
        let limiter = LoginLimiter::new(3);
        let keys = vec!["user:ada".to_string(), "ip:127.0.0.1".to_string()];
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.check(&keys, t0).unwrap();
            limiter.record_failure(&keys, t0);
        }
        assert!(matches!(limiter.check(&keys, t0), Err(AuthError::RateLimited { .. })));
        assert!(limiter.check(&["user:bob".to_string()], t0).is_ok());
        assert!(limiter.check(&keys, t0 + Duration::from_secs(61)).is_ok());
    }
}
