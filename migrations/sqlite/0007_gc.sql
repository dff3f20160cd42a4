-- Online garbage collection (DESIGN §6, STYLE §10). The database decides; the object store is
-- never listed.
--
-- `blobs.touched_at`: the deletable-since mark. The latest time the blob was linked (upload
-- commit, mount), unlinked, or checked with HEAD. A blob is collected when no `repo_blobs` row
-- names it and `touched_at` is older than `[gc] grace`; the deleting transaction re-checks both.
-- Existing blobs start their grace at this migration.
ALTER TABLE blobs ADD COLUMN touched_at INTEGER NOT NULL DEFAULT 0;
UPDATE blobs SET touched_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000;
CREATE INDEX blobs_touched ON blobs(touched_at);

-- Uploads whose objects may still exist although no session and no blob names them any more
-- (cancelled, expired, committed as a duplicate, or their blob collected). The collector
-- removes their objects and then the row, so a crash between the two only delays the removal.
CREATE TABLE upload_garbage (
    upload      TEXT PRIMARY KEY,
    since       INTEGER NOT NULL
) WITHOUT ROWID;

-- One collector at a time, across processes and nodes: the single row is taken in a write
-- transaction and held until `expires_at` (renewed while the collector runs).
CREATE TABLE gc_lock (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    holder      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
