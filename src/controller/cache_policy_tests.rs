use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;

use super::*;
use crate::api::{BuildCacheSpec, SnapshotRecord};

const NOW: f64 = 1_800_000_000.0;
const COST: CostModel = CostModel {
    store_bytes_per_second: 250e6,
    restore_overhead_seconds: 8.0,
};

fn at(seconds: f64) -> Time {
    Time(Timestamp::from_millisecond((seconds * 1000.0) as i64).unwrap())
}

fn replica(pvc: &str, state: ReplicaState, snapshot: Option<&str>, idle_for: f64) -> ReplicaStatus {
    ReplicaStatus {
        pvc: pvc.into(),
        node: Some("n1".into()),
        zone: None,
        state,
        holder: (state != ReplicaState::Idle).then(|| "b".to_string()),
        size_bytes: Some(1 << 30),
        last_used: Some(at(NOW - idle_for)),
        snapshot_id: snapshot.map(String::from),
        builds_since_snapshot: Some(if snapshot.is_some() { 0 } else { 1 }),
        uses: Some(3),
        reason: None,
        cloning_for: None,
    }
}

fn snapshot(id: &str, age: f64) -> SnapshotRecord {
    SnapshotRecord {
        id: id.into(),
        time: at(NOW - age),
        bytes: 1 << 30,
        new_bytes: 1 << 20,
        manifest_sha256: Some("ab".repeat(32)),
    }
}

fn cache(replicas: Vec<ReplicaStatus>, snapshots: Vec<SnapshotRecord>, max: i32) -> BuildCache {
    let mut spec: BuildCacheSpec = serde_json::from_value(serde_json::json!({"key": "k"})).unwrap();
    spec.max_replicas = max;
    let mut c = BuildCache::new("c", spec);
    c.status = Some(BuildCacheStatus {
        replicas,
        snapshots,
        last_gc: Some(at(NOW - 60.0)),
        ..Default::default()
    });
    c
}

fn facts(victims: &[&str]) -> Facts {
    Facts {
        budget_victims: victims.iter().map(|s| s.to_string()).collect(),
        now: NOW,
        snapshots_enabled: true,
        gc_interval: 6.0 * 3600.0,
        store_backoff: false,
        prewarm: None,
        mounted: vec![],
    }
}

#[test]
fn a_saved_budget_victim_is_evicted_an_unsaved_one_is_saved_first() {
    let c = cache(
        vec![replica("r0", ReplicaState::Idle, Some("s1"), 60.0)],
        vec![snapshot("s1", 600.0)],
        4,
    );
    assert_eq!(
        next_duty(&c, &facts(&["r0"])),
        Duty::Evict {
            pvc: "r0".into(),
            reason: EvictReason::Budget
        }
    );
    let c = cache(
        vec![replica("r0", ReplicaState::Idle, None, 60.0)],
        vec![snapshot("s1", 600.0)],
        4,
    );
    assert_eq!(
        next_duty(&c, &facts(&["r0"])),
        Duty::SaveBeforeEvict {
            pvc: "r0".into(),
            reason: EvictReason::Budget
        }
    );
}

#[test]
fn a_replica_whose_snapshot_was_collected_is_saved_again_before_eviction() {
    let c = cache(
        vec![replica("r0", ReplicaState::Idle, Some("gone"), 60.0)],
        vec![snapshot("s2", 600.0)],
        4,
    );
    assert!(matches!(
        next_duty(&c, &facts(&["r0"])),
        Duty::SaveBeforeEvict { .. }
    ));
}

#[test]
fn without_a_store_an_unsaved_victim_is_kept() {
    let c = cache(
        vec![replica("r0", ReplicaState::Idle, None, 60.0)],
        vec![],
        4,
    );
    let mut f = facts(&["r0"]);
    f.snapshots_enabled = false;
    assert_eq!(next_duty(&c, &f), Duty::Nothing);
}

#[test]
fn a_replica_in_use_is_never_a_victim() {
    let c = cache(
        vec![replica("r0", ReplicaState::InUse, Some("s1"), 60.0)],
        vec![snapshot("s1", 600.0)],
        4,
    );
    assert_eq!(next_duty(&c, &facts(&["r0"])), Duty::Nothing);
}

#[test]
fn idle_past_ttl_is_evicted_and_extra_replicas_retire_newest_snapshot_first() {
    let mut c = cache(
        vec![replica("r0", ReplicaState::Idle, Some("s1"), 8.0 * 86400.0)],
        vec![snapshot("s1", 600.0)],
        4,
    );
    assert_eq!(
        next_duty(&c, &facts(&[])),
        Duty::Evict {
            pvc: "r0".into(),
            reason: EvictReason::IdleTtl
        }
    );
    c = cache(
        vec![
            replica("r0", ReplicaState::Idle, Some("s1"), 30.0),
            replica("r1", ReplicaState::Idle, Some("s2"), 90.0),
            replica("r2", ReplicaState::InUse, None, 0.0),
        ],
        vec![snapshot("s2", 100.0), snapshot("s1", 600.0)],
        2,
    );
    assert_eq!(
        next_duty(&c, &facts(&[])),
        Duty::Evict {
            pvc: "r1".into(),
            reason: EvictReason::MaxReplicas
        },
        "r1 matches the newest snapshot: retiring it loses least"
    );
}

#[test]
fn a_deferred_save_runs_once_min_interval_has_passed_then_gc_after_a_save() {
    let mut c = cache(
        vec![replica("r0", ReplicaState::Idle, None, 60.0)],
        vec![snapshot("s1", 120.0)],
        4,
    );
    assert_eq!(next_duty(&c, &facts(&[])), Duty::Nothing, "saved 2 min ago");
    c.status.as_mut().unwrap().snapshots = vec![snapshot("s1", 3600.0)];
    assert_eq!(
        next_duty(&c, &facts(&[])),
        Duty::DeferredSave { pvc: "r0".into() }
    );
    let status = c.status.as_mut().unwrap();
    status.replicas[0].snapshot_id = Some("s5".into());
    status.snapshots = ["s5", "s4", "s3", "s2"]
        .iter()
        .enumerate()
        .map(|(i, id)| snapshot(id, 30.0 + i as f64 * 60.0))
        .collect();
    assert_eq!(
        next_duty(&c, &facts(&[])),
        Duty::Gc,
        "4 snapshots, retain 3"
    );
    let mut f = facts(&[]);
    f.store_backoff = true;
    assert_eq!(next_duty(&c, &f), Duty::Nothing, "store failing: wait");
}

#[test]
fn a_cache_with_no_replica_left_is_prewarmed_from_its_own_snapshot_only() {
    let target = PrewarmTarget {
        node: "n2".into(),
        snapshot: "s1".into(),
        bytes: 1000,
    };
    let with = |t: &PrewarmTarget| Facts {
        prewarm: Some(t.clone()),
        ..facts(&[])
    };
    let lost = replica("r0", ReplicaState::Lost, Some("s1"), 60.0);
    let c = cache(vec![lost.clone()], vec![snapshot("s1", 600.0)], 4);
    assert_eq!(next_duty(&c, &with(&target)), Duty::Prewarm(target.clone()));
    assert_eq!(
        next_duty(&c, &facts(&[])),
        Duty::Nothing,
        "not ranked: nothing"
    );
    // A live replica (even busy) means there is nothing to pre-warm.
    let busy = replica("r1", ReplicaState::InUse, None, 0.0);
    let c = cache(vec![lost.clone(), busy], vec![snapshot("s1", 600.0)], 4);
    assert_eq!(next_duty(&c, &with(&target)), Duty::Nothing);
    // A snapshot this cache does not list (another cache's, or collected) is never restored.
    let c = cache(vec![lost], vec![snapshot("s2", 600.0)], 4);
    assert_eq!(next_duty(&c, &with(&target)), Duty::Nothing);
}

#[test]
fn budget_victims_are_the_least_valuable_idle_replicas_until_the_node_fits() {
    let r = |pvc: &str, gib: u64, idle: bool, uses: i64, idle_hours: f64| NodeReplica {
        namespace: "ns".into(),
        cache: "c".into(),
        pvc: pvc.into(),
        size_bytes: gib << 30,
        idle,
        uses,
        last_used: NOW - idle_hours * 3600.0,
    };
    let on_node = vec![
        r("busy", 40, false, 0, 100.0),
        r("popular", 20, true, 50, 1.0),
        r("stale", 20, true, 1, 72.0),
        r("recent", 20, true, 2, 0.5),
    ];
    assert!(budget_victims(&on_node, 100 << 30, NOW, &COST).is_empty());
    let v = budget_victims(&on_node, 90 << 30, NOW, &COST);
    assert_eq!(
        v.iter().map(|r| r.pvc.as_str()).collect::<Vec<_>>(),
        ["stale"]
    );
    let v = budget_victims(&on_node, 10 << 30, NOW, &COST);
    assert_eq!(v.len(), 3, "every idle one, never the busy one");
}

fn arb_replica(i: usize) -> impl Strategy<Value = ReplicaStatus> {
    (
        prop_oneof![
            Just(ReplicaState::Idle),
            Just(ReplicaState::Idle),
            Just(ReplicaState::InUse),
            Just(ReplicaState::Restoring),
            Just(ReplicaState::Snapshotting),
            Just(ReplicaState::Lost),
            Just(ReplicaState::Evicting),
        ],
        proptest::option::of(0usize..6),
        any::<bool>(),
        0.0..2e6f64,
        0i32..4,
    )
        .prop_map(move |(state, snap, held, idle_for, builds)| ReplicaStatus {
            pvc: format!("r{i}"),
            node: Some("n1".into()),
            zone: None,
            state,
            holder: (held || state == ReplicaState::InUse).then(|| "b".to_string()),
            size_bytes: Some(1 << 30),
            last_used: Some(at(NOW - idle_for)),
            snapshot_id: snap.map(|s| format!("s{s}")),
            builds_since_snapshot: Some(builds),
            uses: Some(1),
            reason: None,
            cloning_for: None,
        })
}

proptest! {
    /// No decision ever evicts a replica that holds state the store does not have, nor one
    /// in use; whatever is evicted is exactly what `deletable` allows.
    #[test]
    fn no_duty_evicts_the_only_copy_of_a_state(
        replicas in (0usize..6).prop_flat_map(|n| (0..n).map(arb_replica).collect::<Vec<_>>()),
        listed in proptest::collection::btree_set(0usize..6, 0..4),
        victims in proptest::collection::vec(0usize..6, 0..4),
        max in 1i32..4,
        enabled in any::<bool>(),
        backoff in any::<bool>(),
        warm in proptest::option::of(0usize..6),
    ) {
        let snapshots = listed.iter().map(|i| snapshot(&format!("s{i}"), 100.0 * *i as f64 + 1.0)).collect();
        let c = cache(replicas, snapshots, max);
        let names: Vec<String> = victims.iter().map(|i| format!("r{i}")).collect();
        let f = Facts {
            budget_victims: names,
            now: NOW,
            snapshots_enabled: enabled,
            gc_interval: 3600.0,
            store_backoff: backoff,
            prewarm: warm.map(|i| PrewarmTarget { node: "n1".into(), snapshot: format!("s{i}"), bytes: 1 }),
            mounted: vec![],
        };
        let status = c.status.clone().unwrap();
        match next_duty(&c, &f) {
            Duty::Evict { pvc, .. } => {
                let r = status.replicas.iter().find(|r| r.pvc == pvc).unwrap();
                prop_assert!(deletable(r, &status));
                prop_assert!(r.state == ReplicaState::Idle && r.holder.is_none());
                let id = r.snapshot_id.clone().unwrap();
                prop_assert!(status.snapshots.iter().any(|s| s.id == id));
            }
            Duty::SaveBeforeEvict { pvc, .. } | Duty::DeferredSave { pvc } => {
                prop_assert!(enabled && !backoff);
                let r = status.replicas.iter().find(|r| r.pvc == pvc).unwrap();
                prop_assert!(r.state == ReplicaState::Idle && r.holder.is_none());
            }
            Duty::Prewarm(t) => {
                prop_assert!(enabled && !backoff);
                prop_assert!(status.snapshots.iter().any(|s| s.id == t.snapshot));
                prop_assert!(status.replicas.iter().all(|r| matches!(r.state, ReplicaState::Lost | ReplicaState::Evicting)));
            }
            Duty::Gc => prop_assert!(enabled && !backoff),
            Duty::Nothing => {}
        }
    }

    /// Budget victims are idle, and evicting them brings the node within budget whenever
    /// evicting every idle replica would.
    #[test]
    fn budget_victims_fit_the_node_when_possible(
        sizes in proptest::collection::vec((1u64..50, any::<bool>(), 0i64..20, 0.0..500.0f64), 0..12),
        budget_gib in 0u64..300,
    ) {
        let on_node: Vec<NodeReplica> = sizes.iter().enumerate().map(|(i, (g, idle, uses, h))| NodeReplica {
            namespace: "ns".into(), cache: "c".into(), pvc: format!("r{i}"),
            size_bytes: g << 30, idle: *idle, uses: *uses, last_used: NOW - h * 3600.0,
        }).collect();
        let budget = budget_gib << 30;
        let v = budget_victims(&on_node, budget, NOW, &COST);
        prop_assert!(v.iter().all(|r| r.idle));
        let used: u64 = on_node.iter().map(|r| r.size_bytes).sum();
        let freed: u64 = v.iter().map(|r| r.size_bytes).sum();
        let busy: u64 = on_node.iter().filter(|r| !r.idle).map(|r| r.size_bytes).sum();
        if busy <= budget {
            prop_assert!(used - freed <= budget);
        }
        if used <= budget {
            prop_assert!(v.is_empty());
        }
    }
}

#[test]
fn a_replica_a_pod_still_mounts_is_neither_saved_nor_evicted() {
    // Idle in status (a cancelled build released it), but its buildkitd is still terminating.
    let saved = cache(
        vec![replica("r0", ReplicaState::Idle, Some("s1"), 60.0)],
        vec![snapshot("s1", 600.0)],
        4,
    );
    let unsaved = cache(
        vec![replica("r0", ReplicaState::Idle, None, 60.0)],
        vec![snapshot("s1", 600.0)],
        4,
    );
    let mounted = Facts {
        mounted: vec!["r0".into()],
        ..facts(&["r0"])
    };
    for c in [&saved, &unsaved] {
        assert!(
            !matches!(
                next_duty(c, &mounted),
                Duty::Evict { .. } | Duty::SaveBeforeEvict { .. } | Duty::DeferredSave { .. }
            ),
            "{:?}",
            next_duty(c, &mounted)
        );
    }
}
