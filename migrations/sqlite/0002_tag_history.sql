-- Every tag create, move and delete, written in the same transaction as the change.
CREATE TABLE tag_history (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    repo         TEXT NOT NULL,
    tag          TEXT NOT NULL,
    action       TEXT NOT NULL CHECK (action IN ('create', 'move', 'delete')),
    from_digest  TEXT,
    to_digest    TEXT,
    actor        TEXT NOT NULL,
    address      TEXT,
    at           INTEGER NOT NULL
);
CREATE INDEX tag_history_tag ON tag_history(repo, tag, id);
