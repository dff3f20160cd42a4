-- References the database enforces (DESIGN §4, STYLE §10): what a manifest uses is a row with a
-- foreign key that RESTRICTs deleting what it points at, so no code path (DELETE, retention, GC,
-- admin tools) can unlink a layer, a config or an index child that a manifest still needs.
-- A manifest's `subject` is not a reference: a referrer does not keep its subject alive.

-- Blobs (config and layers) a manifest uses, linked to the same repository.
CREATE TABLE manifest_blobs (
    repo      TEXT NOT NULL,
    manifest  TEXT NOT NULL,
    blob      TEXT NOT NULL,
    PRIMARY KEY (repo, manifest, blob),
    FOREIGN KEY (repo, manifest) REFERENCES manifests(repo, digest) ON DELETE CASCADE,
    FOREIGN KEY (repo, blob) REFERENCES repo_blobs(repo, digest) ON DELETE RESTRICT
) WITHOUT ROWID;
CREATE INDEX manifest_blobs_blob ON manifest_blobs(repo, blob);

-- Manifests an index lists, in the same repository.
CREATE TABLE manifest_children (
    repo      TEXT NOT NULL,
    manifest  TEXT NOT NULL,
    child     TEXT NOT NULL,
    PRIMARY KEY (repo, manifest, child),
    FOREIGN KEY (repo, manifest) REFERENCES manifests(repo, digest) ON DELETE CASCADE,
    FOREIGN KEY (repo, child) REFERENCES manifests(repo, digest) ON DELETE RESTRICT
) WITHOUT ROWID;
CREATE INDEX manifest_children_child ON manifest_children(repo, child);

-- Repair what the old schema let happen: a layer unlinked while a manifest still used it is
-- linked again when its bytes are still stored (they always are: nothing deleted blob rows).
INSERT OR IGNORE INTO repo_blobs (repo, digest, created_at)
    SELECT r.repo, r.child, CAST(strftime('%s', 'now') AS INTEGER) * 1000
    FROM manifest_refs r JOIN blobs b ON b.digest = r.child
    WHERE r.kind = 'blob';

INSERT INTO manifest_blobs (repo, manifest, blob)
    SELECT r.repo, r.manifest, r.child FROM manifest_refs r
    WHERE r.kind = 'blob'
      AND EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.repo = r.repo AND rb.digest = r.child);

INSERT INTO manifest_children (repo, manifest, child)
    SELECT r.repo, r.manifest, r.child FROM manifest_refs r
    WHERE r.kind = 'manifest'
      AND EXISTS (SELECT 1 FROM manifests m WHERE m.repo = r.repo AND m.digest = r.child);

DROP TABLE manifest_refs;

-- The digest algorithm an upload session hashes with (`sha256` or `sha512`).
ALTER TABLE uploads ADD COLUMN algorithm TEXT NOT NULL DEFAULT 'sha256';

-- An empty `artifactType` counts as missing for the referrers API (spec "Listing Referrers").
UPDATE manifests
   SET artifact_type = CASE
       WHEN media_type IN ('application/vnd.oci.image.manifest.v1+json',
                           'application/vnd.docker.distribution.manifest.v2+json')
       THEN json_extract(CAST(body AS TEXT), '$.config.mediaType')
       ELSE NULL END
 WHERE artifact_type = '';
