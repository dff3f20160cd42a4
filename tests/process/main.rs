//! Process-level tests: the real `cairn` binary, started, killed (SIGKILL), stopped
//! (SIGTERM) and restarted on the same data directory, plus its command line
//! (`check-config`, `migrate`, environment overrides), and faults: a full disk, damaged,
//! foreign and read-only databases, what a 201 has fsynced. Every test owns a temp
//! directory and its own server processes.

mod faults;
mod support;

mod audit;
mod audit_archive;
mod backup;
mod check_config;
mod cli;
mod compose;
mod connections;
mod copy;
mod crash;
mod damaged_db;
mod disk_full;
mod durability;
mod gc_crash;
mod health;
mod logins;
mod logs;
mod metrics;
mod open_mode;
mod openapi;
mod readiness;
mod restart;
mod retention_crash;
mod scrub;
mod shutdown;
mod tls;
mod uploads_on_disk;
