use std::collections::HashSet;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::api::ImageBuild;

const MIN: u64 = 60;
const HOUR: u64 = 3600;

fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

fn policy(
    succeeded: Option<u64>,
    failed: Option<u64>,
    limits: (Option<u32>, Option<u32>),
    min_age: u64,
) -> RetentionSettings {
    let d = |s: u64| kube::core::Duration::from(Duration::from_secs(s));
    RetentionSettings {
        ttl_after_succeeded: succeeded.map(d),
        ttl_after_failed: failed.map(d),
        succeeded_limit: limits.0,
        failed_limit: limits.1,
        min_age: d(min_age),
    }
}

fn build(name: &str, outcome: Outcome, completed: i64) -> Finished {
    Finished {
        name: name.into(),
        uid: Some(format!("uid-{name}")),
        resource_version: Some("7".into()),
        outcome,
        completed: t(completed),
        ttl: None,
        holds_replica: false,
    }
}

fn deleted(plan: &Plan) -> Vec<(&str, Why)> {
    plan.delete
        .iter()
        .map(|d| (d.build.name.as_str(), d.why))
        .collect()
}

#[test]
fn a_build_goes_at_its_ttl_and_failed_ones_by_their_own() {
    let p = policy(Some(HOUR), Some(3 * HOUR), (None, None), 10 * MIN);
    let builds = [
        build("ok", Outcome::Succeeded, 0),
        build("broken", Outcome::Failed, 0),
    ];
    // Before the TTL: nothing, and the next look is at the succeeded build's expiry.
    let before = plan(&builds, &p, t(HOUR as i64 - 1));
    assert!(before.delete.is_empty());
    assert_eq!(before.next, Some(t(HOUR as i64)));
    // At it: the succeeded build goes, the failed one is kept until its own TTL.
    let at = plan(&builds, &p, t(HOUR as i64));
    assert_eq!(deleted(&at), [("ok", Why::Ttl)]);
    assert_eq!(at.next, Some(t(3 * HOUR as i64)));
    let later = plan(&builds, &p, t(3 * HOUR as i64));
    assert_eq!(deleted(&later), [("ok", Why::Ttl), ("broken", Why::Ttl)]);
    assert_eq!(later.next, None, "nothing left to fall due");
}

#[test]
fn a_builds_own_ttl_overrides_the_default_but_never_goes_below_min_age() {
    let p = policy(Some(24 * HOUR), Some(24 * HOUR), (None, None), 10 * MIN);
    let mut short = build("short", Outcome::Succeeded, 0);
    short.ttl = Some(Duration::from_secs(MIN));
    let mut long = build("long", Outcome::Failed, 0);
    long.ttl = Some(Duration::from_secs(48 * HOUR));
    let builds = [short, long];
    // The build's 1m is held to minAge (10m).
    assert_eq!(
        plan(&builds, &p, t(9 * MIN as i64)).next,
        Some(t(10 * MIN as i64))
    );
    assert_eq!(
        deleted(&plan(&builds, &p, t(10 * MIN as i64))),
        [("short", Why::Ttl)]
    );
    // The other outlives the default's 24h.
    let day = plan(&builds, &p, t(24 * HOUR as i64));
    assert_eq!(deleted(&day), [("short", Why::Ttl)]);
    assert_eq!(day.next, Some(t(48 * HOUR as i64)));
}

#[test]
fn beyond_the_history_limit_the_oldest_go_once_past_min_age() {
    let p = policy(None, None, (Some(2), Some(1)), 10 * MIN);
    let builds = [
        build("s1", Outcome::Succeeded, 0),
        build("s2", Outcome::Succeeded, 100),
        build("s3", Outcome::Succeeded, 200),
        build("s4", Outcome::Succeeded, 300),
        build("f1", Outcome::Failed, 50),
        build("f2", Outcome::Failed, 250),
    ];
    // Every build just ended: over the limit, but none is old enough to go.
    let young = plan(&builds, &p, t(400));
    assert!(young.delete.is_empty(), "{young:?}");
    assert_eq!(young.next, Some(t(10 * MIN as i64)), "s1 is the first due");
    // Once past minAge, the oldest beyond each limit go (histories counted apart), oldest
    // first; the newest two succeeded and the newest failed stay, with no TTL, for ever.
    let old = plan(&builds, &p, t(HOUR as i64));
    assert_eq!(
        deleted(&old),
        [("s1", Why::Limit), ("f1", Why::Limit), ("s2", Why::Limit)]
    );
    assert_eq!(old.next, None);
}

#[test]
fn a_limit_of_zero_keeps_none_and_no_limit_keeps_all() {
    let builds = [
        build("a", Outcome::Succeeded, 0),
        build("b", Outcome::Failed, 0),
    ];
    let zero = policy(None, None, (Some(0), None), MIN);
    assert_eq!(
        deleted(&plan(&builds, &zero, t(HOUR as i64))),
        [("a", Why::Limit)]
    );
    let off = policy(None, None, (None, None), MIN);
    let kept = plan(&builds, &off, t(1_000 * HOUR as i64));
    assert_eq!(kept, Plan::default(), "retention off deletes nothing");
}

#[test]
fn a_build_holding_a_replica_is_kept_and_looked_at_again_soon() {
    let p = policy(Some(HOUR), Some(HOUR), (None, None), MIN);
    let mut held = build("held", Outcome::Succeeded, 0);
    held.holds_replica = true;
    let now = t(2 * HOUR as i64);
    let out = plan(&[held, build("free", Outcome::Failed, 0)], &p, now);
    assert_eq!(deleted(&out), [("free", Why::Ttl)]);
    assert_eq!(
        out.next,
        Some(
            now.checked_add(SignedDuration::try_from(HELD_RETRY).unwrap())
                .unwrap()
        )
    );
}

#[test]
fn the_earlier_of_ttl_and_limit_decides_why() {
    let p = policy(Some(HOUR), None, (Some(1), None), MIN);
    let builds = [
        build("old", Outcome::Succeeded, 0),
        build("new", Outcome::Succeeded, 10),
    ];
    // At 30 min, "old" is beyond the limit (past minAge), well before its TTL.
    assert_eq!(
        deleted(&plan(&builds, &p, t(30 * MIN as i64))),
        [("old", Why::Limit)]
    );
    // The newest within the limit still goes at its TTL.
    let late = plan(&builds, &p, t(2 * HOUR as i64));
    assert_eq!(deleted(&late), [("old", Why::Limit), ("new", Why::Ttl)]);
}

fn stored(status: serde_json::Value, extra: serde_json::Value) -> StoredBuild {
    let mut v = json!({
        "apiVersion": "hearth.dev/v1alpha1", "kind": "ImageBuild",
        "metadata": {"name": "b", "namespace": "shop", "uid": "u1", "resourceVersion": "9",
                     "creationTimestamp": "2026-11-30T00:00:00Z"},
        "spec": {"source": {"git": {"url": "https://github.com/acme/shop.git"}},
                 "output": {"image": "registry.example/acme/shop:1"},
                 "retention": {"ttlAfterFailed": "5m"}},
        "status": status
    });
    if let (Some(base), Some(more)) = (v["metadata"].as_object_mut(), extra.as_object()) {
        base.extend(more.clone());
    }
    StoredBuild::from(serde_json::from_value::<ImageBuild>(v).unwrap())
}

#[test]
fn only_compact_finished_builds_not_being_deleted_are_considered() {
    let none = HashSet::new();
    let ended = json!({"phase": "Cancelled", "completionTime": "2026-11-30T01:00:00Z"});
    let f = finished(&stored(ended.clone(), json!({})), &none).expect("finished");
    assert_eq!(f.outcome, Outcome::Failed);
    assert_eq!(f.completed, "2026-11-30T01:00:00Z".parse().unwrap());
    assert_eq!(f.ttl, Some(Duration::from_secs(5 * MIN)));
    assert_eq!(
        (f.uid.as_deref(), f.resource_version.as_deref()),
        (Some("u1"), Some("9"))
    );
    assert!(!f.holds_replica);
    let held = HashSet::from(["b".to_string()]);
    assert!(
        finished(&stored(ended.clone(), json!({})), &held)
            .unwrap()
            .holds_replica
    );
    // Without a completion time, from creation.
    let no_time = finished(&stored(json!({"phase": "Failed"}), json!({})), &none).unwrap();
    assert_eq!(no_time.completed, "2026-11-30T00:00:00Z".parse().unwrap());
    // Under way, still saving, or already being deleted: never.
    let saving = json!({"phase": "Succeeded", "completionTime": "2026-11-30T01:00:00Z",
        "conditions": [{"type": "Snapshotted", "status": "Unknown", "reason": "Saving",
            "message": "", "lastTransitionTime": "2026-11-30T01:00:00Z"}]});
    let deleting = json!({"deletionTimestamp": "2026-11-30T02:00:00Z", "finalizers": ["x"]});
    for (status, meta) in [
        (json!({"phase": "Building"}), json!({})),
        (json!({"phase": "Snapshotting"}), json!({})),
        (saving, json!({})),
        (ended, deleting),
    ] {
        assert_eq!(
            finished(&stored(status.clone(), meta), &none),
            None,
            "{status}"
        );
    }
}

#[test]
fn a_platforms_child_goes_with_its_parent_never_on_its_own() {
    let none = HashSet::new();
    let ended = json!({"phase": "Succeeded", "completionTime": "2026-11-30T01:00:00Z"});
    let owner = |kind: &str, controller: bool| {
        json!({"ownerReferences": [{"apiVersion": "hearth.dev/v1alpha1", "kind": kind,
            "name": "api-42", "uid": "p1", "controller": controller}]})
    };
    let child = stored(ended.clone(), owner("ImageBuild", true));
    assert_eq!(finished(&child, &none), None, "neither deleted nor counted");
    assert_eq!(parent_of(kube::Resource::meta(&child)), Some("api-42"));
    // Another owner (a Tekton CustomRun) or a reference that is not the controller's: an
    // ordinary build, kept by the rules.
    for meta in [owner("CustomRun", true), owner("ImageBuild", false)] {
        assert!(
            finished(&stored(ended.clone(), meta.clone()), &none).is_some(),
            "{meta}"
        );
    }
}
