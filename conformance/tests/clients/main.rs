//! Real clients against the registry under test (`CONFORMANCE_URL`, or a fresh `cairn serve`
//! per test): docker, podman, skopeo (with OCI layouts built by umoci) and oras-py push what
//! they made, pull it back and must get the same bytes. No image comes from the internet:
//! every image is built here from random content. A missing client fails its test with a
//! message naming `bash .ci/setup`, which installs the clients and starts dockerd.
//!
//! Cairn's immutable tags (DESIGN §4) through the same clients: another image pushed to an
//! existing tag is refused (`denied: ... is immutable`), the same image or multi-arch index
//! pushed again is accepted, and a config making `latest` mutable lets it move with a tag
//! history to show for it. Those checks are Cairn's own and print a NOTE instead when
//! `CONFORMANCE_URL` names another registry.
//!
//! Cairn's access control (DESIGN §8) through the same clients, each test with a Cairn of its
//! own configured with users: `docker login` / `podman login` into private credential files,
//! skopeo `--creds`, oras-py basic auth and token flow, a reader's push `denied`, anonymous and
//! wrong-password attempts `unauthorized`, and a robot from `cairn token create` pulling within
//! its grant until `cairn token revoke`. Also Cairn-only (a NOTE elsewhere).
//!
//! Set `CLIENTS_KEEP_TMP=1` to keep each test's working directory for a look afterwards.

mod auth;
mod docker;
mod helpers;
mod oras;
mod podman;
mod skopeo;
