//! What each `cairn` command does once main.rs has parsed its arguments and loaded its config:
//! one file per command family, all on the binary's side (the library, src/lib.rs, knows
//! nothing of them). They call the library (`cairn::AppState`, `cairn::service::Registry`)
//! and print; the rules live there, not here. `output` prints without panicking, `progress`
//! draws the progress bars on a terminal.

pub mod audit;
pub mod backup;
pub mod check_config;
pub mod gc;
pub mod migrate;
pub mod output;
pub mod password;
pub mod progress;
pub mod retention;
pub mod scrub;
pub mod serve;
pub mod token;

use cairn::config::Config;

/// Exit code of a check that found something wrong: the audit ledger does not verify, or
/// scrub found a blob missing or damaged.
pub const NOT_VERIFIED: u8 = 1;
/// Exit code of an audit command or a scrub that could not do its work (database, file, range).
pub const NOT_DONE: u8 = 3;
/// Exit code of `migrate --copy-to`, `backup` and `restore` when they refused before writing a
/// row to the target.
pub const REFUSED: u8 = 3;

/// `<database> + <storage>`, for messages.
pub fn installation(cfg: &Config) -> String {
    format!("{} + {}", cfg.database_url_redacted(), cfg.storage.summary(&cfg.storage_path()))
}
