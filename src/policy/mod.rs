//! Pure decisions over data: which tags are immutable, who may do what. No I/O; depends only on `oci` and
//! the config types it is built from. Called by `service`.

pub mod access;
pub mod gates;
pub mod immutability;
pub mod retention;
pub mod writes;

pub use access::{AccessPolicy, Action, Role, Subject};
pub use immutability::{Decision, ImmutabilityPolicy, Mode};
pub use writes::{Precondition, Refusal, TagWrite};
