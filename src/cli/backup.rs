//! `cairn backup DIR` and `cairn restore DIR`: the installation copied, while it serves, into a
//! new one in DIR (`Registry::backup_to`, then `cairn-backup.json` written last), and a
//! finished backup copied back into an empty installation. Both share `copy_into_empty`
//! (target checks, signing keys, the copy with its progress) and the summary they print.
//! Exit 3 ([`REFUSED`]) when refused before a row was written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cairn::config::Config;
use cairn::service::ledger_files;

use super::output::{say, tell};
use super::progress::BackupBar;
use super::{REFUSED, installation};

/// `cairn backup DIR`: the installation `cfg` describes, copied while it serves into a new
/// installation in DIR (`Registry::backup_to`), with progress on a terminal and a summary.
pub async fn backup(cfg: Config, dir: PathBuf, hard_links: bool) -> ExitCode {
    use cairn::service::backup::{self, BackupManifest};
    if let Err(e) = backup::check_backup_dir(&dir) {
        tell!("cairn: {e}");
        return ExitCode::from(REFUSED);
    }
    if cfg.storage.kind == cairn::config::StorageKind::Memory {
        tell!("cairn: this installation keeps blobs in memory, which no other process can read: nothing to back up");
        return ExitCode::from(REFUSED);
    }
    let (log, from_shown) = (cfg.log.clone(), installation(&cfg));
    let (postgres, s3) =
        (cairn::meta::is_postgres_url(&cfg.database_url()), cfg.storage.kind == cairn::config::StorageKind::S3);
    let (database, storage) = (cfg.database_url_redacted(), cfg.storage.summary(&cfg.storage_path()));
    let source_state = match cairn::AppState::from_config(cfg).await {
        Ok(s) => s,
        Err(e) => {
            tell!("cairn: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut target_cfg = Config::default();
    target_cfg.server.data_dir = dir.clone();
    tell!("backing up {from_shown} into {}", dir.display());
    let (report, target, mut notes) = match copy_into_empty(&source_state, target_cfg, hard_links).await {
        Ok(done) => done,
        Err(code) => return code,
    };
    let ledger_head = target.meta.ledger_head().await.ok().flatten().map(|(seq, _)| seq);
    let manifest = BackupManifest {
        cairn_version: cairn::metrics::VERSION.to_string(),
        finished_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        source_database: database,
        source_storage: storage,
        ledger_head,
        blobs: report.copy.blobs,
        tables: report.copy.tables.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
    };
    if let Err(e) = backup::write_manifest(&dir, &manifest) {
        tell!("cairn: the backup is unfinished: {e}");
        return ExitCode::FAILURE;
    }
    let head = ledger_head.map(|s| format!("; audit ledger up to seq {s}")).unwrap_or_default();
    print_copied(&log, &format!("backed up {from_shown} into {}", dir.display()), &report, &head);
    if postgres {
        notes.push(
            "the source database is PostgreSQL: this backup holds one consistent snapshot of it as SQLite; \
             pg_dump or pg_basebackup (with WAL archiving) is the usual backup of the database itself"
                .into(),
        );
    }
    if s3 {
        notes.push(format!(
            "the blobs were copied out of the S3 bucket into {}; bucket versioning or replication is the usual \
             protection of the bucket itself",
            dir.display()
        ));
    }
    for n in &notes {
        tell!("note: {n}");
    }
    tell!("check it: `cairn audit verify --data-dir {0}`, `cairn scrub --data-dir {0}`", dir.display());
    ExitCode::SUCCESS
}

/// `cairn restore DIR`: a finished backup copied into the (empty) installation `cfg`.
pub async fn restore(cfg: Config, dir: PathBuf, hard_links: bool) -> ExitCode {
    use cairn::service::backup;
    let manifest = match backup::read_backup_dir(&dir) {
        Ok(m) => m,
        Err(e) => {
            tell!("cairn: {e}");
            return ExitCode::from(REFUSED);
        }
    };
    if cfg.storage.kind == cairn::config::StorageKind::Memory {
        tell!("cairn: this installation keeps blobs in memory, which is lost at exit: nothing to restore into");
        return ExitCode::from(REFUSED);
    }
    let same = |a: &Path| a.canonicalize().ok().is_some_and(|a| dir.canonicalize().is_ok_and(|d| a == d));
    if same(&cfg.server.data_dir) || same(&cfg.storage_path()) {
        tell!("cairn: {} is the backup itself: restore into another data directory", dir.display());
        return ExitCode::from(REFUSED);
    }
    let (log, to_shown) = (cfg.log.clone(), installation(&cfg));
    // The target is looked at before the backup is opened: a refusal changes nothing there.
    let empty = async {
        std::fs::create_dir_all(&cfg.server.data_dir)?;
        let meta = cairn::meta::open(&cfg.database_url()).await?;
        Ok::<_, anyhow::Error>(cairn::service::copy::check_empty(meta.as_ref()).await)
    };
    match empty.await {
        Ok(Ok(())) => {}
        Ok(Err(cairn::service::copy::CopyError::NotEmpty(tables))) => {
            tell_not_empty(&cfg.database_url_redacted(), &tables);
            return ExitCode::from(REFUSED);
        }
        Ok(Err(e)) => {
            tell!("cairn: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            tell!("cairn: cannot open the target database {}: {e:#}", cfg.database_url_redacted());
            return ExitCode::FAILURE;
        }
    }
    let mut backup_cfg = Config::default();
    backup_cfg.server.data_dir = dir.clone();
    let source_state = match cairn::AppState::from_config(backup_cfg).await {
        Ok(s) => s,
        Err(e) => {
            tell!("cairn: the backup in {}: {e:#}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    tell!(
        "restoring the backup of {} + {} taken {} into {to_shown}",
        manifest.source_database,
        manifest.source_storage,
        manifest.finished_at
    );
    let (report, _, notes) = match copy_into_empty(&source_state, cfg, hard_links).await {
        Ok(done) => done,
        Err(code) => return code,
    };
    let head = manifest.ledger_head.map(|s| format!("; audit ledger up to seq {s}")).unwrap_or_default();
    print_copied(&log, &format!("restored {} into {to_shown}", dir.display()), &report, &head);
    for n in &notes {
        tell!("note: {n}");
    }
    tell!("next: `cairn audit verify` on the restored installation, then serve it");
    ExitCode::SUCCESS
}

/// For backup and restore: opens the installation `target_cfg` describes, refuses it unless its
/// database is empty, carries the source's signing keys over and copies everything into it
/// (hard links where asked and possible), with progress on a terminal. Returns the report, the
/// target and notes for the operator; on failure, says why and returns the exit code.
async fn copy_into_empty(
    source: &cairn::AppState,
    target_cfg: Config,
    hard_links: bool,
) -> Result<(cairn::service::BackupReport, cairn::AppState, Vec<String>), ExitCode> {
    use cairn::keys::{KeyKind, Placed};
    use cairn::service::copy::CopyError;
    let failed = |e: anyhow::Error| {
        tell!("cairn: {e:#}");
        ExitCode::FAILURE
    };
    let data_dir = target_cfg.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| failed(anyhow::anyhow!("cannot create data directory {}: {e}", data_dir.display())))?;
    let target_meta = cairn::meta::open(&target_cfg.database_url()).await.map_err(|e| {
        failed(anyhow::anyhow!("cannot open the target database {}: {e}", target_cfg.database_url_redacted()))
    })?;
    let target_db = target_cfg.database_url_redacted();
    let refused = |e: CopyError| {
        match &e {
            CopyError::NotEmpty(tables) => tell_not_empty(&target_db, tables),
            _ => {
                tell!("cairn: {e}");
            }
        }
        ExitCode::from(if e.is_refusal() { REFUSED } else { 1 })
    };
    cairn::service::copy::check_empty(target_meta.as_ref()).await.map_err(refused)?;
    let mut notes = Vec::new();
    for kind in [KeyKind::Audit, KeyKind::Token] {
        let placed = async {
            let key = cairn::keys::load(&source.config, source.meta.as_ref(), kind).await?;
            cairn::keys::place(&target_cfg, target_meta.as_ref(), kind, &key).await
        };
        match placed.await.map_err(|e| failed(e.context("carrying the signing keys over")))? {
            Placed::Ready | Placed::Replaced(_) => {}
            Placed::Differs(there) if kind == KeyKind::Audit => {
                tell!(
                    "cairn: the target's [audit] key_file ({there}) holds a different audit signing key: the \
                     ledger's checkpoints were signed with the backed-up key and would not verify. Point [audit] \
                     key_file at that key (or at a path where no file is yet)"
                );
                return Err(ExitCode::from(REFUSED));
            }
            Placed::Differs(there) => notes.push(format!(
                "the target's [auth] key_file ({there}) holds a different token signing key, kept: tokens issued \
                 before are not accepted"
            )),
        }
    }
    drop(target_meta);
    let target = cairn::AppState::from_config(target_cfg).await.map_err(|e| failed(e.context("target")))?;
    let archives = (
        ledger_files::archive_dir(&source.config.server.data_dir),
        ledger_files::archive_dir(&target.config.server.data_dir),
    );
    let mut bar = BackupBar::new();
    let result =
        source.registry.backup_to(&target.registry, (&archives.0, &archives.1), hard_links, &mut |p| bar.show(p)).await;
    bar.finish();
    let report = result.map_err(refused)?;
    if report.copy.uploads_skipped > 0 {
        notes.push(format!(
            "{} upload session(s) in progress were not copied: their clients start those uploads again",
            report.copy.uploads_skipped
        ));
    }
    if let Some(why) = &report.not_linked {
        notes.push(format!("blob files were copied, not hard-linked ({why})"));
    }
    notes.extend(report.copy.notes.iter().cloned());
    Ok((report, target, notes))
}

/// The summary line (and, in text logs, rows per table) of a backup or restore.
fn print_copied(log: &cairn::config::LogConfig, what: &str, report: &cairn::service::BackupReport, tail: &str) {
    let (o, l) = (&report.copy.objects, &report.linked);
    let rows: u64 = report.copy.tables.iter().map(|(_, n)| n).sum();
    let message = format!(
        "{what}: {} blobs ({} objects, {} bytes hard-linked; {} objects, {} bytes copied) and {rows} rows{tail}",
        report.copy.blobs, l.objects, l.bytes, o.objects, o.bytes
    );
    let fields = [
        ("blobs", report.copy.blobs.to_string()),
        ("linked_objects", l.objects.to_string()),
        ("linked_bytes", l.bytes.to_string()),
        ("copied_objects", o.objects.to_string()),
        ("copied_bytes", o.bytes.to_string()),
        ("rows", rows.to_string()),
        ("archive_files", report.copy.archive_files.to_string()),
    ];
    say!("{}", cairn::telemetry::result_line(log, &message, &fields));
    if log.format != cairn::config::LogFormat::Json {
        for (table, n) in &report.copy.tables {
            say!("  {table:<20} {n:>10} rows");
        }
        if report.copy.archive_files > 0 {
            say!("  {} audit archive file(s) copied", report.copy.archive_files);
        }
    }
}

/// Says that the target database `db` holds rows (in `tables`), so it takes no restore.
fn tell_not_empty(db: &str, tables: &[&str]) {
    tell!(
        "cairn: the target database {db} is not empty ({}): a restore fills an empty installation only. Point \
         --data-dir (or [database] url) at a new one, or move the data that is there away first",
        tables.iter().map(|t| format!("{t} has rows")).collect::<Vec<_>>().join(", ")
    );
}
