//! The ledger's whole-chain work behind `cairn audit` (DESIGN §7): verification of the
//! database and its archive files, exports, archiving, and the offline check of export files
//! with the public key alone. Files are JSON lines in the format of `audit::export`; this
//! module reads and writes them with blocking I/O (a command-line process, not a request).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::Registry;
use crate::audit::chain::rfc3339_millis;
use crate::audit::{ChainVerifier, Checkpoint, CheckpointKey, Event, Line, Start, Verified, VerifyError};
use crate::meta::{EventFilter, MetaError, millis};

/// How many events one page of a walk reads.
const PAGE: u32 = 5_000;

/// Archive files live here, under the data directory.
pub fn archive_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("audit-archive")
}

/// Why a ledger command failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The ledger (or a file) does not verify; `at` names the file when it is one.
    #[error("{}{error}", at.as_ref().map(|a| format!("{a}: ")).unwrap_or_default())]
    Invalid {
        /// The file, when the fault is in one.
        at: Option<String>,
        /// The first fault.
        error: VerifyError,
    },
    /// An archive file recorded in the database is not there.
    #[error(
        "seq {first}..{last}: the archive file {} is missing (restore it there, or pass --archive-dir)",
        path.display()
    )]
    ArchiveMissing {
        /// Where it was looked for.
        path: PathBuf,
        /// Its first seq.
        first: i64,
        /// Its last seq.
        last: i64,
    },
    /// The request makes no sense for this ledger (a range outside it).
    #[error("{0}")]
    Refused(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The database failed.
    #[error(transparent)]
    Meta(MetaError),
}

impl LedgerError {
    /// True when the ledger was read and found not to verify (as opposed to a failure to read it).
    pub fn is_invalid(&self) -> bool {
        matches!(self, LedgerError::Invalid { .. } | LedgerError::ArchiveMissing { .. })
    }
}

impl From<VerifyError> for LedgerError {
    fn from(error: VerifyError) -> LedgerError {
        LedgerError::Invalid { at: None, error }
    }
}

impl From<MetaError> for LedgerError {
    fn from(e: MetaError) -> LedgerError {
        match e {
            // A row that cannot even be decoded (hand-edited detail) is tampering too.
            MetaError::Corrupt(m) => VerifyError::Unreadable(m).into(),
            other => LedgerError::Meta(other),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io { path: path.to_path_buf(), source }
}

/// Progress of a long walk: called with `(seq reached, last seq expected or 0 if unknown)`.
pub type Progress<'a> = &'a mut dyn FnMut(i64, i64);

/// What [`Registry::verify_ledger`] checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// The whole walk: archives (when read) and database.
    pub verified: Verified,
    /// Archive files verified, oldest first.
    pub archive_files: Vec<PathBuf>,
    /// Events in those files.
    pub archived_events: u64,
    /// Where the database's events start (after the last archive cut), when archives exist.
    pub cut: Option<i64>,
}

/// What one file of an offline verification held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The file.
    pub file: PathBuf,
    /// Its events and checkpoints.
    pub verified: Verified,
    /// True when it continues the file before it (first `prev_hash` = that file's last hash).
    pub continues_previous: bool,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// First seq written.
    pub first: i64,
    /// Last seq written (a checkpointed one).
    pub last: i64,
    /// Event lines.
    pub events: u64,
    /// Checkpoint lines.
    pub checkpoints: u64,
    /// True when the checkpoint at `last` was signed for this export.
    pub signed: bool,
}

/// What an archive moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveReport {
    /// The file written.
    pub file: PathBuf,
    /// The export it holds.
    pub export: ExportReport,
    /// Events removed from the database.
    pub removed: u64,
}

/// Where `cairn audit archive --before` cuts: before a seq, or before the first event at or
/// after a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before {
    /// Archive the events with a lower seq.
    Seq(i64),
    /// Archive the events before the first one whose time is at or after this.
    Time(SystemTime),
}

impl Before {
    /// A seq (digits) or an RFC 3339 time.
    pub fn parse(s: &str) -> Result<Before, String> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse().map(Before::Seq).map_err(|e| format!("{s:?}: {e}"));
        }
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|e| format!("{s:?} is neither a seq nor an RFC 3339 time such as 2026-01-31T00:00:00Z ({e})"))?;
        let ns = t.unix_timestamp_nanos().max(0) as u64;
        Ok(Before::Time(SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(ns)))
    }
}

impl Registry {
    /// Recomputes the chain and checks every checkpoint: the archive files in `archive_dir`
    /// first (each must end at its recorded cut and with its own checkpoint line), then the
    /// database's events after the last cut. Without `archive_dir`, the walk starts at the
    /// last cut, whose hash must be the one its checkpoint signed. `public_key` is raw Ed25519.
    pub async fn verify_ledger(
        &self,
        public_key: &[u8],
        archive_dir: Option<&Path>,
        progress: Progress<'_>,
    ) -> Result<VerifyReport, LedgerError> {
        let archives = self.meta.ledger_archives().await?;
        let checkpoints = self.meta.checkpoints(None, u32::MAX).await?;
        let total = self.meta.ledger_head().await?.map_or(0, |(s, _)| s);
        let start = match (archive_dir, archives.last()) {
            (None, Some(cut)) => Start::After(cut.seq, cut.hash.clone()),
            _ => Start::Genesis,
        };
        let mut v = ChainVerifier::new(public_key, start).with_checkpoints(checkpoints)?;
        let mut report = VerifyReport { cut: archives.last().map(|a| a.seq), ..Default::default() };
        if let Some(cut) = archives.last() {
            match v.known_checkpoint(cut.seq) {
                Some(cp) if cp.hash == cut.hash => {}
                Some(cp) => {
                    let message = format!(
                        "the archive cut records hash {} but the checkpoint at seq {} signed {}",
                        cut.hash, cut.seq, cp.hash
                    );
                    return Err(VerifyError::Cut { seq: cut.seq, message }.into());
                }
                None => {
                    let message = "no signed checkpoint covers the archive cut (its checkpoint was deleted)".into();
                    return Err(VerifyError::Cut { seq: cut.seq, message }.into());
                }
            }
        }
        if let Some(dir) = archive_dir {
            let mut first = 1;
            for a in &archives {
                let path = dir.join(&a.file);
                if !path.exists() {
                    return Err(LedgerError::ArchiveMissing { path, first, last: a.seq });
                }
                let before = v.verified().events;
                let last_line = walk_file(&path, &mut v, &mut |s, _| progress(s, total))?;
                let at = Some(path.display().to_string());
                if v.last() != Some((a.seq, a.hash.clone())) {
                    let (seq, hash) = v.last().unwrap_or((0, String::new()));
                    let message = format!(
                        "the archive {} ends at seq {seq} (hash {hash}) but the database recorded its cut at seq {} (hash {})",
                        path.display(),
                        a.seq,
                        a.hash
                    );
                    return Err(LedgerError::Invalid { at, error: VerifyError::Cut { seq: a.seq, message } });
                }
                if last_line != LastLine::Checkpoint(a.seq) {
                    let error = VerifyError::Uncovered { last: a.seq, last_checkpoint: None };
                    return Err(LedgerError::Invalid { at, error });
                }
                report.archived_events += v.verified().events - before;
                report.archive_files.push(path);
                first = a.seq + 1;
            }
        }
        self.walk_database(&mut v, total, progress).await?;
        v.finish_stored()?;
        report.verified = v.verified().clone();
        Ok(report)
    }

    /// Walks the database's events after where `v` stands, then checks the head row. Events
    /// appended meanwhile are walked too (the head row moves in the same transaction).
    async fn walk_database(
        &self,
        v: &mut ChainVerifier<'_>,
        total: i64,
        progress: Progress<'_>,
    ) -> Result<(), LedgerError> {
        let mut rechecked = false;
        loop {
            let filter = EventFilter { after: Some(v.last_seq()), ..Default::default() };
            let page = self.meta.events(&filter, PAGE).await?;
            if !page.is_empty() {
                rechecked = false;
                for e in &page {
                    v.event(e)?;
                }
                progress(v.last_seq(), total.max(v.last_seq()));
                continue;
            }
            let last = v.last();
            let last_seq = v.last_seq();
            match self.meta.ledger_head().await? {
                None if last.is_none() => return Ok(()),
                Some((head_seq, head_hash)) if Some((head_seq, head_hash.clone())) == last => return Ok(()),
                Some((head_seq, _)) if head_seq > last_seq && !rechecked => rechecked = true,
                Some((head_seq, head_hash)) => {
                    return Err(VerifyError::Head { head_seq, head_hash, last_seq }.into());
                }
                None => {
                    let head_hash = "(no head row)".to_string();
                    return Err(VerifyError::Head { head_seq: 0, head_hash, last_seq }.into());
                }
            }
        }
    }

    /// Writes events `since..=until` (defaults: the database's first event, the head) as JSON
    /// lines with the checkpoints among them, ending with a checkpoint at `until`: one is
    /// signed with `key` and stored if there is none. Refuses when the database's ledger does
    /// not verify (nothing is signed over a tampered chain).
    pub async fn export_ledger(
        &self,
        key: &CheckpointKey,
        since: Option<i64>,
        until: Option<i64>,
        out: &mut (dyn Write + Send),
    ) -> Result<ExportReport, LedgerError> {
        let Some((head, _)) = self.meta.ledger_head().await? else {
            return Err(LedgerError::Refused("the ledger is empty: nothing to export".into()));
        };
        let cut = self.meta.ledger_archive_cut().await?.map_or(0, |(s, _)| s);
        let first = since.unwrap_or(cut + 1);
        let last = until.unwrap_or(head);
        if first < 1 || last < first {
            return Err(LedgerError::Refused(format!("--since {first} --until {last}: not a range of seqs")));
        }
        if last > head {
            return Err(LedgerError::Refused(format!("--until {last}: the ledger ends at seq {head}")));
        }
        if first <= cut {
            return Err(LedgerError::Refused(format!(
                "events up to seq {cut} were archived: their files under the archive directory are in the \
                 export format and verify the same way; export from --since {} on",
                cut + 1
            )));
        }
        self.verify_ledger(key.public_key(), None, &mut |_, _| {}).await?;
        self.write_range(key, first, last, out).await
    }

    /// Writes `first..=last` (verified by the caller), signing a checkpoint at `last` if needed.
    async fn write_range(
        &self,
        key: &CheckpointKey,
        first: i64,
        last: i64,
        out: &mut (dyn Write + Send),
    ) -> Result<ExportReport, LedgerError> {
        let end = self.event_at(last).await?;
        let (end_cp, signed) = self.checkpoint_at_or_sign(key, &end).await?;
        let mut cps: BTreeMap<i64, Checkpoint> = self
            .meta
            .checkpoints(Some(first - 1), u32::MAX)
            .await?
            .into_iter()
            .filter(|c| c.seq <= last)
            .map(|c| (c.seq, c))
            .collect();
        cps.insert(last, end_cp);
        let mut report = ExportReport { first, last, events: 0, checkpoints: 0, signed };
        let mut after = first - 1;
        let stdout = Path::new("(output)");
        while after < last {
            let filter = EventFilter { after: Some(after), until: Some(last), ..Default::default() };
            let page = self.meta.events(&filter, PAGE).await?;
            let Some(tail) = page.last() else { break };
            after = tail.seq;
            for e in page {
                writeln!(out, "{}", Line::Event(e.clone()).to_json()).map_err(io(stdout))?;
                report.events += 1;
                if let Some(cp) = cps.get(&e.seq) {
                    writeln!(out, "{}", Line::Checkpoint(cp.clone()).to_json()).map_err(io(stdout))?;
                    report.checkpoints += 1;
                }
            }
        }
        out.flush().map_err(io(stdout))?;
        if report.events != (last - first + 1) as u64 {
            return Err(LedgerError::Refused(format!(
                "seq {first}..{last} changed while it was written (archived meanwhile?); run the export again"
            )));
        }
        Ok(report)
    }

    /// [`Registry::export_ledger`] into `path`, written whole or not at all.
    pub async fn export_ledger_to(
        &self,
        key: &CheckpointKey,
        since: Option<i64>,
        until: Option<i64>,
        path: &Path,
    ) -> Result<ExportReport, LedgerError> {
        let tmp = partial(path);
        let mut w = BufWriter::new(File::create(&tmp).map_err(io(&tmp))?);
        let report = self.export_ledger(key, since, until, &mut w).await;
        let done = report.and_then(|r| {
            finish_file(w, &tmp, path)?;
            Ok(r)
        });
        if done.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        done
    }

    /// Moves the events before `before` into `<dir>/<first>-<last>.jsonl` (the export format,
    /// ending with a checkpoint at `last`, signed with `key` if there is none), verifies the
    /// written file, then removes the events from the database. `None` when there is nothing
    /// to move. Refuses when the database's ledger does not verify.
    pub async fn archive_ledger(
        &self,
        key: &CheckpointKey,
        before: Before,
        dir: &Path,
    ) -> Result<Option<ArchiveReport>, LedgerError> {
        let Some((head, _)) = self.meta.ledger_head().await? else { return Ok(None) };
        let cut = self.meta.ledger_archive_cut().await?;
        let first = cut.as_ref().map_or(1, |(s, _)| s + 1);
        let last = match before {
            Before::Seq(n) => n - 1,
            Before::Time(t) => {
                let filter = EventFilter { after: Some(first - 1), since_ms: Some(millis(t)), ..Default::default() };
                self.meta.events(&filter, 1).await?.first().map_or(head, |e| e.seq - 1)
            }
        }
        .min(head);
        if last < first {
            return Ok(None);
        }
        self.verify_ledger(key.public_key(), None, &mut |_, _| {}).await?;
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let name = format!("{first}-{last}.jsonl");
        let path = dir.join(&name);
        let tmp = partial(&path);
        let mut w = BufWriter::new(File::create(&tmp).map_err(io(&tmp))?);
        let written = self.write_range(key, first, last, &mut w).await;
        let export = match written.and_then(|r| finish_file(w, &tmp, &path).map(|()| r)) {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        // Read back what is on disk before the database lets go of the events.
        let start = match cut {
            Some((seq, hash)) => Start::After(seq, hash),
            None => Start::Genesis,
        };
        let mut v = ChainVerifier::new(key.public_key(), start);
        let at = Some(path.display().to_string());
        walk_file(&path, &mut v, &mut |_, _| {})?;
        v.finish_file().map_err(|error| LedgerError::Invalid { at: at.clone(), error })?;
        let Some((seq, hash)) = v.last().filter(|(s, _)| *s == last) else {
            return Err(LedgerError::Refused(format!("{}: does not end at seq {last}", path.display())));
        };
        let removed = self.meta.archive_ledger(seq, &hash, &name, self.clock.now()).await?;
        Ok(Some(ArchiveReport { file: path, export, removed }))
    }

    async fn event_at(&self, seq: i64) -> Result<Event, LedgerError> {
        let filter = EventFilter { after: Some(seq - 1), until: Some(seq), ..Default::default() };
        self.meta
            .events(&filter, 1)
            .await?
            .pop()
            .ok_or_else(|| LedgerError::Refused(format!("seq {seq} is not in the database")))
    }

    /// The stored checkpoint at `e.seq`, or one signed now and stored (`true`).
    async fn checkpoint_at_or_sign(&self, key: &CheckpointKey, e: &Event) -> Result<(Checkpoint, bool), LedgerError> {
        let stored = |cps: Vec<Checkpoint>| cps.into_iter().find(|c| c.seq == e.seq);
        if let Some(cp) = stored(self.meta.checkpoints(Some(e.seq - 1), 1).await?) {
            return Ok((cp, false));
        }
        let cp = key.sign(e.seq, &e.hash, &rfc3339_millis(millis(self.clock.now())));
        self.meta.add_checkpoint(&cp).await?;
        // The server may have signed the same seq meanwhile; the stored one is the one to use.
        let kept = stored(self.meta.checkpoints(Some(e.seq - 1), 1).await?).unwrap_or(cp);
        Ok((kept, true))
    }
}

/// Verifies export (or archive) files with the public key alone, in the order given. Each
/// must verify by itself (see `audit::export`); a file whose first seq follows the previous
/// file's last must also link to it.
pub fn verify_files(
    public_key: &[u8],
    files: &[PathBuf],
    progress: Progress<'_>,
) -> Result<Vec<FileReport>, LedgerError> {
    let mut out: Vec<FileReport> = Vec::new();
    for path in files {
        let mut v = ChainVerifier::new(public_key, Start::Anchored);
        let at = Some(path.display().to_string());
        walk_file(path, &mut v, progress)?;
        v.finish_file().map_err(|error| LedgerError::Invalid { at: at.clone(), error })?;
        let verified = v.verified().clone();
        let mut continues_previous = false;
        if let (Some(prev), Some((seq, prev_hash))) = (out.last(), &verified.first)
            && let Some((prev_seq, prev_last)) = &prev.verified.last
            && *seq == prev_seq + 1
        {
            if prev_hash != prev_last {
                let error = VerifyError::FileLink { seq: *seq, previous: prev.file.display().to_string() };
                return Err(LedgerError::Invalid { at, error });
            }
            continues_previous = true;
        }
        out.push(FileReport { file: path.clone(), verified, continues_previous });
    }
    Ok(out)
}

/// How a file ended.
#[derive(Debug, PartialEq, Eq)]
enum LastLine {
    None,
    Event,
    Checkpoint(i64),
}

/// Feeds a file's lines to `v`. Errors name the file (and the line when it is unreadable).
fn walk_file(path: &Path, v: &mut ChainVerifier<'_>, progress: Progress<'_>) -> Result<LastLine, LedgerError> {
    let at = || Some(path.display().to_string());
    let r = BufReader::new(File::open(path).map_err(io(path))?);
    let mut last = LastLine::None;
    for (n, line) in r.lines().enumerate() {
        let line = line.map_err(io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = Line::parse(&line).map_err(|m| LedgerError::Invalid {
            at: at(),
            error: VerifyError::Unreadable(format!("line {}: {m}", n + 1)),
        })?;
        let step = match &parsed {
            Line::Event(e) => v.event(e).map(|()| LastLine::Event),
            Line::Checkpoint(cp) => v.checkpoint(cp).map(|()| LastLine::Checkpoint(cp.seq)),
        };
        last = step.map_err(|error| LedgerError::Invalid { at: at(), error })?;
        if n % 1000 == 0 {
            progress(v.last_seq(), 0);
        }
    }
    progress(v.last_seq(), 0);
    Ok(last)
}

fn partial(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.partial"))
}

/// Flushes and syncs `tmp`, renames it to `path` and syncs the directory.
fn finish_file(w: BufWriter<File>, tmp: &Path, path: &Path) -> Result<(), LedgerError> {
    let f = w.into_inner().map_err(|e| LedgerError::Io { path: tmp.to_path_buf(), source: e.into_error() })?;
    f.sync_all().map_err(io(tmp))?;
    std::fs::rename(tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_is_a_seq_or_an_rfc3339_time() {
        assert_eq!(Before::parse("120"), Ok(Before::Seq(120)));
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600);
        assert_eq!(Before::parse("2026-01-01T00:00:00Z"), Ok(Before::Time(t)));
        assert_eq!(Before::parse("2026-01-01T01:00:00+01:00"), Ok(Before::Time(t)));
        assert!(Before::parse("yesterday").unwrap_err().contains("RFC 3339"));
        assert!(Before::parse("").is_err());
    }
}
