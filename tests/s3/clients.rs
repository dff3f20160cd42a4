//! Real clients pulling through a Cairn on S3 with `redirect = true`: oras-py pushes an
//! artifact in chunks (several PATCHes per blob, so each is composed into one object) and pulls
//! it back through the 307s; skopeo copies an image out of the registry into a `dir:` layout,
//! verifying every digest on the way. Both are shelled out to; a missing client fails the test
//! with what to install (`scripts/install-test-deps` installs both).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn::clock::ManualClock;
use reqwest::StatusCode;
use serde_json::json;

use crate::bucket::TempBucket;
use crate::redirect::redirecting_node;
use crate::server::{digest, pattern};
use crate::{S3Test, block_on};

pub const TESTS: &[S3Test] = &[
    S3Test { name: "oras_pushes_in_chunks_and_pulls_through_the_redirect", run: oras_round_trip },
    S3Test { name: "skopeo_copies_an_image_out_through_the_redirect", run: skopeo_copy_out },
];

/// `python3 driver.py REQUEST.json`: push (chunked) or pull with oras-py.
const ORAS_DRIVER: &str = r#"
import json, os, sys
import oras.client

req = json.load(open(sys.argv[1]))
client = oras.client.OrasClient(hostname=req["host"], insecure=True)
if req["op"] == "push":
    os.chdir(req["cwd"])
    resp = client.push(target=req["target"], files=req["files"], do_chunked=True, chunk_size=req["chunk_size"])
    if resp.status_code != 201:
        raise SystemExit("manifest PUT answered %s" % resp.status_code)
else:
    client.pull(target=req["target"], outdir=req["outdir"])
"#;

/// Runs `cmd`, failing the test with its output (or with `missing` when it cannot start).
fn run(cmd: &mut Command, missing: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}): {missing}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn oras(work: &Path, request: serde_json::Value) {
    let driver = work.join("oras_driver.py");
    std::fs::write(&driver, ORAS_DRIVER).unwrap();
    let req = work.join(format!("req-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&req, serde_json::to_vec(&request).unwrap()).unwrap();
    let probe = Command::new("python3").args(["-c", "import oras.client"]).output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "python3 cannot import oras: install oras-py (pip install oras; scripts/install-test-deps does)"
    );
    run(Command::new("python3").arg(&driver).arg(&req), "install python3");
}

fn oras_round_trip(endpoint: &str) {
    block_on(async {
        let bucket = TempBucket::create(endpoint).await;
        let n =
            redirecting_node(&bucket, Arc::new(ManualClock::new(SystemTime::now())), Duration::from_secs(300)).await;
        let host = n.base.trim_start_matches("http://").to_string();
        let work = tempfile::tempdir().unwrap();
        let files = [("one.bin", pattern(200_000, 11)), ("two.bin", pattern(70_000, 12))];
        let src = work.path().join("src");
        std::fs::create_dir(&src).unwrap();
        for (name, bytes) in &files {
            std::fs::write(src.join(name), bytes).unwrap();
        }
        let target = format!("{host}/clients/art:v1");
        let push = json!({ "op": "push", "host": host, "cwd": src, "target": target,
                           "files": ["one.bin", "two.bin"], "chunk_size": 65536 });
        let w = work.path().to_path_buf();
        tokio::task::spawn_blocking(move || oras(&w, push)).await.unwrap();

        // 4 and 2 PATCHes: each file is one composed object; the config one segment.
        let keys = bucket.keys().await;
        assert_eq!(keys.len(), 3, "one object per blob: {keys:?}");
        assert_eq!(keys.iter().filter(|k| k.contains("/composed-")).count(), 2, "{keys:?}");
        for (_, bytes) in &files {
            let r = n.get(&format!("/v2/clients/art/blobs/{}", digest(bytes))).await;
            assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT, "the pull below goes through the 307");
        }

        let out = work.path().join("out");
        let pull = json!({ "op": "pull", "host": host, "target": target, "outdir": out });
        let w = work.path().to_path_buf();
        tokio::task::spawn_blocking(move || oras(&w, pull)).await.unwrap();
        for (name, bytes) in &files {
            let got = std::fs::read(out.join(name)).unwrap_or_else(|e| panic!("oras-py did not pull {name}: {e}"));
            assert!(&got == bytes, "{name} pulled through the redirect differs from what was pushed");
        }
    });
}

fn skopeo_copy_out(endpoint: &str) {
    block_on(async {
        let bucket = TempBucket::create(endpoint).await;
        let n =
            redirecting_node(&bucket, Arc::new(ManualClock::new(SystemTime::now())), Duration::from_secs(300)).await;
        // An uncompressed layer, so its diff_id is its digest; pushed in three PATCHes.
        let parts = [pattern(150_000, 21), pattern(40_000, 22), pattern(999, 23)];
        let layer = parts.concat();
        let ld = n.push_chunked("clients/img", &[&parts[0], &parts[1], &parts[2]]).await;
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux", "rootfs": { "type": "layers", "diff_ids": [ld] },
        }))
        .unwrap();
        let cd = n.push_monolithic("clients/img", &config).await;
        let manifest = n
            .put_image(
                "clients/img",
                "v1",
                (&cd, config.len()),
                (&ld, layer.len()),
                "application/vnd.oci.image.layer.v1.tar",
            )
            .await;
        let r = n.get(&format!("/v2/clients/img/blobs/{ld}")).await;
        assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT, "the copy below goes through the 307");

        let work = tempfile::tempdir().unwrap();
        let dest = work.path().join("dir");
        let src = format!("docker://{}/clients/img:v1", n.base.trim_start_matches("http://"));
        let policy = work.path().join("policy.json");
        std::fs::write(&policy, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
        let mut cmd = Command::new("skopeo");
        cmd.arg("--policy")
            .arg(&policy)
            .args(["copy", "--src-tls-verify=false", &src])
            .arg(format!("dir:{}", dest.display()));
        tokio::task::spawn_blocking(move || run(&mut cmd, "install skopeo (apt-get install skopeo)")).await.unwrap();
        for (d, bytes) in [(&ld, &layer), (&cd, &config)] {
            let hex = d.trim_start_matches("sha256:");
            let got = std::fs::read(dest.join(hex)).unwrap_or_else(|e| panic!("skopeo did not copy {d}: {e}"));
            assert!(&got == bytes, "{d} copied through the redirect differs from what was pushed");
        }
        assert_eq!(std::fs::read(dest.join("manifest.json")).unwrap(), manifest);
    });
}
