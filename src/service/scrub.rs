//! `cairn scrub`: reads every stored blob back and hashes it again (its own algorithm,
//! sha256 or sha512), streaming, so that bit rot, truncated or lost objects are found before a
//! client pulls them. Safe while the registry serves: blob rows are read in batches, each from
//! a short read snapshot (no transaction stays open for the whole run), and a blob found
//! missing or damaged is looked up again before it is reported, so that one a collector
//! deleted meanwhile is counted as gone, not as lost. Nothing is changed or repaired: the
//! report names each bad blob's digest, what is wrong and which repositories link it (push it
//! again, or restore it from a backup).

use std::sync::Mutex;

use futures::StreamExt;

use super::Registry;
use crate::error::Error;
use crate::meta::BlobRecord;
use crate::meta::copy::{BLOBS, Value, blob_record};
use crate::oci::{Digest, Hasher};

/// Blobs read at once (each streams; this bounds memory and requests in flight).
const BLOBS_AT_ONCE: usize = 4;
/// Repositories named per bad blob.
const REPOSITORIES_NAMED: u32 = 10;

/// What is wrong with a blob.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// Objects that hold its bytes are not in the store (keys named).
    Missing {
        /// The missing objects' keys.
        objects: Vec<String>,
    },
    /// The stored bytes are not as many as recorded.
    SizeMismatch {
        /// The size the database records (the digest's content length).
        recorded: u64,
        /// The size found in the store.
        stored: u64,
    },
    /// The stored bytes hash to another digest.
    HashMismatch {
        /// What they hash to.
        actual: String,
    },
    /// The store failed while the bytes were read.
    Unreadable {
        /// How.
        error: String,
    },
}

impl Problem {
    /// True for a missing blob (the rest are damaged).
    pub fn is_missing(&self) -> bool {
        matches!(self, Problem::Missing { .. })
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing { objects } => write!(f, "missing: object {} not in the store", objects.join(", ")),
            Problem::SizeMismatch { recorded, stored } => {
                write!(f, "damaged: {stored} bytes stored, {recorded} recorded")
            }
            Problem::HashMismatch { actual } => write!(f, "damaged: the stored bytes hash to {actual}"),
            Problem::Unreadable { error } => write!(f, "damaged: cannot be read: {error}"),
        }
    }
}

/// One bad blob.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// Its digest.
    pub digest: String,
    /// Its recorded size.
    pub size: u64,
    /// What is wrong.
    #[serde(flatten)]
    pub problem: Problem,
    /// Repositories that link it (at most ten), by name.
    pub repositories: Vec<String>,
}

/// What a scrub found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ScrubReport {
    /// Blobs checked.
    pub blobs: u64,
    /// Bytes read and hashed.
    pub bytes: u64,
    /// Blobs whose bytes are as recorded.
    pub healthy: u64,
    /// Blobs whose objects are missing.
    pub missing: Vec<Finding>,
    /// Blobs whose bytes are damaged (size or hash) or cannot be read.
    pub damaged: Vec<Finding>,
    /// Blobs found bad but deleted (by a collector) before they could be reported.
    pub deleted_meanwhile: u64,
}

impl ScrubReport {
    /// True when nothing is missing or damaged.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.damaged.is_empty()
    }
}

/// Where a scrub is, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrubProgress {
    /// Blobs checked so far.
    pub blobs: u64,
    /// Bytes hashed so far.
    pub bytes: u64,
    /// Bytes of every blob when the scrub started.
    pub total_bytes: u64,
}

impl Registry {
    /// Checks every stored blob (see the module header). `progress` is called as bytes are
    /// hashed. Fails only when the database or the store cannot be asked at all.
    pub async fn scrub(&self, progress: &mut (dyn FnMut(ScrubProgress) + Send)) -> Result<ScrubReport, Error> {
        let total_bytes = self.meta.storage_totals().await?.blob_bytes;
        let mut report = ScrubReport::default();
        let shown = Mutex::new((ScrubProgress { blobs: 0, bytes: 0, total_bytes }, progress));
        let tick = |blobs: u64, bytes: u64| {
            if let Ok(mut g) = shown.lock() {
                g.0.blobs += blobs;
                g.0.bytes += bytes;
                g.0.total_bytes = g.0.total_bytes.max(g.0.bytes);
                let p = g.0;
                (g.1)(p);
            }
        };
        tick(0, 0);
        let mut after: Option<Vec<Value>> = None;
        loop {
            let mut dump = self.meta.dump().await?;
            let rows = dump.rows(&BLOBS, after.as_deref()).await;
            dump.finish().await.ok();
            let rows = rows?;
            let Some(last) = rows.last() else { break };
            let batch_after = after.replace(BLOBS.key_of(last));
            let blobs = rows.iter().map(blob_record).collect::<Result<Vec<BlobRecord>, _>>()?;
            let mut checks = futures::stream::iter(blobs.iter().enumerate().map(|(i, b)| {
                let tick = &tick;
                async move { (i, self.check_blob(b, &|n| tick(0, n)).await) }
            }))
            .buffer_unordered(BLOBS_AT_ONCE);
            let mut bad = Vec::new();
            while let Some((i, checked)) = checks.next().await {
                let (problem, bytes) = checked?;
                report.blobs += 1;
                report.bytes += bytes;
                tick(1, 0);
                match problem {
                    None => report.healthy += 1,
                    Some(p) => bad.push((i, p)),
                }
            }
            drop(checks);
            bad.sort_by_key(|(i, _)| *i);
            for (i, problem) in bad {
                let b = &blobs[i];
                let before = match i {
                    0 => batch_after.clone(),
                    _ => Some(vec![Value::Text(blobs[i - 1].digest.to_string())]),
                };
                if !self.still_recorded(before, b).await? {
                    report.deleted_meanwhile += 1;
                    continue;
                }
                let repositories = self.meta.blob_repositories(&b.digest, REPOSITORIES_NAMED).await?;
                let finding = Finding { digest: b.digest.to_string(), size: b.size, problem, repositories };
                match finding.problem.is_missing() {
                    true => report.missing.push(finding),
                    false => report.damaged.push(finding),
                }
            }
        }
        Ok(report)
    }

    /// Checks one blob: `(problem, bytes hashed)`. `on_bytes` gets the bytes as they are read.
    async fn check_blob(
        &self,
        b: &BlobRecord,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<(Option<Problem>, u64), Error> {
        let objects = self.blobs.inspect(&b.location).await?;
        let missing: Vec<String> = objects.iter().filter(|o| o.stored.is_none()).map(|o| o.key.clone()).collect();
        if !missing.is_empty() {
            return Ok((Some(Problem::Missing { objects: missing }), 0));
        }
        let stored: u64 = objects.iter().filter_map(|o| o.stored).sum();
        let recorded: u64 = objects.iter().map(|o| o.recorded).sum();
        if stored != b.size || recorded != b.size || objects.iter().any(|o| o.stored != Some(o.recorded)) {
            return Ok((Some(Problem::SizeMismatch { recorded: b.size, stored }), 0));
        }
        let mut hasher = Hasher::new(b.digest.algorithm());
        let mut n = 0u64;
        let unreadable = |e: object_store::Error| Problem::Unreadable { error: e.to_string() };
        let mut body = match self.blobs.read(&b.location, 0..b.size).await {
            Ok(s) => s,
            Err(object_store::Error::NotFound { path, .. }) => {
                return Ok((Some(Problem::Missing { objects: vec![path] }), 0));
            }
            Err(e) => return Ok((Some(unreadable(e)), 0)),
        };
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return Ok((Some(unreadable(e)), n)),
            };
            hasher.update(&chunk);
            n += chunk.len() as u64;
            on_bytes(chunk.len() as u64);
        }
        if n != b.size {
            return Ok((Some(Problem::SizeMismatch { recorded: b.size, stored: n }), n));
        }
        let actual: Digest = hasher.finish();
        if actual != b.digest {
            return Ok((Some(Problem::HashMismatch { actual: actual.to_string() }), n));
        }
        Ok((None, n))
    }

    /// True when the database still records `b` as it was read (same objects): rows after the
    /// key `before` (the blob listed before it) from a fresh snapshot are searched for it.
    async fn still_recorded(&self, before: Option<Vec<Value>>, b: &BlobRecord) -> Result<bool, Error> {
        let mut dump = self.meta.dump().await?;
        let rows = dump.rows(&BLOBS, before.as_deref()).await;
        dump.finish().await.ok();
        let rows = rows?;
        for row in &rows {
            let r = blob_record(row)?;
            if r.digest == b.digest {
                return Ok(r.location == b.location);
            }
        }
        // Not in a full batch after its predecessor: more blobs than a batch were committed
        // before it meanwhile. Report it rather than hide a loss.
        Ok(rows.len() >= crate::meta::copy::BATCH_ROWS as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_read_as_sentences_and_serialize_flat() {
        let f = Finding {
            digest: "sha256:ab".into(),
            size: 5,
            problem: Problem::SizeMismatch { recorded: 5, stored: 3 },
            repositories: vec!["apps/web".into()],
        };
        assert_eq!(f.problem.to_string(), "damaged: 3 bytes stored, 5 recorded");
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["problem"], "size_mismatch");
        assert_eq!(v["stored"], 3);
        assert!(!f.problem.is_missing());
        assert!(Problem::Missing { objects: vec!["k".into()] }.to_string().contains("object k not in the store"));
    }
}
