//! A fresh database per test on the server `TEST_DATABASE_URL` names, dropped afterwards
//! (`TempDb`, shared with the other suites in tests/common/backend.rs).

#[path = "../common/backend.rs"]
mod backend;

pub use backend::TempDb;
