//! `Route::parse`: the only code that knows `/v2` URL shapes. Repository names contain
//! slashes (and may contain a `blobs` or `manifests` segment), so the path is matched from
//! the right, where every suffix has a fixed length.

use crate::error::Error;
use crate::oci::{Digest, DigestError, NameError, Reference, RepoName};

/// A parsed `/v2/...` path (everything after `/v2/`).
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/manifests/<reference>`
    Manifest { name: RepoName, reference: Reference },
    /// `/v2/<name>/blobs/<digest>`
    Blob { name: RepoName, digest: Digest },
    /// `/v2/<name>/blobs/uploads/`
    UploadStart { name: RepoName },
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload { name: RepoName, id: String },
    /// `/v2/<name>/tags/list`
    Tags { name: RepoName },
    /// `/v2/<name>/referrers/<digest>`
    Referrers { name: RepoName, digest: Digest },
    /// A manifest, blob or referrers path whose last segment cannot name anything stored
    /// here: a manifest reference that is neither a tag nor a digest, or a well-formed digest
    /// of an algorithm Cairn does not hold. Reads and deletes of it answer 404 (the spec's
    /// "not found"); a PUT answers `error` (400).
    Unnamable { name: RepoName, kind: Kind, raw: String, error: NameError },
}

/// What an [`Route::Unnamable`] path addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/manifests/<reference>`
    Manifest,
    /// `/blobs/<digest>`
    Blob,
    /// `/referrers/<digest>`
    Referrers,
}

impl Route {
    /// Parses the path after `/v2/`. Unknown shapes are `Error::NotFound`; a known shape
    /// with a bad name, or a blob or referrers digest that is malformed, is that parse error
    /// (400); see [`Route::Unnamable`] for the rest.
    pub fn parse(rest: &str) -> Result<Route, Error> {
        if rest.is_empty() {
            return Ok(Route::Base);
        }
        if rest == "_catalog" {
            return Ok(Route::Catalog);
        }
        let segs: Vec<&str> = rest.split('/').collect();
        let name = |k: usize| -> Result<RepoName, Error> {
            if segs.len() <= k {
                return Err(Error::NotFound);
            }
            Ok(RepoName::parse(&segs[..segs.len() - k].join("/"))?)
        };
        Ok(match segs.as_slice() {
            [.., "blobs", "uploads", ""] => Route::UploadStart { name: name(3)? },
            [.., "blobs", "uploads"] => Route::UploadStart { name: name(2)? },
            [.., "blobs", "uploads", id] if is_upload_id(id) => Route::Upload { name: name(3)?, id: id.to_string() },
            [.., "blobs", d] => {
                let name = name(2)?;
                match Digest::parse(d) {
                    Ok(digest) => Route::Blob { name, digest },
                    Err(e @ DigestError::Unsupported(_)) => unnamable(name, Kind::Blob, d, e.into()),
                    Err(e) => return Err(e.into()),
                }
            }
            [.., "manifests", r] => {
                let name = name(2)?;
                match Reference::parse(r) {
                    Ok(reference) => Route::Manifest { name, reference },
                    Err(e) => unnamable(name, Kind::Manifest, r, e),
                }
            }
            [.., "tags", "list"] => Route::Tags { name: name(2)? },
            [.., "referrers", d] => {
                let name = name(2)?;
                match Digest::parse(d) {
                    Ok(digest) => Route::Referrers { name, digest },
                    Err(e @ DigestError::Unsupported(_)) => unnamable(name, Kind::Referrers, d, e.into()),
                    Err(e) => return Err(e.into()),
                }
            }
            _ => return Err(Error::NotFound),
        })
    }
}

fn unnamable(name: RepoName, kind: Kind, raw: &str, error: NameError) -> Route {
    Route::Unnamable { name, kind, raw: raw.to_string(), error }
}

/// Upload ids are UUIDs; anything else under `blobs/uploads/` cannot be ours.
fn is_upload_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> String {
        format!("sha256:{}", "ab".repeat(32))
    }

    #[test]
    fn parses_from_the_right() {
        let r = Route::parse(&format!("a/blobs/b/manifests/{}", d())).unwrap();
        assert!(matches!(r, Route::Manifest { ref name, .. } if name.as_str() == "a/blobs/b"));
        let r = Route::parse("x/y/blobs/uploads/").unwrap();
        assert!(matches!(r, Route::UploadStart { ref name } if name.as_str() == "x/y"));
        let r = Route::parse("x/blobs/uploads/0a1b-2c").unwrap();
        assert!(matches!(r, Route::Upload { ref id, .. } if id == "0a1b-2c"));
        assert!(matches!(Route::parse("x/tags/list").unwrap(), Route::Tags { .. }));
        assert!(matches!(Route::parse(&format!("x/referrers/{}", d())).unwrap(), Route::Referrers { .. }));
        assert_eq!(Route::parse("").unwrap(), Route::Base);
        assert_eq!(Route::parse("_catalog").unwrap(), Route::Catalog);
    }

    #[test]
    fn errors() {
        assert!(matches!(Route::parse("x/unknown"), Err(Error::NotFound)));
        assert!(matches!(Route::parse("manifests/latest"), Err(Error::NotFound)));
        assert!(matches!(Route::parse("Bad/manifests/latest"), Err(Error::NameInvalid(_))));
        assert!(matches!(Route::parse("x/blobs/sha256:nothex"), Err(Error::DigestInvalid(_))));
        assert!(matches!(Route::parse("x/referrers/sha256:nothex"), Err(Error::DigestInvalid(_))));
    }

    #[test]
    fn unnamable_references() {
        for (path, want) in [
            ("x/manifests/-bad", Kind::Manifest),
            ("x/manifests/.INVALID_MANIFEST_NAME", Kind::Manifest),
            (&format!("x/manifests/{}", "a".repeat(200)), Kind::Manifest),
            ("x/manifests/sha256:zz", Kind::Manifest),
            (&format!("x/blobs/md5:{}", "0".repeat(32)), Kind::Blob),
            (&format!("x/referrers/sha384:{}", "0".repeat(96)), Kind::Referrers),
        ] {
            assert!(matches!(Route::parse(path), Ok(Route::Unnamable { kind, .. }) if kind == want), "{path}");
        }
        let d512 = format!("sha512:{}", "ab".repeat(64));
        assert!(matches!(Route::parse(&format!("x/blobs/{d512}")), Ok(Route::Blob { .. })));
        assert!(matches!(Route::parse(&format!("x/manifests/{d512}")), Ok(Route::Manifest { .. })));
    }
}
