//! Loading the configuration: the TOML file, then `CAIRN_*` environment variables, then
//! command-line flags. Every key is checked on its own, so one mistake never hides the
//! next; a problem with a value that came from the environment or a flag names that
//! variable or flag; an environment value takes the type its key expects. Variables that
//! cannot be keys (such as the `CAIRN_PORT` Kubernetes sets for a Service named `cairn`)
//! are notes, not errors.
//!
//! Why the overlay is ours and not `figment`'s `Env::prefixed("CAIRN_").split("__")` (issue
//! 13, checked against figment 0.10.19): `extract` stops at the first bad value, so three
//! wrong variables cost three restarts; its error names the provider ("`CAIRN_` environment
//! variable(s)") and an upper-cased key, not the variable; it types a value by its syntax, so
//! `CAIRN_AUTH__SERVICE=2024` is an integer and fails a string key unless quoted; and the
//! `CAIRN_PORT` Kubernetes sets becomes an unknown-key error. Taking only its parsed tree
//! (`Figment::data`) would still need our aliases, typing by key, notes and origins, which
//! are the whole of `overlay_env`. `config` and `serde-env` deserialize straight into the
//! struct and stop at the first error too. The per-key checking below is what keeps every
//! problem; the overlay only has to feed it a tree and remember origins.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Config, ConfigErrors, Sources};

/// Environment variables with a fixed meaning (DESIGN §11), mapped to their keys.
const ENV_ALIASES: [(&str, &str, &str); 3] = [
    ("CAIRN_LISTEN", "server", "listen"),
    ("CAIRN_DATA_DIR", "server", "data_dir"),
    ("CAIRN_DATABASE_URL", "database", "url"),
];

/// What a duration key is told when its value is not one.
const DURATION_HINT: &str = "expected a duration such as \"30s\", \"5m\", \"24h\"";

/// The outcome of loading: the config or every problem found, plus notes that are not
/// errors (such as environment variables that were ignored).
#[derive(Debug)]
pub struct Loaded {
    /// The valid config, or every problem.
    pub config: Result<Config, ConfigErrors>,
    /// Things worth knowing that do not stop Cairn, one line each.
    pub notes: Vec<String>,
}

/// Where the value of a key (`section.key`) came from, when not the file: an environment
/// variable or a flag.
type Origins = BTreeMap<String, String>;

/// Loads from `sources` and `env`, then validates.
pub(super) fn load(sources: &Sources, env: impl IntoIterator<Item = (String, String)>) -> Loaded {
    let mut env: Vec<(String, String)> = env.into_iter().collect();
    env.sort();
    let mut problems = Vec::new();
    let file =
        sources.file.clone().or_else(|| env.iter().find(|(k, _)| k == "CAIRN_CONFIG").map(|(_, v)| PathBuf::from(v)));
    let mut root = toml::Table::new();
    if let Some(path) = &file {
        match std::fs::read_to_string(path) {
            Ok(text) => match text.parse::<toml::Table>() {
                Ok(t) => root = t,
                Err(e) => problems.push(format!("{}: {}", path.display(), e.to_string().trim())),
            },
            Err(e) => problems.push(format!("cannot read config file {}: {e}", path.display())),
        }
    }
    let mut origins = Origins::new();
    let ignored = overlay_env(&mut root, &mut origins, &env);
    let flags = [
        ("--listen", "listen", sources.listen.clone()),
        ("--data-dir", "data_dir", sources.data_dir.as_ref().map(|d| d.display().to_string())),
    ];
    for (flag, key, value) in flags {
        if let Some(v) = value {
            set(&mut root, "server", key, toml::Value::String(v));
            origins.insert(format!("server.{key}"), flag.to_string());
        }
    }
    let checked = check_keys(&root);
    problems.extend(checked.problems);
    let config = match parse(toml::Value::Table(checked.good)) {
        Ok(c) => {
            problems.extend(c.problems());
            if checked.auth_complete {
                problems.extend(c.exposure_problem());
            }
            Some(c)
        }
        Err(e) => {
            problems.extend(e);
            None
        }
    };
    let problems: Vec<String> = problems.into_iter().map(|p| attribute(p, &origins)).collect();
    let mut notes = Vec::new();
    if !ignored.is_empty() {
        notes.push(format!(
            "ignored environment variables that are not configuration: {} (configuration variables are \
             CAIRN_CONFIG, CAIRN_LISTEN, CAIRN_DATA_DIR, CAIRN_DATABASE_URL and CAIRN_<SECTION>__<KEY>; \
             Kubernetes sets variables like these for a Service named `cairn`)",
            ignored.join(", ")
        ));
    }
    let config = match config {
        Some(c) if problems.is_empty() => Ok(c),
        _ => Err(ConfigErrors(problems)),
    };
    Loaded { config, notes }
}

/// Applies the `CAIRN_*` variables of `env` to `root`, recording where each key came
/// from. Returns the variables that cannot be configuration (no `__`, not an alias).
fn overlay_env(root: &mut toml::Table, origins: &mut Origins, env: &[(String, String)]) -> Vec<String> {
    let mut ignored = Vec::new();
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("CAIRN_") else {
            continue;
        };
        if k == "CAIRN_CONFIG" {
            continue;
        }
        let (section, key, value) = if let Some((_, section, key)) = ENV_ALIASES.iter().find(|(name, ..)| name == k) {
            (section.to_string(), key.to_string(), toml::Value::String(v.clone()))
        } else if let Some((section, key)) = rest.split_once("__") {
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            let value = env_value(&section, &key, v);
            (section, key, value)
        } else {
            ignored.push(k.clone());
            continue;
        };
        set(root, &section, &key, value);
        origins.insert(format!("{section}.{key}"), k.clone());
    }
    ignored
}

/// An environment value as the type `section.key` expects: a boolean, an integer or a
/// float where the key takes one, else the string itself (so `CAIRN_AUTH__SERVICE=2024`
/// is the string "2024"). If no reading fits, the first guess stays, for its error.
fn env_value(section: &str, key: &str, v: &str) -> toml::Value {
    let mut candidates = Vec::new();
    if let Ok(b) = v.parse::<bool>() {
        candidates.push(toml::Value::Boolean(b));
    }
    if let Ok(i) = v.parse::<i64>() {
        candidates.push(toml::Value::Integer(i));
    }
    if let Ok(f) = v.parse::<f64>()
        && f.is_finite()
    {
        candidates.push(toml::Value::Float(f));
    }
    candidates.push(toml::Value::String(v.to_string()));
    let fits = |c: &toml::Value| parse(one(section, key, c.clone())).is_ok();
    match candidates.iter().position(fits) {
        Some(i) => candidates.swap_remove(i),
        None => candidates.swap_remove(0),
    }
}

/// The result of checking each key of a TOML tree on its own.
struct Checked {
    /// Every problem found.
    problems: Vec<String>,
    /// The keys that are fine on their own.
    good: toml::Table,
    /// No key of `[auth]` was dropped (checks that depend on users are meaningful).
    auth_complete: bool,
}

/// Checks every key on its own (so one bad value does not hide the next problem), and
/// each element of an array of tables on its own (so a bad `mode` in one rule does not
/// hide a bad glob in it or in another rule).
fn check_keys(root: &toml::Table) -> Checked {
    let mut problems = Vec::new();
    let mut good = toml::Table::new();
    let mut auth_complete = true;
    for (section, value) in root {
        let known = parse(toml::Value::Table(toml::Table::from_iter([(
            section.clone(),
            toml::Value::Table(toml::Table::new()),
        )])))
        .is_ok();
        let keys = match value {
            toml::Value::Table(keys) if known => keys,
            toml::Value::Table(keys) if !keys.is_empty() => {
                for key in keys.keys() {
                    problems.push(format!("{section}.{key}: unknown key (there is no [{section}] section)"));
                }
                continue;
            }
            toml::Value::Table(_) => {
                problems.push(format!("{section}: unknown section [{section}]"));
                continue;
            }
            other => {
                let single = toml::Table::from_iter([(section.clone(), other.clone())]);
                problems.extend(parse(toml::Value::Table(single)).err().unwrap_or_default());
                auth_complete &= section != "auth";
                continue;
            }
        };
        let mut good_keys = toml::Table::new();
        for (key, v) in keys {
            match parse(one(section, key, v.clone())) {
                Ok(_) => {
                    good_keys.insert(key.clone(), v.clone());
                }
                Err(errs) => {
                    auth_complete &= section != "auth";
                    match v {
                        toml::Value::Array(items) if items.iter().any(|i| i.is_table()) => {
                            // The element's rules may refer to its siblings (a gate names
                            // [[signatures.keys]]): those that are fine on their own come along.
                            let siblings: toml::Table = keys
                                .iter()
                                .filter(|(k, v)| *k != key && parse(one(section, k, (*v).clone())).is_ok())
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect();
                            problems.extend(check_elements(section, key, items, &siblings));
                        }
                        toml::Value::Table(_) | toml::Value::Array(_) => problems.extend(errs),
                        scalar if is_duration_key(section, key) => {
                            problems.push(format!("{section}.{key} = {scalar}: {DURATION_HINT}"));
                        }
                        _ => problems.extend(errs),
                    }
                }
            }
        }
        good.insert(section.clone(), toml::Value::Table(good_keys));
    }
    Checked { problems, good, auth_complete }
}

/// Checks each element of the array `section.key` on its own: the problems of an element
/// that does not parse, with the globs it holds; the semantic problems of one that does.
fn check_elements(section: &str, key: &str, items: &[toml::Value], siblings: &toml::Table) -> Vec<String> {
    let one = |section: &str, key: &str, value: toml::Value| {
        let mut t = siblings.clone();
        t.insert(key.to_string(), value);
        toml::Value::Table(toml::Table::from_iter([(section.to_string(), toml::Value::Table(t))]))
    };
    let mut problems = Vec::new();
    let first = format!("{section}.{key}[0]");
    for (i, item) in items.iter().enumerate() {
        let at = format!("{section}.{key}[{i}]");
        let reindex = |p: String| match p.strip_prefix(&first) {
            Some(rest) => format!("{at}{rest}"),
            None => p,
        };
        match parse(one(section, key, toml::Value::Array(vec![item.clone()]))) {
            Ok(c) => problems.extend(c.problems().into_iter().filter(|p| p.starts_with(&first)).map(reindex)),
            Err(errs) => {
                // Without the keys that failed, the rest of the element may parse: then its
                // semantic problems are reported too, else at least its bad globs.
                let bad_keys: Vec<String> = errs
                    .iter()
                    .filter_map(|e| e.strip_prefix(&first)?.strip_prefix('.'))
                    .map(|rest| {
                        rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or("").to_string()
                    })
                    .collect();
                problems.extend(errs.into_iter().map(reindex));
                if let toml::Value::Table(t) = item {
                    let mut rest = t.clone();
                    rest.retain(|k, _| !bad_keys.iter().any(|b| b == k));
                    match parse(one(section, key, toml::Value::Array(vec![toml::Value::Table(rest)]))) {
                        Ok(c) if !bad_keys.is_empty() => {
                            problems.extend(c.problems().into_iter().filter(|p| p.starts_with(&first)).map(reindex))
                        }
                        _ => problems.extend(glob_problems(&at, t)),
                    }
                }
            }
        }
    }
    problems
}

/// Bad globs in the `repositories`, `tags` and `keep_tags` of a table that did not parse, so that
/// every bad glob is reported even when something else in the same rule is wrong.
fn glob_problems(at: &str, t: &toml::Table) -> Vec<String> {
    let mut p = Vec::new();
    if let Some(toml::Value::String(r)) = t.get("repositories")
        && let Err(e) = crate::policy::access::repo_glob(r)
    {
        p.push(format!("{at}.repositories = {r:?}: {}", e.kind()));
    }
    for key in ["tags", "keep_tags"] {
        if let Some(toml::Value::Array(tags)) = t.get(key) {
            for (j, tag) in tags.iter().enumerate() {
                if let toml::Value::String(tag) = tag
                    && let Err(e) = globset::Glob::new(tag)
                {
                    p.push(format!("{at}.{key}[{j}] = {tag:?}: {}", e.kind()));
                }
            }
        }
    }
    p
}

/// True if `section.key` takes a duration: it accepts "1s" but not a word.
fn is_duration_key(section: &str, key: &str) -> bool {
    let accepts = |v: &str| parse(one(section, key, toml::Value::String(v.into()))).is_ok();
    accepts("1s") && !accepts("not-a-duration")
}

/// Names the variable or flag a problem's value came from: a problem that starts with
/// `section.key` from `CAIRN_SECTION__KEY` starts with `CAIRN_SECTION__KEY (section.key)`.
fn attribute(problem: String, origins: &Origins) -> String {
    for (path, origin) in origins {
        if let Some(rest) = problem.strip_prefix(path.as_str())
            && !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        {
            return format!("{origin} ({path}){rest}");
        }
    }
    problem
}

/// `{section = {key = value}}`.
fn one(section: &str, key: &str, value: toml::Value) -> toml::Value {
    let inner = toml::Table::from_iter([(key.to_string(), value)]);
    toml::Value::Table(toml::Table::from_iter([(section.to_string(), toml::Value::Table(inner))]))
}

/// Deserializes `value`; every unknown key is an error, and every error names its key.
fn parse(value: toml::Value) -> Result<Config, Vec<String>> {
    let mut unknown = Vec::new();
    let parsed: Result<Config, _> =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut |path: serde_ignored::Path<
            '_,
        >| {
            unknown.push(format!("{}: unknown key", dotted(&path)))
        }));
    match parsed {
        Ok(c) if unknown.is_empty() => Ok(c),
        Ok(_) => Err(unknown),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.inner().to_string();
            // toml appends "in `<key>`" on a line of its own; the path is already in front.
            let inner = inner.split("\nin `").next().unwrap_or("").trim();
            unknown.push(format!("{path}: {inner}"));
            Err(unknown)
        }
    }
}

/// A key path as `a.b[0].c`, the way `serde_path_to_error` writes it.
fn dotted(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", dotted(parent)),
        Path::Map { parent, key } => match dotted(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => dotted(parent),
    }
}

fn set(root: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let entry = root.entry(section.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = entry {
        t.insert(key.to_string(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn problems(file: Option<&str>, pairs: &[(&str, &str)]) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, file.unwrap_or("")).unwrap();
        let loaded = load(&Sources { file: Some(f), ..Default::default() }, env(pairs));
        loaded.config.err().map(|e| e.0).unwrap_or_default()
    }

    #[test]
    fn a_problem_from_the_environment_names_the_variable() {
        let p = problems(None, &[("CAIRN_SERVER__LISEN", "x"), ("CAIRN_UPLOADS__EXPIRE_AFTER", "10s")]);
        assert!(p.contains(&"CAIRN_SERVER__LISEN (server.lisen): unknown key".to_string()), "{p:?}");
        assert!(
            p.contains(&"CAIRN_UPLOADS__EXPIRE_AFTER (uploads.expire_after) must be at least 1m".to_string()),
            "{p:?}"
        );
        let p = problems(None, &[("CAIRN_LISTEN", "nowhere")]);
        assert!(p.iter().any(|m| m.starts_with("CAIRN_LISTEN (server.listen) = \"nowhere\"")), "{p:?}");
        let p = problems(None, &[("CAIRN_FOO__BAR", "1")]);
        assert!(p.iter().any(|m| m.starts_with("CAIRN_FOO__BAR (foo.bar): unknown key")), "{p:?}");
        // The same mistake in the file names the key alone.
        let p = problems(Some("[server]\nlisen = \"x\"\n"), &[]);
        assert_eq!(p, ["server.lisen: unknown key"]);
    }

    #[test]
    fn environment_values_take_the_type_of_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let src = Sources { data_dir: Some(dir.path().into()), ..Default::default() };
        let vars = [
            ("CAIRN_AUTH__SERVICE", "2024"),
            ("CAIRN_AUTH__MAX_FAILED_LOGINS", "7"),
            ("CAIRN_AUTH__ALLOW_ANONYMOUS_WRITE", "true"),
            ("CAIRN_SERVER__PUBLIC_URL", "https://r.example"),
            ("CAIRN_LOG__LEVEL", "true"),
        ];
        let c = load(&src, env(&vars)).config.unwrap();
        assert_eq!(c.auth.service, "2024");
        assert_eq!(c.auth.max_failed_logins, 7);
        assert!(c.auth.allow_anonymous_write);
        assert_eq!(c.log.level, "true");
        // A value that fits no reading keeps its error.
        let p = problems(None, &[("CAIRN_AUTH__MAX_FAILED_LOGINS", "-1")]);
        assert!(p.iter().any(|m| m.starts_with("CAIRN_AUTH__MAX_FAILED_LOGINS (auth.max_failed_logins)")), "{p:?}");
    }

    #[test]
    fn a_bad_duration_gets_an_example() {
        let p = problems(Some("[server]\nshutdown_grace = \"soon\"\n"), &[("CAIRN_UPLOADS__EXPIRE_AFTER", "10")]);
        assert!(p.contains(&format!("server.shutdown_grace = \"soon\": {DURATION_HINT}")), "{p:?}");
        assert!(
            p.contains(&format!("CAIRN_UPLOADS__EXPIRE_AFTER (uploads.expire_after) = 10: {DURATION_HINT}")),
            "{p:?}"
        );
    }

    #[test]
    fn every_bad_glob_of_every_rule_is_reported() {
        let file = r#"
[[immutability.rules]]
repositories = "a/[b"
tags = ["[x", "ok", "{y"]
mode = "frozen"
[[immutability.rules]]
repositories = "**"
tags = ["[q"]
mode = "mutable"
[[immutability.rules]]
repositories = "c/[d"
tags = ["*"]
mode = "mutable"
colour = "red"
"#;
        let p = problems(Some(file), &[]);
        for needle in [
            "immutability.rules[0].mode: unknown variant `frozen`",
            "immutability.rules[0].repositories = \"a/[b\"",
            "immutability.rules[0].tags[0] = \"[x\"",
            "immutability.rules[0].tags[2] = \"{y\"",
            "immutability.rules[1].tags[0] = \"[q\"",
            "immutability.rules[2].colour: unknown key",
            "immutability.rules[2].repositories = \"c/[d\"",
        ] {
            assert!(p.iter().any(|m| m.starts_with(needle)), "{needle} not in {p:#?}");
        }
        assert_eq!(p.len(), 7, "{p:#?}");
    }

    #[test]
    fn non_loopback_without_users_is_a_problem() {
        let p = problems(None, &[("CAIRN_LISTEN", "0.0.0.0:5000")]);
        assert!(
            p.iter().any(|m| m.starts_with("CAIRN_LISTEN (server.listen) = \"0.0.0.0:5000\"")
                && m.contains("allow_anonymous_write")),
            "{p:?}"
        );
        let ok = [("CAIRN_LISTEN", "0.0.0.0:5000"), ("CAIRN_AUTH__ALLOW_ANONYMOUS_WRITE", "true")];
        assert!(problems(None, &ok).is_empty());
        // A broken [auth] must not add a claim about users it could not read.
        let p = problems(Some("[[auth.users]]\nname = \"a\"\n"), &[("CAIRN_LISTEN", "0.0.0.0:5000")]);
        assert!(p.iter().all(|m| !m.contains("allow_anonymous_write")), "{p:?}");
    }

    #[test]
    fn variables_that_cannot_be_keys_are_notes() {
        let vars = [
            ("CAIRN_PORT", "tcp://10.0.0.1:5000"),
            ("CAIRN_SERVICE_HOST", "10.0.0.1"),
            ("CAIRN_PORT_5000_TCP_ADDR", "10.0.0.1"),
            ("CAIRN_DATA_DIR", "/srv/cairn"),
        ];
        let loaded = load(&Sources::default(), env(&vars));
        let c = loaded.config.unwrap();
        assert_eq!(c.server.data_dir, PathBuf::from("/srv/cairn"));
        assert_eq!(loaded.notes.len(), 1, "{:?}", loaded.notes);
        let listed = loaded.notes[0].split_once(": ").and_then(|(_, rest)| rest.split_once(" (")).map(|(l, _)| l);
        assert_eq!(listed, Some("CAIRN_PORT, CAIRN_PORT_5000_TCP_ADDR, CAIRN_SERVICE_HOST"), "{:?}", loaded.notes);
        // A misspelt key is still an error.
        assert!(load(&Sources::default(), env(&[("CAIRN_SERVER__LISEN", "x")])).config.is_err());
    }

    #[test]
    fn every_signature_key_and_gate_problem_is_reported() {
        let file = r#"
[[signatures.keys]]
name = "release"
public_key = "not a pem"
[[signatures.keys]]
name = "both"
[[signatures.gates]]
repositories = "prod/[x"
keys = ["release", "nobody"]
guard = "sometimes"
colour = "red"
[[signatures.gates]]
repositories = "**"
tags = []
keys = []
"#;
        let p = problems(Some(file), &[]);
        for needle in [
            "signatures.keys[0].public_key",
            "signatures.keys[1]",
            "signatures.gates[0].guard: unknown variant `sometimes`",
            "signatures.gates[0].colour: unknown key",
            "signatures.gates[0].repositories = \"prod/[x\"",
            "signatures.gates[0].keys[1] = \"nobody\" names no [[signatures.keys]] entry (configured keys: release, both)",
            "signatures.gates[1].tags is empty",
            "signatures.gates[1].keys is empty",
        ] {
            assert!(p.iter().any(|m| m.starts_with(needle)), "{needle} not in {p:#?}");
        }
        // A gate checked on its own (it did not parse) still sees the configured keys.
        assert!(!p.iter().any(|m| m.contains("\"release\" names no")), "{p:#?}");
        let p = problems(Some("[[signatures.gates]]\nrepositories = \"prod/**\"\nkeys = [\"nobody\"]\n"), &[]);
        assert_eq!(
            p,
            [
                "signatures.gates[0].keys[0] = \"nobody\" names no [[signatures.keys]] entry (no [[signatures.keys]] are \
              configured)"
            ]
        );
    }

    #[test]
    fn every_retention_problem_is_reported() {
        let file = r#"
[retention]
schedule = "often"
[[retention.policies]]
repositories = "a/[b"
keep_tags = ["[x", "ok"]
keep_last = 0
[[retention.policies]]
repositories = "**"
keep_within = "0s"
untagged_grace = "1s"
colour = "red"
[[retention.policies]]
repositories = "c/**"
keep_last = -1
keep_tags = ["{y"]
"#;
        let p = problems(Some(file), &[]);
        for needle in [
            "retention.schedule = \"often\"",
            "retention.policies[0].repositories = \"a/[b\"",
            "retention.policies[0].keep_tags[0] = \"[x\"",
            "retention.policies[0].keep_last = 0",
            "retention.policies[1].keep_within = \"0s\"",
            "retention.policies[1].untagged_grace is shorter than 1m",
            "retention.policies[1].colour: unknown key",
            "retention.policies[2].keep_last",
            "retention.policies[2].keep_tags[0] = \"{y\"",
        ] {
            assert!(p.iter().any(|m| m.starts_with(needle)), "{needle} not in {p:#?}");
        }
    }
}
