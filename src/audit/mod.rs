//! The audit ledger's rules, with no I/O (DESIGN §7): what an event is, its canonical bytes
//! (RFC 8785) and hash chain (`chain`), and signed checkpoints over the chain head
//! (`checkpoint`). `meta` stores events and calls `chain` to link them inside the writing
//! transaction; `cairn audit verify` and auditors recompute the same functions offline.
//! Imports only `oci`-level crates; never `api`, `service`, `meta` or `blob`.

pub mod chain;
pub mod checkpoint;

pub use chain::{Event, EventKind, GENESIS, NewEvent};
pub use checkpoint::{Checkpoint, CheckpointKey};
