//! Unit tests of clones: a new replica cloned from one the chosen node holds.

use std::collections::BTreeMap;

use crate::api::{CacheMode, ReplicaState, Warmth};

use super::*;

const GB: u64 = 1_000_000_000;

fn node(name: &str, free: u32) -> Node {
    Node {
        name: name.into(),
        zone: "a".into(),
        labels: BTreeMap::new(),
        taints: Vec::new(),
        ready: true,
        free_slots: free,
        next_slot_free_at: None,
        slot_waiting: 0,
        cache_budget_bytes: 100 * GB,
    }
}

fn stats() -> KeyStats {
    KeyStats {
        cold_seconds: 600.0,
        warm_seconds: 60.0,
        fallback_seconds: Some(90.0),
        cache_bytes: 5 * GB,
        builds_per_hour: 2.0,
        builds: 3,
    }
}

/// main (with a snapshot of 5 GB) and a branch never built, in `shop`; nodes n1 and n2.
struct World {
    view: ClusterView,
    main: KeyId,
    n1: NodeId,
    n2: NodeId,
}

fn world(n1_free: u32) -> World {
    let mut view = ClusterView::new(StoreModel {
        bytes_per_second: 250e6,
        overhead_seconds: 8.0,
    });
    let n1 = view.add_node(node("n1", n1_free)).expect("node");
    let n2 = view.add_node(node("n2", 2)).expect("node");
    let main = view.intern_key("shop", "main");
    view.set_stats(main, stats());
    view.set_snapshot(
        main,
        Some(Snapshot {
            id: "s1".into(),
            bytes: 5 * GB,
            taken_at: 0.0,
        }),
    );
    World { view, main, n1, n2 }
}

fn add(w: &mut World, key: KeyId, state: ReplicaState, class: Option<(&str, u64)>) -> ReplicaId {
    let id = w
        .view
        .add_replica(Replica {
            name: "main-r0".into(),
            key,
            location: Location::Node(w.n1),
            size_bytes: 5 * GB,
            state,
            free_at: (state != ReplicaState::Idle).then_some(100.0),
            waiting: 0,
            saved: true,
            last_used: 0.0,
        })
        .expect("node exists");
    w.view.set_clonable(
        id,
        class.map(|(c, cap)| Clonable {
            storage_class: c.into(),
            capacity_bytes: cap,
        }),
    );
    id
}

fn add_main(w: &mut World, state: ReplicaState, class: Option<(&str, u64)>) -> ReplicaId {
    let main = w.main;
    add(w, main, state, class)
}

/// The first build of a branch that falls back to main, on storage class `class`.
fn branch(class: &str, capacity: u64) -> BuildRequest {
    let mut req = BuildRequest::new("shop", "branch");
    req.restore_keys = vec!["main".into()];
    req.clone_into = Some(CloneTarget {
        storage_class: class.into(),
        capacity_bytes: capacity,
    });
    req
}

fn decide(view: &ClusterView, req: &BuildRequest) -> Decision {
    plan(view, req, 10.0, &PlannerConfig::default()).expect("valid input")
}

fn is_restore(d: &Decision) -> bool {
    matches!(d.action, Action::Restore { .. })
}

#[test]
fn a_branch_clones_the_restore_keys_idle_replica_on_its_node_instead_of_restoring() {
    let mut w = world(2);
    let source = add_main(&mut w, ReplicaState::Idle, Some(("lvm", 50 * GB)));
    let d = decide(&w.view, &branch("lvm", 50 * GB));
    assert_eq!(
        d.action,
        Action::Clone {
            node: w.n1,
            source,
            key: w.main,
            own_key: false
        }
    );
    assert_eq!((d.warmth, d.reason), (Warmth::Restored, Reason::Cloned));
    assert_eq!(
        (d.estimate.restore, d.estimate.build),
        (
            DEFAULT_CLONE_OVERHEAD_SECONDS,
            PlannerConfig::default().default_stats.fallback()
        ),
        "the clone overhead, then a fallback build (the branch has no history)"
    );
    assert!(d.evictions.is_empty());
}

#[test]
fn a_restore_wins_when_the_clone_costs_more() {
    let mut w = world(2);
    add_main(&mut w, ReplicaState::Idle, Some(("lvm", 50 * GB)));
    // A restore of main's 5 GB takes 8 + 20 s: a clone configured at 60 s loses.
    w.view.set_clone_overhead(60.0);
    let d = decide(&w.view, &branch("lvm", 50 * GB));
    assert!(is_restore(&d), "{d:?}");
    w.view.set_clone_overhead(27.0);
    let d = decide(&w.view, &branch("lvm", 50 * GB));
    assert!(matches!(d.action, Action::Clone { .. }), "{d:?}");
}

#[test]
fn a_replica_with_a_writer_is_never_cloned() {
    for state in [ReplicaState::InUse, ReplicaState::Restoring] {
        let mut w = world(2);
        add_main(&mut w, state, Some(("lvm", 50 * GB)));
        let d = decide(&w.view, &branch("lvm", 50 * GB));
        assert!(is_restore(&d), "{state:?}: {d:?}");
    }
    // Being saved after its build, a replica has no writer (the save only reads).
    let mut w = world(2);
    add_main(&mut w, ReplicaState::Snapshotting, Some(("lvm", 50 * GB)));
    let d = decide(&w.view, &branch("lvm", 50 * GB));
    assert!(matches!(d.action, Action::Clone { .. }), "{d:?}");
}

#[test]
fn a_second_build_of_a_key_clones_the_replica_being_saved_rather_than_wait_for_it() {
    let mut w = world(2);
    let source = add_main(&mut w, ReplicaState::Snapshotting, Some(("lvm", 50 * GB)));
    let mut req = branch("lvm", 50 * GB);
    req.key = "main".into();
    req.restore_keys.clear();
    // Waiting for the save to end (at 100) costs 90 s; a clone 5 s.
    let d = decide(&w.view, &req);
    assert_eq!(
        d.action,
        Action::Clone {
            node: w.n1,
            source,
            key: w.main,
            own_key: true
        }
    );
    assert_eq!(d.estimate.build, 60.0, "the key's own state: a warm build");
}

#[test]
fn never_a_clone_across_storage_classes_sizes_or_namespaces() {
    let mut w = world(2);
    add_main(&mut w, ReplicaState::Idle, Some(("lvm", 50 * GB)));
    assert!(is_restore(&decide(&w.view, &branch("zfs", 50 * GB))));
    assert!(
        is_restore(&decide(&w.view, &branch("lvm", 20 * GB))),
        "a clone is at least as large as its source"
    );
    // The same key in another namespace: its replica is not the build's to clone.
    let mut w = world(2);
    let theirs = w.view.intern_key("lab", "main");
    add(&mut w, theirs, ReplicaState::Idle, Some(("lvm", 50 * GB)));
    let d = decide(&w.view, &branch("lvm", 50 * GB));
    assert!(is_restore(&d), "{d:?}");
}

#[test]
fn falls_back_to_a_restore_when_the_storage_cannot_clone() {
    let mut w = world(2);
    add_main(&mut w, ReplicaState::Idle, None);
    assert!(is_restore(&decide(&w.view, &branch("lvm", 50 * GB))));
    // Or when the build may not clone (its class cannot, a clone failed, a ReadOnly build).
    let mut w = world(2);
    add_main(&mut w, ReplicaState::Idle, Some(("lvm", 50 * GB)));
    let mut req = branch("lvm", 50 * GB);
    req.clone_into = None;
    assert!(is_restore(&decide(&w.view, &req)));
    let mut req = branch("lvm", 50 * GB);
    req.mode = CacheMode::ReadOnly;
    let d = decide(&w.view, &req);
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
}

#[test]
fn a_clone_needs_a_free_slot_on_the_sources_node() {
    let mut w = world(0);
    add_main(&mut w, ReplicaState::Idle, Some(("lvm", 50 * GB)));
    let d = decide(&w.view, &branch("lvm", 50 * GB));
    assert!(
        matches!(d.action, Action::Restore { node, .. } if node == w.n2),
        "{d:?}"
    );
}
