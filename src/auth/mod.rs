//! Identities and their rights: users from the config (argon2id), robot tokens from the
//! database, short-lived bearer tokens (ES256 via ring), failed-login rate limiting, and
//! the decision for one request. Calls `policy`, `meta`; called by `api` and the CLI.

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

pub use limiter::FailureLimiter;
pub use password::{hash_password, verify_password};
pub use robots::{NewRobot, RobotError, create_robot, list_robots, revoke_robot};
pub use token::{AccessEntry, Claims, TokenSigner};

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
    /// Too many failed logins.
    #[error("too many failed logins; retry in {retry_after} s")]
    RateLimited {
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
    limiter: FailureLimiter,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    service: String,
    ttl: Duration,
}

/// Compiles grants from the config (validated beforehand).
fn compile_grants(config: &Config) -> Vec<Grant> {
    config.auth.grants.iter().filter_map(|g| Grant::new(g.subjects.clone(), &g.repositories, &g.actions)).collect()
}

impl Auth {
    /// Builds access control from the config; loads or creates the token signing key.
    pub fn new(config: &Config, meta: Arc<dyn MetadataStore>) -> anyhow::Result<Auth> {
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
            signer: TokenSigner::load_or_create(&config.token_key_path())?,
            limiter: FailureLimiter::new(config.auth.max_failed_logins, config.auth.failure_window),
            verified: Mutex::new(HashMap::new()),
            service: config.auth.service.clone(),
            ttl: config.auth.token_ttl,
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

    /// Checks a user's password or a robot's secret, rate-limited per address and name.
    pub async fn login(&self, user: &str, password: &str, addr: Option<IpAddr>) -> Result<Subject, AuthError> {
        let keys = [addr.map(|a| format!("addr:{a}")), Some(format!("user:{user}"))];
        let keys: Vec<String> = keys.into_iter().flatten().collect();
        if let Some(retry_after) = keys.iter().filter_map(|k| self.limiter.blocked(k)).max() {
            return Err(AuthError::RateLimited { retry_after });
        }
        let ok = self.check_secret(user, password).await?;
        match ok {
            Some(subject) => Ok(subject),
            None => {
                for k in &keys {
                    self.limiter.record_failure(k);
                }
                tracing::warn!(user = %user, address = ?addr, "failed login");
                Err(AuthError::BadCredentials)
            }
        }
    }

    async fn check_secret(&self, user: &str, password: &str) -> Result<Option<Subject>, AuthError> {
        let fingerprint: [u8; 32] =
            Sha256::new().chain_update(user).chain_update([0]).chain_update(password).finalize().into();
        if let Some(u) = self.users.get(user) {
            let cached = self
                .verified
                .lock()
                .map(|m| m.get(&fingerprint).is_some_and(|t| t.elapsed() < VERIFIED_TTL))
                .unwrap_or(false);
            let ok = cached || {
                let hash = u.hash.clone();
                let pw = password.to_string();
                tokio::task::spawn_blocking(move || verify_password(&pw, &hash)).await.unwrap_or(false)
            };
            if !ok {
                return Ok(None);
            }
            if let Ok(mut m) = self.verified.lock() {
                if m.len() >= VERIFIED_MAX {
                    m.clear();
                }
                m.insert(fingerprint, Instant::now());
            }
            return Ok(Some(Subject { name: user.to_string(), roles: u.roles.clone(), own_grants: vec![] }));
        }
        let robot = robots::verify(self.meta.as_ref(), user, password).await?;
        if robot.is_none() {
            // Spend the time a password check would, so timing does not tell which user
            // names exist.
            let pw = password.to_string();
            let _ = tokio::task::spawn_blocking(move || verify_password(&pw, dummy_hash())).await;
        }
        Ok(robot)
    }

    /// The subject with this name: a configured user or a live robot.
    pub async fn subject_named(&self, name: &str) -> Result<Option<Subject>, AuthError> {
        if let Some(u) = self.users.get(name) {
            return Ok(Some(Subject { name: name.to_string(), roles: u.roles.clone(), own_grants: vec![] }));
        }
        Ok(robots::live(self.meta.as_ref(), name).await?)
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

    /// Issues a token for `subject` granting, per requested repository, the requested
    /// actions the rules allow (never more). Returns (token, lifetime in seconds).
    pub fn issue_token(
        &self,
        subject: &Subject,
        requested: &[(String, Vec<Action>)],
    ) -> Result<(String, u64), AuthError> {
        let access = requested
            .iter()
            .filter_map(|(repo, actions)| {
                let mut granted: Vec<Action> =
                    actions.iter().copied().filter(|a| self.allows(subject, repo, *a)).collect();
                granted.sort();
                granted.dedup();
                (!granted.is_empty()).then(|| AccessEntry {
                    kind: "repository".into(),
                    name: repo.clone(),
                    actions: granted.iter().map(|a| a.as_str().to_string()).collect(),
                })
            })
            .collect();
        let token = self.signer.sign(&subject.name, &self.service, self.ttl, access).map_err(AuthError::BadToken)?;
        Ok((token, self.ttl.as_secs()))
    }
}
