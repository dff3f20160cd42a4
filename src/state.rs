//! `AppState`: the two seams and the config, built from `Config`.

use std::sync::Arc;

use anyhow::Context;
use object_store::memory::InMemory;

use crate::audit::CheckpointKey;
use crate::auth::Auth;
use crate::blob::BlobStore;
use crate::config::{Config, StorageKind};
use crate::meta::MetadataStore;
use crate::policy::ImmutabilityPolicy;
use crate::service::Registry;

/// Shared by every request: one `Arc`, so a clone (every extractor and middleware layer
/// takes one) is one atomic increment instead of a dozen and a path copy. Derefs to
/// [`AppParts`], whose fields are the state.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// What an [`AppState`] holds.
pub struct AppParts {
    /// The registry's rules over the two seams.
    pub registry: Registry,
    /// Access control.
    pub auth: Arc<Auth>,
    /// The metadata store (for the CLI's robot commands).
    pub meta: Arc<dyn MetadataStore>,
    /// The loaded configuration.
    pub config: Arc<Config>,
    /// The key that signs ledger checkpoints.
    pub audit_key: Arc<CheckpointKey>,
    /// The address `serve` listens on (the configured one may say port 0).
    pub bound: Arc<std::sync::OnceLock<std::net::SocketAddr>>,
    /// `[rate_limit]`: the client and user buckets, one set per server (`api/rate_limit.rs`).
    pub rate_limits: Arc<crate::api::rate_limit::RateLimits>,
}

impl AppState {
    /// Opens the metadata store (running migrations) and the blob store named by `config`.
    pub async fn from_config(config: Config) -> anyhow::Result<AppState> {
        AppState::from_config_with_clock(config, Arc::new(crate::clock::SystemClock)).await
    }

    /// Like [`AppState::from_config`], with the registry asking `clock` for the time (tests pass
    /// a `ManualClock`).
    pub async fn from_config_with_clock(
        config: Config,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> anyhow::Result<AppState> {
        std::fs::create_dir_all(&config.server.data_dir)
            .with_context(|| format!("cannot create data directory {}", config.server.data_dir.display()))?;
        let url = config.database_url();
        let meta: Arc<dyn MetadataStore> = crate::meta::open(&url)
            .await
            .with_context(|| format!("cannot open database {}", config.database_url_redacted()))?;
        let blobs = match config.storage.kind {
            StorageKind::Filesystem => {
                let path = config.storage_path();
                std::fs::create_dir_all(&path)
                    .with_context(|| format!("cannot create blob directory {}", path.display()))?;
                let root =
                    path.canonicalize().with_context(|| format!("cannot use blob directory {}", path.display()))?;
                BlobStore::filesystem(root).with_context(|| format!("cannot use blob directory {}", path.display()))?
            }
            StorageKind::Memory => BlobStore::new(Arc::new(InMemory::new())),
            StorageKind::S3 => {
                let st = &config.storage;
                let settings = crate::blob::S3Settings {
                    bucket: st.bucket.clone().unwrap_or_default(),
                    region: st.region.clone(),
                    endpoint: st.endpoint.clone(),
                    path_style: st.path_style,
                    keys: st.access_key_id.clone().zip(st.secret_access_key.clone()),
                };
                let s3 =
                    BlobStore::s3(&settings).with_context(|| format!("cannot use S3 bucket {:?}", settings.bucket))?;
                match st.redirect_expiry() {
                    Some(expiry) => s3.with_redirect(expiry),
                    None => s3,
                }
            }
        };
        let policy = ImmutabilityPolicy::new(&config.immutability)
            .map_err(|errs| anyhow::anyhow!("invalid immutability rules: {}", errs.join("; ")))?;
        let token_key = crate::keys::load(&config, meta.as_ref(), crate::keys::KeyKind::Token).await?;
        let auth = Arc::new(Auth::new(&config, meta.clone(), clock.clone(), &token_key)?);
        let retention = crate::policy::retention::RetentionPolicy::new(&config.retention)
            .map_err(|errs| anyhow::anyhow!("invalid retention policies: {}", errs.join("; ")))?;
        let keyring = crate::signatures::Keyring::new(&config.signatures.keys)
            .map_err(|errs| anyhow::anyhow!("invalid signature keys: {}", errs.join("; ")))?;
        let names: Vec<&str> = config.signatures.keys.iter().map(|k| k.name.as_str()).collect();
        let gates = crate::policy::gates::Gates::new(&config.signatures.gates, &names)
            .map_err(|errs| anyhow::anyhow!("invalid signature gates: {}", errs.join("; ")))?;
        let rate_limits = crate::api::rate_limit::RateLimits::new(&config.rate_limit, clock.clone());
        let mut registry = Registry::new(meta.clone(), blobs, Arc::new(policy), clock)
            .with_gc_grace(config.gc.grace)
            .with_read_cache_budget(config.server.cache_size.bytes())
            .with_retention(Arc::new(retention))
            .with_trust(Arc::new(crate::service::Trust::new(keyring, gates)));
        // Other nodes (or CLI runs) write to the same database: follow its change feed.
        registry = registry.follow_changes().await.context("cannot follow the database's changes")?;
        let audit_key = crate::keys::load(&config, meta.as_ref(), crate::keys::KeyKind::Audit).await?;
        let audit_key =
            Arc::new(CheckpointKey::from_pkcs8(&audit_key).map_err(|e| anyhow::anyhow!("the audit signing key: {e}"))?);
        Ok(AppState(Arc::new(AppParts {
            registry,
            auth,
            meta,
            config: Arc::new(config),
            audit_key,
            bound: Arc::default(),
            rate_limits,
        })))
    }
}

/// What the `config.load` event records: SHA-256 digests of the effective rules (immutability,
/// access without secrets, audit, retention, signature keys and gates), so an auditor sees when a
/// rule or a trusted key changed without the ledger holding a secret.
pub fn config_detail(config: &Config) -> serde_json::Value {
    use sha2::Digest as _;
    let digest = |v: serde_json::Value| {
        let bytes = serde_jcs::to_vec(&v).unwrap_or_default();
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
    };
    let immutability = serde_json::to_value(&config.immutability).unwrap_or_default();
    let retention = serde_json::to_value(&config.retention).unwrap_or_default();
    // Public keys are no secret; their digest changes when a key does.
    let signatures = serde_json::to_value(&config.signatures).unwrap_or_default();
    let access = serde_json::json!({
        "allow_anonymous_write": config.auth.allow_anonymous_write,
        "users": config.auth.users.iter().map(|u| serde_json::json!({ "name": u.name, "roles": u.roles })).collect::<Vec<_>>(),
        "grants": config.auth.grants.iter().map(|g| serde_json::json!({
            "subjects": g.subjects, "repositories": g.repositories, "actions": g.actions })).collect::<Vec<_>>(),
    });
    let audit = serde_json::json!({
        "checkpoint_every": config.audit.checkpoint_every,
        "checkpoint_interval_ms": config.audit.checkpoint_interval.as_millis() as u64,
    });
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "immutability": digest(immutability),
        "access": digest(access),
        "audit": digest(audit),
        "retention": digest(retention),
        "signatures": digest(signatures),
        "signature_keys": config.signatures.keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
    })
}
