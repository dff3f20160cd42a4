//! `cairn migrate --copy-to`: copies a whole installation, metadata and blobs, into another
//! one, typically SQLite + filesystem into PostgreSQL + S3 (README "Moving to PostgreSQL +
//! S3"); any pair of backends works. The source is read, never changed (but for its collector
//! lock); the target must be new.
//!
//! Order, so that the target never names an object it lacks and a failed run leaves it empty
//! for another try:
//! 1. Refuse a target database that holds any row ([`check_empty`]). (The caller carries the
//!    signing keys over first, `keys::place`: the audit key must be the source's, or the
//!    copied checkpoints would not verify.)
//! 2. Take the source's maintenance lock (the GC lock, renewed while copying), so no GC or
//!    scheduled retention run deletes what is being read; a lock another holder has refuses
//!    the copy. Then open one read
//!    snapshot of the source database ([`Dump`]); rows written later are not copied. Nothing
//!    stops a server from taking pushes meanwhile: stop it first (README, `--help`).
//! 3. Audit archive files (`audit-archive/`), which verification reads with the database.
//! 4. Blobs: every object a committed blob's location names, streamed under the same key,
//!    its size checked at the target. An object already there with the right size is kept,
//!    so a run again after an interruption sends only what is missing.
//! 5. Rows: one write transaction on the target, table by table in batches, ids, sequence
//!    numbers and times as they are (the ledger's hashes and signed checkpoints verify on the
//!    target with the copied audit key); it checks again that the target is empty first, and
//!    commits last. A failure before the commit leaves the target's database empty.
//!
//! Not copied: upload sessions in progress (their clients start again) and the leftovers of
//! ended uploads (`meta::copy::SKIPPED`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures::StreamExt;

use super::Registry;
use crate::blob::Copied;
use crate::meta::copy::{BLOBS, Dump, Load, TABLES, UPLOADS, blob_record};
use crate::meta::{BlobRecord, MetaError, MetadataStore};

/// Blobs copied at once (each streams; this bounds memory and requests in flight).
const BLOBS_AT_ONCE: usize = 4;

/// Why a copy did not happen or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The target database holds rows.
    #[error(
        "the target database is not empty ({}): --copy-to fills a new, empty database only. Point NEW_CONFIG at an \
         empty database (a new PostgreSQL database, or a SQLite file that does not exist yet)",
        .0.iter().map(|t| format!("{t} has rows")).collect::<Vec<_>>().join(", ")
    )]
    NotEmpty(Vec<&'static str>),
    /// Something at the target or the source refuses the copy before any row is written to
    /// the target's database (a busy lock, an archive file in the way); the message says what
    /// to do.
    #[error("{0}")]
    Refused(String),
    /// A database failed.
    #[error("database: {0}")]
    Meta(#[from] MetaError),
    /// A blob could not be copied.
    #[error("blob {digest}: {error}")]
    Blob {
        /// The blob.
        digest: String,
        /// What failed.
        error: String,
    },
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
}

impl CopyError {
    /// True when the copy was refused before it wrote any row (exit code 3 on the command line).
    pub fn is_refusal(&self) -> bool {
        matches!(self, CopyError::NotEmpty(_) | CopyError::Refused(_))
    }
}

/// Where a copy is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyProgress {
    /// Blob bytes copied (or found already there) so far, of `total`.
    Blobs {
        /// Bytes so far.
        bytes: u64,
        /// Bytes of every blob in the source.
        total: u64,
    },
    /// Rows of `table` loaded so far, of `total`.
    Rows {
        /// The table.
        table: &'static str,
        /// Rows so far.
        done: u64,
        /// Its rows in the source.
        total: u64,
    },
}

/// What a copy did.
#[derive(Debug, Clone, Default)]
pub struct CopyReport {
    /// Rows copied per table, in copy order.
    pub tables: Vec<(&'static str, u64)>,
    /// Blobs whose objects are at the target.
    pub blobs: u64,
    /// What the blob phase wrote and what it found already there.
    pub objects: Copied,
    /// Upload sessions in progress at the source, not copied.
    pub uploads_skipped: u64,
    /// Audit archive files copied.
    pub archive_files: u64,
    /// Things the operator should know (a key left as it was, an archive file not found).
    pub notes: Vec<String>,
}

/// Refuses a target database that holds any row (`CopyError::NotEmpty`).
pub async fn check_empty(meta: &dyn MetadataStore) -> Result<(), CopyError> {
    let mut load = meta.load().await?;
    let occupied = load.occupied().await;
    load.rollback().await?;
    match occupied? {
        t if t.is_empty() => Ok(()),
        t => Err(CopyError::NotEmpty(t)),
    }
}

impl Registry {
    /// Copies everything this registry holds into `target`, whose database must be empty (see
    /// the module header for the order and what is not copied). `archives` are the source's
    /// and the target's audit archive directories. `progress` is called as bytes and rows go.
    pub async fn copy_to(
        &self,
        target: &Registry,
        archives: (&Path, &Path),
        progress: &mut (dyn FnMut(CopyProgress) + Send),
    ) -> Result<CopyReport, CopyError> {
        check_empty(target.meta.as_ref()).await?;
        // The maintenance lock (GC and scheduled retention), renewed while the copy runs.
        let copied = self.with_maintenance_lock(async { Ok(self.copy_locked(target, archives, progress).await) });
        match copied.await.map_err(|e| CopyError::Io(format!("the source's GC lock: {e}")))? {
            Some(result) => result,
            None => Err(CopyError::Refused(
                "a collector holds the source's GC lock (a `cairn gc`, or a server's scheduled GC or retention): \
                 the source is in use. Stop every server on it, then run the copy again"
                    .into(),
            )),
        }
    }

    async fn copy_locked(
        &self,
        target: &Registry,
        archives: (&Path, &Path),
        progress: &mut (dyn FnMut(CopyProgress) + Send),
    ) -> Result<CopyReport, CopyError> {
        let mut report = CopyReport::default();
        let mut dump = self.meta.dump().await?;
        let outcome = async {
            report.uploads_skipped = dump.count(&UPLOADS).await?;
            self.copy_archives(archives, &mut report).await?;
            self.copy_blobs(target, dump.as_mut(), &mut report, progress).await?;
            let mut load = target.meta.load().await?;
            match copy_rows(dump.as_mut(), load.as_mut(), &mut report, progress).await {
                Ok(()) => load.commit().await?,
                Err(e) => {
                    load.rollback().await.ok();
                    return Err(e);
                }
            }
            Ok::<(), CopyError>(())
        }
        .await;
        dump.finish().await.ok();
        outcome.map(|()| report)
    }

    /// Copies the audit archive files the source's ledger names (a file missing at the source
    /// is noted: archives may have been moved away on purpose).
    async fn copy_archives(&self, (from, to): (&Path, &Path), report: &mut CopyReport) -> Result<(), CopyError> {
        let cuts = self.meta.ledger_archives().await?;
        if cuts.is_empty() || same_dir(from, to) {
            return Ok(());
        }
        for cut in cuts {
            let (src, dst) = (from.join(&cut.file), to.join(&cut.file));
            let io = |p: &Path, e: std::io::Error| CopyError::Io(format!("{}: {e}", p.display()));
            if !src.try_exists().map_err(|e| io(&src, e))? {
                report.notes.push(format!(
                    "the audit archive file {} is not there; copy it to {} for `cairn audit verify` on the target",
                    src.display(),
                    dst.display()
                ));
                continue;
            }
            if dst.try_exists().map_err(|e| io(&dst, e))? {
                if same_contents(&src, &dst).map_err(|e| io(&dst, e))? {
                    continue;
                }
                return Err(CopyError::Refused(format!(
                    "the target already has a different audit archive file {}: move it away first",
                    dst.display()
                )));
            }
            copy_file(&src, &dst).map_err(|e| io(&dst, e))?;
            report.archive_files += 1;
        }
        Ok(())
    }

    /// Copies the objects of every blob in the snapshot, a few blobs at once.
    async fn copy_blobs(
        &self,
        target: &Registry,
        dump: &mut dyn Dump,
        report: &mut CopyReport,
        progress: &mut (dyn FnMut(CopyProgress) + Send),
    ) -> Result<(), CopyError> {
        let total = self.meta.storage_totals().await?.blob_bytes;
        let shown = Mutex::new((0u64, progress));
        let tick = |n: u64| {
            if let Ok(mut g) = shown.lock() {
                g.0 += n;
                let bytes = g.0;
                (g.1)(CopyProgress::Blobs { bytes, total: total.max(bytes) });
            }
        };
        tick(0);
        let mut after = None;
        loop {
            let rows = dump.rows(&BLOBS, after.as_deref()).await?;
            let Some(last) = rows.last() else { break };
            after = Some(BLOBS.key_of(last));
            let blobs = rows.iter().map(blob_record).collect::<Result<Vec<BlobRecord>, MetaError>>()?;
            let mut copies = futures::stream::iter(blobs.iter().map(|b| {
                let tick = &tick;
                async move {
                    let listed: u64 = b.location.segments.iter().map(|s| s.len).sum();
                    if listed != b.size {
                        let error = format!("its segments hold {listed} bytes, the database says {}", b.size);
                        return Err(CopyError::Blob { digest: b.digest.to_string(), error });
                    }
                    let mut on_bytes = |n: u64| tick(n);
                    self.blobs
                        .copy_to(&target.blobs, &b.location, &mut on_bytes)
                        .await
                        .map_err(|e| CopyError::Blob { digest: b.digest.to_string(), error: e.to_string() })
                }
            }))
            .buffer_unordered(BLOBS_AT_ONCE);
            while let Some(done) = copies.next().await {
                let c = done?;
                let o = &mut report.objects;
                o.objects += c.objects;
                o.bytes += c.bytes;
                o.kept_objects += c.kept_objects;
                o.kept_bytes += c.kept_bytes;
                report.blobs += 1;
            }
        }
        Ok(())
    }
}

/// Loads every table, batch by batch, in the target's transaction (after checking again, in
/// it, that the target is empty).
async fn copy_rows(
    dump: &mut dyn Dump,
    load: &mut dyn Load,
    report: &mut CopyReport,
    progress: &mut (dyn FnMut(CopyProgress) + Send),
) -> Result<(), CopyError> {
    let occupied = load.occupied().await?;
    if !occupied.is_empty() {
        return Err(CopyError::NotEmpty(occupied));
    }
    for table in TABLES {
        let total = dump.count(table).await?;
        let mut done = 0u64;
        progress(CopyProgress::Rows { table: table.name, done, total });
        let mut after = None;
        loop {
            let rows = dump.rows(table, after.as_deref()).await?;
            let Some(last) = rows.last() else { break };
            after = Some(table.key_of(last));
            load.insert(table, &rows).await?;
            done += rows.len() as u64;
            progress(CopyProgress::Rows { table: table.name, done, total });
        }
        if done != total {
            return Err(CopyError::Meta(MetaError::Corrupt(format!(
                "{}: {done} rows read of {total} counted in the same snapshot",
                table.name
            ))));
        }
        report.tables.push((table.name, done));
    }
    Ok(())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// Copies `from` to `to` whole or not at all (a temporary file, synced, renamed into place).
fn copy_file(from: &Path, to: &Path) -> std::io::Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut part = to.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    std::fs::copy(from, &part)?;
    std::fs::File::open(&part)?.sync_all()?;
    std::fs::rename(&part, to)
}

/// True when two files hold the same bytes (read in chunks).
fn same_contents(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_compare_by_content() {
        let root = tempfile::tempdir().unwrap();
        let (a, b, c) = (root.path().join("a"), root.path().join("b"), root.path().join("c"));
        let big = vec![7u8; 200_000];
        std::fs::write(&a, &big).unwrap();
        copy_file(&a, &b).unwrap();
        assert!(same_contents(&a, &b).unwrap());
        let mut other = big.clone();
        other[150_000] = 8;
        std::fs::write(&c, &other).unwrap();
        assert!(!same_contents(&a, &c).unwrap());
        assert!(!root.path().join("b.part").exists(), "no temporary file left");
    }
}
