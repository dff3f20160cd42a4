//! Immutability rules: (repository glob, tag globs) -> mutable or immutable, first match
//! wins, unmatched tags immutable. Referrer fallback tags (`sha256-<hex>` and cosign's
//! `sha256-<hex>.sig|.att|.sbom`) are system-managed and exempt unless configured otherwise.

use globset::{Glob, GlobMatcher, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::oci::{RepoName, Tag};

/// Whether a tag may move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Once pushed, the tag keeps its digest (an identical re-push is still accepted).
    Immutable,
    /// The tag may move to another digest; every move is recorded.
    Mutable,
}

/// One rule as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleConfig {
    /// A label shown in refusals; defaults to `#<position>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Repository glob: `*` stays within one path component, `**` crosses `/`.
    pub repositories: String,
    /// Tag globs; the rule matches a tag matching any of them.
    pub tags: Vec<String>,
    /// What a matching tag is.
    pub mode: Mode,
}

/// `[immutability]` in the config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImmutabilityConfig {
    /// When true, referrer fallback tags (`sha256-<hex>[.sig|.att|.sbom]`) follow the rules
    /// like any other tag; by default they are system-managed and may move.
    pub include_referrer_tags: bool,
    /// The rules, first match wins. Tags no rule matches are immutable.
    pub rules: Vec<RuleConfig>,
}

/// The verdict for one tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Mutable or immutable.
    pub mode: Mode,
    /// Which rule decided: its name, `#<n>`, `default`, or `referrer-tag`.
    pub rule: String,
}

struct Rule {
    label: String,
    repositories: GlobMatcher,
    tags: GlobSet,
    mode: Mode,
}

/// The `rule` of a decision no configured rule made: unmatched tags are immutable.
pub const DEFAULT_RULE: &str = "default";
/// The `rule` of a referrer fallback tag, which is system-managed.
pub const REFERRER_TAG_RULE: &str = "referrer-tag";

/// The compiled rules.
pub struct ImmutabilityPolicy {
    rules: Vec<Rule>,
    include_referrer_tags: bool,
}

impl ImmutabilityPolicy {
    /// Compiles the rules; every bad glob is one message naming where it is.
    pub fn new(cfg: &ImmutabilityConfig) -> Result<ImmutabilityPolicy, Vec<String>> {
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        for (i, r) in cfg.rules.iter().enumerate() {
            let at = format!("immutability.rules[{i}]");
            let repositories = super::access::repo_glob(&r.repositories)
                .map_err(|e| problems.push(format!("{at}.repositories = {:?}: {}", r.repositories, e.kind())));
            if r.tags.is_empty() {
                problems.push(format!("{at}.tags is empty: list tag globs, for example [\"*\"]"));
            }
            let mut set = GlobSetBuilder::new();
            for (j, t) in r.tags.iter().enumerate() {
                match Glob::new(t) {
                    Ok(g) => {
                        set.add(g);
                    }
                    Err(e) => problems.push(format!("{at}.tags[{j}] = {t:?}: {}", e.kind())),
                }
            }
            if let Some(n) = r.name.as_deref().filter(|n| [DEFAULT_RULE, REFERRER_TAG_RULE].contains(n)) {
                problems.push(format!("{at}.name = {n:?} is reserved: choose another name"));
            }
            if let (Ok(repositories), Ok(tags)) = (repositories, set.build()) {
                let label = r.name.clone().unwrap_or_else(|| format!("#{}", i + 1));
                rules.push(Rule { label, repositories, tags, mode: r.mode });
            }
        }
        if problems.is_empty() {
            Ok(ImmutabilityPolicy { rules, include_referrer_tags: cfg.include_referrer_tags })
        } else {
            Err(problems)
        }
    }

    /// Decides whether `repo:tag` is mutable, and by which rule.
    pub fn decide(&self, repo: &RepoName, tag: &Tag) -> Decision {
        if !self.include_referrer_tags && is_referrer_tag(tag.as_str()) {
            return Decision { mode: Mode::Mutable, rule: REFERRER_TAG_RULE.into() };
        }
        for r in &self.rules {
            if r.repositories.is_match(repo.as_str()) && r.tags.is_match(tag.as_str()) {
                return Decision { mode: r.mode, rule: r.label.clone() };
            }
        }
        Decision { mode: Mode::Immutable, rule: DEFAULT_RULE.into() }
    }
}

/// `sha256-<64 hex>` (the referrers fallback tag) or cosign's `.sig`, `.att`, `.sbom` forms.
pub fn is_referrer_tag(tag: &str) -> bool {
    let Some(rest) = tag.strip_prefix("sha256-") else { return false };
    let (hex, suffix) = rest.split_at(rest.len().min(64));
    hex.len() == 64
        && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && matches!(suffix, "" | ".sig" | ".att" | ".sbom")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(repos: &str, tags: &[&str], mode: Mode) -> RuleConfig {
        RuleConfig { name: None, repositories: repos.into(), tags: tags.iter().map(|t| t.to_string()).collect(), mode }
    }

    fn decide(p: &ImmutabilityPolicy, repo: &str, tag: &str) -> (Mode, String) {
        let d = p.decide(&RepoName::parse(repo).unwrap(), &Tag::parse(tag).unwrap());
        (d.mode, d.rule)
    }

    #[test]
    fn first_match_wins_and_default_is_immutable() {
        let cfg = ImmutabilityConfig {
            include_referrer_tags: false,
            rules: vec![
                rule("apps/*", &["release-*"], Mode::Immutable),
                rule("apps/**", &["latest", "dev-*"], Mode::Mutable),
                rule("**", &["*"], Mode::Immutable),
            ],
        };
        let p = ImmutabilityPolicy::new(&cfg).unwrap();
        assert_eq!(decide(&p, "apps/web", "latest"), (Mode::Mutable, "#2".into()));
        assert_eq!(decide(&p, "apps/team/web", "dev-1"), (Mode::Mutable, "#2".into()));
        assert_eq!(decide(&p, "apps/web", "release-1"), (Mode::Immutable, "#1".into()));
        // `*` does not cross `/`, so the first rule does not match a nested repository.
        assert_eq!(decide(&p, "apps/team/web", "release-1"), (Mode::Immutable, "#3".into()));
        assert_eq!(decide(&p, "other", "latest"), (Mode::Immutable, "#3".into()));
        let none = ImmutabilityPolicy::new(&ImmutabilityConfig::default()).unwrap();
        assert_eq!(decide(&none, "x", "latest"), (Mode::Immutable, "default".into()));
    }

    #[test]
    fn referrer_tags_are_exempt_unless_included() {
        let hex = "a".repeat(64);
        let p = ImmutabilityPolicy::new(&ImmutabilityConfig::default()).unwrap();
        for t in [
            format!("sha256-{hex}"),
            format!("sha256-{hex}.sig"),
            format!("sha256-{hex}.att"),
            format!("sha256-{hex}.sbom"),
        ] {
            assert_eq!(decide(&p, "r", &t).0, Mode::Mutable, "{t}");
        }
        assert_eq!(decide(&p, "r", &format!("sha256-{hex}.other")).0, Mode::Immutable);
        assert_eq!(decide(&p, "r", "sha256-abc").0, Mode::Immutable);
        let strict =
            ImmutabilityPolicy::new(&ImmutabilityConfig { include_referrer_tags: true, rules: vec![] }).unwrap();
        assert_eq!(decide(&strict, "r", &format!("sha256-{hex}.sig")).0, Mode::Immutable);
    }

    #[test]
    fn bad_globs_are_named() {
        let cfg = ImmutabilityConfig {
            include_referrer_tags: false,
            rules: vec![
                rule("a/[", &["ok"], Mode::Mutable),
                rule("**", &["{a", "b"], Mode::Mutable),
                rule("**", &[], Mode::Mutable),
            ],
        };
        let errs = ImmutabilityPolicy::new(&cfg).err().unwrap().join("\n");
        for needle in [
            "immutability.rules[0].repositories",
            "immutability.rules[1].tags[0]",
            "immutability.rules[2].tags is empty",
        ] {
            assert!(errs.contains(needle), "{needle} missing in {errs}");
        }
    }
}
