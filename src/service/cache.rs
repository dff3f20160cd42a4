//! A small read cache for the hot read paths (HEAD/GET manifest, tags list, referrers),
//! so CD systems resolving tags do not hit the database each time.
//!
//! Correctness: every write to a repository (manifest or tag change, blob link or unlink)
//! drops that repository's entry after its transaction commits. A reader fills the cache
//! only if no write anywhere happened while it read the database (the `epoch` check), so a
//! stale read can never be inserted after the invalidation that should have removed it.
//!
//! Writes this process does not make (another node on PostgreSQL, a `cairn retention apply`
//! run beside the server on SQLite) are handled two ways:
//! - a change feed from the database (`MetadataStore::change_feed`: PostgreSQL's
//!   LISTEN/NOTIFY, sent in the writing transaction and so delivered only once it commits)
//!   drops the repository here within milliseconds; a gap in the feed (the listening
//!   connection was lost) drops everything;
//! - every repository's entry expires `ttl` after it was first filled (one second by
//!   default; the registry's clock decides), so whatever a feed misses, a stale answer
//!   lives at most that long.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::{Duration, SystemTime};

use crate::clock::Clock;
use crate::meta::{ManifestRecord, Referrer};
use crate::oci::{Digest, RepoName};

/// Manifests larger than this are not cached.
const MAX_CACHED_MANIFEST: usize = 256 << 10;
/// Cached items at most (manifests + lists); past this the cache starts over.
const MAX_ITEMS: usize = 50_000;

/// How long a repository's entry lives after it was first filled, by default: the longest a
/// write this process did not hear of stays unseen.
pub const DEFAULT_TTL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct RepoEntry {
    /// When the entry was created (the registry's clock); it expires `ttl` later.
    born: Option<SystemTime>,
    by_tag: HashMap<String, Arc<ManifestRecord>>,
    by_digest: HashMap<Digest, Arc<ManifestRecord>>,
    tags: Option<Arc<Vec<String>>>,
    referrers: HashMap<Digest, Arc<Vec<Referrer>>>,
}

/// The cache. Cheap to share behind an `Arc`.
pub struct ReadCache {
    epoch: AtomicU64,
    repos: Mutex<(usize, HashMap<RepoName, RepoEntry>)>,
    /// Serves and keeps nothing.
    off: bool,
    /// Entries older than this (by `clock`) are misses.
    ttl: Duration,
    clock: Arc<dyn Clock>,
    /// The task following the database's change feed, stopped with the cache.
    follower: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Default for ReadCache {
    fn default() -> Self {
        ReadCache::new(Arc::new(crate::clock::SystemClock), DEFAULT_TTL)
    }
}

impl Drop for ReadCache {
    fn drop(&mut self) {
        if let Some(h) = self.follower.get_mut().ok().and_then(Option::take) {
            h.abort();
        }
    }
}

/// A ticket taken before reading the database; filling with it fails if a write happened.
#[derive(Clone, Copy)]
pub struct Ticket(u64);

impl ReadCache {
    /// A cache whose entries expire `ttl` after they were filled, by `clock`.
    pub fn new(clock: Arc<dyn Clock>, ttl: Duration) -> ReadCache {
        ReadCache {
            epoch: AtomicU64::new(0),
            repos: Mutex::default(),
            off: ttl.is_zero(),
            ttl,
            clock,
            follower: Mutex::default(),
        }
    }

    /// A cache that serves and keeps nothing: every read goes to the database.
    pub fn off() -> ReadCache {
        ReadCache::new(Arc::new(crate::clock::SystemClock), Duration::ZERO)
    }

    /// Follows `feed` (the database's change feed) until the cache is dropped: each changed
    /// repository is dropped from the cache, and a gap drops everything.
    pub fn follow(self: &Arc<Self>, mut feed: crate::meta::ChangeFeed) {
        use futures::StreamExt;
        let weak = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            while let Some(change) = feed.next().await {
                let Some(cache) = weak.upgrade() else { return };
                match change {
                    crate::meta::Change::Repository(name) => match RepoName::parse(&name) {
                        Ok(repo) => cache.invalidate(&repo),
                        Err(_) => cache.invalidate_all(),
                    },
                    crate::meta::Change::Gap => {
                        tracing::debug!("the change feed had a gap; dropping the whole read cache");
                        cache.invalidate_all();
                    }
                }
            }
        });
        if let Ok(mut f) = self.follower.lock()
            && let Some(old) = f.replace(task.abort_handle())
        {
            old.abort();
        }
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

    /// Drops everything (a gap in the change feed).
    pub fn invalidate_all(&self) {
        if let Ok(mut g) = self.repos.lock() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            g.0 = 0;
            g.1.clear();
        }
    }

    fn with<T>(&self, repo: &RepoName, f: impl FnOnce(&RepoEntry) -> Option<T>) -> Option<T> {
        if self.off {
            return None;
        }
        let mut g = self.repos.lock().ok()?;
        let entry = g.1.get(repo)?;
        if entry.born.is_none_or(|born| self.clock.now() >= born + self.ttl) {
            g.1.remove(repo);
            return None;
        }
        f(entry)
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
        let now = self.clock.now();
        let entry = g.1.entry(repo.clone()).or_default();
        if entry.born.is_none_or(|born| now >= born + self.ttl) {
            *entry = RepoEntry { born: Some(now), ..RepoEntry::default() };
        }
        f(entry);
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
    fn an_entry_expires_after_its_ttl_by_the_clock() {
        let clock = Arc::new(crate::clock::ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1000)));
        let c = ReadCache::new(clock.clone(), Duration::from_secs(1));
        let repo = RepoName::parse("r").unwrap();
        c.put_manifest(c.ticket(), &repo, Some("v1"), &m(1));
        clock.advance(Duration::from_millis(999));
        assert!(c.manifest_by_tag(&repo, "v1").is_some(), "still fresh before the ttl");
        // Filled later into the same entry: it expires with the entry, not later.
        c.put_tags(c.ticket(), &repo, Arc::new(vec!["v1".into()]));
        clock.advance(Duration::from_millis(1));
        assert!(c.manifest_by_tag(&repo, "v1").is_none(), "expired at the ttl");
        assert!(c.tags(&repo).is_none());
        c.put_manifest(c.ticket(), &repo, Some("v1"), &m(2));
        assert_eq!(c.manifest_by_tag(&repo, "v1").unwrap().body.as_ref(), &[2], "a new entry after expiry");
    }

    #[test]
    fn invalidate_all_drops_every_repository_and_in_flight_fills() {
        let c = ReadCache::default();
        let (a, b) = (RepoName::parse("a").unwrap(), RepoName::parse("b").unwrap());
        c.put_manifest(c.ticket(), &a, Some("v1"), &m(1));
        let t = c.ticket();
        c.invalidate_all();
        c.put_manifest(t, &b, Some("v1"), &m(2));
        assert!(c.manifest_by_tag(&a, "v1").is_none());
        assert!(c.manifest_by_tag(&b, "v1").is_none());
    }

    #[tokio::test]
    async fn a_followed_feed_drops_the_repositories_it_names() {
        let c = Arc::new(ReadCache::default());
        let (a, b) = (RepoName::parse("a").unwrap(), RepoName::parse("b").unwrap());
        c.put_manifest(c.ticket(), &a, Some("v1"), &m(1));
        c.put_manifest(c.ticket(), &b, Some("v1"), &m(2));
        let (tx, rx) = futures::channel::mpsc::unbounded();
        c.follow(Box::pin(rx));
        tx.unbounded_send(crate::meta::Change::Repository("a".into())).unwrap();
        for _ in 0..100 {
            if c.manifest_by_tag(&a, "v1").is_none() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(c.manifest_by_tag(&a, "v1").is_none(), "a was named");
        assert!(c.manifest_by_tag(&b, "v1").is_some(), "b was not");
        tx.unbounded_send(crate::meta::Change::Gap).unwrap();
        for _ in 0..100 {
            if c.manifest_by_tag(&b, "v1").is_none() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(c.manifest_by_tag(&b, "v1").is_none(), "a gap drops everything");
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
