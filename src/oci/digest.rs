//! `Digest` (`sha256:<64 hex>` or `sha512:<128 hex>`, the two algorithms the image spec
//! registers) and the resumable hash state kept between chunks of an upload.

use std::fmt;
use std::str::FromStr;

use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest as _, Sha256, Sha512};

/// Why a digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Not `algorithm:encoded` at all, or a registered algorithm with a bad encoding.
    #[error(
        "invalid digest {0:?}: expected sha256:<64 lowercase hex characters> or sha512:<128 lowercase hex characters>"
    )]
    Malformed(String),
    /// Well-formed (image-spec grammar), but an algorithm this registry does not implement.
    #[error("unsupported digest algorithm {0:?}: this registry stores sha256 and sha512 digests")]
    Unsupported(String),
}

/// A digest algorithm Cairn computes (image-spec "Registered algorithms").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// SHA-256, what every client uses by default.
    #[default]
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// Parses `sha256` or `sha512`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Algorithm> {
        match s {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    /// The name used in digests: `sha256` or `sha512`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex-encoded part: 64 or 128.
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A content digest of a registered algorithm, validated.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lowercase hex>` or `sha512:<128 lowercase hex>`. A string that follows
    /// the image spec's digest grammar with another algorithm is `Unsupported`; anything else
    /// (including a registered algorithm with the wrong encoding) is `Malformed`.
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
        let Some(algorithm) = Algorithm::parse(alg) else {
            return Err(DigestError::Unsupported(alg.to_string()));
        };
        if enc.len() != algorithm.hex_len() || !enc.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(DigestError::Malformed(s.to_string()));
        }
        Ok(Digest(s.to_string()))
    }

    /// The sha256 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::of_with(Algorithm::Sha256, bytes)
    }

    /// The digest of `bytes` with `algorithm`.
    pub fn of_with(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(algorithm);
        h.update(bytes);
        h.finish()
    }

    /// Its algorithm.
    pub fn algorithm(&self) -> Algorithm {
        if self.0.starts_with("sha512:") { Algorithm::Sha512 } else { Algorithm::Sha256 }
    }

    /// The full `<algorithm>:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.0[self.algorithm().as_str().len() + 1..]
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

/// A hash computation (sha256 or sha512) that can be saved between requests and resumed, so
/// a chunked upload never reads its earlier chunks back.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256.
    Sha256(Sha256),
    /// SHA-512.
    Sha512(Sha512),
}

impl Hasher {
    /// A fresh computation.
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    /// Resumes from a state saved by [`Hasher::save`] with the same algorithm; `None` starts
    /// fresh. Returns `None` when the saved bytes are not a state of that algorithm.
    pub fn restore(algorithm: Algorithm, state: Option<&[u8]>) -> Option<Hasher> {
        let Some(bytes) = state else { return Some(Hasher::new(algorithm)) };
        match algorithm {
            Algorithm::Sha256 => {
                let arr = SerializedState::<Sha256>::try_from(bytes).ok()?;
                Sha256::deserialize(&arr).ok().map(Hasher::Sha256)
            }
            Algorithm::Sha512 => {
                let arr = SerializedState::<Sha512>::try_from(bytes).ok()?;
                Sha512::deserialize(&arr).ok().map(Hasher::Sha512)
            }
        }
    }

    /// Its algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The state to persist with the session.
    pub fn save(&self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.serialize().to_vec(),
            Hasher::Sha512(h) => h.serialize().to_vec(),
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest(format!("sha256:{}", hex::encode(h.finalize()))),
            Hasher::Sha512(h) => Digest(format!("sha512:{}", hex::encode(h.finalize()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let hex = "a".repeat(64);
        assert!(Digest::parse(&format!("sha256:{hex}")).is_ok());
        let d512 = Digest::parse(&format!("sha512:{}", "a".repeat(128))).unwrap();
        assert_eq!(d512.algorithm(), Algorithm::Sha512);
        assert_eq!(d512.hex(), "a".repeat(128));
        assert!(matches!(Digest::parse(&format!("md5:{}", "a".repeat(32))), Err(DigestError::Unsupported(_))));
        assert!(matches!(Digest::parse("sha384+b64u:Zm9v"), Err(DigestError::Unsupported(_))));
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("SHA256:{hex}"),
            &format!("sha256:{hex}0"),
            &format!("sha512:{hex}"),
            &format!("sha512:{}", "g".repeat(128)),
        ] {
            assert!(matches!(Digest::parse(bad), Err(DigestError::Malformed(_))), "{bad:?} accepted");
        }
    }

    #[test]
    fn known_answers() {
        assert_eq!(
            Digest::of(b"abc").as_str(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            Digest::of_with(Algorithm::Sha512, b"abc").as_str(),
            "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

    #[test]
    fn resumed_hash_equals_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut h = Hasher::new(alg);
            h.update(&data[..12_345]);
            let saved = h.save();
            let mut h = Hasher::restore(alg, Some(&saved)).unwrap();
            h.update(&data[12_345..]);
            assert_eq!(h.finish(), Digest::of_with(alg, &data));
            assert!(Hasher::restore(alg, Some(&[1, 2, 3])).is_none());
        }
        let saved = Hasher::new(Algorithm::Sha256).save();
        assert!(Hasher::restore(Algorithm::Sha512, Some(&saved)).is_none(), "a sha256 state is not a sha512 one");
    }
}
