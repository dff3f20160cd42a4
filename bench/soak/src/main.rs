//! Soak figure for a running registry: pushes one small image, puts it under many distinct
//! tags, resolves every tag with HEAD (twice), and prints the server's resident memory
//! (`VmRSS`) and peak (`VmHWM`, from `/proc/<pid>/status`) before and after, with the rates.
//! Starts nothing itself; see bench/README.md.
//!
//! Usage: cairn-soak --url http://127.0.0.1:5000 --pid <server pid> [--tags 100000]
//!        [--repo soak/app] [--concurrency 32] [--user NAME --password SECRET]

use std::sync::Arc;

struct Args {
    url: String,
    pid: Option<u32>,
    tags: usize,
    repo: String,
    concurrency: usize,
    auth: Option<(String, String)>,
}

fn args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:5000".into(),
        pid: None,
        tags: 100_000,
        repo: "soak/app".into(),
        concurrency: 32,
        auth: None,
    };
    let mut user = None;
    let mut password = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| die(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--url" => a.url = value().trim_end_matches('/').to_string(),
            "--pid" => a.pid = Some(value().parse().unwrap_or_else(|_| die("--pid takes a number"))),
            "--tags" => a.tags = value().parse().unwrap_or_else(|_| die("--tags takes a number")),
            "--repo" => a.repo = value(),
            "--concurrency" => a.concurrency = value().parse().unwrap_or_else(|_| die("--concurrency takes a number")),
            "--user" => user = Some(value()),
            "--password" => password = Some(value()),
            "-h" | "--help" => {
                println!(
                    "cairn-soak --url URL --pid PID [--tags N] [--repo NAME] [--concurrency N] [--user U --password P]"
                );
                std::process::exit(0);
            }
            other => die(&format!("unknown argument {other}")),
        }
    }
    a.auth = user.zip(password);
    a
}

fn die(msg: &str) -> ! {
    eprintln!("cairn-soak: {msg}");
    std::process::exit(2)
}

#[path = "../../common/mod.rs"]
mod common;
use common::{Client, digest, run_each};

/// `VmRSS` and `VmHWM` of `pid` in KiB.
fn memory(pid: Option<u32>) -> Option<(u64, u64)> {
    common::memory_kib(pid)
}

fn show_memory(when: &str, pid: Option<u32>) {
    match memory(pid) {
        Some((rss, hwm)) => println!(
            "{when}: server RSS {:.1} MiB, peak RSS (VmHWM) {:.1} MiB",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        ),
        None => println!("{when}: server memory unknown (give --pid of a local server)"),
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let http = reqwest::Client::builder().pool_max_idle_per_host(a.concurrency).build().unwrap();
    let client = Arc::new(Client { http, url: a.url.clone(), auth: a.auth.clone() });
    println!("soak: {} tags in {} at {}, {} at once", a.tags, a.repo, a.url, a.concurrency);
    show_memory("before", a.pid);

    let repo = a.repo.clone();
    let config = client.push_blob(&repo, br#"{"architecture":"amd64","os":"linux"}"#).await;
    let layer_bytes: Vec<u8> = (0..1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let layer = client.push_blob(&repo, &layer_bytes).await;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":37}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer}","size":1024}}]}}"#
    );
    let manifest_digest = digest(manifest.as_bytes());
    let body = Arc::new(manifest.into_bytes());

    let (c, r, b) = (client.clone(), repo.clone(), body.clone());
    let secs = run_each(0, a.tags, a.concurrency, move |i| {
        let (c, r, b) = (c.clone(), r.clone(), b.clone());
        async move {
            let resp = c
                .req(reqwest::Method::PUT, &format!("/v2/{r}/manifests/soak-{i}"))
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(b.to_vec())
                .send()
                .await
                .expect("PUT manifest");
            assert_eq!(resp.status(), 201, "PUT manifest soak-{i}: {}", resp.status());
        }
    })
    .await;
    println!("pushed {} tags in {secs:.1} s ({:.0} /s)", a.tags, a.tags as f64 / secs);
    show_memory("after pushing", a.pid);

    for round in 1..=2 {
        let (c, r, want) = (client.clone(), repo.clone(), manifest_digest.clone());
        let secs = run_each(0, a.tags, a.concurrency, move |i| {
            let (c, r, want) = (c.clone(), r.clone(), want.clone());
            async move {
                let resp =
                    c.req(reqwest::Method::HEAD, &format!("/v2/{r}/manifests/soak-{i}")).send().await.expect("HEAD");
                assert_eq!(resp.status(), 200, "HEAD soak-{i}: {}", resp.status());
                let got = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok());
                assert_eq!(got, Some(want.as_str()), "HEAD soak-{i}");
            }
        })
        .await;
        println!("resolved {} tags with HEAD (round {round}) in {secs:.1} s ({:.0} /s)", a.tags, a.tags as f64 / secs);
        show_memory(&format!("after HEAD round {round}"), a.pid);
    }

    if let Ok(resp) = client.req(reqwest::Method::GET, "/metrics").send().await
        && let Ok(text) = resp.text().await
    {
        for line in text.lines().filter(|l| l.starts_with("cairn_cache_")) {
            println!("{line}");
        }
    }
}
