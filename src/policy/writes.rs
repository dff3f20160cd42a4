//! Pure decisions of every tag write and delete (DESIGN §4): the backend reads the current
//! state under a lock, these functions decide, and the service writes or refuses (and
//! ledgers the refusal). No I/O; one place decides for every backend.

use super::retention::WindowHit;
use crate::oci::{Digest, Tag};

/// A conditional-write requirement (`If-None-Match: *` / `If-Match`), checked for every tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// No condition.
    None,
    /// `If-None-Match: *`: the tag must not exist.
    Absent,
    /// `If-Match: "<digest>"`: the tag must point at this digest now.
    PointsTo(Digest),
}

/// What a manifest PUT does to one of its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagWrite {
    /// The tag is new.
    Create,
    /// The tag already points at the digest: nothing changes (an identical re-push).
    Keep,
    /// A mutable tag moves from `from`.
    Move {
        /// Where it pointed.
        from: Digest,
    },
    /// The write is refused; nothing of the PUT is stored.
    Refuse(Refusal),
}

/// Why a write or delete is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An immutable tag would move or go.
    Immutable {
        /// The tag.
        tag: Tag,
        /// Where it points.
        current: Digest,
        /// The rule that makes it immutable.
        rule: String,
    },
    /// The request's precondition does not hold for the tag.
    Precondition {
        /// The tag.
        tag: Tag,
        /// Where it points now, if anywhere.
        current: Option<Digest>,
    },
    /// A manifest of the repository references what would be deleted.
    Referenced {
        /// The manifest holding the reference.
        holder: Digest,
        /// A tag on the holder (or on an index holding it).
        tag: Option<Tag>,
    },
    /// A manual delete inside a rollback window, not forced.
    InWindow(WindowHit),
}

/// Decides a tag write of `new` given where the tag points now. `immutable` is `Some(rule)`
/// when the rules make the tag immutable.
pub fn decide_tag_write(
    tag: &Tag,
    current: Option<&Digest>,
    new: &Digest,
    precondition: &Precondition,
    immutable: Option<&str>,
) -> TagWrite {
    let fails = match (precondition, current) {
        (Precondition::Absent, Some(_)) => true,
        (Precondition::PointsTo(want), cur) => cur != Some(want),
        _ => false,
    };
    if fails {
        return TagWrite::Refuse(Refusal::Precondition { tag: tag.clone(), current: current.cloned() });
    }
    match (current, immutable) {
        (None, _) => TagWrite::Create,
        (Some(cur), _) if cur == new => TagWrite::Keep,
        (Some(cur), Some(rule)) => {
            TagWrite::Refuse(Refusal::Immutable { tag: tag.clone(), current: cur.clone(), rule: rule.to_string() })
        }
        (Some(cur), None) => TagWrite::Move { from: cur.clone() },
    }
}

/// Decides deleting tags that point at `digest` (a tag delete, or the tags a manifest delete
/// takes with it): the first immutable one refuses. `rule_of` gives `Some(rule)` for an
/// immutable tag.
pub fn decide_tag_delete(
    tags: &[Tag],
    digest: &Digest,
    rule_of: impl Fn(&Tag) -> Option<String>,
) -> Result<(), Refusal> {
    for tag in tags {
        if let Some(rule) = rule_of(tag) {
            return Err(Refusal::Immutable { tag: tag.clone(), current: digest.clone(), rule });
        }
    }
    Ok(())
}

/// Decides deleting something a manifest may reference: refused while `holder` exists.
pub fn decide_unreferenced(holder: Option<(Digest, Option<Tag>)>) -> Result<(), Refusal> {
    match holder {
        None => Ok(()),
        Some((holder, tag)) => Err(Refusal::Referenced { holder, tag }),
    }
}

/// Decides a manual delete of something a rollback window may protect (`hit`, the first window
/// it is in): refused unless forced. Returns the window a forced delete overrides (to ledger).
pub fn decide_window_delete(hit: Option<WindowHit>, forced: bool) -> Result<Option<WindowHit>, Refusal> {
    match (hit, forced) {
        (None, _) => Ok(None),
        (Some(h), true) => Ok(Some(h)),
        (Some(h), false) => Err(Refusal::InWindow(h)),
    }
}

/// Where a rollback goes: back a number of steps, or to a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackTarget {
    /// Back this many distinct digests (1: the one before the current).
    Steps(u32),
    /// To this digest.
    To(Digest),
}

/// Decides a rollback of a mutable tag pointing at `current`, whose window (its last distinct
/// digests, newest first, `size` at most) is `window`. Returns the target and its 1-based
/// position in the window, or why not, in words.
pub fn decide_rollback(
    tag: &Tag,
    current: &Digest,
    window: &[Digest],
    size: u32,
    target: &RollbackTarget,
) -> Result<(Digest, usize), String> {
    let held = window.len();
    match target {
        RollbackTarget::Steps(k) => match window.get(*k as usize) {
            Some(d) if *k > 0 => Ok((d.clone(), *k as usize + 1)),
            _ => Err(format!(
                "steps = {k} is outside the rollback window of {tag}: the window keeps its last {size} digests and \
                 holds {held}, so at most {} step(s) back are possible",
                held.saturating_sub(1)
            )),
        },
        RollbackTarget::To(d) if d == current => {
            Err(format!("tag {tag} already points to {d}; there is nothing to roll back"))
        }
        RollbackTarget::To(d) => match window.iter().position(|w| w == d) {
            Some(p) => Ok((d.clone(), p + 1)),
            None => Err(format!(
                "{d} is outside the rollback window of {tag}: it is not among the last {size} digests the tag pointed \
                 to ({})",
                window.iter().map(Digest::as_str).collect::<Vec<_>>().join(", ")
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn t(s: &str) -> Tag {
        Tag::parse(s).unwrap()
    }

    #[test]
    fn tag_writes() {
        let v1 = t("v1");
        let none = Precondition::None;
        let cases: Vec<(Option<Digest>, Precondition, Option<&str>, TagWrite)> = vec![
            (None, none.clone(), Some("default"), TagWrite::Create),
            (Some(d(1)), none.clone(), Some("default"), TagWrite::Keep),
            (
                Some(d(2)),
                none.clone(),
                Some("default"),
                TagWrite::Refuse(Refusal::Immutable { tag: v1.clone(), current: d(2), rule: "default".into() }),
            ),
            (Some(d(2)), none.clone(), None, TagWrite::Move { from: d(2) }),
            (None, Precondition::Absent, None, TagWrite::Create),
            (
                Some(d(1)),
                Precondition::Absent,
                None,
                TagWrite::Refuse(Refusal::Precondition { tag: v1.clone(), current: Some(d(1)) }),
            ),
            (Some(d(2)), Precondition::PointsTo(d(2)), None, TagWrite::Move { from: d(2) }),
            (
                Some(d(3)),
                Precondition::PointsTo(d(2)),
                None,
                TagWrite::Refuse(Refusal::Precondition { tag: v1.clone(), current: Some(d(3)) }),
            ),
            (
                None,
                Precondition::PointsTo(d(2)),
                None,
                TagWrite::Refuse(Refusal::Precondition { tag: v1.clone(), current: None }),
            ),
        ];
        for (current, pre, immutable, want) in cases {
            assert_eq!(decide_tag_write(&v1, current.as_ref(), &d(1), &pre, immutable), want, "{current:?} {pre:?}");
        }
    }

    #[test]
    fn deletes() {
        let tags = [t("a"), t("b")];
        assert_eq!(decide_tag_delete(&tags, &d(1), |_| None), Ok(()));
        let rule = |x: &Tag| (x.as_str() == "b").then(|| "#1".to_string());
        assert_eq!(
            decide_tag_delete(&tags, &d(1), rule),
            Err(Refusal::Immutable { tag: t("b"), current: d(1), rule: "#1".into() })
        );
        assert_eq!(decide_unreferenced(None), Ok(()));
        assert_eq!(
            decide_unreferenced(Some((d(2), Some(t("v1"))))),
            Err(Refusal::Referenced { holder: d(2), tag: Some(t("v1")) })
        );
    }

    #[test]
    fn window_deletes_are_refused_unless_forced() {
        let hit = WindowHit { tag: t("prod"), position: 2, size: 3 };
        assert_eq!(decide_window_delete(None, false), Ok(None));
        assert_eq!(decide_window_delete(Some(hit.clone()), false), Err(Refusal::InWindow(hit.clone())));
        assert_eq!(decide_window_delete(Some(hit.clone()), true), Ok(Some(hit)));
    }

    #[test]
    fn rollbacks() {
        let prod = t("prod");
        let w = [d(3), d(2), d(1)];
        type Want = Result<(Digest, usize), &'static str>;
        let cases: Vec<(RollbackTarget, Want)> = vec![
            (RollbackTarget::Steps(1), Ok((d(2), 2))),
            (RollbackTarget::Steps(2), Ok((d(1), 3))),
            (RollbackTarget::Steps(3), Err("steps = 3 is outside the rollback window of prod")),
            (RollbackTarget::Steps(0), Err("steps = 0 is outside")),
            (RollbackTarget::To(d(1)), Ok((d(1), 3))),
            (RollbackTarget::To(d(3)), Err("tag prod already points to")),
            (RollbackTarget::To(d(9)), Err("is outside the rollback window of prod: it is not among the last 3")),
        ];
        for (target, want) in cases {
            let got = decide_rollback(&prod, &d(3), &w, 3, &target);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{target:?}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{target:?}: {g}"),
                (g, w) => panic!("{target:?}: got {g:?}, want {w:?}"),
            }
        }
    }
}
