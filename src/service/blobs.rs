//! Reading and deleting blobs of a repository.

use futures::{StreamExt as _, TryStreamExt};

use super::{ByteStream, Registry};
use crate::error::Error;
use crate::meta::Deleted;
use crate::oci::{Digest, RepoName};

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
        let blob = self.meta.blob(repo, digest).await?.ok_or_else(|| Error::BlobUnknown(digest.to_string()))?;
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
    /// naming that manifest: an image that can be pulled stays pullable). The bytes stay
    /// until garbage collection, since other repositories may share them.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), Error> {
        match self.meta.unlink_blob(repo, digest).await? {
            Deleted::Deleted => {
                self.cache.invalidate(repo);
                Ok(())
            }
            Deleted::NotFound => Err(Error::BlobUnknown(digest.to_string())),
            Deleted::Referenced { holder, tag } => {
                Err(Error::Referenced { repo: repo.clone(), what: "blob", target: digest.clone(), holder, tag })
            }
            Deleted::Protected { tag, current, rule } => {
                Err(Error::TagImmutable { repo: repo.clone(), tag, current, attempted: None, rule })
            }
        }
    }
}
