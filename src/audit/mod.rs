//! The audit ledger's rules, with no I/O (DESIGN §7): what an event is, its canonical bytes
//! (RFC 8785) and hash chain (`chain`), signed checkpoints over the chain head (`checkpoint`),
//! the JSON lines of exports and archives (`export`), and the walk that verifies events and
//! checkpoints from any source (`verify`). `meta` stores events and calls `chain` to link them
//! inside the writing transaction; `cairn audit verify` and auditors recompute the same
//! functions offline.
//! Imports only `oci`-level crates; never `api`, `service`, `meta` or `blob`.

pub mod chain;
pub mod checkpoint;
pub mod export;
pub mod verify;

pub use chain::{Event, EventKind, GENESIS, NewEvent};
pub use checkpoint::{Checkpoint, CheckpointKey};
pub use export::Line;
pub use verify::{ChainVerifier, Start, Verified, VerifyError};
