//! `cairn retention plan|apply`: what the retention policies would delete and why (as text, or
//! the JSON of GET /api/v1/retention/plan), or those deletions carried out now, with progress
//! on a terminal. Exit 2 for a bad repository glob.

use std::io::Write;
use std::process::ExitCode;

use cairn::config::Config;

use super::output::{say, tell};
use crate::RetentionCommand;

/// `cairn retention plan|apply`.
pub async fn retention(cfg: Config, command: RetentionCommand) -> ExitCode {
    use std::io::IsTerminal;
    let no_policies = cfg.retention.policies.is_empty();
    let state = match cairn::AppState::from_config(cfg).await {
        Ok(s) => s,
        Err(e) => {
            tell!("cairn: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if no_policies {
        tell!("note: no [[retention.policies]] are configured, so every repository keeps everything");
    }
    let bad_glob = |e: &cairn::error::Error| matches!(e, cairn::error::Error::Unsupported(_));
    match command {
        RetentionCommand::Plan { repository, json } => match state.registry.retention_plan(repository.as_deref()).await
        {
            Ok(plan) if json => match serde_json::to_string_pretty(&plan) {
                Ok(text) => {
                    say!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tell!("cairn: {e}");
                    ExitCode::FAILURE
                }
            },
            Ok(plan) => {
                for r in &plan.repositories {
                    say!("{} (policy {})", r.repository, r.policy);
                    for t in &r.tags {
                        say!("  {:<6} tag {} -> {}: {}", decision(t.decision), t.tag, t.digest, t.reasons.join("; "));
                    }
                    for m in &r.manifests {
                        say!(
                            "  {:<6} manifest {} ({} bytes): {}",
                            decision(m.decision),
                            m.digest,
                            m.size,
                            m.reasons.join("; ")
                        );
                    }
                }
                for name in &plan.unmatched_repositories {
                    say!("{name}: no policy matches; everything is kept");
                }
                let s = &plan.summary;
                say!(
                    "plan: delete {} tags and {} manifests ({} bytes); keep {} tags and {} manifests",
                    s.tags_deleted,
                    s.manifests_deleted,
                    s.bytes,
                    s.tags_kept,
                    s.manifests_kept
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                tell!("cairn: {e}");
                if bad_glob(&e) { ExitCode::from(2) } else { ExitCode::FAILURE }
            }
        },
        RetentionCommand::Apply { repository } => {
            let terminal = std::io::stderr().is_terminal();
            let actor = cairn::service::Actor { name: "cli".into(), address: None };
            let progress = |r: &cairn::service::ApplyReport| {
                if terminal {
                    let _ = write!(
                        std::io::stderr(),
                        "\rretention: {} tags, {} manifests deleted so far",
                        r.tags_deleted,
                        r.manifests_deleted
                    );
                }
            };
            let result = state
                .registry
                .retention_apply(repository.as_deref(), &actor, cairn::service::Trigger::Cli, progress)
                .await;
            if terminal {
                let _ = writeln!(std::io::stderr());
            }
            match result {
                Ok((_, r)) => {
                    say!(
                        "retention: deleted {} tags and {} manifests ({} bytes; GC frees unreferenced blobs later); {} kept because they changed since planning",
                        r.tags_deleted,
                        r.manifests_deleted,
                        r.bytes,
                        r.kept_on_recheck
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tell!("cairn: retention apply failed: {e}");
                    if bad_glob(&e) { ExitCode::from(2) } else { ExitCode::FAILURE }
                }
            }
        }
    }
}

/// A plan decision as the plan prints it.
fn decision(d: cairn::policy::retention::Decision) -> &'static str {
    match d {
        cairn::policy::retention::Decision::Keep => "keep",
        cairn::policy::retention::Decision::Delete => "delete",
    }
}
