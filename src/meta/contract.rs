//! The contract every `MetadataStore` backend passes (STYLE §10, distribution's driver
//! testsuites): each case gets a fresh store from the factory. SQLite runs it in
//! `sqlite.rs`; a second backend calls [`run_all`] with its own factory.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use crate::audit::{EventKind, NewEvent, chain};
use crate::meta::{
    Actor, BlobLocation, BlobRecord, CommitUpload, EventFilter, ManifestRecord, MetadataStore, RefKind, TagAction,
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
    retention_reads_one_repository(&*s).await;
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
