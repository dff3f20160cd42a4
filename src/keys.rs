//! Where the two signing keys live: the token signing key (ES256, `[auth] key_file`) and the
//! ledger's checkpoint key (Ed25519, `[audit] key_file`), both PKCS#8.
//!
//! - A configured `key_file` is used as it is (created, mode 0600, if missing): the operator
//!   decides, for example a secret mounted into every node.
//! - Otherwise, on a database that keeps keys (PostgreSQL: `MetadataStore::shared_key`), the
//!   key lives in the database, so every node signs and verifies with the same one. The first
//!   node to start stores it: a key file an older Cairn left at the default path
//!   (`<data_dir>/token-signing-key.p8`, `<data_dir>/audit-signing-key.p8`) if there is one,
//!   else a new key. A default-path file that differs from the stored key is ignored, with a
//!   warning.
//! - Otherwise (SQLite: one node) the key is the file at the default path, created on first
//!   start.

use std::path::Path;

use anyhow::Context;

use crate::config::Config;
use crate::meta::MetadataStore;

/// Which key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The ES256 key that signs bearer tokens.
    Token,
    /// The Ed25519 key that signs ledger checkpoints.
    Audit,
}

impl KeyKind {
    /// The key's name in the database.
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Token => "token",
            KeyKind::Audit => "audit",
        }
    }

    fn what(self) -> &'static str {
        match self {
            KeyKind::Token => "token signing key",
            KeyKind::Audit => "audit signing key",
        }
    }

    /// A new key of this kind (PKCS#8).
    pub fn generate(self) -> anyhow::Result<Vec<u8>> {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let rng = ring::rand::SystemRandom::new();
        match self {
            KeyKind::Token => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map(|d| d.as_ref().to_vec())
                .map_err(|_| anyhow::anyhow!("could not generate a token signing key")),
            KeyKind::Audit => crate::audit::CheckpointKey::generate_pkcs8()
                .map_err(|_| anyhow::anyhow!("could not generate an audit signing key")),
        }
    }

    fn configured(self, config: &Config) -> Option<&Path> {
        match self {
            KeyKind::Token => config.auth.key_file.as_deref(),
            KeyKind::Audit => config.audit.key_file.as_deref(),
        }
    }

    fn default_path(self, config: &Config) -> std::path::PathBuf {
        match self {
            KeyKind::Token => config.token_key_path(),
            KeyKind::Audit => config.audit_key_path(),
        }
    }
}

/// The key of `kind` this process signs with (see the module header for where it comes
/// from), as PKCS#8 bytes. Errors name the file or the database problem.
pub async fn load(config: &Config, meta: &dyn MetadataStore, kind: KeyKind) -> anyhow::Result<Vec<u8>> {
    if let Some(path) = kind.configured(config) {
        return load_or_create_file(path, kind);
    }
    let path = kind.default_path(config);
    let legacy = match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {} {}", kind.what(), path.display())),
    };
    let candidate = match &legacy {
        Some(bytes) => bytes.clone(),
        None => kind.generate()?,
    };
    let now = std::time::SystemTime::now();
    match meta
        .shared_key(kind.name(), &candidate, now)
        .await
        .with_context(|| format!("cannot load the {}", kind.what()))?
    {
        Some(stored) => {
            if kind == KeyKind::Audit {
                tracing::warn!(
                    "the audit signing key is kept in the database, shared by every node: whoever can write the \
                     database can also re-sign its history; give every node one [audit] key_file for full \
                     tamper-evidence"
                );
            }
            if legacy.as_ref().is_some_and(|l| *l != stored) {
                tracing::warn!(
                    file = %path.display(),
                    "the {} in this file differs from the one the database holds for every node; the database's is used",
                    kind.what()
                );
            }
            Ok(stored)
        }
        None => load_or_create_file(&path, kind),
    }
}

/// The key file at `path`, created (mode 0600) with a new key if missing; a second process
/// creating it at the same moment gets the first one's.
pub fn load_or_create_file(path: &Path, kind: KeyKind) -> anyhow::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = kind.generate()?;
            match crate::auth::write_private(path, &key) {
                Ok(()) => Ok(key),
                // Another process (the CLI, a second server) created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    std::fs::read(path).with_context(|| format!("cannot read {} {}", kind.what(), path.display()))
                }
                Err(e) => Err(e).with_context(|| format!("cannot write {} {}", kind.what(), path.display())),
            }
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {} {}", kind.what(), path.display())),
    }
}

/// What [`place`] did with a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// The key is there now: written where none was, or found there already.
    Ready,
    /// Another key Cairn had made for the empty target (a `cairn migrate` or a start before the
    /// copy) was there and was replaced; where, in words.
    Replaced(String),
    /// Another key is in the configured `key_file` (named), left as it is: the operator's.
    Differs(String),
}

/// For `cairn migrate --copy-to`, which carries the source's keys over: puts `key` of `kind`
/// where a process on `config` and `meta` loads it from (see [`load`]), the target's database
/// being empty. A configured `key_file` is the operator's: written if missing, never replaced
/// (`Differs`). Otherwise the key is Cairn's own (in the database on one that keeps keys, else
/// the default-path file): one already there was made for this empty installation and has
/// signed nothing it keeps, so it is replaced (`Replaced`).
pub async fn place(config: &Config, meta: &dyn MetadataStore, kind: KeyKind, key: &[u8]) -> anyhow::Result<Placed> {
    let what = kind.what();
    if let Some(path) = kind.configured(config) {
        return match std::fs::read(path) {
            Ok(there) if there == key => Ok(Placed::Ready),
            Ok(_) => Ok(Placed::Differs(format!("the file {}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::auth::write_private(path, key)
                    .with_context(|| format!("cannot write {what} {}", path.display()))?;
                Ok(Placed::Ready)
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {what} {}", path.display())),
        };
    }
    let now = std::time::SystemTime::now();
    match meta.shared_key(kind.name(), key, now).await.with_context(|| format!("cannot store the {what}"))? {
        Some(stored) if stored == key => return Ok(Placed::Ready),
        Some(_) => {
            meta.replace_shared_key(kind.name(), key, now)
                .await
                .with_context(|| format!("cannot replace the {what}"))?;
            return Ok(Placed::Replaced(format!("the database (table signing_keys, name {:?})", kind.name())));
        }
        None => {}
    }
    let path = kind.default_path(config);
    let there = match std::fs::read(&path) {
        Ok(there) if there == key => return Ok(Placed::Ready),
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("cannot read {what} {}", path.display())),
    };
    // Whole or not at all: a new file beside it, renamed over it.
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = std::path::PathBuf::from(part);
    let _ = std::fs::remove_file(&part);
    crate::auth::write_private(&part, key).with_context(|| format!("cannot write {what} {}", part.display()))?;
    std::fs::rename(&part, &path).with_context(|| format!("cannot write {what} {}", path.display()))?;
    Ok(if there { Placed::Replaced(format!("the file {}", path.display())) } else { Placed::Ready })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On SQLite a key goes to its default-path file: written where none is, replacing one made
    /// for the empty target; a configured `key_file` is written if missing but never replaced.
    #[tokio::test]
    async fn place_writes_the_key_where_the_target_loads_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_dir(dir.path());
        let meta = crate::meta::open(&config.database_url()).await.unwrap();
        let key = KeyKind::Audit.generate().unwrap();
        assert_eq!(place(&config, meta.as_ref(), KeyKind::Audit, &key).await.unwrap(), Placed::Ready);
        assert_eq!(std::fs::read(config.audit_key_path()).unwrap(), key);
        assert_eq!(load(&config, meta.as_ref(), KeyKind::Audit).await.unwrap(), key, "what serve loads");
        assert_eq!(place(&config, meta.as_ref(), KeyKind::Audit, &key).await.unwrap(), Placed::Ready, "again");
        let source = KeyKind::Audit.generate().unwrap();
        match place(&config, meta.as_ref(), KeyKind::Audit, &source).await.unwrap() {
            Placed::Replaced(w) => assert!(w.contains("audit-signing-key.p8"), "{w}"),
            other => panic!("expected Replaced, got {other:?}"),
        }
        assert_eq!(load(&config, meta.as_ref(), KeyKind::Audit).await.unwrap(), source);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(config.audit_key_path()).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "a private key stays private");
        }

        let mut configured = config.clone();
        let file = dir.path().join("keys").join("token.p8");
        configured.auth.key_file = Some(file.clone());
        let token = KeyKind::Token.generate().unwrap();
        assert_eq!(place(&configured, meta.as_ref(), KeyKind::Token, &token).await.unwrap(), Placed::Ready);
        assert_eq!(std::fs::read(&file).unwrap(), token);
        assert!(!config.token_key_path().exists(), "the default path is not used then");
        let other = KeyKind::Token.generate().unwrap();
        match place(&configured, meta.as_ref(), KeyKind::Token, &other).await.unwrap() {
            Placed::Differs(w) => assert!(w.contains("token.p8"), "{w}"),
            got => panic!("expected Differs, got {got:?}"),
        }
        assert_eq!(std::fs::read(&file).unwrap(), token, "the operator's file is left as it was");
    }
}
