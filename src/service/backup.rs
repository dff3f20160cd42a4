//! `cairn backup DIR` and `cairn restore DIR`: an online, consistent copy of a whole
//! installation into a new one in `DIR` (SQLite file, filesystem blobs, signing keys, audit
//! archive files), and the same copy back from it into an empty installation. Built on
//! `migrate --copy-to` ([`Registry::copy_to`], `service/copy.rs`): one read snapshot of the
//! source database (SQLite WAL or PostgreSQL REPEATABLE READ: the server goes on writing, the
//! snapshot does not see it), the source's maintenance lock held so no collector deletes what
//! is being copied, rows loaded in one transaction that keeps ids, sequence numbers and times
//! (so `cairn audit verify --data-dir DIR` passes on the backup and on the restored
//! installation).
//!
//! What this adds to the copy:
//! - Hard links. Between two filesystem stores every blob object is first hard-linked
//!   ([`BlobStore::link_to`](crate::blob::BlobStore::link_to)), from a first snapshot; the copy
//!   then finds those objects there with the right size and keeps them, and streams only what
//!   could not be linked (another device, a filesystem without links: then everything is
//!   copied, and the summary says so) or was committed between the two snapshots. An object
//!   linked for a blob that a collector deleted between the snapshots is removed again at the
//!   end. Objects are never written in place, so a link is as good as a copy against deletes
//!   and database loss; it shares the disk, so keep backups on another device (or pass
//!   `--no-hard-links`) to survive a disk's failure.
//! - Waiting for the maintenance lock: a scheduled GC or retention run of a serving node holds
//!   it for a while; the backup waits for it (up to [`LOCK_WAIT`]) instead of refusing.
//! - [`MANIFEST_FILE`] in `DIR`, written last: what was backed up and when. A `DIR` without
//!   it is not a finished backup, and `cairn restore` refuses it.
//!
//! Blobs on S3 are copied into `DIR` too (the backup is self-contained, restorable into any
//! backend); bucket versioning or replication is the usual protection of a bucket and makes
//! this copy optional. A PostgreSQL source is backed up the same way (one snapshot); `pg_dump`
//! or `pg_basebackup` are the usual tools there. No audit event records a backup: the ledger
//! has no event kind for it, and the backup's ledger ends at its snapshot either way.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use super::Registry;
use super::copy::{CopyError, CopyProgress, CopyReport};
use crate::blob::{LinkError, Linked};
use crate::meta::BlobRecord;
use crate::meta::copy::{BLOBS, blob_record};

/// The file in a backup directory that says it is a finished backup, and of what.
pub const MANIFEST_FILE: &str = "cairn-backup.json";
/// How long a backup waits for a collector (GC, retention) to release the maintenance lock.
pub const LOCK_WAIT: Duration = Duration::from_secs(600);
/// How often the lock is looked at while waiting.
const LOCK_POLL: Duration = Duration::from_millis(250);

/// What a backup directory's [`MANIFEST_FILE`] holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupManifest {
    /// The Cairn version that wrote the backup.
    pub cairn_version: String,
    /// When the backup finished (RFC 3339).
    pub finished_at: String,
    /// The source database (password redacted).
    pub source_database: String,
    /// The source's blob storage, in words.
    pub source_storage: String,
    /// The last ledger seq in the backup (`None`: no event yet).
    pub ledger_head: Option<i64>,
    /// Blobs in the backup.
    pub blobs: u64,
    /// Rows per table.
    pub tables: BTreeMap<String, u64>,
}

/// Where a backup or restore is, for a progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupProgress {
    /// Blobs whose objects were hard-linked so far, of `total`.
    Link {
        /// Blobs so far.
        done: u64,
        /// Blobs in the first snapshot.
        total: u64,
    },
    /// Waiting for a collector to release the maintenance lock.
    Waiting {
        /// Who holds it.
        holder: String,
    },
    /// The copy (`migrate --copy-to`'s stages).
    Copy(CopyProgress),
}

/// What a backup or restore did.
#[derive(Debug, Clone, Default)]
pub struct BackupReport {
    /// The copy's report (objects it found already there include the linked ones).
    pub copy: CopyReport,
    /// Objects hard-linked rather than copied.
    pub linked: Linked,
    /// Linked objects of blobs deleted before the copy's snapshot, removed again.
    pub unlinked_again: u64,
    /// Why blobs were copied rather than linked, when linking was asked for and failed.
    pub not_linked: Option<String>,
}

/// Refuses a backup directory that exists and is not an empty directory, naming (some of)
/// what is in it.
pub fn check_backup_dir(dir: &Path) -> Result<(), CopyError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory || dir.is_file() => {
            return Err(CopyError::Refused(format!(
                "{} is a file: a backup goes into a new or empty directory",
                dir.display()
            )));
        }
        Err(e) => return Err(CopyError::Io(format!("{}: {e}", dir.display()))),
    };
    let mut names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    let more = names.len().saturating_sub(5);
    names.truncate(5);
    let listed = names.join(", ") + &if more > 0 { format!(" and {more} more") } else { String::new() };
    Err(CopyError::Refused(format!(
        "{} is not empty (it holds {listed}): a backup goes into a new or empty directory, so that nothing in it \
         is mistaken for backed-up data. Choose another directory, or move its contents away",
        dir.display()
    )))
}

/// Checks that `dir` holds a finished backup (its [`MANIFEST_FILE`], database and audit signing
/// key) and returns the manifest.
pub fn read_backup_dir(dir: &Path) -> Result<BackupManifest, CopyError> {
    let manifest = dir.join(MANIFEST_FILE);
    let text = match std::fs::read_to_string(&manifest) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CopyError::Refused(format!(
                "{} is not a finished Cairn backup: {MANIFEST_FILE} is missing (`cairn backup` writes it last, so a \
                 backup that failed half-way has none). Point restore at a directory `cairn backup` completed",
                dir.display()
            )));
        }
        Err(e) => return Err(CopyError::Io(format!("{}: {e}", manifest.display()))),
    };
    let parsed: BackupManifest = serde_json::from_str(&text)
        .map_err(|e| CopyError::Refused(format!("{} cannot be read: {e}", manifest.display())))?;
    for (file, what) in [("cairn.db", "its database"), ("audit-signing-key.p8", "its audit signing key")] {
        if !dir.join(file).is_file() {
            return Err(CopyError::Refused(format!(
                "the backup in {} lacks {what} ({file}): it cannot be restored as it is",
                dir.display()
            )));
        }
    }
    Ok(parsed)
}

/// Writes `manifest` into `dir` whole or not at all (the last step of a backup).
pub fn write_manifest(dir: &Path, manifest: &BackupManifest) -> Result<(), CopyError> {
    let io = |p: &Path, e: std::io::Error| CopyError::Io(format!("{}: {e}", p.display()));
    let path = dir.join(MANIFEST_FILE);
    let part = dir.join(format!("{MANIFEST_FILE}.part"));
    let body = serde_json::to_vec_pretty(manifest).map_err(|e| CopyError::Io(e.to_string()))?;
    std::fs::write(&part, body).map_err(|e| io(&part, e))?;
    std::fs::File::open(&part).and_then(|f| f.sync_all()).map_err(|e| io(&part, e))?;
    std::fs::rename(&part, &path).map_err(|e| io(&path, e))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))
}

impl Registry {
    /// Copies everything this registry holds into `target`, whose database must be empty,
    /// while this one may be serving: `cairn backup` (into a new installation in a backup
    /// directory) and `cairn restore` (from one). `archives` are the two audit archive
    /// directories. With `hard_links`, blob objects are hard-linked where both stores are
    /// filesystems that allow it (see the module header).
    pub async fn backup_to(
        &self,
        target: &Registry,
        archives: (&Path, &Path),
        hard_links: bool,
        progress: &mut (dyn FnMut(BackupProgress) + Send),
    ) -> Result<BackupReport, CopyError> {
        super::copy::check_empty(target.meta.as_ref()).await?;
        let mut report = BackupReport::default();
        let mut linked = Vec::new();
        if hard_links && self.blobs.can_link_to(&target.blobs) {
            match self.link_blobs(target, &mut linked, progress).await {
                Ok(l) => report.linked = l,
                Err(LinkError::Unsupported(why)) => report.not_linked = Some(why),
                Err(LinkError::Io(e)) => return Err(CopyError::Io(e)),
            }
        }
        let deadline = Instant::now() + LOCK_WAIT;
        report.copy = loop {
            self.wait_for_maintenance_lock(deadline, progress).await?;
            let copied = self.copy_to(target, archives, &mut |p| progress(BackupProgress::Copy(p))).await;
            // Refused because a collector took the lock between the wait and the copy: wait again.
            if let Err(CopyError::Refused(_)) = &copied
                && Instant::now() < deadline
                && self.lock_holder().await?.is_some()
            {
                continue;
            }
            break copied?;
        };
        report.unlinked_again = remove_unlisted(target, &linked).await?;
        Ok(report)
    }

    /// Hard-links the objects of every blob of a first snapshot (recorded in `linked`).
    async fn link_blobs(
        &self,
        target: &Registry,
        linked: &mut Vec<BlobRecord>,
        progress: &mut (dyn FnMut(BackupProgress) + Send),
    ) -> Result<Linked, LinkError> {
        let meta = |e: crate::meta::MetaError| LinkError::Io(format!("database: {e}"));
        let mut dump = self.meta.dump().await.map_err(meta)?;
        let outcome = async {
            let total = dump.count(&BLOBS).await.map_err(meta)?;
            let (mut sum, mut done, mut after) = (Linked::default(), 0u64, None);
            progress(BackupProgress::Link { done, total });
            loop {
                let rows = dump.rows(&BLOBS, after.as_deref()).await.map_err(meta)?;
                let Some(last) = rows.last() else { break };
                after = Some(BLOBS.key_of(last));
                for row in &rows {
                    let blob = blob_record(row).map_err(meta)?;
                    let l = self.blobs.link_to(&target.blobs, &blob.location).await?;
                    sum.objects += l.objects;
                    sum.bytes += l.bytes;
                    sum.gone += l.gone;
                    linked.push(blob);
                    done += 1;
                }
                progress(BackupProgress::Link { done, total: total.max(done) });
            }
            Ok(sum)
        }
        .await;
        dump.finish().await.ok();
        outcome
    }

    /// The maintenance lock's holder while its lease runs.
    async fn lock_holder(&self) -> Result<Option<String>, CopyError> {
        let now = self.clock.now();
        Ok(self.meta.gc_lock_holder().await?.filter(|(_, until)| *until > now).map(|(h, _)| h))
    }

    /// Waits until no collector holds the maintenance lock, or `deadline` (then the copy
    /// refuses as usual).
    async fn wait_for_maintenance_lock(
        &self,
        deadline: Instant,
        progress: &mut (dyn FnMut(BackupProgress) + Send),
    ) -> Result<(), CopyError> {
        let mut told = false;
        while let Some(holder) = self.lock_holder().await? {
            if Instant::now() >= deadline {
                break;
            }
            if !told {
                progress(BackupProgress::Waiting { holder });
                told = true;
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
        Ok(())
    }
}

/// Removes the linked objects of blobs the target's database does not hold (deleted between
/// the snapshot they were linked from and the copy's). Returns how many blobs that was.
async fn remove_unlisted(target: &Registry, linked: &[BlobRecord]) -> Result<u64, CopyError> {
    if linked.is_empty() {
        return Ok(0);
    }
    let mut kept = HashSet::new();
    let mut dump = target.meta.dump().await?;
    let listed = async {
        let mut after = None;
        loop {
            let rows = dump.rows(&BLOBS, after.as_deref()).await?;
            let Some(last) = rows.last() else { break };
            after = Some(BLOBS.key_of(last));
            for row in &rows {
                let b = blob_record(row)?;
                kept.insert((b.digest.to_string(), b.location.upload));
            }
        }
        Ok::<(), CopyError>(())
    }
    .await;
    dump.finish().await.ok();
    listed?;
    let mut removed = 0;
    for b in linked {
        if !kept.contains(&(b.digest.to_string(), b.location.upload.clone())) {
            target.blobs.delete_segments(&b.location.upload, &b.location.segments).await;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_absent_or_empty_directory_takes_a_backup() {
        let root = tempfile::tempdir().unwrap();
        assert!(check_backup_dir(&root.path().join("new")).is_ok());
        assert!(check_backup_dir(root.path()).is_ok());
        for n in 0..7 {
            std::fs::write(root.path().join(format!("f{n}")), b"x").unwrap();
        }
        let e = check_backup_dir(root.path()).unwrap_err().to_string();
        assert!(e.contains("is not empty (it holds f0, f1, f2, f3, f4 and 2 more)"), "{e}");
        let e = check_backup_dir(&root.path().join("f0")).unwrap_err().to_string();
        assert!(e.contains("is a file"), "{e}");
    }

    #[test]
    fn a_backup_without_its_manifest_is_not_restored() {
        let root = tempfile::tempdir().unwrap();
        let e = read_backup_dir(root.path()).unwrap_err().to_string();
        assert!(e.contains("not a finished Cairn backup"), "{e}");
        let m = BackupManifest {
            cairn_version: "0".into(),
            finished_at: "2020-01-01T00:00:00Z".into(),
            source_database: "sqlite://x".into(),
            source_storage: "filesystem".into(),
            ledger_head: Some(3),
            blobs: 1,
            tables: BTreeMap::from([("blobs".into(), 1)]),
        };
        write_manifest(root.path(), &m).unwrap();
        let e = read_backup_dir(root.path()).unwrap_err().to_string();
        assert!(e.contains("lacks its database"), "{e}");
        std::fs::write(root.path().join("cairn.db"), b"").unwrap();
        std::fs::write(root.path().join("audit-signing-key.p8"), b"").unwrap();
        assert_eq!(read_backup_dir(root.path()).unwrap(), m);
    }
}
