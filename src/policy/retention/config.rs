//! `[retention]` in the config and its compiled form: policies per repository glob, first match
//! wins, no match keeps everything (DESIGN §6, §11).

use std::time::Duration;

use globset::{Glob, GlobMatcher, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::oci::RepoName;

/// `rollback_window` when a policy leaves it out (and for rollbacks where no policy matches).
pub const DEFAULT_ROLLBACK_WINDOW: u32 = 3;

/// `[retention]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetentionConfig {
    /// How often `serve` applies the policies; `"0s"` turns scheduled apply off (`cairn retention
    /// apply` and `POST /api/v1/retention/apply` still work).
    #[serde(with = "humantime_serde")]
    pub schedule: Duration,
    /// The policies, first match wins. A repository no policy matches keeps everything.
    pub policies: Vec<PolicyConfig>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { schedule: Duration::from_secs(3600), policies: vec![] }
    }
}

/// `[[retention.policies]]`: one policy as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyConfig {
    /// A label shown in plans; defaults to `#<position>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Repository glob: `*` stays within one path component, `**` crosses `/`.
    pub repositories: String,
    /// Keep the N tags set (pushed or moved) most recently.
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// Keep tags set within this long.
    #[serde(default, with = "humantime_serde")]
    pub keep_within: Option<Duration>,
    /// Always keep tags matching one of these globs.
    #[serde(default)]
    pub keep_tags: Vec<String>,
    /// Keep manifests pulled within this long, and every tag on them.
    #[serde(default, with = "humantime_serde")]
    pub keep_pulled_within: Option<Duration>,
    /// Untagged manifests live this long after they lost their last tag (or after their push
    /// if they never had one). Without it, untagged manifests are kept.
    #[serde(default, with = "humantime_serde")]
    pub untagged_grace: Option<Duration>,
    /// The last N digests of every mutable tag, and the last N releases, stay; 0 turns the
    /// windows off. Defaults to 3.
    #[serde(default)]
    pub rollback_window: Option<u32>,
}

/// One compiled policy.
#[derive(Debug)]
pub struct Policy {
    /// Its name or `#<position>`.
    pub label: String,
    repositories: GlobMatcher,
    /// `keep_last`.
    pub keep_last: Option<u32>,
    /// `keep_within`.
    pub keep_within: Option<Duration>,
    keep_tags: GlobSet,
    keep_tag_globs: Vec<String>,
    /// `keep_pulled_within`.
    pub keep_pulled_within: Option<Duration>,
    /// `untagged_grace`.
    pub untagged_grace: Option<Duration>,
    /// `rollback_window` (the default filled in).
    pub rollback_window: u32,
}

impl Policy {
    /// The first `keep_tags` glob `tag` matches.
    pub fn keep_tag_glob(&self, tag: &str) -> Option<&str> {
        self.keep_tags.matches(tag).first().map(|&i| self.keep_tag_globs[i].as_str())
    }

    /// True when the policy lists `keep_tags` globs.
    pub fn has_keep_tags(&self) -> bool {
        !self.keep_tag_globs.is_empty()
    }

    /// True when the policy has a rule about tags (else it keeps every tag).
    pub fn has_tag_rules(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_within.is_some()
            || !self.keep_tag_globs.is_empty()
            || self.keep_pulled_within.is_some()
    }

    /// A policy for tests and examples: matches every repository, no rules, the given window.
    pub fn everything(window: u32) -> Policy {
        Policy {
            label: "#1".into(),
            repositories: super::super::access::repo_glob("**").expect("a valid glob"),
            keep_last: None,
            keep_within: None,
            keep_tags: GlobSet::empty(),
            keep_tag_globs: vec![],
            keep_pulled_within: None,
            untagged_grace: None,
            rollback_window: window,
        }
    }

    /// Sets `keep_tags` (tests).
    pub fn with_keep_tags(mut self, globs: &[&str]) -> Policy {
        let mut set = GlobSetBuilder::new();
        for g in globs {
            set.add(Glob::new(g).expect("a valid glob"));
        }
        self.keep_tags = set.build().expect("valid globs");
        self.keep_tag_globs = globs.iter().map(|g| g.to_string()).collect();
        self
    }
}

/// The compiled `[retention]` policies.
#[derive(Debug, Default)]
pub struct RetentionPolicy {
    policies: Vec<Policy>,
}

impl RetentionPolicy {
    /// Compiles the policies; every problem is one message naming where it is.
    pub fn new(cfg: &RetentionConfig) -> Result<RetentionPolicy, Vec<String>> {
        let mut problems = Vec::new();
        let mut policies = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, p) in cfg.policies.iter().enumerate() {
            let at = format!("retention.policies[{i}]");
            let repositories = super::super::access::repo_glob(&p.repositories)
                .map_err(|e| problems.push(format!("{at}.repositories = {:?}: {}", p.repositories, e.kind())));
            let mut set = GlobSetBuilder::new();
            for (j, t) in p.keep_tags.iter().enumerate() {
                match Glob::new(t) {
                    Ok(g) => {
                        set.add(g);
                    }
                    Err(e) => problems.push(format!("{at}.keep_tags[{j}] = {t:?}: {}", e.kind())),
                }
            }
            if p.keep_last == Some(0) {
                problems.push(format!(
                    "{at}.keep_last = 0 would keep no tag by count: use at least 1, or leave keep_last out"
                ));
            }
            for (key, d) in [("keep_within", p.keep_within), ("keep_pulled_within", p.keep_pulled_within)] {
                if d.is_some_and(|d| d.is_zero()) {
                    problems.push(format!(
                        "{at}.{key} = \"0s\" keeps nothing: use a duration such as \"30d\", or leave it out"
                    ));
                }
            }
            if p.untagged_grace.is_some_and(|d| d < Duration::from_secs(60)) {
                problems.push(format!(
                    "{at}.untagged_grace is shorter than 1m: a manifest pushed by digest and tagged a moment later \
                     would be deleted in between; use at least \"1m\", such as \"24h\""
                ));
            }
            if let Some(n) = &p.name {
                if n.trim().is_empty() {
                    problems.push(format!("{at}.name is empty: give the policy a name or leave name out"));
                } else if !names.insert(n.clone()) {
                    problems.push(format!("{at}.name = {n:?} is used by another policy: names must differ"));
                }
            }
            if let (Ok(repositories), Ok(keep_tags)) = (repositories, set.build()) {
                policies.push(Policy {
                    label: p.name.clone().unwrap_or_else(|| format!("#{}", i + 1)),
                    repositories,
                    keep_last: p.keep_last,
                    keep_within: p.keep_within,
                    keep_tags,
                    keep_tag_globs: p.keep_tags.clone(),
                    keep_pulled_within: p.keep_pulled_within,
                    untagged_grace: p.untagged_grace,
                    rollback_window: p.rollback_window.unwrap_or(DEFAULT_ROLLBACK_WINDOW),
                });
            }
        }
        if problems.is_empty() { Ok(RetentionPolicy { policies }) } else { Err(problems) }
    }

    /// Policies in order (tests build them directly).
    pub fn from_policies(policies: Vec<Policy>) -> RetentionPolicy {
        RetentionPolicy { policies }
    }

    /// The policy for `repo`: the first whose glob matches.
    pub fn policy_for(&self, repo: &RepoName) -> Option<&Policy> {
        self.policies.iter().find(|p| p.repositories.is_match(repo.as_str()))
    }

    /// The rollback window of `repo` and the policy that sets it (`None`: no policy matches,
    /// the default window applies).
    pub fn window_for(&self, repo: &RepoName) -> (u32, Option<&str>) {
        match self.policy_for(repo) {
            Some(p) => (p.rollback_window, Some(p.label.as_str())),
            None => (DEFAULT_ROLLBACK_WINDOW, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_named() {
        let bad = |f: fn(&mut PolicyConfig)| {
            let mut p = PolicyConfig {
                name: None,
                repositories: "apps/**".into(),
                keep_last: Some(10),
                keep_within: None,
                keep_tags: vec![],
                keep_pulled_within: None,
                untagged_grace: None,
                rollback_window: None,
            };
            f(&mut p);
            RetentionPolicy::new(&RetentionConfig { schedule: Duration::ZERO, policies: vec![p] })
                .err()
                .unwrap_or_default()
        };
        assert!(bad(|_| {}).is_empty());
        assert_eq!(
            bad(|p| p.repositories = "a/[b".into())[0].split(':').next(),
            Some("retention.policies[0].repositories = \"a/[b\"")
        );
        assert!(
            bad(|p| p.keep_tags = vec!["ok".into(), "[x".into()])[0]
                .starts_with("retention.policies[0].keep_tags[1] = \"[x\"")
        );
        assert!(bad(|p| p.keep_last = Some(0))[0].contains("keep_last = 0"));
        assert!(bad(|p| p.keep_within = Some(Duration::ZERO))[0].contains("keep_within = \"0s\""));
        assert!(bad(|p| p.keep_pulled_within = Some(Duration::ZERO))[0].contains("keep_pulled_within"));
        assert!(
            bad(|p| p.untagged_grace = Some(Duration::from_secs(5)))[0].contains("untagged_grace is shorter than 1m")
        );
        assert!(bad(|p| p.name = Some(" ".into()))[0].contains("name is empty"));
    }

    #[test]
    fn first_match_wins_and_the_window_defaults_to_three() {
        let p = |name: &str, repos: &str, w: Option<u32>| PolicyConfig {
            name: Some(name.into()),
            repositories: repos.into(),
            keep_last: None,
            keep_within: None,
            keep_tags: vec![],
            keep_pulled_within: None,
            untagged_grace: None,
            rollback_window: w,
        };
        let cfg =
            RetentionConfig { schedule: Duration::ZERO, policies: vec![p("a", "apps/*", Some(0)), p("b", "**", None)] };
        let r = RetentionPolicy::new(&cfg).unwrap();
        let repo = |s: &str| RepoName::parse(s).unwrap();
        assert_eq!(r.window_for(&repo("apps/web")), (0, Some("a")));
        assert_eq!(r.window_for(&repo("apps/web/x")), (3, Some("b")));
        assert!(RetentionPolicy::default().policy_for(&repo("x")).is_none());
        assert_eq!(RetentionPolicy::default().window_for(&repo("x")), (3, None));
    }
}
