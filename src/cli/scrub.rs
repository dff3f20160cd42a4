//! `cairn scrub`: every stored blob read back and hashed again, with progress on a terminal;
//! the missing and damaged ones listed (or the whole report as JSON). Exit 0 all healthy,
//! [`NOT_VERIFIED`] something missing or damaged, [`NOT_DONE`] could not run.

use std::io::IsTerminal;
use std::process::ExitCode;

use cairn::config::Config;

use super::output::{say, tell};
use super::progress::stderr_bar;
use super::{NOT_DONE, NOT_VERIFIED};

/// `cairn scrub`: every blob re-hashed, with progress on a terminal; the bad ones listed.
pub async fn scrub(cfg: Config, json: bool) -> ExitCode {
    let log = cfg.log.clone();
    let state = match cairn::AppState::from_config(cfg).await {
        Ok(s) => s,
        Err(e) => {
            tell!("cairn: {e:#}");
            return ExitCode::from(NOT_DONE);
        }
    };
    let template = "scrub: {bytes}/{total_bytes} {wide_bar} {binary_bytes_per_sec} {msg} {elapsed}";
    let bar = std::io::stderr().is_terminal().then(|| stderr_bar(None, template));
    let result = state
        .registry
        .scrub(&mut |p| {
            if let Some(b) = &bar {
                b.set_length(p.total_bytes);
                b.set_position(p.bytes);
                b.set_message(format!("{} blobs", p.blobs));
            }
        })
        .await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            tell!("cairn: scrub failed: {e}");
            return ExitCode::from(NOT_DONE);
        }
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => say!("{text}"),
            Err(e) => {
                tell!("cairn: {e}");
                return ExitCode::from(NOT_DONE);
            }
        }
    } else {
        for f in report.missing.iter().chain(&report.damaged) {
            let repos = match f.repositories.is_empty() {
                true => "no repository links it".to_string(),
                false => format!("in {}", f.repositories.join(", ")),
            };
            say!("{} ({} bytes, {repos}): {}", f.digest, f.size, f.problem);
        }
        let message = format!(
            "scrub: {} blobs, {} bytes checked: {} healthy, {} damaged, {} missing",
            report.blobs,
            report.bytes,
            report.healthy,
            report.damaged.len(),
            report.missing.len()
        );
        let fields = [
            ("blobs", report.blobs.to_string()),
            ("bytes", report.bytes.to_string()),
            ("healthy", report.healthy.to_string()),
            ("damaged", report.damaged.len().to_string()),
            ("missing", report.missing.len().to_string()),
        ];
        say!("{}", cairn::telemetry::result_line(&log, &message, &fields));
        if report.deleted_meanwhile > 0 {
            tell!("note: {} blob(s) were deleted by a collector while being checked", report.deleted_meanwhile);
        }
        if !report.is_clean() {
            tell!(
                "push the damaged and missing blobs again (the same bytes give the same digest), or restore them \
                 from a backup"
            );
        }
    }
    if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::from(NOT_VERIFIED) }
}
