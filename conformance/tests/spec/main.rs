//! OCI distribution-spec v1.1 conformance checks, one named test per requirement of the four
//! conformance workflows: pull, push, content discovery and content management.
//!
//! Every test gets its own registry from `Registry::get()` (a fresh `cairn serve`, or the
//! registry at `CONFORMANCE_URL`) and works in repositories with a random suffix, so tests are
//! independent, run in parallel, and also work against one shared external registry:
//!
//! ```text
//! cargo test -p cairn-conformance --test spec
//! CONFORMANCE_URL=http://127.0.0.1:5000 cargo test -p cairn-conformance --test spec
//! ```
//!
//! Where the spec leaves a behaviour optional (automatic mounts, `?tag=`, the manifest size
//! cap, `artifactType` filtering), a check requires it of Cairn and accepts either of the
//! spec's outcomes from another registry.

mod content_discovery;
mod content_management;
mod helpers;
mod pull;
mod push;
mod referrers_artifact_type;
mod refusals;
mod spec_main;
