-- Signing keys every node shares (token signing, ledger checkpoints) when no key file is
-- configured: one row per key, written once by whichever node starts first.
CREATE TABLE signing_keys (
    name TEXT PRIMARY KEY,
    pkcs8 BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
