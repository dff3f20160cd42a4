-- One row that `/readyz` (and `serve` at start) rewrites to prove the database can commit a
-- write. It holds no registry data.
CREATE TABLE write_check (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at INTEGER NOT NULL
);
