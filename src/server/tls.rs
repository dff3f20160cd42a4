//! HTTPS served directly (`[server] tls_cert` / `tls_key`): loading a PEM certificate chain
//! and its key, the rustls configuration (ring, TLS 1.2 and 1.3, ALPN `h2` then
//! `http/1.1`), and the certificate resolver that swaps in a renewed certificate without a
//! restart. A handshake asks the resolver for the current certificate, so a reload reaches
//! every connection opened after it and open connections are never dropped.
//!
//! Reloads happen when either file changes (its modification time, size or inode, checked
//! every [`WATCH_EVERY`]) and on SIGHUP. A reload that fails (a half-written file, a key
//! that does not match) keeps the certificate in use and says why in the log and in
//! `cairn_tls_reloads_total{result="error"}`; the next change or SIGHUP tries again.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// How often the certificate and key files are looked at for changes.
pub const WATCH_EVERY: Duration = Duration::from_secs(5);

/// Why a certificate or key could not be used. Each message names the file and the key
/// (`server.tls_cert` / `server.tls_key`) it came from.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("server.{key} = {path}: cannot read it: {source}")]
    Read {
        /// `tls_cert` or `tls_key`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file holds no usable PEM item of the kind needed.
    #[error("server.{key} = {path}: {problem}")]
    Content {
        /// `tls_cert` or `tls_key`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong, for a person.
        problem: String,
    },
}

/// Loads the chain in `cert` (PEM, leaf first) and the private key in `key` (PEM PKCS#8,
/// PKCS#1 or SEC1) and checks that the key is the leaf certificate's.
///
/// # Errors
/// [`TlsError`] naming the file: unreadable, no certificate or no key in it, a key type
/// ring cannot sign with, or a key that does not belong to the certificate.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let content =
        |k: &'static str, path: &Path, problem: String| TlsError::Content { key: k, path: path.into(), problem };
    let cert_pem =
        std::fs::read(cert).map_err(|source| TlsError::Read { key: "tls_cert", path: cert.into(), source })?;
    let key_pem = std::fs::read(key).map_err(|source| TlsError::Read { key: "tls_key", path: key.into(), source })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| content("tls_cert", cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(content(
            "tls_cert",
            cert,
            "no certificate in it: expected one or more `-----BEGIN CERTIFICATE-----` blocks, the server's first"
                .into(),
        ));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        content(
            "tls_key",
            key,
            format!(
                "no private key in it ({e}): expected a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block"
            ),
        )
    })?;
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| content("tls_key", key, format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        content("tls_key", key, format!("does not belong to the certificate in {} ({e})", cert.display()))
    })?;
    Ok(certified)
}

/// ring, as everywhere in Cairn (object_store's own TLS client brings aws-lc-rs too, so
/// rustls has no single default to fall back on).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// When `der` (an X.509 certificate) stops being valid; `None` if it does not parse.
pub fn not_after(der: &[u8]) -> Option<SystemTime> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    Some(SystemTime::UNIX_EPOCH + cert.tbs_certificate.validity.not_after.to_unix_duration())
}

/// Sets `cairn_tls_certificate_not_after_timestamp_seconds` from the leaf of `key`.
fn record_not_after(key: &CertifiedKey) {
    let at = key.cert.first().and_then(|c| not_after(c.as_ref()));
    if let Some(secs) = at.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()) {
        metrics::gauge!(crate::metrics::TLS_NOT_AFTER).set(secs.as_secs_f64());
    }
}

/// What identifies a file's version without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp { modified: m.modified().ok(), len: m.len(), inode: m.ino() })
}

/// The certificate in use, and the files it came from. Cheap to share.
pub struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<(Option<Stamp>, Option<Stamp>)>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading").field("cert", &self.cert).field("key", &self.key).finish_non_exhaustive()
    }
}

impl Reloading {
    /// Loads the pair once.
    ///
    /// # Errors
    /// As [`load_certified_key`].
    pub fn new(cert: &Path, key: &Path) -> Result<Arc<Reloading>, TlsError> {
        let seen = (stamp(cert), stamp(key));
        let current = load_certified_key(cert, key)?;
        record_not_after(&current);
        Ok(Arc::new(Reloading {
            cert: cert.into(),
            key: key.into(),
            current: RwLock::new(Arc::new(current)),
            seen: Mutex::new(seen),
        }))
    }

    /// Reads both files again and, when they load, serves them from the next handshake on.
    ///
    /// # Errors
    /// As [`load_certified_key`]; the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let seen = (stamp(&self.cert), stamp(&self.key));
        let result = load_certified_key(&self.cert, &self.key);
        // Remember the versions tried, so a broken file is not retried every few seconds
        // (and logged each time) until it changes again.
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = seen;
        let fresh = result.inspect_err(|_| {
            metrics::counter!(crate::metrics::TLS_RELOADS, "result" => "error").increment(1);
        })?;
        record_not_after(&fresh);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        metrics::counter!(crate::metrics::TLS_RELOADS, "result" => "ok").increment(1);
        Ok(())
    }

    /// Reloads when either file changed since the last load or attempt; `None` when neither
    /// did.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = (stamp(&self.cert), stamp(&self.key));
        let changed = *self.seen.lock().unwrap_or_else(|e| e.into_inner()) != now;
        changed.then(|| self.reload())
    }

    /// The leaf certificate served now (DER).
    pub fn leaf(&self) -> CertificateDer<'static> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).cert[0].clone()
    }

    /// Logs the outcome of a reload.
    fn report(result: Result<(), TlsError>, why: &str) {
        match result {
            Ok(()) => tracing::info!(trigger = why, "TLS certificate reloaded"),
            Err(e) => tracing::warn!(trigger = why, error = %e, "TLS certificate not reloaded; the one in use stays"),
        }
    }

    /// Watches the files and SIGHUP until the task is aborted.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; TLS files are still watched");
                None
            }
        };
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Some(r) = self.reload_if_changed() {
                        Self::report(r, "file changed");
                    }
                }
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    Self::report(self.reload(), "SIGHUP");
                }
            }
        }
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// The acceptor for `certs`: TLS 1.2 and 1.3 with ring, ALPN `h2` and `http/1.1`.
///
/// # Panics
/// Never: ring's provider supports the default protocol versions.
pub fn acceptor(certs: Arc<Reloading>) -> TlsAcceptor {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        (cert, key, c.cert.der().to_vec())
    }

    #[test]
    fn a_pair_loads_and_a_mismatched_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a, _) = write_pair(dir.path(), "a");
        let (_, key_b, _) = write_pair(dir.path(), "b");
        load_certified_key(&cert_a, &key_a).unwrap();
        let e = load_certified_key(&cert_a, &key_b).unwrap_err().to_string();
        assert!(e.starts_with("server.tls_key = ") && e.contains("does not belong to the certificate"), "{e}");
        let e = load_certified_key(&key_a, &key_a).unwrap_err().to_string();
        assert!(e.starts_with("server.tls_cert = ") && e.contains("no certificate"), "{e}");
        let e = load_certified_key(&cert_a, &cert_a).unwrap_err().to_string();
        assert!(e.starts_with("server.tls_key = ") && e.contains("no private key"), "{e}");
        let e = load_certified_key(&dir.path().join("nope"), &key_a).unwrap_err().to_string();
        assert!(e.contains("cannot read it"), "{e}");
    }

    #[test]
    fn the_leaf_expiry_is_read() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 4, 5);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let at = not_after(cert.der()).unwrap();
        let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 1_933_113_600, "2031-04-05T00:00:00Z");
        assert!(not_after(b"not a certificate").is_none());
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, der_a) = write_pair(dir.path(), "live");
        let r = Reloading::new(&cert, &key).unwrap();
        assert!(r.reload_if_changed().is_none(), "nothing changed yet");
        assert_eq!(r.leaf().as_ref(), der_a.as_slice());

        // A renewal writes both files (new inode: renamed into place, as certbot does).
        let (cert_b, key_b, der_b) = write_pair(dir.path(), "next");
        std::fs::rename(&cert_b, &cert).unwrap();
        std::fs::rename(&key_b, &key).unwrap();
        r.reload_if_changed().expect("changed").unwrap();
        assert_eq!(r.leaf().as_ref(), der_b.as_slice());

        // Half a renewal: a new certificate with the old key fails and changes nothing.
        let (cert_c, _, _) = write_pair(dir.path(), "half");
        std::fs::rename(&cert_c, &cert).unwrap();
        assert!(r.reload_if_changed().expect("changed").is_err());
        assert_eq!(r.leaf().as_ref(), der_b.as_slice());
        assert!(r.reload_if_changed().is_none(), "a broken version is tried once");
    }
}
