//! Retention and GC (issue 10) over what docker pushed: releases and a moving `prod`, a plan
//! that keeps prod's rollback window, apply, then `cairn gc` with no grace; afterwards every
//! digest the plan kept pulls with docker as the very image that was pushed (same image id,
//! layers verified by docker against their digests), and what it deleted is gone.

use std::process::Command;
use std::time::Duration;

use crate::docker::{LocalImages, docker, import_random_images, inspect, push};
use crate::harness::{ClientTest, Need, note};
use crate::helpers::*;
use cairn_conformance::server::cairn_bin;

pub(crate) const TESTS: &[ClientTest] = &[ClientTest {
    name: "retention_and_gc_keep_every_rollback_target_pullable_with_docker",
    needs: &[Need::Dockerd, Need::Cairn],
    run: retention_and_gc_keep_every_rollback_target_pullable_with_docker,
}];

const T: Duration = Duration::from_secs(180);

const CONFIG: &str = r#"
[[immutability.rules]]
repositories = "**"
tags = ["prod"]
mode = "mutable"

[[retention.policies]]
name = "cd"
repositories = "**"
keep_last = 2
rollback_window = 2
"#;

fn retention_and_gc_keep_every_rollback_target_pullable_with_docker() {
    let cairn = cairn_with_config(CONFIG, "retention policies");
    let reg = &cairn.reg;
    let tmp = tempdir("retention");
    let repo = unique_repo("retention");
    let names: Vec<String> = (1..=5).map(|i| format!("cairn-clients-retention-{}:{i}", unique_suffix())).collect();
    let mut cleanup = LocalImages(names.clone());
    let ids = import_random_images(tmp.path(), &names.iter().map(String::as_str).collect::<Vec<_>>(), &mut cleanup);
    // v1..v5 (immutable releases), and prod moved v1 -> v2 -> v3 (its window of 2: v3, v2).
    let mut digests = Vec::new();
    for (i, local) in names.iter().enumerate() {
        let remote = format!("{}/{repo}:v{}", reg.host, i + 1);
        cleanup.0.push(remote.clone());
        run(docker().args(["tag", local, &remote]), T);
        digests.push(push(&remote));
    }
    let prod = format!("{}/{repo}:prod", reg.host);
    cleanup.0.push(prod.clone());
    for local in &names[..3] {
        run(docker().args(["tag", local, &prod]), T);
        push(&prod);
    }

    let plan = get_api_json(reg, "/api/v1/retention/plan");
    note(format!("plan: {plan}"));
    let manifests = plan["repositories"][0]["manifests"].as_array().expect("manifests in the plan").clone();
    let entry = |d: &str| manifests.iter().find(|m| m["digest"] == d).unwrap_or_else(|| panic!("{d} in {plan}"));
    let decision = |i: usize| entry(&digests[i])["decision"].as_str().unwrap().to_string();
    assert_eq!(decision(0), "delete", "v1: outside every window and rule: {}", entry(&digests[0]));
    for i in [1, 2] {
        assert_eq!(decision(i), "keep", "v{}: {}", i + 1, entry(&digests[i]));
        let reasons = entry(&digests[i])["reasons"].to_string();
        assert!(reasons.contains("rollback window of prod"), "v{} kept for prod's window: {reasons}", i + 1);
    }
    for i in [3, 4] {
        assert_eq!(decision(i), "keep", "v{}: {}", i + 1, entry(&digests[i]));
    }

    let resp = http().post(format!("{}/api/v1/retention/apply", reg.base)).send().expect("POST apply");
    assert_eq!(resp.status(), reqwest::StatusCode::OK, "{}", resp.text().unwrap_or_default());
    let gc = run(
        Command::new(cairn_bin())
            .args(["gc", "--grace", "0s", "--config"])
            .arg(&cairn.config)
            .arg("--data-dir")
            .arg(&cairn.data_dir),
        T,
    );
    note(format!("cairn gc: {}", gc.stdout.trim()));
    assert!(gc.stdout.contains("freed"), "{}", gc.stdout);

    // Pull everything again from the registry alone.
    drop(cleanup);
    let mut cleanup = LocalImages(vec![]);
    for i in 1..5 {
        let by_digest = format!("{}/{repo}@{}", reg.host, digests[i]);
        cleanup.0.push(by_digest.clone());
        run(docker().arg("pull").arg(&by_digest), T);
        assert_eq!(inspect(&by_digest).0, ids[i], "v{} pulls as the image that was pushed", i + 1);
    }
    let prod_now = run(docker().arg("pull").arg(&prod), T);
    cleanup.0.push(prod.clone());
    assert_eq!(inspect(&prod).0, ids[2], "prod still pulls v3: {}", prod_now.stdout);
    let gone = format!("{}/{repo}@{}", reg.host, digests[0]);
    let out = try_run(docker().arg("pull").arg(&gone), T);
    assert!(!out.success(), "v1 was deleted by retention, yet it pulls:\n{}", out.stdout);
}
