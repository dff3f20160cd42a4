//! OCI spec types with no I/O: repository names, tags, references, digests, manifests and
//! their media types. Parsing happens here once; the rest of the code passes the newtypes.
//! Depends on nothing else in the crate.

pub mod digest;
pub mod manifest;
pub mod media_types;
pub mod name;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use manifest::{Descriptor, ManifestError, ParsedManifest};
pub use name::{NameError, Reference, RepoName, Tag};
