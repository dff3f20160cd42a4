//! Direct (`O_DIRECT`) segment files for the filesystem backend: a segment is written from
//! aligned buffers straight to the disk instead of through the page cache.
//!
//! Why: on the VMs Cairn was measured on, a buffered write of a new file is bound by growing
//! the page cache (349 MB/s where the same disk takes 2.5 GB/s with `O_DIRECT`, README
//! "Performance"). A push streams through two [`BLOCK`]-sized buffers: one fills from the
//! request while the other is written by a blocking task, so receiving, hashing (the
//! caller's `observe`) and writing overlap.
//!
//! Durability is object_store's `with_fsync` contract, reproduced: the data goes to a staged
//! file `<name>#<digits>` (object_store's own staging name, hidden from listings) in the
//! upload's directory (created if needed), which is fsynced, renamed to `<name>`, and its
//! directory fsynced, then the directory above it (`uploads/`, which holds the upload's
//! directory; fsynced by every write, since the writer that made the upload's directory may
//! have been cut off), and any other directory the write created with the first one above
//! them that existed, all before [`DirectFile::finish`] returns. object_store fsyncs new
//! directories as it makes them; here they go last, where a filesystem that journals
//! metadata in order (ext4, XFS) has already made them durable with the file, instead of each
//! waiting for a journal commit of its own before the data is written (one less commit in a
//! small blob's path: +5% small blobs/s, README "Performance"). A failed or abandoned
//! write removes the staged file; one cut off by a crash is a stray that
//! `BlobStore::remove_strays` or the upload's removal deletes, as it does object_store's.
//!
//! The last block is padded to the alignment with zeros and the file then cut to its length
//! (`set_len` before the fsync). A filesystem that refuses `O_DIRECT` (tmpfs before Linux
//! 6.6, some FUSE mounts) makes [`DirectFile::create`] return `None`; the caller then writes
//! through object_store and stops trying.
//! Linux only; elsewhere `create` always returns `None`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes per direct write: what a segment's writer holds in each of its two buffers.
pub(super) const BLOCK: usize = 4 << 20;
/// Alignment of buffer addresses, file offsets and lengths (the largest logical block size
/// in common use).
const ALIGN: usize = 4096;

/// A [`BLOCK`]-sized buffer whose start is [`ALIGN`]-aligned, in safe code: a vector with
/// room for one alignment more, whose first bytes (up to the aligned address) are skipped.
/// Only what is filled is ever touched, so a small segment costs a page or two, not 4 MiB
/// of zeroing.
pub(super) struct Block {
    raw: Vec<u8>,
    /// Index of the first aligned byte.
    start: usize,
}

impl Block {
    fn new() -> Block {
        let mut raw: Vec<u8> = Vec::with_capacity(BLOCK + ALIGN);
        let start = (ALIGN - raw.as_ptr() as usize % ALIGN) % ALIGN;
        raw.resize(start, 0);
        Block { raw, start }
    }

    /// Bytes filled.
    fn len(&self) -> usize {
        self.raw.len() - self.start
    }

    /// Copies as much of `data` as fits; returns how much.
    pub(super) fn fill(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(BLOCK - self.len());
        self.raw.extend_from_slice(&data[..n]);
        n
    }

    pub(super) fn is_full(&self) -> bool {
        self.len() == BLOCK
    }

    /// Empties it for the next fill.
    fn clear(&mut self) {
        self.raw.truncate(self.start);
    }

    /// The filled bytes padded with zeros to the alignment (what a direct write may take).
    /// The vector never grows past its capacity, so the aligned start stays where it was.
    fn padded(&mut self) -> &[u8] {
        let end = self.len().div_ceil(ALIGN) * ALIGN;
        self.raw.resize(self.start + end, 0);
        &self.raw[self.start..]
    }
}

/// A staged direct file being written; [`DirectFile::finish`] publishes it,
/// [`DirectFile::abandon`] (or a drop) removes it.
pub(super) struct DirectFile {
    file: Arc<std::fs::File>,
    staged: PathBuf,
    dest: PathBuf,
    /// Bytes handed to writes so far (the next write's offset).
    offset: u64,
    /// The write in flight, which hands its buffer back.
    pending: Option<tokio::task::JoinHandle<io::Result<Block>>>,
    /// The buffer being filled.
    pub(super) block: Block,
    /// True once published or removed.
    done: bool,
    /// Directories this write created, and the first one above them that existed: fsynced
    /// by [`DirectFile::finish`] with the file's own, not when they were made.
    new_dirs: Vec<PathBuf>,
}

impl DirectFile {
    /// Creates the staged file for `dest` (creating and fsyncing its directory as needed).
    /// `Ok(None)` when the filesystem (or the platform) does not do `O_DIRECT`.
    pub(super) async fn create(dest: PathBuf) -> io::Result<Option<DirectFile>> {
        // `<name>#<digits>` is object_store's own staging name, which its listings skip; a
        // large random number keeps clear of its counter (1, 2, …) and of other writers.
        let digits = uuid::Uuid::new_v4().as_u128() % 1_000_000_000_000_000_000 + 1_000_000_000;
        let staged = PathBuf::from(format!("{}#{digits}", dest.display()));
        let (s, d) = (staged.clone(), dest.clone());
        let opened = tokio::task::spawn_blocking(move || open_direct(&s, &d)).await.map_err(io::Error::other)??;
        Ok(opened.map(|(file, new_dirs)| DirectFile {
            file: Arc::new(file),
            staged,
            dest,
            offset: 0,
            pending: None,
            block: Block::new(),
            done: false,
            new_dirs,
        }))
    }

    /// Writes the full buffer in a blocking task and hands back the other one to fill (after
    /// the write before it has finished).
    pub(super) async fn submit(&mut self) -> io::Result<()> {
        let spare = match self.pending.take() {
            Some(w) => w.await.map_err(io::Error::other)??,
            None => Block::new(),
        };
        let mut full = std::mem::replace(&mut self.block, spare);
        let (file, offset) = (self.file.clone(), self.offset);
        self.offset += BLOCK as u64;
        self.pending = Some(tokio::task::spawn_blocking(move || {
            write_direct(&file, full.padded(), offset)?;
            full.clear();
            Ok(full)
        }));
        Ok(())
    }

    /// Writes what is left, cuts the file to `len` bytes, fsyncs it, renames it into place
    /// and fsyncs its directory.
    pub(super) async fn finish(mut self, len: u64) -> io::Result<()> {
        if let Some(w) = self.pending.take() {
            w.await.map_err(io::Error::other)??;
        }
        let mut last = std::mem::replace(&mut self.block, Block { raw: Vec::new(), start: 0 });
        let (file, offset) = (self.file.clone(), self.offset);
        let (staged, dest) = (self.staged.clone(), self.dest.clone());
        let new_dirs = std::mem::take(&mut self.new_dirs);
        let published = tokio::task::spawn_blocking(move || {
            if last.len() > 0 {
                write_direct(&file, last.padded(), offset)?;
            }
            file.set_len(len)?;
            file.sync_all()?;
            std::fs::rename(&staged, &dest)?;
            let dir = dest.parent().unwrap_or(Path::new("."));
            sync_dir(dir)?;
            // The upload's directory may be new: made by this write, or by an earlier one of
            // the session that was cut off or is still running. Every write makes its entry
            // durable, not only the one that made it.
            let parent = dir.parent();
            if let Some(parent) = parent {
                sync_dir(parent)?;
            }
            // Any other directory made for this file (see the header).
            new_dirs.iter().filter(|d| d.as_path() != dir && Some(d.as_path()) != parent).try_for_each(|d| sync_dir(d))
        })
        .await
        .map_err(io::Error::other)?;
        if published.is_ok() {
            self.done = true;
        }
        published
    }

    /// Removes the staged file (after the write in flight, if any, has ended).
    pub(super) async fn abandon(mut self) {
        if let Some(w) = self.pending.take() {
            let _ = w.await;
        }
        self.done = true;
        let _ = tokio::fs::remove_file(&self.staged).await;
    }
}

impl Drop for DirectFile {
    /// A write dropped midway (the request went away) leaves no staged file behind. A write
    /// still in flight holds its own handle; unlinking the name under it is harmless.
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.staged);
        }
    }
}

/// Opens `staged` for direct writing, creating `dest`'s directory if needed; with the file,
/// the directories to fsync before the write is durable (none when the directory existed).
#[cfg(target_os = "linux")]
fn open_direct(staged: &Path, dest: &Path) -> io::Result<Option<(std::fs::File, Vec<PathBuf>)>> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = || std::fs::OpenOptions::new().write(true).create_new(true).custom_flags(libc::O_DIRECT).open(staged);
    let mut new_dirs = Vec::new();
    let file = match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            new_dirs = create_dirs(dest.parent().unwrap_or(Path::new(".")))?;
            open()
        }
        other => other,
    };
    match file {
        Ok(f) => Ok(Some((f, new_dirs))),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // Linux creates the file before it checks the flag: remove what the refusal left.
            let _ = std::fs::remove_file(staged);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// One aligned direct write of all of `buf` at `offset`. A short write is not retried (the
/// rest would start unaligned and fail with EINVAL, hiding the cause): on a regular file it
/// means the disk or a quota is full, and it is reported so (507 to the client).
fn write_direct(file: &std::fs::File, buf: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    loop {
        match file.write_at(buf, offset) {
            Ok(n) if n == buf.len() => return Ok(()),
            Ok(n) => {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!("the disk took {n} of {} bytes of a direct write: it is full", buf.len()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_staged: &Path, _dest: &Path) -> io::Result<Option<(std::fs::File, Vec<PathBuf>)>> {
    Ok(None)
}

/// `create_dir_all(dir)`; returns every directory it created and the first one that
/// already existed (its entry list changed): what object_store's `with_fsync` fsyncs at
/// once, and [`DirectFile::finish`] fsyncs with the file.
fn create_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) => existing = p,
            None => break,
        }
    }
    std::fs::create_dir_all(dir)?;
    let mut dirs = vec![dir.to_path_buf()];
    let mut d = dir;
    while d != existing
        && let Some(p) = d.parent()
    {
        dirs.push(p.to_path_buf());
        d = p;
    }
    Ok(dirs)
}

/// Makes `dir` (and what it needs above it) and fsyncs it, its parent and its grandparent:
/// `uploads/` at start, so that a segment write only ever makes its upload's directory, whose
/// entry in `uploads/` every write fsyncs.
pub(super) fn ensure_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    dir.ancestors().take(3).try_for_each(sync_dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_aligned_pads_with_zeros_and_never_moves() {
        let mut b = Block::new();
        let at = b.raw.as_ptr() as usize + b.start;
        assert_eq!(at % ALIGN, 0);
        assert_eq!(b.fill(b"abcd"), 4);
        let p = b.padded();
        assert_eq!((p.len(), p.as_ptr() as usize), (ALIGN, at));
        assert_eq!(&p[..4], b"abcd");
        assert!(p[4..].iter().all(|&x| x == 0));
        b.clear();
        let big = vec![1u8; BLOCK + 10];
        assert_eq!(b.fill(&big[..3]), 3);
        assert_eq!(b.fill(&big), BLOCK - 3, "fills to the block and no further");
        assert!(b.is_full());
        let p = b.padded();
        assert_eq!((p.len(), p.as_ptr() as usize), (BLOCK, at), "a full block needs no padding");
    }
}
