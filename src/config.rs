//! Configuration: one TOML file plus `CAIRN_*` environment overrides plus command-line
//! flags, in that order of precedence (flags win). Unknown keys and bad values are errors
//! that name the key (and the variable or flag it came from); loading (`load.rs`)
//! reports every problem at once.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::policy::ImmutabilityPolicy;
use crate::policy::immutability::ImmutabilityConfig;
use crate::policy::retention::{RetentionConfig, RetentionPolicy};

mod load;

pub use load::Loaded;

/// The whole configuration. Every key and default is documented in `config.example.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[database]`
    pub database: DatabaseConfig,
    /// `[storage]`
    pub storage: StorageConfig,
    /// `[uploads]`
    pub uploads: UploadsConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[immutability]`: which tags may move.
    pub immutability: ImmutabilityConfig,
    /// `[auth]`: users, grants, tokens.
    pub auth: AuthConfig,
    /// `[audit]`: ledger checkpoints.
    pub audit: AuditConfig,
    /// `[gc]`: garbage collection of unlinked blobs.
    pub gc: GcConfig,
    /// `[retention]`: which tags and manifests retention deletes, and rollback windows.
    pub retention: RetentionConfig,
    /// `[signatures]`: trusted keys and signature gates.
    pub signatures: crate::signatures::SignaturesConfig,
    /// `[rate_limit]`: requests per client address and per signed-in user on `/v2` and
    /// `/api/v1`.
    pub rate_limit: RateLimitConfig,
}

/// `[rate_limit]`: token buckets over `/v2` and `/api/v1` (never `/healthz`, `/readyz`,
/// `/metrics`, `/token`), one per client address (IPv6 by /64) and one per signed-in user;
/// over either, 429 `TOOMANYREQUESTS` with `Retry-After`. Both off by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RateLimitConfig {
    /// Requests per second one client address may make, sustained; 0 turns the limit off.
    pub per_client: f64,
    /// Requests a client may make at once beyond the sustained rate (the bucket's size).
    pub burst: u32,
    /// Requests per second one user or robot may make, sustained, whatever addresses it
    /// comes from; 0 turns the limit off. Charged only once its credentials are verified
    /// (a password, a robot secret or a token signed by Cairn); anonymous requests are
    /// limited per client only.
    pub per_user: f64,
    /// Requests a user may make at once beyond `per_user` (its bucket's size).
    pub user_burst: u32,
    /// Loopback clients (127.0.0.0/8, ::1) are never limited, per client nor per user, so
    /// that local tools are not; `false` limits them too (with `per_client = 0`, that
    /// limits each user behind a proxy on the same machine without limiting the proxy).
    pub exempt_loopback: bool,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { per_client: 0.0, burst: 100, per_user: 0.0, user_burst: 100, exempt_loopback: true }
    }
}

/// A size in bytes: a plain integer, or a string with a unit such as `"64MiB"`, `"512KiB"`,
/// `"1GiB"` (also `B`, `KB`, `MB`, `GB`: powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Reads `"64MiB"`, `"64 MiB"`, `"1000"`.
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = (&s[..split], s[split..].trim());
        let bad = || format!("{s:?} is not a size: use a byte count or a number with a unit, such as \"64MiB\"");
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mul: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1000,
            "mb" => 1000 * 1000,
            "gb" => 1000 * 1000 * 1000,
            "kib" | "k" => 1 << 10,
            "mib" | "m" => 1 << 20,
            "gib" | "g" => 1 << 30,
            _ => return Err(bad()),
        };
        n.checked_mul(mul).map(ByteSize).ok_or_else(bad)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte count or a size such as \"64MiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `[gc]`: online garbage collection (DESIGN §6).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct GcConfig {
    /// A blob no manifest uses is unlinked, and then deleted, once it was last uploaded,
    /// linked, unlinked or checked (HEAD) longer ago than this.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// How often `serve` collects; `"0s"` turns scheduled collection off (`cairn gc` still works).
    #[serde(with = "humantime_serde")]
    pub schedule: Duration,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig { grace: Duration::from_secs(3600), schedule: Duration::from_secs(3600) }
    }
}

/// `[audit]`: how often the ledger head is signed (DESIGN §7).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuditConfig {
    /// Sign a checkpoint once this many events were appended since the last one.
    pub checkpoint_every: u64,
    /// Sign a checkpoint at least this often while events arrive.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// PKCS#8 Ed25519 key that signs checkpoints; created on first start if missing.
    /// Unset: `<data_dir>/audit-signing-key.p8` on SQLite; on PostgreSQL, one key in the
    /// database that every node shares (see `crate::keys`; whoever can write the database
    /// can then re-sign history, so several nodes should mount one key file instead).
    pub key_file: Option<PathBuf>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { checkpoint_every: 1000, checkpoint_interval: Duration::from_secs(300), key_file: None }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Allow starting on a non-loopback address with no users (anonymous push and pull).
    pub allow_anonymous_write: bool,
    /// The token service name (the JWT audience and the challenge's `service`).
    pub service: String,
    /// Lifetime of issued bearer tokens.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// PKCS#8 ECDSA P-256 key that signs tokens; created on first start if missing.
    /// Unset: `<data_dir>/token-signing-key.p8` on SQLite; on PostgreSQL, one key in the
    /// database that every node shares (see `crate::keys`).
    pub key_file: Option<PathBuf>,
    /// Failed (or running) logins allowed per (client address, user name) within
    /// `failure_window`.
    pub max_failed_logins: u32,
    /// Failed (or running) logins allowed per client address, whatever the name.
    pub max_failed_logins_per_address: u32,
    /// The window for the two limits above; a blocked client waits until it passes.
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
    /// Password hashes checked at once (each checker keeps ~19 MiB for argon2id); `None`:
    /// one per CPU core, at most 8. Further logins wait a few seconds, then get 429.
    pub concurrent_password_checks: Option<usize>,
    /// Users.
    pub users: Vec<UserConfig>,
    /// Grants.
    pub grants: Vec<GrantConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allow_anonymous_write: false,
            service: "cairn".into(),
            token_ttl: Duration::from_secs(300),
            key_file: None,
            max_failed_logins: 5,
            max_failed_logins_per_address: 20,
            failure_window: Duration::from_secs(60),
            concurrent_password_checks: None,
            users: vec![],
            grants: vec![],
        }
    }
}

/// `[[auth.users]]`
#[derive(Clone, Deserialize)]
pub struct UserConfig {
    /// Login name.
    pub name: String,
    /// argon2id PHC string from `cairn hash-password`.
    pub password_hash: String,
    /// `admin`, `writer`, `reader`, `auditor`.
    #[serde(default)]
    pub roles: Vec<String>,
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .field("roles", &self.roles)
            .finish()
    }
}

/// `[[auth.grants]]`
#[derive(Debug, Clone, Deserialize)]
pub struct GrantConfig {
    /// User names, robot names, or `anonymous`.
    pub subjects: Vec<String>,
    /// Repository glob (`*` within a path component, `**` across).
    pub repositories: String,
    /// `pull`, `push`, `delete`.
    pub actions: Vec<String>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Where the SQLite file and filesystem blobs go by default.
    pub data_dir: PathBuf,
    /// Externally visible base URL, used for `Location` headers behind a proxy.
    pub public_url: Option<String>,
    /// How long shutdown waits for running requests before it stops anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Connections: a request's headers must arrive within `header_timeout`; a connection
    /// with no request in progress closes after `keepalive_timeout`; a body (either way)
    /// that moves no byte for `body_timeout` fails; at most `max_connections` are open.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// See `header_timeout`.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// See `header_timeout`.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// See `header_timeout`.
    pub max_connections: usize,
    /// PEM certificate chain (leaf first) to serve HTTPS directly; with `tls_key`. Both
    /// files are read again when either changes (checked every few seconds) or on SIGHUP;
    /// open connections keep the certificate they started with.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// A second address serving only `/metrics` (plain HTTP, no authentication), for a
    /// Prometheus that should not reach the registry's port; when set, the registry's
    /// address no longer serves `/metrics`.
    pub metrics_listen: Option<String>,
    /// The read cache's budget (manifests, tag and referrer lists it keeps, weighed in
    /// bytes); past it single entries are evicted. 0 turns the cache off.
    pub cache_size: ByteSize,
}

/// `[database]`
#[derive(Clone, Default, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://USER:PASS@HOST:PORT/DB`; defaults to
    /// `sqlite://<data_dir>/cairn.db`.
    pub url: Option<String>,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A database URL may carry a password.
        let shown = self.url.as_deref().map(redact_url);
        f.debug_struct("DatabaseConfig").field("url", &shown).finish()
    }
}

pub(crate) fn redact_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => u.to_string(),
    }
}

/// Which object store holds blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// A directory on the local filesystem.
    Filesystem,
    /// Process memory; everything is lost at exit (tests only).
    Memory,
    /// An S3-compatible bucket (AWS, MinIO, Ceph RGW).
    S3,
}

/// `[storage]`
#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// The backend.
    pub kind: StorageKind,
    /// For `filesystem`: the directory; defaults to `<data_dir>/blobs`.
    pub path: Option<PathBuf>,
    /// For `s3`: the bucket (it must exist).
    pub bucket: Option<String>,
    /// For `s3`: the region; defaults to `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// For `s3`: the endpoint URL of an S3-compatible server (MinIO, Ceph RGW); AWS when unset.
    pub endpoint: Option<String>,
    /// For `s3`: path-style requests (`<endpoint>/<bucket>/<key>`), as MinIO and moto want.
    pub path_style: bool,
    /// For `s3`: the access key id; with `secret_access_key`, or both unset to use the
    /// usual `AWS_*` environment variables.
    pub access_key_id: Option<String>,
    /// For `s3`: the secret access key (never printed).
    pub secret_access_key: Option<String>,
    /// For `s3` only: a blob GET (without `Range`) answers `307 Temporary Redirect` to a
    /// presigned GET URL of the blob's object, so blob bytes flow from the bucket to the
    /// client, not through Cairn. Access is checked first, as for any pull; HEAD and ranged
    /// GETs are still answered by Cairn. Off by default.
    pub redirect: bool,
    /// For `s3` with `redirect = true`: how long a presigned URL is valid (between 1s and 7d,
    /// SigV4's limit); [`DEFAULT_REDIRECT_EXPIRY`] when unset.
    #[serde(default, with = "humantime_serde")]
    pub redirect_expiry: Option<Duration>,
}

/// How long a presigned redirect URL is valid unless `storage.redirect_expiry` says.
pub const DEFAULT_REDIRECT_EXPIRY: Duration = Duration::from_secs(300);
/// The longest validity SigV4 allows for a presigned URL.
const MAX_REDIRECT_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

impl fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageConfig")
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("redirect", &self.redirect)
            .field("redirect_expiry", &self.redirect_expiry)
            .finish()
    }
}

impl StorageConfig {
    /// How long presigned redirect URLs are valid, when blob GETs are redirected
    /// (`redirect = true`); `None` when Cairn serves blob bytes itself.
    pub fn redirect_expiry(&self) -> Option<Duration> {
        self.redirect.then(|| self.redirect_expiry.unwrap_or(DEFAULT_REDIRECT_EXPIRY))
    }

    /// Problems of the `[storage]` section, each naming its key.
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.kind != StorageKind::S3 && self.redirect {
            p.push(format!(
                "storage.redirect = true is only valid with storage.kind = \"s3\" (kind is {:?}): only a bucket \
                 can hand out presigned URLs; other stores always serve blobs themselves",
                self.kind
            ));
        }
        let s3_keys = [
            ("bucket", self.bucket.is_some()),
            ("region", self.region.is_some()),
            ("endpoint", self.endpoint.is_some()),
            ("path_style", self.path_style),
            ("access_key_id", self.access_key_id.is_some()),
            ("secret_access_key", self.secret_access_key.is_some()),
            ("redirect_expiry", self.redirect_expiry.is_some()),
        ];
        if self.kind != StorageKind::S3 {
            for (key, set) in s3_keys {
                if set {
                    p.push(format!("storage.{key} is only used with storage.kind = \"s3\" (kind is {:?})", self.kind));
                }
            }
            return p;
        }
        if self.path.is_some() {
            p.push(
                "storage.path is only used with storage.kind = \"filesystem\": S3 keys live in storage.bucket".into(),
            );
        }
        match self.bucket.as_deref() {
            None | Some("") => {
                p.push("storage.bucket is missing: kind = \"s3\" needs the name of an existing bucket".into())
            }
            Some(b) if b.contains('/') => p.push(format!("storage.bucket = {b:?}: a bucket name has no '/'")),
            Some(_) => {}
        }
        if self.region.as_deref() == Some("") {
            p.push("storage.region must not be empty (leave it out to use AWS_REGION, else us-east-1)".into());
        }
        if let Some(e) = &self.endpoint {
            match url::Url::parse(e) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => p.push(format!(
                    "storage.endpoint = {:?} is not an http:// or https:// URL (such as http://127.0.0.1:9000)",
                    redact_url(e)
                )),
            }
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) => p.push(
                "storage.access_key_id is set without storage.secret_access_key: give both, or neither to use AWS_* variables".into(),
            ),
            (None, Some(_)) => p.push(
                "storage.secret_access_key is set without storage.access_key_id: give both, or neither to use AWS_* variables".into(),
            ),
            _ => {}
        }
        match self.redirect_expiry {
            Some(_) if !self.redirect => p.push(
                "storage.redirect_expiry is set but storage.redirect is not true: set redirect = true, or leave \
                 redirect_expiry out"
                    .into(),
            ),
            Some(d) if d < Duration::from_secs(1) || d > MAX_REDIRECT_EXPIRY => p.push(format!(
                "storage.redirect_expiry = {d:?} is out of range: a presigned URL is valid from \"1s\" to \"7d\"; \
                 use a few minutes, such as \"5m\""
            )),
            _ => {}
        }
        p
    }

    /// One line for `cairn check-config`: the backend and where it stores, secrets left out.
    pub fn summary(&self, default_path: &Path) -> String {
        match self.kind {
            StorageKind::Filesystem => format!("filesystem {}", self.path.as_deref().unwrap_or(default_path).display()),
            StorageKind::Memory => "memory (lost at exit)".into(),
            StorageKind::S3 => {
                let credentials = match &self.access_key_id {
                    Some(id) => format!("access key {id} from the config, secret <redacted>"),
                    None => "credentials from the AWS_* environment".into(),
                };
                let pulls = match self.redirect_expiry() {
                    Some(d) => {
                        format!("blob GETs redirected to presigned URLs valid {}", humantime::format_duration(d))
                    }
                    None => "blob bytes served by Cairn".into(),
                };
                format!(
                    "s3 bucket {} region {} endpoint {} {}, {credentials}, {pulls}",
                    self.bucket.as_deref().unwrap_or("<missing>"),
                    self.region.as_deref().unwrap_or("<from AWS_REGION, else us-east-1>"),
                    self.endpoint.as_deref().map(redact_url).unwrap_or_else(|| "<AWS>".into()),
                    if self.path_style { "path-style" } else { "virtual-hosted-style" },
                )
            }
        }
    }
}

/// `[uploads]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UploadsConfig {
    /// An upload idle this long is expired and its bytes removed.
    #[serde(with = "humantime_serde")]
    pub expire_after: Duration,
    /// How often expired uploads are swept.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `cairn=debug,tower_http=info`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:5000".into(),
            data_dir: PathBuf::from("./data"),
            public_url: None,
            shutdown_grace: Duration::from_secs(30),
            header_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(120),
            body_timeout: Duration::from_secs(60),
            max_connections: 1024,
            tls_cert: None,
            tls_key: None,
            metrics_listen: None,
            cache_size: ByteSize(64 << 20),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: StorageKind::Filesystem,
            path: None,
            bucket: None,
            region: None,
            endpoint: None,
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
            redirect: false,
            redirect_expiry: None,
        }
    }
}

impl Default for UploadsConfig {
    fn default() -> Self {
        UploadsConfig { expire_after: Duration::from_secs(24 * 3600), sweep_interval: Duration::from_secs(600) }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".into() }
    }
}

/// Every problem found while loading, one line each.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} configuration problem(s):", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Where configuration comes from, besides the environment.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// `--config FILE` (else `CAIRN_CONFIG`).
    pub file: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Loads from `sources` and the process environment, then validates.
    pub fn load(sources: &Sources) -> Result<Config, ConfigErrors> {
        Config::read(sources).config
    }

    /// Loads from `sources` and the given environment, then validates.
    pub fn load_from(
        sources: &Sources,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigErrors> {
        Config::read_from(sources, env).config
    }

    /// Like `load`, and also returns the notes (ignored environment variables).
    pub fn read(sources: &Sources) -> Loaded {
        load::load(sources, std::env::vars())
    }

    /// Like `load_from`, and also returns the notes.
    pub fn read_from(sources: &Sources, env: impl IntoIterator<Item = (String, String)>) -> Loaded {
        load::load(sources, env)
    }

    /// Semantic checks over a parsed config; one message per problem.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.server.listen.parse::<SocketAddr>().is_err() {
            p.push(format!(
                "server.listen = {:?} is not an address: use IP:PORT such as 127.0.0.1:5000 or 0.0.0.0:5000",
                self.server.listen
            ));
        }
        if self.gc.grace < Duration::from_secs(2) {
            p.push(format!(
                "gc.grace = {:?} is too short: HEAD touches reach the database within a second, so use at least \"2s\", such as \"1h\"",
                self.gc.grace
            ));
        }
        if self.audit.checkpoint_every == 0 {
            p.push("audit.checkpoint_every = 0: use a number of events of at least 1, such as 1000".into());
        }
        if self.audit.checkpoint_interval < Duration::from_secs(1) {
            p.push(format!(
                "audit.checkpoint_interval = {:?} is too short: use at least \"1s\", such as \"5m\"",
                self.audit.checkpoint_interval
            ));
        }
        if let Some(u) = &self.server.public_url {
            match url::Url::parse(u) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                _ => p.push(format!("server.public_url = {u:?} must be an http:// or https:// URL")),
            }
        }
        if self.server.data_dir.as_os_str().is_empty() {
            p.push("server.data_dir must not be empty".into());
        }
        if let Some(u) = &self.database.url
            && !u.starts_with("sqlite:")
            && !crate::meta::is_postgres_url(u)
        {
            p.push(format!("database.url = {:?}: use a sqlite:// or postgres:// (postgresql://) URL", redact_url(u)));
        }
        let s = &self.server;
        for (key, d) in [("header", s.header_timeout), ("keepalive", s.keepalive_timeout), ("body", s.body_timeout)] {
            if d.is_zero() {
                p.push(format!("server.{key}_timeout must be longer than 0s"));
            }
        }
        if s.cache_size.bytes() > 1 << 40 {
            p.push(format!(
                "server.cache_size = {} bytes is more than 1TiB: use something like \"64MiB\"",
                s.cache_size.bytes()
            ));
        }
        let r = &self.rate_limit;
        for (rate_key, rate, burst_key, burst) in
            [("per_client", r.per_client, "burst", r.burst), ("per_user", r.per_user, "user_burst", r.user_burst)]
        {
            if !(0.0..=1e9).contains(&rate) {
                p.push(format!(
                    "rate_limit.{rate_key} = {rate} must be a number of requests per second from 0 (off) to 1e9"
                ));
            }
            if rate > 0.0 && burst == 0 {
                p.push(format!("rate_limit.{burst_key} must be at least 1 when rate_limit.{rate_key} is set"));
            }
        }
        if s.max_connections == 0 {
            p.push("server.max_connections must be at least 1".into());
        }
        p.extend(self.tls_problems());
        if let Some(m) = &s.metrics_listen {
            match m.parse::<SocketAddr>() {
                Ok(a) if Ok(a) == s.listen.parse::<SocketAddr>() => p.push(format!(
                    "server.metrics_listen = {m:?} is server.listen's address: leave it out to serve /metrics there"
                )),
                Ok(_) => {}
                Err(_) => p.push(format!(
                    "server.metrics_listen = {m:?} is not an address: use IP:PORT such as 127.0.0.1:9090"
                )),
            }
        }
        if self.uploads.expire_after < Duration::from_secs(60) {
            p.push("uploads.expire_after must be at least 1m".into());
        }
        if self.uploads.sweep_interval < Duration::from_secs(1) {
            p.push("uploads.sweep_interval must be at least 1s".into());
        }
        if let Err(errs) = ImmutabilityPolicy::new(&self.immutability) {
            p.extend(errs);
        }
        if let Err(errs) = RetentionPolicy::new(&self.retention) {
            p.extend(errs);
        }
        if let Err(errs) = crate::signatures::Keyring::new(&self.signatures.keys) {
            p.extend(errs);
        }
        let names: Vec<&str> = self.signatures.keys.iter().map(|k| k.name.as_str()).collect();
        if let Err(errs) = crate::policy::gates::Gates::new(&self.signatures.gates, &names) {
            p.extend(errs);
        }
        p.extend(self.storage.problems());
        p.extend(self.auth_problems());
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            p.push(format!("log.level = {:?} is not a valid filter (try \"info\" or \"cairn=debug\")", self.log.level));
        }
        p
    }

    /// The check `serve` makes before it listens: a non-loopback address with no users
    /// would let anyone on the network push and delete, unless the config allows it.
    pub fn exposure_problem(&self) -> Option<String> {
        let addr = self.server.listen.parse::<SocketAddr>().ok()?;
        let exposed = !addr.ip().is_loopback() && self.auth.users.is_empty() && !self.auth.allow_anonymous_write;
        exposed.then(|| {
            format!(
                "server.listen = {:?}: refusing to listen on {addr} with no users configured, where anyone on the \
                 network could push and delete. Add [[auth.users]], listen on 127.0.0.1, or set \
                 auth.allow_anonymous_write = true",
                self.server.listen
            )
        })
    }

    /// Problems of `server.tls_cert` / `server.tls_key`: only one set, or files that do
    /// not load (each named with what is wrong).
    fn tls_problems(&self) -> Vec<String> {
        match (&self.server.tls_cert, &self.server.tls_key) {
            (None, None) => vec![],
            (Some(_), None) => vec!["server.tls_cert is set without server.tls_key: set both to serve HTTPS".into()],
            (None, Some(_)) => vec!["server.tls_key is set without server.tls_cert: set both to serve HTTPS".into()],
            (Some(cert), Some(key)) => match crate::server::tls::load_certified_key(cert, key) {
                Ok(_) => vec![],
                Err(e) => vec![e.to_string()],
            },
        }
    }

    /// The scheme clients reach this server with when `public_url` is unset.
    pub fn scheme(&self) -> &'static str {
        if self.server.tls_cert.is_some() { "https" } else { "http" }
    }

    fn auth_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let a = &self.auth;
        if a.service.trim().is_empty() {
            p.push("auth.service must not be empty".into());
        }
        if a.token_ttl < Duration::from_secs(10) || a.token_ttl > Duration::from_secs(24 * 3600) {
            p.push("auth.token_ttl must be between 10s and 24h".into());
        }
        if a.max_failed_logins == 0 || a.max_failed_logins_per_address == 0 {
            p.push("auth.max_failed_logins and auth.max_failed_logins_per_address must be at least 1".into());
        }
        if a.concurrent_password_checks == Some(0) {
            p.push(
                "auth.concurrent_password_checks must be at least 1 (or left out: one per CPU core, at most 8)".into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, u) in a.users.iter().enumerate() {
            let at = format!("auth.users[{i}]");
            if u.name.is_empty() || u.name == "anonymous" || u.name.contains(':') {
                p.push(format!("{at}.name = {:?}: a name must be non-empty, not \"anonymous\", without ':'", u.name));
            }
            if !names.insert(u.name.clone()) {
                p.push(format!("{at}.name = {:?} is defined twice", u.name));
            }
            if argon2::PasswordHash::new(&u.password_hash).is_err() || !u.password_hash.starts_with("$argon2id$") {
                p.push(format!("{at}.password_hash is not an argon2id hash: make one with `cairn hash-password`"));
            }
            for (j, r) in u.roles.iter().enumerate() {
                if crate::policy::Role::parse(r).is_none() {
                    p.push(format!("{at}.roles[{j}] = {r:?}: use admin, writer, reader or auditor"));
                }
            }
        }
        for (i, g) in a.grants.iter().enumerate() {
            let at = format!("auth.grants[{i}]");
            if g.subjects.is_empty() {
                p.push(format!("{at}.subjects is empty: name users, robots or \"anonymous\""));
            }
            if let Err(e) = crate::policy::access::repo_glob(&g.repositories) {
                p.push(format!("{at}.repositories = {:?}: {}", g.repositories, e.kind()));
            }
            for (j, act) in g.actions.iter().enumerate() {
                if crate::policy::Action::parse(act).is_none() {
                    p.push(format!("{at}.actions[{j}] = {act:?}: use pull, push or delete"));
                }
            }
        }
        p
    }

    /// Where the ledger's checkpoint signing key lives.
    pub fn audit_key_path(&self) -> PathBuf {
        self.audit.key_file.clone().unwrap_or_else(|| self.server.data_dir.join("audit-signing-key.p8"))
    }

    /// Where the token signing key lives.
    pub fn token_key_path(&self) -> PathBuf {
        self.auth.key_file.clone().unwrap_or_else(|| self.server.data_dir.join("token-signing-key.p8"))
    }

    /// The listen address (validated by `load`).
    pub fn listen_addr(&self) -> SocketAddr {
        self.server.listen.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 5000)))
    }

    /// The database URL, defaulting to a SQLite file under the data directory.
    pub fn database_url(&self) -> String {
        self.database
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.server.data_dir.join("cairn.db").display()))
    }

    /// The database URL with any password replaced, for logs and messages.
    pub fn database_url_redacted(&self) -> String {
        redact_url(&self.database_url())
    }

    /// The blob directory for the filesystem backend.
    pub fn storage_path(&self) -> PathBuf {
        self.storage.path.clone().unwrap_or_else(|| self.server.data_dir.join("blobs"))
    }

    /// A config for tests: everything under `dir`.
    pub fn for_dir(dir: &Path) -> Config {
        let mut c = Config::default();
        c.server.data_dir = dir.to_path_buf();
        c.server.listen = "127.0.0.1:0".into();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_with_no_config() {
        let c = Config::load_from(&Sources::default(), env(&[])).unwrap();
        assert_eq!(c.listen_addr().to_string(), "127.0.0.1:5000");
        assert_eq!(c.database_url(), "sqlite://./data/cairn.db");
        assert_eq!(c.storage_path(), PathBuf::from("./data/blobs"));
    }

    #[test]
    fn env_and_flags_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[server]\nlisten = \"127.0.0.1:1\"\n[uploads]\nexpire_after = \"2h\"\n").unwrap();
        let src = Sources { file: Some(f.clone()), ..Default::default() };
        let c = Config::load_from(&src, env(&[("CAIRN_LISTEN", "127.0.0.1:2"), ("CAIRN_UPLOADS__EXPIRE_AFTER", "3h")]))
            .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:2");
        assert_eq!(c.uploads.expire_after, Duration::from_secs(3 * 3600));
        let src = Sources { file: Some(f), listen: Some("127.0.0.1:3".into()), ..Default::default() };
        let c = Config::load_from(&src, env(&[("CAIRN_LISTEN", "127.0.0.1:2")])).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:3");
    }

    #[test]
    fn reports_every_problem_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[server]\nlisten = \"nope\"\nlisen = 1\n[storage]\nkind = \"s3\"\nbogus = true\n[log]\nlevel = \"[[\"\n[extra]\nx = 1\n",
        )
        .unwrap();
        let src = Sources { file: Some(f), ..Default::default() };
        let errs = Config::load_from(&src, env(&[("CAIRN_NOPE__X", "1")])).unwrap_err().0;
        let all = errs.join("\n");
        for needle in ["server.lisen", "storage.bogus", "server.listen", "log.level", "CAIRN_NOPE__X"] {
            assert!(all.contains(needle), "{needle} not named in:\n{all}");
        }
    }

    #[test]
    fn sizes_and_rate_limits_are_read_and_checked() {
        for (text, want) in [
            ("64MiB", 64 << 20),
            ("64 MiB", 64 << 20),
            ("512KiB", 512 << 10),
            ("1GiB", 1 << 30),
            ("1000", 1000),
            ("2MB", 2_000_000),
        ] {
            assert_eq!(ByteSize::parse(text), Ok(ByteSize(want)), "{text}");
        }
        for bad in ["", "MiB", "-1", "1.5MiB", "64 XB", "99999999999999999999GiB"] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
        let vars = [("CAIRN_SERVER__CACHE_SIZE", "1048576"), ("CAIRN_RATE_LIMIT__PER_CLIENT", "2.5")];
        let c = Config::load_from(&Sources::default(), env(&vars)).unwrap();
        assert_eq!(c.server.cache_size, ByteSize(1 << 20));
        assert_eq!(c.rate_limit.per_client, 2.5);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[server]\ncache_size = \"lots\"\n[rate_limit]\nper_client = -1\nburst = 0\nbogus = 1\n")
            .unwrap();
        let errs = Config::load_from(&Sources { file: Some(f.clone()), ..Default::default() }, env(&[])).unwrap_err().0;
        let all = errs.join("\n");
        for needle in ["server.cache_size", "rate_limit.per_client = -1", "rate_limit.bogus"] {
            assert!(all.contains(needle), "{needle} not named in:\n{all}");
        }
        std::fs::write(&f, "[rate_limit]\nper_client = 5\nburst = 0\n").unwrap();
        let errs = Config::load_from(&Sources { file: Some(f), ..Default::default() }, env(&[])).unwrap_err().0;
        assert!(errs.join("\n").contains("rate_limit.burst must be at least 1"), "{errs:?}");
    }

    #[test]
    fn per_user_rate_limits_are_read_and_checked() {
        let d = Config::default().rate_limit;
        assert_eq!((d.per_user, d.user_burst, d.exempt_loopback), (0.0, 100, true), "off by default");
        let vars = [("CAIRN_RATE_LIMIT__PER_USER", "3"), ("CAIRN_RATE_LIMIT__USER_BURST", "7")];
        let c = Config::load_from(&Sources::default(), env(&vars)).unwrap();
        assert_eq!((c.rate_limit.per_user, c.rate_limit.user_burst), (3.0, 7));
        assert_eq!(c.rate_limit.burst, 100, "the client burst stays its own");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        let load = |text: &str| {
            std::fs::write(&f, text).unwrap();
            let src = Sources { file: Some(f.clone()), ..Default::default() };
            Config::load_from(&src, env(&[])).map(|c| c.rate_limit).map_err(|e| e.0.join("\n"))
        };
        let all = load("[rate_limit]\nper_client = -1\nburst = 0\nper_user = -2\nuser_burst = 0\n").unwrap_err();
        for needle in ["rate_limit.per_client = -1", "rate_limit.per_user = -2"] {
            assert!(all.contains(needle), "{needle} not named in:\n{all}");
        }
        let all = load("[rate_limit]\nper_user = 5\nuser_burst = 0\nper_client = 1e10\n").unwrap_err();
        for needle in [
            "rate_limit.user_burst must be at least 1 when rate_limit.per_user is set",
            "rate_limit.per_client = 10000000000 must",
        ] {
            assert!(all.contains(needle), "{needle} not named in:\n{all}");
        }
        assert!(!all.contains("rate_limit.burst"), "the client burst is fine: {all}");
        let errs =
            Config::load_from(&Sources::default(), env(&[("CAIRN_RATE_LIMIT__PER_USER", "lots")])).unwrap_err().0;
        assert!(errs.join("\n").contains("CAIRN_RATE_LIMIT__PER_USER (rate_limit.per_user)"), "{errs:?}");
        // The user's burst does not follow `burst`; a limit per user alone is valid.
        let r = load("[rate_limit]\nburst = 5\nper_user = 0.5\n").unwrap();
        assert_eq!((r.per_client, r.per_user, r.user_burst), (0.0, 0.5, 100));
        let r = load("[rate_limit]\nper_client = 0\nburst = 0\nper_user = 0\nuser_burst = 0\n").unwrap();
        assert_eq!((r.burst, r.user_burst), (0, 0), "a burst of 0 is fine while its limit is off");
    }

    #[test]
    fn example_config_is_valid_and_matches_the_defaults() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
        let c = Config::load_from(&Sources { file: Some(example.into()), ..Default::default() }, env(&[])).unwrap();
        // Every key the example sets is the default, so the two configs print the same.
        assert_eq!(format!("{c:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn bad_enum_value_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[storage]\nkind = \"floppy\"\n").unwrap();
        let errs = Config::load_from(&Sources { file: Some(f), ..Default::default() }, env(&[])).unwrap_err().0;
        assert!(errs.join("\n").contains("storage.kind"), "{errs:?}");
    }

    #[test]
    fn s3_storage_names_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[storage]\nkind = \"s3\"\nendpoint = \"localhost:9000\"\naccess_key_id = \"AK\"\npath = \"/x\"\n",
        )
        .unwrap();
        let errs = Config::load_from(&Sources { file: Some(f), ..Default::default() }, env(&[])).unwrap_err().0;
        let all = errs.join("\n");
        for needle in [
            "storage.bucket is missing",
            "storage.endpoint = \"localhost:9000\" is not an http",
            "storage.access_key_id is set without storage.secret_access_key",
            "storage.path is only used with storage.kind = \"filesystem\"",
        ] {
            assert!(all.contains(needle), "{needle} not named in:\n{all}");
        }
        let errs = Config::load_from(&Sources::default(), env(&[("CAIRN_STORAGE__BUCKET", "b")])).unwrap_err().0;
        assert!(errs.join("\n").contains("(storage.bucket) is only used with storage.kind = \"s3\""), "{errs:?}");
    }

    #[test]
    fn s3_storage_from_file_and_environment_hides_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[storage]\nkind = \"s3\"\nbucket = \"blobs\"\nendpoint = \"http://127.0.0.1:9000\"\npath_style = true\n",
        )
        .unwrap();
        let vars = [("CAIRN_STORAGE__ACCESS_KEY_ID", "AKID"), ("CAIRN_STORAGE__SECRET_ACCESS_KEY", "hunter2")];
        let c = Config::load_from(&Sources { file: Some(f), ..Default::default() }, env(&vars)).unwrap();
        assert_eq!(c.storage.kind, StorageKind::S3);
        assert_eq!(c.storage.secret_access_key.as_deref(), Some("hunter2"));
        let shown = format!("{c:?} {}", c.storage.summary(&c.storage_path()));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("s3 bucket blobs") && shown.contains("path-style") && shown.contains("AKID"), "{shown}");
        assert!(shown.contains("blob bytes served by Cairn"), "redirect is off by default: {shown}");
        assert_eq!(c.storage.redirect_expiry(), None);
    }

    #[test]
    fn redirect_is_only_for_s3_and_its_expiry_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let load = |text: &str| {
            let f = dir.path().join("c.toml");
            std::fs::write(&f, text).unwrap();
            Config::load_from(&Sources { file: Some(f), ..Default::default() }, env(&[]))
        };
        let s3 = "[storage]\nkind = \"s3\"\nbucket = \"b\"\n";
        let c = load(&format!("{s3}redirect = true\n")).unwrap();
        assert_eq!(c.storage.redirect_expiry(), Some(DEFAULT_REDIRECT_EXPIRY));
        assert!(c.storage.summary(Path::new("/x")).contains("redirected to presigned URLs valid 5m"));
        let c = load(&format!("{s3}redirect = true\nredirect_expiry = \"90s\"\n")).unwrap();
        assert_eq!(c.storage.redirect_expiry(), Some(Duration::from_secs(90)));
        for (text, needle) in [
            (
                "[storage]\nredirect = true\n".to_string(),
                "storage.redirect = true is only valid with storage.kind = \"s3\"",
            ),
            ("[storage]\nkind = \"memory\"\nredirect = true\n".into(), "(kind is Memory)"),
            ("[storage]\nredirect_expiry = \"5m\"\n".into(), "storage.redirect_expiry is only used with storage.kind"),
            (
                format!("{s3}redirect_expiry = \"5m\"\n"),
                "storage.redirect_expiry is set but storage.redirect is not true",
            ),
            (
                format!("{s3}redirect = true\nredirect_expiry = \"8d\"\n"),
                "storage.redirect_expiry = 691200s is out of range",
            ),
            (format!("{s3}redirect = true\nredirect_expiry = \"0s\"\n"), "is out of range"),
        ] {
            let errs = load(&text).unwrap_err().0;
            assert!(errs.join("\n").contains(needle), "{needle} not named for {text:?} in {errs:?}");
        }
        let errs = Config::load_from(&Sources::default(), env(&[("CAIRN_STORAGE__REDIRECT", "true")])).unwrap_err().0;
        assert!(errs.join("\n").contains("CAIRN_STORAGE__REDIRECT"), "{errs:?}");
    }
}
