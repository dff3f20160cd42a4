-- Cairn metadata, PostgreSQL: the schema of migrations/sqlite/0001–0007 as one initial
-- migration (no PostgreSQL deployment existed before it, so nothing needs the steps between).
-- Later changes are new migrations here and in migrations/sqlite, in step.
-- Times are milliseconds since the epoch (BIGINT), as in SQLite; JSON columns are TEXT written
-- and read by Cairn, as in SQLite. Text sorts and compares by bytes (COLLATE "C"), as in SQLite,
-- whatever the database's locale: listings and their `last`/`after` cursors depend on it.
--
-- Concurrency (several nodes on this database; README "PostgreSQL"): transactions run at READ
-- COMMITTED with row locks. A tag is locked `FOR UPDATE` before it is decided on; a new tag is
-- a plain INSERT, so of two nodes creating it one fails with a unique violation (retried, then
-- it sees the other's tag). `ledger_head` always has its row (seq 0 = no event yet), locked
-- `FOR UPDATE` by the first statement of every append, so appends are serialized.

CREATE TABLE repositories (
    name        TEXT COLLATE "C" PRIMARY KEY,
    created_at  BIGINT NOT NULL
);

-- A blob exists once, whatever number of repositories link it.
-- `touched_at`: the deletable-since mark for GC (see migrations/sqlite/0007_gc.sql).
CREATE TABLE blobs (
    digest      TEXT COLLATE "C" PRIMARY KEY,
    size        BIGINT NOT NULL,
    location    TEXT COLLATE "C" NOT NULL,          -- JSON BlobLocation: upload id + segment sizes
    created_at  BIGINT NOT NULL,
    touched_at  BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX blobs_touched ON blobs(touched_at);

-- Deleting a blob another repository still links is refused (RESTRICT).
CREATE TABLE repo_blobs (
    repo        TEXT COLLATE "C" NOT NULL REFERENCES repositories(name) ON DELETE RESTRICT,
    digest      TEXT COLLATE "C" NOT NULL REFERENCES blobs(digest) ON DELETE RESTRICT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX repo_blobs_digest ON repo_blobs(digest);

CREATE TABLE uploads (
    id          TEXT COLLATE "C" PRIMARY KEY,
    repo        TEXT COLLATE "C" NOT NULL,
    len         BIGINT NOT NULL DEFAULT 0,
    segments    TEXT COLLATE "C" NOT NULL DEFAULT '[]',   -- JSON array of segments
    hash_state  BYTEA,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    algorithm   TEXT COLLATE "C" NOT NULL DEFAULT 'sha256'
);
CREATE INDEX uploads_updated ON uploads(updated_at);

CREATE TABLE manifests (
    repo          TEXT COLLATE "C" NOT NULL REFERENCES repositories(name) ON DELETE RESTRICT,
    digest        TEXT COLLATE "C" NOT NULL,
    media_type    TEXT COLLATE "C" NOT NULL,
    size          BIGINT NOT NULL,
    body          BYTEA NOT NULL,
    artifact_type TEXT COLLATE "C",
    subject       TEXT COLLATE "C",
    annotations   TEXT COLLATE "C",                 -- JSON object or NULL
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX manifests_subject ON manifests(repo, subject) WHERE subject IS NOT NULL;

CREATE TABLE tags (
    repo        TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    digest      TEXT COLLATE "C" NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (repo, name),
    FOREIGN KEY (repo, digest) REFERENCES manifests(repo, digest) ON DELETE CASCADE
);
CREATE INDEX tags_digest ON tags(repo, digest);

-- Every tag create, move and delete, written in the same transaction as the change.
CREATE TABLE tag_history (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repo         TEXT COLLATE "C" NOT NULL,
    tag          TEXT COLLATE "C" NOT NULL,
    action       TEXT COLLATE "C" NOT NULL CHECK (action IN ('create', 'move', 'delete')),
    from_digest  TEXT COLLATE "C",
    to_digest    TEXT COLLATE "C",
    actor        TEXT COLLATE "C" NOT NULL,
    address      TEXT COLLATE "C",
    at           BIGINT NOT NULL
);
CREATE INDEX tag_history_tag ON tag_history(repo, tag, id);
CREATE INDEX tag_history_to ON tag_history(repo, to_digest) WHERE to_digest IS NOT NULL;
CREATE INDEX tag_history_from ON tag_history(repo, from_digest) WHERE from_digest IS NOT NULL;

-- Robot tokens for CI/CD: the secret is stored only as its SHA-256 (it is 256 random bits).
CREATE TABLE robots (
    name           TEXT COLLATE "C" PRIMARY KEY,
    secret_sha256  BYTEA NOT NULL,
    roles          TEXT COLLATE "C" NOT NULL DEFAULT '[]',   -- JSON array of role names
    grants         TEXT COLLATE "C" NOT NULL DEFAULT '[]',   -- JSON array of {repositories, actions}
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT,
    revoked_at     BIGINT
);

-- References the database enforces (DESIGN §4, STYLE §10): what a manifest uses is a row with a
-- foreign key that RESTRICTs deleting what it points at, so no code path (DELETE, retention, GC,
-- admin tools) can unlink a layer, a config or an index child that a manifest still needs.
-- A manifest's `subject` is not a reference: a referrer does not keep its subject alive.
CREATE TABLE manifest_blobs (
    repo      TEXT COLLATE "C" NOT NULL,
    manifest  TEXT COLLATE "C" NOT NULL,
    blob      TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (repo, manifest, blob),
    FOREIGN KEY (repo, manifest) REFERENCES manifests(repo, digest) ON DELETE CASCADE,
    FOREIGN KEY (repo, blob) REFERENCES repo_blobs(repo, digest) ON DELETE RESTRICT
);
CREATE INDEX manifest_blobs_blob ON manifest_blobs(repo, blob);

CREATE TABLE manifest_children (
    repo      TEXT COLLATE "C" NOT NULL,
    manifest  TEXT COLLATE "C" NOT NULL,
    child     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (repo, manifest, child),
    FOREIGN KEY (repo, manifest) REFERENCES manifests(repo, digest) ON DELETE CASCADE,
    FOREIGN KEY (repo, child) REFERENCES manifests(repo, digest) ON DELETE RESTRICT
);
CREATE INDEX manifest_children_child ON manifest_children(repo, child);

-- The audit ledger (DESIGN §7): append-only, hash-chained.
CREATE TABLE ledger (
    seq              BIGINT PRIMARY KEY,
    time             TEXT COLLATE "C" NOT NULL,          -- RFC 3339 UTC with milliseconds, as hashed
    at_ms            BIGINT NOT NULL,        -- the same instant, for range queries
    actor            TEXT COLLATE "C" NOT NULL,
    address          TEXT COLLATE "C",
    action           TEXT COLLATE "C" NOT NULL,
    repository       TEXT COLLATE "C",
    tag              TEXT COLLATE "C",
    digest           TEXT COLLATE "C",
    previous_digest  TEXT COLLATE "C",
    detail           TEXT COLLATE "C" NOT NULL DEFAULT 'null',   -- JSON
    prev_hash        TEXT COLLATE "C" NOT NULL,
    hash             TEXT COLLATE "C" NOT NULL
);
CREATE INDEX ledger_repository ON ledger(repository, seq) WHERE repository IS NOT NULL;
CREATE INDEX ledger_digest ON ledger(digest, seq) WHERE digest IS NOT NULL;
CREATE INDEX ledger_previous_digest ON ledger(previous_digest, seq) WHERE previous_digest IS NOT NULL;
CREATE INDEX ledger_at ON ledger(at_ms);

-- The head: one row, present from the start so that it can be locked before the first event
-- (seq 0 and an empty hash mean "no event yet"; reads treat it as no head).
CREATE TABLE ledger_head (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    seq   BIGINT NOT NULL,
    hash  TEXT COLLATE "C" NOT NULL
);
INSERT INTO ledger_head (id, seq, hash) VALUES (1, 0, '');

-- Signed checkpoints over the head (Ed25519, see src/audit/checkpoint.rs).
CREATE TABLE ledger_checkpoints (
    seq        BIGINT PRIMARY KEY,
    hash       TEXT COLLATE "C" NOT NULL,
    time       TEXT COLLATE "C" NOT NULL,
    signature  TEXT COLLATE "C" NOT NULL
);

-- Where an archive cut the chain: events up to `seq` moved to an archive file whose last
-- hash is `hash`; verification of the database continues from here.
CREATE TABLE ledger_archives (
    seq   BIGINT PRIMARY KEY,
    hash  TEXT COLLATE "C" NOT NULL,
    file  TEXT COLLATE "C" NOT NULL,
    at_ms BIGINT NOT NULL
);

-- Pulls are counters, not events.
CREATE TABLE manifest_pulls (
    repo         TEXT COLLATE "C" NOT NULL,
    digest       TEXT COLLATE "C" NOT NULL,
    count        BIGINT NOT NULL,
    last_pulled  BIGINT NOT NULL,
    PRIMARY KEY (repo, digest),
    FOREIGN KEY (repo, digest) REFERENCES manifests(repo, digest) ON DELETE CASCADE
);

-- One row that `/readyz` (and `serve` at start) rewrites to prove the database can commit a
-- write. It holds no registry data.
CREATE TABLE write_check (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at BIGINT NOT NULL
);

-- Uploads whose objects may still exist although no session and no blob names them any more.
CREATE TABLE upload_garbage (
    upload      TEXT COLLATE "C" PRIMARY KEY,
    since       BIGINT NOT NULL
);

-- One collector at a time, across processes and nodes.
CREATE TABLE gc_lock (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    holder      TEXT COLLATE "C" NOT NULL,
    expires_at  BIGINT NOT NULL
);
