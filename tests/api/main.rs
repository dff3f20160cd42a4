//! Integration tests of the OCI API against a real listening server (in-process, ephemeral
//! port, real HTTP). Every bad input asserts the status, the OCI code, and that nothing
//! was stored.

mod audit_api;
mod auth;
mod auth_tokens;
#[path = "../common/backend.rs"]
mod backend;
mod blobs;
mod cache_bounds;
mod compose;
mod connections;
mod errors;
mod gc;
mod gc_stress;
mod helpers;
mod history;
mod immutability;
mod integrity;
mod listing;
mod manifests;
mod provenance;
mod rate_limit;
mod rest_api;
mod retention;
mod sha512;
mod signatures;
mod uploads;
