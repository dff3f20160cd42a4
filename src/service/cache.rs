//! A small read cache for the hot read paths (HEAD/GET manifest, tags list, referrers),
//! so CD systems resolving tags do not hit the database each time.
//!
//! Memory: the cache holds at most `budget` bytes (`[server] cache_size`, 64 MiB by
//! default), each entry weighed by what it holds (a manifest's body, a tag list's names,
//! its key) plus a fixed overhead. It is a `moka` cache: past the budget it evicts single
//! entries (TinyLFU admission, LRU eviction), never everything at once. Its size is
//! exported as `cairn_cache_size_bytes` and `cairn_cache_entries`.
//!
//! Correctness: every write to a repository (manifest or tag change, blob link or unlink)
//! drops that repository's entry after its transaction commits. A reader fills the cache
//! only if no write anywhere happened while it read the database (the `epoch` check), so a
//! stale read can never be inserted after the invalidation that should have removed it.
//!
//! A repository's entry is one record (its generation, the time it was first filled)
//! plus one cache item per manifest, tag list or referrer list, stamped with the
//! generation it was filled under. An item counts only while the repository's record
//! holds the same generation: invalidating a repository drops the record, and the next
//! fill starts a new generation (from a counter never reused), so items of the old one are
//! never served again; they wait for eviction or expiry.
//!
//! Writes this process does not make (another node on PostgreSQL, a `cairn retention apply`
//! run beside the server on SQLite) are handled two ways:
//! - a change feed from the database (`MetadataStore::change_feed`: PostgreSQL's
//!   LISTEN/NOTIFY, sent in the writing transaction and so delivered only once it commits)
//!   drops the repository here within milliseconds; a gap in the feed (the listening
//!   connection was lost) drops everything;
//! - every repository's entry expires `ttl` after it was first filled (one second by
//!   default; the registry's clock decides), so whatever a feed misses, a stale answer
//!   lives at most that long. (moka also drops items some time after `ttl` by the real
//!   clock, only to give the memory back: correctness never depends on that.)

use std::hash::Hash;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::{Duration, SystemTime};

use crate::clock::Clock;
use crate::meta::{ManifestRecord, Referrer};
use crate::oci::{Digest, RepoName};

/// Manifests larger than this are not cached.
const MAX_CACHED_MANIFEST: usize = 256 << 10;

/// The byte budget when none is configured (`[server] cache_size`).
pub const DEFAULT_BUDGET: u64 = 64 << 20;

/// What one cache entry costs beyond what it holds: moka's node, its place in the
/// eviction lists, the key's and value's `Arc`s and enums (measured roughly; generous).
const ENTRY_OVERHEAD: usize = 256;

/// How long a repository's entry lives after it was first filled, by default: the longest a
/// write this process did not hear of stays unseen.
pub const DEFAULT_TTL: Duration = Duration::from_secs(1);

/// What an item is.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// The repository's record (generation, birth); `sub` is empty.
    Repo,
    /// A manifest by tag; `sub` is the tag.
    Tag,
    /// A manifest by digest; `sub` is the digest.
    Digest,
    /// The tag list; `sub` is empty.
    Tags,
    /// The referrers of a subject; `sub` is the subject's digest.
    Referrers,
}

/// A cache key. Hashes like [`KeyRef`] (the same fields in the same order), so lookups
/// borrow instead of allocating.
#[derive(PartialEq, Eq, Hash)]
struct Key {
    kind: Kind,
    repo: Box<str>,
    sub: Box<str>,
}

/// A borrowed [`Key`].
#[derive(Hash)]
struct KeyRef<'a> {
    kind: Kind,
    repo: &'a str,
    sub: &'a str,
}

impl moka::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, k: &Key) -> bool {
        self.kind == k.kind && self.repo == &*k.repo && self.sub == &*k.sub
    }
}

impl KeyRef<'_> {
    fn owned(&self) -> Key {
        Key { kind: self.kind, repo: self.repo.into(), sub: self.sub.into() }
    }
}

/// A cached value; every item carries the generation of its repository it was filled under.
#[derive(Clone)]
enum Value {
    Repo { generation: u64, born: SystemTime },
    Manifest(u64, Arc<ManifestRecord>),
    Tags(u64, Arc<Vec<String>>),
    Referrers(u64, Arc<Vec<Referrer>>),
}

fn opt_len(s: &Option<String>) -> usize {
    s.as_ref().map_or(0, String::len)
}

fn annotations_len(a: &Option<std::collections::BTreeMap<String, String>>) -> usize {
    // A BTreeMap entry costs its two strings plus about 48 bytes of node.
    a.as_ref().map_or(0, |m| m.iter().map(|(k, v)| k.len() + v.len() + 48 + 48).sum())
}

/// Approximately how many bytes an entry keeps alive.
fn weigh(k: &Key, v: &Value) -> u32 {
    const S: usize = std::mem::size_of::<String>();
    let held = match v {
        Value::Repo { .. } => 0,
        Value::Manifest(_, m) => {
            std::mem::size_of::<ManifestRecord>()
                + m.body.len()
                + m.media_type.len()
                + m.digest.as_str().len()
                + opt_len(&m.artifact_type)
                + m.subject.as_ref().map_or(0, |d| d.as_str().len())
                + annotations_len(&m.annotations)
        }
        Value::Tags(_, t) => t.iter().map(|s| S + s.len()).sum::<usize>() + 2 * S,
        Value::Referrers(_, r) => {
            r.iter()
                .map(|r| {
                    std::mem::size_of::<Referrer>()
                        + r.digest.as_str().len()
                        + r.media_type.len()
                        + opt_len(&r.artifact_type)
                        + annotations_len(&r.annotations)
                })
                .sum::<usize>()
                + 2 * S
        }
    };
    let total = ENTRY_OVERHEAD + k.repo.len() + k.sub.len() + held;
    u32::try_from(total).unwrap_or(u32::MAX)
}

/// The cache. Cheap to share behind an `Arc`.
pub struct ReadCache {
    epoch: AtomicU64,
    /// The next repository generation; never reused (even across `invalidate_all`).
    generations: AtomicU64,
    items: moka::sync::Cache<Key, Value>,
    /// Held while filling and while invalidating, so that the epoch check and the insert
    /// it guards happen as one step with respect to an invalidation. Readers never take it.
    writing: Mutex<()>,
    /// Serves and keeps nothing.
    off: bool,
    /// Entries older than this (by `clock`) are misses.
    ttl: Duration,
    /// The byte budget.
    budget: u64,
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

/// How much the cache holds now (after pending evictions ran).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSize {
    /// The weighed size of every entry, in bytes; at most the budget.
    pub bytes: u64,
    /// Entries (repository records and items).
    pub entries: u64,
    /// The budget in bytes.
    pub budget: u64,
}

impl ReadCache {
    /// A cache whose entries expire `ttl` after they were filled, by `clock`, holding at
    /// most [`DEFAULT_BUDGET`] bytes.
    pub fn new(clock: Arc<dyn Clock>, ttl: Duration) -> ReadCache {
        ReadCache::with_budget(clock, ttl, DEFAULT_BUDGET)
    }

    /// A cache whose entries expire `ttl` after they were filled, by `clock`, holding at
    /// most `budget` bytes (0 or a zero `ttl`: a cache that keeps nothing).
    pub fn with_budget(clock: Arc<dyn Clock>, ttl: Duration, budget: u64) -> ReadCache {
        // Items of a dropped generation, and expired ones, are given back this long after
        // they were filled by the real clock (correctness is judged by `clock` alone).
        let reclaim = ttl.saturating_mul(2).max(Duration::from_secs(2));
        let items = moka::sync::Cache::builder().max_capacity(budget).weigher(weigh).time_to_live(reclaim).build();
        ReadCache {
            epoch: AtomicU64::new(0),
            generations: AtomicU64::new(0),
            items,
            writing: Mutex::default(),
            off: ttl.is_zero() || budget == 0,
            ttl,
            budget,
            clock,
            follower: Mutex::default(),
        }
    }

    /// A cache that serves and keeps nothing: every read goes to the database.
    pub fn off() -> ReadCache {
        ReadCache::with_budget(Arc::new(crate::clock::SystemClock), Duration::ZERO, 0)
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
        let _w = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.items.invalidate(&KeyRef { kind: Kind::Repo, repo: repo.as_str(), sub: "" });
    }

    /// Drops everything (a gap in the change feed).
    pub fn invalidate_all(&self) {
        let _w = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.items.invalidate_all();
        self.publish();
    }

    /// The cache's size now, after running moka's pending evictions.
    pub fn size(&self) -> CacheSize {
        self.items.run_pending_tasks();
        self.publish();
        CacheSize { bytes: self.items.weighted_size(), entries: self.items.entry_count(), budget: self.budget }
    }

    /// Sets the size gauges.
    fn publish(&self) {
        metrics::gauge!(crate::metrics::CACHE_SIZE_BYTES).set(self.items.weighted_size() as f64);
        metrics::gauge!(crate::metrics::CACHE_ENTRIES).set(self.items.entry_count() as f64);
    }

    /// The live generation of `repo`: its record exists and has not expired by the clock.
    fn generation(&self, repo: &str, now: SystemTime) -> Option<u64> {
        match self.items.get(&KeyRef { kind: Kind::Repo, repo, sub: "" })? {
            Value::Repo { generation, born } if now < born + self.ttl => Some(generation),
            _ => None,
        }
    }

    /// The item `kind`/`sub` of `repo`, if it belongs to the repository's live generation.
    fn get(&self, kind: Kind, repo: &RepoName, sub: &str) -> Option<Value> {
        if self.off {
            return None;
        }
        let generation = self.generation(repo.as_str(), self.clock.now())?;
        let v = self.items.get(&KeyRef { kind, repo: repo.as_str(), sub })?;
        let filled_under = match &v {
            Value::Repo { .. } => return None,
            Value::Manifest(g, _) | Value::Tags(g, _) | Value::Referrers(g, _) => *g,
        };
        (filled_under == generation).then_some(v)
    }

    /// Stores the item `kind`/`sub` of `repo` made by `make` (given the generation), unless
    /// a write happened since `t` was taken.
    fn fill(&self, t: Ticket, kind: Kind, repo: &RepoName, sub: &str, make: impl FnOnce(u64) -> Value) {
        if self.off {
            return;
        }
        {
            let Ok(_w) = self.writing.lock() else { return };
            if self.epoch.load(Ordering::Acquire) != t.0 {
                return;
            }
            let now = self.clock.now();
            let generation = match self.generation(repo.as_str(), now) {
                Some(g) => g,
                None => {
                    let generation = self.generations.fetch_add(1, Ordering::AcqRel) + 1;
                    let key = KeyRef { kind: Kind::Repo, repo: repo.as_str(), sub: "" }.owned();
                    self.items.insert(key, Value::Repo { generation, born: now });
                    generation
                }
            };
            self.items.insert(KeyRef { kind, repo: repo.as_str(), sub }.owned(), make(generation));
        }
        self.publish();
    }

    /// A manifest by tag.
    pub fn manifest_by_tag(&self, repo: &RepoName, tag: &str) -> Option<Arc<ManifestRecord>> {
        match self.get(Kind::Tag, repo, tag)? {
            Value::Manifest(_, m) => Some(m),
            _ => None,
        }
    }

    /// A manifest by digest.
    pub fn manifest_by_digest(&self, repo: &RepoName, d: &Digest) -> Option<Arc<ManifestRecord>> {
        match self.get(Kind::Digest, repo, d.as_str())? {
            Value::Manifest(_, m) => Some(m),
            _ => None,
        }
    }

    /// Remembers a manifest found by tag (`tag`) or digest (`None`).
    pub fn put_manifest(&self, t: Ticket, repo: &RepoName, tag: Option<&str>, m: &Arc<ManifestRecord>) {
        if m.body.len() > MAX_CACHED_MANIFEST {
            return;
        }
        let (kind, sub) = match tag {
            Some(tag) => (Kind::Tag, tag),
            None => (Kind::Digest, m.digest.as_str()),
        };
        self.fill(t, kind, repo, sub, |g| Value::Manifest(g, m.clone()));
    }

    /// All tags of a repository that exists, sorted.
    pub fn tags(&self, repo: &RepoName) -> Option<Arc<Vec<String>>> {
        match self.get(Kind::Tags, repo, "")? {
            Value::Tags(_, t) => Some(t),
            _ => None,
        }
    }

    /// Remembers the tags of an existing repository.
    pub fn put_tags(&self, t: Ticket, repo: &RepoName, tags: Arc<Vec<String>>) {
        self.fill(t, Kind::Tags, repo, "", |g| Value::Tags(g, tags));
    }

    /// All referrers of `subject` in `repo`.
    pub fn referrers(&self, repo: &RepoName, subject: &Digest) -> Option<Arc<Vec<Referrer>>> {
        match self.get(Kind::Referrers, repo, subject.as_str())? {
            Value::Referrers(_, r) => Some(r),
            _ => None,
        }
    }

    /// Remembers the referrers of `subject`.
    pub fn put_referrers(&self, t: Ticket, repo: &RepoName, subject: &Digest, list: Arc<Vec<Referrer>>) {
        self.fill(t, Kind::Referrers, repo, subject.as_str(), |g| Value::Referrers(g, list));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(n: u8) -> Arc<ManifestRecord> {
        record(bytes::Bytes::from(vec![n]))
    }

    fn record(body: bytes::Bytes) -> Arc<ManifestRecord> {
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
    fn the_cache_stays_within_its_byte_budget_evicting_single_entries() {
        let clock = Arc::new(crate::clock::ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1000)));
        let budget = 32 << 10;
        let c = ReadCache::with_budget(clock, Duration::from_secs(60), budget);
        let repo = RepoName::parse("r").unwrap();
        let big = |n: u32| record(bytes::Bytes::from(format!("{n:0>1000}")));
        for n in 0..500 {
            c.put_manifest(c.ticket(), &repo, Some(&format!("t{n}")), &big(n));
            // Read the repository's record often, as every lookup does, so it stays.
            let _ = c.manifest_by_tag(&repo, "t0");
        }
        let size = c.size();
        assert!(size.bytes <= budget, "{size:?}");
        assert!(size.entries > 10, "single entries were evicted, not everything: {size:?}");
        // Whatever is still there is right.
        let kept: Vec<u32> = (0..500).filter(|n| c.manifest_by_tag(&repo, &format!("t{n}")).is_some()).collect();
        assert!(!kept.is_empty());
        for n in kept {
            assert_eq!(c.manifest_by_tag(&repo, &format!("t{n}")).unwrap().body, big(n).body);
        }
        // An entry larger than the whole budget is not kept.
        let huge = Arc::new(ManifestRecord { body: bytes::Bytes::from(vec![0u8; 200 << 10]), ..(*big(1)).clone() });
        c.put_manifest(c.ticket(), &repo, None, &huge);
        assert!(c.size().bytes <= budget);
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
