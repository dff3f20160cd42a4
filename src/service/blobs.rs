//! Reading and deleting blobs of a repository. A whole-blob GET on an S3 store with redirect
//! on is answered with a presigned URL of the blob's one object instead of its bytes.

use futures::{StreamExt as _, TryStreamExt};

use super::manifests::event;
use super::{ByteStream, Registry};
use crate::audit::EventKind;
use crate::error::Error;
use crate::meta::{Actor, RefKind};
use crate::oci::{Digest, RepoName};
use crate::policy::Refusal;

/// A blob to send: its total size, the byte range being sent, and the bytes (or where the
/// client gets them).
pub struct BlobRead {
    /// Total size of the blob.
    pub size: u64,
    /// The range being sent (`0..size` for a whole blob).
    pub range: std::ops::Range<u64>,
    /// The bytes of `range`; `None` for HEAD and for a redirect.
    pub body: Option<ByteStream>,
    /// A presigned URL that serves the whole blob, for a `307` instead of the bytes.
    pub redirect: Option<String>,
}

/// What a blob read answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobWant {
    /// Size only (HEAD).
    Head,
    /// The bytes, from Cairn.
    Bytes,
    /// A redirect to the store when it redirects pulls and the blob is one object (and no
    /// range was picked), else the bytes.
    BytesOrRedirect,
}

impl Registry {
    /// end-2 / end-3: a blob of `repo`, whole or a range (`Range` resolved by the caller
    /// against the size via `pick`), with its bytes, a redirect, or neither, as `want` says.
    /// The caller has checked access to `repo` already: a redirect is only handed out after.
    pub async fn read_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        pick: impl FnOnce(u64) -> Result<Option<std::ops::Range<u64>>, Error>,
        want: BlobWant,
    ) -> Result<(BlobRead, bool), Error> {
        let blob = match want {
            BlobWant::Bytes | BlobWant::BytesOrRedirect => self.meta.blob(repo, digest).await?,
            // A HEAD may precede a manifest PUT that needs the blob: keep it from GC a while.
            BlobWant::Head => self.head_blob(repo, digest).await?,
        };
        let blob = blob.ok_or_else(|| Error::BlobUnknown(digest.to_string()))?;
        let picked = pick(blob.size)?;
        let partial = picked.is_some();
        let range = picked.unwrap_or(0..blob.size);
        if want == BlobWant::BytesOrRedirect
            && !partial
            && let Some(url) = self.blobs.redirect_url(&blob.location).await?
        {
            return Ok((BlobRead { size: blob.size, range, body: None, redirect: Some(url) }, false));
        }
        let body: Option<ByteStream> = match want {
            BlobWant::Head => None,
            _ => Some(self.blobs.read(&blob.location, range.clone()).await?.map_err(std::io::Error::other).boxed()),
        };
        Ok((BlobRead { size: blob.size, range, body, redirect: None }, partial))
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
