//! `cairn migrate`: the database schema created or upgraded; with `--copy-to NEW_CONFIG`, this
//! installation copied into a new, empty one (`Registry::copy_to`: rows, blobs, signing keys,
//! audit archive files) after checking both sides, with progress on a terminal and a summary.
//! Exit 3 ([`REFUSED`]) when the copy refused before writing a row.

use std::path::PathBuf;
use std::process::ExitCode;

use cairn::config::{Config, Sources};
use cairn::service::ledger_files;

use super::output::{say, tell};
use super::progress::CopyBar;
use super::{REFUSED, installation};

/// `cairn migrate` without `--copy-to`: opens the installation, which runs its migrations.
pub async fn upgrade_schema(cfg: Config) -> ExitCode {
    let log = cfg.log.clone();
    let database = cfg.database_url_redacted();
    match cairn::AppState::from_config(cfg).await {
        Ok(_) => {
            let done = cairn::telemetry::result_line(&log, "database schema is up to date", &[("database", database)]);
            say!("{done}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e:#}");
            if log.format != cairn::config::LogFormat::Json {
                tell!("cairn: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `cairn migrate --copy-to NEW_CONFIG`: checks, then `Registry::copy_to`, with progress on a
/// terminal and a summary at the end.
pub async fn copy_installation(source: Sources, new_config: PathBuf) -> ExitCode {
    use cairn::keys::{KeyKind, Placed};
    use cairn::service::copy::{self, CopyError};
    let (cfg, notes) = match crate::load(&source) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // The target is NEW_CONFIG alone: the source's CAIRN_* variables must not leak into it.
    let target_sources = Sources { file: Some(new_config.clone()), ..Default::default() };
    let loaded = Config::read_from(&target_sources, std::iter::empty());
    let target_cfg = match loaded.config {
        Ok(c) => c,
        Err(e) => {
            tell!("cairn: {}: {}", new_config.display(), e.to_string().trim_end());
            return ExitCode::from(2);
        }
    };
    crate::start_logs(&cfg, &notes);
    let log = cfg.log.clone();
    if target_cfg.storage.kind == cairn::config::StorageKind::Memory {
        tell!("cairn: {} keeps blobs in memory, which is lost at exit: nothing to copy into", new_config.display());
        return ExitCode::from(REFUSED);
    }
    let archives =
        (ledger_files::archive_dir(&cfg.server.data_dir), ledger_files::archive_dir(&target_cfg.server.data_dir));
    let (from_shown, to_shown) = (installation(&cfg), installation(&target_cfg));
    let fail = |e: CopyError| {
        tell!("cairn: {e}");
        ExitCode::from(if e.is_refusal() { REFUSED } else { 1 })
    };
    let failed = |e: anyhow::Error| {
        tell!("cairn: {e:#}");
        ExitCode::FAILURE
    };
    // The target's database first (its migrations run), then the source, then the keys carried
    // over, then the rest of the target: opening it whole would make keys of its own.
    if let Err(e) = std::fs::create_dir_all(&target_cfg.server.data_dir) {
        return failed(anyhow::anyhow!("cannot create data directory {}: {e}", target_cfg.server.data_dir.display()));
    }
    let target_meta = match cairn::meta::open(&target_cfg.database_url()).await {
        Ok(m) => m,
        Err(e) => {
            return failed(anyhow::anyhow!(
                "cannot open the target database {}: {e}",
                target_cfg.database_url_redacted()
            ));
        }
    };
    if let Err(e) = copy::check_empty(target_meta.as_ref()).await {
        return fail(e);
    }
    let source_state = match cairn::AppState::from_config(cfg).await {
        Ok(s) => s,
        Err(e) => return failed(e.context("source")),
    };
    if copy::check_empty(source_state.meta.as_ref()).await.is_ok() {
        tell!("cairn: the source {from_shown} holds nothing to copy: check --config, --data-dir and CAIRN_*");
        return ExitCode::from(REFUSED);
    }
    // The signing keys go where the target loads them from (a key file, or its database).
    let mut notes = Vec::new();
    for kind in [KeyKind::Audit, KeyKind::Token] {
        let placed = async {
            let key = cairn::keys::load(&source_state.config, source_state.meta.as_ref(), kind).await?;
            cairn::keys::place(&target_cfg, target_meta.as_ref(), kind, &key).await
        };
        match placed.await {
            Ok(Placed::Ready) => {}
            Ok(Placed::Replaced(there)) => notes.push(format!(
                "the {} the empty target had ({there}) was replaced by the source's",
                if kind == KeyKind::Audit { "audit signing key" } else { "token signing key" }
            )),
            Ok(Placed::Differs(there)) if kind == KeyKind::Audit => {
                tell!(
                    "cairn: the target's [audit] key_file ({there}) holds a different audit signing key: the copied \
                     ledger checkpoints were signed with the source's key and would not verify. Point [audit] \
                     key_file at the source's key (or at a path where no file is yet)"
                );
                return ExitCode::from(REFUSED);
            }
            Ok(Placed::Differs(there)) => notes.push(format!(
                "the target's [auth] key_file ({there}) holds a different token signing key, kept: tokens the \
                 source issued are not accepted by the target"
            )),
            Err(e) => return failed(e.context("carrying the signing keys over")),
        }
    }
    drop(target_meta);
    let target_state = match cairn::AppState::from_config(target_cfg).await {
        Ok(s) => s,
        Err(e) => return failed(e.context("target")),
    };
    tell!("copying {from_shown} into {to_shown}");
    let mut bar = CopyBar::new();
    let result =
        source_state.registry.copy_to(&target_state.registry, (&archives.0, &archives.1), &mut |p| bar.show(p)).await;
    bar.finish();
    let report = match result {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let o = &report.objects;
    let rows: u64 = report.tables.iter().map(|(_, n)| n).sum();
    let message = format!(
        "copied {} blobs ({} objects, {} bytes written; {} objects, {} bytes already there) and {rows} rows into {to_shown}",
        report.blobs, o.objects, o.bytes, o.kept_objects, o.kept_bytes
    );
    let per_table: Vec<String> = report.tables.iter().map(|(t, n)| format!("{t}={n}")).collect();
    let fields = [
        ("blobs", report.blobs.to_string()),
        ("objects", o.objects.to_string()),
        ("bytes", o.bytes.to_string()),
        ("objects_already_there", o.kept_objects.to_string()),
        ("rows", rows.to_string()),
        ("tables", per_table.join(",")),
        ("archive_files", report.archive_files.to_string()),
    ];
    say!("{}", cairn::telemetry::result_line(&log, &message, &fields));
    if log.format != cairn::config::LogFormat::Json {
        for (table, n) in &report.tables {
            say!("  {table:<20} {n:>10} rows");
        }
        if report.archive_files > 0 {
            say!("  {} audit archive file(s) copied", report.archive_files);
        }
    }
    if report.uploads_skipped > 0 {
        notes.push(format!(
            "{} upload session(s) in progress were not copied: their clients start those uploads again",
            report.uploads_skipped
        ));
    }
    notes.extend(report.notes);
    for n in &notes {
        tell!("note: {n}");
    }
    tell!("next: `cairn audit verify --config {}`, then serve the target with that config", new_config.display());
    ExitCode::SUCCESS
}
