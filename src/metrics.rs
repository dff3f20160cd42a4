//! Prometheus metrics (`GET /metrics`, text exposition format 0.0.4): the process-wide
//! recorder (the `metrics` crate's facade with `metrics-exporter-prometheus`), the names
//! every part of Cairn records under, and rendering. Recording is a few atomic operations;
//! nothing here blocks a request.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `cairn_http_requests_total` | counter | `api` (`v2`, `rest`, `token`, `health`, `metrics`), `route`, `method`, `status` |
//! | `cairn_http_request_duration_seconds` | histogram | `api`, `route`, `method` |
//! | `cairn_http_requests_in_flight` | gauge | `api` |
//! | `cairn_http_received_bytes_total`, `cairn_http_sent_bytes_total` | counter | `api` |
//! | `cairn_uploads_in_flight` | gauge | — (requests writing into an upload session now) |
//! | `cairn_cache_hits_total`, `cairn_cache_misses_total` | counter | — (the manifest read cache) |
//! | `cairn_cache_size_bytes`, `cairn_cache_entries` | gauge | — (the read cache's weighed size, at most `[server] cache_size`) |
//! | `cairn_rate_limited_total` | counter | `by` (`client`, `user`) |
//! | `cairn_gc_runs_total` | counter | `outcome` (`done`, `busy`, `failed`) |
//! | `cairn_gc_freed_blobs_total`, `cairn_gc_freed_bytes_total` | counter | — |
//! | `cairn_retention_runs_total` | counter | `outcome` |
//! | `cairn_retention_deleted_total` | counter | `kind` (`tag`, `manifest`) |
//! | `cairn_retention_freed_bytes_total` | counter | — |
//! | `cairn_ledger_head_seq`, `cairn_ledger_last_checkpoint_seq`, `cairn_ledger_last_checkpoint_timestamp_seconds` | gauge | — (read at scrape time) |
//! | `cairn_build_info` | gauge (1) | `version`, `commit` |

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Request counters and histograms.
pub const HTTP_REQUESTS: &str = "cairn_http_requests_total";
/// Request latency in seconds.
pub const HTTP_DURATION: &str = "cairn_http_request_duration_seconds";
/// Requests being answered.
pub const HTTP_IN_FLIGHT: &str = "cairn_http_requests_in_flight";
/// Request body bytes received.
pub const HTTP_RECEIVED: &str = "cairn_http_received_bytes_total";
/// Response body bytes sent.
pub const HTTP_SENT: &str = "cairn_http_sent_bytes_total";
/// Requests writing into an upload session now.
pub const UPLOADS_IN_FLIGHT: &str = "cairn_uploads_in_flight";
/// Manifest reads answered from the read cache.
pub const CACHE_HITS: &str = "cairn_cache_hits_total";
/// Manifest reads the read cache did not have.
pub const CACHE_MISSES: &str = "cairn_cache_misses_total";
/// Gauge: the read cache's weighed size in bytes (at most `[server] cache_size`).
pub const CACHE_SIZE_BYTES: &str = "cairn_cache_size_bytes";
/// Gauge: entries in the read cache.
pub const CACHE_ENTRIES: &str = "cairn_cache_entries";
/// Counter: requests refused by the request rate limit (429), by `by` (`client`).
pub const RATE_LIMITED: &str = "cairn_rate_limited_total";
/// GC runs by outcome.
pub const GC_RUNS: &str = "cairn_gc_runs_total";
/// Blobs GC deleted.
pub const GC_FREED_BLOBS: &str = "cairn_gc_freed_blobs_total";
/// Bytes GC deleted.
pub const GC_FREED_BYTES: &str = "cairn_gc_freed_bytes_total";
/// Retention applies by outcome.
pub const RETENTION_RUNS: &str = "cairn_retention_runs_total";
/// Tags and manifests retention deleted.
pub const RETENTION_DELETED: &str = "cairn_retention_deleted_total";
/// Bytes of the manifests retention deleted (see `PlanSummary::bytes`).
pub const RETENTION_FREED_BYTES: &str = "cairn_retention_freed_bytes_total";
/// The ledger's last seq.
pub const LEDGER_HEAD: &str = "cairn_ledger_head_seq";
/// The seq of the last signed checkpoint.
pub const LEDGER_CHECKPOINT_SEQ: &str = "cairn_ledger_last_checkpoint_seq";
/// The time of the last signed checkpoint, in Unix seconds.
pub const LEDGER_CHECKPOINT_TIME: &str = "cairn_ledger_last_checkpoint_timestamp_seconds";
/// Always 1, with the version and commit as labels.
pub const BUILD_INFO: &str = "cairn_build_info";
/// Counter: TLS certificate reloads, by `result` (`ok`, `error`).
pub const TLS_RELOADS: &str = "cairn_tls_reloads_total";
/// Gauge: when the served TLS certificate stops being valid (Unix seconds).
pub const TLS_NOT_AFTER: &str = "cairn_tls_certificate_not_after_timestamp_seconds";
/// Histogram: object-store calls, by `operation` (`get`, `head`, `put`, `delete`, `list`, …).
pub const STORAGE_DURATION: &str = "cairn_storage_operation_duration_seconds";
/// Counter: object-store calls that failed, by `operation` (a missing object is no failure).
pub const STORAGE_ERRORS: &str = "cairn_storage_errors_total";
/// Histogram: metadata-store calls, by `operation` (the `MetadataStore` method).
pub const DATABASE_DURATION: &str = "cairn_database_operation_duration_seconds";
/// Counter: metadata-store calls that failed, by `operation`.
pub const DATABASE_ERRORS: &str = "cairn_database_errors_total";

/// Latency buckets in seconds: 1 ms to 5 min (a large blob upload is one request).
const BUCKETS: [f64; 16] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Latency buckets in seconds for database and object-store calls: 100 µs to 10 s.
const FAST_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once (later calls return the same handle) and records
/// `cairn_build_info`. When another recorder is installed already (an embedding program's),
/// Cairn renders an empty page rather than failing.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), &BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(STORAGE_DURATION.into()), &FAST_BUCKETS))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(DATABASE_DURATION.into()), &FAST_BUCKETS))
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_ok() {
            describe();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "commit" => commit()).set(1.0);
        }
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            })
            .ok();
        handle
    })
}

/// The commit Cairn was built from (`build.rs`: `CAIRN_COMMIT` at build time, else git), or
/// `unknown`.
pub fn commit() -> &'static str {
    env!("CAIRN_COMMIT")
}

/// `cairn --version`: the version and the commit.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("CAIRN_COMMIT"), ")");

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by API, route, method and status");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "Time from a request's headers to its response's headers");
    describe_gauge!(HTTP_IN_FLIGHT, "HTTP requests being answered now");
    describe_counter!(HTTP_RECEIVED, Unit::Bytes, "Request body bytes received");
    describe_counter!(HTTP_SENT, Unit::Bytes, "Response body bytes sent");
    describe_gauge!(UPLOADS_IN_FLIGHT, "Requests writing into an upload session now");
    describe_counter!(CACHE_HITS, "Manifest reads answered from the read cache");
    describe_counter!(CACHE_MISSES, "Manifest reads the read cache did not hold");
    describe_gauge!(CACHE_SIZE_BYTES, Unit::Bytes, "Weighed size of the read cache (at most server.cache_size)");
    describe_gauge!(CACHE_ENTRIES, "Entries in the read cache");
    describe_counter!(RATE_LIMITED, "Requests refused by the request rate limit (429), by what was limited");
    describe_counter!(GC_RUNS, "Garbage collection runs, by outcome");
    describe_counter!(GC_FREED_BLOBS, "Blobs garbage collection deleted");
    describe_counter!(GC_FREED_BYTES, Unit::Bytes, "Bytes garbage collection deleted");
    describe_counter!(RETENTION_RUNS, "Retention applies, by outcome");
    describe_counter!(RETENTION_DELETED, "Tags and manifests retention deleted, by kind");
    describe_counter!(RETENTION_FREED_BYTES, Unit::Bytes, "Bytes of the manifests retention deleted");
    describe_gauge!(LEDGER_HEAD, "Seq of the audit ledger's last event");
    describe_gauge!(LEDGER_CHECKPOINT_SEQ, "Seq of the last signed checkpoint");
    describe_gauge!(LEDGER_CHECKPOINT_TIME, Unit::Seconds, "Time of the last signed checkpoint (Unix seconds)");
    describe_gauge!(BUILD_INFO, "Always 1; the labels name the version and commit");
    describe_counter!(TLS_RELOADS, "TLS certificate reloads, by result");
    describe_gauge!(TLS_NOT_AFTER, Unit::Seconds, "End of the served TLS certificate's validity (Unix seconds)");
    describe_histogram!(STORAGE_DURATION, Unit::Seconds, "Object-store calls, by operation");
    describe_counter!(STORAGE_ERRORS, "Object-store calls that failed, by operation");
    describe_histogram!(DATABASE_DURATION, Unit::Seconds, "Metadata-store calls, by operation");
    describe_counter!(DATABASE_ERRORS, "Metadata-store calls that failed, by operation");
}

/// The page `GET /metrics` answers.
pub fn render() -> String {
    handle().render()
}
