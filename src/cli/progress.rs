//! Progress on stderr, drawn only when stderr is a terminal (a pipe or a log file gets none):
//! the audit ledger's verification, `migrate --copy-to`'s bars (blob bytes, then rows per
//! table), and backup and restore's (blobs hard-linked, then the copy's).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::output::tell;

/// A bar on stderr of `len` (unknown: `None`) drawn with `template`.
pub fn stderr_bar(len: Option<u64>, template: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// The ledger verification's bar (seqs of a known total, or a spinner), only when stderr is a
/// terminal.
pub fn progress_bar(known_length: bool) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let template = if known_length {
        "verifying the audit ledger: seq {pos}/{len} {wide_bar} {elapsed}"
    } else {
        "{spinner} verifying: seq {pos} {elapsed}"
    };
    Some(stderr_bar(None, template))
}

/// Moves the ledger verification's bar to `seq` of `total` (unknown: 0).
pub fn show_progress(bar: &Option<ProgressBar>, seq: i64, total: i64) {
    if let Some(b) = bar {
        if total > 0 {
            b.set_length(total as u64);
        }
        b.set_position(seq.max(0) as u64);
    }
}

/// The copy's progress on stderr, only when stderr is a terminal: a bar of blob bytes, then
/// one of rows per table.
pub struct CopyBar {
    terminal: bool,
    bar: Option<(&'static str, ProgressBar)>,
}

impl CopyBar {
    pub fn new() -> CopyBar {
        CopyBar { terminal: std::io::stderr().is_terminal(), bar: None }
    }

    pub fn show(&mut self, p: cairn::service::copy::CopyProgress) {
        use cairn::service::copy::CopyProgress;
        if !self.terminal {
            return;
        }
        let (stage, template, done, total) = match p {
            CopyProgress::Blobs { bytes, total } => {
                ("blobs", "blobs: {bytes}/{total_bytes} {wide_bar} {binary_bytes_per_sec} {elapsed}", bytes, total)
            }
            CopyProgress::Rows { table, done, total } => {
                (table, "rows: {msg} {pos}/{len} {wide_bar} {elapsed}", done, total)
            }
        };
        if self.bar.as_ref().is_none_or(|(s, _)| *s != stage) {
            self.finish();
            let bar = stderr_bar(Some(total), template);
            bar.set_message(stage);
            self.bar = Some((stage, bar));
        }
        if let Some((_, b)) = &self.bar {
            b.set_length(total);
            b.set_position(done);
        }
    }

    pub fn finish(&mut self) {
        if let Some((_, b)) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// Backup and restore progress on stderr, only on a terminal: blobs linked, then the copy's bars.
/// Waiting for a collector's maintenance lock is said on any stderr.
pub struct BackupBar {
    copy: CopyBar,
    link: Option<ProgressBar>,
}

impl BackupBar {
    pub fn new() -> BackupBar {
        BackupBar { copy: CopyBar::new(), link: None }
    }

    pub fn show(&mut self, p: cairn::service::BackupProgress) {
        use cairn::service::BackupProgress;
        match p {
            BackupProgress::Waiting { holder } => {
                tell!("waiting for a GC or retention run to finish (it holds the maintenance lock: {holder})");
            }
            BackupProgress::Link { done, total } if self.copy.terminal => {
                let bar = self.link.get_or_insert_with(|| {
                    stderr_bar(Some(total), "hard-linking blobs: {pos}/{len} {wide_bar} {elapsed}")
                });
                bar.set_length(total);
                bar.set_position(done);
            }
            BackupProgress::Link { .. } => {}
            BackupProgress::Copy(c) => {
                if let Some(b) = self.link.take() {
                    b.finish_and_clear();
                }
                self.copy.show(c);
            }
        }
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.link.take() {
            b.finish_and_clear();
        }
        self.copy.finish();
    }
}
