//! Process-level tests: the real `cairn` binary, started, killed (SIGKILL), stopped
//! (SIGTERM) and restarted on the same data directory, plus its command line
//! (`check-config`, `migrate`, environment overrides). Every test owns a temp directory
//! and its own server processes.

mod support;

mod check_config;
mod cli;
mod crash;
mod health;
mod logs;
mod open_mode;
mod openapi;
mod restart;
mod shutdown;
mod uploads_on_disk;
