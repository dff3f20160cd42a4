-- The audit ledger (DESIGN §7): append-only, hash-chained. `ledger_head` is one row that every
-- appending transaction updates as its last statement; in SQLite the write lock (BEGIN
-- IMMEDIATE) already orders appends, in PostgreSQL the row lock does (see README "Ledger").
CREATE TABLE ledger (
    seq              INTEGER PRIMARY KEY,
    time             TEXT NOT NULL,          -- RFC 3339 UTC with milliseconds, as hashed
    at_ms            INTEGER NOT NULL,       -- the same instant, for range queries
    actor            TEXT NOT NULL,
    address          TEXT,
    action           TEXT NOT NULL,
    repository       TEXT,
    tag              TEXT,
    digest           TEXT,
    previous_digest  TEXT,
    detail           TEXT NOT NULL DEFAULT 'null',   -- JSON
    prev_hash        TEXT NOT NULL,
    hash             TEXT NOT NULL
);
CREATE INDEX ledger_repository ON ledger(repository, seq) WHERE repository IS NOT NULL;
CREATE INDEX ledger_digest ON ledger(digest, seq) WHERE digest IS NOT NULL;
CREATE INDEX ledger_previous_digest ON ledger(previous_digest, seq) WHERE previous_digest IS NOT NULL;
CREATE INDEX ledger_at ON ledger(at_ms);

CREATE TABLE ledger_head (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    seq   INTEGER NOT NULL,
    hash  TEXT NOT NULL
);

-- Signed checkpoints over the head (Ed25519, see src/audit/checkpoint.rs).
CREATE TABLE ledger_checkpoints (
    seq        INTEGER PRIMARY KEY,
    hash       TEXT NOT NULL,
    time       TEXT NOT NULL,
    signature  TEXT NOT NULL
);

-- Where an archive cut the chain: events up to `seq` moved to an archive file whose last
-- hash is `hash`; verification of the database continues from here.
CREATE TABLE ledger_archives (
    seq   INTEGER PRIMARY KEY,
    hash  TEXT NOT NULL,
    file  TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);

-- Pulls are counters, not events (Harbor's audit table grew to 75 million rows that way).
CREATE TABLE manifest_pulls (
    repo         TEXT NOT NULL,
    digest       TEXT NOT NULL,
    count        INTEGER NOT NULL,
    last_pulled  INTEGER NOT NULL,
    PRIMARY KEY (repo, digest),
    FOREIGN KEY (repo, digest) REFERENCES manifests(repo, digest) ON DELETE CASCADE
) WITHOUT ROWID;
