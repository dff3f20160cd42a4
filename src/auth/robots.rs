//! Robot tokens for CI/CD: a name, a random secret shown once (stored as SHA-256), roles
//! and grants of its own, optional expiry, revocation.

use std::time::{Duration, SystemTime};

use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest as _, Sha256};

use crate::audit::{EventKind, NewEvent};
use crate::meta::{MetaError, MetadataStore, RobotGrant, RobotRecord};
use crate::policy::access::{Grant, repo_glob};
use crate::policy::{Action, Role, Subject};

/// What `cairn token create` asks for.
#[derive(Debug, Clone)]
pub struct NewRobot {
    /// Login name.
    pub name: String,
    /// Role names.
    pub roles: Vec<String>,
    /// Grants as `GLOB=action,action`.
    pub grants: Vec<String>,
    /// Lifetime, if limited.
    pub expires_in: Option<Duration>,
}

/// Why a robot could not be created or revoked.
#[derive(Debug, thiserror::Error)]
pub enum RobotError {
    /// The request is invalid; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

fn parse_grant(s: &str) -> Result<RobotGrant, String> {
    let (glob, actions) =
        s.split_once('=').ok_or_else(|| format!("grant {s:?}: use GLOB=ACTIONS, for example 'apps/**=pull,push'"))?;
    repo_glob(glob).map_err(|e| format!("grant {s:?}: bad repository glob: {}", e.kind()))?;
    let actions: Vec<String> = actions.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
    if actions.is_empty() || actions.iter().any(|a| Action::parse(a).is_none()) {
        return Err(format!("grant {s:?}: actions are pull, push, delete"));
    }
    Ok(RobotGrant { repositories: glob.to_string(), actions })
}

/// Creates a robot and returns its secret (the only time it is known).
pub async fn create_robot(meta: &dyn MetadataStore, new: &NewRobot, reserved: &[String]) -> Result<String, RobotError> {
    let name_ok = !new.name.is_empty()
        && new.name.len() <= 64
        && new.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && new.name != "anonymous";
    if !name_ok {
        return Err(RobotError::Invalid(format!(
            "robot name {:?}: use 1-64 of [A-Za-z0-9._-], not \"anonymous\"",
            new.name
        )));
    }
    if reserved.contains(&new.name) {
        return Err(RobotError::Invalid(format!("{:?} is a configured user; pick another robot name", new.name)));
    }
    if let Some(r) = new.roles.iter().find(|r| Role::parse(r).is_none()) {
        return Err(RobotError::Invalid(format!("role {r:?}: use admin, writer, reader or auditor")));
    }
    let grants =
        new.grants.iter().map(|g| parse_grant(g)).collect::<Result<Vec<_>, _>>().map_err(RobotError::Invalid)?;
    if grants.is_empty() && new.roles.is_empty() {
        return Err(RobotError::Invalid("a robot needs at least one --role or --grant".into()));
    }
    let mut raw = [0u8; 32];
    SystemRandom::new().fill(&mut raw).map_err(|_| RobotError::Invalid("no randomness available".into()))?;
    let secret = format!("cairn_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw));
    let now = SystemTime::now();
    let record = RobotRecord {
        name: new.name.clone(),
        secret_sha256: Sha256::digest(secret.as_bytes()).to_vec(),
        roles: new.roles.clone(),
        grants,
        created_at: now,
        expires_at: new.expires_in.map(|d| now + d),
        revoked_at: None,
    };
    let mut tx = meta.begin(now).await?;
    if !tx.create_robot(&record).await? {
        tx.rollback().await?;
        return Err(RobotError::Invalid(format!("a robot named {:?} exists already", new.name)));
    }
    let detail = serde_json::json!({
        "roles": record.roles,
        "grants": record.grants,
        "expires_at": record.expires_at.map(|t| crate::audit::chain::rfc3339_millis(crate::meta::millis(t))),
    });
    let event = NewEvent::new(EventKind::TokenCreate, CLI_ACTOR, None)
        .detail(serde_json::json!({ "robot": record.name, "token": detail }));
    tx.append_events(vec![event], now).await?;
    tx.commit().await?;
    Ok(secret)
}

/// Every robot (revoked and expired included).
pub async fn list_robots(meta: &dyn MetadataStore) -> Result<Vec<RobotRecord>, MetaError> {
    meta.robots().await
}

/// Revokes a robot; false if there is no such live robot. Ledgered as `token.revoke`.
pub async fn revoke_robot(meta: &dyn MetadataStore, name: &str) -> Result<bool, MetaError> {
    let now = SystemTime::now();
    let mut tx = meta.begin(now).await?;
    if !tx.revoke_robot(name, now).await? {
        tx.rollback().await?;
        return Ok(false);
    }
    let event = NewEvent::new(EventKind::TokenRevoke, CLI_ACTOR, None).detail(serde_json::json!({ "robot": name }));
    tx.append_events(vec![event], now).await?;
    tx.commit().await?;
    Ok(true)
}

/// The actor recorded for changes made with the `cairn` command line (robots, archives): the
/// operator at the machine, who needs no credentials but access to the database.
pub const CLI_ACTOR: &str = "cli";

fn subject(r: &RobotRecord) -> Subject {
    Subject {
        name: r.name.clone(),
        roles: r.roles.iter().filter_map(|x| Role::parse(x)).collect(),
        own_grants: r.grants.iter().filter_map(|g| Grant::new(vec![], &g.repositories, &g.actions)).collect(),
    }
}

fn is_live(r: &RobotRecord, now: SystemTime) -> bool {
    r.revoked_at.is_none() && r.expires_at.is_none_or(|t| t > now)
}

/// The robot as a subject, if it exists and is neither revoked nor expired at `now`.
pub async fn live(meta: &dyn MetadataStore, name: &str, now: SystemTime) -> Result<Option<Subject>, MetaError> {
    Ok(meta.robot(name).await?.filter(|r| is_live(r, now)).map(|r| subject(&r)))
}

/// Checks a robot's secret in constant time; `None` unless it matches a robot live at `now`.
pub async fn verify(
    meta: &dyn MetadataStore,
    name: &str,
    secret: &str,
    now: SystemTime,
) -> Result<Option<Subject>, MetaError> {
    let Some(r) = meta.robot(name).await? else { return Ok(None) };
    let presented = Sha256::digest(secret.as_bytes());
    let same: bool = subtle::ConstantTimeEq::ct_eq(presented.as_slice(), r.secret_sha256.as_slice()).into();
    Ok((same && is_live(&r, now)).then(|| subject(&r)))
}
