//! What the soak and the scale benchmark share (each includes this file with `#[path]`;
//! they are separate Cargo workspaces): digests, a registry client that pushes blobs,
//! a bounded worker pool, and a process's memory from `/proc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of `b`.
pub fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// `VmRSS` and `VmHWM` of `pid` in KiB (`None` without a pid or a readable status).
pub fn memory_kib(pid: Option<u32>) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A registry at `url`, with Basic credentials when `auth` is set.
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
    pub auth: Option<(String, String)>,
}

impl Client {
    /// A request to `path` (which starts with `/`).
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.with_auth(self.http.request(method, format!("{}{path}", self.url)))
    }

    fn with_auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    /// Pushes `body` into `repo` (POST, then PUT `?digest=`); panics unless 202 then 201.
    pub async fn push_blob(&self, repo: &str, body: &[u8]) -> String {
        let d = digest(body);
        let r =
            self.req(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/")).send().await.expect("POST upload");
        assert_eq!(r.status(), 202, "POST upload: {}", r.status());
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        let sep = if loc.contains('?') { '&' } else { '?' };
        let loc = if loc.starts_with('/') { format!("{}{loc}", self.url) } else { loc };
        let put = self.with_auth(self.http.put(format!("{loc}{sep}digest={d}")).body(body.to_vec()));
        let r = put.send().await.expect("PUT upload");
        assert_eq!(r.status(), 201, "PUT upload: {}", r.status());
        d
    }
}

/// Runs `work(i)` for i in `from..to` on `c` tasks; returns the seconds it took.
pub async fn run_each<F, Fut>(from: usize, to: usize, c: usize, work: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(from));
    let work = Arc::new(work);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..c {
        let (next, work) = (next.clone(), work.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= to {
                    return;
                }
                work(i).await;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("a worker panicked");
    }
    start.elapsed().as_secs_f64()
}
