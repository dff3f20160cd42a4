//! Signature gates (DESIGN §5, `[[signatures.gates]]`): which tags may only point at a
//! manifest with a valid signature by named keys (push gates), and which repositories serve
//! manifest bodies only of signed manifests (pull gates). Every gate that matches applies;
//! a change passes only when each is satisfied. Pure: the service gathers who signed what
//! (`service/signatures.rs`) and asks [`decide`].

use std::collections::BTreeSet;

use globset::{Glob, GlobMatcher, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::oci::{RepoName, Tag};

/// What a gate guards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Guard {
    /// A matching tag may only be set (pushed, moved, rolled back) to a signed manifest.
    #[default]
    Push,
    /// GET of a manifest body in a matching repository needs a signed manifest (HEAD stays
    /// open).
    Pull,
    /// Both.
    Both,
}

/// `[[signatures.gates]]`: one gate as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateConfig {
    /// A label shown in refusals; defaults to `#<position>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Repository glob: `*` stays within one path component, `**` crosses `/`.
    pub repositories: String,
    /// Tag globs that narrow a push gate; every tag when left out. Pull gates cover every
    /// manifest of their repositories, by tag or by digest.
    #[serde(default = "every_tag")]
    pub tags: Vec<String>,
    /// A valid signature by any one of these `[[signatures.keys]]` satisfies the gate.
    pub keys: Vec<String>,
    /// `push` (the default), `pull` or `both`.
    #[serde(default)]
    pub guard: Guard,
}

fn every_tag() -> Vec<String> {
    vec!["*".into()]
}

/// One compiled gate.
#[derive(Debug)]
pub struct Gate {
    /// Its name or `#<position>`.
    pub label: String,
    repositories: GlobMatcher,
    /// The repository glob as written.
    pub repository_glob: String,
    tags: GlobSet,
    /// The tag globs as written.
    pub tag_globs: Vec<String>,
    /// The keys that satisfy it.
    pub keys: Vec<String>,
    /// What it guards.
    pub guard: Guard,
}

impl Gate {
    fn guards_push(&self) -> bool {
        matches!(self.guard, Guard::Push | Guard::Both)
    }

    fn guards_pull(&self) -> bool {
        matches!(self.guard, Guard::Pull | Guard::Both)
    }
}

/// The compiled gates.
#[derive(Debug, Default)]
pub struct Gates {
    gates: Vec<Gate>,
}

/// Why a gate refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateRefusal {
    /// The gate's label.
    pub gate: String,
    /// The keys it wants, one of them.
    pub keys: Vec<String>,
    /// The keys that did sign validly (none of the wanted ones).
    pub signed_by: Vec<String>,
}

impl Gates {
    /// Compiles the gates; `key_names` are the configured keys. Every problem is one message
    /// naming where it is (`signatures.gates[i].…`).
    pub fn new(configs: &[GateConfig], key_names: &[&str]) -> Result<Gates, Vec<String>> {
        let mut problems = Vec::new();
        let mut gates = Vec::new();
        for (i, g) in configs.iter().enumerate() {
            let at = format!("signatures.gates[{i}]");
            let repositories = super::access::repo_glob(&g.repositories)
                .map_err(|e| problems.push(format!("{at}.repositories = {:?}: {}", g.repositories, e.kind())));
            if g.tags.is_empty() {
                problems.push(format!(
                    "{at}.tags is empty: list tag globs such as [\"v*\"], or leave it out for every tag"
                ));
            }
            let mut set = GlobSetBuilder::new();
            for (j, t) in g.tags.iter().enumerate() {
                match Glob::new(t) {
                    Ok(glob) => {
                        set.add(glob);
                    }
                    Err(e) => problems.push(format!("{at}.tags[{j}] = {t:?}: {}", e.kind())),
                }
            }
            if g.keys.is_empty() {
                problems.push(format!("{at}.keys is empty: name at least one [[signatures.keys]] entry"));
            }
            for (j, k) in g.keys.iter().enumerate() {
                if !key_names.contains(&k.as_str()) {
                    let known = if key_names.is_empty() {
                        "no [[signatures.keys]] are configured".to_string()
                    } else {
                        format!("configured keys: {}", key_names.join(", "))
                    };
                    problems.push(format!("{at}.keys[{j}] = {k:?} names no [[signatures.keys]] entry ({known})"));
                }
            }
            if let (Ok(repositories), Ok(tags)) = (repositories, set.build()) {
                gates.push(Gate {
                    label: g.name.clone().unwrap_or_else(|| format!("#{}", i + 1)),
                    repositories,
                    repository_glob: g.repositories.clone(),
                    tags,
                    tag_globs: g.tags.clone(),
                    keys: g.keys.clone(),
                    guard: g.guard,
                });
            }
        }
        if problems.is_empty() { Ok(Gates { gates }) } else { Err(problems) }
    }

    /// True when no gate is configured.
    pub fn is_empty(&self) -> bool {
        self.gates.is_empty()
    }

    /// The push gates that apply to setting `repo:tag`. (What a signature, SBOM or
    /// attestation is, and so never gated, is decided by the manifest's content, in
    /// `service/signatures.rs`: a fallback tag name alone exempts nothing.)
    pub fn push_gates(&self, repo: &RepoName, tag: &Tag) -> Vec<&Gate> {
        self.gates
            .iter()
            .filter(|g| g.guards_push() && g.repositories.is_match(repo.as_str()) && g.tags.is_match(tag.as_str()))
            .collect()
    }

    /// The pull gates that apply to manifests of `repo`.
    pub fn pull_gates(&self, repo: &RepoName) -> Vec<&Gate> {
        self.gates.iter().filter(|g| g.guards_pull() && g.repositories.is_match(repo.as_str())).collect()
    }
}

/// Decides whether a manifest validly signed by `signed_by` (trusted key names) satisfies
/// every one of `gates`: the first gate none of whose keys signed refuses.
pub fn decide(gates: &[&Gate], signed_by: &BTreeSet<String>) -> Result<(), GateRefusal> {
    for g in gates {
        if !g.keys.iter().any(|k| signed_by.contains(k)) {
            return Err(GateRefusal {
                gate: g.label.clone(),
                keys: g.keys.clone(),
                signed_by: signed_by.iter().cloned().collect(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(repos: &str, tags: &[&str], keys: &[&str], guard: Guard) -> GateConfig {
        GateConfig {
            name: None,
            repositories: repos.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            guard,
        }
    }

    fn names(s: &[&str]) -> BTreeSet<String> {
        s.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn push_gates_match_by_repository_and_tag() {
        let g = Gates::new(
            &[gate("prod/**", &["v*"], &["release"], Guard::Push), gate("prod/app", &["*"], &["ops"], Guard::Both)],
            &["release", "ops"],
        )
        .unwrap();
        let (app, other) = (RepoName::parse("prod/app").unwrap(), RepoName::parse("prod/web").unwrap());
        let v1 = Tag::parse("v1").unwrap();
        let labels = |gs: Vec<&Gate>| gs.iter().map(|g| g.label.clone()).collect::<Vec<_>>();
        assert_eq!(labels(g.push_gates(&app, &v1)), ["#1", "#2"]);
        assert_eq!(labels(g.push_gates(&other, &v1)), ["#1"]);
        assert!(g.push_gates(&other, &Tag::parse("latest").unwrap()).is_empty());
        let sig = Tag::parse(&format!("sha256-{}.sig", "a".repeat(64))).unwrap();
        assert_eq!(labels(g.push_gates(&app, &sig)), ["#2"], "a fallback tag's name exempts nothing");
        assert_eq!(labels(g.pull_gates(&app)), ["#2"]);
        assert!(g.pull_gates(&other).is_empty());
        // Every matching gate must be satisfied.
        let gates = g.push_gates(&app, &v1);
        assert_eq!(decide(&gates, &names(&["release", "ops"])), Ok(()));
        let refused = decide(&gates, &names(&["release"])).unwrap_err();
        assert_eq!((refused.gate.as_str(), refused.keys.clone()), ("#2", vec!["ops".to_string()]));
        assert_eq!(refused.signed_by, ["release"]);
        assert!(decide(&gates, &names(&[])).is_err());
        assert_eq!(decide(&[], &names(&[])), Ok(()));
    }

    #[test]
    fn every_problem_is_named() {
        let p = Gates::new(
            &[gate("a/[b", &["[x"], &[], Guard::Pull), gate("**", &[], &["nobody", "release"], Guard::Push)],
            &["release"],
        )
        .unwrap_err();
        for needle in [
            "signatures.gates[0].repositories = \"a/[b\"",
            "signatures.gates[0].tags[0] = \"[x\"",
            "signatures.gates[0].keys is empty",
            "signatures.gates[1].tags is empty",
            "signatures.gates[1].keys[0] = \"nobody\" names no [[signatures.keys]] entry (configured keys: release)",
        ] {
            assert!(p.iter().any(|m| m.starts_with(needle)), "{needle} not in {p:#?}");
        }
        assert_eq!(p.len(), 5, "{p:#?}");
    }
}
