//! end-8a/8b (tags), the catalog, end-12a/12b (referrers).

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use oci_spec::OciSpecError;
use oci_spec::image::{Descriptor, DescriptorBuilder, ImageIndexBuilder, MediaType};
use serde_json::json;

use super::{Ctx, OCI_FILTERS_APPLIED, respond};
use crate::error::Error;
use crate::oci::media_types::OCI_INDEX;
use crate::oci::{Digest, RepoName};
use crate::policy::Action;
use crate::service::{Page, Referrer};

fn page_response(ctx: &Ctx, path: &str, body: Vec<u8>, page: &Page) -> Response {
    let mut headers = vec![(header::CONTENT_TYPE, "application/json".to_string())];
    if page.more
        && let Some(last) = page.items().last()
    {
        let last = url::form_urlencoded::byte_serialize(last.as_bytes()).collect::<String>();
        headers.push((header::LINK, format!("<{}?n={}&last={last}>; rel=\"next\"", ctx.location(path), page.n)));
    }
    respond(StatusCode::OK, &headers, Body::from(body))
}

/// GET `/v2/<name>/tags/list?n=&last=`: sorted, paginated with `Link`.
pub async fn tags(ctx: &Ctx, name: &RepoName) -> Result<Response, Error> {
    let page = ctx.state.registry.tags(name, ctx.q.page_size()?, ctx.q.get("last")).await?;
    #[derive(serde::Serialize)]
    struct TagList<'a> {
        name: &'a str,
        tags: &'a [String],
    }
    let body = serde_json::to_vec(&TagList { name: name.as_str(), tags: page.items() }).map_err(Error::internal)?;
    Ok(page_response(ctx, &format!("/v2/{name}/tags/list"), body, &page))
}

/// GET `/v2/_catalog?n=&last=`.
pub async fn catalog(ctx: &Ctx) -> Result<Response, Error> {
    let (auth, who) = (&ctx.state.auth, &ctx.who.subject);
    let visible = |repo: &str| auth.allows(who, repo, Action::Pull);
    let page = ctx.state.registry.catalog(ctx.q.page_size()?, ctx.q.get("last"), visible).await?;
    let body = serde_json::to_vec(&json!({ "repositories": page.items() })).map_err(Error::internal)?;
    Ok(page_response(ctx, "/v2/_catalog", body, &page))
}

/// GET `/v2/<name>/referrers/<digest>?artifactType=`: an image index of referrers, built
/// with `oci-spec`'s typed index and descriptors (`manifests` is always present, `[]` when
/// nothing refers to the digest; `artifactType` and `annotations` only when known).
pub async fn referrers(ctx: &Ctx, name: &RepoName, digest: &Digest) -> Result<Response, Error> {
    let filter = ctx.q.get("artifactType").filter(|t| !t.is_empty());
    let list = ctx.state.registry.referrers(name, digest, filter).await?;
    let manifests = list.into_iter().map(descriptor).collect::<Result<Vec<_>, _>>().map_err(Error::internal)?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(Error::internal)?;
    let body = serde_json::to_vec(&index).map_err(Error::internal)?;
    let mut headers = vec![(header::CONTENT_TYPE, OCI_INDEX.to_string())];
    if filter.is_some() {
        headers.push((OCI_FILTERS_APPLIED, "artifactType".into()));
    }
    Ok(respond(StatusCode::OK, &headers, Body::from(body)))
}

/// The descriptor of one referrer in the referrers index.
fn descriptor(r: Referrer) -> Result<Descriptor, OciSpecError> {
    let mut d = DescriptorBuilder::default()
        .media_type(MediaType::from(r.media_type.as_str()))
        .digest(r.digest.as_str().parse::<oci_spec::image::Digest>()?)
        .size(r.size);
    if let Some(t) = r.artifact_type {
        d = d.artifact_type(MediaType::from(t.as_str()));
    }
    if let Some(a) = r.annotations {
        d = d.annotations(a.into_iter().collect::<HashMap<_, _>>());
    }
    d.build()
}
