//! Bearer tokens: ES256 JWTs signed with a P-256 key kept as PKCS#8 in the data directory
//! (created with ring on first start), verified for signature, audience, issuer and expiry.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use crate::oci::RepoName;
use crate::policy::Action;

const ISSUER: &str = "cairn";

/// The scope a bearer token needs for `GET /v2/_catalog` (Docker's name).
pub const CATALOG_SCOPE: &str = "registry:catalog:*";
/// The scope a bearer token needs for reads under `/api/v1`.
pub const API_READ_SCOPE: &str = "registry:api:read";

/// What a token may be asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `repository:<name>:<actions>`, also with a resource class (`repository(plugin):…`).
    Repository(String, Vec<Action>),
    /// `registry:catalog:*`.
    Catalog,
    /// `registry:api:read`.
    ApiRead,
}

impl Scope {
    /// Parses one scope; unknown kinds and garbled ones are `None` (the token endpoint
    /// ignores them, as Docker's does).
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            CATALOG_SCOPE => return Some(Scope::Catalog),
            API_READ_SCOPE => return Some(Scope::ApiRead),
            _ => {}
        }
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        // Docker sends a resource class for plugins (`repository(plugin):<name>:pull`); the
        // class does not change what the repository grants.
        let is_repository = kind == "repository"
            || kind.strip_prefix("repository(").and_then(|c| c.strip_suffix(')')).is_some_and(|class| {
                !class.is_empty() && class.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            });
        if !is_repository || RepoName::parse(name).is_err() {
            return None;
        }
        let actions = actions
            .split(',')
            .flat_map(|a| if a == "*" { Action::ALL.to_vec() } else { Action::parse(a).into_iter().collect() })
            .collect();
        Some(Scope::Repository(name.to_string(), actions))
    }

    /// The `access` claim entry of a registry scope; `None` for a repository.
    pub fn registry_entry(&self) -> Option<AccessEntry> {
        let (name, action) = match self {
            Scope::Catalog => ("catalog", "*"),
            Scope::ApiRead => ("api", "read"),
            Scope::Repository(..) => return None,
        };
        Some(AccessEntry { kind: "registry".into(), name: name.into(), actions: vec![action.into()] })
    }
}

/// One entry of a token's `access` claim (the Docker token format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Repository name, or `catalog` / `api` for `registry`.
    pub name: String,
    /// Granted actions.
    pub actions: Vec<String>,
}

impl AccessEntry {
    /// Does this entry grant `action` on `kind:name`?
    pub fn grants(&self, kind: &str, name: &str, action: &str) -> bool {
        self.kind == kind && self.name == name && self.actions.iter().any(|a| a == action)
    }
}

/// The claims Cairn puts in its tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// `cairn`.
    pub iss: String,
    /// User or robot name, or `anonymous`.
    pub sub: String,
    /// The service (audience).
    pub aud: String,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Not before.
    pub nbf: u64,
    /// Issued at.
    pub iat: u64,
    /// Unique id.
    pub jti: String,
    /// What the token allows.
    pub access: Vec<AccessEntry>,
}

/// Signs and verifies tokens.
pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl TokenSigner {
    /// Loads the PKCS#8 key at `path`, creating it (mode 0600) if it does not exist.
    pub fn load_or_create(path: &Path) -> anyhow::Result<TokenSigner> {
        let pkcs8 = crate::keys::load_or_create_file(path, crate::keys::KeyKind::Token)?;
        TokenSigner::from_pkcs8(&pkcs8).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// A signer over a PKCS#8 ECDSA P-256 key (see `crate::keys` for where it comes from).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<TokenSigner, String> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|e| format!("not a PKCS#8 ECDSA P-256 key: {e}"))?;
        Ok(TokenSigner {
            encoding: EncodingKey::from_ec_der(pkcs8),
            decoding: DecodingKey::from_ec_der(pair.public_key().as_ref()),
        })
    }

    /// A token for `sub` valid for `ttl`.
    pub fn sign(&self, sub: &str, aud: &str, ttl: Duration, access: Vec<AccessEntry>) -> Result<String, String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let claims = Claims {
            iss: ISSUER.into(),
            sub: sub.into(),
            aud: aud.into(),
            exp: now + ttl.as_secs(),
            nbf: now.saturating_sub(5),
            iat: now,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            access,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.encoding).map_err(|e| e.to_string())
    }

    /// Verifies signature, issuer, audience, expiry and not-before.
    pub fn verify(&self, token: &str, aud: &str) -> Result<Claims, String> {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[aud]);
        v.set_issuer(&[ISSUER]);
        v.validate_nbf = true;
        v.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).map(|d| d.claims).map_err(|e| e.to_string())
    }
}

/// Writes a new private file (mode 0600); `AlreadyExists` if it is there.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let s = TokenSigner::load_or_create(&dir.path().join("k.p8")).unwrap();
        let again = TokenSigner::load_or_create(&dir.path().join("k.p8")).unwrap();
        let entry = AccessEntry { kind: "repository".into(), name: "a/b".into(), actions: vec!["pull".into()] };
        let t = s.sign("ci", "cairn", Duration::from_secs(60), vec![entry.clone()]).unwrap();
        let c = again.verify(&t, "cairn").unwrap();
        assert_eq!(c.sub, "ci");
        assert_eq!(c.access, vec![entry]);
        assert!(s.verify(&t, "other").is_err(), "audience");
        let other = TokenSigner::load_or_create(&dir.path().join("other.p8")).unwrap();
        assert!(other.verify(&t, "cairn").is_err(), "signature");
        assert!(s.verify("a.b.c", "cairn").is_err());
    }
}
