//! `cairn gc`: one garbage collection (or a dry run) with progress on a terminal, then what was
//! unlinked and deleted, and a summary. Exit 1 when another maintenance run holds the lock.

use std::io::Write;
use std::process::ExitCode;

use cairn::config::Config;

use super::output::{say, tell};

/// `cairn gc`: one collection with progress on a terminal, then the report.
pub async fn gc(cfg: Config, dry_run: bool, grace: Option<std::time::Duration>) -> ExitCode {
    use std::io::IsTerminal;
    let opts = cairn::service::GcOptions { grace: grace.unwrap_or(cfg.gc.grace), dry_run };
    let state = match cairn::AppState::from_config(cfg).await {
        Ok(s) => s,
        Err(e) => {
            tell!("cairn: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let terminal = std::io::stderr().is_terminal();
    let verb = if dry_run { "would free" } else { "freed" };
    let progress = |p: cairn::service::GcProgress| {
        if terminal {
            let _ = write!(
                std::io::stderr(),
                "\rgc: {} links {}, {} blobs, {} bytes {verb} so far",
                p.links,
                if dry_run { "would go" } else { "removed" },
                p.blobs,
                p.bytes
            );
        }
    };
    let result = state.registry.collect_garbage(&opts, progress).await;
    if terminal {
        let _ = writeln!(std::io::stderr());
    }
    match result {
        Ok(r) if r.busy => {
            tell!(
                "cairn: another maintenance run holds the GC lock (another `cairn gc`, or a server's scheduled GC or retention); try later"
            );
            ExitCode::FAILURE
        }
        Ok(r) => {
            for l in &r.unlinked {
                say!("{} {l}", if dry_run { "would unlink" } else { "unlinked" });
            }
            for d in &r.digests {
                say!("{} {d}", if dry_run { "would delete" } else { "deleted" });
            }
            let grace = humantime::format_duration(opts.grace);
            let uploads = if dry_run { "upload leftovers waiting" } else { "upload leftovers removed" };
            say!(
                "gc{}: {} repository links no manifest uses {} ({} bytes); {} blobs, {} bytes {verb} (grace {grace}); {} {uploads}; {} kept because they were referenced, linked or touched meanwhile",
                if dry_run { " (dry run)" } else { "" },
                r.links,
                if dry_run { "would be removed" } else { "removed" },
                r.link_bytes,
                r.blobs,
                r.bytes,
                r.uploads,
                r.kept
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            tell!("cairn: garbage collection failed: {e}");
            ExitCode::FAILURE
        }
    }
}
