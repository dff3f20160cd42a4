//! `cairn check-config`: the configuration as it was loaded (address, data directory,
//! database, storage) and the immutability rules and retention policies in force, in the
//! order they are matched.

use std::process::ExitCode;

use cairn::config::Config;

use super::output::{say, tell};

/// Prints the valid configuration `cfg` and the notes loading it gave.
pub fn check_config(cfg: &Config, notes: &[String]) -> ExitCode {
    say!("configuration is valid");
    say!("  listen:   {}", cfg.server.listen);
    say!("  data dir: {}", cfg.server.data_dir.display());
    say!("  database: {}", cfg.database_url_redacted());
    say!("  storage:  {}", cfg.storage.summary(&cfg.storage_path()));
    print_rules(cfg);
    for n in notes {
        tell!("note: {n}");
    }
    ExitCode::SUCCESS
}

/// The immutability rules and retention policies, first match first.
fn print_rules(cfg: &Config) {
    say!("  immutability rules (first match wins; unmatched tags are immutable):");
    for (i, r) in cfg.immutability.rules.iter().enumerate() {
        let name = r.name.clone().unwrap_or_else(|| format!("#{}", i + 1));
        say!("    {name}: repositories {:?} tags {:?} -> {:?}", r.repositories, r.tags, r.mode);
    }
    if cfg.immutability.rules.is_empty() {
        say!("    (none: every tag is immutable)");
    }
    let referrer = if cfg.immutability.include_referrer_tags { "follow the rules" } else { "are exempt" };
    say!("    referrer fallback tags (sha256-<hex>[.sig|.att|.sbom]) {referrer}");
    let schedule = match cfg.retention.schedule.is_zero() {
        true => "off".to_string(),
        false => format!("every {}", humantime::format_duration(cfg.retention.schedule)),
    };
    say!(
        "  retention policies (first match wins; unmatched repositories keep everything; scheduled apply {schedule}):"
    );
    let span = |d: Option<std::time::Duration>| d.map(cairn::policy::retention::span).unwrap_or_else(|| "-".into());
    for (i, p) in cfg.retention.policies.iter().enumerate() {
        let name = p.name.clone().unwrap_or_else(|| format!("#{}", i + 1));
        say!(
            "    {name}: repositories {:?} keep_last {} keep_within {} keep_tags {:?} keep_pulled_within {} untagged_grace {} rollback_window {}",
            p.repositories,
            p.keep_last.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            span(p.keep_within),
            p.keep_tags,
            span(p.keep_pulled_within),
            span(p.untagged_grace),
            p.rollback_window.unwrap_or(cairn::policy::retention::DEFAULT_ROLLBACK_WINDOW)
        );
    }
    if cfg.retention.policies.is_empty() {
        say!("    (none: retention deletes nothing)");
    }
}
