//! Group commit on SQLite (`group.rs`): a pending member is not acknowledged before its
//! group's `COMMIT`, a failed `COMMIT` fails every member and leaves nothing, and dropped
//! transactions, dropped `begin`s and dropped commits strand nobody. The group is held open
//! by a second transaction that waits for its turn (no sleeps, no timing).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::group::Limits;
use super::{SqliteStore, millis, tx};
use crate::audit::{EventKind, NewEvent, chain};
use crate::meta::{EventFilter, MetaError, MetaTx, MetadataStore};
use crate::oci::RepoName;

/// A store whose groups never close for age (so a test decides when a group ends).
async fn store() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let limits = Limits { members: 64, age: Duration::from_secs(3600) };
    (dir, Arc::new(SqliteStore::open_with(&url, limits).await.unwrap()))
}

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).unwrap()
}

fn event(who: &str) -> Vec<NewEvent> {
    vec![NewEvent::new(EventKind::RepositoryCreate, who, None).repository(who)]
}

/// Begins a transaction that creates repository `name` and ledgers it.
async fn member(s: &SqliteStore, name: &str) -> Box<dyn MetaTx> {
    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    assert!(tx.ensure_repository(&repo(name)).await.unwrap());
    tx.append_events(event(name), SystemTime::now()).await.unwrap();
    tx
}

/// Like [`member`], plus a row that breaks a deferred foreign key, which SQLite checks only
/// at `COMMIT`: the group this member joins fails to commit (as on a full disk).
async fn doomed_member(s: &SqliteStore, name: &str) -> tx::SqliteTx {
    let mut a = tx::SqliteTx { tx: s.group.begin().await.unwrap(), now: millis(SystemTime::now()), events: Vec::new() };
    assert!(a.ensure_repository(&repo(name)).await.unwrap());
    a.append_events(event(name), SystemTime::now()).await.unwrap();
    sqlx::raw_sql(
        "PRAGMA defer_foreign_keys = ON;
         INSERT INTO repo_blobs (repo, digest, created_at) VALUES ('ghost', 'sha256:none', 0)",
    )
    .execute(&mut *a.tx)
    .await
    .unwrap();
    a
}

/// Starts a `begin` in a task and returns once it waits for its turn.
async fn waiting_begin(s: &Arc<SqliteStore>) -> tokio::task::JoinHandle<Result<Box<dyn MetaTx>, MetaError>> {
    let s2 = s.clone();
    waiting(s, async move { s2.begin(SystemTime::now()).await }).await
}

/// The same for a bare transaction (a turn on the write connection, for raw statements).
async fn waiting_sqlite_tx(s: &Arc<SqliteStore>) -> tokio::task::JoinHandle<Result<tx::SqliteTx, MetaError>> {
    let s2 = s.clone();
    waiting(s, async move { Ok(tx::SqliteTx { tx: s2.group.begin().await?, now: 0, events: Vec::new() }) }).await
}

async fn waiting<T: Send + 'static>(
    s: &SqliteStore,
    begin: impl std::future::Future<Output = T> + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    let before = s.group.waiting();
    let task = tokio::spawn(begin);
    while s.group.waiting() == before {
        tokio::task::yield_now().await;
    }
    task
}

/// Lets every other task run for a while.
async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

/// Repositories committed (read through the read pool: what other readers see).
async fn committed(s: &SqliteStore) -> Vec<String> {
    sqlx::query_scalar("SELECT name FROM repositories ORDER BY name").fetch_all(&s.read).await.unwrap()
}

/// Every ledger event's actor, after checking the chain.
async fn ledgered(s: &SqliteStore) -> Vec<String> {
    let all = s.events(&EventFilter::default(), 100).await.unwrap();
    assert_eq!(chain::verify(None, &all).expect("one unbroken chain"), s.ledger_head().await.unwrap());
    all.into_iter().map(|e| e.actor).collect()
}

/// A member that released its savepoint while another waited is pending: its commit does not
/// return, and nothing of it is visible, until the member after it ends the group; then both
/// are committed, and the second's events chain after the first's inside the group.
#[tokio::test]
async fn a_pending_commit_returns_only_after_the_group_commits() {
    let (_dir, s) = store().await;
    let a = member(&s, "a").await;
    let b = waiting_begin(&s).await;
    let a_commit = tokio::spawn(a.commit());
    // B has the turn only once A released into the group and handed the connection on.
    let mut b = b.await.unwrap().unwrap();
    settle().await;
    assert!(!a_commit.is_finished(), "A's commit waits for the group's COMMIT");
    assert_eq!(committed(&s).await, Vec::<String>::new(), "nothing of the open group is visible");
    assert_eq!(s.ledger_head().await.unwrap(), None);
    assert!(b.ensure_repository(&repo("b")).await.unwrap());
    b.append_events(event("b"), SystemTime::now()).await.unwrap();
    b.commit().await.unwrap();
    a_commit.await.unwrap().unwrap();
    assert_eq!(committed(&s).await, vec!["a", "b"]);
    assert_eq!(ledgered(&s).await, vec!["a", "b"]);
}

/// A `COMMIT` that fails (here a deferred foreign key, which SQLite checks only at `COMMIT`;
/// a full disk fails the same way) fails every member with the same error; nothing of the
/// group is visible; the head hint is dropped, and the next transaction chains from the real
/// head.
#[tokio::test]
async fn a_failed_group_commit_fails_every_member() {
    let (_dir, s) = store().await;
    member(&s, "before").await.commit().await.unwrap();
    let a = doomed_member(&s, "a").await;
    let b = waiting_begin(&s).await;
    let a_commit = tokio::spawn((Box::new(a) as Box<dyn MetaTx>).commit());
    let mut b = b.await.unwrap().unwrap();
    assert!(b.ensure_repository(&repo("b")).await.unwrap());
    b.append_events(event("b"), SystemTime::now()).await.unwrap();
    let b_failed = b.commit().await.expect_err("the group's COMMIT fails");
    let a_failed = a_commit.await.unwrap().expect_err("so does every pending member");
    assert!(b_failed.to_string().contains("FOREIGN KEY"), "{b_failed}");
    assert_eq!(a_failed.to_string(), b_failed.to_string(), "each member gets the same error");
    assert_eq!(committed(&s).await, vec!["before"], "nothing of the group is visible");
    assert_eq!(ledgered(&s).await, vec!["before"]);
    assert_eq!(s.group.head_hint(), None, "the head hint was dropped");

    member(&s, "after").await.commit().await.unwrap();
    assert_eq!(committed(&s).await, vec!["after", "before"]);
    assert_eq!(ledgered(&s).await, vec!["before", "after"]);
}

/// A statement that fails with a full database (`max_page_count`) may make SQLite roll the
/// whole outer transaction back, pending members included (today's SQLite does here: the
/// failed member's rollback finds no savepoint, and A hears that its work was lost). Whatever
/// SQLite did, each member's commit tells the truth: Ok exactly when its rows are there.
#[tokio::test]
async fn a_full_database_mid_group_never_acknowledges_a_lost_member() {
    let (_dir, s) = store().await;
    let a = member(&s, "a").await;
    let b = waiting_sqlite_tx(&s).await;
    let a_commit = tokio::spawn(a.commit());
    let mut b = b.await.unwrap().unwrap();
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&mut *b.tx).await.unwrap();
    sqlx::raw_sql(&format!("PRAGMA max_page_count = {}", pages + 2)).execute(&mut *b.tx).await.unwrap();
    let full = sqlx::raw_sql("CREATE TABLE filler (x BLOB); INSERT INTO filler VALUES (zeroblob(1000000))")
        .execute(&mut *b.tx)
        .await
        .expect_err("the database is full");
    assert!(matches!(MetaError::from(full), MetaError::Full(_)));
    (Box::new(b) as Box<dyn MetaTx>).rollback().await.unwrap();
    let a_outcome = a_commit.await.unwrap();
    let mut w = s.group.begin().await.unwrap();
    sqlx::raw_sql("PRAGMA max_page_count = 1073741823").execute(&mut *w).await.unwrap();
    w.commit(Vec::new()).await.unwrap();
    assert_eq!(a_outcome.is_ok(), committed(&s).await == vec!["a"], "A's commit said {a_outcome:?}");
    member(&s, "next").await.commit().await.unwrap();
    assert!(committed(&s).await.contains(&"next".to_string()));
    ledgered(&s).await;
}

/// The last member of a group rolls back (or is dropped): it commits the group for the
/// pending members, and leaves nothing of its own.
#[tokio::test]
async fn a_last_member_that_rolls_back_or_is_dropped_commits_the_others() {
    for drop_it in [false, true] {
        let (_dir, s) = store().await;
        let a = member(&s, "a").await;
        let b = waiting_begin(&s).await;
        let a_commit = tokio::spawn(a.commit());
        let mut b = b.await.unwrap().unwrap();
        assert!(b.ensure_repository(&repo("b")).await.unwrap());
        b.append_events(event("b"), SystemTime::now()).await.unwrap();
        if drop_it {
            drop(b);
        } else {
            b.rollback().await.unwrap();
        }
        a_commit.await.unwrap().unwrap();
        assert_eq!(committed(&s).await, vec!["a"], "dropped: {drop_it}");
        member(&s, "c").await.commit().await.unwrap();
        assert_eq!(ledgered(&s).await, vec!["a", "c"], "dropped: {drop_it}");
    }
}

/// Futures dropped at each await (client disconnects): a `begin` dropped while it waits for
/// its turn, and a commit dropped while it is pending. The group goes on, and the pending
/// member whose caller left is committed with it.
#[tokio::test]
async fn dropped_begins_and_dropped_commits_strand_nobody() {
    let (_dir, s) = store().await;
    // A begin dropped while it waits: the holder hands on to it, and its turn ends at once.
    let a = member(&s, "a").await;
    let gone = waiting_begin(&s).await;
    gone.abort();
    assert!(gone.await.err().is_some_and(|e| e.is_cancelled()));
    a.commit().await.unwrap();
    assert_eq!(committed(&s).await, vec!["a"]);

    // A commit dropped while pending: committed with the group all the same.
    let b = member(&s, "b").await;
    let c = waiting_begin(&s).await;
    let b_commit = tokio::spawn(b.commit());
    let mut c = c.await.unwrap().unwrap();
    b_commit.abort();
    assert!(b_commit.await.unwrap_err().is_cancelled());
    assert!(c.ensure_repository(&repo("c")).await.unwrap());
    c.append_events(event("c"), SystemTime::now()).await.unwrap();
    c.commit().await.unwrap();
    assert_eq!(committed(&s).await, vec!["a", "b", "c"]);
    assert_eq!(ledgered(&s).await, vec!["a", "b", "c"]);
}

/// The other writes (upload sessions, GC lock, pull counters, the readiness write) are
/// members too: they run while a group is open without waiting on SQLite's lock, and they
/// are committed with it.
#[tokio::test]
async fn other_writes_join_the_open_group() {
    let (_dir, s) = store().await;
    let a = member(&s, "a").await;
    let waiter = waiting_begin(&s).await;
    let a_commit = tokio::spawn(a.commit());
    let mut held = waiter.await.unwrap().unwrap();
    let writes = tokio::spawn({
        let s = s.clone();
        async move {
            let now = SystemTime::now();
            s.check_write().await.unwrap();
            assert!(s.gc_lock("me", now, now + Duration::from_secs(60)).await.unwrap());
            s.create_upload(&repo("a"), "u1", crate::oci::Algorithm::Sha256, now).await.unwrap();
        }
    });
    while s.group.waiting() == 0 {
        tokio::task::yield_now().await;
    }
    assert!(held.ensure_repository(&repo("held")).await.unwrap());
    held.commit().await.unwrap();
    a_commit.await.unwrap().unwrap();
    writes.await.unwrap();
    assert_eq!(s.gc_lock_holder().await.unwrap().map(|(h, _)| h), Some("me".to_string()));
    assert!(s.upload(&repo("a"), "u1").await.unwrap().is_some());
    assert_eq!(committed(&s).await, vec!["a", "held"]);
}

/// A one-statement write (`Group::write_one`: savepoint, statement and release in one
/// batch) joins the open group as a pending member: it returns only after the group's
/// `COMMIT`, and fails with the group when that `COMMIT` fails (here A's deferred foreign
/// key), leaving nothing.
#[tokio::test]
async fn a_one_statement_write_is_pending_until_its_group_commits() {
    let (_dir, s) = store().await;
    let a = doomed_member(&s, "a").await;
    let s2 = s.clone();
    let write = waiting(&s, async move {
        s2.create_upload(&repo("a"), "u1", crate::oci::Algorithm::Sha256, SystemTime::now()).await
    })
    .await;
    let a_failed = (Box::new(a) as Box<dyn MetaTx>).commit().await.expect_err("the group's COMMIT fails");
    let w_failed = write.await.unwrap().expect_err("so does the one-statement write that joined it");
    assert_eq!(w_failed.to_string(), a_failed.to_string(), "the same error: {a_failed}");
    assert!(s.upload(&repo("a"), "u1").await.unwrap().is_none(), "nothing of the group is visible");
    assert_eq!(committed(&s).await, Vec::<String>::new());

    // Alone, it commits at once.
    s.create_upload(&repo("a"), "u2", crate::oci::Algorithm::Sha256, SystemTime::now()).await.unwrap();
    assert!(s.upload(&repo("a"), "u2").await.unwrap().is_some());
}

/// A one-statement write whose statement fails midway rolls back only itself: `INSERT OR
/// FAIL` keeps the rows it inserted before the conflicting one, so only the savepoint's
/// rollback takes "x" away; the member that released before it is committed, and the
/// connection is clean for the next write.
#[tokio::test]
async fn a_failed_one_statement_write_rolls_back_only_itself() {
    let (_dir, s) = store().await;
    member(&s, "dup").await.commit().await.unwrap();
    let a = member(&s, "a").await;
    let s2 = s.clone();
    let write = waiting(&s, async move {
        let insert =
            sqlx::query("INSERT OR FAIL INTO repositories (name, created_at) SELECT value, 0 FROM json_each(?)")
                .bind(r#"["x", "dup"]"#);
        s2.group.write_one(insert).await
    })
    .await;
    a.commit().await.unwrap();
    let e = write.await.unwrap().expect_err("the second row conflicts");
    assert!(e.to_string().contains("UNIQUE"), "{e}");
    assert_eq!(committed(&s).await, vec!["a", "dup"], "nothing of the failed write, all of the member before it");
    assert_eq!(ledgered(&s).await, vec!["dup", "a"]);
    let now = SystemTime::now();
    s.create_upload(&repo("a"), "u1", crate::oci::Algorithm::Sha256, now).await.unwrap();
    let seg = crate::meta::Segment { name: "s1".into(), len: 3 };
    assert!(s.record_segment("u1", 0, &seg, b"h", now).await.unwrap(), "the next writes run normally");
    member(&s, "b").await.commit().await.unwrap();
    assert_eq!(committed(&s).await, vec!["a", "b", "dup"]);
}

/// A one-statement write with another transaction waiting behind it hands the connection
/// on instead of committing, and returns only once that transaction's group commit does.
#[tokio::test]
async fn a_one_statement_write_hands_on_and_waits_for_the_group() {
    let (_dir, s) = store().await;
    let a = member(&s, "a").await;
    let s2 = s.clone();
    let write = waiting(&s, async move {
        s2.create_upload(&repo("a"), "u1", crate::oci::Algorithm::Sha256, SystemTime::now()).await
    })
    .await;
    let b = waiting_begin(&s).await;
    let a_commit = tokio::spawn(a.commit());
    let mut b = b.await.unwrap().unwrap();
    settle().await;
    assert!(!write.is_finished(), "the write waits for the group's COMMIT");
    assert!(!a_commit.is_finished());
    assert!(s.upload(&repo("a"), "u1").await.unwrap().is_none(), "nothing of the open group is visible");
    assert!(b.ensure_repository(&repo("b")).await.unwrap());
    b.commit().await.unwrap();
    write.await.unwrap().unwrap();
    a_commit.await.unwrap().unwrap();
    assert!(s.upload(&repo("a"), "u1").await.unwrap().is_some());
    assert_eq!(committed(&s).await, vec!["a", "b"]);
}

/// The group's ledger append, the last statements before its `COMMIT`, fails (here a
/// temporary trigger refuses ledger rows): every member fails with that error and nothing of
/// the group is visible, as for a failed `COMMIT`.
#[tokio::test]
async fn a_failed_ledger_append_fails_the_group() {
    let (_dir, s) = store().await;
    member(&s, "before").await.commit().await.unwrap();
    let mut a = tx::SqliteTx { tx: s.group.begin().await.unwrap(), now: 0, events: Vec::new() };
    sqlx::raw_sql(
        "CREATE TEMP TRIGGER refuse_ledger BEFORE INSERT ON main.ledger BEGIN SELECT RAISE(ABORT, 'ledger refused'); END",
    )
    .execute(&mut *a.tx)
    .await
    .unwrap();
    assert!(a.ensure_repository(&repo("a")).await.unwrap());
    a.append_events(event("a"), SystemTime::now()).await.unwrap();
    let b = waiting_begin(&s).await;
    let a_commit = tokio::spawn((Box::new(a) as Box<dyn MetaTx>).commit());
    let mut b = b.await.unwrap().unwrap();
    assert!(b.ensure_repository(&repo("b")).await.unwrap());
    b.append_events(event("b"), SystemTime::now()).await.unwrap();
    let b_failed = b.commit().await.expect_err("the group's append fails");
    let a_failed = a_commit.await.unwrap().expect_err("so does every pending member");
    assert!(b_failed.to_string().contains("ledger refused"), "{b_failed}");
    assert_eq!(a_failed.to_string(), b_failed.to_string());
    assert_eq!(committed(&s).await, vec!["before"]);
    assert_eq!(ledgered(&s).await, vec!["before"]);
    assert_eq!(s.group.head_hint(), None, "the head hint was dropped");

    // The trigger went with the group's rollback, as everything of the group did.
    member(&s, "after").await.commit().await.unwrap();
    assert_eq!(ledgered(&s).await, vec!["before", "after"]);
}

/// A transaction with more events than one statement takes (the group appends them in
/// chunks) still builds one chain, its events adjacent and in order.
#[tokio::test]
async fn thousands_of_events_in_one_transaction_chain_in_chunks() {
    let (_dir, s) = store().await;
    let mut tx = s.begin(SystemTime::now()).await.unwrap();
    let events = (0..2500).map(|i| NewEvent::new(EventKind::TagCreate, &format!("e{i}"), None)).collect();
    tx.append_events(events, SystemTime::now()).await.unwrap();
    tx.commit().await.unwrap();
    member(&s, "next").await.commit().await.unwrap();
    let all = s.events(&EventFilter::default(), 3000).await.unwrap();
    assert_eq!(chain::verify(None, &all).expect("one unbroken chain"), s.ledger_head().await.unwrap());
    assert_eq!(all.len(), 2501);
    assert!(all[..2500].iter().enumerate().all(|(i, e)| e.actor == format!("e{i}")), "in order");
    assert_eq!(all[2500].actor, "next");
}
