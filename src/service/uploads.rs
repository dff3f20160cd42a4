//! Blob uploads: start, append a chunk, status, finish with digest verification, cancel,
//! cross-repository mount, and expiry of idle sessions. Bytes are hashed as they stream
//! into storage; the hash state is saved with each chunk so nothing is ever read back to be
//! hashed. An upload of several segments is composed into one object once its digest is
//! verified, before the commit transaction records that one object (`blob/` says why).

use std::time::Duration;

use serde_json::json;

use super::manifests::event;
use super::{ByteStream, Registry};
use crate::audit::EventKind;
use crate::blob::WriteError;
use crate::error::Error;
use crate::meta::{Actor, BlobLocation, BlobRecord, CommitUpload, Segment, UploadSession};
use crate::oci::{Algorithm, Digest, Hasher, RepoName};

/// Where an open upload stands.
#[derive(Debug, Clone)]
pub struct UploadState {
    /// Session id.
    pub id: String,
    /// Bytes received so far.
    pub len: u64,
}

/// A blob that is now in the repository.
#[derive(Debug, Clone)]
pub struct BlobCommitted {
    /// Its digest.
    pub digest: Digest,
}

impl Registry {
    /// end-4a / end-4c: opens an upload session for `repo` that hashes with `algorithm`
    /// (`?digest-algorithm=`, sha256 by default).
    pub async fn start_upload(&self, repo: &RepoName, algorithm: Algorithm) -> Result<UploadState, Error> {
        let id = uuid::Uuid::new_v4().to_string();
        let s = self.meta.create_upload(repo, &id, algorithm, self.clock.now()).await?;
        Ok(UploadState { id: s.id, len: s.len })
    }

    /// end-11: links a blob already stored in `from` (or, without `from`, in any repository
    /// `readable` accepts) into `repo`. `None` when it cannot be mounted; the caller then
    /// starts an ordinary upload.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
        readable: impl Fn(&str) -> bool,
        actor: &Actor,
    ) -> Result<Option<BlobCommitted>, Error> {
        let from = match from {
            Some(f) if readable(f.as_str()) => f.clone(),
            Some(_) => return Ok(None),
            None => {
                // Automatic mount: only from a repository the caller could pull anyway.
                let holders = self.meta.blob_repositories(digest, 1000).await?;
                let Some(h) = holders.iter().find(|h| readable(h)) else { return Ok(None) };
                RepoName::parse(h)?
            }
        };
        let mut tx = self.meta.begin(self.clock.now()).await?;
        if !tx.blob_linked(&from, digest).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        let mut events = Vec::new();
        if tx.ensure_repository(repo).await? {
            events.push(event(EventKind::RepositoryCreate, actor, repo));
        }
        tx.link_blob(repo, digest, self.clock.now()).await?;
        events.push(
            event(EventKind::BlobMount, actor, repo).digest(digest.as_str()).detail(json!({ "from": from.as_str() })),
        );
        tx.append_events(events, self.clock.now()).await?;
        tx.commit().await?;
        self.invalidate(repo);
        Ok(Some(BlobCommitted { digest: digest.clone() }))
    }

    async fn session(&self, repo: &RepoName, id: &str) -> Result<UploadSession, Error> {
        self.meta.upload(repo, id).await?.ok_or_else(|| Error::UploadUnknown(id.to_string()))
    }

    /// `out`, unless it is a storage failure of a session that another request ended
    /// meanwhile: a racing closing PUT that committed it, or a DELETE, removes the session's
    /// objects, and the writer still streaming into them fails. That is the session's end,
    /// not a fault: 404 BLOB_UPLOAD_UNKNOWN, as for any request on an ended session.
    async fn unless_ended<T>(&self, repo: &RepoName, id: &str, out: Result<T, Error>) -> Result<T, Error> {
        match out {
            Err(Error::Internal(e)) => match self.meta.upload(repo, id).await {
                Ok(None) => {
                    tracing::debug!(upload = id, error = %e, "a write into an upload that ended meanwhile failed");
                    Err(Error::UploadUnknown(id.to_string()))
                }
                _ => Err(Error::Internal(e)),
            },
            out => out,
        }
    }

    /// end-13: where upload `id` stands.
    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<UploadState, Error> {
        let s = self.session(repo, id).await?;
        Ok(UploadState { id: s.id, len: s.len })
    }

    /// end-5: appends one chunk. `start` is the first byte of a `Content-Range`, which must
    /// equal the bytes already received (else 416); `expect_len` is the chunk length the
    /// client declared, checked after streaming.
    pub async fn append_chunk(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        expect_len: Option<u64>,
        body: ByteStream,
    ) -> Result<UploadState, Error> {
        let s = self.session(repo, id).await?;
        if let Some(start) = start
            && start != s.len
        {
            return Err(Error::UploadOutOfOrder { start, offset: s.len });
        }
        let (segment, hasher) = self.unless_ended(repo, &s.id, self.write_chunk(&s, body).await).await?;
        let Some(segment) = segment else {
            return Ok(UploadState { id: s.id, len: s.len });
        };
        if let Some(want) = expect_len
            && want != segment.len
        {
            // The chunk is not recorded: the session keeps its offset and the client resumes.
            return Err(Error::SizeInvalid(format!(
                "Content-Range declared {want} bytes but the body had {}; the chunk was not recorded, resume from byte {}",
                segment.len, s.len
            )));
        }
        if !self.meta.record_segment(&s.id, s.len, &segment, &hasher.save(), self.clock.now()).await? {
            return Err(Error::UploadOutOfOrder { start: s.len, offset: self.session(repo, id).await?.len });
        }
        Ok(UploadState { id: s.id, len: s.len + segment.len })
    }

    /// end-6: appends the optional last chunk (whose `Content-Range`, if sent, must start
    /// where the upload stands: else 416), checks the digest and, if it matches, commits the
    /// blob in one metadata transaction. A failed PUT leaves the session as it was, so the
    /// client can check its status and retry.
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        start: Option<u64>,
        body: ByteStream,
        actor: &Actor,
    ) -> Result<BlobCommitted, Error> {
        let mut s = self.session(repo, id).await?;
        if let Some(start) = start
            && start != s.len
        {
            return Err(Error::UploadOutOfOrder { start, offset: s.len });
        }
        if digest.algorithm() != s.algorithm {
            if s.len > 0 {
                return Err(Error::DigestInvalid(format!(
                    "this upload has been hashed with {} since its first byte, so it cannot be closed with the {} \
                     digest {digest}; open the upload with ?digest-algorithm={} to push a {} blob",
                    s.algorithm,
                    digest.algorithm(),
                    digest.algorithm(),
                    digest.algorithm()
                )));
            }
            // Nothing hashed yet (POST then a single PUT): the closing digest picks the algorithm.
            s.algorithm = digest.algorithm();
            s.hash_state = None;
        }
        let (last, hasher) = self.unless_ended(repo, &s.id, self.write_chunk(&s, body).await).await?;
        let mut segments = s.segments.clone();
        segments.extend(last);
        let size: u64 = segments.iter().map(|g| g.len).sum();
        let actual = hasher.finish();
        if &actual != digest {
            return Err(Error::DigestInvalid(format!(
                "digest {digest} does not match the uploaded content ({size} bytes with digest {actual}); \
                 the final chunk was not recorded, the upload stays at byte {}",
                s.len
            )));
        }
        let written = BlobLocation { upload: s.id.clone(), segments };
        // Several segments become one object (on S3, or past the filesystem's limit) before the
        // blob can be seen.
        let location =
            self.unless_ended(repo, &s.id, self.blobs.commit_location(&written).await.map_err(Error::from)).await?;
        let record = BlobRecord { digest: digest.clone(), size, location };
        let mut tx = self.meta.begin(self.clock.now()).await?;
        let (outcome, owner) = tx.commit_upload_and_link(&s.id, s.len, &record, self.clock.now()).await?;
        if let Some((owner, created)) = owner {
            let mut events = Vec::new();
            if created {
                events.push(event(EventKind::RepositoryCreate, actor, &owner));
            }
            events.push(
                event(EventKind::BlobCommit, actor, &owner).digest(digest.as_str()).detail(json!({ "size": size })),
            );
            tx.append_events(events, self.clock.now()).await?;
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        self.invalidate(repo);
        match outcome {
            CommitUpload::Created => self.blobs.remove_strays(&record.location).await,
            CommitUpload::AlreadyStored => {
                // The same bytes were already stored; this copy is garbage.
                if let Err(e) = self.blobs.delete_upload(&s.id).await {
                    tracing::warn!(upload = %s.id, error = %e, "could not remove a duplicate upload's segments");
                }
            }
            CommitUpload::UploadGone { len } => {
                if record.location != written {
                    // Nothing names the copy; the session's segments stay with the session.
                    self.blobs.delete_segments(&s.id, &record.location.segments).await;
                }
                // Either the session ended (a racing closing PUT, a DELETE, expiry), or a
                // racing PATCH moved it on: say which, as the transaction saw it.
                return Err(match len {
                    Some(now) => Error::UploadOutOfOrder { start: s.len, offset: now },
                    None => Error::UploadUnknown(s.id),
                });
            }
        }
        Ok(BlobCommitted { digest: digest.clone() })
    }

    /// end-4b: a single POST carrying the whole blob with `?digest=`.
    pub async fn upload_monolithic(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
        actor: &Actor,
    ) -> Result<BlobCommitted, Error> {
        let s = self.start_upload(repo, digest.algorithm()).await?;
        let result = self.finish_upload(repo, &s.id, digest, None, body, actor).await;
        if result.is_err() {
            // The client never saw this session's URL, so it cannot resume it.
            self.discard(&s.id).await;
        }
        result
    }

    /// end-deleteupload: cancels an upload and removes its bytes.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<(), Error> {
        self.session(repo, id).await?;
        self.discard(id).await;
        Ok(())
    }

    /// Expires sessions idle for longer than `idle` and removes their bytes; returns how
    /// many were expired.
    pub async fn expire_uploads(&self, idle: Duration) -> Result<usize, Error> {
        let now = self.clock.now();
        let expired = self.meta.expire_uploads(now - idle, now).await?;
        for s in &expired {
            if let Err(e) = self.blobs.delete_upload(&s.id).await {
                tracing::warn!(upload = %s.id, error = %e, "could not remove an expired upload's segments");
            }
        }
        Ok(expired.len())
    }

    async fn write_chunk(&self, s: &UploadSession, body: ByteStream) -> Result<(Option<Segment>, Hasher), Error> {
        let mut hasher = Hasher::restore(s.algorithm, s.hash_state.as_deref())
            .ok_or_else(|| Error::internal(anyhow::anyhow!("upload {} has an unreadable hash state", s.id)))?;
        let segment = self.blobs.write_segment(&s.id, s.segments.len(), body, |b| hasher.update(b)).await.map_err(
            |e| match e {
                WriteError::Body(m) => Error::UploadInvalid(format!("{m}; resume from byte {}", s.len)),
                WriteError::Store(e) => e.into(),
            },
        )?;
        Ok((segment, hasher))
    }

    /// Ends a session and removes its bytes, but only if this call ended it: a session a
    /// racing request committed meanwhile now holds a blob's bytes, which must stay.
    async fn discard(&self, id: &str) {
        match self.meta.delete_upload(id, self.clock.now()).await {
            Ok(Some(_)) => {
                if let Err(e) = self.blobs.delete_upload(id).await {
                    tracing::warn!(upload = %id, error = %e, "could not remove an upload's segments");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(upload = %id, error = %e, "could not delete an upload session"),
        }
    }
}
