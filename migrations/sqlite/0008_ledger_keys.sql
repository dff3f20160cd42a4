-- Ledger lookups by repository and digest (README "What the ledger costs"). Three B-tree
-- indexes on text columns, each updated at a random place by every append, were most of the
-- ledger's cost on manifest pushes. Instead: one narrow table of 64-bit keys (the first 8
-- bytes of sha256 of "r\0<repository>" or "d\0<digest>", for digest and previous_digest
-- alike), filled in batches behind the chain by the write that passes the batch size;
-- `ledger_keyed.seq` is how far it has got. Queries read the keys up to there and scan the
-- short tail after it, and always compare the column itself (a key collision costs one row
-- read, never a wrong answer).
DROP INDEX ledger_repository;
DROP INDEX ledger_digest;
DROP INDEX ledger_previous_digest;

CREATE TABLE ledger_keys (
    key  INTEGER NOT NULL,
    seq  INTEGER NOT NULL,
    PRIMARY KEY (key, seq)
) WITHOUT ROWID;

CREATE TABLE ledger_keyed (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL
);
INSERT INTO ledger_keyed (id, seq) VALUES (1, 0);
