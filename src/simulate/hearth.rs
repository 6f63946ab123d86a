//! The `hearth` strategy: every build asks the planner, with a cluster view the simulation
//! keeps up to date (replicas, snapshots, free slots, per-key history and arrival rates).
//! Builds the planner queues wait in FIFO order and are planned again whenever capacity
//! changes; builds waiting for a busy replica take it, and its holder's slot, when it frees.
//! A `ReadWrite` build's replica is saved after every build (the snapshot policy modelled).
//! Every minute, as the BuildCache controller does on its resync, caches with a snapshot and
//! no replica that the planner ranks worth it are restored in the background onto nodes with
//! room (pre-warming), without taking a builder slot.

use std::collections::{HashMap, VecDeque};

use crate::api::{CacheMode, ReplicaState, Warmth};
use crate::planner::{
    plan, prewarm, Action, BuildRequest, ClusterView, Decision, KeyId, KeyStats, Location, Node,
    NodeId, PlanError, PlannerConfig, Replica, ReplicaId, Snapshot, StoreModel,
};

use super::engine::{Ctx, Job, Strategy};
use super::pool::requeue;

const NO_REPLICA: u32 = u32::MAX;
/// Most background restores started at once.
const PREWARM_LIMIT: usize = 32;
/// Seconds between looks for caches worth pre-warming (the BuildCache controller's resync).
const PREWARM_EVERY: f64 = 60.0;
/// Timer token of that look (background restores use tokens counted from 0).
const PREWARM_TICK: u64 = u64::MAX;

/// The `hearth` strategy.
pub struct Hearth {
    view: ClusterView,
    cfg: PlannerConfig,
    requests: Vec<BuildRequest>,
    pending: VecDeque<usize>,
    waiters: HashMap<ReplicaId, VecDeque<usize>>,
    /// Per key: last arrival and smoothed gap between arrivals.
    arrivals: HashMap<KeyId, (f64, Option<f64>, u32)>,
    /// Per node: builds that claimed an idle replica there and wait for the next free slot.
    slot_waiters: Vec<VecDeque<(usize, ReplicaId)>>,
    /// Per node: (build, expected finish) of the jobs running there, as the planner estimated.
    expected: Vec<Vec<(usize, f64)>>,
    /// Background restores under way: timer token -> replica.
    prewarming: HashMap<u64, ReplicaId>,
    next_token: u64,
    /// The first error the planner returned, if any.
    pub error: Option<PlanError>,
}

impl Hearth {
    /// A strategy over the workload's cluster.
    pub fn new(ctx_workload: &super::workload::Workload, cfg: PlannerConfig) -> Self {
        let cluster = &ctx_workload.cluster;
        let mut view = ClusterView::new(StoreModel {
            bytes_per_second: cluster.store_bytes_per_second,
            overhead_seconds: cluster.restore_overhead_seconds,
        });
        for n in &cluster.nodes {
            // Names are unique: the workload parser refuses duplicates.
            let _ = view.add_node(Node {
                name: n.name.clone(),
                zone: n.zone.clone(),
                labels: Default::default(),
                taints: Vec::new(),
                ready: true,
                free_slots: n.builders,
                next_slot_free_at: None,
                slot_waiting: 0,
                cache_budget_bytes: n.cache_budget_bytes,
            });
        }
        let requests = ctx_workload
            .builds
            .iter()
            .map(|b| BuildRequest {
                restore_keys: b.restore_keys.clone(),
                mode: b.mode,
                ..BuildRequest::new(b.namespace.clone(), b.key.clone())
            })
            .collect();
        Hearth {
            view,
            cfg,
            requests,
            pending: VecDeque::new(),
            waiters: HashMap::new(),
            arrivals: HashMap::new(),
            slot_waiters: vec![VecDeque::new(); cluster.nodes.len()],
            expected: vec![Vec::new(); cluster.nodes.len()],
            prewarming: HashMap::new(),
            next_token: 0,
            error: None,
        }
    }

    fn sync_node(&mut self, ctx: &Ctx, node: usize) {
        let n = self.view.node_mut(NodeId(node as u32));
        n.ready = ctx.nodes[node].up;
        n.free_slots = ctx.nodes[node].free;
        n.next_slot_free_at = self.expected[node]
            .iter()
            .map(|e| e.1)
            .min_by(f64::total_cmp);
        n.slot_waiting = self.slot_waiters[node].len() as u32;
    }

    fn learn(&mut self, ctx: &Ctx, build: usize) {
        let b = &ctx.workload.builds[build];
        let key = self.view.intern_key(&b.namespace, &b.key);
        let entry = self.arrivals.entry(key).or_insert((ctx.now, None, 0));
        entry.2 += 1;
        if ctx.now > entry.0 {
            let gap = ctx.now - entry.0;
            entry.1 = Some(entry.1.map_or(gap, |g| 0.7 * g + 0.3 * gap));
            entry.0 = ctx.now;
        }
        let builds = entry.2;
        let builds_per_hour = entry.1.map_or(self.cfg.default_stats.builds_per_hour, |g| {
            3600.0 / g.max(1.0)
        });
        self.view.set_stats(
            key,
            KeyStats {
                cold_seconds: b.cold_seconds,
                warm_seconds: b.warm_seconds,
                fallback_seconds: b.fallback_seconds,
                cache_bytes: b.cache_bytes,
                builds_per_hour,
                builds,
            },
        );
    }

    /// Whether a replica of the build's key is in one of `states` (and, when `startable`, on
    /// a node where the build can start now).
    fn has_replica(&self, build: usize, states: &[ReplicaState], startable: bool) -> bool {
        let req = &self.requests[build];
        if req.mode != CacheMode::ReadWrite {
            return false;
        }
        let Some(k) = self.view.key_id(&req.namespace, &req.key) else {
            return false;
        };
        let view = &self.view;
        view.key(k).replicas.iter().filter_map(|id| view.replica(*id)).any(|r| {
            states.contains(&r.state)
                && (!startable
                    || matches!(r.location, Location::Node(n) if req.can_start_on(view.node(n))))
        })
    }

    /// Plans pending builds: first those whose replica is idle on a node with a free slot
    /// (they finish soonest, and no build that could run anywhere takes their slot), then the
    /// rest in submit order. When no slot is free, only builds that can wait for a busy
    /// replica of their key are planned.
    fn schedule(&mut self, ctx: &mut Ctx) {
        for hot_first in [true, false] {
            let mut i = 0;
            while i < self.pending.len() {
                let build = self.pending[i];
                let free = ctx.nodes.iter().any(|n| n.up && n.free > 0);
                let worth = if hot_first {
                    free && self.has_replica(build, &[ReplicaState::Idle], true)
                } else {
                    free || self.has_replica(
                        build,
                        &[ReplicaState::InUse, ReplicaState::Restoring],
                        false,
                    )
                };
                if !worth {
                    i += 1;
                    continue;
                }
                let decision = match plan(&self.view, &self.requests[build], ctx.now, &self.cfg) {
                    Ok(d) => d,
                    Err(e) => {
                        self.error.get_or_insert(e);
                        return;
                    }
                };
                if decision.action == Action::Queue {
                    i += 1;
                    continue;
                }
                self.pending.remove(i);
                self.execute(ctx, build, decision);
            }
        }
    }

    fn start_on_replica(&mut self, ctx: &mut Ctx, build: usize, replica: ReplicaId, node: NodeId) {
        let warm = ctx.workload.builds[build].warm_seconds;
        let seconds = ctx.actual(build, warm);
        if let Some(r) = self.view.replica_mut(replica) {
            r.state = ReplicaState::InUse;
            r.free_at = Some(ctx.now + warm);
        }
        let job = Job {
            build,
            node: node.0 as usize,
            warmth: Warmth::Hot,
            tag: replica.0,
        };
        self.launch(ctx, job, seconds, warm);
    }

    fn execute(&mut self, ctx: &mut Ctx, build: usize, d: Decision) {
        for id in &d.evictions {
            if self.view.remove_replica(*id).is_ok() {
                ctx.evictions += 1;
            }
        }
        let est = d.estimate;
        let (node, bytes, restore, throwaway, state) = match d.action {
            Action::UseReplica { replica, node } => {
                return self.start_on_replica(ctx, build, replica, node)
            }
            Action::WaitForReplica { replica, .. } => {
                if let Some(r) = self.view.replica_mut(replica) {
                    r.waiting += 1;
                }
                self.waiters.entry(replica).or_default().push_back(build);
                return;
            }
            Action::Queue => return self.pending.push_back(build),
            Action::WaitForSlot { replica, node } => {
                let n = node.0 as usize;
                if let Some(r) = self.view.replica_mut(replica) {
                    r.state = ReplicaState::InUse;
                    r.free_at = Some(ctx.now + est.finish());
                }
                self.slot_waiters[n].push_back((build, replica));
                return self.sync_node(ctx, n);
            }
            Action::Restore {
                node,
                source,
                throwaway,
            } => {
                ctx.store_bytes_read += source.bytes as f64;
                (
                    node,
                    source.bytes,
                    est.restore,
                    throwaway,
                    ReplicaState::Restoring,
                )
            }
            // The simulated storage never clones (no request names a clone target); a clone
            // would be a new replica of the source's bytes, read from no store.
            Action::Clone { node, source, .. } => {
                let bytes = self.view.replica(source).map_or(0, |r| r.size_bytes);
                (node, bytes, est.restore, false, ReplicaState::Restoring)
            }
            Action::Cold { node, throwaway } => {
                let key = self.intern(build);
                let bytes = self
                    .view
                    .key(key)
                    .stats
                    .as_ref()
                    .map_or(0, |s| s.cache_bytes);
                (node, bytes, 0.0, throwaway, ReplicaState::InUse)
            }
        };
        let mut tag = NO_REPLICA;
        if !throwaway {
            let key = self.intern(build);
            let replica = Replica {
                name: format!("b{build}"),
                key,
                location: Location::Node(node),
                size_bytes: bytes,
                state,
                free_at: Some(ctx.now + est.finish()),
                waiting: 0,
                saved: false,
                last_used: ctx.now,
            };
            if let Ok(id) = self.view.add_replica(replica) {
                tag = id.0;
            }
        }
        let job = Job {
            build,
            node: node.0 as usize,
            warmth: d.warmth,
            tag,
        };
        let seconds = restore + ctx.actual(build, est.build);
        self.launch(ctx, job, seconds, est.restore + est.build);
    }

    /// Starts `job` for `seconds`, remembering when the planner expects it to end.
    fn launch(&mut self, ctx: &mut Ctx, job: Job, seconds: f64, expected: f64) {
        ctx.start(job, seconds);
        self.expected[job.node].push((job.build, ctx.now + expected));
        self.sync_node(ctx, job.node);
    }

    /// Starts the background restores the planner asks for (caches with no replica left).
    fn prewarm(&mut self, ctx: &mut Ctx) {
        for p in prewarm(&self.view, ctx.now, &self.cfg, PREWARM_LIMIT) {
            let replica = Replica {
                name: format!("p{}", self.next_token),
                key: p.key,
                location: Location::Node(p.node),
                size_bytes: p.bytes,
                state: ReplicaState::Restoring,
                free_at: Some(ctx.now + p.restore_seconds),
                waiting: 0,
                saved: true,
                last_used: ctx.now,
            };
            if let Ok(id) = self.view.add_replica(replica) {
                ctx.store_bytes_read += p.bytes as f64;
                self.prewarming.insert(self.next_token, id);
                ctx.timer(p.restore_seconds, self.next_token);
                self.next_token += 1;
            }
        }
    }

    fn intern(&mut self, build: usize) -> KeyId {
        let r = &self.requests[build];
        self.view.intern_key(&r.namespace, &r.key)
    }
}

impl Strategy for Hearth {
    fn arrive(&mut self, ctx: &mut Ctx, build: usize) {
        if build == 0 {
            ctx.timer(PREWARM_EVERY, PREWARM_TICK);
        }
        self.learn(ctx, build);
        self.pending.push_back(build);
        self.schedule(ctx);
    }

    fn finish(&mut self, ctx: &mut Ctx, job: Job) {
        self.expected[job.node].retain(|e| e.0 != job.build);
        self.sync_node(ctx, job.node);
        if job.tag != NO_REPLICA {
            let id = ReplicaId(job.tag);
            let b = &ctx.workload.builds[job.build];
            let key = self.intern(job.build);
            if let Some(r) = self.view.replica_mut(id) {
                r.state = ReplicaState::Idle;
                r.free_at = None;
                r.size_bytes = b.cache_bytes;
                r.saved = true;
                r.last_used = ctx.now;
            }
            let snapshot = Snapshot {
                id: format!("s{}", job.build),
                bytes: b.cache_bytes,
                taken_at: ctx.now,
            };
            self.view.set_snapshot(key, Some(snapshot));
            let next = self.waiters.get_mut(&id).and_then(VecDeque::pop_front);
            if let Some(next) = next {
                if let Some(r) = self.view.replica_mut(id) {
                    r.waiting = r.waiting.saturating_sub(1);
                }
                self.start_on_replica(ctx, next, id, NodeId(job.node as u32));
            }
        }
        let mut gone = Vec::new();
        while ctx.nodes[job.node].free > 0 {
            let Some((build, id)) = self.slot_waiters[job.node].pop_front() else {
                break;
            };
            if self.view.replica(id).is_some() {
                self.start_on_replica(ctx, build, id, NodeId(job.node as u32));
            } else {
                gone.push(build);
            }
        }
        requeue(ctx, &mut self.pending, gone);
        self.sync_node(ctx, job.node);
        self.schedule(ctx);
    }

    fn node_down(&mut self, ctx: &mut Ctx, node: usize, killed: Vec<Job>) {
        self.sync_node(ctx, node);
        let mut back: Vec<usize> = killed.iter().map(|j| j.build).collect();
        back.extend(self.slot_waiters[node].drain(..).map(|(b, _)| b));
        self.expected[node].clear();
        let lost: Vec<ReplicaId> = self.view.replicas_on(NodeId(node as u32)).to_vec();
        for id in lost {
            let _ = self.view.remove_replica(id);
            back.extend(self.waiters.remove(&id).unwrap_or_default());
        }
        let view = &self.view;
        self.prewarming.retain(|_, id| view.replica(*id).is_some());
        requeue(ctx, &mut self.pending, back);
        self.schedule(ctx);
    }

    fn node_up(&mut self, ctx: &mut Ctx, node: usize) {
        self.sync_node(ctx, node);
        self.schedule(ctx);
    }

    fn timer(&mut self, ctx: &mut Ctx, token: u64) {
        if token == PREWARM_TICK {
            self.prewarm(ctx);
            let last = ctx.workload.builds.last().map_or(0.0, |b| b.at);
            if ctx.now < last {
                ctx.timer(PREWARM_EVERY, PREWARM_TICK);
            }
            return;
        }
        let Some(id) = self.prewarming.remove(&token) else {
            return;
        };
        let Some(r) = self.view.replica_mut(id) else {
            return;
        };
        r.state = ReplicaState::Idle;
        r.free_at = None;
        r.waiting = 0;
        let node = match r.location {
            Location::Node(n) => n,
            Location::Zone(_) => return,
        };
        let mut waiters: Vec<usize> = self.waiters.remove(&id).unwrap_or_default().into();
        if !waiters.is_empty() && ctx.nodes[node.0 as usize].free > 0 {
            let first = waiters.remove(0);
            self.start_on_replica(ctx, first, id, node);
        }
        requeue(ctx, &mut self.pending, waiters);
        self.schedule(ctx);
    }
}
