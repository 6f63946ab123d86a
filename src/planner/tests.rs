//! Unit tests of single decisions on small, hand-built clusters.

use std::collections::BTreeMap;

use crate::api::{CacheMode, ReplicaState, Warmth};

use super::*;

const GB: u64 = 1_000_000_000;

fn store() -> StoreModel {
    StoreModel {
        bytes_per_second: 250e6,
        overhead_seconds: 8.0,
    }
}

fn node(name: &str, free: u32, budget: u64) -> Node {
    Node {
        name: name.into(),
        zone: "a".into(),
        labels: BTreeMap::from([("pool".to_string(), name.to_string())]),
        taints: Vec::new(),
        ready: true,
        free_slots: free,
        next_slot_free_at: None,
        slot_waiting: 0,
        cache_budget_bytes: budget,
    }
}

fn stats(cold: f64, warm: f64, bytes: u64, per_hour: f64) -> KeyStats {
    KeyStats {
        cold_seconds: cold,
        warm_seconds: warm,
        fallback_seconds: None,
        cache_bytes: bytes,
        builds_per_hour: per_hour,
        builds: 0,
    }
}

fn replica(
    view: &mut ClusterView,
    key: KeyId,
    node: NodeId,
    state: ReplicaState,
    bytes: u64,
) -> ReplicaId {
    let free_at = (state != ReplicaState::Idle).then_some(100.0);
    view.add_replica(Replica {
        name: format!("r{}", view.replicas().count()),
        key,
        location: Location::Node(node),
        size_bytes: bytes,
        state,
        free_at,
        waiting: 0,
        saved: true,
        last_used: 0.0,
    })
    .expect("node exists")
}

fn snapshot(view: &mut ClusterView, key: KeyId, bytes: u64) {
    view.set_snapshot(
        key,
        Some(Snapshot {
            id: "s".into(),
            bytes,
            taken_at: 0.0,
        }),
    );
}

/// Two nodes with free slots, one key with 600 s cold, 60 s warm, 5 GB of cache.
fn cluster() -> (ClusterView, KeyId, NodeId, NodeId) {
    let mut v = ClusterView::new(store());
    let n1 = v.add_node(node("n1", 2, 100 * GB)).expect("new node");
    let n2 = v.add_node(node("n2", 2, 100 * GB)).expect("new node");
    let k = v.intern_key("shop", "shop:main");
    v.set_stats(k, stats(600.0, 60.0, 5 * GB, 2.0));
    (v, k, n1, n2)
}

fn decide(view: &ClusterView, req: &BuildRequest, now: f64) -> Decision {
    plan(view, req, now, &PlannerConfig::default()).expect("valid input")
}

#[test]
fn idle_replica_is_used_hot() {
    let (mut v, k, _, n2) = cluster();
    let r = replica(&mut v, k, n2, ReplicaState::Idle, 5 * GB);
    let d = decide(&v, &BuildRequest::new("shop", "shop:main"), 10.0);
    assert_eq!(
        d.action,
        Action::UseReplica {
            replica: r,
            node: n2
        }
    );
    assert_eq!((d.warmth, d.reason), (Warmth::Hot, Reason::IdleReplica));
    assert_eq!(d.estimate.finish(), 60.0);
}

#[test]
fn waits_for_a_replica_that_frees_soon_and_restores_when_it_does_not() {
    let (mut v, k, n1, _) = cluster();
    let r = replica(&mut v, k, n1, ReplicaState::InUse, 5 * GB);
    snapshot(&mut v, k, 5 * GB);
    let req = BuildRequest::new("shop", "shop:main");
    // Frees at 100: waiting 10 s beats restoring 5 GB (8 + 20 s).
    let d = decide(&v, &req, 90.0);
    assert_eq!(
        d.action,
        Action::WaitForReplica {
            replica: r,
            node: n1
        }
    );
    assert_eq!(d.estimate.wait, 10.0);
    // 60 s before it frees, a restore of the key's snapshot elsewhere is sooner.
    let d = decide(&v, &req, 40.0);
    assert!(
        matches!(d.action, Action::Restore { ref source, throwaway: false, .. } if source.own_key)
    );
    assert_eq!(
        (d.warmth, d.reason),
        (Warmth::Restored, Reason::SnapshotOfKey)
    );
    assert_eq!(d.estimate.restore, 28.0);
}

#[test]
fn waits_for_a_slot_next_to_its_idle_replica_when_one_frees_soon() {
    let (mut v, k, n1, _) = cluster();
    let r = replica(&mut v, k, n1, ReplicaState::Idle, 5 * GB);
    snapshot(&mut v, k, 5 * GB);
    v.node_mut(n1).free_slots = 0;
    v.node_mut(n1).next_slot_free_at = Some(15.0);
    let req = BuildRequest::new("shop", "shop:main");
    let d = decide(&v, &req, 10.0);
    assert_eq!(
        d.action,
        Action::WaitForSlot {
            replica: r,
            node: n1
        }
    );
    assert_eq!((d.reason, d.estimate.wait), (Reason::SlotFreesSoon, 5.0));
    // Two builds already queued for that node's slots: restoring elsewhere is sooner.
    v.node_mut(n1).slot_waiting = 2;
    assert_eq!(decide(&v, &req, 10.0).reason, Reason::SnapshotOfKey);
}

#[test]
fn first_restore_key_with_a_snapshot_seeds_a_new_branch() {
    let (mut v, _, _, _) = cluster();
    let main = v.intern_key("shop", "shop:main");
    let _empty = v.intern_key("shop", "shop:develop");
    snapshot(&mut v, main, 2 * GB);
    let mut req = BuildRequest::new("shop", "shop:feature");
    req.restore_keys = vec![
        "shop:release".into(),
        "shop:develop".into(),
        "shop:main".into(),
    ];
    let d = decide(&v, &req, 0.0);
    match d.action {
        Action::Restore { source, .. } => assert_eq!((source.key, source.own_key), (main, false)),
        other => panic!("expected a restore, got {other:?}"),
    }
    assert_eq!(d.reason, Reason::SnapshotOfRestoreKey);
}

#[test]
fn cold_when_restoring_is_slower() {
    let (mut v, k, _, _) = cluster();
    snapshot(&mut v, k, 200 * GB); // 808 s to restore, more than a 600 s cold build.
    let d = decide(&v, &BuildRequest::new("shop", "shop:main"), 0.0);
    assert!(matches!(
        d.action,
        Action::Cold {
            throwaway: false,
            ..
        }
    ));
    assert_eq!((d.warmth, d.reason), (Warmth::Cold, Reason::ColdIsFaster));
}

#[test]
fn queues_without_capacity_and_ignores_other_namespaces() {
    let (mut v, _, n1, n2) = cluster();
    v.node_mut(n1).free_slots = 0;
    v.node_mut(n2).free_slots = 0;
    let other = v.intern_key("bank", "shop:main");
    replica(&mut v, other, n1, ReplicaState::InUse, GB);
    let d = decide(&v, &BuildRequest::new("shop", "shop:main"), 0.0);
    assert_eq!((d.action, d.reason), (Action::Queue, Reason::NoCapacity));
}

#[test]
fn read_only_builds_get_a_throwaway_copy() {
    let (mut v, k, n1, _) = cluster();
    replica(&mut v, k, n1, ReplicaState::Idle, 5 * GB);
    snapshot(&mut v, k, 5 * GB);
    let mut req = BuildRequest::new("shop", "shop:main");
    req.mode = CacheMode::ReadOnly;
    let d = decide(&v, &req, 0.0);
    assert!(
        matches!(
            d.action,
            Action::Restore {
                throwaway: true,
                ..
            }
        ),
        "{d:?}"
    );
    req.mode = CacheMode::Disabled;
    let d = decide(&v, &req, 0.0);
    assert!(matches!(
        d.action,
        Action::Cold {
            throwaway: true,
            ..
        }
    ));
    assert_eq!(d.reason, Reason::CacheDisabled);
}

#[test]
fn evicts_the_least_valuable_saved_idle_replica() {
    let mut v = ClusterView::new(store());
    let n = v.add_node(node("n1", 2, 10 * GB)).expect("new node");
    let (hot, rare, unsaved) = (
        v.intern_key("a", "hot"),
        v.intern_key("a", "rare"),
        v.intern_key("a", "dirty"),
    );
    v.set_stats(hot, stats(600.0, 60.0, 3 * GB, 6.0));
    v.set_stats(rare, stats(600.0, 60.0, 3 * GB, 0.01));
    v.set_stats(unsaved, stats(600.0, 60.0, 3 * GB, 0.0));
    replica(&mut v, hot, n, ReplicaState::Idle, 3 * GB);
    let rare_id = replica(&mut v, rare, n, ReplicaState::Idle, 3 * GB);
    let dirty = replica(&mut v, unsaved, n, ReplicaState::Idle, 3 * GB);
    if let Some(r) = v.replica_mut(dirty) {
        r.saved = false;
    }
    let new = v.intern_key("a", "new");
    v.set_stats(new, stats(600.0, 60.0, 3 * GB, 1.0));
    let d = decide(&v, &BuildRequest::new("a", "new"), 1.0);
    assert!(matches!(
        d.action,
        Action::Cold {
            throwaway: false,
            ..
        }
    ));
    assert_eq!(d.evictions, vec![rare_id]);
}

#[test]
fn a_key_built_once_is_less_likely_built_again_than_one_built_every_day() {
    let once = KeyStats {
        builds: 1,
        ..stats(600.0, 60.0, GB, 1.0)
    };
    let daily = KeyStats {
        builds: 20,
        ..once.clone()
    };
    let unknown = KeyStats {
        builds: 0,
        ..once.clone()
    };
    assert_eq!((once.alive(), unknown.alive()), (0.5, 1.0));
    assert!((daily.alive() - 20.0 / 21.0).abs() < 1e-12);
    // Same rate, same idle time: the history of many builds is worth more.
    assert!(daily.chance_within(600.0, 3600.0) > once.chance_within(600.0, 3600.0));
    assert!(daily.rate_after(600.0) > once.rate_after(600.0));
    // Idle for longer than the rate says, a key is expected less often.
    assert!(daily.rate_after(7200.0) < daily.rate_after(600.0));
}

#[test]
fn evicts_the_pull_request_replica_before_main_at_the_same_rate() {
    let mut v = ClusterView::new(store());
    let n = v.add_node(node("n1", 2, 7 * GB)).expect("new node");
    let (main, pr) = (v.intern_key("a", "main"), v.intern_key("a", "pr-1"));
    v.set_stats(
        main,
        KeyStats {
            builds: 12,
            ..stats(600.0, 60.0, 3 * GB, 0.5)
        },
    );
    v.set_stats(
        pr,
        KeyStats {
            builds: 1,
            ..stats(600.0, 60.0, 3 * GB, 0.5)
        },
    );
    replica(&mut v, main, n, ReplicaState::Idle, 3 * GB);
    let pr_id = replica(&mut v, pr, n, ReplicaState::Idle, 3 * GB);
    let new = v.intern_key("a", "new");
    v.set_stats(new, stats(600.0, 60.0, 3 * GB, 1.0));
    let d = decide(&v, &BuildRequest::new("a", "new"), 1.0);
    assert_eq!(d.evictions, vec![pr_id]);
}

#[test]
fn node_selector_and_taints_are_respected() {
    let (mut v, _, n1, n2) = cluster();
    v.node_mut(n1).taints.push(Taint {
        key: "dedicated".into(),
        value: "gpu".into(),
        effect: TaintEffect::NoSchedule,
    });
    let mut req = BuildRequest::new("shop", "shop:main");
    req.node_selector.insert("pool".into(), "n1".into());
    assert_eq!(decide(&v, &req, 0.0).action, Action::Queue);
    req.tolerations.push(Toleration {
        key: "dedicated".into(),
        operator: TolerationOperator::Equal,
        value: "gpu".into(),
        effect: None,
    });
    assert_eq!(decide(&v, &req, 0.0).action.node(), Some(n1));
    req.node_selector.clear();
    req.tolerations.clear();
    assert_eq!(decide(&v, &req, 0.0).action.node(), Some(n2));
}

#[test]
fn bad_time_and_store_are_refused() {
    let (mut v, _, _, _) = cluster();
    let req = BuildRequest::new("shop", "shop:main");
    assert!(matches!(
        plan(&v, &req, f64::NAN, &PlannerConfig::default()),
        Err(PlanError::BadTime(_))
    ));
    v.store.bytes_per_second = 0.0;
    assert_eq!(
        plan(&v, &req, 0.0, &PlannerConfig::default()),
        Err(PlanError::BadStore)
    );
}

fn arch_node(name: &str, arch: &str) -> Node {
    let mut n = node(name, 2, 100 * GB);
    n.labels
        .insert(crate::api::keys::ARCH_LABEL.into(), arch.into());
    n
}

fn arch_request(arch: &str) -> BuildRequest {
    let mut req = BuildRequest::new("shop", "shop:main");
    req.arch = Some(arch.into());
    req
}

#[test]
fn a_build_runs_only_on_nodes_of_its_architecture() {
    let mut v = ClusterView::new(store());
    let arm = v.add_node(arch_node("arm", "arm64")).expect("new node");
    let amd = v.add_node(arch_node("amd", "amd64")).expect("new node");
    let k = v.intern_key("shop", "shop:main");
    v.set_stats(k, stats(600.0, 60.0, 5 * GB, 2.0));
    // An idle replica and a busy one on the arm64 node are no candidates for an amd64 build.
    replica(&mut v, k, arm, ReplicaState::Idle, 5 * GB);
    replica(&mut v, k, arm, ReplicaState::InUse, 5 * GB);
    let d = decide(&v, &arch_request("amd64"), 10.0);
    assert_eq!(
        d.action,
        Action::Cold {
            node: amd,
            throwaway: false
        }
    );
    // The same replica serves an arm64 build hot.
    let d = decide(&v, &arch_request("arm64"), 10.0);
    assert!(
        matches!(d.action, Action::UseReplica { node, .. } if node == arm),
        "{d:?}"
    );
    // No node of the architecture: the build queues rather than run anywhere else.
    let d = decide(&v, &arch_request("s390x"), 10.0);
    assert_eq!((d.action, d.reason), (Action::Queue, Reason::NoNodeOfArch));
    // No architecture asked: any node, as before.
    let d = decide(&v, &BuildRequest::new("shop", "shop:main"), 10.0);
    assert!(matches!(d.action, Action::UseReplica { .. }), "{d:?}");
}

#[test]
fn a_zonal_replica_or_a_restore_lands_on_a_node_of_the_build_architecture() {
    let mut v = ClusterView::new(store());
    v.add_node(arch_node("arm", "arm64")).expect("new node");
    let amd = v.add_node(arch_node("amd", "amd64")).expect("new node");
    let k = v.intern_key("shop", "shop:main");
    v.set_stats(k, stats(600.0, 60.0, 5 * GB, 2.0));
    snapshot(&mut v, k, 5 * GB);
    let d = decide(&v, &arch_request("amd64"), 10.0);
    assert!(
        matches!(d.action, Action::Restore { node, .. } if node == amd),
        "{d:?}"
    );
    v.add_replica(Replica {
        name: "zonal".into(),
        key: k,
        location: Location::Zone("a".into()),
        size_bytes: 5 * GB,
        state: ReplicaState::Idle,
        free_at: None,
        waiting: 0,
        saved: true,
        last_used: 0.0,
    })
    .expect("zone replica");
    let d = decide(&v, &arch_request("amd64"), 10.0);
    assert!(
        matches!(d.action, Action::UseReplica { node, .. } if node == amd),
        "{d:?}"
    );
}

#[test]
fn a_cache_is_prewarmed_only_onto_nodes_of_its_architecture() {
    let mut v = ClusterView::new(store());
    let mut roomy = arch_node("amd", "amd64");
    roomy.cache_budget_bytes = 1000 * GB;
    v.add_node(roomy).expect("new node");
    let arm = v.add_node(arch_node("arm", "arm64")).expect("new node");
    let k = v.intern_key("shop", "shop:main@arm64");
    v.set_stats(k, stats(600.0, 60.0, 5 * GB, 20.0));
    snapshot(&mut v, k, 5 * GB);
    let chosen = prewarm(&v, 10.0, &PlannerConfig::default(), 4);
    assert_eq!(chosen.len(), 1, "{chosen:?}");
    assert_eq!((chosen[0].key, chosen[0].node), (k, arm));
    // No node of the architecture: nothing is pre-warmed.
    let mut amd_only = ClusterView::new(store());
    amd_only
        .add_node(arch_node("amd", "amd64"))
        .expect("new node");
    let k = amd_only.intern_key("shop", "shop:main@arm64");
    amd_only.set_stats(k, stats(600.0, 60.0, 5 * GB, 20.0));
    snapshot(&mut amd_only, k, 5 * GB);
    assert_eq!(prewarm(&amd_only, 10.0, &PlannerConfig::default(), 4), []);
}

#[test]
fn a_build_with_no_cache_anywhere_starts_cold_seeded_from_its_registry_cache() {
    let (v, _, _, _) = cluster();
    let mut req = BuildRequest::new("shop", "shop:feature");
    req.restore_keys = vec!["shop:main".into()];
    req.registry_seed = true;
    let d = decide(&v, &req, 0.0);
    assert!(matches!(d.action, Action::Cold { .. }), "{d:?}");
    assert_eq!((d.warmth, d.reason), (Warmth::Cold, Reason::RegistrySeed));
    assert!(d.reason.seeds_from_registry());
    req.mode = CacheMode::Disabled;
    let d = decide(&v, &req, 0.0);
    assert_eq!(d.reason, Reason::CacheDisabledRegistrySeed);
    assert!(d.reason.seeds_from_registry());
}

#[test]
fn a_registry_cache_never_seeds_a_build_that_has_a_replica_or_snapshot() {
    let (mut v, k, n1, _) = cluster();
    let mut req = BuildRequest::new("shop", "shop:main");
    req.registry_seed = true;
    // Hot: an idle replica of the key.
    let r = replica(&mut v, k, n1, ReplicaState::Idle, 5 * GB);
    let d = decide(&v, &req, 0.0);
    assert_eq!(d.reason, Reason::IdleReplica);
    assert!(!d.reason.seeds_from_registry());
    // A restore key's snapshot seeds it instead.
    v.remove_replica(r).expect("known replica");
    let main = v.intern_key("shop", "shop:base");
    snapshot(&mut v, main, GB);
    req.restore_keys = vec!["shop:base".into()];
    let d = decide(&v, &req, 0.0);
    assert_eq!(d.reason, Reason::SnapshotOfRestoreKey);
    // A snapshot exists but building cold is faster: cold, unseeded.
    snapshot(&mut v, k, 200 * GB);
    req.restore_keys.clear();
    let d = decide(&v, &req, 0.0);
    assert_eq!(d.reason, Reason::ColdIsFaster);
    assert!(!d.reason.seeds_from_registry());
}
