//! Repository names, tags and references as the distribution spec defines them.

use std::fmt;

use super::digest::{Digest, DigestError};

/// Why a name, tag or reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The repository name breaks the spec's grammar.
    #[error(
        "invalid repository name {0:?}: use lowercase path components of [a-z0-9] separated by '.', '_', '__' or '-', joined by '/', at most 255 characters"
    )]
    Repo(String),
    /// The tag breaks `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
    #[error("invalid tag {0:?}: a tag is 1 to 128 characters of [A-Za-z0-9_.-] and must not start with '.' or '-'")]
    Tag(String),
    /// The reference looked like a digest but is not a valid one.
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// A validated repository name such as `library/alpine`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// Parses per the spec: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
    pub fn parse(s: &str) -> Result<RepoName, NameError> {
        if s.is_empty() || s.len() > 255 || !s.split('/').all(component_ok) {
            return Err(NameError::Repo(s.to_string()));
        }
        Ok(RepoName(s.to_string()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated tag.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// Parses `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
    pub fn parse(s: &str) -> Result<Tag, NameError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter().all(|&x| x.is_ascii_alphanumeric() || b"._-".contains(&x));
        if ok { Ok(Tag(s.to_string())) } else { Err(NameError::Tag(s.to_string())) }
    }

    /// The tag as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `<reference>` of a manifest URL: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// By tag.
    Tag(Tag),
    /// By digest.
    Digest(Digest),
}

impl Reference {
    /// A reference containing ':' is a digest; anything else must be a tag.
    pub fn parse(s: &str) -> Result<Reference, NameError> {
        if s.contains(':') { Ok(Reference::Digest(Digest::parse(s)?)) } else { Ok(Reference::Tag(Tag::parse(s)?)) }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names() {
        for ok in ["a", "library/alpine", "a-b/c__d/e.f", "a---b", "x/blobs/y", "0/1"] {
            assert!(RepoName::parse(ok).is_ok(), "{ok} refused");
        }
        let long = "a".repeat(256);
        for bad in ["", "A", "a/", "/a", "a//b", "a..b", "a___b", "-a", "a-", "a_", "a b", "a/B", "a:b", long.as_str()]
        {
            assert!(RepoName::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn tags_and_references() {
        assert!(Tag::parse("v1.2.3-rc_1").is_ok());
        assert!(Tag::parse("_x").is_ok());
        assert!(Tag::parse(&"a".repeat(128)).is_ok());
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        assert!(matches!(Reference::parse(&format!("sha256:{}", "0".repeat(64))), Ok(Reference::Digest(_))));
        assert!(Reference::parse("sha256:zz").is_err());
    }
}
