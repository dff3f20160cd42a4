//! A small read cache for the hot read paths (HEAD/GET manifest, tags list, referrers),
//! so CD systems resolving tags do not hit the database each time.
//!
//! Correctness: every write to a repository (manifest or tag change, blob link or unlink)
//! drops that repository's entry after its transaction commits. A reader fills the cache
//! only if no write anywhere happened while it read the database (the `epoch` check), so a
//! stale read can never be inserted after the invalidation that should have removed it.
//! The cache is per process: it is correct for the single-node SQLite deployment. On
//! PostgreSQL, where several nodes may write, it is turned off (`ReadCache::off`) until
//! cross-node invalidation exists: another node's write would otherwise stay unseen here.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::meta::{ManifestRecord, Referrer};
use crate::oci::{Digest, RepoName};

/// Manifests larger than this are not cached.
const MAX_CACHED_MANIFEST: usize = 256 << 10;
/// Cached items at most (manifests + lists); past this the cache starts over.
const MAX_ITEMS: usize = 50_000;

#[derive(Default)]
struct RepoEntry {
    by_tag: HashMap<String, Arc<ManifestRecord>>,
    by_digest: HashMap<Digest, Arc<ManifestRecord>>,
    tags: Option<Arc<Vec<String>>>,
    referrers: HashMap<Digest, Arc<Vec<Referrer>>>,
}

/// The cache. Cheap to share behind an `Arc`.
#[derive(Default)]
pub struct ReadCache {
    epoch: AtomicU64,
    repos: Mutex<(usize, HashMap<RepoName, RepoEntry>)>,
    /// Serves and keeps nothing (several writers this process does not hear of).
    off: bool,
}

/// A ticket taken before reading the database; filling with it fails if a write happened.
#[derive(Clone, Copy)]
pub struct Ticket(u64);

impl ReadCache {
    /// A cache that serves and keeps nothing: every read goes to the database.
    pub fn off() -> ReadCache {
        ReadCache { off: true, ..ReadCache::default() }
    }

    /// Take before a database read whose result may be cached.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.epoch.load(Ordering::Acquire))
    }

    /// Drops everything cached for `repo`. Call after the write committed.
    pub fn invalidate(&self, repo: &RepoName) {
        if let Ok(mut g) = self.repos.lock() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            g.1.remove(repo);
        }
    }

    fn with<T>(&self, repo: &RepoName, f: impl FnOnce(&RepoEntry) -> Option<T>) -> Option<T> {
        if self.off {
            return None;
        }
        let g = self.repos.lock().ok()?;
        g.1.get(repo).and_then(f)
    }

    fn fill(&self, t: Ticket, repo: &RepoName, f: impl FnOnce(&mut RepoEntry)) {
        if self.off {
            return;
        }
        let Ok(mut g) = self.repos.lock() else { return };
        if self.epoch.load(Ordering::Acquire) != t.0 {
            return;
        }
        if g.0 >= MAX_ITEMS {
            g.0 = 0;
            g.1.clear();
        }
        g.0 += 1;
        f(g.1.entry(repo.clone()).or_default());
    }

    /// A manifest by tag.
    pub fn manifest_by_tag(&self, repo: &RepoName, tag: &str) -> Option<Arc<ManifestRecord>> {
        self.with(repo, |e| e.by_tag.get(tag).cloned())
    }

    /// A manifest by digest.
    pub fn manifest_by_digest(&self, repo: &RepoName, d: &Digest) -> Option<Arc<ManifestRecord>> {
        self.with(repo, |e| e.by_digest.get(d).cloned())
    }

    /// Remembers a manifest found by tag (`tag`) or digest (`None`).
    pub fn put_manifest(&self, t: Ticket, repo: &RepoName, tag: Option<&str>, m: &Arc<ManifestRecord>) {
        if m.body.len() > MAX_CACHED_MANIFEST {
            return;
        }
        self.fill(t, repo, |e| match tag {
            Some(tag) => {
                e.by_tag.insert(tag.to_string(), m.clone());
            }
            None => {
                e.by_digest.insert(m.digest.clone(), m.clone());
            }
        });
    }

    /// All tags of a repository that exists, sorted.
    pub fn tags(&self, repo: &RepoName) -> Option<Arc<Vec<String>>> {
        self.with(repo, |e| e.tags.clone())
    }

    /// Remembers the tags of an existing repository.
    pub fn put_tags(&self, t: Ticket, repo: &RepoName, tags: Arc<Vec<String>>) {
        self.fill(t, repo, |e| e.tags = Some(tags));
    }

    /// All referrers of `subject` in `repo`.
    pub fn referrers(&self, repo: &RepoName, subject: &Digest) -> Option<Arc<Vec<Referrer>>> {
        self.with(repo, |e| e.referrers.get(subject).cloned())
    }

    /// Remembers the referrers of `subject`.
    pub fn put_referrers(&self, t: Ticket, repo: &RepoName, subject: &Digest, list: Arc<Vec<Referrer>>) {
        self.fill(t, repo, |e| {
            e.referrers.insert(subject.clone(), list);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(n: u8) -> Arc<ManifestRecord> {
        let body = bytes::Bytes::from(vec![n]);
        Arc::new(ManifestRecord {
            digest: Digest::of(&body),
            media_type: "x".into(),
            body,
            artifact_type: None,
            subject: None,
            annotations: None,
        })
    }

    #[test]
    fn a_cache_turned_off_keeps_nothing() {
        let c = ReadCache::off();
        let repo = RepoName::parse("a/b").unwrap();
        c.put_manifest(c.ticket(), &repo, Some("v1"), &m(1));
        c.put_tags(c.ticket(), &repo, Arc::new(vec!["v1".into()]));
        assert!(c.manifest_by_tag(&repo, "v1").is_none());
        assert!(c.tags(&repo).is_none());
    }

    #[test]
    fn a_write_during_a_read_keeps_the_stale_result_out() {
        let c = ReadCache::default();
        let repo = RepoName::parse("r").unwrap();
        let t = c.ticket();
        c.invalidate(&repo); // a write commits while the read was in flight
        c.put_manifest(t, &repo, Some("v1"), &m(1));
        assert!(c.manifest_by_tag(&repo, "v1").is_none());
        let t = c.ticket();
        c.put_manifest(t, &repo, Some("v1"), &m(2));
        assert_eq!(c.manifest_by_tag(&repo, "v1").unwrap().body.as_ref(), &[2]);
        c.invalidate(&repo);
        assert!(c.manifest_by_tag(&repo, "v1").is_none());
    }
}
