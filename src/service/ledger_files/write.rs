//! Writing the ledger out: exports and archives, each ending at a signed checkpoint.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::verify::walk_file;
use super::{ArchiveReport, Before, ExportReport, LedgerError, PAGE, io};
use crate::audit::chain::rfc3339_millis;
use crate::audit::{ChainVerifier, Checkpoint, CheckpointKey, Event, Line, Start};
use crate::meta::{EventFilter, millis};
use crate::service::Registry;

impl Registry {
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
