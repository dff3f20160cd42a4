//! The open-file limit and the connection cap, on the real binary: started with a low
//! soft limit (as a shell or service manager may hand it over), Cairn raises it to the
//! hard limit, so a few hundred idle sockets do not stop service; when the hard limit
//! itself is low, the cap shrinks to fit it, says so, and idle sockets are closed to make
//! room for new clients.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;

use crate::support::*;

/// Starts the child with RLIMIT_NOFILE = (soft, hard).
fn nofile(soft: u64, hard: u64) -> impl FnOnce(&mut Command) {
    move |cmd| {
        // SAFETY: setrlimit is async-signal-safe and the closure allocates nothing.
        unsafe {
            cmd.pre_exec(move || rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard));
        }
    }
}

/// Opens `n` connections that never send a byte.
fn idle_sockets(srv: &Server, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| TcpStream::connect(srv.addr).expect("connect")).collect()
}

async fn served_within(srv: &Server, within: Duration) -> StatusCode {
    let r = tokio::time::timeout(within, client().get(srv.url("/v2/")).send()).await;
    let r = r.unwrap_or_else(|_| panic!("GET /v2/ not answered within {within:?}; log:\n{}", srv.stderr()));
    r.expect("GET /v2/").status()
}

#[tokio::test]
async fn a_low_inherited_soft_limit_is_raised_so_idle_sockets_do_not_stop_service() {
    let (_root, data) = workdir();
    let srv = Server::start_prepared(&data, None, &[], nofile(256, 4096)).await;
    let _idle = idle_sockets(&srv, 300);
    assert_eq!(served_within(&srv, Duration::from_secs(5)).await, StatusCode::OK);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", srv.pid())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_string();
    assert_eq!(line.split_whitespace().nth(3), Some("4096"), "soft limit not raised: {line}");
}

#[tokio::test]
async fn a_low_hard_limit_shrinks_the_cap_and_idle_sockets_make_room() {
    let (_root, data) = workdir();
    let srv = Server::start_prepared(&data, None, &[], nofile(256, 256)).await;
    let _idle = idle_sockets(&srv, 300);
    assert_eq!(served_within(&srv, Duration::from_secs(10)).await, StatusCode::OK);
    let log = srv.stderr();
    assert!(log.contains("server.max_connections lowered to 96"), "no line about the lowered cap:\n{log}");
    assert!(log.contains("connection limit reached"), "no line about the cap being hit:\n{log}");
}
