//! Password checks under load, on the real binary: a burst of logins from many addresses
//! (each under its own limit) runs its argon2id checks a bounded number at a time, so the
//! server's peak memory stays near that bound instead of one hash's memory per login.

use std::time::Duration;

use reqwest::StatusCode;

use crate::support::*;

/// Peak resident memory of `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM").to_string();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_logins_holds_at_most_the_configured_hashes_in_memory() {
    let (root, data) = workdir();
    // Production parameters: about 19 MiB per check.
    let hash = cairn::auth::hash_password("the-password").unwrap();
    let config = root.path().join("cairn.toml");
    let toml = format!(
        "[auth]\nconcurrent_password_checks = 2\n[[auth.users]]\nname = \"bob\"\npassword_hash = \"{hash}\"\nroles = [\"reader\"]\n"
    );
    std::fs::write(&config, toml).unwrap();
    let srv = Server::start_with(&data, Some(&config), &[]).await;
    assert_eq!(client().get(srv.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    let before = peak_rss_kib(srv.pid());

    // 40 addresses, one wrong password each: no limit stops them, only the gate.
    let clients: Vec<reqwest::Client> = (1..=40)
        .map(|i| {
            let ip: std::net::IpAddr = format!("127.0.3.{i}").parse().unwrap();
            reqwest::Client::builder().no_proxy().local_address(ip).build().unwrap()
        })
        .collect();
    let burst = clients.iter().enumerate().map(|(i, c)| {
        c.get(srv.url("/token")).query(&[("service", "cairn")]).basic_auth("bob", Some(format!("guess-{i}"))).send()
    });
    let answers = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(burst))
        .await
        .expect("the burst was not answered within 60 s");
    for r in answers {
        assert_eq!(r.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    let grew_mib = peak_rss_kib(srv.pid()).saturating_sub(before) / 1024;
    eprintln!("peak RSS grew by {grew_mib} MiB during 40 simultaneous logins");
    // Two checkers hold ~38 MiB; a hash's memory per login would be ~760 MiB.
    assert!(grew_mib < 100, "peak memory grew by {grew_mib} MiB during the burst");
}
