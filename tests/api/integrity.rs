//! An immutable tag keeps its whole image pullable (DESIGN §4): a blob or child manifest that a
//! manifest of the repository references cannot be unlinked (405 DENIED naming the holder and
//! a tag), refused deletes are 405, and the schema itself refuses what a later code path might
//! try. A manifest's `subject` is not a reference.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// Pushes an index listing `children` (digest, size) under `reference`; returns its digest.
async fn push_index(app: &TestApp, repo: &str, reference: &str, children: &[(&str, usize)]) -> String {
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|(d, s)| json!({
            "mediaType": OCI_MANIFEST, "digest": d, "size": s,
            "platform": { "architecture": "amd64", "os": "linux" } })).collect::<Vec<_>>(),
    }))
    .unwrap();
    let r = app.put_manifest(repo, reference, OCI_INDEX, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    digest(&body)
}

/// Every blob of an image: config and layers, by digest.
fn blobs_of(manifest: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    let mut out = vec![v["config"]["digest"].as_str().unwrap().to_string()];
    out.extend(v["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()));
    out
}

#[tokio::test]
async fn a_layer_of_a_tagged_image_cannot_be_deleted() {
    let app = spawn_app().await;
    let (m, d) = app.push_image("keep/app", "v1").await;
    for blob in blobs_of(&m) {
        let r = app.delete(&format!("/v2/keep/app/blobs/{blob}")).await;
        let body = assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "DENIED").await;
        let err = &body["errors"][0];
        assert_eq!(
            err["message"],
            format!(
                "blob {blob} cannot be deleted from keep/app: manifest {d}, tagged keep/app:v1, references it; \
                 delete that manifest first"
            )
        );
        assert_eq!(err["detail"], json!({ "digest": blob, "referenced_by": d, "tag": "v1" }));
        // Still there, and the image pulls complete.
        assert_eq!(app.head(&format!("/v2/keep/app/blobs/{blob}")).await.status(), StatusCode::OK);
    }
    assert_eq!(app.get("/v2/keep/app/manifests/v1").await.bytes().await.unwrap().as_ref(), m.as_slice());
}

#[tokio::test]
async fn blobs_are_freed_once_no_manifest_uses_them() {
    let app = spawn_mutable().await;
    let config = app.push_blob("free/app", br#"{"architecture":"amd64","os":"linux"}"#).await;
    let layer_bytes = random_bytes(500);
    let layer = app.push_blob("free/app", &layer_bytes).await;
    let m = image_manifest(&config, 37, &[(&layer, 500)], None);
    let d = digest(&m);
    // Untagged (pushed by digest): it still references its blobs.
    assert_eq!(app.put_manifest("free/app", &d, OCI_MANIFEST, &m).await.status(), StatusCode::CREATED);
    let r = app.delete(&format!("/v2/free/app/blobs/{layer}")).await;
    let body = assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "DENIED").await;
    assert_eq!(body["errors"][0]["detail"], json!({ "digest": layer, "referenced_by": d, "tag": null }));
    // A second manifest sharing the layer: both must go before the layer may.
    let m2 = image_manifest(&config, 37, &[(&layer, 500), (&config, 37)], None);
    let d2 = digest(&m2);
    assert_eq!(app.put_manifest("free/app", "latest", OCI_MANIFEST, &m2).await.status(), StatusCode::CREATED);
    assert_eq!(app.delete(&format!("/v2/free/app/manifests/{d}")).await.status(), StatusCode::ACCEPTED);
    let r = app.delete(&format!("/v2/free/app/blobs/{layer}")).await;
    let body = assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "DENIED").await;
    assert_eq!(body["errors"][0]["detail"]["referenced_by"], d2);
    assert_eq!(body["errors"][0]["detail"]["tag"], "latest");
    assert_eq!(app.delete(&format!("/v2/free/app/manifests/{d2}")).await.status(), StatusCode::ACCEPTED);
    for blob in [&layer, &config] {
        assert_eq!(app.delete(&format!("/v2/free/app/blobs/{blob}")).await.status(), StatusCode::ACCEPTED);
    }
}

#[tokio::test]
async fn the_same_blob_in_another_repository_is_independent() {
    let app = spawn_app().await;
    let (m, _) = app.push_image("one/app", "v1").await;
    let layer = blobs_of(&m)[1].clone();
    // Mount the layer into another repository that has no manifest using it.
    let r = app.post(&format!("/v2/two/app/blobs/uploads/?mount={layer}&from=one/app")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(app.delete(&format!("/v2/two/app/blobs/{layer}")).await.status(), StatusCode::ACCEPTED);
    assert_error(app.delete(&format!("/v2/one/app/blobs/{layer}")).await, StatusCode::METHOD_NOT_ALLOWED, "DENIED")
        .await;
}

#[tokio::test]
async fn a_child_of_an_index_cannot_be_deleted_and_its_tag_is_named() {
    let app = spawn_mutable().await;
    let (child, child_digest) = app.push_image("multi/app", "amd64").await;
    let index = push_index(&app, "multi/app", "1.0", &[(&child_digest, child.len())]).await;
    // Deleting the child's own tag is fine (the manifest stays, held by the index)...
    assert_eq!(app.delete("/v2/multi/app/manifests/amd64").await.status(), StatusCode::ACCEPTED);
    // ...but the child manifest itself is held by the index.
    let r = app.delete(&format!("/v2/multi/app/manifests/{child_digest}")).await;
    let body = assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "DENIED").await;
    assert_eq!(
        body["errors"][0]["message"],
        format!(
            "manifest {child_digest} cannot be deleted from multi/app: index {index}, tagged multi/app:1.0, \
             references it; delete that index first"
        )
    );
    // Its layers are held through it, and the tag of the index is named.
    let layer = blobs_of(&child)[1].clone();
    let r = app.delete(&format!("/v2/multi/app/blobs/{layer}")).await;
    let body = assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "DENIED").await;
    assert_eq!(body["errors"][0]["detail"], json!({ "digest": layer, "referenced_by": child_digest, "tag": "1.0" }));
    // The whole index still pulls.
    assert_eq!(app.get(&format!("/v2/multi/app/manifests/{child_digest}")).await.status(), StatusCode::OK);
    // Delete the index, then the child goes, then its layers.
    assert_eq!(app.delete(&format!("/v2/multi/app/manifests/{index}")).await.status(), StatusCode::ACCEPTED);
    assert_eq!(app.delete(&format!("/v2/multi/app/manifests/{child_digest}")).await.status(), StatusCode::ACCEPTED);
    assert_eq!(app.delete(&format!("/v2/multi/app/blobs/{layer}")).await.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_subject_is_not_a_reference() {
    let app = spawn_mutable().await;
    let (_, subject) = app.push_image("subj/app", "v1").await;
    let config = app.push_blob("subj/app", b"{}").await;
    let sbom = image_manifest(&config, 2, &[], Some(&subject));
    let sbom_digest = digest(&sbom);
    assert_eq!(app.put_manifest("subj/app", &sbom_digest, OCI_MANIFEST, &sbom).await.status(), StatusCode::CREATED);
    // The referrer does not keep its subject: deleting the subject is allowed.
    assert_eq!(app.delete(&format!("/v2/subj/app/manifests/{subject}")).await.status(), StatusCode::ACCEPTED);
    assert_eq!(app.head(&format!("/v2/subj/app/manifests/{sbom_digest}")).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn refused_deletes_are_405_with_the_reason_and_change_nothing() {
    let app = spawn_app().await;
    let (m, d) = app.push_image("refuse/app", "v1").await;
    let cases = [
        ("/v2/refuse/app/manifests/v1".to_string(), "immutable tag"),
        (format!("/v2/refuse/app/manifests/{d}"), "manifest an immutable tag points to"),
        (format!("/v2/refuse/app/blobs/{}", blobs_of(&m)[0]), "referenced config"),
    ];
    for (path, what) in cases {
        let r = app.delete(&path).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{what}");
        let body = assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "DENIED").await;
        assert!(!body["errors"][0]["message"].as_str().unwrap().is_empty(), "{what}: says why");
    }
    assert_eq!(app.tags("refuse/app").await, vec!["v1"]);
    assert_eq!(app.get("/v2/refuse/app/manifests/v1").await.bytes().await.unwrap().as_ref(), m.as_slice());
    for blob in blobs_of(&m) {
        assert_eq!(app.get(&format!("/v2/refuse/app/blobs/{blob}")).await.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn the_schema_refuses_to_orphan_a_reference() {
    use sqlx::{ConnectOptions, Connection};
    let app = spawn_app().await;
    let (m, d) = app.push_image("schema/app", "v1").await;
    let layer = blobs_of(&m)[1].clone();
    // Another code path (a future GC, an admin with sqlite3 or psql) deleting rows directly.
    let url = app.state.config.database_url();
    let sql = "DELETE FROM repo_blobs WHERE repo = 'schema/app' AND digest = $1";
    let deleted = if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(sql).bind(&layer).execute(&mut conn).await.map(|_| ())
    } else {
        let options = url.parse::<sqlx::sqlite::SqliteConnectOptions>().unwrap();
        let mut conn = options.foreign_keys(true).connect().await.unwrap();
        sqlx::query(sql).bind(&layer).execute(&mut conn).await.map(|_| ())
    };
    let e = deleted.expect_err("a referenced blob link must not be deletable");
    // SQLite: "FOREIGN KEY constraint failed"; PostgreSQL: "... violates foreign key constraint ...".
    assert!(e.to_string().to_lowercase().contains("foreign key"), "{e}");
    assert_eq!(app.get(&format!("/v2/schema/app/blobs/{layer}")).await.status(), StatusCode::OK);
    let _ = d;
}
