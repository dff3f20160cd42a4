//! Reading and deleting blobs of a repository.

use futures::{StreamExt as _, TryStreamExt};

use super::manifests::event;
use super::{ByteStream, Registry};
use crate::audit::EventKind;
use crate::error::Error;
use crate::meta::{Actor, RefKind};
use crate::oci::{Digest, RepoName};
use crate::policy::Refusal;

/// A blob to send: its total size, the byte range being sent, and the bytes.
pub struct BlobRead {
    /// Total size of the blob.
    pub size: u64,
    /// The range being sent (`0..size` for a whole blob).
    pub range: std::ops::Range<u64>,
    /// The bytes of `range`; `None` for HEAD.
    pub body: Option<ByteStream>,
}

impl Registry {
    /// end-2 / end-3: a blob of `repo`, whole or a range (`Range` resolved by the caller
    /// against the size via `pick`), with or without its bytes.
    pub async fn read_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        pick: impl FnOnce(u64) -> Result<Option<std::ops::Range<u64>>, Error>,
        with_body: bool,
    ) -> Result<(BlobRead, bool), Error> {
        let blob = match with_body {
            true => self.meta.blob(repo, digest).await?,
            // A HEAD may precede a manifest PUT that needs the blob: keep it from GC a while.
            false => self.head_blob(repo, digest).await?,
        };
        let blob = blob.ok_or_else(|| Error::BlobUnknown(digest.to_string()))?;
        let picked = pick(blob.size)?;
        let partial = picked.is_some();
        let range = picked.unwrap_or(0..blob.size);
        let body: Option<ByteStream> = match with_body {
            true => Some(self.blobs.read(&blob.location, range.clone()).await?.map_err(std::io::Error::other).boxed()),
            false => None,
        };
        Ok((BlobRead { size: blob.size, range, body }, partial))
    }

    /// end-10: removes a blob from `repo`, unless a manifest of `repo` uses it (405 DENIED
    /// naming that manifest: an image that can be pulled stays pullable; ledgered). The bytes
    /// stay until garbage collection, since other repositories may share them.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest, actor: &Actor) -> Result<(), Error> {
        let mut tx = self.meta.begin(self.clock.now()).await?;
        if let Some(h) = tx.holder(repo, RefKind::Blob, digest).await? {
            tx.rollback().await?;
            let refused = event(EventKind::DeleteRefuse, actor, repo).digest(digest.as_str());
            let refusal = Refusal::Referenced { holder: h.manifest, tag: h.tag };
            return Err(self.refuse(repo, refused, refusal, None, true).await);
        }
        if !tx.unlink_blob(repo, digest, self.clock.now()).await? {
            tx.rollback().await?;
            return Err(Error::BlobUnknown(digest.to_string()));
        }
        tx.append_events(vec![event(EventKind::BlobUnlink, actor, repo).digest(digest.as_str())], self.clock.now())
            .await?;
        tx.commit().await?;
        self.invalidate(repo);
        Ok(())
    }
}
