-- Cairn metadata, SQLite. Times are milliseconds since the epoch.

CREATE TABLE repositories (
    name        TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- A blob exists once, whatever number of repositories link it.
CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    location    TEXT NOT NULL,          -- JSON BlobLocation: upload id + segment sizes
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE repo_blobs (
    repo        TEXT NOT NULL REFERENCES repositories(name),
    digest      TEXT NOT NULL REFERENCES blobs(digest),
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (repo, digest)
) WITHOUT ROWID;
CREATE INDEX repo_blobs_digest ON repo_blobs(digest);

CREATE TABLE uploads (
    id          TEXT PRIMARY KEY,
    repo        TEXT NOT NULL,
    len         INTEGER NOT NULL DEFAULT 0,
    segments    TEXT NOT NULL DEFAULT '[]',   -- JSON array of segment sizes
    hash_state  BLOB,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX uploads_updated ON uploads(updated_at);

CREATE TABLE manifests (
    repo          TEXT NOT NULL REFERENCES repositories(name),
    digest        TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    size          INTEGER NOT NULL,
    body          BLOB NOT NULL,
    artifact_type TEXT,
    subject       TEXT,
    annotations   TEXT,                 -- JSON object or NULL
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (repo, digest)
) WITHOUT ROWID;
CREATE INDEX manifests_subject ON manifests(repo, subject) WHERE subject IS NOT NULL;

-- What each manifest references: blobs (config, layers) or manifests (index children).
CREATE TABLE manifest_refs (
    repo      TEXT NOT NULL,
    manifest  TEXT NOT NULL,
    child     TEXT NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
    PRIMARY KEY (repo, manifest, child),
    FOREIGN KEY (repo, manifest) REFERENCES manifests(repo, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX manifest_refs_child ON manifest_refs(repo, child);

CREATE TABLE tags (
    repo        TEXT NOT NULL,
    name        TEXT NOT NULL,
    digest      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (repo, name),
    FOREIGN KEY (repo, digest) REFERENCES manifests(repo, digest) ON DELETE CASCADE
) WITHOUT ROWID;
