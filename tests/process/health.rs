//! `/healthz` and `/readyz` answer 200 on a running server, and `/v2/` identifies the API.

use reqwest::StatusCode;

use crate::support::*;

#[tokio::test]
async fn healthz_and_readyz_answer_200() {
    let (_root, data) = workdir();
    let srv = Server::start(&data).await;
    let http = client();

    let r = http.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap().trim(), "ok");

    let r = http.get(srv.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap().trim(), "ready");

    let r = http.get(srv.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-distribution-api-version"), "registry/2.0");
}
