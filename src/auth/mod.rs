//! Identities and their rights: users from the config (argon2id), robot tokens from the
//! database, short-lived bearer tokens (ES256 via ring), login limiting (per client address
//! and per address and name, attempts in flight included; a bounded number of password
//! checks at once), and the decision for one request. Calls `policy`, `meta`; called by
//! `api` and the CLI.

mod limiter;
mod password;
mod robots;
mod token;

pub(crate) use token::write_private;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::config::Config;
use crate::meta::{MetaError, MetadataStore};
use crate::policy::access::Grant;
use crate::policy::{AccessPolicy, Action, Role, Subject};

pub use limiter::{Attempt, LimitKey, LoginLimiter};
pub use password::{PasswordGate, hash_password, verify_password};
pub use robots::{NewRobot, RobotError, create_robot, list_robots, revoke_robot};
pub use token::{API_READ_SCOPE, AccessEntry, CATALOG_SCOPE, Claims, Scope, TokenSigner};

/// How long a verified password stays verified in memory, so Basic auth on every request
/// does not pay argon2 each time.
const VERIFIED_TTL: Duration = Duration::from_secs(60);
const VERIFIED_MAX: usize = 10_000;
/// How often an open registry looks for newly created robots.
const ROBOT_RECHECK: Duration = Duration::from_secs(1);

/// A hash of a random password with the default parameters, checked against for unknown
/// user names.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password(&uuid::Uuid::new_v4().to_string()).unwrap_or_default())
}

/// Credentials presented by a request.
#[derive(Clone)]
pub enum Credentials {
    /// None at all.
    None,
    /// `Authorization: Basic`.
    Basic {
        /// User or robot name.
        user: String,
        /// Password or robot secret.
        password: String,
    },
    /// `Authorization: Bearer`.
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Basic { user, .. } => write!(f, "Basic({user}, <redacted>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// Who a request is, and, for bearer tokens, what the token allows.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The subject.
    pub subject: Subject,
    /// The token's access list (bearer only); `None` means "whatever the rules allow".
    pub token_access: Option<Vec<AccessEntry>>,
}

/// Why authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown user, wrong password, revoked or expired robot.
    #[error("invalid username or password")]
    BadCredentials,
    /// Too many failed (or running) logins from this address, or for this name from it.
    #[error("too many failed logins; retry in {retry_after} s")]
    RateLimited {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// Every password-check slot stayed taken for the whole wait.
    #[error("too many logins are being checked; retry in {retry_after} s")]
    Busy {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The bearer token is invalid (signature, audience, expiry, format).
    #[error("invalid token: {0}")]
    BadToken(String),
    /// The metadata store failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

struct User {
    hash: String,
    roles: Vec<Role>,
}

/// Access control for one registry process.
pub struct Auth {
    policy: AccessPolicy,
    /// No users and no grants in the config.
    config_open: bool,
    /// Whether robot tokens exist (created by the CLI, possibly while we run): any robot
    /// ends open mode too. Rechecked at most every `ROBOT_RECHECK`.
    robots_exist: AtomicBool,
    robots_checked: Mutex<Option<Instant>>,
    users: HashMap<String, User>,
    meta: Arc<dyn MetadataStore>,
    signer: TokenSigner,
    limiter: Arc<LoginLimiter>,
    /// (per address and name, per address) failure limits.
    limits: (u32, u32),
    gate: PasswordGate,
    /// Checks running now, by credential fingerprint: the same credentials presented
    /// again meanwhile wait for that check instead of running another.
    running: RunningChecks,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    service: String,
    ttl: Duration,
    /// Robot expiry is judged by this clock (tests move a `ManualClock`).
    clock: Arc<dyn crate::clock::Clock>,
}

/// Compiles grants from the config (validated beforehand).
fn compile_grants(config: &Config) -> Vec<Grant> {
    config.auth.grants.iter().filter_map(|g| Grant::new(g.subjects.clone(), &g.repositories, &g.actions)).collect()
}

impl Auth {
    /// Builds access control from the config, signing tokens with `token_key` (PKCS#8 ECDSA
    /// P-256, from `crate::keys::load`).
    pub fn new(
        config: &Config,
        meta: Arc<dyn MetadataStore>,
        clock: Arc<dyn crate::clock::Clock>,
        token_key: &[u8],
    ) -> anyhow::Result<Auth> {
        let users = config
            .auth
            .users
            .iter()
            .map(|u| {
                let roles = u.roles.iter().filter_map(|r| Role::parse(r)).collect();
                (u.name.clone(), User { hash: u.password_hash.clone(), roles })
            })
            .collect();
        let open = config.auth.users.is_empty() && config.auth.grants.is_empty();
        Ok(Auth {
            policy: AccessPolicy { grants: compile_grants(config) },
            config_open: open,
            robots_exist: AtomicBool::new(false),
            robots_checked: Mutex::new(None),
            users,
            meta,
            signer: TokenSigner::from_pkcs8(token_key).map_err(|e| anyhow::anyhow!("the token signing key is {e}"))?,
            limiter: Arc::new(LoginLimiter::new(config.auth.failure_window, clock.clone())),
            limits: (config.auth.max_failed_logins.max(1), config.auth.max_failed_logins_per_address.max(1)),
            gate: PasswordGate::new(config.auth.concurrent_password_checks),
            running: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            service: config.auth.service.clone(),
            ttl: config.auth.token_ttl,
            clock,
        })
    }

    /// True when no user, no grant and no robot exists: anonymous may do everything.
    pub fn is_open(&self) -> bool {
        self.config_open && !self.robots_exist.load(Ordering::Relaxed)
    }

    /// Rechecks whether robots exist (cheap: at most one query per `ROBOT_RECHECK`).
    pub async fn refresh(&self) -> Result<(), MetaError> {
        if !self.config_open || self.robots_exist.load(Ordering::Relaxed) {
            return Ok(());
        }
        let due = self.robots_checked.lock().map(|t| t.is_none_or(|t| t.elapsed() >= ROBOT_RECHECK)).unwrap_or(true);
        if due {
            let exist = !self.meta.robots().await?.is_empty();
            if exist && !self.robots_exist.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "robot tokens exist, so this registry is no longer open: anonymous clients get only what an \
                     [[auth.grants]] entry for \"anonymous\" gives them. Sign in with a robot or a user, or add such \
                     a grant (for example repositories = \"**\", actions = [\"pull\"])"
                );
            }
            if let Ok(mut t) = self.robots_checked.lock() {
                *t = Some(Instant::now());
            }
        }
        Ok(())
    }

    /// The token service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Establishes who is calling.
    pub async fn authenticate(&self, creds: &Credentials, addr: Option<IpAddr>) -> Result<Identity, AuthError> {
        self.refresh().await?;
        match creds {
            Credentials::None => Ok(Identity { subject: Subject::anonymous(), token_access: None }),
            Credentials::Basic { user, password } => {
                let subject = self.login(user, password, addr).await?;
                Ok(Identity { subject, token_access: None })
            }
            Credentials::Bearer(token) => {
                let claims = self.signer.verify(token, &self.service).map_err(AuthError::BadToken)?;
                let subject = if claims.sub == "anonymous" {
                    Subject::anonymous()
                } else {
                    self.subject_named(&claims.sub)
                        .await?
                        .ok_or(AuthError::BadToken("its subject no longer exists".into()))?
                };
                Ok(Identity { subject, token_access: Some(claims.access) })
            }
        }
    }

    /// Checks a user's password or a robot's secret. Limited per client address and per
    /// (address, name), counting failures and checks in flight; password hashes run a
    /// bounded number at a time. Identical credentials presented while their check runs
    /// share its result.
    pub async fn login(&self, user: &str, password: &str, addr: Option<IpAddr>) -> Result<Subject, AuthError> {
        let keys = addr.map(|a| LimitKey::for_login(a, user, self.limits.0, self.limits.1)).unwrap_or_default();
        if let Some(retry_after) = self.limiter.blocked(&keys) {
            return Err(AuthError::RateLimited { retry_after });
        }
        let fingerprint: [u8; 32] =
            Sha256::new().chain_update(user).chain_update([0]).chain_update(password).finalize().into();
        if let Some(u) = self.users.get(user)
            && self.recently_verified(&fingerprint)
        {
            return Ok(Subject { name: user.to_string(), roles: u.roles.clone(), own_grants: vec![] });
        }
        let shared = Running::join(&self.running, fingerprint);
        let outcome = shared.cell.get_or_try_init(|| self.admitted_check(user, password, &keys, &fingerprint)).await;
        match outcome {
            Ok(Some(subject)) => Ok(subject.clone()),
            Ok(None) => {
                tracing::warn!(user = %user, address = ?addr, "failed login");
                Err(AuthError::BadCredentials)
            }
            Err(e) => Err(e),
        }
    }

    fn recently_verified(&self, fingerprint: &[u8; 32]) -> bool {
        self.verified.lock().map(|m| m.get(fingerprint).is_some_and(|t| t.elapsed() < VERIFIED_TTL)).unwrap_or(false)
    }

    /// One check, admitted by the limiter; a wrong secret (or a request that goes away
    /// mid-check) counts as a failure.
    async fn admitted_check(
        &self,
        user: &str,
        password: &str,
        keys: &[(LimitKey, u32)],
        fingerprint: &[u8; 32],
    ) -> Result<Option<Subject>, AuthError> {
        let attempt = self.limiter.begin(keys).map_err(|retry_after| AuthError::RateLimited { retry_after })?;
        match self.check_secret(user, password, fingerprint).await {
            Ok(Some(subject)) => {
                attempt.succeeded();
                Ok(Some(subject))
            }
            Ok(None) => {
                drop(attempt);
                Ok(None)
            }
            Err(e) => {
                attempt.abandoned();
                Err(e)
            }
        }
    }

    async fn check_secret(
        &self,
        user: &str,
        password: &str,
        fingerprint: &[u8; 32],
    ) -> Result<Option<Subject>, AuthError> {
        let busy = |_| AuthError::Busy { retry_after: 1 };
        if let Some(u) = self.users.get(user) {
            if !self.gate.verify(password, &u.hash).await.map_err(busy)? {
                return Ok(None);
            }
            if let Ok(mut m) = self.verified.lock() {
                if m.len() >= VERIFIED_MAX {
                    m.clear();
                }
                m.insert(*fingerprint, Instant::now());
            }
            return Ok(Some(Subject { name: user.to_string(), roles: u.roles.clone(), own_grants: vec![] }));
        }
        let robot = robots::verify(self.meta.as_ref(), user, password, self.clock.now()).await?;
        if robot.is_none() {
            // Spend the time a password check would, so timing does not tell which user
            // names exist.
            self.gate.verify(password, dummy_hash()).await.map_err(busy)?;
        }
        Ok(robot)
    }

    /// The subject with this name: a configured user or a live robot.
    pub async fn subject_named(&self, name: &str) -> Result<Option<Subject>, AuthError> {
        if let Some(u) = self.users.get(name) {
            return Ok(Some(Subject { name: name.to_string(), roles: u.roles.clone(), own_grants: vec![] }));
        }
        Ok(robots::live(self.meta.as_ref(), name, self.clock.now()).await?)
    }

    /// May `subject` do `action` on `repo` under the rules?
    pub fn allows(&self, subject: &Subject, repo: &str, action: Action) -> bool {
        self.is_open() || self.policy.allows(subject, repo, action)
    }

    /// May `subject` read `/api/v1`?
    pub fn allows_api_read(&self, subject: &Subject) -> bool {
        self.is_open() || self.policy.allows_api_read(subject)
    }

    /// May `subject` read the audit ledger and every repository over `/api/v1`?
    pub fn allows_audit_read(&self, subject: &Subject) -> bool {
        self.is_open() || self.policy.allows_audit_read(subject)
    }

    /// Issues a token for `subject` granting, of the requested scopes, only what the rules
    /// allow (never more). Returns (token, lifetime in seconds).
    pub fn issue_token(&self, subject: &Subject, requested: &[Scope]) -> Result<(String, u64), AuthError> {
        let access = requested
            .iter()
            .filter_map(|scope| match scope {
                Scope::Repository(repo, actions) => {
                    let mut granted: Vec<Action> =
                        actions.iter().copied().filter(|a| self.allows(subject, repo, *a)).collect();
                    granted.sort();
                    granted.dedup();
                    (!granted.is_empty()).then(|| AccessEntry {
                        kind: "repository".into(),
                        name: repo.clone(),
                        actions: granted.iter().map(|a| a.as_str().to_string()).collect(),
                    })
                }
                // The catalog lists only what the caller may pull, so anyone may list it.
                Scope::Catalog => scope.registry_entry(),
                Scope::ApiRead => self.allows_api_read(subject).then(|| scope.registry_entry()).flatten(),
            })
            .collect();
        let token = self.signer.sign(&subject.name, &self.service, self.ttl, access).map_err(AuthError::BadToken)?;
        Ok((token, self.ttl.as_secs()))
    }
}

/// The outcome of one password check, shared by every login presenting those credentials
/// while it runs.
type SharedCheck = Arc<tokio::sync::OnceCell<Option<Subject>>>;
/// Checks running now, by credential fingerprint.
type RunningChecks = Mutex<HashMap<[u8; 32], SharedCheck>>;

/// A caller's share of the check running for one credential fingerprint; the last one
/// out (or the first to finish) removes it from the table.
struct Running<'a> {
    table: &'a RunningChecks,
    fingerprint: [u8; 32],
    cell: SharedCheck,
}

impl<'a> Running<'a> {
    fn join(table: &'a RunningChecks, fingerprint: [u8; 32]) -> Running<'a> {
        let cell = match table.lock() {
            Ok(mut m) => m.entry(fingerprint).or_default().clone(),
            Err(_) => Arc::default(),
        };
        Running { table, fingerprint, cell }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.table.lock()
            && m.get(&self.fingerprint).is_some_and(|c| Arc::ptr_eq(c, &self.cell))
        {
            m.remove(&self.fingerprint);
        }
    }
}
