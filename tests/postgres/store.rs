//! The `MetadataStore` contract on PostgreSQL, and races between two stores on one database
//! (two nodes).

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn::meta::{Actor, BlobLocation, BlobRecord, ManifestRecord, MetaError, MetadataStore, PostgresStore};
use cairn::oci::{Algorithm, Digest, RepoName, Tag};

use crate::db::TempDb;
use crate::{PgTest, block_on};

pub const TESTS: &[PgTest] = &[
    PgTest { name: "contract_suite", run: contract_suite },
    PgTest { name: "two_handles_append_to_one_chain", run: two_handles_append_to_one_chain },
    PgTest { name: "two_handles_create_one_tag", run: two_handles_create_one_tag },
    PgTest { name: "a_racing_tag_create_is_a_conflict", run: a_racing_tag_create_is_a_conflict },
    PgTest { name: "a_newer_schema_is_refused", run: a_newer_schema_is_refused },
    PgTest {
        name: "a_gc_unlink_and_a_manifest_put_meet_in_the_link_lock",
        run: a_gc_unlink_and_a_manifest_put_meet_in_the_link_lock,
    },
];

async fn store(url: &str) -> Arc<PostgresStore> {
    Arc::new(PostgresStore::open(url).await.unwrap_or_else(|e| panic!("open {url}: {e}")))
}

/// The whole suite, each case on a database of its own.
fn contract_suite(admin: &str) {
    block_on(cairn::meta::contract::run_all(|| async {
        let db = TempDb::create(admin).await;
        let s: Arc<dyn MetadataStore> = store(&db.url).await;
        (s, Box::new(db) as Box<dyn Any + Send>)
    }));
}

fn two_handles_append_to_one_chain(admin: &str) {
    block_on(async {
        let db = TempDb::create(admin).await;
        let (a, b) = (store(&db.url).await, store(&db.url).await);
        cairn::meta::contract::two_handles_append_to_one_chain(a, b).await;
    });
}

fn two_handles_create_one_tag(admin: &str) {
    block_on(async {
        let db = TempDb::create(admin).await;
        let (a, b) = (store(&db.url).await, store(&db.url).await);
        cairn::meta::contract::two_handles_create_one_tag(a, b).await;
    });
}

/// The race made certain: two nodes both find a tag missing; the first creates it and
/// commits; the second's create is a `Conflict` (retried by the service), never an overwrite.
fn a_racing_tag_create_is_a_conflict(admin: &str) {
    block_on(async {
        let db = TempDb::create(admin).await;
        let (a, b) = (store(&db.url).await, store(&db.url).await);
        let r = RepoName::parse("team/app").unwrap();
        let t = Tag::parse("v1").unwrap();
        let m = |body: &str| ManifestRecord {
            digest: Digest::of(body.as_bytes()),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            body: bytes::Bytes::from(body.to_string()),
            artifact_type: None,
            subject: None,
            annotations: None,
        };
        let (ma, mb) = (m("a"), m("b"));
        let actor = Actor { name: "ci".into(), address: None };
        let mut tx = a.begin(SystemTime::now()).await.unwrap();
        tx.ensure_repository(&r).await.unwrap();
        tx.insert_manifest(&r, &ma, &[], &[]).await.unwrap();
        tx.insert_manifest(&r, &mb, &[], &[]).await.unwrap();
        tx.commit().await.unwrap();

        let mut ta = a.begin(SystemTime::now()).await.unwrap();
        let mut tb = b.begin(SystemTime::now()).await.unwrap();
        assert_eq!(ta.tag_for_update(&r, &t).await.unwrap(), None);
        assert_eq!(tb.tag_for_update(&r, &t).await.unwrap(), None, "nothing to lock yet");
        ta.set_tag(&r, &t, None, &ma.digest, &actor).await.unwrap();
        // B's insert waits for A's uncommitted row, then fails once A commits.
        let (r2, t2, mbd, actor2) = (r.clone(), t.clone(), mb.digest.clone(), actor.clone());
        let racing = tokio::spawn(async move {
            let res = tb.set_tag(&r2, &t2, None, &mbd, &actor2).await;
            drop(tb);
            res
        });
        ta.commit().await.unwrap();
        let lost = racing.await.unwrap();
        assert!(matches!(lost, Err(MetaError::Conflict(_))), "{lost:?}");
        let now = a.manifest(&r, &cairn::oci::Reference::Tag(t.clone())).await.unwrap().unwrap();
        assert_eq!(now.digest, ma.digest, "the first create stands");
        assert_eq!(b.tag_history(&r, &t, None, 10).await.unwrap().len(), 1);
        // Moving it from a digest it no longer has is NotFound, not an overwrite.
        let mut tx = b.begin(SystemTime::now()).await.unwrap();
        let stale = tx.set_tag(&r, &t, Some(&mb.digest), &ma.digest, &actor).await;
        assert!(matches!(stale, Err(MetaError::NotFound(_))), "{stale:?}");
    });
}

/// A database migrated by a newer Cairn (a migration this build does not know) is refused,
/// and the message says why.
fn a_newer_schema_is_refused(admin: &str) {
    block_on(async {
        let db = TempDb::create(admin).await;
        drop(store(&db.url).await);
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (9999, 'from the future', true, '\\x00', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        let refused = PostgresStore::open(&db.url).await.err().expect("a newer schema is refused");
        let msg = refused.to_string();
        assert!(matches!(refused, MetaError::Unusable(_)), "{refused:?}");
        assert!(msg.contains("schema version 9999") && msg.contains("newer than this Cairn"), "{msg}");
    });
}

/// GC stage 1 against a manifest PUT on another node, both orders made certain: an unlink that
/// comes while a PUT referencing the blob is uncommitted waits for it and then keeps the link;
/// a PUT that comes while an unlink is uncommitted waits and then fails (`Conflict`, retried
/// by the service, which then finds the blob unknown). Never a manifest without its blob.
fn a_gc_unlink_and_a_manifest_put_meet_in_the_link_lock(admin: &str) {
    block_on(async {
        let db = TempDb::create(admin).await;
        let (a, b) = (store(&db.url).await, store(&db.url).await);
        let r = RepoName::parse("team/app").unwrap();
        let layer = Digest::of(b"layer");
        a.create_upload(&r, "u1", Algorithm::Sha256, SystemTime::now()).await.unwrap();
        let blob = BlobRecord {
            digest: layer.clone(),
            size: 5,
            location: BlobLocation { upload: "u1".into(), segments: vec![] },
        };
        let mut tx = a.begin(SystemTime::now()).await.unwrap();
        tx.commit_upload("u1", 0, &blob).await.unwrap();
        tx.ensure_repository(&r).await.unwrap();
        tx.link_blob(&r, &layer, SystemTime::now()).await.unwrap();
        tx.commit().await.unwrap();
        let cutoff = SystemTime::now() + Duration::from_secs(3600);
        let m = |body: &str| ManifestRecord {
            digest: Digest::of(body.as_bytes()),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            body: bytes::Bytes::from(body.to_string()),
            artifact_type: None,
            subject: None,
            annotations: None,
        };

        // The PUT first: the unlink waits for it, then sees the reference.
        let mut put = a.begin(SystemTime::now()).await.unwrap();
        assert!(put.insert_manifest(&r, &m("uses the layer"), std::slice::from_ref(&layer), &[]).await.unwrap());
        let (b2, r2, l2) = (b.clone(), r.clone(), layer.clone());
        let gc = tokio::spawn(async move {
            let mut tx = b2.begin(SystemTime::now()).await.unwrap();
            let unlinked = tx.unlink_unreferenced(&r2, &l2, cutoff).await;
            tx.commit().await.unwrap();
            unlinked
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!gc.is_finished(), "the unlink waits for the uncommitted manifest");
        put.commit().await.unwrap();
        assert!(!gc.await.unwrap().unwrap(), "the unlink sees the committed reference and keeps the link");
        assert!(a.blob(&r, &layer).await.unwrap().is_some());

        // The unlink first (after the manifest is gone): a PUT referencing the blob waits, then fails.
        let mut tx = a.begin(SystemTime::now()).await.unwrap();
        tx.remove_manifest(&r, &m("uses the layer").digest).await.unwrap();
        tx.commit().await.unwrap();
        let mut gc = b.begin(SystemTime::now()).await.unwrap();
        assert!(gc.unlink_unreferenced(&r, &layer, cutoff).await.unwrap());
        let (a2, r2, l2) = (a.clone(), r.clone(), layer.clone());
        let put = tokio::spawn(async move {
            let mut tx = a2.begin(SystemTime::now()).await.unwrap();
            tx.insert_manifest(&r2, &m("uses it again"), std::slice::from_ref(&l2), &[]).await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!put.is_finished(), "the PUT waits for the uncommitted unlink");
        gc.commit().await.unwrap();
        let lost = put.await.unwrap();
        // The foreign key refuses the reference: `NotFound`, after which the service looks
        // up which reference is missing and answers MANIFEST_BLOB_UNKNOWN.
        assert!(matches!(lost, Err(MetaError::NotFound(_))), "{lost:?}");
        assert!(a.blob(&r, &layer).await.unwrap().is_none(), "unlinked");
    });
}
