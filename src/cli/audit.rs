//! `cairn audit verify|export|archive|public-key`: the ledger checked against its signing key
//! (archive files, then the database; or export files offline with a public key), exported,
//! archived out of the database, or its public key printed. Exit codes: 0 done,
//! [`NOT_VERIFIED`] the ledger does not verify, [`NOT_DONE`] could not do the work, 2 bad config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cairn::config::{Config, Sources};
use cairn::service::ledger_files::{self, LedgerError};

use super::output::{say, tell};
use super::progress::{progress_bar, show_progress};
use super::{NOT_DONE, NOT_VERIFIED};
use crate::AuditCommand;

/// `cairn audit ...`: offline verification needs no config; the rest loads it first.
pub async fn audit(command: AuditCommand, sources: Sources) -> ExitCode {
    if let AuditCommand::Verify { exports, public_key: Some(pem), .. } = &command
        && !exports.is_empty()
    {
        return verify_offline(exports, pem);
    }
    let cfg = match crate::configure(&sources) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match audit_command(cfg, command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<LedgerError>() {
                Some(l) if l.is_invalid() => {
                    tell!("cairn: the audit ledger does not verify: {l}");
                    return ExitCode::from(NOT_VERIFIED);
                }
                Some(LedgerError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
                    return ExitCode::SUCCESS;
                }
                _ => {
                    tell!("cairn: {e:#}");
                }
            }
            ExitCode::from(NOT_DONE)
        }
    }
}

async fn audit_command(cfg: Config, command: AuditCommand) -> anyhow::Result<()> {
    let archives = ledger_files::archive_dir(&cfg.server.data_dir);
    let log = cfg.log.clone();
    match command {
        AuditCommand::Verify { public_key, archive_dir, .. } => {
            let raw = match &public_key {
                Some(pem) => read_public_key(pem)?,
                // On PostgreSQL with no key file configured, the key every node shares is in
                // the database (see `cairn::keys`).
                None if cfg.audit.key_file.is_none() && cairn::meta::is_postgres_url(&cfg.database_url()) => {
                    let meta = cairn::meta::open(&cfg.database_url())
                        .await
                        .map_err(|e| anyhow::anyhow!("cannot open database {}: {e}", cfg.database_url_redacted()))?;
                    let der = cairn::keys::load(&cfg, meta.as_ref(), cairn::keys::KeyKind::Audit).await?;
                    let key = cairn::audit::CheckpointKey::from_pkcs8(&der)
                        .map_err(|e| anyhow::anyhow!("the audit signing key in the database: {e}"))?;
                    key.public_key().to_vec()
                }
                None => {
                    let path = cfg.audit_key_path();
                    let der = std::fs::read(&path).map_err(|e| {
                        anyhow::anyhow!(
                            "cannot read the ledger's signing key {} ({e}); pass --public-key PEMFILE",
                            path.display()
                        )
                    })?;
                    let key = cairn::audit::CheckpointKey::from_pkcs8(&der)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    key.public_key().to_vec()
                }
            };
            let registry = ledger_registry(&cfg).await?;
            let bar = progress_bar(true);
            let dir = archive_dir.unwrap_or(archives);
            let report =
                registry.verify_ledger(&raw, Some(&dir), &mut |seq, total| show_progress(&bar, seq, total)).await;
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            let report = report?;
            let v = &report.verified;
            let (first, last) = match (&v.first, &v.last) {
                (Some((f, _)), Some((l, _))) => (*f, *l),
                _ => {
                    say!("{}", cairn::telemetry::result_line(&log, "the audit ledger is empty", &[]));
                    return Ok(());
                }
            };
            let archived = match report.archive_files.len() {
                0 => String::new(),
                n => format!(" ({} in {n} archive file(s))", report.archived_events),
            };
            let covered = match v.last_checkpoint {
                Some(c) => format!("{} checkpoint(s) verified, the last at seq {c}", v.checkpoints),
                None => "no checkpoint yet".to_string(),
            };
            let message =
                format!("audit ledger verified: seq {first}..{last}, {} events{archived}; {covered}", v.events);
            let fields = [
                ("first_seq", first.to_string()),
                ("last_seq", last.to_string()),
                ("events", v.events.to_string()),
                ("checkpoints", v.checkpoints.to_string()),
                ("last_checkpoint", v.last_checkpoint.unwrap_or(0).to_string()),
            ];
            say!("{}", cairn::telemetry::result_line(&log, &message, &fields));
            let signed = v.last_checkpoint.unwrap_or(0);
            if signed < last {
                tell!(
                    "note: seq {}..{last} are not covered by a signed checkpoint yet (the server signs one every \
                     [audit] checkpoint_every events or checkpoint_interval)",
                    signed + 1
                );
            }
        }
        AuditCommand::Export { since, until, output } => {
            let state = cairn::AppState::from_config(cfg).await?;
            let report = match &output {
                Some(path) => state.registry.export_ledger_to(&state.audit_key, since, until, path).await?,
                None => {
                    let mut out = std::io::BufWriter::new(std::io::stdout());
                    state.registry.export_ledger(&state.audit_key, since, until, &mut out).await?
                }
            };
            let signed = if report.signed {
                format!(" (signed the checkpoint at seq {} now)", report.last)
            } else {
                String::new()
            };
            let message = format!(
                "exported seq {}..{}: {} events, {} checkpoint(s){signed}",
                report.first, report.last, report.events, report.checkpoints
            );
            match output {
                Some(path) => {
                    say!("{}", cairn::telemetry::result_line(&log, &format!("{message} to {}", path.display()), &[]))
                }
                None => {
                    tell!("{message}");
                }
            }
        }
        AuditCommand::Archive { before } => {
            let state = cairn::AppState::from_config(cfg).await?;
            match state.registry.archive_ledger(&state.audit_key, before, &archives).await? {
                None => say!("{}", cairn::telemetry::result_line(&log, "nothing to archive", &[])),
                Some(r) => {
                    let message = format!(
                        "archived seq {}..{} ({} events, {} checkpoint(s)) to {} and removed them from the database",
                        r.export.first,
                        r.export.last,
                        r.removed,
                        r.export.checkpoints,
                        r.file.display()
                    );
                    say!(
                        "{}",
                        cairn::telemetry::result_line(&log, &message, &[("file", r.file.display().to_string())])
                    );
                }
            }
        }
        AuditCommand::PublicKey => {
            // The key every node shares lives in the database on PostgreSQL (with no key file
            // configured); otherwise it is the key file, created if missing.
            let der = if cfg.audit.key_file.is_none() && cairn::meta::is_postgres_url(&cfg.database_url()) {
                let meta = cairn::meta::open(&cfg.database_url())
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot open database {}: {e}", cfg.database_url_redacted()))?;
                cairn::keys::load(&cfg, meta.as_ref(), cairn::keys::KeyKind::Audit).await?
            } else {
                cairn::keys::load_or_create_file(&cfg.audit_key_path(), cairn::keys::KeyKind::Audit)?
            };
            let key = cairn::audit::CheckpointKey::from_pkcs8(&der)
                .map_err(|e| anyhow::anyhow!("the audit signing key: {e}"))?;
            say!("{}", key.public_key_pem().trim_end());
        }
    }
    Ok(())
}

/// The registry over the configured database only, for reading the ledger: unlike
/// `AppState::from_config` it creates no signing key and no blob directory.
async fn ledger_registry(cfg: &Config) -> anyhow::Result<cairn::service::Registry> {
    let url = cfg.database_url();
    let meta = cairn::meta::open(&url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open database {}: {e}", cfg.database_url_redacted()))?;
    let blobs = cairn::blob::BlobStore::new(std::sync::Arc::new(object_store::memory::InMemory::new()));
    let policy = cairn::policy::ImmutabilityPolicy::new(&cfg.immutability)
        .map_err(|errs| anyhow::anyhow!("invalid immutability rules: {}", errs.join("; ")))?;
    Ok(cairn::service::Registry::new(
        meta,
        blobs,
        std::sync::Arc::new(policy),
        std::sync::Arc::new(cairn::clock::SystemClock),
    ))
}

/// `cairn audit verify --export FILE... --public-key PEMFILE`: no config, no database.
fn verify_offline(files: &[PathBuf], pem: &Path) -> ExitCode {
    let raw = match read_public_key(pem) {
        Ok(k) => k,
        Err(e) => {
            tell!("cairn: {e:#}");
            return ExitCode::from(NOT_DONE);
        }
    };
    let bar = progress_bar(false);
    let result = ledger_files::verify_files(&raw, files, &mut |seq, total| show_progress(&bar, seq, total));
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match result {
        Ok(reports) => {
            for r in reports {
                let v = &r.verified;
                let (Some((first, prev_hash)), Some((last, _))) = (&v.first, &v.last) else { continue };
                let anchor = if r.continues_previous {
                    "continues the file before it".to_string()
                } else if cairn::audit::verify::is_genesis(&(*first, prev_hash.clone())) {
                    "from the start of the ledger".to_string()
                } else {
                    format!("its first prev_hash {prev_hash} is vouched for by the checkpoint at seq {last}")
                };
                say!(
                    "{}: verified seq {first}..{last}, {} events, {} checkpoint(s); {anchor}",
                    r.file.display(),
                    v.events,
                    v.checkpoints
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) if e.is_invalid() => {
            tell!("cairn: the export does not verify: {e}");
            ExitCode::from(NOT_VERIFIED)
        }
        Err(e) => {
            tell!("cairn: {e}");
            ExitCode::from(NOT_DONE)
        }
    }
}

fn read_public_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    let pem = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    cairn::audit::checkpoint::public_key_from_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
