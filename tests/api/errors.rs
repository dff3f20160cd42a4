//! Every 4xx under `/v2` carries the spec's JSON error body (`{"errors":[{code, message}]}`),
//! including paths that match no endpoint, malformed percent-encoding and unsatisfiable ranges.

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn unknown_endpoints_answer_404_with_a_json_error() {
    let app = spawn_app().await;
    for path in ["/v2/x/unknown", "/v2/manifests/latest", "/v2/a/b/c/nothing/here", "/v2/x/blobs/uploads/not-a-uuid!"] {
        let r = app.get(path).await;
        let body = assert_error(r, StatusCode::NOT_FOUND, "UNSUPPORTED").await;
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("no such endpoint"), "{path}: {body}");
    }
}

#[tokio::test]
async fn malformed_percent_encoding_answers_400_with_a_json_error() {
    let app = spawn_app().await;
    for path in ["/v2/r/manifests/%ff%fe", "/v2/r%c3/tags/list", "/v2/r/blobs/sha256%3A%80"] {
        let r = app.get(path).await;
        let body = assert_error(r, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("percent-encoded"), "{path}: {body}");
    }
    // A well-formed encoding is decoded as usual.
    app.push_image("enc/app", "v1").await;
    assert_eq!(app.head("/v2/enc%2Fapp/manifests/v1").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn unsatisfiable_range_answers_416_with_a_json_error() {
    let app = spawn_app().await;
    let d = app.push_blob("json416", &random_bytes(10)).await;
    let r = app.http.get(app.url(&format!("/v2/json416/blobs/{d}"))).header("Range", "bytes=50-").send().await.unwrap();
    assert_eq!(header(&r, "content-range").as_deref(), Some("bytes */10"));
    assert_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "UNSUPPORTED").await;
}

#[tokio::test]
async fn wrong_method_answers_405_with_a_json_error() {
    let app = spawn_app().await;
    let r = app.http.patch(app.url("/v2/x/tags/list")).send().await.unwrap();
    assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
}
