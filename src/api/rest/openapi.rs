//! The OpenAPI 3.1 document of `/api/v1`, generated from the handlers' `#[utoipa::path]`
//! attributes and the response types, served at `/api/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{artifacts, audit, policies, problem, repositories, retention};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cairn REST API",
        description = "Repositories, provenance, tag history, retention and the audit ledger of a Cairn registry. \
                       Every error is RFC 9457 `application/problem+json`; listings page with `limit` and \
                       `cursor` (`next_cursor` in the body, `Link: <…>; rel=\"next\"` in the headers).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        repositories::list,
        repositories::history,
        repositories::tag_at,
        artifacts::provenance,
        artifacts::sboms,
        artifacts::attestations,
        artifacts::sbom,
        artifacts::attestation,
        audit::events,
        audit::checkpoints,
        audit::public_key,
        policies::immutability,
        retention::plan,
        retention::apply,
        retention::rollback,
        openapi_json,
    ),
    components(schemas(problem::Problem, crate::audit::EventKind)),
    modifiers(&Security),
    tags(
        (name = "repositories", description = "Repositories, tags and the provenance of artifacts"),
        (name = "audit", description = "The audit ledger, its signed checkpoints and their public key (auditors and admins)"),
        (name = "policies", description = "Rules in force"),
        (name = "retention", description = "Retention plans and their application (README \"Retention\")"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme("basic", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A token from /token with scope registry:api:read (or repository:<name>:pull)"))
                    .build(),
            ),
        );
    }
}

/// This document.
#[utoipa::path(
    get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of /api/v1", content_type = "application/json", body = Object)),
    security(())
)]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
