//! `GET /metrics` of the real binary (one server per test, so every count is exact), parsed
//! with a Prometheus text-format parser (`prometheus-parse`): requests by API, route, method
//! and status, latency histograms, body bytes, cache hits, database and object-store calls,
//! the ledger head and the build info; and `cairn --version` naming the commit. (GC runs are checked in `tests/api/gc.rs`.)

use prometheus_parse::{Scrape, Value};
use reqwest::StatusCode;

use crate::support::*;

pub(crate) async fn scrape(http: &reqwest::Client, srv: &Server) -> Scrape {
    let r = http.get(srv.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), "text/plain; version=0.0.4; charset=utf-8");
    let text = r.text().await.unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("the page parses as Prometheus text")
}

/// The value of the sample of `name` whose labels include `labels` (0 when there is none).
pub(crate) fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<f64> = s
        .samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => f64::NAN,
        })
        .collect();
    assert!(matching.len() <= 1, "{name} {labels:?}: {} samples", matching.len());
    matching.first().copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_requests_bytes_cache_and_the_ledger() {
    let (_root, data) = workdir();
    let srv = Server::start(&data).await;
    let http = client();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cfg = push_blob(&http, &srv, "apps/web", config).await;
    let layer = random_bytes(4000);
    let l = push_blob(&http, &srv, "apps/web", &layer).await;
    let image = image_manifest((&cfg, config.len()), &[(&l, layer.len())]);
    put_manifest(&http, &srv, "apps/web", "v1", &image).await;
    for _ in 0..3 {
        let r = http.get(srv.url("/v2/apps/web/manifests/v1")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = http.get(srv.url("/v2/apps/web/manifests/nope")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = http.get(srv.url(&format!("/v2/apps/web/blobs/{l}"))).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), layer.len());

    let s = scrape(&http, &srv).await;
    let requests = |route, method, status| {
        value(
            &s,
            "cairn_http_requests_total",
            &[("api", "v2"), ("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(requests("upload_start", "POST", "202"), 2.0);
    assert_eq!(requests("upload", "PUT", "201"), 2.0);
    assert_eq!(requests("manifest", "PUT", "201"), 1.0);
    assert_eq!(requests("manifest", "GET", "200"), 3.0);
    assert_eq!(requests("manifest", "GET", "404"), 1.0);
    assert_eq!(requests("blob", "GET", "200"), 1.0);
    // The histogram: one observation per manifest GET, in its +Inf bucket.
    let latency = value(&s, "cairn_http_request_duration_seconds", &[("route", "manifest"), ("method", "GET")]);
    assert_eq!(latency, 4.0);
    // Body bytes: at least the blobs and the manifest each way.
    let received = value(&s, "cairn_http_received_bytes_total", &[("api", "v2")]);
    let sent = value(&s, "cairn_http_sent_bytes_total", &[("api", "v2")]);
    assert!(received >= (config.len() + layer.len() + image.len()) as f64, "received {received}");
    assert!(sent >= (3 * image.len() + layer.len()) as f64, "sent {sent}");
    // Three reads of v1: the first misses the read cache, the next two hit it.
    assert!(value(&s, "cairn_cache_hits_total", &[]) >= 2.0);
    assert!(value(&s, "cairn_cache_misses_total", &[]) >= 1.0);
    assert_eq!(value(&s, "cairn_uploads_in_flight", &[]), 0.0);
    // Database and object-store calls, timed by operation (the histograms' +Inf counts):
    // every write waited for a write connection and committed; the cache miss read the
    // manifest; the two uploads wrote files and the blob GET read one. Nothing failed.
    let db = |op| value(&s, "cairn_database_operation_duration_seconds", &[("operation", op)]);
    assert!(db("begin") >= 3.0 && db("commit") >= 3.0, "begin {} commit {}", db("begin"), db("commit"));
    assert!(db("manifest") >= 1.0, "manifest reads: {}", db("manifest"));
    let store = |op| value(&s, "cairn_storage_operation_duration_seconds", &[("operation", op)]);
    // On the filesystem both uploads are written with O_DIRECT: its start and its finish.
    assert!(store("put_direct") >= 4.0, "put_direct {}", store("put_direct"));
    assert!(store("get") >= 1.0, "get {}", store("get"));
    assert!(
        s.samples.iter().all(|x| x.metric != "cairn_database_errors_total" && x.metric != "cairn_storage_errors_total")
    );
    // The ledger: repository.create, two blob.commit, manifest.put, tag.create, config.load.
    assert!(value(&s, "cairn_ledger_head_seq", &[]) >= 5.0);
    let build: Vec<_> = s.samples.iter().filter(|x| x.metric == "cairn_build_info").collect();
    assert_eq!(build.len(), 1);
    assert_eq!(build[0].labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
    assert!(build[0].labels.get("commit").is_some_and(|c| !c.is_empty()));
    // The first scrape is counted by the second.
    let s2 = scrape(&http, &srv).await;
    assert_eq!(
        value(&s2, "cairn_http_requests_total", &[("api", "metrics"), ("method", "GET"), ("status", "200")]),
        1.0
    );
}

#[test]
fn version_names_the_commit() {
    let out = cairn().arg("--version").output().unwrap();
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(v.starts_with(&format!("cairn {} (commit ", env!("CARGO_PKG_VERSION"))), "{v}");
    assert!(!v.contains("(commit )"), "{v}");
}
