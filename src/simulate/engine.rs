//! The discrete-event core shared by every strategy: a time-ordered event queue (finishes
//! before node events before arrivals at equal times, then submission order), node slots and
//! liveness, running jobs (killed when their node goes down), and the outcome of every build.
//! A strategy only decides what to start where; the engine keeps the clock and the books.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use crate::api::Warmth;

use super::workload::Workload;

/// A build running on a node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Job {
    /// Index of the build in the workload.
    pub build: usize,
    /// Node index.
    pub node: usize,
    /// Cache warmth it started with.
    pub warmth: Warmth,
    /// Strategy-specific tag (for example the replica it holds).
    pub tag: u32,
}

impl Job {
    /// A job with no tag.
    pub fn new(build: usize, node: usize, warmth: Warmth) -> Self {
        Job {
            build,
            node,
            warmth,
            tag: 0,
        }
    }
}

/// How one build ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    /// Index of the build in the workload.
    pub build: usize,
    /// Seconds from submit to finish.
    pub latency: f64,
    /// Seconds from submit to its last start (queueing, and any run lost with a node).
    pub queued: f64,
    /// Node of its last start.
    pub node: usize,
    /// Warmth of its last start.
    pub warmth: Warmth,
}

/// A node's slots and liveness.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSlots {
    /// Whether it is up.
    pub up: bool,
    /// Free builder slots.
    pub free: u32,
    /// Builder slots.
    pub builders: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Finish(u64),
    Node(usize),
    Timer(u64),
    Arrival(usize),
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Event {
    at: f64,
    kind: Kind,
}

impl Eq for Event {}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: reverse to pop the earliest event first.
        other
            .at
            .total_cmp(&self.at)
            .then_with(|| other.kind.cmp(&self.kind))
    }
}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What a strategy does when things happen.
pub trait Strategy {
    /// A build is submitted.
    fn arrive(&mut self, ctx: &mut Ctx, build: usize);
    /// A job finished (its slot is already free).
    fn finish(&mut self, ctx: &mut Ctx, job: Job);
    /// A node went down; `killed` were running there and must be started again.
    fn node_down(&mut self, ctx: &mut Ctx, node: usize, killed: Vec<Job>);
    /// A node came back, empty.
    fn node_up(&mut self, ctx: &mut Ctx, node: usize);
    /// A timer the strategy set with [`Ctx::timer`] fired.
    fn timer(&mut self, _ctx: &mut Ctx, _token: u64) {}
}

/// The simulation's clock, slots and books.
pub struct Ctx<'w> {
    /// Current time.
    pub now: f64,
    /// The workload replayed.
    pub workload: &'w Workload,
    /// Per build: the factor its real build time differs from the workload's nominal one.
    pub factors: &'w [f64],
    /// Per node: slots and liveness.
    pub nodes: Vec<NodeSlots>,
    /// Bytes read from the store (restores, registry imports).
    pub store_bytes_read: f64,
    /// Replicas (or cache entries) evicted for room.
    pub evictions: u64,
    outcomes: Vec<Option<Outcome>>,
    events: BinaryHeap<Event>,
    running: HashMap<u64, (Job, f64)>,
    next_job: u64,
}

impl<'w> Ctx<'w> {
    fn new(workload: &'w Workload, factors: &'w [f64]) -> Self {
        let mut events = BinaryHeap::with_capacity(workload.builds.len() + 64);
        for (i, b) in workload.builds.iter().enumerate() {
            events.push(Event {
                at: b.at,
                kind: Kind::Arrival(i),
            });
        }
        for (i, e) in workload.node_events.iter().enumerate() {
            events.push(Event {
                at: e.at,
                kind: Kind::Node(i),
            });
        }
        let nodes = workload
            .cluster
            .nodes
            .iter()
            .map(|n| NodeSlots {
                up: true,
                free: n.builders,
                builders: n.builders,
            })
            .collect();
        Ctx {
            now: 0.0,
            workload,
            factors,
            nodes,
            store_bytes_read: 0.0,
            evictions: 0,
            outcomes: vec![None; workload.builds.len()],
            events,
            running: HashMap::new(),
            next_job: 0,
        }
    }

    /// Starts `job` now for `seconds`, taking one slot on its node.
    pub fn start(&mut self, job: Job, seconds: f64) {
        let slots = &mut self.nodes[job.node];
        debug_assert!(slots.up && slots.free > 0, "start on a full or down node");
        slots.free = slots.free.saturating_sub(1);
        let id = self.next_job;
        self.next_job += 1;
        self.running.insert(id, (job, self.now));
        self.events.push(Event {
            at: self.now + seconds.max(0.0),
            kind: Kind::Finish(id),
        });
    }

    /// Calls the strategy's `timer` with `token` in `seconds`.
    pub fn timer(&mut self, seconds: f64, token: u64) {
        self.events.push(Event {
            at: self.now + seconds.max(0.0),
            kind: Kind::Timer(token),
        });
    }

    /// Up nodes with a free slot, most free first, then lowest index.
    pub fn freest_node(&self) -> Option<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.up && n.free > 0)
            .max_by(|a, b| a.1.free.cmp(&b.1.free).then(b.0.cmp(&a.0)))
            .map(|(i, _)| i)
    }

    /// The build's nominal time scaled by its factor.
    pub fn actual(&self, build: usize, nominal: f64) -> f64 {
        nominal * self.factors[build]
    }
}

/// Runs `strategy` over the workload and returns every build's outcome, the store bytes read
/// and the evictions.
pub fn run(
    workload: &Workload,
    factors: &[f64],
    strategy: &mut dyn Strategy,
) -> (Vec<Outcome>, f64, u64) {
    let mut ctx = Ctx::new(workload, factors);
    while let Some(ev) = ctx.events.pop() {
        ctx.now = ev.at;
        match ev.kind {
            Kind::Arrival(b) => strategy.arrive(&mut ctx, b),
            Kind::Timer(token) => strategy.timer(&mut ctx, token),
            Kind::Finish(id) => {
                // A job killed with its node has no entry any more: its finish never happens.
                if let Some((job, started)) = ctx.running.remove(&id) {
                    ctx.nodes[job.node].free += 1;
                    let b = &ctx.workload.builds[job.build];
                    ctx.outcomes[job.build] = Some(Outcome {
                        build: job.build,
                        latency: ctx.now - b.at,
                        queued: started - b.at,
                        node: job.node,
                        warmth: job.warmth,
                    });
                    strategy.finish(&mut ctx, job);
                }
            }
            Kind::Node(i) => {
                let e = ctx.workload.node_events[i];
                let slots = &mut ctx.nodes[e.node];
                if e.up && !slots.up {
                    slots.up = true;
                    slots.free = slots.builders;
                    strategy.node_up(&mut ctx, e.node);
                } else if !e.up && slots.up {
                    slots.up = false;
                    slots.free = 0;
                    let mut dead: Vec<u64> = ctx
                        .running
                        .iter()
                        .filter(|(_, (j, _))| j.node == e.node)
                        .map(|(id, _)| *id)
                        .collect();
                    dead.sort_unstable();
                    let killed = dead
                        .iter()
                        .filter_map(|id| ctx.running.remove(id).map(|(j, _)| j))
                        .collect();
                    strategy.node_down(&mut ctx, e.node, killed);
                }
            }
        }
    }
    let outcomes = ctx.outcomes.iter().flatten().copied().collect();
    (outcomes, ctx.store_bytes_read, ctx.evictions)
}
