//! Shared support for the conformance checks and real-client round trips: finding the
//! registry under test. With `CONFORMANCE_URL` set, every check runs against that registry
//! (for example a CNCF distribution instance); otherwise each test starts the `cairn` binary
//! built by this workspace on an ephemeral port with a fresh data directory.
//!
//! Contract with `cairn serve`: with `--listen 127.0.0.1:0` it prints one line
//! `cairn listening on http://ADDR` on stdout once the socket is bound.

pub mod server;

pub use server::{Registry, Server};
