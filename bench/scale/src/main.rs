//! Scale figure for a running registry (issue 14 item 6): seeds it, in steps, up to
//! 100,000 repositories and 1,000,000 tags, and at each step (10k, 100k, 1M tags by default)
//! reports what a request costs and what the offline passes cost, so the figures show how
//! cost grows with the registry's size. Starts nothing itself (`run.sh` beside it does);
//! see bench/README.md. A benchmark, not a test: it prints figures and asserts only that
//! every answer was right.
//!
//! Shape of the seeded registry: repositories `scale/r000000`, `scale/r000001`, … each with
//! `--tags-per-repo` tags (10) on half as many distinct image manifests: each manifest is
//! pushed once by tag `v1.<k>` with a second tag `b<k>-<hex>` in `?tag=` (spec main), as CI
//! systems push a version and a build tag. Every manifest names one shared config and
//! layer blob, mounted into each repository (`?mount=&from=`), so links grow with the
//! repositories while the blob store stays small.
//!
//! At each step, with `--concurrency` (64) keep-alive connections, each for `--secs` (5):
//! - `HEAD hot`: HEAD by tag over 500 tags of the first 50 repositories (the read cache's case);
//! - `HEAD any`: HEAD by a tag drawn uniformly from every tag seeded so far (mostly misses);
//! - `tags list`: GET `/v2/<repo>/tags/list` of a random repository;
//! - `catalog page`: GET `/v2/_catalog?n=100&last=<random repository>`;
//!
//! then, one run each, by the `cairn` binary beside the server (`--cairn`, `--config`):
//! - `cairn retention plan --json` (stdout discarded), `cairn gc`, `cairn audit verify`;
//!   wall time and the command's peak RSS.
//!
//! Usage: cairn-scale --url URL --cairn BIN --config FILE [--pid PID] [--steps 10000,100000,1000000]
//!        [--tags-per-repo 10] [--concurrency 64] [--secs 5] [--seeded TAGS]
//!
//! `--seeded TAGS` measures a registry an earlier run already seeded to TAGS (give the same
//! `--tags-per-repo`), for example the same data directory after a new build.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

struct Args {
    url: String,
    pid: Option<u32>,
    cairn: Option<String>,
    config: Option<String>,
    steps: Vec<usize>,
    tags_per_repo: usize,
    concurrency: usize,
    secs: f64,
    seeded: usize,
}

fn args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:5000".into(),
        pid: None,
        cairn: None,
        config: None,
        steps: vec![10_000, 100_000, 1_000_000],
        tags_per_repo: 10,
        concurrency: 64,
        secs: 5.0,
        seeded: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| die(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--url" => a.url = value().trim_end_matches('/').to_string(),
            "--pid" => a.pid = Some(value().parse().unwrap_or_else(|_| die("--pid takes a number"))),
            "--cairn" => a.cairn = Some(value()),
            "--config" => a.config = Some(value()),
            "--steps" => {
                a.steps = value()
                    .split(',')
                    .map(|s| s.trim().parse().unwrap_or_else(|_| die("--steps takes numbers, comma-separated")))
                    .collect()
            }
            "--tags-per-repo" => {
                a.tags_per_repo = value().parse().unwrap_or_else(|_| die("--tags-per-repo takes a number"))
            }
            "--concurrency" => a.concurrency = value().parse().unwrap_or_else(|_| die("--concurrency takes a number")),
            "--secs" => a.secs = value().parse().unwrap_or_else(|_| die("--secs takes seconds")),
            "--seeded" => a.seeded = value().parse().unwrap_or_else(|_| die("--seeded takes a number of tags")),
            "-h" | "--help" => {
                println!(
                    "cairn-scale --url URL --cairn BIN --config FILE [--pid PID] [--steps 10000,100000,1000000] \
                     [--tags-per-repo 10] [--concurrency 64] [--secs 5] [--seeded TAGS]"
                );
                std::process::exit(0);
            }
            other => die(&format!("unknown argument {other}")),
        }
    }
    if a.tags_per_repo < 2 || !a.tags_per_repo.is_multiple_of(2) {
        die("--tags-per-repo must be even and at least 2 (each manifest carries two tags)");
    }
    if a.steps.windows(2).any(|w| w[0] >= w[1]) || a.steps.is_empty() {
        die("--steps must be increasing");
    }
    if a.steps[0] < a.seeded {
        die("--steps must not start below --seeded");
    }
    a
}

fn die(msg: &str) -> ! {
    eprintln!("cairn-scale: {msg}");
    std::process::exit(2)
}

#[path = "../../common/mod.rs"]
mod common;
use common::{Client, digest, run_each};

/// `VmRSS` and `VmHWM` of `pid` in MiB.
fn memory(pid: Option<u32>) -> Option<(f64, f64)> {
    common::memory_kib(pid).map(|(rss, hwm)| (rss as f64 / 1024.0, hwm as f64 / 1024.0))
}

/// A small deterministic generator (xorshift64*), so the bench needs no `rand`.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

fn repo_name(i: usize) -> String {
    format!("scale/r{i:06}")
}

/// The second tag of manifest `k` of repository `i`.
fn build_tag(i: usize, k: usize) -> String {
    let h = Sha256::digest(format!("{i}/{k}").as_bytes());
    format!("b{k}-{}", hex::encode(&h[..4]))
}

/// Tag number `t` (0..tags_per_repo) of repository `i`: even ones are `v1.<k>`, odd ones
/// the build tag of the same manifest.
fn tag_name(i: usize, t: usize) -> String {
    if t.is_multiple_of(2) { format!("v1.{}", t / 2) } else { build_tag(i, t / 2) }
}

struct Seed {
    config: String,
    layer: String,
    config_len: usize,
    layer_len: usize,
}

impl Seed {
    fn manifest(&self, i: usize, k: usize) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}],"annotations":{{"org.opencontainers.image.revision":"{i}.{k}"}}}}"#,
            self.config, self.config_len, self.layer, self.layer_len
        )
        .into_bytes()
    }
}

/// Seeding calls on the shared client.
trait Seeding {
    async fn mount(&self, repo: &str, digest: &str, from: &str);
    async fn seed_repo(&self, seed: &Seed, i: usize, tags_per_repo: usize);
}

impl Seeding for Client {
    async fn mount(&self, repo: &str, digest: &str, from: &str) {
        let r = self
            .req(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"))
            .send()
            .await
            .expect("POST mount");
        assert_eq!(r.status(), 201, "mount {digest} into {repo}: {}", r.status());
    }

    /// Links the shared blobs into repository `i` and pushes its manifests.
    async fn seed_repo(&self, seed: &Seed, i: usize, tags_per_repo: usize) {
        let repo = repo_name(i);
        if i > 0 {
            self.mount(&repo, &seed.config, &repo_name(0)).await;
            self.mount(&repo, &seed.layer, &repo_name(0)).await;
        }
        for k in 0..tags_per_repo / 2 {
            let body = seed.manifest(i, k);
            let want = digest(&body);
            let r = self
                .req(reqwest::Method::PUT, &format!("/v2/{repo}/manifests/v1.{k}?tag={}", build_tag(i, k)))
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(body)
                .send()
                .await
                .expect("PUT manifest");
            assert_eq!(r.status(), 201, "PUT {repo}:v1.{k}: {}", r.status());
            let got = r.headers().get("docker-content-digest").and_then(|v| v.to_str().ok());
            assert_eq!(got, Some(want.as_str()), "PUT {repo}:v1.{k}");
        }
    }
}

/// A closed-loop load: `c` connections each send `request(rng)` and check its answer, for
/// `secs`. Returns (requests per second, p50 ms, p99 ms).
async fn load<F, Fut>(c: usize, secs: f64, request: F) -> (f64, f64, f64)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let request = Arc::new(request);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..c {
        let request = request.clone();
        tasks.spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                request(rng.below(usize::MAX)).await;
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            lat
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.expect("a load worker panicked"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied();
    (all.len() as f64 / elapsed, pct(0.50).unwrap_or(f64::NAN), pct(0.99).unwrap_or(f64::NAN))
}

/// Runs `cairn <args> --config <config>` to completion with stdout discarded; returns its
/// wall time in seconds and peak RSS in MiB (from `wait4`).
fn command(cairn: &str, config: &str, args: &[&str]) -> (f64, f64) {
    let start = Instant::now();
    // Reaped by `wait4` below (for its rusage), not by `Child::wait`.
    #[allow(clippy::zombie_processes)]
    let child = std::process::Command::new(cairn)
        .args(args)
        .args(["--config", config])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| die(&format!("cannot run {cairn}: {e}")));
    let pid = child.id() as libc::pid_t;
    // Read stderr on a thread so a chatty command cannot block on a full pipe.
    let mut stderr = child.stderr.expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet reaped (std never waits for a dropped `Child`).
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    let err = reader.join().unwrap_or_default();
    if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        die(&format!("`cairn {}` failed (status {status}): {err}", args.join(" ")));
    }
    (secs, usage.ru_maxrss as f64 / 1024.0)
}

fn ms(x: f64) -> String {
    if x < 10.0 { format!("{x:.2}") } else { format!("{x:.1}") }
}

#[tokio::main]
async fn main() {
    let a = args();
    let http = reqwest::Client::builder().pool_max_idle_per_host(a.concurrency).build().unwrap();
    let client = Arc::new(Client { http, url: a.url.clone(), auth: None });
    let per = a.tags_per_repo;
    println!(
        "scale: {} at steps {:?} tags, {per} tags per repository, {} connections, {} s per read load",
        a.url, a.steps, a.concurrency, a.secs
    );

    let config_body = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer_body: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let seed = Arc::new(Seed {
        config: client.push_blob(&repo_name(0), config_body).await,
        layer: client.push_blob(&repo_name(0), &layer_body).await,
        config_len: config_body.len(),
        layer_len: layer_body.len(),
    });

    let mut rows = Vec::new();
    // `--seeded`: the registry already holds this many tags from an earlier run (same shape).
    let mut seeded = a.seeded.div_ceil(per);
    for &step in &a.steps {
        let repos = step.div_ceil(per);
        let (c, s) = (client.clone(), seed.clone());
        let secs = run_each(seeded, repos, a.concurrency, move |i| {
            let (c, s) = (c.clone(), s.clone());
            async move { c.seed_repo(&s, i, per).await }
        })
        .await;
        let pushed = (repos - seeded) * per / 2;
        if pushed > 0 {
            println!(
                "seeded repositories {seeded}..{repos}: {pushed} manifest PUTs in {secs:.1} s ({:.0} /s, {:.0} tags/s)",
                pushed as f64 / secs,
                (pushed * 2) as f64 / secs
            );
        }
        seeded = repos;
        let tags = repos * per;

        let counters = cache_counters(&client).await;
        let c = client.clone();
        let hot = load(a.concurrency, a.secs, move |r| {
            let c = c.clone();
            let (i, t) = ((r / per) % 50.min(repos), r % per);
            async move { head(&c, i, t).await }
        })
        .await;
        let hot_hits = hit_percent(counters, cache_counters(&client).await);
        let counters = cache_counters(&client).await;
        let c = client.clone();
        let any = load(a.concurrency, a.secs, move |r| {
            let c = c.clone();
            let (i, t) = ((r / per) % repos, r % per);
            async move { head(&c, i, t).await }
        })
        .await;
        let any_hits = hit_percent(counters, cache_counters(&client).await);
        let c = client.clone();
        let list = load(a.concurrency, a.secs, move |r| {
            let c = c.clone();
            async move {
                let repo = repo_name(r % repos);
                let resp = c.req(reqwest::Method::GET, &format!("/v2/{repo}/tags/list")).send().await.expect("GET");
                assert_eq!(resp.status(), 200, "tags list {repo}");
                let text = resp.text().await.expect("tags list body");
                assert_eq!(text.matches("\"v1.").count(), per / 2, "tags list {repo}: {text}");
            }
        })
        .await;
        let c = client.clone();
        let catalog = load(a.concurrency, a.secs, move |r| {
            let c = c.clone();
            async move {
                let last = repo_name(r % repos);
                let resp = c
                    .req(reqwest::Method::GET, &format!("/v2/_catalog?n=100&last={last}"))
                    .send()
                    .await
                    .expect("GET catalog");
                assert_eq!(resp.status(), 200, "catalog after {last}");
                let text = resp.text().await.expect("catalog body");
                // The page holds the repositories after `last`: up to 100 of them.
                let want = (repos - 1 - r % repos).min(100);
                assert_eq!(text.matches("scale/r").count(), want, "catalog after {last}: {text}");
            }
        })
        .await;
        let server = memory(a.pid);
        let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!("load average during the reads: {}", loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" "));

        let offline = match (&a.cairn, &a.config) {
            (Some(bin), Some(cfg)) => Some((
                command(bin, cfg, &["retention", "plan", "--json"]),
                command(bin, cfg, &["gc"]),
                command(bin, cfg, &["audit", "verify"]),
            )),
            _ => None,
        };
        let row = Row { tags, repos, hot, any, hits: (hot_hits, any_hits), list, catalog, server, offline };
        println!("{}", row.markdown());
        rows.push(row);
    }

    println!();
    println!("{}", Row::header());
    for r in &rows {
        println!("{}", r.markdown());
    }
}

/// The read cache's manifest hit and miss counters from `/metrics` (0, 0 if unavailable).
async fn cache_counters(c: &Client) -> (f64, f64) {
    let Ok(resp) = c.req(reqwest::Method::GET, "/metrics").send().await else { return (0.0, 0.0) };
    let text = resp.text().await.unwrap_or_default();
    let value = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok()).unwrap_or(0.0);
    (value("cairn_cache_hits_total"), value("cairn_cache_misses_total"))
}

/// The share of manifest reads the read cache answered between two `cache_counters`, in %.
fn hit_percent(before: (f64, f64), after: (f64, f64)) -> f64 {
    let (h, m) = (after.0 - before.0, after.1 - before.1);
    if h + m > 0.0 { 100.0 * h / (h + m) } else { f64::NAN }
}

async fn head(c: &Client, i: usize, t: usize) {
    let tag = tag_name(i, t);
    let repo = repo_name(i);
    let resp = c
        .req(reqwest::Method::HEAD, &format!("/v2/{repo}/manifests/{tag}"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("HEAD");
    assert_eq!(resp.status(), 200, "HEAD {repo}:{tag}");
    assert!(resp.headers().contains_key("docker-content-digest"), "HEAD {repo}:{tag}: no Docker-Content-Digest");
}

type Load = (f64, f64, f64);
/// Wall seconds and peak RSS in MiB of one command.
type Pass = (f64, f64);

struct Row {
    tags: usize,
    repos: usize,
    hot: Load,
    any: Load,
    /// The read cache's hit share during `hot` and `any`, in %.
    hits: (f64, f64),
    list: Load,
    catalog: Load,
    server: Option<(f64, f64)>,
    offline: Option<(Pass, Pass, Pass)>,
}

impl Row {
    fn header() -> String {
        "| tags | repos | HEAD hot /s (p99 ms; cache hits) | HEAD any /s (p99 ms; cache hits) | tags list /s (p99 ms) | catalog page /s (p99 ms) \
         | server RSS / peak MiB | retention plan s (MiB) | gc s (MiB) | audit verify s (MiB) |\n\
         |---|---|---|---|---|---|---|---|---|---|"
            .to_string()
    }

    fn markdown(&self) -> String {
        let l = |x: &Load| format!("{:.0} ({})", x.0, ms(x.2));
        let mem = self.server.map_or("—".to_string(), |(r, h)| format!("{r:.0} / {h:.0}"));
        let off = |x: Pass| format!("{:.2} ({:.0})", x.0, x.1);
        let (plan, gc, verify) = match self.offline {
            Some((p, g, v)) => (off(p), off(g), off(v)),
            None => ("—".into(), "—".into(), "—".into()),
        };
        let h = |x: &Load, hits: f64| format!("{:.0} ({}; {hits:.0}%)", x.0, ms(x.2));
        format!(
            "| {} | {} | {} | {} | {} | {} | {mem} | {plan} | {gc} | {verify} |",
            self.tags,
            self.repos,
            h(&self.hot, self.hits.0),
            h(&self.any, self.hits.1),
            l(&self.list),
            l(&self.catalog)
        )
    }
}
