//! Pure decisions over data: which tags are immutable. No I/O; depends only on `oci` and
//! the config types it is built from. Called by `service`.

pub mod immutability;

pub use immutability::{Decision, ImmutabilityPolicy, Mode};
