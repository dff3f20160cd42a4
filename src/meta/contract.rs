//! The contract every `MetadataStore` backend passes (STYLE §10, distribution's driver
//! testsuites): each case gets a fresh store from the factory. SQLite runs it in
//! `sqlite.rs`; PostgreSQL in tests/postgres (it needs a server). The cases on two handles
//! ([`two_handles_append_to_one_chain`], [`two_handles_create_one_tag`]) are two nodes.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::audit::{EventKind, NewEvent, chain};
use crate::meta::{
    Actor, BlobLocation, BlobRecord, CommitUpload, EventFilter, ManifestInsert, ManifestRecord, MetaError,
    MetadataStore, RefKind, StorageTotals, TagAction, from_millis, millis,
};
use crate::oci::{Algorithm, Digest, Reference, RepoName, Tag};

/// A fresh store and whatever must live as long as it (a temp dir, a database).
pub type Fresh = (Arc<dyn MetadataStore>, Box<dyn Any + Send>);

/// Runs every case, each on a fresh store.
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Fresh>,
{
    let (s, _keep) = fresh().await;
    references_are_checked_and_rows_restrict_deletes(&*s).await;
    let (s, _keep) = fresh().await;
    a_rolled_back_transaction_leaves_nothing(&*s).await;
    let (s, _keep) = fresh().await;
    tags_move_and_are_recorded(&*s).await;
    let (s, _keep) = fresh().await;
    concurrent_writers_build_one_valid_chain(s).await;
    let (s, _keep) = fresh().await;
    ledger_filters_and_pulls(&*s).await;
    let (s, _keep) = fresh().await;
    ledger_filters_over_thousands_of_events(&*s).await;
    let (s, _keep) = fresh().await;
    a_commit_that_lost_its_upload_says_what_became_of_it(&*s).await;
    let (s, _keep) = fresh().await;
    committing_and_linking_an_upload_in_one_call(&*s).await;
    let (s, _keep) = fresh().await;
    gc_unlinks_what_no_manifest_references_and_keeps_the_mark(&*s).await;
    let (s, _keep) = fresh().await;
    storage_figures_count_each_blob_once(&*s).await;
    let (s, _keep) = fresh().await;
    retention_reads_one_repository(&*s).await;
    let (s, _keep) = fresh().await;
    concurrent_commits_rollbacks_refusals_and_drops(s).await;
    let (s, _keep) = fresh().await;
    an_abandoned_transaction_blocks_nothing(s).await;
}

/// Two handles on one database (two nodes, or the server and the `cairn` command line)
/// append in turn, one of them rolling an append back: the chain stays one unbroken chain.
/// Backends whose handles cache anything about the ledger must pass this.
pub async fn two_handles_append_to_one_chain(a: Arc<dyn MetadataStore>, b: Arc<dyn MetadataStore>) {
    let append = |s: Arc<dyn MetadataStore>, who: &'static str, n: usize, commit: bool| async move {
        let mut tx = s.begin(SystemTime::now()).await.unwrap();
        let events = (0..n).map(|i| NewEvent::new(EventKind::TagCreate, who, None).tag(format!("t{i}"))).collect();
        tx.append_events(events, SystemTime::now()).await.unwrap();
        if commit { tx.commit().await.unwrap() } else { tx.rollback().await.unwrap() }
    };
    for round in 0..3 {
        append(a.clone(), "a", 2, true).await;
        append(a.clone(), "a", 1, round != 1).await;
        append(b.clone(), "b", 3, true).await;
        append(a.clone(), "a", 1, true).await;
        append(b.clone(), "b", 1, round != 2).await;
    }
    let all = a.events(&EventFilter::default(), 1000).await.unwrap();
    assert_eq!(all.len(), 3 * 8 - 2, "every committed event, none of the rolled back");
    let head = chain::verify(None, &all).expect("one unbroken chain");
    assert_eq!(head, a.ledger_head().await.unwrap());
    assert_eq!(head, b.ledger_head().await.unwrap());
}

/// Two handles (two nodes) create the same new tags at once, each pointing them at its own
/// manifest, the way the service does: lock the tag, create it if it is missing, run again on
/// `Conflict` or `NotFound`. Every tag ends with exactly one create in its history, for the
/// winner's manifest; the loser finds the winner's tag and never overwrites it.
pub async fn two_handles_create_one_tag(a: Arc<dyn MetadataStore>, b: Arc<dyn MetadataStore>) {
    let r = repo();
    let (ma, mb) = (manifest("from a"), manifest("from b"));
    let mut tx = a.begin(SystemTime::now()).await.unwrap();
    tx.ensure_repository(&r).await.unwrap();
    tx.insert_manifest(&r, &ma, &[], &[]).await.unwrap();
    tx.insert_manifest(&r, &mb, &[], &[]).await.unwrap();
    tx.commit().await.unwrap();
    // (created it, where the tag points afterwards)
    async fn create(s: Arc<dyn MetadataStore>, r: RepoName, t: Tag, mine: Digest) -> (bool, Digest) {
        for _ in 0..20 {
            let mut tx = s.begin(SystemTime::now()).await.unwrap();
            if let Some(current) = tx.tag_for_update(&r, &t).await.unwrap() {
                tx.rollback().await.unwrap();
                return (false, current);
            }
            let event = NewEvent::new(EventKind::TagCreate, "ci", None).tag(t.as_str()).digest(mine.as_str());
            let done = match tx.set_tag(&r, &t, None, &mine, &actor()).await {
                Ok(()) => match tx.append_events(vec![event], SystemTime::now()).await {
                    Ok(()) => tx.commit().await,
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => return (true, mine),
                Err(MetaError::Conflict(_) | MetaError::NotFound(_)) => continue,
                Err(e) => panic!("creating {t}: {e:?} (a race must be a Conflict or NotFound)"),
            }
        }
        panic!("creating {t}: still conflicting after 20 attempts");
    }
    let tags: Vec<Tag> = (0..16).map(|i| Tag::parse(&format!("race-{i}")).unwrap()).collect();
    let mut tasks = Vec::new();
    for t in &tags {
        for (s, m) in [(a.clone(), &ma), (b.clone(), &mb)] {
            tasks.push(tokio::spawn(create(s, r.clone(), t.clone(), m.digest.clone())));
        }
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    for (t, pair) in tags.iter().zip(outcomes.chunks(2)) {
        assert_eq!(pair.iter().filter(|(won, _)| *won).count(), 1, "{t}: exactly one creator wins: {pair:?}");
        assert_eq!(pair[0].1, pair[1].1, "{t}: the loser sees the winner's digest");
        let history = a.tag_history(&r, t, None, 10).await.unwrap();
        assert_eq!(history.len(), 1, "{t}: one create, no overwrite: {history:?}");
        assert_eq!((history[0].action, history[0].to.as_ref()), (TagAction::Create, Some(&pair[0].1)));
        let now = a.manifest(&r, &Reference::Tag(t.clone())).await.unwrap().unwrap();
        assert_eq!(now.digest, pair[0].1);
    }
    let all = b.events(&EventFilter::default(), 1000).await.unwrap();
    assert_eq!(all.len(), tags.len(), "one ledger event per created tag");
    chain::verify(None, &all).expect("one unbroken chain");
}

fn d(n: u8) -> Digest {
    Digest::of(&[n])
}

fn repo() -> RepoName {
    RepoName::parse("team/app").unwrap()
}

fn actor() -> Actor {
    Actor { name: "ci".into(), address: Some("127.0.0.1".into()) }
}

async fn add_blob(s: &dyn MetadataStore, repo: &RepoName, n: u8) {
    let id = format!("u{n}");
    s.create_upload(repo, &id, Algorithm::Sha256, SystemTime::now()).await.unwrap();
    let blob = BlobRecord { digest: d(n), size: 1, location: BlobLocation { upload: id.clone(), segments: vec![] } };
    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    let (outcome, owner) = tx.commit_upload(&id, 0, &blob).await.unwrap();
    assert_eq!(outcome, CommitUpload::Created);
    let owner = owner.unwrap();
    tx.ensure_repository(&owner).await.unwrap();
    tx.link_blob(&owner, &d(n), SystemTime::now()).await.unwrap();
    tx.commit().await.unwrap();
}

/// `commit_upload` of a session that moved on reports its length as the transaction sees it,
/// and of a session that ended (here: committed by a transaction whose commit is still
/// pending, as with a racing closing PUT) reports none.
async fn a_commit_that_lost_its_upload_says_what_became_of_it(s: &dyn MetadataStore) {
    let r = repo();
    s.create_upload(&r, "moved", Algorithm::Sha256, SystemTime::now()).await.unwrap();
    let seg = crate::meta::Segment { name: "s1".into(), len: 5 };
    assert!(s.record_segment("moved", 0, &seg, b"state", SystemTime::now()).await.unwrap());
    assert!(
        !s.record_segment("moved", 0, &seg, b"state", SystemTime::now()).await.unwrap(),
        "a segment for an offset the session has passed is not recorded"
    );
    assert_eq!(s.upload(&r, "moved").await.unwrap().map(|u| u.len), Some(5));
    let blob = |n: u8, id: &str| BlobRecord {
        digest: d(n),
        size: 5,
        location: BlobLocation { upload: id.into(), segments: vec![] },
    };
    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    let (outcome, owner) = tx.commit_upload("moved", 0, &blob(40, "moved")).await.unwrap();
    assert_eq!((outcome, owner), (CommitUpload::UploadGone { len: Some(5) }, None), "a chunk moved it on");
    tx.rollback().await.unwrap();

    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    let (outcome, _) = tx.commit_upload("moved", 5, &blob(41, "moved")).await.unwrap();
    assert_eq!(outcome, CommitUpload::Created);
    let (outcome, owner) = tx.commit_upload("moved", 5, &blob(41, "moved")).await.unwrap();
    assert_eq!((outcome, owner), (CommitUpload::UploadGone { len: None }, None), "it ended in this transaction");
    tx.rollback().await.unwrap();
    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    let (outcome, _) = tx.commit_upload("never", 0, &blob(42, "never")).await.unwrap();
    assert_eq!(outcome, CommitUpload::UploadGone { len: None }, "an unknown session");
    tx.rollback().await.unwrap();
}

/// `commit_upload_and_link`: the first commit stores the blob, creates the session's
/// repository and links the blob there; a second session with the same bytes is a duplicate
/// (its objects recorded as garbage) linked into its own repository; a session that moved on
/// or ended is reported as `commit_upload` reports it, and nothing is linked.
async fn committing_and_linking_an_upload_in_one_call(s: &dyn MetadataStore) {
    let (a, b) = (RepoName::parse("one/a").unwrap(), RepoName::parse("one/b").unwrap());
    let record = |id: &str| BlobRecord {
        digest: d(50),
        size: 5,
        location: BlobLocation { upload: id.into(), segments: vec![crate::meta::Segment { name: "0".into(), len: 5 }] },
    };
    let seg = crate::meta::Segment { name: "0".into(), len: 5 };
    for (id, r) in [("first", &a), ("second", &b), ("third", &b), ("moved", &b)] {
        s.create_upload(r, id, Algorithm::Sha256, SystemTime::now()).await.unwrap();
        assert!(s.record_segment(id, 0, &seg, b"state", SystemTime::now()).await.unwrap());
    }
    let later = SystemTime::now() + Duration::from_secs(3600);
    let commit = |id: &'static str, len: u64| async move {
        let mut tx = s.begin(SystemTime::now()).await.unwrap();
        let out = tx.commit_upload_and_link(id, len, &record(id), later).await.unwrap();
        tx.commit().await.unwrap();
        out
    };
    assert_eq!(commit("first", 5).await, (CommitUpload::Created, Some((a.clone(), true))));
    assert!(s.blob(&a, &d(50)).await.unwrap().is_some_and(|b| b.location.upload == "first"));
    assert!(s.upload_garbage(10).await.unwrap().is_empty());
    assert_eq!(commit("second", 5).await, (CommitUpload::AlreadyStored, Some((b.clone(), true))));
    assert!(s.blob(&b, &d(50)).await.unwrap().is_some_and(|b| b.location.upload == "first"), "the stored copy");
    assert_eq!(s.upload_garbage(10).await.unwrap(), vec!["second".to_string()]);
    assert_eq!(commit("third", 5).await, (CommitUpload::AlreadyStored, Some((b.clone(), false))), "b exists now");
    assert!(s.upload(&b, "third").await.unwrap().is_none(), "the session ended");
    assert_eq!(commit("moved", 0).await, (CommitUpload::UploadGone { len: Some(5) }, None));
    assert_eq!(commit("never", 0).await, (CommitUpload::UploadGone { len: None }, None));
    assert!(s.upload(&b, "moved").await.unwrap().is_some(), "a session that moved on stays");
    // Linked and touched at `later`: GC's candidates before it do not include the blob.
    assert!(s.gc_link_candidates(later - Duration::from_secs(1), None, 10).await.unwrap().is_empty());
}

fn manifest(body: &str) -> ManifestRecord {
    let body = bytes::Bytes::from(body.to_string());
    ManifestRecord {
        digest: Digest::of(&body),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        body,
        artifact_type: None,
        subject: None,
        annotations: None,
    }
}

async fn references_are_checked_and_rows_restrict_deletes(s: &dyn MetadataStore) {
    let r = repo();
    for n in 1..=3 {
        add_blob(s, &r, n).await;
    }
    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    let mut wanted = vec![d(1), d(9), d(2)];
    wanted.sort();
    assert_eq!(tx.first_missing(&r, RefKind::Blob, &wanted).await.unwrap(), Some(d(9)));
    assert_eq!(tx.first_missing(&r, RefKind::Blob, &[d(1), d(2), d(3)]).await.unwrap(), None);
    let m = manifest("m1");
    assert!(tx.insert_manifest(&r, &m, &[d(1), d(2)], &[]).await.unwrap());
    assert!(!tx.insert_manifest(&r, &m, &[d(1), d(2)], &[]).await.unwrap(), "a second insert is a no-op");
    let index = manifest("index");
    assert!(tx.insert_manifest(&r, &index, &[], std::slice::from_ref(&m.digest)).await.unwrap());
    tx.set_tag(&r, &Tag::parse("v1").unwrap(), None, &index.digest, &actor()).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(s.parents(&r, &m.digest, 16).await.unwrap(), std::slice::from_ref(&index.digest), "the index lists m1");
    assert!(s.parents(&r, &index.digest, 16).await.unwrap().is_empty());
    assert!(s.parents(&RepoName::parse("elsewhere").unwrap(), &m.digest, 16).await.unwrap().is_empty());

    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    let h = tx.holder(&r, RefKind::Blob, &d(1)).await.unwrap().unwrap();
    assert_eq!((h.manifest, h.tag), (m.digest.clone(), Some(Tag::parse("v1").unwrap())), "tag via the index");
    assert!(tx.holder(&r, RefKind::Blob, &d(3)).await.unwrap().is_none());
    assert!(tx.unlink_blob(&r, &d(3), SystemTime::now()).await.unwrap());
    assert!(!tx.unlink_blob(&r, &d(3), SystemTime::now()).await.unwrap(), "already unlinked");
    assert!(tx.unlink_blob(&r, &d(1), SystemTime::now()).await.is_err(), "the schema refuses to orphan a layer");
    tx.rollback().await.unwrap();
    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    assert!(tx.remove_manifest(&r, &m.digest).await.is_err(), "the schema refuses to orphan an index child");
    tx.rollback().await.unwrap();
    assert!(s.blob(&r, &d(1)).await.unwrap().is_some());
    assert!(s.manifest(&r, &Reference::Digest(m.digest.clone())).await.unwrap().is_some());

    // The repository and the manifest in one call: both created once, children linked, and
    // the tag asked about read as it stands.
    let fresh = RepoName::parse("fresh/repo").unwrap();
    let (child, index2) = (manifest("child"), manifest("index2"));
    let latest = Tag::parse("latest").unwrap();
    let did = |repository_created, inserted, tag| ManifestInsert { repository_created, inserted, tag };
    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    let first = tx.ensure_repository_and_insert_manifest(&fresh, &child, &[], &[], Some(&latest)).await;
    assert_eq!(first.unwrap(), did(true, true, None), "a new repository, manifest and tag");
    tx.set_tag(&fresh, &latest, None, &child.digest, &actor()).await.unwrap();
    let again = tx.ensure_repository_and_insert_manifest(&fresh, &child, &[], &[], Some(&latest)).await;
    assert_eq!(again.unwrap(), did(false, false, Some(child.digest.clone())), "the tag as this transaction set it");
    let linked =
        tx.ensure_repository_and_insert_manifest(&fresh, &index2, &[], std::slice::from_ref(&child.digest), None);
    assert_eq!(linked.await.unwrap(), did(false, true, None), "no tag asked about");
    tx.commit().await.unwrap();
    assert_eq!(s.parents(&fresh, &child.digest, 16).await.unwrap(), std::slice::from_ref(&index2.digest));

    // A blob or child the repository lacks is refused by the schema (the service relies on
    // it instead of looking first); rolled back, nothing of the manifest is left.
    let (no_blob, no_child) = (manifest("lacks a blob"), manifest("lacks a child"));
    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    let refused = tx.insert_manifest(&r, &no_blob, &[d(1), d(9)], &[]).await;
    assert!(matches!(refused, Err(MetaError::NotFound(_))), "a missing blob: {refused:?}");
    tx.rollback().await.unwrap();
    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    let refused = tx.insert_manifest(&r, &no_child, &[], &[m.digest.clone(), d(9)]).await;
    assert!(matches!(refused, Err(MetaError::NotFound(_))), "a missing child: {refused:?}");
    tx.rollback().await.unwrap();
    for gone in [&no_blob, &no_child] {
        assert!(s.manifest(&r, &Reference::Digest(gone.digest.clone())).await.unwrap().is_none());
    }
    assert_eq!(s.parents(&r, &m.digest, 16).await.unwrap(), std::slice::from_ref(&index.digest), "no stray child row");
}

async fn a_rolled_back_transaction_leaves_nothing(s: &dyn MetadataStore) {
    let r = repo();
    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    assert!(tx.ensure_repository(&r).await.unwrap());
    let m = manifest("x");
    tx.insert_manifest(&r, &m, &[], &[]).await.unwrap();
    tx.append_events(vec![NewEvent::new(EventKind::ManifestPut, "ci", None)], SystemTime::now()).await.unwrap();
    tx.rollback().await.unwrap();
    assert!(s.manifest(&r, &Reference::Digest(m.digest)).await.unwrap().is_none());
    assert_eq!(s.ledger_head().await.unwrap(), None);
    // Dropping a transaction without commit rolls back too, and the next one works.
    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    tx.ensure_repository(&r).await.unwrap();
    drop(tx);
    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    assert!(tx.ensure_repository(&r).await.unwrap(), "the dropped transaction created nothing");
    tx.commit().await.unwrap();
}

async fn tags_move_and_are_recorded(s: &dyn MetadataStore) {
    let r = repo();
    let t = Tag::parse("prod").unwrap();
    let (a, b) = (manifest("a"), manifest("b"));
    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    tx.ensure_repository(&r).await.unwrap();
    tx.insert_manifest(&r, &a, &[], &[]).await.unwrap();
    tx.insert_manifest(&r, &b, &[], &[]).await.unwrap();
    assert_eq!(tx.tag_for_update(&r, &t).await.unwrap(), None);
    tx.set_tag(&r, &t, None, &a.digest, &actor()).await.unwrap();
    tx.set_tag(&r, &t, Some(&a.digest), &b.digest, &actor()).await.unwrap();
    assert_eq!(tx.tag_for_update(&r, &t).await.unwrap(), Some(b.digest.clone()));
    assert_eq!(tx.tags_of(&r, &b.digest).await.unwrap(), vec![t.clone()]);
    tx.remove_tag(&r, &t, &b.digest, &actor()).await.unwrap();
    tx.commit().await.unwrap();
    let history = s.tag_history(&r, &t, None, 10).await.unwrap();
    let actions: Vec<TagAction> = history.iter().map(|e| e.action).collect();
    assert_eq!(actions, vec![TagAction::Delete, TagAction::Move, TagAction::Create]);
    assert_eq!(history[1].from, Some(a.digest.clone()));
    assert_eq!(s.tags(&r).await.unwrap(), Vec::<String>::new());
    // What is already gone is NotFound (on a backend with row locks, another node removed
    // it after this transaction read it), and nothing of the attempt stays.
    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    let gone = tx.remove_tag(&r, &t, &b.digest, &actor()).await;
    assert!(matches!(gone, Err(MetaError::NotFound(_))), "{gone:?}");
    let gone = tx.remove_manifest(&r, &manifest("never").digest).await;
    assert!(matches!(gone, Err(MetaError::NotFound(_))), "{gone:?}");
    tx.rollback().await.unwrap();
    assert_eq!(s.tag_history(&r, &t, None, 10).await.unwrap().len(), 3);
}

async fn concurrent_writers_build_one_valid_chain(s: Arc<dyn MetadataStore>) {
    let writers = 32;
    let per_writer = 5;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let mut tx = s.begin(SystemTime::now()).await.unwrap();
                let events = vec![
                    NewEvent::new(EventKind::TagCreate, &format!("w{w}"), None).tag(format!("t{i}")),
                    NewEvent::new(EventKind::TagMove, &format!("w{w}"), None).tag(format!("t{i}")),
                ];
                tx.append_events(events, SystemTime::now()).await.unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = s.events(&EventFilter::default(), 10_000).await.unwrap();
    assert_eq!(all.len(), writers * per_writer * 2);
    let head = chain::verify(None, &all).expect("one unbroken chain");
    assert_eq!(head, s.ledger_head().await.unwrap());
    // The two events of one transaction are adjacent.
    for pair in all.chunks(2) {
        assert_eq!((pair[0].actor.as_str(), pair[0].action.as_str()), (pair[1].actor.as_str(), "tag.create"));
    }
}

async fn ledger_filters_and_pulls(s: &dyn MetadataStore) {
    let r = repo();
    let m = manifest("pulled");
    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    tx.ensure_repository(&r).await.unwrap();
    tx.insert_manifest(&r, &m, &[], &[]).await.unwrap();
    let events = vec![
        NewEvent::new(EventKind::TagCreate, "alice", None).repository("team/app").tag("v1").digest(m.digest.as_str()),
        NewEvent::new(EventKind::TagMove, "bob", None)
            .repository("team/app")
            .tag("v1")
            .digest("sha256:other")
            .previous(Some(m.digest.as_str())),
        NewEvent::new(EventKind::TokenCreate, "cli", None),
    ];
    tx.append_events(events, SystemTime::now()).await.unwrap();
    tx.commit().await.unwrap();
    let by = |f: EventFilter| async move { s.events(&f, 100).await.unwrap().iter().map(|e| e.seq).collect::<Vec<_>>() };
    assert_eq!(by(EventFilter { digest: Some(m.digest.to_string()), ..Default::default() }).await, vec![1, 2]);
    assert_eq!(by(EventFilter { actor: Some("bob".into()), ..Default::default() }).await, vec![2]);
    assert_eq!(by(EventFilter { action: Some("token.create".into()), ..Default::default() }).await, vec![3]);
    assert_eq!(by(EventFilter { after: Some(1), until: Some(2), ..Default::default() }).await, vec![2]);
    assert_eq!(by(EventFilter { repository: Some("team/app".into()), ..Default::default() }).await, vec![1, 2]);

    let now = SystemTime::now();
    s.add_pulls(&[(r.clone(), m.digest.clone(), 3, now), (r.clone(), d(77), 1, now)]).await.unwrap();
    s.add_pulls(&[(r.clone(), m.digest.clone(), 2, now)]).await.unwrap();
    let stats = s.pulls(&r, &m.digest).await.unwrap().unwrap();
    assert_eq!(stats.count, 5);
    assert_eq!(s.pulls(&r, &d(77)).await.unwrap(), None, "a manifest that does not exist is skipped");
}

/// Filters by repository and digest over more events than one lookup batch (SQLite keys the
/// ledger in batches behind the chain and scans the tail): every filtered read, paged with
/// `after`, returns exactly the events a plain filter over the whole ledger picks, in order.
async fn ledger_filters_over_thousands_of_events(s: &dyn MetadataStore) {
    let repos = ["team/a", "team/b", "team/c"];
    let digest = |i: usize| format!("sha256:{:064x}", i % 97);
    let event = |i: usize| {
        NewEvent::new(EventKind::TagMove, "ci", None)
            .repository(repos[i % 3])
            .tag(format!("t{i}"))
            .digest(digest(i))
            .previous(i.is_multiple_of(5).then(|| digest(i + 1)))
    };
    // One transaction of 2,500 events, then 40 single-event ones (a tail behind any batch).
    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    tx.append_events((0..2500).map(event).collect(), SystemTime::now()).await.unwrap();
    tx.commit().await.unwrap();
    for i in 2500..2540 {
        let mut tx = s.begin(SystemTime::now()).await.unwrap();
        tx.append_events(vec![event(i)], SystemTime::now()).await.unwrap();
        tx.commit().await.unwrap();
    }
    let all = s.events(&EventFilter::default(), 10_000).await.unwrap();
    assert_eq!(all.len(), 2540);
    let paged = |f: EventFilter| async move {
        let mut out = Vec::new();
        loop {
            let page = s.events(&EventFilter { after: out.last().copied(), ..f.clone() }, 300).await.unwrap();
            if page.is_empty() {
                return out;
            }
            out.extend(page.iter().map(|e| e.seq));
        }
    };
    for r in repos {
        let want: Vec<i64> = all.iter().filter(|e| e.repository.as_deref() == Some(r)).map(|e| e.seq).collect();
        assert_eq!(paged(EventFilter { repository: Some(r.into()), ..Default::default() }).await, want, "{r}");
    }
    for i in [0, 1, 5, 96] {
        let d = digest(i);
        let has =
            |e: &&crate::audit::Event| e.digest.as_deref() == Some(&d) || e.previous_digest.as_deref() == Some(&d);
        let want: Vec<i64> = all.iter().filter(has).map(|e| e.seq).collect();
        assert!(want.len() > 20 && *want.last().unwrap() > 2500, "the case covers keyed and tail events");
        assert_eq!(paged(EventFilter { digest: Some(d.clone()), ..Default::default() }).await, want, "{d}");
        let both = EventFilter { digest: Some(d.clone()), repository: Some("team/b".into()), ..Default::default() };
        let want: Vec<i64> =
            all.iter().filter(has).filter(|e| e.repository.as_deref() == Some("team/b")).map(|e| e.seq).collect();
        assert_eq!(paged(both).await, want, "{d} in team/b");
    }
}

/// Two repositories: `team/app` has a manifest using d(1) and d(2) and an unused link to d(3);
/// `team/other` links d(1) without a manifest. Returns the manifest.
async fn two_repositories(s: &dyn MetadataStore) -> ManifestRecord {
    let (r, other) = (repo(), RepoName::parse("team/other").unwrap());
    for n in 1..=3 {
        add_blob(s, &r, n).await;
    }
    let m = manifest("uses 1 and 2");
    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    tx.insert_manifest(&r, &m, &[d(1), d(2)], &[]).await.unwrap();
    tx.ensure_repository(&other).await.unwrap();
    tx.link_blob(&other, &d(1), SystemTime::now()).await.unwrap();
    tx.commit().await.unwrap();
    m
}

async fn gc_unlinks_what_no_manifest_references_and_keeps_the_mark(s: &dyn MetadataStore) {
    let hour = Duration::from_secs(3600);
    let (r, other) = (repo(), RepoName::parse("team/other").unwrap());
    two_repositories(s).await;
    let early = SystemTime::now() - hour;
    let cutoff = SystemTime::now() + hour;
    assert!(s.gc_link_candidates(early, None, 10).await.unwrap().is_empty(), "touched after the cutoff");
    let links = s.gc_link_candidates(cutoff, None, 10).await.unwrap();
    let pairs: Vec<(String, Digest)> = links.iter().map(|l| (l.repo.to_string(), l.digest.clone())).collect();
    assert_eq!(pairs, vec![("team/app".to_string(), d(3)), ("team/other".to_string(), d(1))]);
    let rest = s.gc_link_candidates(cutoff, Some(("team/app", &d(3))), 10).await.unwrap();
    assert_eq!(rest.len(), 1, "paged after (repository, digest)");
    let free: Vec<Digest> = s.gc_unreferenced(cutoff, None, 10).await.unwrap().into_iter().map(|b| b.digest).collect();
    assert_eq!(free, vec![d(3)], "d(1) and d(2) are referenced in team/app");

    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    assert!(!tx.unlink_unreferenced(&r, &d(1), cutoff).await.unwrap(), "a manifest references it");
    assert!(!tx.unlink_unreferenced(&r, &d(3), early).await.unwrap(), "touched since the cutoff");
    assert!(tx.unlink_unreferenced(&r, &d(3), cutoff).await.unwrap());
    assert!(tx.unlink_unreferenced(&other, &d(1), cutoff).await.unwrap());
    assert!(!tx.unlink_unreferenced(&r, &d(3), cutoff).await.unwrap(), "already unlinked");
    tx.commit().await.unwrap();
    let gone: Vec<Digest> = s.gc_candidates(cutoff, None, 10).await.unwrap().into_iter().map(|b| b.digest).collect();
    assert_eq!(gone, vec![d(3)], "the unlink kept the old mark, so the same run may collect it");
    assert!(s.blob(&r, &d(1)).await.unwrap().is_some(), "still linked where it is used");

    let later = SystemTime::now() + hour;
    assert!(!s.touch_linked_blob(&r, &d(3), later).await.unwrap(), "no link, no touch");
    assert!(s.touch_linked_blob(&r, &d(2), later).await.unwrap());
    let (_, mark) = s.blob_with_mark(&r, &d(2)).await.unwrap().unwrap();
    assert_eq!(mark, from_millis(millis(later)));
    assert!(s.blob_with_mark(&other, &d(1)).await.unwrap().is_none());
}

async fn storage_figures_count_each_blob_once(s: &dyn MetadataStore) {
    let m = two_repositories(s).await;
    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    tx.set_tag(&repo(), &Tag::parse("v1").unwrap(), None, &m.digest, &actor()).await.unwrap();
    tx.commit().await.unwrap();
    let totals = s.storage_totals().await.unwrap();
    let want = StorageTotals {
        repositories: 2,
        tag_count: 1,
        manifest_count: 1,
        blob_count: 3,
        blob_bytes: 3,
        manifest_bytes: m.body.len() as u64,
        unreferenced_bytes: 1,
    };
    assert_eq!(totals, want, "d(1), linked to both repositories, counts once");
    let sums = s.repository_summaries(None, 10).await.unwrap();
    let sizes: Vec<(String, u64, u64, u64)> =
        sums.iter().map(|r| (r.name.clone(), r.tag_count, r.manifest_count, r.size)).collect();
    assert_eq!(
        sizes,
        vec![("team/app".into(), 1, 1, m.body.len() as u64 + 3), ("team/other".into(), 0, 0, 1)],
        "each repository counts its linked blobs once, plus its manifests' bodies"
    );
}

async fn retention_reads_one_repository(s: &dyn MetadataStore) {
    use std::time::Duration;
    let r = repo();
    let other = RepoName::parse("team/other").unwrap();
    add_blob(s, &r, 1).await;
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let (a, b, mut sig) = (manifest("a"), manifest("b"), manifest("sig"));
    sig.subject = Some(a.digest.clone());
    let idx = manifest("idx");
    let prod = Tag::parse("prod").unwrap();
    let mut tx = s.begin(t0).await.unwrap();
    tx.ensure_repository(&r).await.unwrap();
    tx.ensure_repository(&other).await.unwrap();
    tx.insert_manifest(&r, &a, &[d(1)], &[]).await.unwrap();
    tx.insert_manifest(&r, &b, &[], &[]).await.unwrap();
    tx.insert_manifest(&r, &sig, &[], &[]).await.unwrap();
    tx.insert_manifest(&r, &idx, &[], std::slice::from_ref(&a.digest)).await.unwrap();
    tx.insert_manifest(&other, &manifest("elsewhere"), &[], &[]).await.unwrap();
    tx.set_tag(&r, &prod, None, &a.digest, &actor()).await.unwrap();
    tx.commit().await.unwrap();
    let t1 = t0 + Duration::from_secs(60);
    let mut tx = s.begin(t1).await.unwrap();
    tx.set_tag(&r, &prod, Some(&a.digest), &b.digest, &actor()).await.unwrap();
    tx.set_tag(&r, &Tag::parse("old").unwrap(), None, &b.digest, &actor()).await.unwrap();
    tx.remove_tag(&r, &Tag::parse("old").unwrap(), &b.digest, &actor()).await.unwrap();
    tx.commit().await.unwrap();
    let t2 = t1 + Duration::from_secs(60);
    let mut tx = s.begin(t2).await.unwrap();
    tx.set_tag(&r, &prod, Some(&b.digest), &a.digest, &actor()).await.unwrap();
    // Distinct digests, newest first: a (now), b.
    assert_eq!(tx.tag_targets(&r, &prod, 5).await.unwrap(), vec![a.digest.clone(), b.digest.clone()]);
    assert_eq!(tx.tag_targets(&r, &prod, 1).await.unwrap(), vec![a.digest.clone()]);
    let locked = tx.retention_snapshot(&r).await.unwrap();
    tx.commit().await.unwrap();
    s.add_pulls(&[(r.clone(), b.digest.clone(), 2, t2)]).await.unwrap();

    let snap = s.retention_snapshot(&r).await.unwrap();
    assert_eq!(snap.tags, vec![(prod.clone(), a.digest.clone(), t2)]);
    assert_eq!(snap.history.len(), 5, "{:?}", snap.history);
    assert_eq!(snap.history[0].to, Some(a.digest.clone()), "newest first");
    assert_eq!((snap.history[1].tag.as_str(), snap.history[1].to.as_ref()), ("old", None));
    let mut digests: Vec<Digest> = vec![a.digest.clone(), b.digest.clone(), sig.digest.clone(), idx.digest.clone()];
    digests.sort();
    assert_eq!(snap.manifests.iter().map(|m| m.digest.clone()).collect::<Vec<_>>(), digests, "only this repository");
    let stored_sig = snap.manifests.iter().find(|m| m.digest == sig.digest).unwrap();
    assert_eq!((stored_sig.subject.as_ref(), stored_sig.size, stored_sig.pushed_at), (Some(&a.digest), 3, t0));
    assert_eq!(snap.children, vec![(idx.digest.clone(), a.digest.clone())]);
    assert_eq!(snap.blobs, vec![(a.digest.clone(), d(1), 1)]);
    assert_eq!(snap.pulls, vec![(b.digest.clone(), crate::meta::PullStats { count: 2, last_pulled: t2 })]);
    assert_eq!(locked.pulls, vec![], "the locked read saw the state before the pulls");
    assert_eq!(locked.tags, snap.tags);
}

/// How one of the concurrent writers of [`concurrent_commits_rollbacks_refusals_and_drops`]
/// ends its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Commit,
    Rollback,
    /// Rolled back, then the refusal ledgered in a second transaction (as the service does).
    Refuse,
    /// Dropped without commit or rollback.
    Drop,
}

/// 48 writers at once (a backend that batches commits batches them): each stores a manifest
/// and ledgers it, then commits, rolls back, rolls back and ledgers a refusal, or drops its
/// transaction. Exactly the committed manifests are visible, the ledger holds exactly the
/// committed events and the refusals, in one unbroken chain, and each transaction's events
/// are adjacent.
async fn concurrent_commits_rollbacks_refusals_and_drops(s: Arc<dyn MetadataStore>) {
    let r = repo();
    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    tx.ensure_repository(&r).await.unwrap();
    tx.commit().await.unwrap();
    let endings = [Ending::Commit, Ending::Rollback, Ending::Commit, Ending::Refuse, Ending::Commit, Ending::Drop];
    let writers: Vec<(usize, Ending)> = (0..48).map(|i| (i, endings[i % endings.len()])).collect();
    let mut tasks = Vec::new();
    for &(i, ending) in &writers {
        let (s, r) = (s.clone(), r.clone());
        tasks.push(tokio::spawn(async move {
            let m = manifest(&format!("writer {i}"));
            let mut tx = s.begin(SystemTime::now()).await.unwrap();
            assert!(tx.insert_manifest(&r, &m, &[], &[]).await.unwrap());
            let who = format!("w{i}");
            let events = vec![
                NewEvent::new(EventKind::ManifestPut, &who, None).repository(r.as_str()).digest(m.digest.as_str()),
                NewEvent::new(EventKind::TagCreate, &who, None).repository(r.as_str()).tag(format!("t{i}")),
            ];
            tx.append_events(events, SystemTime::now()).await.unwrap();
            match ending {
                Ending::Commit => tx.commit().await.unwrap(),
                Ending::Rollback => tx.rollback().await.unwrap(),
                Ending::Refuse => {
                    tx.rollback().await.unwrap();
                    let mut tx = s.begin(SystemTime::now()).await.unwrap();
                    let refused = NewEvent::new(EventKind::WriteRefuse, &who, None).digest(m.digest.as_str());
                    tx.append_events(vec![refused], SystemTime::now()).await.unwrap();
                    tx.commit().await.unwrap();
                }
                Ending::Drop => drop(tx),
            }
            m.digest
        }));
    }
    let mut digests = Vec::new();
    for t in tasks {
        digests.push(t.await.unwrap());
    }
    for (&(i, ending), d) in writers.iter().zip(&digests) {
        let found = s.manifest(&r, &Reference::Digest(d.clone())).await.unwrap().is_some();
        assert_eq!(found, ending == Ending::Commit, "writer {i} ({ending:?}): its manifest is visible iff committed");
    }
    let all = s.events(&EventFilter::default(), 1000).await.unwrap();
    let head = chain::verify(None, &all).expect("one unbroken chain");
    assert_eq!(head, s.ledger_head().await.unwrap());
    let count = |e: Ending| writers.iter().filter(|(_, x)| *x == e).count();
    assert_eq!(all.len(), 2 * count(Ending::Commit) + count(Ending::Refuse), "committed events and refusals only");
    let mut i = 0;
    while i < all.len() {
        let who = all[i].actor.clone();
        match writers[who[1..].parse::<usize>().unwrap()].1 {
            Ending::Commit => {
                assert_eq!((all[i].action.as_str(), all[i + 1].action.as_str()), ("manifest.put", "tag.create"));
                assert_eq!(all[i + 1].actor, who, "a transaction's events are adjacent");
                i += 2;
            }
            Ending::Refuse => {
                assert_eq!(all[i].action, "write.refuse");
                i += 1;
            }
            other => panic!("seq {}: an event of a transaction that ended by {other:?}", all[i].seq),
        }
    }
}

/// A request whose future is dropped mid-transaction (a client disconnect): its transaction
/// leaves nothing behind, and the next one begins and commits.
async fn an_abandoned_transaction_blocks_nothing(s: Arc<dyn MetadataStore>) {
    let r = repo();
    let (begun, wait) = tokio::sync::oneshot::channel();
    let stuck = {
        let (s, r) = (s.clone(), r.clone());
        tokio::spawn(async move {
            let mut tx = s.begin(SystemTime::now()).await.unwrap();
            tx.ensure_repository(&r).await.unwrap();
            tx.insert_manifest(&r, &manifest("abandoned"), &[], &[]).await.unwrap();
            tx.append_events(vec![NewEvent::new(EventKind::ManifestPut, "gone", None)], SystemTime::now())
                .await
                .unwrap();
            begun.send(()).unwrap();
            std::future::pending::<()>().await;
        })
    };
    wait.await.unwrap();
    stuck.abort();
    assert!(stuck.await.unwrap_err().is_cancelled());
    let next = async {
        let mut tx = s.begin(SystemTime::now()).await.unwrap();
        assert!(tx.ensure_repository(&r).await.unwrap(), "the abandoned transaction created nothing");
        tx.append_events(vec![NewEvent::new(EventKind::RepositoryCreate, "next", None)], SystemTime::now())
            .await
            .unwrap();
        tx.commit().await.unwrap();
    };
    // Not a timing check: a bound so that a stranded write connection fails instead of hanging.
    tokio::time::timeout(Duration::from_secs(60), next).await.expect("the next transaction is not blocked");
    assert!(s.manifest(&r, &Reference::Digest(manifest("abandoned").digest)).await.unwrap().is_none());
    let all = s.events(&EventFilter::default(), 10).await.unwrap();
    assert_eq!(all.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>(), vec!["next"]);
    chain::verify(None, &all).expect("one unbroken chain");
}
