//! Verification: the database's chain after its archive files, and export files offline.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::{FileReport, LedgerError, PAGE, Progress, VerifyReport, io};
use crate::audit::{ChainVerifier, Line, Start, VerifyError};
use crate::meta::EventFilter;
use crate::service::Registry;

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
pub(super) enum LastLine {
    None,
    Event,
    Checkpoint(i64),
}

/// Feeds a file's lines to `v`. Errors name the file (and the line when it is unreadable).
pub(super) fn walk_file(
    path: &Path,
    v: &mut ChainVerifier<'_>,
    progress: Progress<'_>,
) -> Result<LastLine, LedgerError> {
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
