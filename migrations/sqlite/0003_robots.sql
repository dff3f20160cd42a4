-- Robot tokens for CI/CD: the secret is stored only as its SHA-256 (it is 256 random bits).
CREATE TABLE robots (
    name           TEXT PRIMARY KEY,
    secret_sha256  BLOB NOT NULL,
    roles          TEXT NOT NULL DEFAULT '[]',   -- JSON array of role names
    grants         TEXT NOT NULL DEFAULT '[]',   -- JSON array of {repositories, actions}
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER,
    revoked_at     INTEGER
) WITHOUT ROWID;
