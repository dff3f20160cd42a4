//! Group commit on the single SQLite write connection: many write transactions share one
//! outer transaction, one WAL write and one fsync, and none of them is acknowledged before
//! that fsync.
//!
//! # Design
//!
//! - **One connection, one turn at a time.** The write connection lives in a [`Slot`] behind
//!   an async mutex (tokio's is FIFO-fair). [`Group::begin`] counts itself as *waiting*
//!   (before it waits, so a finishing holder sees it), takes the mutex, runs
//!   `BEGIN IMMEDIATE` if no outer transaction is open, then `SAVEPOINT t`, and hands the
//!   caller a [`Turn`]: the connection, for the transaction's statements.
//! - **Commit = `RELEASE t`, then pending.** The member's changes now belong to the open
//!   outer transaction. Its caller waits for the group's outcome (a `watch` channel of the
//!   group) and returns only once the outer `COMMIT` has returned, so a 201 still means
//!   fsynced (`synchronous = FULL`). If another `begin` is waiting and the group is below
//!   [`MAX_MEMBERS`] transactions and [`MAX_AGE`] old, the connection is handed on with the
//!   outer transaction still open; otherwise the ending member runs `COMMIT` and wakes every
//!   pending member with its result. "Somebody is waiting" is the whole batching signal: an
//!   idle registry commits at once (no added latency), a busy one batches as many requests
//!   as arrived during the previous ones.
//! - **A failed `COMMIT` fails every member** (each gets the same error: a full disk is 507
//!   for all of them) and rolls the outer transaction back, so nothing of the group is
//!   visible. The same happens when a member's statement made SQLite roll the whole
//!   transaction back by itself (SQLITE_FULL, SQLITE_IOERR): the next `RELEASE t` or
//!   `ROLLBACK TO t` finds no savepoint, and the pending members learn that their work is
//!   gone (503, retryable).
//! - **Rollback = `ROLLBACK TO t; RELEASE t`.** The member's changes vanish, the others'
//!   stay; it is not pending, but if it ends the group it commits the group for the others.
//!   A refused write (rolled back, then its refusal ledgered) is a rollback followed by a
//!   second, ordinary transaction.
//! - **Cancellation.** A request future can be dropped at any await. Everything that moves
//!   the connection from one state to another runs in a spawned task that a dropped future
//!   cannot interrupt: `begin`'s wait-and-`SAVEPOINT` (a turn nobody receives any more is
//!   ended at once), the end of a turn (`RELEASE`/`ROLLBACK TO`, the hand-on decision and
//!   `COMMIT`). A `Turn` dropped without commit or rollback spawns its own rollback and the
//!   group decision, so it strands no one; where no runtime is left to spawn on, the slot's
//!   `member` mark makes the next holder roll the savepoint back before anything else. A
//!   pending member whose caller went away is simply committed with its group. Every
//!   group's outcome channel is filled when the group ends, and an error is filled in if the
//!   group is ever dropped without one, so no pending member can wait forever or hear "done"
//!   for something that was not committed.
//! - **The ledger, once per group.** A member's `append_events` only collects its events; a
//!   released member's join the group's list (a rolled-back member's are dropped with it),
//!   and the member that closes the group links and stores them all, in release order (so
//!   one transaction's events stay adjacent), as the last statements before `COMMIT`: one
//!   statement per group instead of one per request, outside any member's savepoint. If that
//!   append fails, the group fails like a failed `COMMIT`. The group whose append passes
//!   `ledger::KEY_BATCH` unkeyed events also fills their lookup keys (`ledger_keys`).
//!   `HeadCache` (the head to link after, a hint checked in SQL) moves when a group commits
//!   and is cleared when one fails.
//! - **One-statement writes** ([`Group::write_one`]: an upload session's start or chunk) are
//!   members like any other, in one round trip: `SAVEPOINT t; <statement>; RELEASE t` as one
//!   batch, run with the wait for the turn and the hand-on decision in one task. A
//!   transaction through `begin` takes three round trips and two task hand-offs for the same
//!   work; on the one write connection that is what small-blob pushes queue for.
//! - **Other writes** (upload sessions, GC lock and touches, pull counters, checkpoints,
//!   archive cuts, the readiness write) are members too, so every write of this process goes
//!   through the one connection and nothing can wait on SQLite's lock against an open group of
//!   its own process. Reads use the read pool, which sees only committed data; nothing reads
//!   through the writer (it would see pending members' uncommitted rows).
//! - **The one rule for callers**: while a transaction is open (between `begin` and its end),
//!   do not wait for anything another request may hold until its own commit returns (a lock
//!   held across a commit, that request's response). A pending member waits for the current
//!   holder to end its turn, so such a wait would never end. (It was already true that a
//!   transaction must not begin a second one and wait for it: one connection.) The service
//!   does neither: its transactions run statements and decisions only.
//! - **Another process** on the same file (the `cairn` command line) waits for the group's
//!   `BEGIN IMMEDIATE` lock within `busy_timeout`, as it waited for single transactions.
//!
//! Two environment variables, read at open, exist for measuring: `CAIRN_SQLITE_GROUP_MAX`
//! overrides [`MAX_MEMBERS`] (`1` turns grouping off: every transaction commits alone, as
//! before group commit) and `CAIRN_SQLITE_GROUP_MS` overrides [`MAX_AGE`].

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use tokio::sync::{Mutex, OwnedMutexGuard, oneshot, watch};

use super::ledger::{self, HeadCache};
use crate::audit::NewEvent;
use crate::meta::MetaError;

/// At most this many transactions share one outer transaction.
pub(super) const MAX_MEMBERS: usize = 64;
/// A group older than this commits when its current member ends, waiters or not: the bound
/// on how long a pending member waits for the members after it. Measured with 16 writers
/// (regbench d.manifest-push, c.small-blobs): at 4 ms most groups were cut before every
/// waiting writer had joined (sizes spread from 1 to 16), at 20 ms nine groups in ten held all
/// 16, with 5–12% more throughput and lower p50 and p99 latency; a group of 64 takes about
/// that long anyway.
pub(super) const MAX_AGE: Duration = Duration::from_millis(20);
/// How long `begin` waits for its turn before answering 503 (as the old one-connection pool's
/// acquire timeout did).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// A ledger head `(seq, hash)`, if any.
type Head = Option<(i64, String)>;
/// Ledger events, each with its time (ms since the epoch).
type Events = Vec<(NewEvent, i64)>;
/// A group's outcome: `None` while it is open.
type Outcome = Option<Result<(), Arc<MetaError>>>;
/// A statement for [`Group::write_one`]: its text is `'static` and its arguments are owned.
pub(super) type SqliteQuery = sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'static>>;

/// When a group stops taking members.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Transactions per group.
    pub(super) members: usize,
    /// Age of the group (since its `BEGIN IMMEDIATE`).
    pub(super) age: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let members = var("CAIRN_SQLITE_GROUP_MAX").map(|n| n as usize).unwrap_or(MAX_MEMBERS);
        let age = var("CAIRN_SQLITE_GROUP_MS").map(Duration::from_millis).unwrap_or(MAX_AGE);
        Limits { members: members.max(1), age }
    }
}

/// The group committer: owns the write connection.
#[derive(Clone)]
pub(super) struct Group(Arc<Shared>);

struct Shared {
    slot: Arc<Mutex<Slot>>,
    /// `begin`s counted before they wait for the slot, uncounted once they have it.
    waiting: AtomicUsize,
    /// The head the last committed group left (a hint for the group's append).
    head: HeadCache,
    /// For a fresh connection after one was found wedged.
    opts: SqliteConnectOptions,
    limits: Limits,
}

/// The write connection and the state of its outer transaction.
struct Slot {
    /// `None` after a connection was found wedged; the next `begin` opens a fresh one.
    conn: Option<SqliteConnection>,
    /// The outer transaction, while one is open.
    open: Option<Open>,
    /// A member's savepoint is open (its turn has not ended).
    member: bool,
}

/// An open outer transaction.
struct Open {
    started: Instant,
    /// Members that began in it (committed, rolled back or current).
    members: usize,
    /// Members released into it, waiting for its `COMMIT`.
    pending: usize,
    /// The released members' ledger events, in release order.
    events: Events,
    done: watch::Sender<Outcome>,
}

impl Open {
    fn new() -> Open {
        Open { started: Instant::now(), members: 0, pending: 0, events: Vec::new(), done: watch::channel(None).0 }
    }

    /// Tells every pending member how the group ended.
    fn finish(self, outcome: Result<(), Arc<MetaError>>) {
        self.done.send_replace(Some(outcome));
    }
}

impl Drop for Open {
    /// A group that ends without an outcome (a task that never ran, at shutdown) was not
    /// committed: its pending members hear so rather than wait.
    fn drop(&mut self) {
        self.done.send_if_modified(|o| {
            if o.is_some() {
                return false;
            }
            *o = Some(Err(Arc::new(lost("the group ended without committing"))));
            true
        });
    }
}

/// An error for pending members whose work the database rolled back.
fn lost(why: &str) -> MetaError {
    MetaError::Unavailable(format!("the write transaction was rolled back: {why}"))
}

/// The same error again, for each member of a failed group.
fn copy(e: &MetaError) -> MetaError {
    match e {
        MetaError::Unavailable(s) => MetaError::Unavailable(s.clone()),
        MetaError::Full(s) => MetaError::Full(s.clone()),
        MetaError::Unusable(s) => MetaError::Unusable(s.clone()),
        MetaError::Conflict(s) => MetaError::Conflict(s.clone()),
        MetaError::NotFound(s) => MetaError::NotFound(s.clone()),
        MetaError::Corrupt(s) => MetaError::Corrupt(s.clone()),
        MetaError::Other(e) => MetaError::Other(sqlx::Error::Protocol(e.to_string())),
    }
}

impl Group {
    /// The committer for `conn` (migrated, in autocommit mode).
    pub(super) fn new(conn: SqliteConnection, opts: SqliteConnectOptions, limits: Limits) -> Group {
        let slot = Slot { conn: Some(conn), open: None, member: false };
        Group(Arc::new(Shared {
            slot: Arc::new(Mutex::new(slot)),
            waiting: AtomicUsize::new(0),
            head: HeadCache::default(),
            opts,
            limits,
        }))
    }

    /// Waits for a turn on the write connection and opens a savepoint for it (and the outer
    /// transaction if none is open).
    pub(super) async fn begin(&self) -> Result<Turn, MetaError> {
        let shared = self.0.clone();
        let (tx, rx) = oneshot::channel();
        // Counted before it waits, so that the holder hands on instead of committing.
        let waiting = Waiting::count(shared.clone());
        tokio::spawn(async move {
            let guard = shared.slot.clone().lock_owned().await;
            drop(waiting);
            let mut turn = Turn { guard: Some(guard), shared };
            if tx.is_closed() {
                return; // Nobody wants it any more: dropping it ends the turn.
            }
            let started = turn.start().await;
            // A turn the caller no longer receives (or one that failed to start) is dropped
            // here, which ends it.
            let _ = tx.send(started.map(|()| turn));
        });
        match tokio::time::timeout(ACQUIRE_TIMEOUT, rx).await {
            Ok(Ok(started)) => started,
            Ok(Err(_)) => Err(MetaError::Unavailable("the write connection's task ended".into())),
            Err(_) => Err(MetaError::Unavailable(format!(
                "no turn on the database's write connection within {} s",
                ACQUIRE_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Runs one statement as a transaction of its own and returns the rows it returned
    /// (give it `RETURNING 1` to count the rows it changed) once its group has committed.
    ///
    /// One round trip to the connection where `begin`, the statement and `commit` take three:
    /// `SAVEPOINT t; <statement>; RELEASE t` go as one batch, and the wait for the turn, the
    /// batch and the hand-on decision run in one task (no hand-offs between the caller and
    /// the turn's tasks). SQLite stops a batch at the statement that fails, so a failed
    /// statement leaves its savepoint open, and it is rolled back as any member's (`ROLLBACK
    /// TO t` finding no savepoint still means the group was lost). The task times the wait
    /// for a turn out as `begin` does (then nothing is written), and writes nothing for a
    /// caller that left before its turn; once it has the turn, the write no longer depends
    /// on the caller (a dropped caller's write is committed with its group).
    pub(super) async fn write_one(&self, mut query: SqliteQuery) -> Result<usize, MetaError> {
        use sqlx::Execute;
        let batch = format!("SAVEPOINT t; {}; RELEASE t", query.sql());
        let args = query.take_arguments().map_err(|e| MetaError::Other(sqlx::Error::Encode(e)))?;
        let shared = self.0.clone();
        let (done_tx, done_rx) = oneshot::channel();
        let waiting = Waiting::count(shared.clone());
        tokio::spawn(async move {
            let Ok(mut guard) = tokio::time::timeout(ACQUIRE_TIMEOUT, shared.slot.clone().lock_owned()).await else {
                let _ = done_tx.send(Err(MetaError::Unavailable(format!(
                    "no turn on the database's write connection within {} s",
                    ACQUIRE_TIMEOUT.as_secs()
                ))));
                return;
            };
            drop(waiting);
            if done_tx.is_closed() {
                // The caller left before its turn: nothing is written; the group goes on.
                end(guard, shared, End::Abandon).await;
                return;
            }
            let slot = &mut *guard;
            if let Err(e) = slot.open_outer(&shared).await {
                end(guard, shared, End::Abandon).await;
                let _ = done_tx.send(Err(e));
                return;
            }
            // Counted before the batch, so that a failure anywhere in it rolls the savepoint
            // back (a `SAVEPOINT t` that itself failed then fails the group, conservatively).
            slot.count_member();
            let out = match args {
                Some(args) => sqlx::query_with(&batch, args).fetch_all(slot.conn()).await,
                None => sqlx::query(&batch).fetch_all(slot.conn()).await,
            };
            let result = match out {
                Ok(rows) => {
                    // The batch's `RELEASE t` made it pending, as `end_member` does.
                    slot.member = false;
                    let pending = slot.open.as_mut().map(|open| {
                        open.pending += 1;
                        open.done.subscribe()
                    });
                    // No member is open now, so this only hands on or commits.
                    end(guard, shared, End::Abandon).await;
                    pending.map(|rx| (rows.len(), rx)).ok_or_else(|| lost("no outer transaction was open"))
                }
                Err(e) => {
                    end(guard, shared, End::Rollback).await;
                    Err(MetaError::from(e))
                }
            };
            let _ = done_tx.send(result);
        });
        let (rows, rx) =
            done_rx.await.map_err(|_| MetaError::Unavailable("the write connection's task ended".into()))??;
        await_group(rx).await.map(|()| rows)
    }

    /// How many `begin`s wait for a turn now (for tests).
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.0.waiting.load(Ordering::SeqCst)
    }

    /// The head hint the last committed group left (for tests).
    #[cfg(test)]
    pub(super) fn head_hint(&self) -> Head {
        self.0.head.get()
    }
}

/// Uncounts a waiting `begin` when it has its turn or is dropped.
struct Waiting(Arc<Shared>);

impl Waiting {
    fn count(shared: Arc<Shared>) -> Waiting {
        shared.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(shared)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One transaction's turn on the write connection (it derefs to the connection). End it with
/// [`Turn::commit`] or [`Turn::rollback`]; dropping it rolls it back.
pub(super) struct Turn {
    /// `None` once the turn has ended.
    guard: Option<OwnedMutexGuard<Slot>>,
    shared: Arc<Shared>,
}

/// How a turn ends.
enum End {
    /// `RELEASE t`, with the member's ledger events.
    Commit(Events),
    /// `ROLLBACK TO t; RELEASE t`, asked for.
    Rollback,
    /// The same, for a turn dropped without either.
    Abandon,
}

/// What the ending member learns at once.
enum Ended {
    /// Nothing to wait for (a rollback, or a turn without a member).
    Done,
    /// Released into the group: its outcome comes on this channel.
    Pending(watch::Receiver<Outcome>),
    /// The turn's own end failed.
    Failed(MetaError),
}

impl Turn {
    /// Opens the outer transaction if none is open, then the member's savepoint.
    async fn start(&mut self) -> Result<(), MetaError> {
        let slot = self.guard.as_mut().expect("a turn holds the slot until it ends");
        slot.open_outer(&self.shared).await?;
        exec(slot.conn(), "SAVEPOINT t").await?;
        slot.count_member();
        Ok(())
    }

    /// Releases the savepoint into the group and returns once the group has committed (or
    /// failed). `events` are its ledger events, stored with the group's.
    pub(super) async fn commit(mut self, events: Events) -> Result<(), MetaError> {
        match self.end(End::Commit(events)).await {
            Ended::Done => Ok(()),
            Ended::Failed(e) => Err(e),
            Ended::Pending(rx) => await_group(rx).await,
        }
    }

    /// Rolls the savepoint back; the group goes on (or commits, if this turn ends it).
    pub(super) async fn rollback(mut self) -> Result<(), MetaError> {
        match self.end(End::Rollback).await {
            Ended::Failed(e) => Err(e),
            Ended::Done | Ended::Pending(_) => Ok(()),
        }
    }

    /// Commits if `out` is a success, else rolls back; returns `out` (or the commit's error).
    pub(super) async fn finish<T>(self, out: Result<T, MetaError>) -> Result<T, MetaError> {
        match out {
            Ok(v) => self.commit(Vec::new()).await.map(|()| v),
            Err(e) => {
                if let Err(r) = self.rollback().await {
                    tracing::warn!(error = %r, "rolling back a failed write");
                }
                Err(e)
            }
        }
    }

    /// Ends the turn in a task of its own, which a dropped caller cannot interrupt.
    async fn end(&mut self, how: End) -> Ended {
        let Some(guard) = self.guard.take() else { return Ended::Failed(lost("the turn had already ended")) };
        match tokio::spawn(end(guard, self.shared.clone(), how)).await {
            Ok(ended) => ended,
            Err(e) => Ended::Failed(MetaError::Unavailable(format!("the commit task failed: {e}"))),
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(end(guard, self.shared.clone(), End::Abandon));
            }
            // No runtime to clean up on: `Slot::member` stays set and the next holder rolls
            // the savepoint back first.
            Err(_) => drop(guard),
        }
    }
}

impl Deref for Turn {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.guard.as_ref().and_then(|g| g.conn.as_ref()).expect("a started turn holds the connection")
    }
}

impl DerefMut for Turn {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.guard.as_mut().and_then(|g| g.conn.as_mut()).expect("a started turn holds the connection")
    }
}

/// Waits for a pending member's group to end; its outcome is the member's.
async fn await_group(mut rx: watch::Receiver<Outcome>) -> Result<(), MetaError> {
    let outcome = match rx.wait_for(Option::is_some).await {
        Ok(o) => o.clone(),
        Err(_) => return Err(lost("the group ended without an outcome")),
    };
    match outcome {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(copy(&e)),
        None => Err(lost("the group ended without an outcome")),
    }
}

/// Ends a turn: the member's savepoint, then the group (hand on, or `COMMIT`). Runs in its
/// own task, holding the slot throughout.
async fn end(mut guard: OwnedMutexGuard<Slot>, shared: Arc<Shared>, how: End) -> Ended {
    let slot = &mut *guard;
    let ended = if slot.member { slot.end_member(&shared, how).await } else { Ended::Done };
    let Some(open) = &slot.open else { return ended };
    let waiting = shared.waiting.load(Ordering::SeqCst);
    if waiting > 0 && open.members < shared.limits.members && open.started.elapsed() < shared.limits.age {
        return ended; // Hand on: the next member continues the open transaction.
    }
    slot.close(&shared).await;
    ended
}

impl Slot {
    fn conn(&mut self) -> &mut SqliteConnection {
        self.conn.as_mut().expect("the slot holds a connection while a transaction is open")
    }

    /// Readies the slot for a member: rolls back a savepoint a dropped turn left open,
    /// connects if the connection was replaced, opens the outer transaction if none is open.
    async fn open_outer(&mut self, shared: &Shared) -> Result<(), MetaError> {
        if self.member {
            // A turn dropped where no task could be spawned left its savepoint open.
            self.end_member(shared, End::Abandon).await;
        }
        if self.conn.is_none() {
            self.conn = Some(connect(shared.opts.clone()).await?);
        }
        if self.open.is_none() {
            let begun = exec(self.conn(), "BEGIN IMMEDIATE").await;
            if let Err(e) = begun {
                self.reset().await;
                return Err(e.into());
            }
            self.open = Some(Open::new());
        }
        Ok(())
    }

    /// Marks the member's savepoint open and counts it into the group.
    fn count_member(&mut self) {
        self.member = true;
        if let Some(open) = self.open.as_mut() {
            open.members += 1;
        }
    }

    /// Ends the current member's savepoint.
    async fn end_member(&mut self, shared: &Shared, how: End) -> Ended {
        self.member = false;
        let (ended, error) = match how {
            End::Commit(events) => match exec(self.conn(), "RELEASE t").await {
                Ok(()) => match self.open.as_mut() {
                    Some(open) => {
                        open.pending += 1;
                        open.events.extend(events);
                        (Ended::Pending(open.done.subscribe()), None)
                    }
                    None => (Ended::Failed(lost("no outer transaction was open")), None),
                },
                Err(e) => {
                    let e = MetaError::from(e);
                    let error = lost(&e.to_string());
                    (Ended::Failed(e), Some(error))
                }
            },
            End::Rollback | End::Abandon => match exec(self.conn(), "ROLLBACK TO t; RELEASE t").await {
                Ok(()) => (Ended::Done, None),
                // Its own changes are gone either way; the others' are gone too.
                Err(e) => (Ended::Done, Some(lost(&e.to_string()))),
            },
        };
        if let Some(error) = error {
            // The savepoint is gone: SQLite rolled the whole outer transaction back (a
            // statement failed with a full disk or an I/O error), or the connection broke.
            self.fail(shared, error).await;
        }
        ended
    }

    /// Ends the open outer transaction: the group's ledger append and `COMMIT` when a member
    /// is pending, else `ROLLBACK`.
    async fn close(&mut self, shared: &Shared) {
        let Some(mut open) = self.open.take() else { return };
        if open.pending == 0 {
            self.reset().await;
            open.finish(Ok(()));
            return;
        }
        let events = std::mem::take(&mut open.events);
        let committed = async {
            let head = match events.is_empty() {
                true => None,
                false => append(self.conn(), events, shared.head.get()).await?,
            };
            if let Some((seq, _)) = &head {
                // Every [`ledger::KEY_BATCH`] events, the group that passes the mark keys them.
                ledger::key_if_behind(self.conn(), *seq).await?;
            }
            exec(self.conn(), "COMMIT").await?;
            Ok::<_, MetaError>(head)
        };
        match committed.await {
            Ok(head) => {
                tracing::debug!(members = open.members, committed = open.pending, "group committed");
                if let Some(head) = head {
                    shared.head.set(head);
                }
                open.finish(Ok(()));
            }
            Err(e) => {
                tracing::warn!(error = %e, members = open.members, "a group commit failed; every member fails");
                shared.head.clear();
                self.reset().await;
                open.finish(Err(Arc::new(e)));
            }
        }
    }

    /// Fails the open group: rolls it back and tells its pending members.
    async fn fail(&mut self, shared: &Shared, error: MetaError) {
        shared.head.clear();
        self.reset().await;
        if let Some(open) = self.open.take() {
            tracing::warn!(error = %error, members = open.members, "the group's transaction was lost");
            open.finish(Err(Arc::new(error)));
        }
    }

    /// Leaves the connection in autocommit mode: `ROLLBACK` (an error because none is active
    /// is fine); a connection that cannot do even that is closed, and the next turn opens a
    /// fresh one.
    async fn reset(&mut self) {
        let Some(conn) = self.conn.as_mut() else { return };
        match exec(conn, "ROLLBACK").await {
            Ok(()) => {}
            Err(e) if e.to_string().contains("no transaction is active") => {}
            Err(e) => {
                tracing::warn!(error = %e, "replacing the database write connection");
                if let Some(conn) = self.conn.take() {
                    let _ = close(conn).await;
                }
            }
        }
    }
}

/// A boxed future that is `Send` for this one connection's lifetime (sqlx's generic
/// `Executor` futures are not provably `Send` inside a spawned task otherwise).
type Boxed<'c, T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, sqlx::Error>> + Send + 'c>>;

/// `ledger::append`, boxed (see [`Boxed`]).
fn append(
    conn: &mut SqliteConnection,
    events: Events,
    cached: Head,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Head, MetaError>> + Send + '_>> {
    Box::pin(ledger::append(conn, events, cached))
}

/// Runs `sql` (one or more statements without results) on `conn`.
fn exec<'c>(conn: &'c mut SqliteConnection, sql: &'static str) -> Boxed<'c, ()> {
    let done = sqlx::Executor::execute(conn, sql);
    Box::pin(async move { done.await.map(|_| ()) })
}

/// Opens a fresh write connection.
fn connect(opts: SqliteConnectOptions) -> Boxed<'static, SqliteConnection> {
    Box::pin(async move { SqliteConnection::connect_with(&opts).await })
}

/// Closes a connection.
fn close(conn: SqliteConnection) -> Boxed<'static, ()> {
    Box::pin(conn.close())
}
