//! Property tests of the planner's invariants over random clusters: never a busy replica;
//! never outside the node selector, tolerations or free slots; never another namespace's
//! replica or snapshot; never an eviction of an unsaved or busy replica (and evictions make
//! room); a `ReadOnly` build never gets a replica it could write back to.

use std::collections::BTreeMap;

use hearth::api::keys::ARCH_LABEL;
use hearth::api::{CacheMode, ReplicaState};
use hearth::planner::{
    plan, Action, BuildRequest, Clonable, CloneTarget, ClusterView, KeyStats, Location, Node,
    PlannerConfig, Replica, Snapshot, StoreModel, Taint, TaintEffect, Toleration,
    TolerationOperator,
};
use proptest::prelude::*;

const GB: u64 = 1_000_000_000;
const NAMESPACES: [&str; 2] = ["shop", "bank"];
const KEYS: [&str; 4] = ["main", "dev", "feature", "release"];
const ARCHES: [&str; 2] = ["amd64", "arm64"];
const CLONE_CLASSES: [&str; 2] = ["lvm", "zfs"];

#[derive(Clone, Debug)]
struct NodeSpec {
    pool: u8,
    tainted: bool,
    ready: bool,
    free: u32,
    budget_gb: u64,
}

#[derive(Clone, Debug)]
struct ReplicaSpec {
    node: usize,
    zonal: bool,
    ns: usize,
    key: usize,
    state: u8,
    size_gb: u64,
    saved: bool,
    free_in: f64,
}

#[derive(Clone, Debug)]
struct Case {
    nodes: Vec<NodeSpec>,
    replicas: Vec<ReplicaSpec>,
    snapshots: Vec<(usize, usize, u64)>,
    stats: Vec<(usize, usize, f64, f64, u64, f64)>,
    ns: usize,
    key: usize,
    restore: Vec<usize>,
    mode: u8,
    pool: Option<u8>,
    tolerate: bool,
    now: f64,
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (
        0u8..2,
        any::<bool>(),
        prop::bool::weighted(0.9),
        0u32..4,
        1u64..40,
    )
        .prop_map(|(pool, tainted, ready, free, budget_gb)| NodeSpec {
            pool,
            tainted,
            ready,
            free,
            budget_gb,
        })
}

fn case() -> impl Strategy<Value = Case> {
    prop::collection::vec(node_spec(), 1..8).prop_flat_map(|nodes| {
        let n = nodes.len();
        let replica = (
            0..n,
            any::<bool>(),
            0usize..2,
            0usize..4,
            0u8..5,
            1u64..20,
            any::<bool>(),
            0.0f64..900.0,
        )
            .prop_map(|(node, zonal, ns, key, state, size_gb, saved, free_in)| {
                ReplicaSpec {
                    node,
                    zonal,
                    ns,
                    key,
                    state,
                    size_gb,
                    saved,
                    free_in,
                }
            });
        (
            Just(nodes),
            prop::collection::vec(replica, 0..24),
            prop::collection::vec((0usize..2, 0usize..4, 1u64..60), 0..6),
            prop::collection::vec(
                (
                    0usize..2,
                    0usize..4,
                    60.0f64..1200.0,
                    0.05f64..1.0,
                    1u64..20,
                    0.0f64..20.0,
                ),
                0..8,
            ),
            (
                0usize..2,
                0usize..4,
                prop::collection::vec(0usize..4, 0..3),
                0u8..3,
            ),
            (prop::option::of(0u8..2), any::<bool>(), 0.0f64..1000.0),
        )
            .prop_map(
                |(
                    nodes,
                    replicas,
                    snapshots,
                    stats,
                    (ns, key, restore, mode),
                    (pool, tolerate, now),
                )| Case {
                    nodes,
                    replicas,
                    snapshots,
                    stats,
                    ns,
                    key,
                    restore,
                    mode,
                    pool,
                    tolerate,
                    now,
                },
            )
    })
}

fn build(case: &Case) -> (ClusterView, BuildRequest) {
    let mut v = ClusterView::new(StoreModel {
        bytes_per_second: 250e6,
        overhead_seconds: 8.0,
    });
    let mut ids = Vec::new();
    for (i, n) in case.nodes.iter().enumerate() {
        let taints = if n.tainted {
            vec![Taint {
                key: "dedicated".into(),
                value: "ci".into(),
                effect: TaintEffect::NoSchedule,
            }]
        } else {
            Vec::new()
        };
        ids.push(
            v.add_node(Node {
                name: format!("n{i}"),
                zone: format!("z{}", i % 2),
                labels: BTreeMap::from([
                    ("pool".to_string(), n.pool.to_string()),
                    (ARCH_LABEL.to_string(), ARCHES[(i / 2) % 2].to_string()),
                ]),
                taints,
                ready: n.ready,
                free_slots: n.free,
                next_slot_free_at: Some(150.0),
                slot_waiting: 0,
                cache_budget_bytes: n.budget_gb * GB,
            })
            .expect("unique names"),
        );
    }
    for (ns, key, c, w, bytes, rate) in &case.stats {
        let k = v.intern_key(NAMESPACES[*ns], KEYS[*key]);
        v.set_stats(
            k,
            KeyStats {
                cold_seconds: *c,
                warm_seconds: c * w,
                fallback_seconds: None,
                cache_bytes: bytes * GB,
                builds_per_hour: *rate,
                builds: (*c as u32) % 7,
            },
        );
    }
    for (i, r) in case.replicas.iter().enumerate() {
        let state = [
            ReplicaState::Idle,
            ReplicaState::InUse,
            ReplicaState::Restoring,
            ReplicaState::Snapshotting,
            ReplicaState::Lost,
        ][r.state as usize];
        let key = v.intern_key(NAMESPACES[r.ns], KEYS[r.key]);
        let location = if r.zonal {
            Location::Zone(format!("z{}", r.node % 2))
        } else {
            Location::Node(ids[r.node])
        };
        let id = v
            .add_replica(Replica {
                name: format!("r{i}"),
                key,
                location,
                size_bytes: r.size_gb * GB,
                state,
                free_at: (state != ReplicaState::Idle).then_some(case.now + r.free_in),
                waiting: 0,
                saved: r.saved,
                last_used: 0.0,
            })
            .expect("known node");
        // Replicas on storage of two classes that clone, of two sizes, or that cannot.
        let class = CLONE_CLASSES.get(i % 3).map(|c| Clonable {
            storage_class: c.to_string(),
            capacity_bytes: (1 + (i % 2) as u64) * 8 * GB,
        });
        v.set_clonable(id, class);
    }
    for (ns, key, gb) in &case.snapshots {
        let k = v.intern_key(NAMESPACES[*ns], KEYS[*key]);
        v.set_snapshot(
            k,
            Some(Snapshot {
                id: format!("s{ns}{key}"),
                bytes: gb * GB,
                taken_at: 0.0,
            }),
        );
    }
    let mut req = BuildRequest::new(NAMESPACES[case.ns], KEYS[case.key]);
    req.restore_keys = case
        .restore
        .iter()
        .filter(|k| **k != case.key)
        .map(|k| KEYS[*k].to_string())
        .collect();
    req.mode = [
        CacheMode::ReadWrite,
        CacheMode::ReadOnly,
        CacheMode::Disabled,
    ][case.mode as usize];
    if let Some(p) = case.pool {
        req.node_selector.insert("pool".into(), p.to_string());
    }
    // Builds whose new replica may be a clone into either class, or never.
    req.clone_into = CLONE_CLASSES.get(case.key % 3).map(|c| CloneTarget {
        storage_class: c.to_string(),
        capacity_bytes: 8 * GB,
    });
    // Builds of either architecture, or (the simulator's requests) of none.
    req.arch = ARCHES.get((case.ns + case.key) % 3).map(|a| a.to_string());
    if case.tolerate {
        req.tolerations.push(Toleration {
            key: "dedicated".into(),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect: Some(TaintEffect::NoSchedule),
        });
    }
    (v, req)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decisions_keep_every_invariant(case in case()) {
        let (view, req) = build(&case);
        let d = plan(&view, &req, case.now, &PlannerConfig::default()).expect("valid input");
        let own_ns = |key| view.key(key).namespace == req.namespace;
        if let (Some(arch), Some(node)) = (&req.arch, d.action.node()) {
            prop_assert_eq!(view.node(node).labels.get(ARCH_LABEL), Some(arch), "a node of another architecture");
        }
        match &d.action {
            Action::UseReplica { replica, node } => {
                let r = view.replica(*replica).expect("replica exists");
                prop_assert_eq!(r.state, ReplicaState::Idle, "busy replica handed out");
                prop_assert!(own_ns(r.key) && view.key(r.key).key == req.key, "replica of another key or namespace");
                prop_assert!(req.can_start_on(view.node(*node)), "outside selector, tolerations or free slots");
                prop_assert_eq!(req.mode, CacheMode::ReadWrite, "a non-ReadWrite build got a replica");
            }
            Action::WaitForReplica { replica, node } => {
                let r = view.replica(*replica).expect("replica exists");
                prop_assert!(r.state != ReplicaState::Idle && r.state != ReplicaState::Lost);
                prop_assert!(own_ns(r.key) && view.key(r.key).key == req.key);
                prop_assert!(req.fits(view.node(*node)), "waits on a node it may not run on");
                prop_assert_eq!(req.mode, CacheMode::ReadWrite, "a non-ReadWrite build waits for a replica");
            }
            Action::WaitForSlot { replica, node } => {
                let r = view.replica(*replica).expect("replica exists");
                prop_assert_eq!(r.state, ReplicaState::Idle, "claims a busy replica");
                prop_assert!(own_ns(r.key) && view.key(r.key).key == req.key);
                prop_assert!(req.fits(view.node(*node)), "waits on a node it may not run on");
                prop_assert_eq!(req.mode, CacheMode::ReadWrite, "a non-ReadWrite build claims a replica");
            }
            Action::Restore { node, source, throwaway } => {
                prop_assert!(req.can_start_on(view.node(*node)));
                prop_assert!(own_ns(source.key), "snapshot of another namespace");
                prop_assert!(view.key(source.key).snapshot.is_some());
                prop_assert_eq!(*throwaway, req.mode == CacheMode::ReadOnly);
                prop_assert!(req.mode != CacheMode::Disabled);
            }
            Action::Clone { node, source, key, own_key } => {
                let r = view.replica(*source).expect("replica exists");
                prop_assert!(
                    matches!(r.state, ReplicaState::Idle | ReplicaState::Snapshotting),
                    "clones a replica with a writer ({:?})", r.state
                );
                prop_assert_eq!(r.key, *key);
                prop_assert!(own_ns(r.key), "clones another namespace's replica");
                let name = &view.key(r.key).key;
                prop_assert_eq!(*own_key, *name == req.key);
                prop_assert!(*name == req.key || req.restore_keys.contains(name), "clones a replica of an unrelated key");
                let (c, t) = (view.clonable(*source).expect("clonable"), req.clone_into.as_ref().expect("may clone"));
                prop_assert_eq!(&c.storage_class, &t.storage_class, "clones across storage classes");
                prop_assert!(c.capacity_bytes <= t.capacity_bytes, "clones into a smaller volume");
                prop_assert!(req.can_start_on(view.node(*node)));
                match &r.location {
                    Location::Node(n) => prop_assert_eq!(n, node, "a node-local clone off its source's node"),
                    Location::Zone(z) => prop_assert_eq!(&view.node(*node).zone, z),
                }
                prop_assert_eq!(req.mode, CacheMode::ReadWrite, "a non-ReadWrite build got a replica");
                prop_assert!(!d.evictions.contains(source), "evicts the replica it clones");
            }
            Action::Cold { node, throwaway } => {
                prop_assert!(req.can_start_on(view.node(*node)));
                if req.mode != CacheMode::ReadWrite {
                    prop_assert!(*throwaway, "a ReadOnly or Disabled build keeps a replica");
                }
            }
            Action::Queue => {
                let startable = view.nodes().any(|(_, n)| req.can_start_on(n));
                prop_assert!(!startable, "queued although a node could take it");
            }
        }
        for id in &d.evictions {
            let r = view.replica(*id).expect("evicted replica exists");
            prop_assert_eq!(r.state, ReplicaState::Idle, "evicts a replica in use");
            prop_assert!(r.saved, "evicts a replica whose state is not in a snapshot");
            prop_assert_eq!(&r.location, &Location::Node(d.action.node().expect("placed")));
        }
        if !d.evictions.is_empty() {
            let node = d.action.node().expect("placed");
            let freed: u64 = d.evictions.iter().filter_map(|id| view.replica(*id)).map(|r| r.size_bytes).sum();
            let after = view.used_bytes(node) - freed;
            prop_assert!(after < view.used_bytes(node));
            prop_assert!(after <= view.node(node).cache_budget_bytes);
        }
    }
}
