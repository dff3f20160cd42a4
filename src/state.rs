//! `AppState`: the two seams and the config, built from `Config`.

use std::sync::Arc;

use anyhow::Context;
use object_store::memory::InMemory;

use crate::auth::Auth;
use crate::blob::BlobStore;
use crate::config::{Config, StorageKind};
use crate::meta::{MetadataStore, SqliteStore};
use crate::policy::ImmutabilityPolicy;
use crate::service::Registry;

/// Shared by every request. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The registry's rules over the two seams.
    pub registry: Registry,
    /// Access control.
    pub auth: Arc<Auth>,
    /// The metadata store (for the CLI's robot commands).
    pub meta: Arc<dyn MetadataStore>,
    /// The loaded configuration.
    pub config: Arc<Config>,
}

impl AppState {
    /// Opens the metadata store (running migrations) and the blob store named by `config`.
    pub async fn from_config(config: Config) -> anyhow::Result<AppState> {
        std::fs::create_dir_all(&config.server.data_dir)
            .with_context(|| format!("cannot create data directory {}", config.server.data_dir.display()))?;
        let url = config.database_url();
        let meta: Arc<dyn MetadataStore> = Arc::new(
            SqliteStore::open(&url)
                .await
                .with_context(|| format!("cannot open database {}", config.database_url_redacted()))?,
        );
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
        };
        let policy = ImmutabilityPolicy::new(&config.immutability)
            .map_err(|errs| anyhow::anyhow!("invalid immutability rules: {}", errs.join("; ")))?;
        let auth = Arc::new(Auth::new(&config, meta.clone())?);
        let registry = Registry::new(meta.clone(), blobs, Arc::new(policy));
        Ok(AppState { registry, auth, meta, config: Arc::new(config) })
    }
}
