//! The OCI distribution API under `/v2`: `dispatch` matches (method, route) and hands each
//! pair to one small handler.

mod blobs;
mod listing;
mod manifests;
mod uploads;

use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;

use super::access;
use super::route::{Kind, Route};
use crate::audit::EventKind;
use crate::auth::Identity;
use crate::error::Error;
use crate::service::Actor;
use crate::service::ByteStream;
use crate::state::AppState;

/// end-1: `GET /v2/` answers 200 (to callers allowed in) so clients know this is a v2
/// registry; it is where `docker login` checks credentials.
pub async fn base(
    state: State<AppState>,
    peer: ConnectInfo<std::net::SocketAddr>,
    method: Method,
    query: RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    dispatch(state, peer, method, Uri::from_static("/v2/"), query, headers, body).await
}

/// The part of a `/v2/...` path after `/v2/`, percent-decoded; 400 `NAME_INVALID` when the
/// encoding is malformed or not UTF-8.
fn decode_path(path: &str) -> Result<String, Error> {
    let rest = path.strip_prefix("/v2/").or_else(|| path.strip_prefix("/v2")).unwrap_or(path);
    percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::NameInvalid(format!("the path {path:?} is not valid percent-encoded UTF-8")))
}

/// Every `/v2/<...>` request. The path is decoded here rather than by axum's `Path`
/// extractor, so that a malformed percent-encoding gets the spec's JSON error body too.
pub async fn dispatch(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    method: Method,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let q = Query::parse(query.as_deref());
    let result = async {
        let rest = decode_path(uri.path())?;
        let route = Route::parse(&rest)?;
        let who = access::identify(&state, &headers, peer.ip()).await.inspect_err(|e| {
            if matches!(e, Error::Unauthorized { .. }) {
                let claimed = match access::credentials(&headers) {
                    Ok(crate::auth::Credentials::Basic { user, .. }) => user,
                    _ => "bearer token".to_string(),
                };
                let reason = e.to_string();
                state.registry.count_denial(EventKind::LoginFail, &claimed, &peer.ip().to_string(), "", &reason);
            }
        })?;
        access::authorize_route(&state, &headers, &who, &method, &route).inspect_err(|e| {
            if let Error::Denied(reason) = e {
                let repo = access::required(&method, &route).map(|(r, _)| r.to_string()).unwrap_or_default();
                let addr = peer.ip().to_string();
                state.registry.count_denial(EventKind::RequestDeny, &who.subject.name, &addr, &repo, reason);
            }
        })?;
        let actor = Actor { name: who.subject.name.clone(), address: Some(peer.ip().to_string()) };
        let ctx = Ctx { state, headers, q, actor, who };
        route_request(&ctx, method, route, body).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn route_request(ctx: &Ctx, method: Method, route: Route, body: Body) -> Result<Response, Error> {
    use Route::*;
    match (method, route) {
        (Method::GET | Method::HEAD, Base) => {
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{}").into_response())
        }
        (Method::GET, Catalog) => listing::catalog(ctx).await,
        (Method::GET, Tags { name }) => listing::tags(ctx, &name).await,
        (Method::GET, Referrers { name, digest }) => listing::referrers(ctx, &name, &digest).await,
        (Method::GET, Manifest { name, reference }) => manifests::get(ctx, &name, &reference, true).await,
        (Method::HEAD, Manifest { name, reference }) => manifests::get(ctx, &name, &reference, false).await,
        (Method::PUT, Manifest { name, reference }) => manifests::put(ctx, &name, &reference, body).await,
        (Method::DELETE, Manifest { name, reference }) => manifests::delete(ctx, &name, &reference).await,
        (Method::GET, Blob { name, digest }) => blobs::get(ctx, &name, &digest, true).await,
        (Method::HEAD, Blob { name, digest }) => blobs::get(ctx, &name, &digest, false).await,
        (Method::DELETE, Blob { name, digest }) => blobs::delete(ctx, &name, &digest).await,
        (Method::POST, UploadStart { name }) => uploads::start(ctx, &name, body).await,
        (Method::GET, Upload { name, id }) => uploads::status(ctx, &name, &id).await,
        (Method::PATCH, Upload { name, id }) => uploads::patch(ctx, &name, &id, body).await,
        (Method::PUT, Upload { name, id }) => uploads::finish(ctx, &name, &id, body).await,
        (Method::DELETE, Upload { name, id }) => uploads::cancel(ctx, &name, &id).await,
        (Method::GET | Method::HEAD | Method::DELETE, Unnamable { kind: Kind::Manifest, raw, .. }) => {
            Err(Error::ManifestUnknown(raw))
        }
        (Method::GET | Method::HEAD | Method::DELETE, Unnamable { kind: Kind::Blob, raw, .. }) => {
            Err(Error::BlobUnknown(raw))
        }
        (Method::GET, Unnamable { kind: Kind::Referrers, raw, .. }) => Err(Error::ManifestUnknown(raw)),
        (Method::PUT, Unnamable { kind: Kind::Manifest, error, .. }) => Err(error.into()),
        _ => Err(Error::MethodNotAllowed),
    }
}

/// What every handler needs from the request besides its route and body.
pub(crate) struct Ctx {
    state: AppState,
    headers: HeaderMap,
    q: Query,
    actor: Actor,
    who: Identity,
}

impl Ctx {
    /// An absolute URL when `server.public_url` is set, else a path (clients resolve it).
    fn location(&self, path: &str) -> String {
        match &self.state.config.server.public_url {
            Some(base) => format!("{}{}", base.trim_end_matches('/'), path),
            None => path.to_string(),
        }
    }

    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Decoded query parameters, in order.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    /// Decodes a raw query string.
    pub(crate) fn parse(raw: Option<&str>) -> Query {
        Query(url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()).into_owned().collect())
    }

    /// The first value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub(crate) fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        self.0.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `n` as a page size.
    fn page_size(&self) -> Result<Option<u32>, Error> {
        self.get("n")
            .map(|n| {
                n.parse::<u32>().map_err(|_| Error::Unsupported(format!("n={n:?} is not a page size (a whole number)")))
            })
            .transpose()
    }
}

/// `Docker-Content-Digest`.
const DOCKER_CONTENT_DIGEST: header::HeaderName = header::HeaderName::from_static("docker-content-digest");
/// `Docker-Upload-UUID`.
const DOCKER_UPLOAD_UUID: header::HeaderName = header::HeaderName::from_static("docker-upload-uuid");
/// `OCI-Subject`.
const OCI_SUBJECT: header::HeaderName = header::HeaderName::from_static("oci-subject");
/// `OCI-Tag`: one per tag a manifest PUT applied (spec main, "Pushing Manifests").
const OCI_TAG: header::HeaderName = header::HeaderName::from_static("oci-tag");
/// `OCI-Filters-Applied`.
const OCI_FILTERS_APPLIED: header::HeaderName = header::HeaderName::from_static("oci-filters-applied");

/// A request body as a byte stream for the service layer.
fn body_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(std::io::Error::other))
}

/// Builds a response with headers; header values that are not valid are skipped (all
/// values here come from validated names and digests).
fn respond(status: StatusCode, headers: &[(header::HeaderName, String)], body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            resp.headers_mut().insert(k.clone(), v);
        }
    }
    resp
}
