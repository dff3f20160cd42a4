//! end-2/end-3/end-10: blob GET and HEAD (with `Range`) and DELETE. With `[storage]
//! redirect` on (S3), a GET without `Range` answers `307 Temporary Redirect` to a presigned
//! URL of the blob's object, after the same access check as any pull; HEAD and ranged GETs
//! are always answered by Cairn itself.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;

use super::{Ctx, DOCKER_CONTENT_DIGEST, respond};
use crate::error::Error;
use crate::oci::{Digest, RepoName};
use crate::service::BlobWant;

/// GET or HEAD of a blob; a satisfiable `Range` gives 206, an unsatisfiable one 416; a GET
/// without `Range` may give 307 (module header).
pub async fn get(ctx: &Ctx, name: &RepoName, digest: &Digest, with_body: bool) -> Result<Response, Error> {
    let range = ctx.header(header::RANGE).map(str::to_string);
    let want = match (with_body, range.is_some()) {
        (false, _) => BlobWant::Head,
        // A client may not send `Range` again to where it is redirected: serve ranges here.
        (true, true) => BlobWant::Bytes,
        (true, false) => BlobWant::BytesOrRedirect,
    };
    let (read, partial) = ctx
        .state
        .registry
        .read_blob(
            name,
            digest,
            |size| range.as_deref().map(|r| parse_range(r, size)).transpose().map(Option::flatten),
            want,
        )
        .await?;
    if let Some(url) = read.redirect {
        let headers = [
            (header::LOCATION, url),
            (DOCKER_CONTENT_DIGEST, digest.to_string()),
            (header::CONTENT_LENGTH, "0".to_string()),
            // The URL expires; a cache must not hand it out later.
            (header::CACHE_CONTROL, "no-store".to_string()),
        ];
        return Ok(respond(StatusCode::TEMPORARY_REDIRECT, &headers, Body::empty()));
    }
    let mut headers = vec![
        (header::CONTENT_LENGTH, (read.range.end - read.range.start).to_string()),
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (DOCKER_CONTENT_DIGEST, digest.to_string()),
        (header::ETAG, format!("\"{digest}\"")),
        (header::ACCEPT_RANGES, "bytes".to_string()),
        (header::CACHE_CONTROL, "max-age=31536000".to_string()),
    ];
    let status = if partial {
        headers
            .push((header::CONTENT_RANGE, format!("bytes {}-{}/{}", read.range.start, read.range.end - 1, read.size)));
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let body = match read.body {
        Some(s) => Body::from_stream(s),
        None => Body::empty(),
    };
    Ok(respond(status, &headers, body))
}

/// DELETE of a blob from a repository: 202.
pub async fn delete(ctx: &Ctx, name: &RepoName, digest: &Digest) -> Result<Response, Error> {
    ctx.state.registry.delete_blob(name, digest, &ctx.actor).await?;
    Ok(respond(StatusCode::ACCEPTED, &[(header::CONTENT_LENGTH, "0".into())], Body::empty()))
}

/// Resolves a `Range: bytes=...` header against `size` (RFC 9110 §14), parsed and checked
/// by `http-range-header` (tower-http's `ServeFile` parser). `Ok(None)` means "ignore the
/// header and send everything": a form we do not serve (several ranges) or an invalid one.
/// A valid range that selects no byte of the blob is 416 (so is any range of an empty blob:
/// a 206 of zero bytes has no `Content-Range` to give).
fn parse_range(h: &str, size: u64) -> Result<Option<std::ops::Range<u64>>, Error> {
    use http_range_header::RangeUnsatisfiableError;
    let Ok(parsed) = http_range_header::parse_range_header(h.trim()) else { return Ok(None) };
    if parsed.len() != 1 {
        return Ok(None);
    }
    match parsed.validate(size).as_deref() {
        Ok([r]) => Ok(Some(*r.start()..*r.end() + 1)),
        Ok(_) | Err(RangeUnsatisfiableError::Unsatisfiable) => Err(Error::RangeNotSatisfiable { len: size }),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some(0..10));
        assert_eq!(parse_range("bytes=90-200", 100).unwrap(), Some(90..100));
        assert_eq!(parse_range("bytes=10-", 100).unwrap(), Some(10..100));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), Some(90..100));
        assert_eq!(parse_range("bytes=-200", 100).unwrap(), Some(0..100));
        // Past u64::MAX is "to the end" (RFC 9110 §14.1.2), not an invalid range.
        assert_eq!(parse_range("bytes=5-99999999999999999999999", 100).unwrap(), Some(5..100));
        for ignored in ["bytes=0-1,5-6", "bytes=0-1,x", "items=0-1", "bytes=5-4", "bytes=x-1", "bytes=1-x", "bytes=5"] {
            assert_eq!(parse_range(ignored, 100).unwrap(), None, "{ignored}");
        }
        for (bad, size) in [("bytes=100-", 100), ("bytes=-0", 100), ("bytes=0-", 0), ("bytes=-5", 0), ("bytes=0-0", 0)]
        {
            assert!(parse_range(bad, size).is_err(), "{bad} on {size} bytes");
        }
    }
}
