//! The two strategies without node affinity: `cold` (ephemeral builders, no persistent cache)
//! and `registry-cache` (BuildKit `--cache-from/--cache-to` a registry: import the key's cache,
//! or the first restore key's, paying its bytes at store speed, and export again after a
//! `ReadWrite` build). Builds wait in one FIFO queue and start on the freest live node.

use std::collections::{HashMap, VecDeque};

use crate::api::{CacheMode, Warmth};

use super::engine::{Ctx, Job, Strategy};

/// `cold` or `registry-cache`.
#[derive(Debug, Default)]
pub struct Pool {
    registry: bool,
    /// Per build, a given time (the bound's), for the perfect-cache yardstick.
    given: Option<Vec<f64>>,
    queue: VecDeque<usize>,
    /// Cache size of every `(namespace, key)` a `ReadWrite` build exported.
    exported: HashMap<(String, String), u64>,
}

impl Pool {
    /// Every build cold.
    pub fn cold() -> Self {
        Pool::default()
    }

    /// Cache imported from and exported to a registry.
    pub fn registry() -> Self {
        Pool {
            registry: true,
            ..Pool::default()
        }
    }

    /// The yardstick for queueing: every build takes the time `seconds` gives it (the bound's:
    /// the best cache that exists, restored for free), on the cluster's slots in submit order.
    pub fn perfect(seconds: Vec<f64>) -> Self {
        Pool {
            given: Some(seconds),
            ..Pool::default()
        }
    }

    fn import(&self, ctx: &Ctx, build: usize) -> (Warmth, f64, u64) {
        let b = &ctx.workload.builds[build];
        if !self.registry || b.mode == CacheMode::Disabled {
            return (Warmth::Cold, b.cold_seconds, 0);
        }
        let lookup = |key: &str| {
            self.exported
                .get(&(b.namespace.clone(), key.to_string()))
                .copied()
        };
        if let Some(bytes) = lookup(&b.key) {
            return (Warmth::Restored, b.warm_seconds, bytes);
        }
        match b.restore_keys.iter().find_map(|k| lookup(k)) {
            Some(bytes) => (Warmth::Restored, b.fallback(), bytes),
            None => (Warmth::Cold, b.cold_seconds, 0),
        }
    }

    fn drain(&mut self, ctx: &mut Ctx) {
        while !self.queue.is_empty() {
            let Some(node) = ctx.freest_node() else {
                return;
            };
            let Some(build) = self.queue.pop_front() else {
                return;
            };
            if let Some(given) = &self.given {
                ctx.start(Job::new(build, node, Warmth::Hot), given[build]);
                continue;
            }
            let (warmth, nominal, bytes) = self.import(ctx, build);
            let workload = ctx.workload;
            let b = &workload.builds[build];
            let bps = ctx.workload.cluster.store_bytes_per_second;
            let export = if self.registry && b.mode == CacheMode::ReadWrite {
                b.cache_bytes as f64 / bps
            } else {
                0.0
            };
            let seconds = bytes as f64 / bps + ctx.actual(build, nominal) + export;
            ctx.store_bytes_read += bytes as f64;
            ctx.start(Job::new(build, node, warmth), seconds);
        }
    }
}

/// Puts killed builds back at the head of a queue, oldest first.
pub fn requeue(ctx: &Ctx, queue: &mut VecDeque<usize>, mut builds: Vec<usize>) {
    builds.sort_by(|a, b| {
        ctx.workload.builds[*b]
            .at
            .total_cmp(&ctx.workload.builds[*a].at)
    });
    for b in builds {
        queue.push_front(b);
    }
}

impl Strategy for Pool {
    fn arrive(&mut self, ctx: &mut Ctx, build: usize) {
        self.queue.push_back(build);
        self.drain(ctx);
    }

    fn finish(&mut self, ctx: &mut Ctx, job: Job) {
        let workload = ctx.workload;
        let b = &workload.builds[job.build];
        if self.registry && b.mode == CacheMode::ReadWrite {
            self.exported
                .insert((b.namespace.clone(), b.key.clone()), b.cache_bytes);
        }
        self.drain(ctx);
    }

    fn node_down(&mut self, ctx: &mut Ctx, _node: usize, killed: Vec<Job>) {
        requeue(
            ctx,
            &mut self.queue,
            killed.iter().map(|j| j.build).collect(),
        );
        self.drain(ctx);
    }

    fn node_up(&mut self, ctx: &mut Ctx, _node: usize) {
        self.drain(ctx);
    }
}
