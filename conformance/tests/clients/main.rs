//! Real clients against the registry under test (`CONFORMANCE_URL`, or a fresh `cairn serve`
//! per test): docker, podman, skopeo (with OCI layouts built by umoci) and oras-py push what
//! they made, pull it back and must get the same bytes. No image comes from the internet:
//! every image is built here from random content.
//!
//! Cairn's immutable tags (DESIGN §4) through the same clients: another image pushed to an
//! existing tag is refused (`denied: ... is immutable`), the same image or multi-arch index
//! pushed again is accepted, and a config making `latest` mutable lets it move with a tag
//! history to show for it.
//!
//! Cairn's access control (DESIGN §8) through the same clients, each test with a Cairn of its
//! own configured with users: `docker login` / `podman login` into private credential files,
//! skopeo `--creds`, oras-py basic auth and token flow, a reader's push `denied`, anonymous and
//! wrong-password attempts `unauthorized`, and a robot from `cairn token create` pulling within
//! its grant until `cairn token revoke`.
//!
//! Cairn's signatures and gates (DESIGN §5) through the same clients: oras-py attaches an SPDX
//! SBOM and a cosign signature as referrers (listed, served and verified over REST); docker
//! pushes to a push-gated tag and pulls from a pull-gated repository, refused (`denied: … needs
//! a valid signature …`) until a signature by the gate's key, made with `openssl` as cosign
//! makes it and pushed as cosign pushes it, is there.
//!
//! This target has its own runner (`harness.rs`, `harness = false`): a test whose client is
//! not installed here, or which checks Cairn's own behaviour while `CONFORMANCE_URL` names
//! another registry, is reported as ignored with the reason, never as passed; under `CI=true`
//! a missing client fails instead. `scripts/test` installs the clients and starts dockerd.
//! Every test is listed in its module's `TESTS`.
//!
//! Every Cairn started here runs on SQLite + filesystem, or with `TEST_BACKEND=postgres-s3` on
//! a fresh PostgreSQL database and S3 bucket each (`helpers.rs`); `scripts/test` runs the
//! suite both ways.
//!
//! Set `CLIENTS_KEEP_TMP=1` to keep each test's working directory for a look afterwards.

mod auth;
#[path = "../../../tests/common/backend.rs"]
mod backend;
mod docker;
mod harness;
mod helpers;
mod oras;
mod podman;
mod retention;
mod signatures;
mod skopeo;

fn main() {
    harness::main(&[
        ("auth", auth::TESTS),
        ("docker", docker::TESTS),
        ("oras", oras::TESTS),
        ("podman", podman::TESTS),
        ("retention", retention::TESTS),
        ("signatures", signatures::TESTS),
        ("skopeo", skopeo::TESTS),
    ])
}
