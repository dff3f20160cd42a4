//! The ledger's whole-chain work behind `cairn audit` (DESIGN §7): verification of the
//! database and its archive files and the offline check of export files with the public key
//! alone (`verify`), exports and archiving (`write`). Files are JSON lines in the format of
//! `audit::export`; these modules read and write them with blocking I/O (a command-line
//! process, not a request). This file holds the shared types.

mod verify;
mod write;

pub use verify::verify_files;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::audit::{Verified, VerifyError};
use crate::meta::MetaError;

/// How many events one page of a walk reads.
pub(super) const PAGE: u32 = 5_000;

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

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io { path: path.to_path_buf(), source }
}

/// Progress of a long walk: called with `(seq reached, last seq expected or 0 if unknown)`.
pub type Progress<'a> = &'a mut dyn FnMut(i64, i64);

/// What [`Registry::verify_ledger`](crate::service::Registry::verify_ledger) checked.
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
