//! The `sticky-hash` strategy: buildx's Kubernetes driver with `loadbalance=sticky` and
//! persistent volumes. One long-lived buildkitd per node; a build goes to the live node chosen
//! by hashing its context (rendezvous hashing, so only a lost node's contexts move); builds on
//! one daemon share its cache, so a branch finds its restore keys there; each node's cache is
//! kept within its budget by LRU; a node that goes down loses its cache.

use std::collections::{HashMap, VecDeque};

use crate::api::{CacheMode, Warmth};

use super::engine::{Ctx, Job, Strategy};
use super::pool::requeue;

#[derive(Debug, Default)]
struct Daemon {
    queue: VecDeque<usize>,
    /// `(namespace, key)` -> (bytes, last use).
    cache: HashMap<(String, String), (u64, f64)>,
}

/// The `sticky-hash` strategy.
#[derive(Debug, Default)]
pub struct Sticky {
    daemons: Vec<Daemon>,
    /// Builds waiting while no node is up.
    orphans: VecDeque<usize>,
}

fn hash(context: &str, node: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(context.as_bytes());
    h.update(&[0]);
    h.update(node.as_bytes());
    let bytes = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

impl Sticky {
    /// A daemon per node of the workload's cluster.
    pub fn new(nodes: usize) -> Self {
        Sticky {
            daemons: (0..nodes).map(|_| Daemon::default()).collect(),
            orphans: VecDeque::new(),
        }
    }

    fn target(ctx: &Ctx, build: usize) -> Option<usize> {
        let b = &ctx.workload.builds[build];
        let context = b.context.as_deref().unwrap_or(&b.key);
        let nodes = &ctx.workload.cluster.nodes;
        (0..nodes.len())
            .filter(|i| ctx.nodes[*i].up)
            .max_by_key(|i| (hash(context, &nodes[*i].name), std::cmp::Reverse(*i)))
    }

    fn enqueue(&mut self, ctx: &mut Ctx, build: usize, front: bool) {
        match Self::target(ctx, build) {
            Some(n) if front => self.daemons[n].queue.push_front(build),
            Some(n) => self.daemons[n].queue.push_back(build),
            None => self.orphans.push_back(build),
        }
    }

    fn drain(&mut self, ctx: &mut Ctx, node: usize) {
        while ctx.nodes[node].up && ctx.nodes[node].free > 0 {
            let Some(build) = self.daemons[node].queue.pop_front() else {
                return;
            };
            let workload = ctx.workload;
            let b = &workload.builds[build];
            let now = ctx.now;
            let cache = &mut self.daemons[node].cache;
            let mut touch = |key: &str| {
                cache
                    .get_mut(&(b.namespace.clone(), key.to_string()))
                    .map(|e| e.1 = now)
                    .is_some()
            };
            let (warmth, nominal) = if b.mode == CacheMode::Disabled {
                (Warmth::Cold, b.cold_seconds)
            } else if touch(&b.key) {
                (Warmth::Hot, b.warm_seconds)
            } else if b.restore_keys.iter().any(|k| touch(k)) {
                (Warmth::Restored, b.fallback())
            } else {
                (Warmth::Cold, b.cold_seconds)
            };
            let seconds = ctx.actual(build, nominal);
            ctx.start(Job::new(build, node, warmth), seconds);
        }
    }
}

impl Strategy for Sticky {
    fn arrive(&mut self, ctx: &mut Ctx, build: usize) {
        self.enqueue(ctx, build, false);
        if let Some(n) = Self::target(ctx, build) {
            self.drain(ctx, n);
        }
    }

    fn finish(&mut self, ctx: &mut Ctx, job: Job) {
        let workload = ctx.workload;
        let b = &workload.builds[job.build];
        if b.mode == CacheMode::ReadWrite {
            let budget = ctx.workload.cluster.nodes[job.node].cache_budget_bytes;
            let cache = &mut self.daemons[job.node].cache;
            cache.insert(
                (b.namespace.clone(), b.key.clone()),
                (b.cache_bytes, ctx.now),
            );
            let mut used: u64 = cache.values().map(|e| e.0).sum();
            while used > budget {
                let Some(oldest) = cache
                    .iter()
                    .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1).then_with(|| a.0.cmp(b.0)))
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                if let Some((bytes, _)) = cache.remove(&oldest) {
                    used -= bytes;
                    ctx.evictions += 1;
                }
            }
        }
        self.drain(ctx, job.node);
    }

    fn node_down(&mut self, ctx: &mut Ctx, node: usize, killed: Vec<Job>) {
        let daemon = std::mem::take(&mut self.daemons[node]);
        let mut moved: Vec<usize> = killed.iter().map(|j| j.build).collect();
        moved.extend(daemon.queue);
        let mut front = VecDeque::new();
        requeue(ctx, &mut front, moved);
        for b in front.into_iter().rev() {
            self.enqueue(ctx, b, true);
        }
        for n in 0..self.daemons.len() {
            self.drain(ctx, n);
        }
    }

    fn node_up(&mut self, ctx: &mut Ctx, _node: usize) {
        let orphans: Vec<usize> = self.orphans.drain(..).collect();
        for b in orphans {
            self.enqueue(ctx, b, false);
        }
        for n in 0..self.daemons.len() {
            self.drain(ctx, n);
        }
    }
}
