//! The OpenAPI document of `/api/v1` checked against the running server by a schema-driven
//! tester (schemathesis, PyPI): every operation is called with generated valid and invalid
//! inputs, and each answer must match the document (status codes, content types, headers,
//! body schemas) and never be a 5xx. The server is the real binary with a little data
//! pushed, so the provenance operation is also called with a digest that exists.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

/// The PyPI package the check needs (scripts install the same version).
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

fn schemathesis_installed() -> bool {
    Command::new("schemathesis").arg("--version").output().is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn the_openapi_document_matches_the_running_server() {
    assert!(
        schemathesis_installed(),
        "the schemathesis command is not installed; it checks /api/v1 against its OpenAPI document: \
         pip install {SCHEMATHESIS}"
    );
    let (root, data) = workdir();
    let srv = Server::start(&data).await;
    let http = client();

    let config = json!({
        "architecture": "amd64", "os": "linux", "created": "2026-01-31T12:00:00Z",
        "config": { "Labels": { "org.opencontainers.image.source": "https://example.com/app" } },
    });
    let config = serde_json::to_vec(&config).unwrap();
    let cfg = push_blob(&http, &srv, "apps/web", &config).await;
    let layer = random_bytes(300);
    let l = push_blob(&http, &srv, "apps/web", &layer).await;
    let image = image_manifest((&cfg, config.len()), &[(&l, layer.len())]);
    let image_digest = put_manifest(&http, &srv, "apps/web", "v1", &image).await;
    let r = http.get(srv.url(&format!("/api/v1/repositories/apps/web/artifacts/{image_digest}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the provenance answers before the check starts");

    // An SPDX SBOM of the image, as a referrer.
    let sbom = br#"{"spdxVersion":"SPDX-2.3","name":"web"}"#;
    let sbom_digest = push_blob(&http, &srv, "apps/web", sbom).await;
    let empty = push_blob(&http, &srv, "apps/web", b"{}").await;
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/spdx+json",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2 },
        "layers": [{ "mediaType": "application/spdx+json", "digest": sbom_digest, "size": sbom.len() }],
        "subject": { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image_digest, "size": image.len() },
    }))
    .unwrap();
    put_manifest(&http, &srv, "apps/web", &sha256(&referrer), &referrer).await;

    // The provenance, SBOM and attestation operations get the pushed image's name and digest
    // (and the SBOM's), so that they are tested beyond 404s; every other operation gets
    // generated values.
    let st_config = root.path().join("schemathesis.toml");
    let mut operations = String::new();
    let artifact = "/api/v1/repositories/{name}/artifacts/{digest}";
    for (path, document) in [
        (artifact.to_string(), false),
        (format!("{artifact}/sboms"), false),
        (format!("{artifact}/attestations"), false),
        (format!("{artifact}/sboms/{{document}}"), true),
        (format!("{artifact}/attestations/{{document}}"), true),
    ] {
        let doc = if document { format!(", \"path.document\" = \"{sbom_digest}\"") } else { String::new() };
        operations.push_str(&format!(
            "[[operations]]\ninclude-path = \"{path}\"\n\
             parameters = {{ \"path.name\" = \"apps/web\", \"path.digest\" = \"{image_digest}\"{doc} }}\n"
        ));
    }
    std::fs::write(&st_config, operations).unwrap();
    let out = Command::new("schemathesis")
        .current_dir(root.path())
        .arg("--no-color")
        .arg("--config-file")
        .arg(&st_config)
        .args(["run", &srv.url("/api/v1/openapi.json")])
        .args(["--checks", "all", "--max-examples", "10", "--phases", "coverage,fuzzing", "--seed", "1"])
        // One worker: with two, hypothesis's `ast.parse` of a filter's lambda runs on two
        // threads at once, and CPython 3.11 (this machine's python3) can then fail with
        // "SystemError: AST constructor recursion depth mismatch" inside the tester, a runtime
        // error that says nothing about the server (1 run in 10 here; CI failed on it).
        .args(["--workers", "1", "--request-timeout", "10"])
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis reports failures ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        out.status,
        srv.stderr()
    );
    assert!(stdout.contains("passed"), "schemathesis ran no test:\n{stdout}\n{stderr}");
}
