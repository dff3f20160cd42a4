//! end-4a/4b/5/6/11/13 and upload DELETE: starting, streaming, finishing, mounting and
//! cancelling blob uploads.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;

use super::{Ctx, DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID, body_stream, respond};
use crate::api::access;
use crate::error::Error;
use crate::oci::{Algorithm, Digest, RepoName};
use crate::policy::Action;
use crate::service::{BlobCommitted, UploadState};

fn created(ctx: &Ctx, name: &RepoName, c: &BlobCommitted) -> Response {
    respond(
        StatusCode::CREATED,
        &[
            (header::LOCATION, ctx.location(&format!("/v2/{name}/blobs/{}", c.digest))),
            (DOCKER_CONTENT_DIGEST, c.digest.to_string()),
            (header::CONTENT_LENGTH, "0".into()),
        ],
        Body::empty(),
    )
}

fn in_progress(ctx: &Ctx, name: &RepoName, s: &UploadState, status: StatusCode) -> Response {
    let end = s.len.saturating_sub(1);
    respond(
        status,
        &[
            (header::LOCATION, ctx.location(&format!("/v2/{name}/blobs/uploads/{}", s.id))),
            (header::RANGE, format!("0-{end}")),
            (DOCKER_UPLOAD_UUID, s.id.clone()),
            (header::CONTENT_LENGTH, "0".into()),
        ],
        Body::empty(),
    )
}

fn digest_param(ctx: &Ctx) -> Result<Option<Digest>, Error> {
    ctx.q.get("digest").map(|d| Digest::parse(d).map_err(Error::from)).transpose()
}

/// `?digest-algorithm=` (end-4c, spec main): the algorithm a chunked upload hashes with.
fn algorithm_param(ctx: &Ctx) -> Result<Algorithm, Error> {
    match ctx.q.get("digest-algorithm") {
        None => Ok(Algorithm::Sha256),
        Some(a) => Algorithm::parse(a).ok_or_else(|| {
            Error::Unsupported(format!("digest-algorithm={a:?} is not supported: use sha256 (the default) or sha512"))
        }),
    }
}

/// POST `/v2/<name>/blobs/uploads/`: mount (`?mount=&from=`), single-request upload
/// (`?digest=`), or open a session (202) hashing with `?digest-algorithm=` (sha256 default).
pub async fn start(ctx: &Ctx, name: &RepoName, body: Body) -> Result<Response, Error> {
    let reg = &ctx.state.registry;
    let algorithm = algorithm_param(ctx)?;
    if let Some(mount) = ctx.q.get("mount") {
        // end-11: a mount that cannot happen for any reason (a digest of an algorithm held
        // nowhere, an invalid or unknown `from`, one the caller may not pull) falls back to
        // an ordinary upload session, revealing nothing about `from`.
        let digest = match Digest::parse(mount) {
            Ok(d) => Some(d),
            Err(crate::oci::DigestError::Unsupported(_)) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(digest) = digest {
            let from = match ctx.q.get("from") {
                None => Ok(None),
                Some(f) => RepoName::parse(f).map(Some),
            };
            // Mounting from a repository the caller may not pull would leak its content.
            let readable = |r: &str| access::permits(&ctx.state, &ctx.who, r, Action::Pull);
            if let Ok(from) = from
                && let Some(c) = reg.mount_blob(name, &digest, from.as_ref(), readable, &ctx.actor).await?
            {
                return Ok(created(ctx, name, &c));
            }
        }
        let s = reg.start_upload(name, algorithm).await?;
        return Ok(in_progress(ctx, name, &s, StatusCode::ACCEPTED));
    }
    if let Some(digest) = digest_param(ctx)? {
        let c = reg.upload_monolithic(name, &digest, body_stream(body), &ctx.actor).await?;
        return Ok(created(ctx, name, &c));
    }
    let s = reg.start_upload(name, algorithm).await?;
    Ok(in_progress(ctx, name, &s, StatusCode::ACCEPTED))
}

/// GET `/v2/<name>/blobs/uploads/<id>`: 204 with the received `Range`.
pub async fn status(ctx: &Ctx, name: &RepoName, id: &str) -> Result<Response, Error> {
    let s = ctx.state.registry.upload_status(name, id).await?;
    Ok(in_progress(ctx, name, &s, StatusCode::NO_CONTENT))
}

/// PATCH `/v2/<name>/blobs/uploads/<id>`: appends a chunk; with `Content-Range` it must
/// start where the upload stands (else 416).
pub async fn patch(ctx: &Ctx, name: &RepoName, id: &str, body: Body) -> Result<Response, Error> {
    let (start, expect) = match ctx.header(header::CONTENT_RANGE) {
        Some(r) => {
            let (a, b) = parse_content_range(r)?;
            (Some(a), Some(b - a + 1))
        }
        None => (None, None),
    };
    let s = ctx.state.registry.append_chunk(name, id, start, expect, body_stream(body)).await?;
    Ok(in_progress(ctx, name, &s, StatusCode::ACCEPTED))
}

/// PUT `/v2/<name>/blobs/uploads/<id>?digest=`: the optional last chunk, then commit. A
/// `Content-Range` that does not start where the upload stands is 416 (spec main).
pub async fn finish(ctx: &Ctx, name: &RepoName, id: &str, body: Body) -> Result<Response, Error> {
    let digest = digest_param(ctx)?.ok_or_else(|| {
        Error::DigestInvalid("the digest query parameter is required to finish an upload (?digest=sha256:...)".into())
    })?;
    let start = ctx.header(header::CONTENT_RANGE).map(parse_content_range).transpose()?.map(|(a, _)| a);
    let c = ctx.state.registry.finish_upload(name, id, &digest, start, body_stream(body), &ctx.actor).await?;
    Ok(created(ctx, name, &c))
}

/// DELETE `/v2/<name>/blobs/uploads/<id>`: cancels the upload (204).
pub async fn cancel(ctx: &Ctx, name: &RepoName, id: &str) -> Result<Response, Error> {
    ctx.state.registry.cancel_upload(name, id).await?;
    Ok(respond(StatusCode::NO_CONTENT, &[], Body::empty()))
}

/// `Content-Range: <start>-<end>` (inclusive), also accepting `bytes <start>-<end>[/<total>]`.
fn parse_content_range(h: &str) -> Result<(u64, u64), Error> {
    let bad = || Error::UploadInvalid(format!("Content-Range {h:?} must look like <start>-<end>, for example 0-1023"));
    let spec = h.trim().trim_start_matches("bytes").trim_start_matches('=').trim();
    let spec = spec.split('/').next().unwrap_or("");
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
    if b < a {
        return Err(bad());
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::parse_content_range;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-1023").unwrap(), (0, 1023));
        assert_eq!(parse_content_range("bytes 10-19/100").unwrap(), (10, 19));
        for bad in ["", "5", "a-b", "9-3", "-3"] {
            assert!(parse_content_range(bad).is_err(), "{bad}");
        }
    }
}
