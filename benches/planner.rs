//! Decision latency of the planner on clusters of 10 to 1,000 nodes with 10 replicas per node
//! (10,000 replicas at 1,000 nodes), budgets nearly full so that evictions are weighed.
//! Criterion measures each kind of request; a second pass times 20,000 mixed decisions one by
//! one and prints p50 and p99 per cluster size.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hearth::api::{CacheMode, ReplicaState};
use hearth::planner::{
    plan, BuildRequest, ClusterView, KeyStats, Location, Node, PlannerConfig, Replica, Snapshot,
    StoreModel,
};

const GB: u64 = 1_000_000_000;
const SIZES: [usize; 4] = [10, 100, 300, 1000];
const NAMESPACES: usize = 5;

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
        times.sort_by(f64::total_cmp);
        let at = |p: f64| times[((p * times.len() as f64) as usize).min(times.len() - 1)];
        let replicas = view.replicas().count();
        println!(
            "{nodes:>6} {replicas:>9} {:>10.1} {:>10.1} {:>10.1}",
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
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
    simulate_timing();
}

criterion_group!(benches, all);
criterion_main!(benches);
