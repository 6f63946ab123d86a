//! Decision latency of the planner on clusters of 10 to 1,000 nodes with 10 replicas per node
//! (10,000 replicas at 1,000 nodes), budgets nearly full so that evictions are weighed.
//! Criterion measures each kind of request; a second pass times 20,000 mixed decisions one by
//! one and prints p50 and p99 per cluster size.
//!
//! `build_view` (the controller's step before each `plan()`: Kubernetes objects in, planner
//! view out) is timed on 1,000 Nodes, 5,000 BuildCaches with 10,000 replicas and their PVCs and
//! PVs (benches/support/fleet.rs), with the p50 and p99 of `plan()` on the view it built.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hearth::api::{BuildCache, CacheMode, ReplicaState};
use hearth::controller::config::OperatorConfig;
use hearth::controller::view::{build_view, Objects};
use hearth::planner::{
    plan, BuildRequest, ClusterView, KeyStats, Location, Node, PlannerConfig, Replica, Snapshot,
    StoreModel,
};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

const GB: u64 = 1_000_000_000;
const SIZES: [usize; 4] = [10, 100, 300, 1000];
const NAMESPACES: usize = 5;

#[path = "support/fleet.rs"]
#[allow(dead_code)]
mod fleet;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A cluster of `nodes` nodes, 10 replicas each over `5 * nodes` keys (two replicas a key on
/// average), a snapshot for 80% of keys, history for all.
fn cluster(nodes: usize) -> (ClusterView, usize) {
    let mut rng = Rng(nodes as u64);
    let mut v = ClusterView::new(StoreModel {
        bytes_per_second: 250e6,
        overhead_seconds: 8.0,
    });
    let ids: Vec<_> = (0..nodes)
        .map(|i| {
            v.add_node(Node {
                name: format!("node-{i}"),
                zone: format!("zone-{}", i % 3),
                labels: BTreeMap::from([("pool".into(), "builders".into())]),
                taints: Vec::new(),
                ready: true,
                free_slots: rng.below(5) as u32,
                next_slot_free_at: Some(150.0),
                slot_waiting: 0,
                cache_budget_bytes: 60 * GB,
            })
            .expect("unique")
        })
        .collect();
    let keys = 5 * nodes;
    for k in 0..keys {
        let key = v.intern_key(&format!("ns-{}", k % NAMESPACES), &format!("repo-{k}:main"));
        let bytes = (1 + rng.below(10)) * GB;
        v.set_stats(
            key,
            KeyStats {
                cold_seconds: 300.0 + rng.below(600) as f64,
                warm_seconds: 30.0 + rng.below(60) as f64,
                fallback_seconds: None,
                cache_bytes: bytes,
                builds_per_hour: rng.below(100) as f64 / 10.0,
                builds: rng.below(30) as u32,
            },
        );
        if rng.below(10) < 8 {
            v.set_snapshot(
                key,
                Some(Snapshot {
                    id: format!("s{k}"),
                    bytes,
                    taken_at: 0.0,
                }),
            );
        }
    }
    for (i, node) in ids.iter().enumerate() {
        for j in 0..10 {
            let k = (i * 10 + j) / 2 % keys;
            let key = v.intern_key(&format!("ns-{}", k % NAMESPACES), &format!("repo-{k}:main"));
            let state = match rng.below(10) {
                0..=6 => ReplicaState::Idle,
                7 | 8 => ReplicaState::InUse,
                _ => ReplicaState::Snapshotting,
            };
            v.add_replica(Replica {
                name: format!("r-{i}-{j}"),
                key,
                location: Location::Node(*node),
                size_bytes: (1 + rng.below(6)) * GB,
                state,
                free_at: (state != ReplicaState::Idle).then_some(100.0 + rng.below(600) as f64),
                waiting: 0,
                saved: rng.below(10) < 8,
                last_used: rng.below(3600) as f64,
            })
            .expect("known node");
        }
    }
    (v, keys)
}

/// Requests of every kind: existing keys (hot, busy or snapshot only), new branches falling
/// back to main, unknown keys, read-only builds.
fn requests(keys: usize, count: usize) -> Vec<BuildRequest> {
    let mut rng = Rng(7);
    (0..count)
        .map(|i| {
            let k = rng.below(keys as u64) as usize;
            let ns = format!("ns-{}", k % NAMESPACES);
            let mut r = match i % 4 {
                0 | 1 => BuildRequest::new(ns, format!("repo-{k}:main")),
                2 => BuildRequest::new(ns, format!("repo-{k}:feature-{i}")),
                _ => BuildRequest::new(ns, format!("unknown-{i}")),
            };
            r.restore_keys = vec![format!("repo-{k}:main")];
            if i % 16 == 5 {
                r.mode = CacheMode::ReadOnly;
            }
            r
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let cfg = PlannerConfig::default();
    let mut group = c.benchmark_group("plan");
    for nodes in SIZES {
        let (view, keys) = cluster(nodes);
        let reqs = requests(keys, 1024);
        group.bench_with_input(BenchmarkId::new("mixed", nodes), &nodes, |b, _| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % reqs.len();
                black_box(plan(&view, &reqs[i], 600.0, &cfg).expect("valid"))
            })
        });
        let branch: Vec<_> = reqs.iter().skip(2).step_by(4).cloned().collect();
        group.bench_with_input(BenchmarkId::new("new-branch", nodes), &nodes, |b, _| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % branch.len();
                black_box(plan(&view, &branch[i], 600.0, &cfg).expect("valid"))
            })
        });
    }
    group.finish();
    println!("\nper-decision latency, 20,000 mixed decisions each:");
    println!(
        "{:>6} {:>9} {:>10} {:>10} {:>10}",
        "nodes", "replicas", "p50 us", "p99 us", "max us"
    );
    for nodes in SIZES {
        let (view, keys) = cluster(nodes);
        let reqs = requests(keys, 20_000);
        let mut times: Vec<f64> = reqs
            .iter()
            .map(|r| {
                let t = Instant::now();
                black_box(plan(&view, r, 600.0, &cfg).expect("valid"));
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        let (p50, p99, max) = percentiles(&mut times);
        let replicas = view.replicas().count();
        println!("{nodes:>6} {replicas:>9} {p50:>10.1} {p99:>10.1} {max:>10.1}");
    }
}

/// p50, p99 and max of a sample.
fn percentiles(times: &mut [f64]) -> (f64, f64, f64) {
    times.sort_by(f64::total_cmp);
    let at = |p: f64| times[((p * times.len() as f64) as usize).min(times.len() - 1)];
    (at(0.5), at(0.99), at(1.0))
}

fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

/// The objects of a fleet at rest: 1,000 Nodes, 5,000 BuildCaches of two replicas (10,000
/// replicas, ten a node) with their PVCs and PVs.
struct FleetObjects {
    nodes: Vec<k8s_openapi::api::core::v1::Node>,
    volumes: Vec<PersistentVolume>,
    claims: Vec<PersistentVolumeClaim>,
    caches: Vec<BuildCache>,
}

impl FleetObjects {
    fn new(now: i64) -> Self {
        let f = fleet::Fleet {
            nodes: 1000,
            caches: 5000,
            replicas_per_cache: 2,
            builds: 0,
            namespaces: NAMESPACES,
        };
        let replicas =
            || (0..f.caches).flat_map(|c| (0..f.replicas_per_cache).map(move |r| (c, r)));
        FleetObjects {
            nodes: (0..f.nodes).map(|i| typed(f.node(i))).collect(),
            volumes: replicas().map(|(c, r)| typed(f.volume(c, r))).collect(),
            claims: replicas().map(|(c, r)| typed(f.claim(c, r))).collect(),
            caches: (0..f.caches).map(|i| typed(f.cache(i, now))).collect(),
        }
    }

    fn objects(&self) -> Objects<'_> {
        Objects {
            nodes: self.nodes.iter().collect(),
            volumes: self.volumes.iter().collect(),
            claims: self.claims.iter().collect(),
            pods: Vec::new(),
            caches: self.caches.iter().collect(),
        }
    }
}

/// `build_view` on the fleet, then `plan()` on the view it built: hot keys, new branches
/// falling back to main, unknown keys.
fn build_view_timing(c: &mut Criterion) {
    let now = jiff::Timestamp::now();
    let fleet = FleetObjects::new(now.as_second());
    let objects = fleet.objects();
    let config = OperatorConfig::default();
    let cfg = PlannerConfig::default();
    c.benchmark_group("build_view")
        .sample_size(10)
        .bench_function("1000-nodes-10000-replicas", |b| {
            b.iter(|| black_box(build_view(&objects, &config, &cfg, now)))
        });
    let mut times: Vec<f64> = (0..50)
        .map(|_| {
            let t = Instant::now();
            black_box(build_view(&objects, &config, &cfg, now));
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let (p50, p99, max) = percentiles(&mut times);
    let view = build_view(&objects, &config, &cfg, now);
    println!(
        "\nbuild_view: {} nodes, {} caches, {} replicas; 50 runs: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
        fleet.nodes.len(),
        fleet.caches.len(),
        view.cluster.replicas().count(),
    );
    let mut rng = Rng(11);
    let mut times: Vec<f64> = (0..20_000)
        .map(|i| {
            let k = rng.below(fleet.caches.len() as u64) as usize;
            let ns = format!("team-{}", k % NAMESPACES);
            let main = format!("github.com/acme/repo-{k}:main");
            let mut r = match i % 4 {
                0 | 1 => BuildRequest::new(ns, main.clone()),
                2 => BuildRequest::new(ns, format!("github.com/acme/repo-{k}:feature-{i}")),
                _ => BuildRequest::new(ns, format!("unknown-{i}")),
            };
            r.restore_keys = vec![main];
            let t = Instant::now();
            black_box(
                plan(
                    &view.cluster,
                    &r,
                    hearth::controller::view::seconds(now),
                    &cfg,
                )
                .expect("valid"),
            );
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let (p50, p99, max) = percentiles(&mut times);
    println!(
        "plan() on that view, 20,000 mixed decisions: p50 {p50:.1} us, p99 {p99:.1} us, max {max:.1} us"
    );
}

/// With `HEARTH_SIMULATE=FILE`, times `hearth simulate` (all four strategies) on that workload
/// in this optimised build: the figure for the 100,000-build target.
fn simulate_timing() {
    let Ok(path) = std::env::var("HEARTH_SIMULATE") else {
        return;
    };
    let text = std::fs::read_to_string(&path).expect("readable workload");
    let t = Instant::now();
    let workload = hearth::simulate::parse(&text).expect("valid workload");
    let parsed = t.elapsed();
    let opts = hearth::simulate::Options::default();
    let report = hearth::simulate::simulate(&path, &workload, &opts).expect("simulates");
    println!(
        "\nsimulate {path}: {} builds, parsed in {:.2} s, total {:.2} s",
        workload.builds.len(),
        parsed.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    print!("{}", hearth::simulate::report::table(&report));
}

fn all(c: &mut Criterion) {
    bench(c);
    build_view_timing(c);
    simulate_timing();
}

criterion_group!(benches, all);
criterion_main!(benches);
