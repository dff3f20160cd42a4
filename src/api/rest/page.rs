//! Cursor pagination for `/api/v1`: the one helper that builds the `Link` header of
//! the next page from `server.public_url` (or a path when it is unset). A listing answers
//! `Paged`, its typed body plus that header.

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::params::Params;
use crate::config::Config;

/// The `Link` header value of the next page: the request's path and parameters with
/// `cursor` replaced, absolute when `server.public_url` is set.
pub fn next_link(config: &Config, path: &str, q: &Params, cursor: &str) -> Option<HeaderValue> {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in q.pairs().filter(|(k, _)| *k != "cursor") {
        ser.append_pair(k, v);
    }
    ser.append_pair("cursor", cursor);
    let base = config.server.public_url.as_deref().map(|u| u.trim_end_matches('/')).unwrap_or("");
    let encoded_path: String = path
        .split('/')
        .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/");
    HeaderValue::from_str(&format!("<{base}{encoded_path}?{}>; rel=\"next\"", ser.finish())).ok()
}

/// Characters escaped in a path segment of a `Link` (RFC 3986 `pchar` keeps the rest).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'%');

/// A page of a listing: the typed body, and the `Link` header when another page follows.
pub struct Paged<T> {
    /// The body (it carries `next_cursor` itself).
    pub body: T,
    /// The `Link` header.
    pub link: Option<HeaderValue>,
}

impl<T: Serialize> IntoResponse for Paged<T> {
    fn into_response(self) -> Response {
        let mut resp = Json(self.body).into_response();
        if let Some(link) = self.link {
            resp.headers_mut().insert(header::LINK, link);
        }
        resp
    }
}

/// Builds a page: `next` is the cursor of the following page, if there is one.
pub fn paged<T>(config: &Config, path: &str, q: &Params, next: Option<&str>, body: T) -> Paged<T> {
    Paged { body, link: next.and_then(|c| next_link(config, path, q, c)) }
}
