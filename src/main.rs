//! The `cairn` command line. No logic here: parse arguments, load config, call the library.
//! Output never panics: a closed stdout or stderr (`cairn check-config | head -1`) drops
//! the rest of the output quietly.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cairn::config::{Config, Sources};
use cairn::service::ledger_files::{self, Before, LedgerError};

/// `println!` that never panics (see `out`).
macro_rules! say {
    ($($arg:tt)*) => { out(format_args!($($arg)*)) };
}

/// `eprintln!` that never panics.
macro_rules! tell {
    ($($arg:tt)*) => { let _ = write_line(std::io::stderr().lock(), format_args!($($arg)*)); };
}

fn write_line(mut w: impl Write, args: fmt::Arguments<'_>) -> std::io::Result<()> {
    w.write_fmt(args)?;
    w.write_all(b"\n")?;
    w.flush()
}

/// Writes one line to stdout. A reader that went away (broken pipe) ends the output
/// quietly; any other failure is said once per line on stderr.
fn out(args: fmt::Arguments<'_>) {
    if let Err(e) = write_line(std::io::stdout().lock(), args)
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        tell!("cairn: cannot write to stdout: {e}");
    }
}

#[derive(Parser)]
#[command(name = "cairn", version = cairn::metrics::VERSION, about = "An OCI registry where a pushed tag never silently moves")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry.
    Serve {
        /// Config file (TOML); also CAIRN_CONFIG.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on, overriding the config (for example 0.0.0.0:5000).
        #[arg(long)]
        listen: Option<String>,
        /// Data directory, overriding the config.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Check the configuration and print every problem found.
    CheckConfig {
        /// Config file (TOML); also CAIRN_CONFIG.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to check as `serve --listen` would use it.
        #[arg(long)]
        listen: Option<String>,
        /// Data directory, overriding the config; also CAIRN_DATA_DIR.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Create or upgrade the database schema, then exit; with --copy-to, copy this installation
    /// into a new one (for example SQLite + filesystem into PostgreSQL + S3).
    Migrate {
        /// Config file (TOML); also CAIRN_CONFIG.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory, overriding the config; also CAIRN_DATA_DIR.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Copy everything this installation holds (the one --config, --data-dir and CAIRN_*
        /// describe) into the installation NEW_CONFIG describes, whose database must be empty.
        ///
        /// Metadata is copied row for row (ids, times and the audit ledger as they are, so
        /// `cairn audit verify --config NEW_CONFIG` passes), blobs object by object (streamed,
        /// sizes checked), the signing keys and audit archive files file by file. Upload
        /// sessions in progress are not copied. NEW_CONFIG is read alone: CAIRN_* variables
        /// apply to the source only.
        ///
        /// Stop every server on the source first: the copy reads one snapshot of the source
        /// database and holds its GC lock, but pushes made meanwhile would not be copied.
        ///
        /// Exit 0 copied; 1 failed (the target's database stays empty; run it again, objects
        /// already copied are kept); 2 bad config; 3 refused, no row copied (target not
        /// empty, another key in its [audit] key_file, source in use or empty).
        #[arg(long, value_name = "NEW_CONFIG")]
        copy_to: Option<PathBuf>,
    },
    /// Read a password (from the terminal, or stdin when piped) and print its argon2id hash
    /// for `[[auth.users]] password_hash`.
    HashPassword,
    /// Unlink blobs no manifest of their repository uses and delete blobs no repository links,
    /// once their `[gc] grace` has passed, and upload leftovers; safe while the registry
    /// serves. Prints what was unlinked and freed.
    Gc {
        /// Report what would be freed; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Grace period, overriding `[gc] grace` (for example 2h).
        #[arg(long, value_parser = humantime::parse_duration)]
        grace: Option<std::time::Duration>,
        /// Config file (TOML); also CAIRN_CONFIG.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory, overriding the config; also CAIRN_DATA_DIR.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Retention: plan (what would be deleted, and why) and apply (delete it).
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
        /// Config file (TOML); also CAIRN_CONFIG.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Data directory, overriding the config; also CAIRN_DATA_DIR.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// Robot tokens for CI/CD: create, list, revoke.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        /// Config file (TOML); also CAIRN_CONFIG.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Data directory, overriding the config.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// The audit ledger: verify, export, archive, public-key.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
        /// Config file (TOML); also CAIRN_CONFIG.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Data directory, overriding the config; also CAIRN_DATA_DIR.
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// Back up this installation, while it serves, into DIR: a new Cairn installation (SQLite
    /// file, filesystem blobs, signing keys, audit archive files) that `cairn audit verify
    /// --data-dir DIR` verifies and `cairn restore DIR` brings back.
    ///
    /// The database is read as one consistent snapshot (pushes made meanwhile are not in the
    /// backup; upload sessions in progress never are) and the maintenance lock is held, so no
    /// collector deletes what is being copied (a running GC or retention is waited for). Blob
    /// files are hard-linked where DIR is on the same filesystem (a link shares the disk: keep
    /// backups on another device, or pass --no-hard-links), copied otherwise, streamed.
    /// Blobs on S3 are copied into DIR too: bucket versioning or replication is the usual
    /// protection for the bucket. On PostgreSQL the same snapshot copy works; pg_dump or
    /// pg_basebackup is the usual tool there.
    ///
    /// Exit 0 backed up; 1 failed (DIR is left unfinished: it has no cairn-backup.json);
    /// 2 bad config; 3 refused (DIR not empty, a collector held the lock too long).
    Backup {
        /// Where the backup goes: a directory that does not exist yet, or an empty one.
        dir: PathBuf,
        /// Copy every blob file, even where a hard link could be made.
        #[arg(long)]
        no_hard_links: bool,
        /// Config file (TOML); also CAIRN_CONFIG.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory, overriding the config; also CAIRN_DATA_DIR.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Restore a backup made by `cairn backup` into this installation (the one --config,
    /// --data-dir and CAIRN_* describe), whose database must be empty: rows, blobs, signing
    /// keys and audit archive files as they were at the backup's snapshot.
    ///
    /// Blob files are hard-linked from DIR where it is on the same filesystem (--no-hard-links
    /// copies them). Exit 0 restored; 1 failed (the target's database stays empty: run it
    /// again); 2 bad config; 3 refused (the target is not empty, DIR is not a finished backup,
    /// another key in the target's [audit] key_file).
    Restore {
        /// The backup directory.
        dir: PathBuf,
        /// Copy every blob file, even where a hard link could be made.
        #[arg(long)]
        no_hard_links: bool,
        /// Config file (TOML); also CAIRN_CONFIG.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory, overriding the config; also CAIRN_DATA_DIR.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Read every stored blob back and hash it again (sha256 or sha512, as its digest says);
    /// report each one missing or damaged (size or hash not as recorded) with its digest and
    /// repositories. Safe while the registry serves; changes nothing. Exit 0 all healthy,
    /// 1 something missing or damaged, 2 bad config, 3 could not run.
    Scrub {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Config file (TOML); also CAIRN_CONFIG.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory, overriding the config; also CAIRN_DATA_DIR.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RetentionCommand {
    /// List every candidate tag and manifest with keep or delete and every reason. Deletes nothing.
    Plan {
        /// Only repositories matching this glob (for example 'apps/**').
        #[arg(long, value_name = "GLOB")]
        repository: Option<String>,
        /// Print the plan as JSON (the shape of GET /api/v1/retention/plan).
        #[arg(long)]
        json: bool,
    },
    /// Carry out the plan's deletions now; safe while the registry serves. Prints a summary.
    Apply {
        /// Only repositories matching this glob (for example 'apps/**').
        #[arg(long, value_name = "GLOB")]
        repository: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain and check every checkpoint signature: the archive files, then
    /// the database; or, with --export, files alone with the public key. Exit 0 verified,
    /// 1 does not verify (the first bad seq is named), 2 bad config, 3 could not read.
    Verify {
        /// Verify these export or archive files offline, without a database (repeatable, in
        /// seq order; a file that starts where the one before it ended must link to it).
        #[arg(long = "export", value_name = "FILE", requires = "public_key")]
        exports: Vec<PathBuf>,
        /// The ledger's public key (PEM, from `cairn audit public-key`). Required with
        /// --export; for the database it replaces the data directory's signing key.
        #[arg(long, value_name = "PEMFILE")]
        public_key: Option<PathBuf>,
        /// Where the archive files are; default <data_dir>/audit-archive.
        #[arg(long, value_name = "DIR")]
        archive_dir: Option<PathBuf>,
    },
    /// Write events as JSON lines with the checkpoints that cover them, ending at a checkpoint
    /// (signed and stored now if there is none at --until). Refuses a ledger that does not verify.
    Export {
        /// First seq (default: the database's first event).
        #[arg(long, value_name = "SEQ")]
        since: Option<i64>,
        /// Last seq (default: the newest event).
        #[arg(long, value_name = "SEQ")]
        until: Option<i64>,
        /// Write here (whole or not at all) instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Move the events before a seq, or before an RFC 3339 time, to
    /// <data_dir>/audit-archive/<first>-<last>.jsonl (the export format, ending at a checkpoint)
    /// and remove them from the database.
    Archive {
        /// A seq (events with a lower seq move) or an RFC 3339 time (events before the first one
        /// at or after it move).
        #[arg(long, value_name = "SEQ|TIME", value_parser = Before::parse)]
        before: Before,
    },
    /// Print the ledger's public key (PEM, SubjectPublicKeyInfo) for auditors.
    PublicKey,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a robot and print its secret (shown only this once).
    Create {
        /// Login name of the robot.
        #[arg(long)]
        name: String,
        /// A role: admin, writer, reader, auditor (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// A grant GLOB=ACTIONS, for example 'apps/**=pull,push' (repeatable).
        #[arg(long = "grant")]
        grants: Vec<String>,
        /// Lifetime, for example 30d or 12h; without it the robot does not expire.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
    },
    /// List robots (never their secrets).
    List,
    /// Revoke a robot: its secret stops working at once.
    Revoke {
        /// The robot's name.
        name: String,
    },
}

/// Loads the config; on problems prints them (and any notes) and returns exit code 2.
fn load(sources: &Sources) -> Result<(Config, Vec<String>), ExitCode> {
    let loaded = Config::read(sources);
    match loaded.config {
        Ok(c) => Ok((c, loaded.notes)),
        Err(e) => {
            tell!("{}", e.to_string().trim_end());
            for n in &loaded.notes {
                tell!("note: {n}");
            }
            Err(ExitCode::from(2))
        }
    }
}

/// Starts logging and logs the config notes.
fn start_logs(cfg: &Config, notes: &[String]) {
    cairn::telemetry::init(&cfg.log);
    for n in notes {
        tracing::info!("{n}");
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, listen, data_dir } => {
            let (cfg, notes) = match load(&Sources { file: config, listen, data_dir }) {
                Ok(c) => c,
                Err(code) => return code,
            };
            start_logs(&cfg, &notes);
            let json = cfg.log.format == cairn::config::LogFormat::Json;
            match run_server(cfg).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    if !json {
                        tell!("cairn: {e:#}");
                    }
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config, listen, data_dir } => match load(&Sources { file: config, listen, data_dir }) {
            Ok((cfg, notes)) => {
                say!("configuration is valid");
                say!("  listen:   {}", cfg.server.listen);
                say!("  data dir: {}", cfg.server.data_dir.display());
                say!("  database: {}", cfg.database_url_redacted());
                say!("  storage:  {}", cfg.storage.summary(&cfg.storage_path()));
                print_rules(&cfg);
                for n in &notes {
                    tell!("note: {n}");
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::HashPassword => hash_password(),
        Command::Gc { dry_run, grace, config, data_dir } => {
            let (cfg, notes) = match load(&Sources { file: config, data_dir, ..Default::default() }) {
                Ok(c) => c,
                Err(code) => return code,
            };
            start_logs(&cfg, &notes);
            gc(cfg, dry_run, grace).await
        }
        Command::Retention { command, config, data_dir } => {
            let (cfg, notes) = match load(&Sources { file: config, data_dir, ..Default::default() }) {
                Ok(c) => c,
                Err(code) => return code,
            };
            start_logs(&cfg, &notes);
            retention(cfg, command).await
        }
        Command::Token { command, config, data_dir } => {
            let (cfg, notes) = match load(&Sources { file: config, data_dir, ..Default::default() }) {
                Ok(c) => c,
                Err(code) => return code,
            };
            start_logs(&cfg, &notes);
            match token_command(cfg, command).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tell!("cairn: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Audit { command, config, data_dir } => {
            audit(command, Sources { file: config, data_dir, ..Default::default() }).await
        }
        Command::Backup { dir, no_hard_links, config, data_dir } => {
            backup(Sources { file: config, data_dir, ..Default::default() }, dir, !no_hard_links).await
        }
        Command::Restore { dir, no_hard_links, config, data_dir } => {
            restore(Sources { file: config, data_dir, ..Default::default() }, dir, !no_hard_links).await
        }
        Command::Scrub { json, config, data_dir } => {
            scrub(Sources { file: config, data_dir, ..Default::default() }, json).await
        }
        Command::Migrate { config, data_dir, copy_to: Some(new_config) } => {
            copy_installation(Sources { file: config, data_dir, ..Default::default() }, new_config).await
        }
        Command::Migrate { config, data_dir, copy_to: None } => {
            let (cfg, notes) = match load(&Sources { file: config, data_dir, ..Default::default() }) {
                Ok(c) => c,
                Err(code) => return code,
            };
            start_logs(&cfg, &notes);
            let log = cfg.log.clone();
            let database = cfg.database_url_redacted();
            match cairn::AppState::from_config(cfg).await {
                Ok(_) => {
                    let done =
                        cairn::telemetry::result_line(&log, "database schema is up to date", &[("database", database)]);
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
    }
}

fn hash_password() -> ExitCode {
    use std::io::IsTerminal;
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ");
        let second = rpassword::prompt_password("again: ");
        match (first, second) {
            (Ok(a), Ok(b)) if a == b => a,
            (Ok(_), Ok(_)) => {
                tell!("cairn: the two passwords differ");
                return ExitCode::FAILURE;
            }
            (Err(e), _) | (_, Err(e)) => {
                tell!("cairn: cannot read the password: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().read_line(&mut line) {
            tell!("cairn: cannot read the password from stdin: {e}");
            return ExitCode::FAILURE;
        }
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if password.is_empty() {
        tell!("cairn: the password is empty");
        return ExitCode::FAILURE;
    }
    match cairn::auth::hash_password(&password) {
        Ok(h) => {
            say!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tell!("cairn: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn token_command(cfg: Config, command: TokenCommand) -> anyhow::Result<()> {
    let users: Vec<String> = cfg.auth.users.iter().map(|u| u.name.clone()).collect();
    let config_open = cfg.auth.users.is_empty() && cfg.auth.grants.is_empty();
    let state = cairn::AppState::from_config(cfg).await?;
    let meta = state.meta.as_ref();
    match command {
        TokenCommand::Create { name, roles, grants, expires } => {
            let was_open = config_open && cairn::auth::list_robots(meta).await?.is_empty();
            let new = cairn::auth::NewRobot { name: name.clone(), roles, grants, expires_in: expires };
            let secret = cairn::auth::create_robot(meta, &new, &users).await?;
            if was_open {
                tracing::warn!(
                    robot = %name,
                    "open mode ended: the first robot token exists, so anonymous clients now get only what \
                     [[auth.grants]] for \"anonymous\" give them"
                );
                tell!(
                    "cairn: this registry was open (no users, grants or robots, so anyone could push, pull and \
                     delete). Robot {name:?} ends that for the running server (within a second) and every later \
                     start: anonymous clients now get only what an [[auth.grants]] entry with subjects = \
                     [\"anonymous\"] gives them. Sign in as the robot, or add such a grant (for example \
                     repositories = \"**\", actions = [\"pull\"]) to keep anonymous pulls."
                );
            }
            let shown = write_line(std::io::stdout().lock(), format_args!("robot: {name}\nsecret: {secret}"));
            if let Err(e) = shown {
                anyhow::bail!(
                    "robot {name:?} was created but its secret could not be printed ({e}); \
                     revoke it with `cairn token revoke {name}` and create another"
                );
            }
            tell!(
                "Store the secret now: it is not shown again. Log in with username {name:?} and the secret as password."
            );
        }
        TokenCommand::List => {
            let robots = cairn::auth::list_robots(meta).await?;
            if robots.is_empty() {
                say!("no robots");
            }
            for r in robots {
                let grants: Vec<String> =
                    r.grants.iter().map(|g| format!("{}={}", g.repositories, g.actions.join(","))).collect();
                let status = match (r.revoked_at, r.expires_at) {
                    (Some(_), _) => "revoked".to_string(),
                    (None, Some(t)) if t <= std::time::SystemTime::now() => "expired".to_string(),
                    (None, Some(t)) => format!("expires {}", humantime::format_rfc3339_seconds(t)),
                    (None, None) => "no expiry".to_string(),
                };
                say!("{}\troles={}\tgrants={}\t{status}", r.name, r.roles.join(","), grants.join(" "));
            }
        }
        TokenCommand::Revoke { name } => {
            if !cairn::auth::revoke_robot(meta, &name).await? {
                anyhow::bail!("no live robot named {name:?}");
            }
            say!("revoked {name}");
        }
    }
    Ok(())
}

/// Exit code of an audit command that found the ledger does not verify.
const NOT_VERIFIED: u8 = 1;
/// Exit code of an audit command that could not do its work (database, file, range).
const NOT_DONE: u8 = 3;

async fn audit(command: AuditCommand, sources: Sources) -> ExitCode {
    if let AuditCommand::Verify { exports, public_key: Some(pem), .. } = &command
        && !exports.is_empty()
    {
        return verify_offline(exports, pem);
    }
    let (cfg, notes) = match load(&sources) {
        Ok(c) => c,
        Err(code) => return code,
    };
    start_logs(&cfg, &notes);
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
fn verify_offline(files: &[PathBuf], pem: &std::path::Path) -> ExitCode {
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

fn read_public_key(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let pem = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    cairn::audit::checkpoint::public_key_from_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// A progress bar on stderr, only when stderr is a terminal.
fn progress_bar(known_length: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let template = if known_length {
        "verifying the audit ledger: seq {pos}/{len} {wide_bar} {elapsed}"
    } else {
        "{spinner} verifying: seq {pos} {elapsed}"
    };
    let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    Some(bar)
}

fn show_progress(bar: &Option<indicatif::ProgressBar>, seq: i64, total: i64) {
    if let Some(b) = bar {
        if total > 0 {
            b.set_length(total as u64);
        }
        b.set_position(seq.max(0) as u64);
    }
}

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

/// Runs the server. The config was loaded by `load`, which already refused a
/// non-loopback address without users (`Config::exposure_problem`).
async fn run_server(cfg: Config) -> anyhow::Result<()> {
    let addr = cfg.listen_addr();
    let state = cairn::AppState::from_config(cfg).await?;
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let shutdown = cairn::shutdown_signal();
    state.auth.refresh().await?;
    if state.auth.is_open() {
        tracing::warn!(
            "no users or grants configured: ANYONE who can reach {bound} can push, pull and delete. \
             Add [[auth.users]] (see `cairn hash-password`) to restrict access."
        );
    }
    tracing::info!(
        data_dir = %state.config.server.data_dir.display(),
        database = %state.config.database_url_redacted(),
        "cairn listening on {}://{bound}",
        state.config.scheme()
    );
    let line = cairn::telemetry::result_line(
        &state.config.log,
        &format!("cairn listening on {}://{bound}", state.config.scheme()),
        &[("address", bound.to_string())],
    );
    say!("{line}");
    cairn::serve(listener, state, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// `cairn retention plan|apply`.
async fn retention(cfg: Config, command: RetentionCommand) -> ExitCode {
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

fn decision(d: cairn::policy::retention::Decision) -> &'static str {
    match d {
        cairn::policy::retention::Decision::Keep => "keep",
        cairn::policy::retention::Decision::Delete => "delete",
    }
}

/// `cairn gc`: one collection with progress on a terminal, then the report.
async fn gc(cfg: Config, dry_run: bool, grace: Option<std::time::Duration>) -> ExitCode {
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

/// Exit code of `migrate --copy-to` when it refused before writing a row to the target.
const REFUSED: u8 = 3;

/// `cairn migrate --copy-to NEW_CONFIG`: checks, then `Registry::copy_to`, with progress on a
/// terminal and a summary at the end.
async fn copy_installation(source: Sources, new_config: PathBuf) -> ExitCode {
    use cairn::keys::{KeyKind, Placed};
    use cairn::service::copy::{self, CopyError};
    let (cfg, notes) = match load(&source) {
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
    start_logs(&cfg, &notes);
    let log = cfg.log.clone();
    if target_cfg.storage.kind == cairn::config::StorageKind::Memory {
        tell!("cairn: {} keeps blobs in memory, which is lost at exit: nothing to copy into", new_config.display());
        return ExitCode::from(REFUSED);
    }
    let archives =
        (ledger_files::archive_dir(&cfg.server.data_dir), ledger_files::archive_dir(&target_cfg.server.data_dir));
    let shown = |c: &Config| format!("{} + {}", c.database_url_redacted(), c.storage.summary(&c.storage_path()));
    let (from_shown, to_shown) = (shown(&cfg), shown(&target_cfg));
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

/// The copy's progress on stderr, only when stderr is a terminal: a bar of blob bytes, then
/// one of rows per table.
struct CopyBar {
    terminal: bool,
    bar: Option<(&'static str, indicatif::ProgressBar)>,
}

impl CopyBar {
    fn new() -> CopyBar {
        use std::io::IsTerminal;
        CopyBar { terminal: std::io::stderr().is_terminal(), bar: None }
    }

    fn show(&mut self, p: cairn::service::copy::CopyProgress) {
        use cairn::service::copy::CopyProgress;
        if !self.terminal {
            return;
        }
        let (stage, template, done, total) = match p {
            CopyProgress::Blobs { bytes, total } => {
                ("blobs", "blobs: {bytes}/{total_bytes} {wide_bar} {binary_bytes_per_sec} {elapsed}", bytes, total)
            }
            CopyProgress::Rows { table, done, total } => {
                (table, "rows: {msg} {pos}/{len} {wide_bar} {elapsed}", done, total)
            }
        };
        if self.bar.as_ref().is_none_or(|(s, _)| *s != stage) {
            self.finish();
            let bar = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.set_message(stage);
            self.bar = Some((stage, bar));
        }
        if let Some((_, b)) = &self.bar {
            b.set_length(total);
            b.set_position(done);
        }
    }

    fn finish(&mut self) {
        if let Some((_, b)) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// `cairn backup DIR`: the installation `source` describes, copied while it serves into a new
/// installation in DIR (`Registry::backup_to`), with progress on a terminal and a summary.
async fn backup(source: Sources, dir: PathBuf, hard_links: bool) -> ExitCode {
    use cairn::service::backup::{self, BackupManifest};
    let (cfg, notes) = match load(&source) {
        Ok(c) => c,
        Err(code) => return code,
    };
    start_logs(&cfg, &notes);
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

/// `cairn restore DIR`: a finished backup copied into the (empty) installation `target`.
async fn restore(target: Sources, dir: PathBuf, hard_links: bool) -> ExitCode {
    use cairn::service::backup;
    let (cfg, notes) = match load(&target) {
        Ok(c) => c,
        Err(code) => return code,
    };
    start_logs(&cfg, &notes);
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
    let same = |a: &std::path::Path| a.canonicalize().ok().is_some_and(|a| dir.canonicalize().is_ok_and(|d| a == d));
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
            tell!(
                "cairn: the target database {} is not empty ({}): a restore fills an empty installation only. \
                 Point --data-dir (or [database] url) at a new one, or move the data that is there away first",
                cfg.database_url_redacted(),
                tables.iter().map(|t| format!("{t} has rows")).collect::<Vec<_>>().join(", ")
            );
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

/// `<database> + <storage>`, for messages.
fn installation(cfg: &Config) -> String {
    format!("{} + {}", cfg.database_url_redacted(), cfg.storage.summary(&cfg.storage_path()))
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
            CopyError::NotEmpty(tables) => {
                tell!(
                    "cairn: the target database {} is not empty ({}): a restore fills an empty installation \
                     only. Point --data-dir (or [database] url) at a new one, or move the data that is there away \
                     first",
                    target_db,
                    tables.iter().map(|t| format!("{t} has rows")).collect::<Vec<_>>().join(", ")
                );
            }
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

/// Backup and restore progress on stderr, only on a terminal: blobs linked, then the copy's bars.
struct BackupBar {
    copy: CopyBar,
    link: Option<indicatif::ProgressBar>,
}

impl BackupBar {
    fn new() -> BackupBar {
        BackupBar { copy: CopyBar::new(), link: None }
    }

    fn show(&mut self, p: cairn::service::BackupProgress) {
        use cairn::service::BackupProgress;
        match p {
            BackupProgress::Waiting { holder } => {
                tell!("waiting for a GC or retention run to finish (it holds the maintenance lock: {holder})");
            }
            BackupProgress::Link { done, total } if self.copy.terminal => {
                let bar = self.link.get_or_insert_with(|| {
                    let bar =
                        indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
                    if let Ok(style) =
                        indicatif::ProgressStyle::with_template("hard-linking blobs: {pos}/{len} {wide_bar} {elapsed}")
                    {
                        bar.set_style(style);
                    }
                    bar
                });
                bar.set_length(total);
                bar.set_position(done);
            }
            BackupProgress::Link { .. } => {}
            BackupProgress::Copy(c) => {
                if let Some(b) = self.link.take() {
                    b.finish_and_clear();
                }
                self.copy.show(c);
            }
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.link.take() {
            b.finish_and_clear();
        }
        self.copy.finish();
    }
}

/// `cairn scrub`: every blob re-hashed, with progress on a terminal; the bad ones listed.
async fn scrub(sources: Sources, json: bool) -> ExitCode {
    use std::io::IsTerminal;
    let (cfg, notes) = match load(&sources) {
        Ok(c) => c,
        Err(code) => return code,
    };
    start_logs(&cfg, &notes);
    let log = cfg.log.clone();
    let state = match cairn::AppState::from_config(cfg).await {
        Ok(s) => s,
        Err(e) => {
            tell!("cairn: {e:#}");
            return ExitCode::from(NOT_DONE);
        }
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        let template = "scrub: {bytes}/{total_bytes} {wide_bar} {binary_bytes_per_sec} {msg} {elapsed}";
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar
    });
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
