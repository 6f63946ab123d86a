//! The real `hearth controller` process against the fake API server (tests/cluster/apiserver)
//! holding a fleet at rest (benches/support/fleet.rs): by default 50,000 finished ImageBuilds,
//! 5,000 BuildCaches of two Idle saved replicas (their PVCs and PVs) over 50 namespaces and
//! 1,000 Nodes. Measures the time to the first full sync (every object reconciled once), the
//! controller's peak RSS (VmHWM), reconcile p50/p99 per controller from
//! `hearth_reconcile_duration_seconds`, and API writes per minute at rest; and the same process
//! on an empty cluster as the baseline.
//!
//! ```text
//! cargo bench --bench controller_scale                       # the issue's sizes
//! HEARTH_SCALE_BUILDS=5000 HEARTH_SCALE_CACHES=500 HEARTH_SCALE_WINDOW=20 \
//!     cargo bench --bench controller_scale                   # small
//! ```
//!
//! Sizes: `HEARTH_SCALE_BUILDS` (50000), `HEARTH_SCALE_CACHES` (5000), `HEARTH_SCALE_NODES`
//! (1000), `HEARTH_SCALE_NAMESPACES` (50); `HEARTH_SCALE_WINDOW` seconds at rest (60).
//! The fake API server runs in this process, on the same cores as the controller.

#[path = "../tests/cluster/mod.rs"]
#[allow(unused_imports)]
mod cluster;
#[path = "support/fleet.rs"]
mod fleet;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cluster::apiserver::ApiServer;
use cluster::snapshot_support::S3Server;
use cluster::values::{render_config, Values};
use fleet::Fleet;
use serde_json::Value;

const CONTROLLERS: [&str; 2] = ["imagebuild", "buildcache"];

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one run measured.
struct Run {
    fleet: Fleet,
    seeded: Duration,
    ready: Duration,
    synced: Option<Duration>,
    hwm_mib: f64,
    rss_mib: f64,
    sync_writes: BTreeMap<(String, String), u64>,
    rest_writes: BTreeMap<(String, String), u64>,
    window: Duration,
    /// Per controller: (count, p50 s, p99 s) over the whole run and over the window at rest.
    whole: BTreeMap<String, (f64, f64, f64)>,
    at_rest: BTreeMap<String, (f64, f64, f64)>,
    changed: Vec<String>,
}

fn main() {
    // `cargo bench` passes `--bench`; no other flag is meaningful here.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let fleet = Fleet {
        nodes: env_or("HEARTH_SCALE_NODES", 1000),
        caches: env_or("HEARTH_SCALE_CACHES", 5000),
        replicas_per_cache: 2,
        builds: env_or("HEARTH_SCALE_BUILDS", 50_000),
        namespaces: env_or("HEARTH_SCALE_NAMESPACES", 50),
    };
    let window = Duration::from_secs(env_or("HEARTH_SCALE_WINDOW", 60) as u64);
    println!("{}", machine());
    let empty = Fleet {
        nodes: 0,
        caches: 0,
        builds: 0,
        ..fleet
    };
    let baseline = run(empty, Duration::from_secs(10)).await;
    report("baseline: empty cluster", &baseline);
    let loaded = run(fleet, window).await;
    report("fleet at rest", &loaded);
}

/// CPUs, CPU model, kernel and the build profile.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let profile = if cfg!(debug_assertions) {
        "DEBUG build (figures are not the release ones)"
    } else {
        "release build"
    };
    format!(
        "machine: {cpus} CPUs, {model}, Linux {}; {profile}; the fake API server shares the CPUs",
        kernel.trim()
    )
}

async fn run(fleet: Fleet, window: Duration) -> Run {
    let api = ApiServer::start().await;
    let s3 = S3Server::start().await;
    let root = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    seed(&api, &fleet);
    let seeded = t.elapsed();
    // Watches start from a list; the seeding's events are of no use to anyone.
    api.compact();
    api.reset_counters();

    let kubeconfig = api.kubeconfig(root.path());
    let config_file = root.path().join("config.yaml");
    std::fs::write(&config_file, render_config(&Values::default(), &s3)).expect("config");
    let admin = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port()
    );
    let log_path = root.path().join("controller.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let started = Instant::now();
    let mut child = cluster::controller_command(
        &root.path().join("home"),
        &kubeconfig,
        &config_file,
        &admin,
        "info,kube=warn",
        log,
    )
    .spawn()
    .expect("hearth controller");
    let pid = child.id();

    let deadline = started + Duration::from_secs(3600);
    let wait = |what: &'static str| {
        if Instant::now() > deadline {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
            panic!(
                "{what} not reached in time; controller log:\n{}",
                cluster::tail(&std::fs::read_to_string(&log_path).unwrap_or_default(), 60)
            );
        }
    };
    while cluster::http_status(&admin, "/readyz").await != Some(200) {
        wait("readiness");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = started.elapsed();
    // The first full sync: every object reconciled once, by each controller.
    let want = [("imagebuild", fleet.builds), ("buildcache", fleet.caches)];
    let mut synced = None;
    let mut leading = false;
    while synced.is_none() {
        let text = metrics(&admin).await;
        leading = leading || series(&text, "hearth_leader", "") == Some(1.0);
        let done = want
            .iter()
            .all(|(c, n)| histogram(&text, c).map_or(0.0, |h| h.count) >= *n as f64);
        if leading && done {
            synced = Some(started.elapsed());
            break;
        }
        wait("the first full sync");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sync_writes = writes(&api);
    let before = versions(&api);
    let at_sync = metrics(&admin).await;
    api.reset_counters();
    tokio::time::sleep(window).await;
    let rest_writes = writes(&api);
    let changed = changes(&api, &before);
    let at_end = metrics(&admin).await;
    let (hwm_mib, rss_mib) = memory(pid);
    let _ = child.kill();
    let _ = child.wait();

    let mut whole = BTreeMap::new();
    let mut at_rest = BTreeMap::new();
    for c in CONTROLLERS {
        let (Some(end), Some(start)) = (histogram(&at_end, c), histogram(&at_sync, c)) else {
            continue;
        };
        whole.insert(c.to_string(), end.summary());
        at_rest.insert(c.to_string(), end.minus(&start).summary());
    }
    Run {
        fleet,
        seeded,
        ready,
        synced,
        hwm_mib,
        rss_mib,
        sync_writes,
        rest_writes,
        window,
        whole,
        at_rest,
        changed,
    }
}

/// Seeds the fleet without HTTP: namespaces, nodes, PVs, PVCs, caches, builds.
fn seed(api: &ApiServer, f: &Fleet) {
    api.ensure_namespace(cluster::OPERATOR_NS);
    for ns in f.namespace_names() {
        api.ensure_namespace(&ns);
    }
    let put = |resource: &str, v: Value| {
        api.seed_object(resource, v)
            .unwrap_or_else(|e| panic!("seeding {resource}: {e}"));
    };
    for i in 0..f.nodes {
        put("nodes", f.node(i));
    }
    let now = jiff::Timestamp::now().as_second();
    for i in 0..f.caches {
        for r in 0..f.replicas_per_cache {
            put("persistentvolumes", f.volume(i, r));
            put("persistentvolumeclaims", f.claim(i, r));
        }
        put("buildcaches", f.cache(i, now));
    }
    for i in 0..f.builds {
        put("imagebuilds", f.build(i, now));
    }
}

/// Write requests by (resource, verb): everything but get, list and watch.
fn writes(api: &ApiServer) -> BTreeMap<(String, String), u64> {
    api.request_counts()
        .into_iter()
        .filter(|((_, verb), _)| !matches!(verb.as_str(), "get" | "list" | "watch"))
        .collect()
}

/// resourceVersion of every object the controller may write.
fn versions(api: &ApiServer) -> BTreeMap<String, (String, Value)> {
    let mut out = BTreeMap::new();
    for resource in [
        "imagebuilds",
        "buildcaches",
        "persistentvolumeclaims",
        "pods",
        "jobs",
    ] {
        for obj in api.snapshot(resource) {
            let meta = &obj["metadata"];
            let key = format!(
                "{resource} {}/{}",
                meta["namespace"].as_str().unwrap_or(""),
                meta["name"].as_str().unwrap_or("")
            );
            let rv = meta["resourceVersion"].as_str().unwrap_or("").to_string();
            out.insert(key, (rv, obj));
        }
    }
    out
}

/// Objects created, changed or deleted since `before`, with the fields that changed (at most
/// 20 objects).
fn changes(api: &ApiServer, before: &BTreeMap<String, (String, Value)>) -> Vec<String> {
    let after = versions(api);
    let mut out = Vec::new();
    for (key, (rv, obj)) in &after {
        match before.get(key) {
            None => out.push(format!("{key}: created")),
            Some((old_rv, _)) if old_rv == rv => {}
            Some((_, old)) => {
                let mut fields = Vec::new();
                diff("", old, obj, &mut fields);
                out.push(format!("{key}: {}", fields.join(", ")));
            }
        }
    }
    for key in before.keys().filter(|k| !after.contains_key(*k)) {
        out.push(format!("{key}: deleted"));
    }
    out.truncate(20);
    out
}

/// JSON pointers where two documents differ (metadata.resourceVersion and managedFields
/// aside).
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    if path == "/metadata/resourceVersion" || path == "/metadata/managedFields" {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let null = Value::Null;
                let p = format!("{path}/{k}");
                diff(
                    &p,
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{path}: {a} -> {b}")),
        _ => {}
    }
}

/// VmHWM and VmRSS of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

async fn metrics(admin: &str) -> String {
    cluster::http_get(admin, "/metrics")
        .await
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// The value of a series: `name{labels}` exactly, labels as exposed (`""` for none).
fn series(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
}

/// One controller's reconcile-duration histogram: cumulative counts per upper bound.
#[derive(Clone, Debug)]
struct Histogram {
    buckets: Vec<(f64, f64)>,
    count: f64,
}

fn histogram(text: &str, controller: &str) -> Option<Histogram> {
    let name = "hearth_reconcile_duration_seconds";
    let label = format!("controller=\"{controller}\"");
    let mut buckets = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&format!("{name}_bucket{{")) else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        if !labels.split(',').any(|l| l == label) {
            continue;
        }
        let le = labels
            .split(',')
            .find_map(|l| l.strip_prefix("le=\""))?
            .trim_end_matches('"');
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().ok()?
        };
        buckets.push((le, value.trim().parse().ok()?));
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = series(text, &format!("{name}_count"), &label)?;
    Some(Histogram { buckets, count })
}

impl Histogram {
    fn minus(&self, earlier: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|((le, n), (_, m))| (*le, n - m))
                .collect(),
            count: self.count - earlier.count,
        }
    }

    /// The q-quantile as Prometheus's histogram_quantile computes it: linear within the
    /// bucket it falls in.
    fn quantile(&self, q: f64) -> f64 {
        if self.count <= 0.0 {
            return f64::NAN;
        }
        let rank = q * self.count;
        let mut lower = (0.0, 0.0);
        for &(le, n) in &self.buckets {
            if n >= rank {
                if le.is_infinite() {
                    return lower.0;
                }
                let within = (rank - lower.1) / (n - lower.1).max(f64::MIN_POSITIVE);
                return lower.0 + (le - lower.0) * within;
            }
            lower = (le, n);
        }
        lower.0
    }

    fn summary(&self) -> (f64, f64, f64) {
        (self.count, self.quantile(0.5), self.quantile(0.99))
    }
}

fn report(title: &str, r: &Run) {
    let f = &r.fleet;
    println!(
        "\n== {title}: {} ImageBuilds, {} BuildCaches ({} replicas, PVCs and PVs), {} Nodes, {} namespaces",
        f.builds,
        f.caches,
        f.caches * f.replicas_per_cache,
        f.nodes,
        f.namespace_names().len()
    );
    println!(
        "seeded in {:.1} s (in the fake server, no HTTP)",
        r.seeded.as_secs_f64()
    );
    println!(
        "ready (caches synced, /readyz 200): {:.1} s",
        r.ready.as_secs_f64()
    );
    match r.synced {
        Some(s) => println!(
            "first full sync (every object reconciled once): {:.1} s",
            s.as_secs_f64()
        ),
        None => println!("first full sync: not reached"),
    }
    println!(
        "peak RSS (VmHWM): {:.1} MiB; RSS at the end: {:.1} MiB",
        r.hwm_mib, r.rss_mib
    );
    println!("reconcile durations (histogram_quantile over hearth_reconcile_duration_seconds):");
    for (c, (n, p50, p99)) in &r.whole {
        println!(
            "  {c:<10} whole run: {n:>7} reconciles, p50 {:>8.2} ms, p99 {:>8.2} ms",
            p50 * 1e3,
            p99 * 1e3
        );
        if let Some((n, p50, p99)) = r.at_rest.get(c) {
            println!(
                "  {c:<10} at rest:   {n:>7} reconciles, p50 {:>8.2} ms, p99 {:>8.2} ms",
                p50 * 1e3,
                p99 * 1e3
            );
        }
    }
    let total = |w: &BTreeMap<(String, String), u64>| w.values().sum::<u64>();
    println!(
        "API writes until the first full sync: {}",
        total(&r.sync_writes)
    );
    for ((resource, verb), n) in &r.sync_writes {
        println!("  {verb:<8} {resource:<40} {n}");
    }
    let rest = total(&r.rest_writes);
    // Leader election renews its Lease every few seconds: that write is the price of HA,
    // not the controller's doing at rest.
    let lease: u64 = r
        .rest_writes
        .iter()
        .filter(|((resource, _), _)| resource.starts_with("leases."))
        .map(|(_, n)| n)
        .sum();
    let per_minute = |n: u64| n as f64 * 60.0 / r.window.as_secs_f64();
    println!(
        "API writes at rest: {} in {:.0} s = {:.1} per minute, besides {lease} Lease renewals ({:.1} per minute)",
        rest - lease,
        r.window.as_secs_f64(),
        per_minute(rest - lease),
        per_minute(lease)
    );
    for ((resource, verb), n) in &r.rest_writes {
        println!("  {verb:<8} {resource:<40} {n}");
    }
    for c in &r.changed {
        println!("  changed: {c}");
    }
}
