//! The `cairn` command line: the clap definitions of every command, config loading and
//! dispatch. No logic here: what each command does with its config is in `cli/`, one file per
//! command family (this binary's alone; the library does not declare it). Output never panics:
//! a closed stdout or stderr (`cairn check-config | head -1`) drops the rest of the output
//! quietly (`cli/output.rs`).

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cairn::config::{Config, Sources};
use cairn::service::ledger_files::Before;

use cli::output::tell;

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

/// [`load`], then [`start_logs`]: the config of a command that logs.
fn configure(sources: &Sources) -> Result<Config, ExitCode> {
    let (cfg, notes) = load(sources)?;
    start_logs(&cfg, &notes);
    Ok(cfg)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The config file and data directory, for the commands that take no --listen.
    let sources = |file, data_dir| Sources { file, data_dir, ..Default::default() };
    match cli.command {
        Command::Serve { config, listen, data_dir } => match configure(&Sources { file: config, listen, data_dir }) {
            Ok(cfg) => cli::serve::serve(cfg).await,
            Err(code) => code,
        },
        Command::CheckConfig { config, listen, data_dir } => match load(&Sources { file: config, listen, data_dir }) {
            Ok((cfg, notes)) => cli::check_config::check_config(&cfg, &notes),
            Err(code) => code,
        },
        Command::HashPassword => cli::password::hash_password(),
        Command::Gc { dry_run, grace, config, data_dir } => match configure(&sources(config, data_dir)) {
            Ok(cfg) => cli::gc::gc(cfg, dry_run, grace).await,
            Err(code) => code,
        },
        Command::Retention { command, config, data_dir } => match configure(&sources(config, data_dir)) {
            Ok(cfg) => cli::retention::retention(cfg, command).await,
            Err(code) => code,
        },
        Command::Token { command, config, data_dir } => match configure(&sources(config, data_dir)) {
            Ok(cfg) => cli::token::token(cfg, command).await,
            Err(code) => code,
        },
        Command::Audit { command, config, data_dir } => cli::audit::audit(command, sources(config, data_dir)).await,
        Command::Backup { dir, no_hard_links, config, data_dir } => match configure(&sources(config, data_dir)) {
            Ok(cfg) => cli::backup::backup(cfg, dir, !no_hard_links).await,
            Err(code) => code,
        },
        Command::Restore { dir, no_hard_links, config, data_dir } => match configure(&sources(config, data_dir)) {
            Ok(cfg) => cli::backup::restore(cfg, dir, !no_hard_links).await,
            Err(code) => code,
        },
        Command::Scrub { json, config, data_dir } => match configure(&sources(config, data_dir)) {
            Ok(cfg) => cli::scrub::scrub(cfg, json).await,
            Err(code) => code,
        },
        Command::Migrate { config, data_dir, copy_to: Some(new_config) } => {
            cli::migrate::copy_installation(sources(config, data_dir), new_config).await
        }
        Command::Migrate { config, data_dir, copy_to: None } => match configure(&sources(config, data_dir)) {
            Ok(cfg) => cli::migrate::upgrade_schema(cfg).await,
            Err(code) => code,
        },
    }
}
