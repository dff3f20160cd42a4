//! argon2id password hashes (`cairn hash-password`), their constant-time verification,
//! and the gate that bounds how many run at once and where (each holds the hash's
//! memory, ~19 MiB with the default parameters).

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, PasswordVerifier, Version};
use subtle::ConstantTimeEq;
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

/// `verify_password` for argon2 hashes, computing in `memory` (grown to the hash's
/// memory cost if needed) rather than in a fresh allocation.
pub fn verify_password_in(password: &str, hash: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(h) = PasswordHash::new(hash) else { return false };
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else { return false };
    let Ok(algorithm) = Algorithm::try_from(h.algorithm) else { return false };
    let Ok(version) = h.version.map(Version::try_from).transpose() else { return false };
    let Ok(params) = Params::try_from(&h) else { return false };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else { return false };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let argon2 = Argon2::new(algorithm, version.unwrap_or_default(), params);
    argon2.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..blocks]).is_ok()
        && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

/// Runs password checks on a fixed set of `permits` threads of its own: a burst of logins
/// waits for a turn (up to `GATE_WAIT`) instead of allocating a hash's memory each. Each
/// thread computes in one buffer it keeps, so the checks' memory is at most `permits`
/// hashes (about 19 MiB each with the default parameters), however many logins come.
pub struct PasswordGate {
    permits: Arc<Semaphore>,
    jobs: Mutex<mpsc::Sender<Job>>,
}

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// No turn came within the wait.
#[derive(Debug)]
pub struct GateBusy;

impl PasswordGate {
    /// At most `permits` checks at once; `None`: one per CPU core, at most 8 (a check
    /// is CPU-bound, so more threads than cores add memory, not speed).
    pub fn new(permits: Option<usize>) -> PasswordGate {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = permits.unwrap_or(cores.min(8)).max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n {
            let rx = rx.clone();
            // The threads end when the gate (the sender) is dropped.
            let spawned = std::thread::Builder::new().name(format!("cairn-password-{i}")).spawn(move || {
                let mut memory = Vec::new();
                loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(&mut memory),
                        Err(_) => return,
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "could not start a password-check thread");
            }
        }
        PasswordGate { permits: Arc::new(Semaphore::new(n)), jobs: Mutex::new(tx) }
    }

    /// `verify_password` under a permit, which is held until the hash is done even if
    /// the caller gives up (so abandoned requests cannot pile up checks either).
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool, GateBusy> {
        let permit = match tokio::time::timeout(GATE_WAIT, self.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => return Err(GateBusy),
        };
        let (password, hash) = (password.to_string(), hash.to_string());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let ok = verify_password_in(&password, &hash, memory);
            drop(permit);
            let _ = tx.send(ok);
        });
        let sent = self.jobs.lock().map(|j| j.send(job).is_ok()).unwrap_or(false);
        // No thread to run it (none could be started): a refusal, never an acceptance.
        Ok(sent && rx.await.unwrap_or(false))
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
        let mut memory = Vec::new();
        assert!(verify_password_in("s3cret", &h, &mut memory));
        assert!(!verify_password_in("s3cret ", &h, &mut memory));
        assert!(!verify_password_in("s3cret", "not a hash", &mut memory));
        assert_eq!(memory.len(), 19 * 1024, "the default memory cost, kept for the next check");
        let small = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(8, 1, 1, None).unwrap());
        let salt = SaltString::generate(&mut OsRng);
        let h = small.hash_password(b"pw", &salt).unwrap().to_string();
        assert!(verify_password_in("pw", &h, &mut memory));
        assert!(!verify_password_in("pX", &h, &mut memory));
    }
}
