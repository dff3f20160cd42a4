//! Who may do what: roles (global shorthands) and grants (actions on a repository glob for
//! named subjects). Pure decisions; identities are established in `auth`.

use globset::GlobMatcher;
use serde::{Deserialize, Serialize};

/// An action on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Read manifests, blobs, tags and referrers.
    Pull,
    /// Upload blobs and push manifests.
    Push,
    /// Delete manifests, tags and blobs.
    Delete,
}

impl Action {
    /// The spelling used in token scopes.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    /// Parses a scope action (`*` is handled by the caller).
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }

    /// Every action.
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];
}

/// Global shorthands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including forced deletes and tokens.
    Admin,
    /// Pull and push everywhere.
    Writer,
    /// Pull everywhere.
    Reader,
    /// `/api/v1` reads only.
    Auditor,
}

impl Role {
    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "writer" => Some(Role::Writer),
            "reader" => Some(Role::Reader),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }

    fn allows(self, action: Action) -> bool {
        match self {
            Role::Admin => true,
            Role::Writer => matches!(action, Action::Pull | Action::Push),
            Role::Reader => action == Action::Pull,
            Role::Auditor => false,
        }
    }
}

/// A compiled grant.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Who it is for (user or robot names, `anonymous`); empty for a robot's own grants.
    pub subjects: Vec<String>,
    /// The compiled repository glob.
    pub repositories: GlobMatcher,
    /// What it allows.
    pub actions: Vec<Action>,
}

impl Grant {
    /// Compiles a grant from validated config text; `None` if the glob does not compile.
    /// Unknown action names are dropped (validation reports them).
    pub fn new(subjects: Vec<String>, repositories: &str, actions: &[String]) -> Option<Grant> {
        Some(Grant {
            subjects,
            repositories: repo_glob(repositories).ok()?,
            actions: actions.iter().filter_map(|a| Action::parse(a)).collect(),
        })
    }
}

/// Compiles a repository glob the way immutability rules do: `*` within a component.
pub fn repo_glob(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    Ok(globset::GlobBuilder::new(pattern).literal_separator(true).build()?.compile_matcher())
}

/// A subject whose rights are being decided.
#[derive(Debug, Clone)]
pub struct Subject {
    /// User or robot name, or `anonymous`.
    pub name: String,
    /// Its roles.
    pub roles: Vec<Role>,
    /// Grants that belong to it alone (a robot's scope).
    pub own_grants: Vec<Grant>,
}

impl Subject {
    /// The anonymous subject.
    pub fn anonymous() -> Subject {
        Subject { name: "anonymous".into(), roles: vec![], own_grants: vec![] }
    }

    /// True for the anonymous subject.
    pub fn is_anonymous(&self) -> bool {
        self.name == "anonymous"
    }
}

/// The access rules in force (open mode, where anonymous may do everything, is decided by
/// `auth`, which knows whether users, grants or robots exist).
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    /// Grants from the config.
    pub grants: Vec<Grant>,
}

impl AccessPolicy {
    /// May `who` do `action` on `repo`?
    pub fn allows(&self, who: &Subject, repo: &str, action: Action) -> bool {
        if who.roles.iter().any(|r| r.allows(action)) {
            return true;
        }
        // What anonymous may do, everyone may: logging in never loses public access.
        let named = self.grants.iter().filter(|g| g.subjects.iter().any(|s| s == &who.name || s == "anonymous"));
        named.chain(who.own_grants.iter()).any(|g| g.actions.contains(&action) && g.repositories.is_match(repo))
    }

    /// May `who` read `/api/v1`?
    pub fn allows_api_read(&self, who: &Subject) -> bool {
        who.roles.iter().any(|r| matches!(r, Role::Admin | Role::Reader | Role::Auditor))
    }

    /// May `who` read the audit ledger and every repository over `/api/v1`?
    pub fn allows_audit_read(&self, who: &Subject) -> bool {
        who.roles.iter().any(|r| matches!(r, Role::Admin | Role::Auditor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(subjects: &[&str], repos: &str, actions: &[Action]) -> Grant {
        let names: Vec<String> = actions.iter().map(|a| a.as_str().to_string()).collect();
        Grant::new(subjects.iter().map(|s| s.to_string()).collect(), repos, &names).unwrap()
    }

    fn user(name: &str, roles: &[Role]) -> Subject {
        Subject { name: name.into(), roles: roles.to_vec(), own_grants: vec![] }
    }

    #[test]
    fn roles_and_grants() {
        let p = AccessPolicy {
            grants: vec![
                grant(&["ci"], "apps/**", &[Action::Pull, Action::Push]),
                grant(&["anonymous"], "public/*", &[Action::Pull]),
            ],
        };
        let table = [
            (user("root", &[Role::Admin]), "x", Action::Delete, true),
            (user("w", &[Role::Writer]), "x", Action::Push, true),
            (user("w", &[Role::Writer]), "x", Action::Delete, false),
            (user("r", &[Role::Reader]), "x", Action::Pull, true),
            (user("r", &[Role::Reader]), "x", Action::Push, false),
            (user("a", &[Role::Auditor]), "x", Action::Pull, false),
            (user("ci", &[]), "apps/a/b", Action::Push, true),
            (user("ci", &[]), "other", Action::Pull, false),
            (Subject::anonymous(), "public/x", Action::Pull, true),
            (Subject::anonymous(), "public/x/y", Action::Pull, false),
            (Subject::anonymous(), "public/x", Action::Push, false),
        ];
        for (who, repo, action, want) in table {
            assert_eq!(p.allows(&who, repo, action), want, "{} {action:?} {repo}", who.name);
        }
        assert!(p.allows_api_read(&user("a", &[Role::Auditor])));
        assert!(!p.allows_api_read(&user("w", &[Role::Writer])));
        assert!(p.allows_audit_read(&user("a", &[Role::Auditor])));
        assert!(p.allows_audit_read(&user("root", &[Role::Admin])));
        assert!(!p.allows_audit_read(&user("r", &[Role::Reader])));
        let robot =
            Subject { name: "bot".into(), roles: vec![], own_grants: vec![grant(&[], "apps/*", &[Action::Pull])] };
        assert!(p.allows(&robot, "apps/x", Action::Pull));
        assert!(p.allows(&user("r", &[]), "public/x", Action::Pull), "anonymous grants apply to everyone");
        assert!(!p.allows(&robot, "apps/x", Action::Push));
    }
}
