//! Configuration: TOML with every default in code, environment overrides
//! (`FACEGATE__SECTION__KEY=value`), then semantic checks ([`Config::check`]).
//!
//! The environment is read through [`Environment`], so tests pass a map and
//! never touch the process environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use facegate_cli::env::{Environment, ProcessEnvironment};
use facegate_cli::env::{OverrideError, apply_overrides, set_path};
use serde::{Deserialize, Serialize};

/// Short form for the database URI (points the server, the demo and the tests
/// at any MongoDB replica set).
pub const MONGODB_URI_ENV: &str = "FACEGATE_MONGODB_URI";
/// Shortest HMAC secret accepted for HS256, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error(transparent)]
    Environment(#[from] OverrideError),
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub mongodb: MongoConfig,
    pub auth: AuthConfig,
    pub storage: StorageConfig,
    pub enrollment: EnrollmentConfig,
    pub index: IndexConfig,
    /// MQTT sync, provisioning and the embedded broker.
    pub sync: crate::sync::SyncConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the admin API.
    pub listen: SocketAddr,
    /// PEM certificate chain; HTTPS when set together with `tls-key`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Seconds given to in-flight requests after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// Largest JSON body, in bytes.
    pub max_json_bytes: usize,
    /// Seconds after which a request is answered 408.
    pub request_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls_cert: None,
            tls_key: None,
            shutdown_grace_secs: 20,
            max_json_bytes: 64 * 1024,
            request_timeout_secs: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct MongoConfig {
    /// A replica set (of one, at least): enrollment uses transactions.
    pub uri: String,
    pub database: String,
    pub max_pool_size: u32,
    /// Seconds to wait for a reachable server before an operation fails.
    pub server_selection_timeout_secs: u64,
}

impl Default for MongoConfig {
    fn default() -> Self {
        Self {
            uri: "mongodb://127.0.0.1:27017/?replicaSet=rs0".into(),
            database: "facegate".into(),
            max_pool_size: 32,
            server_selection_timeout_secs: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct AuthConfig {
    /// File holding the HS256 secret (at least 32 bytes). Or set
    /// `FACEGATE__AUTH__JWT_SECRET`.
    pub jwt_secret_file: Option<PathBuf>,
    /// The secret itself (prefer the file or the environment).
    pub jwt_secret: Option<String>,
    /// Lifetime of an access token, in seconds.
    pub token_ttl_secs: u64,
    /// Failed logins allowed per user and per client address in a minute.
    pub login_attempts_per_minute: u32,
    /// Issuer written into and required from every token.
    pub issuer: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret_file: None,
            jwt_secret: None,
            token_ttl_secs: 15 * 60,
            login_attempts_per_minute: 5,
            issuer: "facegate-sync-server".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct StorageConfig {
    /// 32-byte AES-256-GCM key (raw or 64 hex characters) for enrollment
    /// photos; kept outside the database.
    pub photo_key_file: Option<PathBuf>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { photo_key_file: Some(PathBuf::from("/etc/facegate/photo.key")) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct EnrollmentConfig {
    /// Model directory; the shipped models when unset (`FACEGATE_MODELS`, the
    /// installed copy, then the source tree).
    pub models: Option<PathBuf>,
    /// Threads running the face pipeline.
    pub workers: usize,
    /// Photos waiting for a worker before new requests get 503.
    pub queue: usize,
    pub max_photos: usize,
    pub max_photo_bytes: usize,
    /// De-duplication threshold (cosine); the model manifest's `dedup` when unset.
    pub dedup_threshold: Option<f32>,
    /// Photos of one enrollment must match each other at least this well;
    /// the manifest's `match` threshold when unset.
    pub same_person_threshold: Option<f32>,
}

impl Default for EnrollmentConfig {
    fn default() -> Self {
        Self {
            models: None,
            workers: 1,
            queue: 16,
            max_photos: 8,
            max_photo_bytes: 10 * 1024 * 1024,
            dedup_threshold: None,
            same_person_threshold: None,
        }
    }
}

/// Which master-index implementation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IndexKind {
    /// Exact SIMD scan (the kiosk's matcher).
    Exact,
    /// HNSW graph (approximate).
    Hnsw,
    /// Exact up to `hnsw-above` templates, HNSW beyond.
    Auto,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct IndexConfig {
    pub kind: IndexKind,
    pub hnsw_above: usize,
    /// HNSW search breadth (higher: better recall, slower).
    pub ef_search: usize,
    /// Milliseconds between polls of the change log (other replicas' writes).
    pub follow_interval_ms: u64,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self { kind: IndexKind::Auto, hnsw_above: 500_000, ef_search: 64, follow_interval_ms: 1000 }
    }
}

impl Config {
    /// The compiled-in defaults as TOML (`config default`).
    pub fn default_toml() -> String {
        let header = "# facegate-sync-server configuration (every key shown with its default).\n\
                      # Override any key from the environment: FACEGATE__SECTION__KEY=value\n\
                      # (e.g. FACEGATE__MONGODB__URI, FACEGATE__AUTH__JWT_SECRET).\n\n";
        match toml::to_string_pretty(&Self::default()) {
            Ok(body) => format!("{header}{body}"),
            Err(e) => format!("# cannot render the defaults: {e}\n"),
        }
    }

    /// Parses `text` (from `origin`), applies the environment, checks.
    pub fn from_toml(text: &str, origin: &str, env: &dyn Environment) -> Result<Self, ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse { origin: origin.into(), message: e.to_string() })?;
        apply_overrides(&mut table, env)?;
        if let Some(uri) = env.get(MONGODB_URI_ENV).filter(|u| !u.is_empty()) {
            set_path(&mut table, &["mongodb".into(), "uri".into()], toml::Value::String(uri))
                .map_err(|message| OverrideError { name: MONGODB_URI_ENV.into(), message })?;
        }
        let config: Self = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| ConfigError::Parse {
            origin: format!("{origin} + environment"),
            message: e.to_string(),
        })?;
        config.check()?;
        Ok(config)
    }

    /// Reads `path` (or only the defaults and the environment when `None`).
    pub fn load(path: Option<&Path>, env: &dyn Environment) -> Result<Self, ConfigError> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
                Self::from_toml(&text, &path.display().to_string(), env)
            }
            None => Self::from_toml("", "defaults", env),
        }
    }

    /// Semantic checks that types cannot express. Secrets are checked when
    /// they are loaded ([`crate::auth::load_secret`]), because demo mode makes
    /// its own.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| Err(ConfigError::Invalid { key, message: message.into() });
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return invalid("server.tls-cert", "tls-cert and tls-key go together");
        }
        if self.server.max_json_bytes < 1024 {
            return invalid("server.max-json-bytes", "must be at least 1024");
        }
        if self.server.request_timeout_secs == 0 {
            return invalid("server.request-timeout-secs", "must be at least 1");
        }
        if !self.mongodb.uri.starts_with("mongodb://") && !self.mongodb.uri.starts_with("mongodb+srv://") {
            return invalid("mongodb.uri", "must start with mongodb:// or mongodb+srv://");
        }
        if self.mongodb.database.is_empty() || self.mongodb.database.contains(['/', '.', ' ', '$']) {
            return invalid("mongodb.database", "must be a plain database name");
        }
        if self.mongodb.max_pool_size == 0 {
            return invalid("mongodb.max-pool-size", "must be at least 1");
        }
        if !(60..=24 * 3600).contains(&self.auth.token_ttl_secs) {
            return invalid("auth.token-ttl-secs", "must be between 60 and 86400 (short-lived tokens)");
        }
        if self.auth.login_attempts_per_minute == 0 {
            return invalid("auth.login-attempts-per-minute", "must be at least 1");
        }
        if self.auth.jwt_secret.is_some() && self.auth.jwt_secret_file.is_some() {
            return invalid("auth.jwt-secret", "set jwt-secret or jwt-secret-file, not both");
        }
        if self.enrollment.workers == 0 || self.enrollment.workers > 64 {
            return invalid("enrollment.workers", "must be between 1 and 64");
        }
        if self.enrollment.queue == 0 {
            return invalid("enrollment.queue", "must be at least 1");
        }
        if self.enrollment.max_photos == 0 || self.enrollment.max_photos > facegate_protocol::MAX_TEMPLATES_PER_IDENTITY
        {
            return invalid("enrollment.max-photos", "must be between 1 and 16 (templates per identity)");
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.enrollment.max_photo_bytes) {
            return invalid("enrollment.max-photo-bytes", "must be between 1 KiB and 64 MiB");
        }
        for (key, value) in [
            ("enrollment.dedup-threshold", self.enrollment.dedup_threshold),
            ("enrollment.same-person-threshold", self.enrollment.same_person_threshold),
        ] {
            if value.is_some_and(|t| !(t > 0.0 && t < 1.0)) {
                return invalid(key, "must be a cosine similarity between 0 and 1");
            }
        }
        if self.index.ef_search < 8 {
            return invalid("index.ef-search", "must be at least 8");
        }
        if self.index.follow_interval_ms < 10 {
            return invalid("index.follow-interval-ms", "must be at least 10");
        }
        self.sync.check()?;
        Ok(())
    }

    /// Largest multipart body: every photo at its limit plus the form fields.
    pub fn max_upload_bytes(&self) -> usize {
        self.enrollment.max_photos * self.enrollment.max_photo_bytes + 64 * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_default_config_parses_and_checks() {
        let text = Config::default_toml();
        let parsed = Config::from_toml(&text, "default", &env(&[])).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\nlissen = 1\n", "t", &env(&[])).unwrap_err();
        assert!(err.to_string().contains("lissen"), "{err}");
        let err = Config::from_toml("[nonsense]\n", "t", &env(&[])).unwrap_err();
        assert!(err.to_string().contains("nonsense"), "{err}");
    }

    #[test]
    fn environment_overrides_keys_with_types() {
        let e = env(&[
            ("FACEGATE__MONGODB__DATABASE", "other"),
            ("FACEGATE__ENROLLMENT__WORKERS", "2"),
            ("FACEGATE__AUTH__JWT_SECRET", "x".repeat(40).as_str()),
            ("FACEGATE__SERVER__LISTEN", "0.0.0.0:9000"),
        ]);
        let c = Config::from_toml("[mongodb]\ndatabase = \"db\"\n", "t", &e).unwrap();
        assert_eq!(c.mongodb.database, "other");
        assert_eq!(c.enrollment.workers, 2);
        assert_eq!(c.auth.jwt_secret.as_deref().map(str::len), Some(40));
        assert_eq!(c.server.listen.port(), 9000);
    }

    #[test]
    fn the_short_uri_variable_wins() {
        let e = env(&[("FACEGATE_MONGODB_URI", "mongodb://10.0.0.1:27017/?replicaSet=x")]);
        let c = Config::from_toml("", "t", &e).unwrap();
        assert_eq!(c.mongodb.uri, "mongodb://10.0.0.1:27017/?replicaSet=x");
    }

    #[test]
    fn a_misspelled_environment_key_is_refused() {
        let err = Config::from_toml("", "t", &env(&[("FACEGATE__MONGODB__URL", "mongodb://x")])).unwrap_err();
        assert!(err.to_string().contains("url"), "{err}");
        let err = Config::from_toml("", "t", &env(&[("FACEGATE__MONGODB", "x")])).unwrap_err();
        assert!(matches!(err, ConfigError::Environment(_)), "{err}");
    }

    #[test]
    fn semantic_checks_name_the_key() {
        let err = Config::from_toml("[enrollment]\nworkers = 0\n", "t", &env(&[])).unwrap_err();
        assert!(err.to_string().starts_with("enrollment.workers"), "{err}");
        let err = Config::from_toml("[server]\ntls-cert = \"/x\"\n", "t", &env(&[])).unwrap_err();
        assert!(err.to_string().contains("tls-key"), "{err}");
        let err = Config::from_toml("[mongodb]\nuri = \"http://x\"\n", "t", &env(&[])).unwrap_err();
        assert!(err.to_string().contains("mongodb.uri"), "{err}");
    }
}
