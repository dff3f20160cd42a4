//! HTTPS served directly (`[server] tls_cert` / `tls_key`) by the real binary, with
//! certificates made here by a private CA (rcgen): HTTP/2 and HTTP/1.1 over TLS, a push and
//! pull, the token realm's scheme, and a renewal picked up on SIGHUP without dropping the
//! open connection; a broken renewal keeps the certificate in use. (Reloading when a file
//! changes is unit-tested in `src/server/tls.rs`; skopeo over TLS is in the client tests.)

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
use reqwest::{Client, StatusCode, Version};

use crate::metrics::{scrape, value};
use crate::support::*;

/// A private CA and a server certificate it signed for `localhost` and 127.0.0.1.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(vec![]).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".into()]).unwrap();
    leaf.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    Pki { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
}

/// Writes the pair in place the way certbot renews: new files renamed over the old ones.
fn install(p: &Pki, dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(dir.join("next.crt"), &p.cert_pem).unwrap();
    std::fs::write(dir.join("next.key"), &p.key_pem).unwrap();
    std::fs::rename(dir.join("next.key"), &key).unwrap();
    std::fs::rename(dir.join("next.crt"), &cert).unwrap();
    (cert, key)
}

/// A client trusting only `ca_pem` (not the system roots).
fn trusting(ca_pem: &str, http1: bool) -> Client {
    let b = Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none());
    let b = if http1 { b.http1_only() } else { b };
    b.build().unwrap()
}

async fn start(root: &Path, p: &Pki, extra: &str) -> Server {
    let (cert, key) = install(p, root);
    let config = root.join("cairn.toml");
    std::fs::write(
        &config,
        format!("[server]\ntls_cert = {:?}\ntls_key = {:?}\n{extra}", cert.display(), key.display()),
    )
    .unwrap();
    Server::start_with(&root.join("data"), Some(&config), &[]).await
}

fn hup(srv: &Server) {
    let ok = std::process::Command::new("kill").args(["-HUP", &srv.pid().to_string()]).status().unwrap();
    assert!(ok.success());
}

#[tokio::test]
async fn https_serves_http2_and_http1_and_the_registry_works_over_it() {
    let (root, _data) = workdir();
    let p = pki();
    let srv = start(root.path(), &p, "").await;
    assert!(srv.base.starts_with("https://"), "{}", srv.base);

    let h2 = trusting(&p.ca_pem, false);
    let r = h2.get(srv.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), Version::HTTP_2, "ALPN offers h2");
    let h1 = trusting(&p.ca_pem, true);
    let r = h1.get(srv.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), Version::HTTP_11);

    // A push and pull over HTTP/2: upload, manifest, blob and manifest back.
    let layer = random_bytes(300_000);
    let digest = push_blob(&h2, &srv, "tls/app", &layer).await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_digest = push_blob(&h2, &srv, "tls/app", config).await;
    let manifest = image_manifest((&config_digest, config.len()), &[(&digest, layer.len())]);
    put_manifest(&h2, &srv, "tls/app", "v1", &manifest).await;
    assert_blob(&h1, &srv, "tls/app", &digest, &layer).await;
    assert_manifest(&h1, &srv, "tls/app", "v1", &manifest).await;

    // A client that does not trust the CA is refused by its own TLS check.
    let untrusting = Client::builder().tls_built_in_root_certs(false).build().unwrap();
    assert!(untrusting.get(srv.url("/v2/")).send().await.is_err());
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = client();
    assert!(plain.get(format!("http://{}/v2/", srv.addr)).send().await.is_err());

    let s = scrape(&h2, &srv).await;
    let not_after = value(&s, "cairn_tls_certificate_not_after_timestamp_seconds", &[]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(not_after > now, "the certificate's expiry is exported: {not_after}");
}

#[tokio::test]
async fn the_token_realm_names_https_when_cairn_serves_tls() {
    let (root, _data) = workdir();
    let p = pki();
    let hash = cairn_hash("secret");
    let users = format!(
        "[[auth.users]]\nname = \"ci\"\npassword_hash = \"{hash}\"\nroles = [\"writer\"]\n\
         [[auth.grants]]\nsubjects = [\"ci\"]\nrepositories = \"**\"\nactions = [\"pull\", \"push\"]\n"
    );
    let srv = start(root.path(), &p, &users).await;
    let r = trusting(&p.ca_pem, false).get(srv.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = header(&r, "www-authenticate");
    assert!(challenge.starts_with(&format!("Bearer realm=\"https://{}/token\"", srv.addr)), "{challenge}");
}

/// `cairn hash-password` for `password` (read from stdin).
fn cairn_hash(password: &str) -> String {
    use std::io::Write;
    let mut child = cairn()
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn sighup_reloads_a_renewed_certificate_without_dropping_open_connections() {
    let (root, _data) = workdir();
    let first = pki();
    let srv = start(root.path(), &first, "").await;
    // One HTTP/2 connection, open before the renewal and kept by the client's pool.
    let old = trusting(&first.ca_pem, false);
    assert_eq!(old.get(srv.url("/v2/")).send().await.unwrap().status(), StatusCode::OK);

    let second = pki();
    install(&second, root.path());
    hup(&srv);
    let renewed = trusting(&second.ca_pem, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A fresh client each time: a new handshake, which sees the certificate in use.
        match trusting(&second.ca_pem, true).get(srv.url("/v2/")).send().await {
            Ok(r) if r.status() == StatusCode::OK => break,
            other => assert!(
                Instant::now() < deadline,
                "the renewed certificate was not served within 10 s of SIGHUP: {other:?}\n{}",
                srv.stderr()
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before still works: it was not dropped (a new one would fail,
    // since this client trusts only the first CA).
    for _ in 0..3 {
        assert_eq!(old.get(srv.url("/v2/")).send().await.unwrap().status(), StatusCode::OK);
    }
    assert!(trusting(&first.ca_pem, true).get(srv.url("/v2/")).send().await.is_err(), "new handshakes use the renewal");

    // A broken renewal (a certificate without its key) keeps the certificate in use.
    let third = pki();
    std::fs::write(root.path().join("tls.crt"), &third.cert_pem).unwrap();
    hup(&srv);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !srv.stderr().contains("TLS certificate not reloaded") {
        assert!(Instant::now() < deadline, "no log line about the failed reload:\n{}", srv.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(srv.stderr().contains("does not belong to the certificate"), "{}", srv.stderr());
    assert_eq!(trusting(&second.ca_pem, true).get(srv.url("/v2/")).send().await.unwrap().status(), StatusCode::OK);
    let s = scrape(&renewed, &srv).await;
    assert_eq!(value(&s, "cairn_tls_reloads_total", &[("result", "ok")]), 1.0);
    assert_eq!(value(&s, "cairn_tls_reloads_total", &[("result", "error")]), 1.0);
}

#[tokio::test]
async fn check_config_names_a_key_that_does_not_match_its_certificate() {
    let (root, _data) = workdir();
    let a = pki();
    let b = pki();
    let (cert, _) = install(&a, root.path());
    let other_key = root.path().join("other.key");
    std::fs::write(&other_key, &b.key_pem).unwrap();
    let config = root.path().join("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ntls_cert = {:?}\ntls_key = {:?}\nmetrics_listen = \"nowhere\"\n",
            cert.display(),
            other_key.display()
        ),
    )
    .unwrap();
    let out = cairn().arg("check-config").arg("--config").arg(&config).output().unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("server.tls_key = {}: does not belong to the certificate", other_key.display())),
        "{said}"
    );
    assert!(said.contains("server.metrics_listen = \"nowhere\" is not an address"), "{said}");
}

#[tokio::test]
async fn metrics_listen_serves_metrics_on_its_own_address_only() {
    let (root, data) = workdir();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = root.path().join("cairn.toml");
    std::fs::write(&config, format!("[server]\nmetrics_listen = \"127.0.0.1:{port}\"\n")).unwrap();
    let srv = Server::start_with(&data, Some(&config), &[]).await;
    let http = client();
    assert_eq!(http.get(srv.url("/metrics")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(http.get(srv.url("/v2/")).send().await.unwrap().status(), StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        match http.get(format!("http://127.0.0.1:{port}/metrics")).send().await {
            Ok(r) if r.status() == StatusCode::OK => break r.text().await.unwrap(),
            other => assert!(Instant::now() < deadline, "no metrics on :{port}: {other:?}\n{}", srv.stderr()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(text.contains("cairn_build_info"), "{text}");
    assert!(text.contains("cairn_http_requests_total{api=\"v2\""), "the registry's requests are counted:\n{text}");
    assert_eq!(
        http.get(format!("http://127.0.0.1:{port}/v2/")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "the metrics address serves nothing else"
    );
}
