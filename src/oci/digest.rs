//! `Digest` (`sha256:<64 lowercase hex>`) and the resumable SHA-256 state kept between
//! chunks of an upload.

use std::fmt;
use std::str::FromStr;

use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256};

/// Why a digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Not `algorithm:encoded` at all.
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex characters>")]
    Malformed(String),
    /// Well-formed, but an algorithm this registry does not implement.
    #[error("unsupported digest algorithm {0:?}: only sha256 is supported")]
    Unsupported(String),
}

/// A content digest. Only sha256 is supported, the algorithm every client uses.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let Some((alg, enc)) = s.split_once(':') else {
            return Err(DigestError::Malformed(s.to_string()));
        };
        let alg_ok = !alg.is_empty()
            && alg.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
        let enc_ok = !enc.is_empty() && enc.bytes().all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b));
        if !alg_ok || !enc_ok {
            return Err(DigestError::Malformed(s.to_string()));
        }
        if alg != "sha256" {
            return Err(DigestError::Unsupported(alg.to_string()));
        }
        if enc.len() != 64 || !enc.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(DigestError::Malformed(s.to_string()));
        }
        Ok(Digest(s.to_string()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// The full `sha256:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SHA-256 computation that can be saved between requests and resumed, so a chunked
/// upload never reads its earlier chunks back.
#[derive(Clone, Default)]
pub struct Sha256Hasher(Sha256);

impl Sha256Hasher {
    /// Resumes from a state saved by [`Sha256Hasher::save`]; `None` starts fresh.
    pub fn restore(state: Option<&[u8]>) -> Option<Sha256Hasher> {
        match state {
            None => Some(Sha256Hasher::default()),
            Some(bytes) => {
                let arr = SerializedState::<Sha256>::try_from(bytes).ok()?;
                Sha256::deserialize(&arr).ok().map(Sha256Hasher)
            }
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The state to persist with the session.
    pub fn save(&self) -> Vec<u8> {
        self.0.serialize().to_vec()
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        Digest(format!("sha256:{}", hex::encode(self.0.finalize())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let hex = "a".repeat(64);
        assert!(Digest::parse(&format!("sha256:{hex}")).is_ok());
        assert!(matches!(Digest::parse(&format!("sha512:{}", "a".repeat(128))), Err(DigestError::Unsupported(_))));
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("SHA256:{hex}"),
            &format!("sha256:{hex}0"),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn resumed_hash_equals_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut h = Sha256Hasher::default();
        h.update(&data[..12_345]);
        let saved = h.save();
        let mut h = Sha256Hasher::restore(Some(&saved)).unwrap();
        h.update(&data[12_345..]);
        assert_eq!(h.finish(), Digest::of(&data));
        assert!(Sha256Hasher::restore(Some(&[1, 2, 3])).is_none());
    }
}
