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
        RetentionCommand::Plan { repository, json } => {
            match print_plan(&state.registry, repository.as_deref(), json).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(PlanError::Plan(e)) => {
                    tell!("cairn: {e}");
                    if bad_glob(&e) { ExitCode::from(2) } else { ExitCode::FAILURE }
                }
                // A reader that went away (`| head`) ends the output quietly.
                Err(PlanError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(PlanError::Write(e)) => {
                    tell!("cairn: cannot write the plan to stdout: {e}");
                    ExitCode::FAILURE
                }
            }
        }
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
                .retention_apply_walk(repository.as_deref(), &actor, cairn::service::Trigger::Cli, progress)
                .await;
            if terminal {
                let _ = writeln!(std::io::stderr());
            }
            match result {
                Ok(r) => {
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

/// Why printing a plan stopped.
enum PlanError {
    Plan(cairn::error::Error),
    Write(std::io::Error),
}

impl From<std::io::Error> for PlanError {
    fn from(e: std::io::Error) -> Self {
        PlanError::Write(e)
    }
}

impl From<serde_json::Error> for PlanError {
    fn from(e: serde_json::Error) -> Self {
        PlanError::Write(e.into())
    }
}

/// Prints the plan repository by repository as it is made, as text or as the JSON of
/// `GET /api/v1/retention/plan` (the same members, written as they come), so that memory
/// does not grow with the registry (bench/scale: a million tags' plan is hundreds of MiB).
async fn print_plan(registry: &cairn::service::Registry, filter: Option<&str>, json: bool) -> Result<(), PlanError> {
    let mut walk = registry.plan_walk(filter).await.map_err(PlanError::Plan)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        write!(out, "{{\n\"time\": {},\n\"repositories\": [", serde_json::to_string(&walk.time)?)?;
    }
    let mut first = true;
    while let Some(r) = registry.next_repo_plan(&mut walk).await.map_err(PlanError::Plan)? {
        if json {
            out.write_all(if first { b"\n" } else { b",\n" })?;
            serde_json::to_writer_pretty(&mut out, &r)?;
        } else {
            writeln!(out, "{} (policy {})", r.repository, r.policy)?;
            for t in &r.tags {
                writeln!(out, "  {:<6} tag {} -> {}: {}", decision(t.decision), t.tag, t.digest, t.reasons.join("; "))?;
            }
            for m in &r.manifests {
                let reasons = m.reasons.join("; ");
                writeln!(out, "  {:<6} manifest {} ({} bytes): {reasons}", decision(m.decision), m.digest, m.size)?;
            }
        }
        first = false;
    }
    let s = &walk.summary;
    if json {
        write!(out, "\n],\n\"unmatched_repositories\": ")?;
        serde_json::to_writer(&mut out, &walk.unmatched_repositories)?;
        write!(out, ",\n\"summary\": ")?;
        serde_json::to_writer_pretty(&mut out, s)?;
        writeln!(out, "\n}}")?;
    } else {
        for name in &walk.unmatched_repositories {
            writeln!(out, "{name}: no policy matches; everything is kept")?;
        }
        writeln!(
            out,
            "plan: delete {} tags and {} manifests ({} bytes); keep {} tags and {} manifests",
            s.tags_deleted, s.manifests_deleted, s.bytes, s.tags_kept, s.manifests_kept
        )?;
    }
    out.flush()?;
    Ok(())
}

/// A plan decision as the plan prints it.
fn decision(d: cairn::policy::retention::Decision) -> &'static str {
    match d {
        cairn::policy::retention::Decision::Keep => "keep",
        cairn::policy::retention::Decision::Delete => "delete",
    }
}
