//! Content discovery workflow (distribution-spec v1.1 "Content Discovery"): `tags/list`
//! (end-8a/8b) in lexical order with `n`, `last` and `Link`, `_catalog` with the same
//! pagination, and the referrers API (end-12a/12b): descriptors of each referrer,
//! `artifactType` filtering with `OCI-Filters-Applied`, empty answers, the config media type
//! fallback, and referrers pushed before their subject.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

/// Pushes one image and tags it with each of `tags`.
async fn push_tags(r: &Reg, repo: &str, tags: &[&str]) {
    let img = r.push_image(repo, None).await;
    for tag in tags {
        r.push_manifest(repo, Some(tag), img.media_type, &img.body).await;
    }
}

async fn get_tags(r: &Reg, path: &str) -> (Vec<String>, Option<String>) {
    let resp = r.req(Method::GET, path).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
    let link = link_next(&resp);
    let body = json_body(resp).await;
    (tag_list(&body), link)
}

const TAGS: [&str; 5] = ["b1", "a10", "c3", "a2", "b0"];
const SORTED: [&str; 5] = ["a10", "a2", "b0", "b1", "c3"];

#[tokio::test]
async fn tags_list_returns_every_tag_in_lexical_order() {
    let r = Reg::start();
    let repo = unique_repo("discovery");
    push_tags(&r, &repo, &TAGS).await;

    let resp = r.req(Method::GET, &format!("/v2/{repo}/tags/list")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json_body(resp).await;
    assert_eq!(body["name"], json!(repo));
    assert_eq!(tag_list(&body), SORTED);
}

#[tokio::test]
async fn tags_list_n_limits_results_and_link_leads_to_the_rest() {
    let r = Reg::start();
    let repo = unique_repo("discovery");
    push_tags(&r, &repo, &TAGS).await;

    let (page, link) = get_tags(&r, &format!("/v2/{repo}/tags/list?n=2")).await;
    assert_eq!(page, SORTED[..2]);
    let mut all = page;
    let mut next = link.expect("Link rel=\"next\" on a partial page");
    for _ in 0..SORTED.len() {
        let resp = r.req_url(Method::GET, r.resolve(&next)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "GET {next}");
        let link = link_next(&resp);
        let page = tag_list(&json_body(resp).await);
        assert!(page.len() <= 2, "page longer than n: {page:?}");
        all.extend(page);
        match link {
            Some(l) => next = l,
            None => break,
        }
    }
    assert_eq!(all, SORTED, "pages joined");
}

#[tokio::test]
async fn tags_list_last_starts_after_the_given_tag() {
    let r = Reg::start();
    let repo = unique_repo("discovery");
    push_tags(&r, &repo, &TAGS).await;

    let (page, _) = get_tags(&r, &format!("/v2/{repo}/tags/list?n=2&last=a2")).await;
    assert_eq!(page, ["b0", "b1"]);
    let (page, _) = get_tags(&r, &format!("/v2/{repo}/tags/list?last=b1")).await;
    assert_eq!(page, ["c3"]);
    let (page, link) = get_tags(&r, &format!("/v2/{repo}/tags/list?n=5&last=c3")).await;
    assert!(page.is_empty(), "tags after the last one: {page:?}");
    assert_eq!(link, None, "Link after the end");
}

#[tokio::test]
async fn tags_list_with_n_zero_returns_empty_list_without_link() {
    let r = Reg::start();
    let repo = unique_repo("discovery");
    push_tags(&r, &repo, &TAGS).await;

    let (page, link) = get_tags(&r, &format!("/v2/{repo}/tags/list?n=0")).await;
    assert!(page.is_empty(), "n=0 returned {page:?}");
    assert_eq!(link, None, "n=0 returned a Link");
}

#[tokio::test]
async fn tags_list_of_unknown_repository_returns_404_name_unknown() {
    let r = Reg::start();
    let repo = unique_repo("discovery-missing");
    let resp = r.req(Method::GET, &format!("/v2/{repo}/tags/list")).send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, &["NAME_UNKNOWN"]).await;
}

#[tokio::test]
async fn catalog_lists_repositories_with_n_last_and_link() {
    let r = Reg::start();
    let prefix = unique_repo("catalog");
    let repos: Vec<String> = ["a", "b", "c"].iter().map(|s| format!("{prefix}/{s}")).collect();
    for repo in &repos {
        r.push_image(repo, Some("v1")).await;
    }

    // `prefix` sorts right before `prefix/a`; other repositories of a shared registry sort
    // outside this run's random prefix.
    let resp = r.req_url(Method::GET, with_query(r.url("/v2/_catalog?n=2"), "last", &prefix)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let next = link_next(&resp).expect("Link on a partial catalog page");
    let page = json_body(resp).await;
    assert_eq!(page["repositories"], json!(repos[..2]));

    let resp = r.req_url(Method::GET, r.resolve(&next)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "GET {next}");
    let page = json_body(resp).await;
    let names = page["repositories"].as_array().expect("repositories list");
    assert_eq!(names.first(), Some(&json!(repos[2])), "page after the Link: {page}");

    let resp = r.req(Method::GET, "/v2/_catalog").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let all = json_body(resp).await;
    let all: Vec<&str> =
        all["repositories"].as_array().expect("repositories list").iter().map(|v| v.as_str().expect("name")).collect();
    let mut sorted = all.clone();
    sorted.sort_unstable();
    assert_eq!(all, sorted, "catalog not in lexical order");
    for repo in &repos {
        assert!(all.contains(&repo.as_str()), "{repo} missing from the catalog");
    }
}

/// GET referrers of `digest`, asserting 200 with an OCI index; returns the filter header and
/// the `manifests` list.
async fn referrers(r: &Reg, repo: &str, digest: &str, artifact_type: Option<&str>) -> (Option<String>, Vec<Value>) {
    let mut url = r.url(&format!("/v2/{repo}/referrers/{digest}"));
    if let Some(t) = artifact_type {
        url = with_query(url, "artifactType", t);
    }
    let resp = r.req_url(Method::GET, url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "GET referrers of {digest}");
    assert_eq!(header(&resp, "content-type").as_deref(), Some(OCI_INDEX));
    let filters = header(&resp, "oci-filters-applied");
    let index = json_body(resp).await;
    assert_eq!(index["schemaVersion"], json!(2), "{index}");
    assert_eq!(index["mediaType"], json!(OCI_INDEX), "{index}");
    let manifests = index["manifests"].as_array().unwrap_or_else(|| panic!("no manifests list: {index}"));
    (filters, manifests.clone())
}

/// The referrer descriptor expected for a pushed manifest.
fn expected(media_type: &str, body: &[u8], artifact_type: &str, annotations: &Value) -> Value {
    let mut d = descriptor(media_type, body);
    d["artifactType"] = json!(artifact_type);
    d["annotations"] = annotations.clone();
    d
}

fn sorted_by_digest(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    v
}

const SBOM: &str = "application/vnd.example.sbom.v1";
const SIG_CONFIG: &str = "application/vnd.example.signature.config.v1+json";
const BUNDLE: &str = "application/vnd.example.bundle.v1";

/// A subject image and three referrers: an image manifest with `artifactType`, one without
/// (typed by its config), and an index. Returns the subject digest and expected descriptors.
async fn push_subject_with_referrers(r: &Reg, repo: &str) -> (String, Vec<Value>) {
    let subject = r.push_image(repo, Some("subject")).await;
    let subject_desc = descriptor(OCI_MANIFEST, &subject.body);
    let empty = r.push_blob_desc(repo, OCI_EMPTY, b"{}").await;
    let mut expect = Vec::new();

    let ann = json!({ "org.example.kind": "sbom", "org.example.nonce": random_suffix() });
    let layer = r.push_blob_desc(repo, SBOM, &random_bytes(128)).await;
    let body =
        image_manifest(&empty, &[layer], json!({ "artifactType": SBOM, "subject": subject_desc, "annotations": ann }));
    let resp = r.put_manifest(repo, &digest_of(&body), OCI_MANIFEST, &body).await;
    assert_eq!(resp.status(), StatusCode::CREATED, "PUT sbom referrer");
    assert_eq!(header(&resp, "oci-subject"), Some(subject.digest.clone()));
    expect.push(expected(OCI_MANIFEST, &body, SBOM, &ann));

    let ann = json!({ "org.example.kind": "signature", "org.example.nonce": random_suffix() });
    let config = r.push_blob_desc(repo, SIG_CONFIG, br#"{"signed":true}"#).await;
    let layer = r.push_blob_desc(repo, "application/octet-stream", &random_bytes(64)).await;
    let body = image_manifest(&config, &[layer], json!({ "subject": subject_desc, "annotations": ann }));
    let resp = r.put_manifest(repo, &digest_of(&body), OCI_MANIFEST, &body).await;
    assert_eq!(resp.status(), StatusCode::CREATED, "PUT signature referrer");
    assert_eq!(header(&resp, "oci-subject"), Some(subject.digest.clone()));
    expect.push(expected(OCI_MANIFEST, &body, SIG_CONFIG, &ann));

    let ann = json!({ "org.example.kind": "bundle", "org.example.nonce": random_suffix() });
    let child = r.push_image(repo, None).await;
    let body = index_manifest(
        OCI_INDEX,
        &[descriptor(OCI_MANIFEST, &child.body)],
        json!({ "artifactType": BUNDLE, "subject": subject_desc, "annotations": ann }),
    );
    let resp = r.put_manifest(repo, &digest_of(&body), OCI_INDEX, &body).await;
    assert_eq!(resp.status(), StatusCode::CREATED, "PUT index referrer");
    assert_eq!(header(&resp, "oci-subject"), Some(subject.digest.clone()));
    expect.push(expected(OCI_INDEX, &body, BUNDLE, &ann));

    (subject.digest, expect)
}

#[tokio::test]
async fn referrers_lists_a_descriptor_for_each_referrer() {
    let r = Reg::start();
    let repo = unique_repo("referrers");
    let (subject, expect) = push_subject_with_referrers(&r, &repo).await;

    let (_, manifests) = referrers(&r, &repo, &subject, None).await;
    assert_eq!(sorted_by_digest(manifests), sorted_by_digest(expect));
}

#[tokio::test]
async fn referrers_filtered_by_artifact_type_sets_oci_filters_applied() {
    let r = Reg::start();
    let repo = unique_repo("referrers");
    let (subject, expect) = push_subject_with_referrers(&r, &repo).await;

    let (filters, manifests) = referrers(&r, &repo, &subject, Some(SBOM)).await;
    if r.is_cairn() || filters.is_some() {
        assert_eq!(filters.as_deref(), Some("artifactType"), "OCI-Filters-Applied");
        assert_eq!(manifests, vec![expect[0].clone()]);
    } else {
        // Filtering is optional; unfiltered, the client filters and gets everything.
        assert_eq!(sorted_by_digest(manifests), sorted_by_digest(expect.clone()));
    }
    let (filters, manifests) = referrers(&r, &repo, &subject, Some(SIG_CONFIG)).await;
    if filters.is_some() {
        assert_eq!(manifests, vec![expect[1].clone()], "filter on the config media type");
    }
}

#[tokio::test]
async fn referrers_of_digest_without_referrers_returns_empty_index() {
    let r = Reg::start();
    let repo = unique_repo("referrers");
    let img = r.push_image(&repo, Some("lonely")).await;

    let (_, manifests) = referrers(&r, &repo, &img.digest, None).await;
    assert!(manifests.is_empty(), "{manifests:?}");
    let (_, manifests) = referrers(&r, &repo, &unknown_digest(), None).await;
    assert!(manifests.is_empty(), "{manifests:?}");
}

#[tokio::test]
async fn referrer_artifact_type_falls_back_to_config_media_type() {
    let r = Reg::start();
    let repo = unique_repo("referrers");
    let (subject, expect) = push_subject_with_referrers(&r, &repo).await;

    let (_, manifests) = referrers(&r, &repo, &subject, None).await;
    let sig = manifests
        .iter()
        .find(|d| d["digest"] == expect[1]["digest"])
        .unwrap_or_else(|| panic!("referrer without artifactType not listed: {manifests:?}"));
    assert_eq!(sig["artifactType"], json!(SIG_CONFIG));
}

#[tokio::test]
async fn referrer_pushed_before_its_subject_is_accepted_and_listed() {
    let r = Reg::start();
    let repo = unique_repo("referrers");
    let config = r.push_blob_desc(&repo, OCI_CONFIG, &random_config()).await;
    let layer = r.push_blob_desc(&repo, OCI_LAYER, &random_bytes(100)).await;
    let subject_body = image_manifest(&config, &[layer], json!({}));
    let subject_digest = digest_of(&subject_body);

    let empty = r.push_blob_desc(&repo, OCI_EMPTY, b"{}").await;
    let sig_layer = r.push_blob_desc(&repo, SBOM, &random_bytes(32)).await;
    let ann = json!({ "org.example.kind": "early" });
    let body = image_manifest(
        &empty,
        &[sig_layer],
        json!({
            "artifactType": SBOM,
            "subject": descriptor(OCI_MANIFEST, &subject_body),
            "annotations": ann,
        }),
    );
    let resp = r.put_manifest(&repo, &digest_of(&body), OCI_MANIFEST, &body).await;
    assert_eq!(resp.status(), StatusCode::CREATED, "referrer of a missing subject");
    assert_eq!(header(&resp, "oci-subject"), Some(subject_digest.clone()));
    assert_eq!(r.head_manifest(&repo, &subject_digest).await, StatusCode::NOT_FOUND);

    let (_, manifests) = referrers(&r, &repo, &subject_digest, None).await;
    assert_eq!(manifests, vec![expected(OCI_MANIFEST, &body, SBOM, &ann)]);

    // Pushing the subject afterwards keeps the referrer.
    r.push_manifest(&repo, Some("late-subject"), OCI_MANIFEST, &subject_body).await;
    let (_, manifests) = referrers(&r, &repo, &subject_digest, None).await;
    assert_eq!(manifests.len(), 1, "{manifests:?}");
}
