//! end-3/end-7/end-9: manifest GET, HEAD, PUT and DELETE by tag or digest.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{Ctx, DOCKER_CONTENT_DIGEST, OCI_SUBJECT, OCI_TAG, respond};
use crate::error::Error;
use crate::oci::Digest;
use crate::oci::{Reference, RepoName, Tag};
use crate::service::Precondition;
use crate::service::{MAX_MANIFEST_BYTES, ManifestPut};

/// GET or HEAD: the stored bytes with their media type, digest and ETag.
pub async fn get(ctx: &Ctx, name: &RepoName, reference: &Reference, with_body: bool) -> Result<Response, Error> {
    let m = ctx.state.registry.manifest(name, reference).await?;
    let headers = [
        (header::CONTENT_TYPE, m.media_type.clone()),
        (header::CONTENT_LENGTH, m.body.len().to_string()),
        (DOCKER_CONTENT_DIGEST, m.digest.to_string()),
        (header::ETAG, format!("\"{}\"", m.digest)),
    ];
    let body = if with_body {
        ctx.state.registry.check_pull_gates(name, &m, &ctx.actor).await?;
        ctx.state.registry.count_pull(name, &m.digest);
        Body::from(m.body.clone())
    } else {
        Body::empty()
    };
    Ok(respond(StatusCode::OK, &headers, body))
}

/// PUT: validates and stores; `?tag=` adds tags (all or none); 413 over 4 MiB.
pub async fn put(ctx: &Ctx, name: &RepoName, reference: &Reference, body: Body) -> Result<Response, Error> {
    let declared = ctx.header(header::CONTENT_LENGTH).and_then(|l| l.parse::<u64>().ok());
    let body = read_capped(body, declared).await?;
    let extra_tags = ctx.q.all("tag").map(Tag::parse).collect::<Result<Vec<_>, _>>()?;
    let out = ctx
        .state
        .registry
        .put_manifest(ManifestPut {
            repo: name,
            reference,
            extra_tags,
            content_type: ctx.header(header::CONTENT_TYPE),
            body,
            precondition: precondition(ctx)?,
            actor: ctx.actor.clone(),
        })
        .await?;
    let mut headers = vec![
        (header::LOCATION, ctx.location(&format!("/v2/{name}/manifests/{}", out.digest))),
        (DOCKER_CONTENT_DIGEST, out.digest.to_string()),
        (header::CONTENT_LENGTH, "0".into()),
    ];
    if let Some(s) = &out.subject {
        headers.push((OCI_SUBJECT, s.to_string()));
    }
    let mut resp = respond(StatusCode::CREATED, &headers, Body::empty());
    for tag in &out.tags {
        if let Ok(v) = HeaderValue::from_str(tag.as_str()) {
            resp.headers_mut().append(OCI_TAG, v);
        }
    }
    Ok(resp)
}

/// DELETE by digest (the manifest and its tags) or by tag (the tag only): 202. Inside a
/// rollback window only an admin's `?force=true&reason=<why>` deletes.
pub async fn delete(ctx: &Ctx, name: &RepoName, reference: &Reference) -> Result<Response, Error> {
    let force = match ctx.q.get("force") {
        None | Some("false") => None,
        Some("true") => {
            let reason = ctx.q.get("reason").map(str::trim).filter(|r| !r.is_empty()).ok_or_else(|| {
                Error::Unsupported(
                    "force=true needs a reason: add &reason=<why> (it is recorded in the audit ledger)".into(),
                )
            })?;
            let admin = ctx.state.auth.is_open() || ctx.who.subject.roles.contains(&crate::policy::Role::Admin);
            if !admin {
                return Err(Error::Denied(format!(
                    "force=true needs the admin role; {} does not have it",
                    ctx.who.subject.name
                )));
            }
            Some(reason)
        }
        Some(other) => {
            return Err(Error::Unsupported(format!(
                "force={other:?}: use force=true (with reason=<why>) or leave it out"
            )));
        }
    };
    ctx.state.registry.delete_manifest(name, reference, &ctx.actor, force).await?;
    Ok(respond(StatusCode::ACCEPTED, &[(header::CONTENT_LENGTH, "0".into())], Body::empty()))
}

/// How much of an oversize manifest is read (and thrown away) so the client, still
/// sending, receives the 413 instead of a broken pipe. Larger bodies are cut off.
const DRAIN_LIMIT: u64 = 64 << 20;

/// Reads a manifest body of at most `MAX_MANIFEST_BYTES`; beyond that, drains the rest
/// (up to `DRAIN_LIMIT`) and answers 413.
async fn read_capped(body: Body, declared: Option<u64>) -> Result<Bytes, Error> {
    let too_large = || Error::ManifestTooLarge { limit: MAX_MANIFEST_BYTES };
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(too_large());
    }
    let mut buf = BytesMut::new();
    let mut seen = 0u64;
    let mut frames = body.into_data_stream();
    while let Some(frame) = frames.next().await {
        let chunk = frame.map_err(|e| Error::ManifestInvalid(format!("could not read the request body: {e}")))?;
        seen += chunk.len() as u64;
        if seen > DRAIN_LIMIT {
            return Err(too_large());
        }
        if seen <= MAX_MANIFEST_BYTES as u64 {
            buf.extend_from_slice(&chunk);
        }
    }
    if seen > MAX_MANIFEST_BYTES as u64 { Err(too_large()) } else { Ok(buf.freeze()) }
}

/// `If-None-Match: *` (create only) or `If-Match: "<digest>"` (compare and swap).
fn precondition(ctx: &Ctx) -> Result<Precondition, Error> {
    let none_match = ctx.header(header::IF_NONE_MATCH).map(str::trim);
    let if_match = ctx.header(header::IF_MATCH).map(str::trim);
    match (none_match, if_match) {
        (Some(_), Some(_)) => Err(Error::Unsupported("send either If-None-Match or If-Match, not both".into())),
        (Some("*"), None) => Ok(Precondition::Absent),
        (Some(other), None) => {
            Err(Error::Unsupported(format!("If-None-Match {other:?} is not supported on manifest PUT; use \"*\"")))
        }
        (None, Some(etag)) => {
            let bare = etag.trim_start_matches("W/").trim_matches('"');
            let d = Digest::parse(bare).map_err(|e| {
                Error::DigestInvalid(format!("If-Match must be a manifest ETag such as \"sha256:<hex>\": {e}"))
            })?;
            Ok(Precondition::PointsTo(d))
        }
        (None, None) => Ok(Precondition::None),
    }
}
