//! What `cairn backup`, `cairn restore` and `cairn scrub` need from the blob seam, keys kept
//! inside `blob/`: hard-linking a blob's objects from one filesystem store into another
//! ([`BlobStore::link_to`]), and what is actually stored for a blob
//! ([`BlobStore::inspect`]: each object's key, recorded and stored size).

use object_store::ObjectStoreExt;

use super::{BlobStore, segment_key};
use crate::meta::BlobLocation;

/// What [`BlobStore::link_to`] did with one blob's objects.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Linked {
    /// Objects hard-linked into the target.
    pub objects: u64,
    /// Bytes in those (shared with the source, not copied).
    pub bytes: u64,
    /// Objects the source no longer has (deleted meanwhile): left to the copy to decide.
    pub gone: u64,
}

/// Why [`BlobStore::link_to`] could not link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Hard links cannot be made here (not both filesystem stores, different devices, a
    /// filesystem without links, no permission): copy instead.
    #[error("hard links cannot be made: {0}")]
    Unsupported(String),
    /// Linking failed otherwise.
    #[error("{0}")]
    Io(String),
}

/// One object of a blob as stored (see [`BlobStore::inspect`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Its key (relative to the blob directory, or the bucket's root).
    pub key: String,
    /// Its size as the database records it.
    pub recorded: u64,
    /// Its size in the store; `None` when the object is missing.
    pub stored: Option<u64>,
}

impl BlobStore {
    /// True when both stores are filesystem stores (hard links may work between them).
    pub fn can_link_to(&self, target: &BlobStore) -> bool {
        self.local_root.is_some() && target.local_root.is_some()
    }

    /// Hard-links the objects of the blob at `location` into `target` under the same keys,
    /// both being filesystem stores. An object already at the target is left as it is (the
    /// copy that follows checks its size); one the source no longer has is counted in
    /// `gone`. The new links' directories are fsynced. `LinkError::Unsupported` when links
    /// cannot be made between these two stores (the caller copies instead).
    pub async fn link_to(&self, target: &BlobStore, location: &BlobLocation) -> Result<Linked, LinkError> {
        let (Some(from), Some(to)) = (&self.local_root, &target.local_root) else {
            return Err(LinkError::Unsupported("not two filesystem stores".into()));
        };
        let (from, to) = (from.join("uploads").join(&location.upload), to.join("uploads").join(&location.upload));
        let names: Vec<(String, u64)> =
            location.segments.iter().filter(|s| s.len > 0).map(|s| (s.name.clone(), s.len)).collect();
        if names.is_empty() {
            return Ok(Linked::default());
        }
        tokio::task::spawn_blocking(move || link_files(&from, &to, &names))
            .await
            .map_err(|e| LinkError::Io(format!("linking task: {e}")))?
    }

    /// Each object of the blob at `location`: its key, the size the database records and the
    /// size stored (`None` when it is missing). An empty blob has no object.
    pub async fn inspect(&self, location: &BlobLocation) -> Result<Vec<StoredObject>, object_store::Error> {
        let mut out = Vec::with_capacity(location.segments.len());
        for seg in location.segments.iter().filter(|s| s.len > 0) {
            let key = segment_key(&location.upload, &seg.name);
            let stored = match self.store.head(&key).await {
                Ok(meta) => Some(meta.size),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => return Err(e),
            };
            out.push(StoredObject { key: key.to_string(), recorded: seg.len, stored });
        }
        Ok(out)
    }
}

fn link_files(from: &std::path::Path, to: &std::path::Path, names: &[(String, u64)]) -> Result<Linked, LinkError> {
    use std::io::ErrorKind;
    let io = |what: &std::path::Path, e: std::io::Error| LinkError::Io(format!("{}: {e}", what.display()));
    std::fs::create_dir_all(to).map_err(|e| io(to, e))?;
    let mut done = Linked::default();
    for (name, len) in names {
        let (src, dst) = (from.join(name), to.join(name));
        match std::fs::hard_link(&src, &dst) {
            Ok(()) => {
                done.objects += 1;
                done.bytes += len;
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == ErrorKind::NotFound && !src.exists() => done.gone += 1,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::CrossesDevices | ErrorKind::PermissionDenied | ErrorKind::Unsupported
                ) || e.raw_os_error() == Some(EMLINK) =>
            {
                return Err(LinkError::Unsupported(format!("{} -> {}: {e}", src.display(), dst.display())));
            }
            Err(e) => return Err(io(&dst, e)),
        }
    }
    if done.objects > 0 {
        std::fs::File::open(to).and_then(|d| d.sync_all()).map_err(|e| io(to, e))?;
        if let Some(parent) = to.parent() {
            std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(|e| io(parent, e))?;
        }
    }
    Ok(done)
}

/// Too many links to one file (Linux and macOS both number it 31).
const EMLINK: i32 = 31;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Segment;

    #[tokio::test]
    async fn a_blob_is_linked_under_the_same_key_and_inspected() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let from = BlobStore::filesystem(a.path().canonicalize().unwrap()).unwrap();
        let to = BlobStore::filesystem(b.path().canonicalize().unwrap()).unwrap();
        let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"hello"))]);
        let seg = from.write_segment("up-1", 0, body, |_| {}).await.unwrap().unwrap();
        let loc = BlobLocation { upload: "up-1".into(), segments: vec![seg.clone()] };
        assert!(from.can_link_to(&to));
        let linked = from.link_to(&to, &loc).await.unwrap();
        assert_eq!(linked, Linked { objects: 1, bytes: 5, gone: 0 });
        assert_eq!(to.link_to(&to, &loc).await.unwrap(), Linked::default(), "already there");
        let seen = to.inspect(&loc).await.unwrap();
        assert_eq!(
            seen,
            vec![StoredObject { key: format!("uploads/up-1/{}", seg.name), recorded: 5, stored: Some(5) }]
        );
        let gone = BlobLocation { upload: "up-2".into(), segments: vec![Segment { name: "0-x".into(), len: 3 }] };
        assert_eq!(from.link_to(&to, &gone).await.unwrap().gone, 1);
        assert_eq!(from.inspect(&gone).await.unwrap()[0].stored, None);
        let memory = BlobStore::new(std::sync::Arc::new(object_store::memory::InMemory::new()));
        assert!(!from.can_link_to(&memory));
        assert!(matches!(from.link_to(&memory, &loc).await, Err(LinkError::Unsupported(_))));
    }
}
