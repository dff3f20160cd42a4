//! Table tests of the retention decisions: every reason string, windows, referrers, indexes,
//! and that the same state gives the same plan.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

/// 2026-11-01T00:00:00Z.
const T0: u64 = 1_793_491_200;
const DAY: u64 = 86_400;

fn at(days: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0 + days * DAY)
}

fn dg(name: &str) -> Digest {
    Digest::of(name.as_bytes())
}

fn m(name: &str, pushed: u64) -> ManifestState {
    ManifestState {
        digest: dg(name),
        pushed_at: at(pushed),
        lost_tag_at: None,
        size: 100,
        children: vec![],
        subject: None,
        blobs: vec![(dg(&format!("{name}-layer")), 1000), (dg("shared-config"), 10)],
        last_pulled: None,
    }
}

fn t(name: &str, target: &str, set: u64, immutable: bool, history: &[&str]) -> TagState {
    let mut h: Vec<Digest> = vec![dg(target)];
    h.extend(history.iter().map(|x| dg(x)));
    TagState { tag: Tag::parse(name).unwrap(), digest: dg(target), set_at: at(set), immutable, history: h }
}

fn ref_tag(subject: &str, suffix: &str) -> String {
    format!("sha256-{}{suffix}", dg(subject).hex())
}

type Decisions = BTreeMap<String, (Decision, Vec<String>)>;

/// Tag decisions by tag, manifest decisions by the name their digest was made from.
fn decide(policy: &Policy, state: &RepoState, now: SystemTime, names: &[&str]) -> (Decisions, Decisions) {
    let p = plan(policy, "apps/web", state, now);
    let tags = p.tags.iter().map(|e| (e.tag.clone(), (e.decision, e.reasons.clone()))).collect();
    let by_digest: BTreeMap<String, &str> = names.iter().map(|n| (dg(n).to_string(), *n)).collect();
    let manifests = p
        .manifests
        .iter()
        .map(|e| {
            (
                by_digest.get(&e.digest).map(|n| n.to_string()).unwrap_or(e.digest.clone()),
                (e.decision, e.reasons.clone()),
            )
        })
        .collect();
    (tags, manifests)
}

fn keep(r: &[String]) -> (Decision, Vec<String>) {
    (Decision::Keep, r.to_vec())
}

fn del(r: &[String]) -> (Decision, Vec<String>) {
    (Decision::Delete, r.to_vec())
}

fn check(got: &Decisions, want: Vec<(&str, (Decision, Vec<String>))>) {
    for (name, w) in want {
        assert_eq!(got.get(name), Some(&w), "{name}: all decisions {got:#?}");
    }
}

#[test]
fn days_and_spans() {
    assert_eq!(day(at(0)), "2026-11-01");
    assert_eq!(day(at(31)), "2026-12-02");
    assert_eq!(span(Duration::from_secs(30 * DAY)), "30d");
    assert_eq!(span(Duration::from_secs(7200)), "2h");
    assert_eq!(span(Duration::from_secs(90)), "90s");
    assert_eq!(span(Duration::from_secs(120)), "2m");
    let s = ref_tag("x", ".sig");
    assert_eq!(referrer_tag_subject(&s), Some(dg("x")));
    assert_eq!(referrer_tag_subject("v1"), None);
}

#[test]
fn tag_rules_each_give_their_reason() {
    let mut policy = Policy::everything(0).with_keep_tags(&["v1*", "latest"]);
    policy.keep_last = Some(1);
    policy.keep_within = Some(Duration::from_secs(30 * DAY));
    policy.keep_pulled_within = Some(Duration::from_secs(7 * DAY));
    let mut ms = vec![m("ma", 0), m("mb", 0), m("mc", 0), m("md", 0), m("me", 0), m("mf", 0)];
    ms[1].last_pulled = Some(at(97));
    ms[3].last_pulled = Some(at(80));
    ms[4].last_pulled = Some(at(80));
    let state = RepoState {
        tags: vec![
            t("v1.0", "ma", 0, true, &[]),
            t("v2", "mb", 95, true, &[]),
            t("v3", "mc", 99, true, &[]),
            t("v4", "md", 50, true, &[]),
            t("latest", "md", 40, false, &[]),
            t("v5", "me", 20, true, &[]),
            t("v6", "mf", 10, true, &[]),
        ],
        manifests: ms,
    };
    let names = ["ma", "mb", "mc", "md", "me", "mf"];
    let (tags, manifests) = decide(&policy, &state, at(100), &names);
    let s = |x: &str| x.to_string();
    let (d50, d80, d95, d97, d99) = (day(at(50)), day(at(80)), day(at(95)), day(at(97)), day(at(99)));
    check(
        &tags,
        vec![
            ("v3", keep(&[s("kept: among the last 1 pushed, 1 of 1"), format!("kept: pushed {d99}, within 30d")])),
            ("v2", keep(&[format!("kept: pushed {d95}, within 30d"), format!("kept: pulled {d97}, within 7d")])),
            ("v1.0", keep(&[s("kept: matches keep_tags \"v1*\"")])),
            ("latest", keep(&[s("kept: matches keep_tags \"latest\"")])),
            (
                "v4",
                del(&[
                    s("delete: not among the last 1 pushed"),
                    format!("delete: pushed {d50}, older than 30d"),
                    s("delete: matches no keep_tags glob"),
                    format!("delete: last pulled {d80}, not within 7d"),
                ]),
            ),
            (
                "v6",
                del(&[
                    s("delete: not among the last 1 pushed"),
                    format!("delete: pushed {}, older than 30d", day(at(10))),
                    s("delete: matches no keep_tags glob"),
                    s("delete: never pulled, not within 7d"),
                ]),
            ),
        ],
    );
    check(
        &manifests,
        vec![
            ("ma", keep(&[s("kept: tagged v1.0")])),
            ("mb", keep(&[s("kept: tagged v2"), format!("kept: pulled {d97}, within 7d")])),
            ("mc", keep(&[s("kept: tagged v3")])),
            // Deleting v4 does not delete latest, nor the manifest latest points at.
            ("md", keep(&[s("kept: tagged latest")])),
            ("me", del(&[s("delete: its tag v5 is deleted"), format!("delete: last pulled {d80}, not within 7d")])),
            ("mf", del(&[s("delete: its tag v6 is deleted"), s("delete: never pulled, not within 7d")])),
        ],
    );
    let p = plan(&policy, "apps/web", &state, at(100));
    assert_eq!(
        (p.summary.tags_kept, p.summary.tags_deleted, p.summary.manifests_kept, p.summary.manifests_deleted),
        (4, 3, 4, 2)
    );
    // Two bodies and two layers; the shared config stays in use.
    assert_eq!(p.summary.bytes, 2 * 100 + 2 * 1000);
}

#[test]
fn rollback_windows_and_releases() {
    let mut policy = Policy::everything(2);
    policy.keep_last = Some(1);
    let state = RepoState {
        tags: vec![
            t("v1", "r1", 1, true, &[]),
            t("v2", "r2", 2, true, &[]),
            t("v3", "r3", 3, true, &[]),
            t("prod", "r3", 4, false, &["r2", "r3", "r1"]),
        ],
        manifests: vec![m("r1", 1), m("r2", 2), m("r3", 3)],
    };
    let names = ["r1", "r2", "r3"];
    let (tags, manifests) = decide(&policy, &state, at(100), &names);
    let s = |x: &str| x.to_string();
    check(
        &tags,
        vec![
            ("prod", keep(&[s("kept: rollback window of prod, 1 of 2"), s("kept: among the last 1 pushed, 1 of 1")])),
            ("v3", keep(&[s("kept: one of the last 2 releases, 1 of 2")])),
            ("v2", keep(&[s("kept: one of the last 2 releases, 2 of 2")])),
            ("v1", del(&[s("delete: not among the last 1 pushed")])),
        ],
    );
    check(
        &manifests,
        vec![
            ("r3", keep(&[s("kept: tagged prod"), s("kept: tagged v3"), s("kept: rollback window of prod, 1 of 2")])),
            ("r2", keep(&[s("kept: tagged v2"), s("kept: rollback window of prod, 2 of 2")])),
            ("r1", del(&[s("delete: its tag v1 is deleted")])),
        ],
    );
    // A wider window reaches r1 (history r3, r2, r3, r1: distinct digests r3, r2, r1), and v1
    // is one of the last 3 releases.
    policy.rollback_window = 3;
    let (tags, manifests) = decide(&policy, &state, at(100), &names);
    check(&tags, vec![("v1", keep(&[s("kept: one of the last 3 releases, 3 of 3")]))]);
    check(&manifests, vec![("r1", keep(&[s("kept: tagged v1"), s("kept: rollback window of prod, 3 of 3")]))]);
    // No windows: the mutable tag follows the rules like any other.
    policy.rollback_window = 0;
    policy.keep_last = Some(2);
    let (tags, _) = decide(&policy, &state, at(100), &names);
    check(&tags, vec![("prod", keep(&[s("kept: among the last 2 pushed, 1 of 2")]))]);
    assert_eq!(tags["v2"].0, Decision::Delete);
}

#[test]
fn indexes_referrers_and_untagged_manifests() {
    let mut policy = Policy::everything(0);
    policy.keep_last = Some(1);
    policy.untagged_grace = Some(Duration::from_secs(DAY));
    let mut idx = m("idx", 0);
    idx.children = vec![dg("c1"), dg("c2")];
    let mut idx2 = m("idx2", 0);
    idx2.children = vec![dg("c3")];
    let mut sig = m("sig", 0);
    sig.subject = Some(dg("idx"));
    let mut sig2 = m("sig2", 0);
    sig2.subject = Some(dg("idx2"));
    let loose1 = m("loose1", 9);
    let mut loose2 = m("loose2", 0);
    loose2.lost_tag_at = Some(at(5));
    let (sig_tag, sig2_tag, orphan_tag) = (ref_tag("idx", ".sig"), ref_tag("idx2", ".sig"), ref_tag("missing", ""));
    let state = RepoState {
        tags: vec![
            t("multi", "idx", 9, true, &[]),
            t("old", "idx2", 1, true, &[]),
            t(&sig_tag, "sig", 2, false, &[]),
            t(&sig2_tag, "sig2", 2, false, &[]),
            t(&orphan_tag, "orph", 2, false, &[]),
        ],
        manifests: vec![idx, idx2, m("c1", 0), m("c2", 0), m("c3", 0), sig, sig2, m("orph", 0), loose1, loose2],
    };
    let names = ["idx", "idx2", "c1", "c2", "c3", "sig", "sig2", "orph", "loose1", "loose2"];
    let (tags, manifests) = decide(&policy, &state, at(10), &names);
    let s = |x: &str| x.to_string();
    let (idx_d, idx2_d) = (dg("idx"), dg("idx2"));
    check(
        &tags,
        vec![
            ("multi", keep(&[s("kept: among the last 1 pushed, 1 of 1")])),
            ("old", del(&[s("delete: not among the last 1 pushed")])),
            (sig_tag.as_str(), keep(&[format!("kept: referrer tag of {idx_d}, which is kept")])),
            (sig2_tag.as_str(), del(&[format!("delete: referrer tag of {idx2_d}, which is deleted")])),
            (
                orphan_tag.as_str(),
                keep(&[format!("kept: referrer tag whose subject {} is not in this repository", dg("missing"))]),
            ),
        ],
    );
    check(
        &manifests,
        vec![
            ("idx", keep(&[s("kept: tagged multi")])),
            ("c1", keep(&[format!("kept: listed by index {idx_d}, which is kept")])),
            ("c2", keep(&[format!("kept: listed by index {idx_d}, which is kept")])),
            ("sig", keep(&[format!("kept: referrer of {idx_d}, which is kept"), format!("kept: tagged {sig_tag}")])),
            ("orph", keep(&[format!("kept: tagged {orphan_tag}")])),
            ("idx2", del(&[s("delete: its tag old is deleted")])),
            ("c3", del(&[format!("delete: listed only by index {idx2_d}, which is deleted")])),
            (
                "sig2",
                del(&[
                    format!("delete: its tag {sig2_tag} is deleted"),
                    format!("delete: referrer of {idx2_d}, which is deleted"),
                ]),
            ),
            ("loose1", keep(&[format!("kept: untagged since {}, within untagged_grace 1d", day(at(9)))])),
            ("loose2", del(&[format!("delete: untagged since {}, longer than untagged_grace 1d", day(at(5)))])),
        ],
    );
    // Without untagged_grace untagged manifests stay; without tag rules every tag stays.
    let policy = Policy::everything(0);
    let (tags, manifests) = decide(&policy, &state, at(10), &names);
    check(&manifests, vec![("loose2", keep(&[s("kept: untagged, and the policy sets no untagged_grace")]))]);
    check(
        &tags,
        vec![(
            "old",
            keep(&[s("kept: the policy has no tag rule (keep_last, keep_within, keep_tags, keep_pulled_within)")]),
        )],
    );
}

#[test]
fn the_same_state_gives_the_same_plan_whatever_the_order() {
    let mut policy = Policy::everything(2);
    policy.keep_last = Some(2);
    policy.untagged_grace = Some(Duration::from_secs(DAY));
    let mut state = RepoState {
        tags: (0..8).map(|i| t(&format!("v{i}"), &format!("m{i}"), i, i % 2 == 0, &[])).collect(),
        manifests: (0..10).map(|i| m(&format!("m{i}"), i)).collect(),
    };
    state.tags.push(t("prod", "m3", 9, false, &["m1", "m5"]));
    let first = plan(&policy, "r", &state, at(30));
    state.tags.reverse();
    state.manifests.reverse();
    assert_eq!(plan(&policy, "r", &state, at(30)), first);
    let json = serde_json::to_value(&first).unwrap();
    assert_eq!(json["tags"][0]["decision"], "keep", "{json}");
    assert!(json["manifests"][0]["reasons"].is_array());
}

#[test]
fn windows_are_distinct_digests_newest_first() {
    let h = [dg("a"), dg("b"), dg("a"), dg("c"), dg("d")];
    assert_eq!(window(&h, 3), vec![dg("a"), dg("b"), dg("c")]);
    assert!(window(&h, 0).is_empty());
    let tags =
        vec![t("prod", "a", 0, false, &["b"]), t("v1", "a", 0, true, &[]), t(&ref_tag("a", ""), "x", 0, false, &[])];
    let w = windows(&tags, 2);
    assert_eq!(w[&dg("b")], vec![WindowHit { tag: Tag::parse("prod").unwrap(), position: 2, size: 2 }]);
    assert_eq!(w.len(), 2, "releases and referrer tags have no window");
}
