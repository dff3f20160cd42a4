//! Crash safety (DESIGN §2, §9): killing the server with SIGKILL in the middle of pushes
//! loses only the uploads in flight. Committed blobs and manifests read back
//! byte-identical after a restart and the tags are unchanged; a blob whose upload was cut
//! off is not visible anywhere (HEAD 404, GET `BLOB_UNKNOWN`, no repository appears in the
//! catalog); an interrupted session still exists and reports only the offset it had
//! recorded before the request that was cut off, and can be resumed from there to a
//! correct blob. The kill happens at two moments: early in the bodies (a few KiB sent,
//! nothing flushed yet) and late (more than one 8 MiB storage part sent).

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::support::*;

const APP: &str = "crash/app";
const OTHER: &str = "crash/other";

/// Everything a client was told is stored.
#[derive(Default)]
struct Committed {
    blobs: Vec<(String, String, Vec<u8>)>,
    manifests: Vec<(String, String, Vec<u8>)>,
}

impl Committed {
    async fn blob(&mut self, http: &Client, srv: &Server, repo: &str, bytes: Vec<u8>) -> String {
        let d = push_blob(http, srv, repo, &bytes).await;
        self.blobs.push((repo.into(), d.clone(), bytes));
        d
    }

    async fn manifest(&mut self, http: &Client, srv: &Server, repo: &str, reference: &str, body: Vec<u8>) -> String {
        let d = put_manifest(http, srv, repo, reference, &body).await;
        self.manifests.push((repo.into(), reference.into(), body.clone()));
        self.manifests.push((repo.into(), d.clone(), body));
        d
    }

    /// Every committed blob and manifest reads back byte-identical.
    async fn verify(&self, http: &Client, srv: &Server) {
        for (repo, d, bytes) in &self.blobs {
            let r = http.head(srv.url(&format!("/v2/{repo}/blobs/{d}"))).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "HEAD {repo}@{d}");
            assert_eq!(header(&r, "content-length"), bytes.len().to_string());
            assert_blob(http, srv, repo, d, bytes).await;
        }
        for (repo, reference, body) in &self.manifests {
            assert_manifest(http, srv, repo, reference, body).await;
        }
    }
}

const CONFIG: &[u8] = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;

/// The state before any kill: two repositories, layers pushed monolithic and chunked,
/// manifests by tag and by digest.
async fn push_baseline(http: &Client, srv: &Server, c: &mut Committed) {
    let cfg = c.blob(http, srv, APP, CONFIG.to_vec()).await;
    let l0 = c.blob(http, srv, APP, random_bytes(1 << 20)).await;
    let l1_bytes = random_bytes((2 << 20) + 3);
    let l1 = push_blob_chunked(http, srv, APP, &l1_bytes, 512 << 10).await;
    c.blobs.push((APP.into(), l1.clone(), l1_bytes));
    let l2 = c.blob(http, srv, APP, random_bytes((3 << 20) - 1)).await;
    let cfg_len = CONFIG.len();
    let m1 = image_manifest((&cfg, cfg_len), &[(&l0, 1 << 20), (&l1, (2 << 20) + 3)]);
    c.manifest(http, srv, APP, "v1", m1).await;
    let m2 = image_manifest((&cfg, cfg_len), &[(&l2, (3 << 20) - 1)]);
    c.manifest(http, srv, APP, "v2", m2.clone()).await;
    c.manifest(http, srv, APP, "latest", m2).await;
    let m3 = image_manifest((&cfg, cfg_len), &[(&l0, 1 << 20), (&l2, (3 << 20) - 1)]);
    let d3 = sha256(&m3);
    c.manifest(http, srv, APP, &d3, m3).await;

    // Same config again in another repository (a duplicate commit), plus its own layer.
    let cfg2 = c.blob(http, srv, OTHER, CONFIG.to_vec()).await;
    assert_eq!(cfg2, cfg);
    let l3 = c.blob(http, srv, OTHER, random_bytes(512 << 10)).await;
    let m4 = image_manifest((&cfg2, cfg_len), &[(&l3, 512 << 10)]);
    c.manifest(http, srv, OTHER, "1.0", m4).await;
}

/// Uploads left in flight by one kill.
struct InFlight {
    /// A fresh session whose first PATCH (no Content-Range) was cut off.
    a_loc: String,
    a_data: Vec<u8>,
    /// A session with one committed chunk whose second PATCH was cut off.
    b_loc: String,
    b_data: Vec<u8>,
    b_done: usize,
    /// A single-POST `?digest=` upload into a repository that has nothing else.
    c_repo: String,
    c_digest: String,
    /// A session with one committed chunk whose closing PUT `?digest=` was cut off.
    d_loc: String,
    d_data: Vec<u8>,
    d_done: usize,
}

/// Starts four uploads whose bodies stop after `partial` bytes, waits until the server is
/// writing each of them, and SIGKILLs it.
async fn kill_mid_body(http: &Client, srv: &mut Server, round: usize, partial: usize) -> InFlight {
    let tail = 100_000;
    let uploads = srv.data_dir.join("blobs").join("uploads");
    // Staging files left by an earlier kill are not this round's.
    let old: Vec<_> = staging_files(&uploads).into_iter().map(|(p, _)| p).collect();
    let staged_now = || staging_files(&uploads).into_iter().filter(|(p, _)| !old.contains(p)).collect::<Vec<_>>();

    let a_loc = start_upload(http, srv, APP).await;
    let a_data = random_bytes(partial + tail);
    let a = Stalled::start(
        http.patch(srv.url(&a_loc)).header("content-type", "application/octet-stream"),
        &a_data[..partial],
    );

    let b_done = 200_000;
    let b_data = random_bytes(b_done + partial + tail);
    let b_loc = start_upload(http, srv, APP).await;
    let b_loc = patch_chunk(http, srv, &b_loc, 0, &b_data[..b_done]).await;
    let b = Stalled::start(
        http.patch(srv.url(&b_loc)).headers(chunk_headers(b_done as u64, (b_data.len() - b_done) as u64)),
        &b_data[b_done..b_done + partial],
    );

    let c_repo = format!("crash/ghost{round}");
    let c_data = random_bytes(partial + tail);
    let c_digest = sha256(&c_data);
    let c = Stalled::start(
        http.post(srv.url(&format!("/v2/{c_repo}/blobs/uploads/?digest={c_digest}")))
            .header("content-type", "application/octet-stream"),
        &c_data[..partial],
    );

    let d_done = 150_000;
    let d_data = random_bytes(d_done + partial + tail);
    let d_loc = start_upload(http, srv, APP).await;
    let d_loc = patch_chunk(http, srv, &d_loc, 0, &d_data[..d_done]).await;
    let d = Stalled::start(
        http.put(srv.url(&with_digest(&d_loc, &sha256(&d_data)))).header("content-type", "application/octet-stream"),
        &d_data[d_done..d_done + partial],
    );

    // Wait until the server is streaming every body into storage.
    let known: Vec<String> = [&a_loc, &b_loc, &d_loc].iter().map(|l| upload_id(l)).collect();
    let writing = || {
        let staged = staged_now();
        let in_dir = |id: &str| staged.iter().any(|(p, _)| p.starts_with(uploads.join(id)));
        let others = staged.iter().any(|(p, _)| !known.iter().any(|id| p.starts_with(uploads.join(id))));
        known.iter().all(|id| in_dir(id)) && others
    };
    assert!(
        wait_until(Duration::from_secs(15), writing).await,
        "the server never started writing all four bodies; staged: {:?}",
        staged_now()
    );
    if partial > 8 << 20 {
        // Best effort: let the first storage part reach the disk.
        let flushed = || staged_now().iter().all(|(_, n)| *n >= 1 << 20);
        wait_until(Duration::from_secs(5), flushed).await;
    }

    srv.kill();
    for s in [a, b, c, d] {
        s.expect_failure(Duration::from_secs(10)).await;
    }
    InFlight { a_loc, a_data, b_loc, b_data, b_done, c_repo, c_digest, d_loc, d_data, d_done }
}

/// After the restart: nothing in flight is visible, sessions show their recorded offsets
/// and can be finished; the finished blobs join the committed set.
async fn check_and_resume(http: &Client, srv: &Server, f: InFlight, round: usize, c: &mut Committed) {
    assert_no_blob(http, srv, &f.c_repo, &f.c_digest).await;
    let r = http.get(srv.url(&format!("/v2/{}/tags/list", f.c_repo))).send().await.unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
    let d_digest = sha256(&f.d_data);
    assert_no_blob(http, srv, APP, &d_digest).await;
    for data in [&f.a_data, &f.b_data] {
        assert_no_blob(http, srv, APP, &sha256(data)).await;
    }

    assert_eq!(upload_range(http, srv, &f.a_loc).await, "0-0");
    assert_eq!(upload_range(http, srv, &f.b_loc).await, format!("0-{}", f.b_done - 1));
    assert_eq!(upload_range(http, srv, &f.d_loc).await, format!("0-{}", f.d_done - 1));

    // Resume each from its recorded offset.
    let a = sha256(&f.a_data);
    let loc = patch_chunk(http, srv, &f.a_loc, 0, &f.a_data).await;
    finish_upload(http, srv, APP, &loc, &a, &[]).await;
    let b = sha256(&f.b_data);
    let loc = patch_chunk(http, srv, &f.b_loc, f.b_done as u64, &f.b_data[f.b_done..]).await;
    finish_upload(http, srv, APP, &loc, &b, &[]).await;
    finish_upload(http, srv, APP, &f.d_loc, &d_digest, &f.d_data[f.d_done..]).await;

    let cfg = sha256(CONFIG);
    let m = image_manifest(
        (&cfg, CONFIG.len()),
        &[(&a, f.a_data.len()), (&b, f.b_data.len()), (&d_digest, f.d_data.len())],
    );
    c.blobs.push((APP.into(), a, f.a_data));
    c.blobs.push((APP.into(), b, f.b_data));
    c.blobs.push((APP.into(), d_digest, f.d_data));
    c.manifest(http, srv, APP, &format!("r{round}"), m).await;
}

async fn catalog(http: &Client, srv: &Server) -> Value {
    let r = http.get(srv.url("/v2/_catalog")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_push_loses_only_uploads_in_flight() {
    let (_root, data) = workdir();
    let http = client();
    let mut committed = Committed::default();
    let mut srv = Server::start(&data).await;
    push_baseline(&http, &srv, &mut committed).await;

    for (round, partial) in [(1, 64 << 10), (2, 9 << 20)] {
        let tags_before = (tags(&http, &srv, APP).await, tags(&http, &srv, OTHER).await);
        let catalog_before = catalog(&http, &srv).await;

        let in_flight = kill_mid_body(&http, &mut srv, round, partial).await;
        srv = Server::start(&data).await;

        committed.verify(&http, &srv).await;
        assert_eq!(
            (tags(&http, &srv, APP).await, tags(&http, &srv, OTHER).await),
            tags_before,
            "round {round}: tags changed across the kill"
        );
        assert_eq!(catalog(&http, &srv).await, catalog_before, "round {round}: the catalog changed across the kill");
        check_and_resume(&http, &srv, in_flight, round, &mut committed).await;
        committed.verify(&http, &srv).await;
    }
}
