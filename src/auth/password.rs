//! argon2id password hashes (`cairn hash-password`), their constant-time verification,
//! and the gate that bounds how many run at once (each holds the hash's memory, ~19 MiB
//! with the default parameters).

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use tokio::sync::Semaphore;

/// How long a login waits for a turn before it gets 429.
const GATE_WAIT: Duration = Duration::from_secs(5);

/// Hashes a password as an argon2id PHC string.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// True if `password` matches the PHC string `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Runs password checks on the blocking pool, at most `permits` at a time; a burst of
/// logins waits for a turn (up to `GATE_WAIT`) instead of allocating a hash's memory each.
pub struct PasswordGate {
    permits: Arc<Semaphore>,
}

/// No turn came within the wait.
#[derive(Debug)]
pub struct GateBusy;

impl PasswordGate {
    /// At most `permits` checks at once; `None`: two per CPU core.
    pub fn new(permits: Option<usize>) -> PasswordGate {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        PasswordGate { permits: Arc::new(Semaphore::new(permits.unwrap_or(2 * cores).max(1))) }
    }

    /// `verify_password` under a permit, which is held until the hash is done even if
    /// the caller gives up (so abandoned requests cannot pile up checks either).
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool, GateBusy> {
        let permit = match tokio::time::timeout(GATE_WAIT, self.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => return Err(GateBusy),
        };
        let (password, hash) = (password.to_string(), hash.to_string());
        let check = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verify_password(&password, &hash)
        });
        Ok(check.await.unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("s3cret ", &h));
        assert!(!verify_password("s3cret", "not a hash"));
    }
}
