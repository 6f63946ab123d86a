//! Every transition of the ImageBuild lifecycle, as plain tests of the pure decision: what
//! was observed in, the next status, the effects and the next look out.

use super::*;
use crate::api::{BuildCacheStatus, ImageBuildSpec, ReplicaStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

const CREATED: i64 = 1_800_000_000;

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

fn build_with(spec: serde_json::Value) -> ImageBuild {
    let spec: ImageBuildSpec = serde_json::from_value(spec).expect("spec");
    let mut b = ImageBuild::new("api-1", spec);
    b.metadata.namespace = Some("shop".into());
    b.metadata.uid = Some("uid-1".into());
    b.metadata.generation = Some(1);
    b.metadata.creation_timestamp = Some(Time(t(CREATED)));
    b
}

fn build() -> ImageBuild {
    build_with(serde_json::json!({
        "source": {"git": {"url": "https://github.com/acme/shop.git", "revision": "main"}},
        "output": {"image": "registry.example.com/shop/api:1"}
    }))
}

fn read_only() -> ImageBuild {
    build_with(serde_json::json!({
        "source": {"git": {"url": "https://github.com/acme/shop.git", "revision": "main"}},
        "output": {"image": "registry.example.com/shop/api:1"},
        "cache": {"mode": "ReadOnly"}
    }))
}

fn key(b: &ImageBuild) -> String {
    keys::cache_key(&b.spec, &config().builder.default_arch)
}

fn cache_name(b: &ImageBuild) -> String {
    keys::cache_name_for_key(&key(b))
}

fn config() -> OperatorConfig {
    let mut c = OperatorConfig::default();
    c.snapshot.store = "s3://hearth/caches".into();
    c
}

fn observed(b: ImageBuild) -> Observed {
    Observed {
        build: b,
        now: t(CREATED + 60),
        config: Arc::new(config()),
        cache: None,
        pod: None,
        restore: None,
        job: None,
        plan: None,
        holds_claim: false,
        children: None,
        clone: None,
    }
}

/// A build in `phase`, placed on node-1 with `replica` of its own cache.
fn in_phase(mut b: ImageBuild, phase: Phase, replica: Option<&str>) -> ImageBuild {
    let cache = cache_name(&b);
    b.status = Some(ImageBuildStatus {
        phase: Some(phase),
        cache_key: Some(key(&b)),
        attempts: Some(1),
        start_time: Some(Time(t(CREATED))),
        placement: Some(Placement {
            node: Some("node-1".into()),
            replica: replica.map(String::from),
            cache: Some(cache),
            warmth: Some(Warmth::Hot),
            ..Placement::default()
        }),
        ..ImageBuildStatus::default()
    });
    b
}

fn restoring_build() -> ImageBuild {
    let mut b = in_phase(build(), Phase::Restoring, Some("c-r0"));
    let p = b.status.as_mut().unwrap().placement.as_mut().unwrap();
    p.warmth = Some(Warmth::Restored);
    p.restored_from = Some(RestoredFrom {
        key: "main-key".into(),
        snapshot: "s-1".into(),
        cache: Some("shop-main".into()),
        manifest_sha256: Some("ab".repeat(32)),
    });
    b
}

/// A Succeeded build whose save is under way.
fn saving_build() -> ImageBuild {
    let mut b = in_phase(build(), Phase::Succeeded, Some("c-r0"));
    let status = b.status.as_mut().unwrap();
    status.completion_time = Some(Time(t(CREATED + 30)));
    set_condition_unknown(
        status,
        condition::SNAPSHOTTED,
        "Saving",
        "",
        Some(1),
        t(CREATED + 30),
    );
    b
}

fn cache_of(b: &ImageBuild, replicas: Vec<ReplicaStatus>) -> BuildCache {
    let spec = serde_json::from_value(serde_json::json!({"key": key(b), "maxReplicas": 2}))
        .expect("cache spec");
    let mut c = BuildCache::new(&cache_name(b), spec);
    c.metadata.namespace = Some("shop".into());
    c.metadata.uid = Some("uid-c".into());
    c.status = Some(BuildCacheStatus {
        replicas,
        ..BuildCacheStatus::default()
    });
    c
}

fn replica(pvc: &str, state: ReplicaState, holder: Option<&str>) -> ReplicaStatus {
    ReplicaStatus {
        pvc: pvc.into(),
        node: Some("node-1".into()),
        zone: None,
        state,
        holder: holder.map(String::from),
        size_bytes: None,
        last_used: None,
        snapshot_id: None,
        builds_since_snapshot: None,
        uses: None,
        reason: None,
        cloning_for: None,
    }
}

fn plan(action: PlannedAction) -> Planned {
    Planned {
        reason: "because".into(),
        registry_seed: false,
        warmth: match &action {
            PlannedAction::UseReplica { .. } => Warmth::Hot,
            PlannedAction::Restore { .. } => Warmth::Restored,
            _ => Warmth::Cold,
        },
        wait_seconds: 12.0,
        evictions: Vec::new(),
        action,
    }
}

fn cold(throwaway: bool) -> Planned {
    plan(PlannedAction::Cold {
        node: "node-2".into(),
        throwaway,
    })
}

fn restore(throwaway: bool) -> Planned {
    plan(PlannedAction::Restore {
        node: "node-2".into(),
        key: "main-key".into(),
        snapshot: "s-1".into(),
        bytes: 5_000,
        source_cache: Some("shop-main".into()),
        manifest_sha256: Some("ab".repeat(32)),
        throwaway,
    })
}

fn placing(b: ImageBuild) -> ImageBuild {
    let mut b = in_phase(b, Phase::Placing, None);
    b.status.as_mut().unwrap().placement = None;
    b
}

fn decided(o: &Observed) -> Decision {
    decide(o).expect("a decision")
}

fn cond<'a>(s: &'a ImageBuildStatus, type_: &str) -> (&'a str, &'a str) {
    let c = super::super::status::condition_of(s, type_).expect(type_);
    (c.status.as_str(), c.reason.as_str())
}

fn releases(d: &Decision) -> Vec<&Release> {
    d.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Release { how, .. } => Some(how),
            _ => None,
        })
        .collect()
}

fn events(d: &Decision) -> Vec<(&'static str, bool)> {
    d.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Event { reason, type_, .. } => Some((*reason, *type_ == EventType::Warning)),
            _ => None,
        })
        .collect()
}

fn running_pods(unfinished: usize) -> Children {
    Children {
        jobs: vec!["api-1-save-1".into()],
        pods: vec!["api-1-build-1".into()],
        unfinished,
    }
}

// ---- start ----

#[test]
fn a_new_build_records_its_key_and_goes_to_placing() {
    let d = decided(&observed(build()));
    assert_eq!(d.status.phase, Some(Phase::Placing));
    assert_eq!(d.status.cache_key.as_deref(), Some(key(&build()).as_str()));
    assert_eq!(d.status.attempts, Some(1));
    assert_eq!(d.status.start_time, Some(Time(t(CREATED + 60))));
    assert!(d.effects.is_empty());
    assert_eq!(d.next, Next::Soon);
}

#[test]
fn a_build_that_cannot_run_fails_naming_the_field() {
    let b = build_with(serde_json::json!({
        "source": {"context": {"url": "s3://bucket/ctx.tar.gz"}},
        "output": {"image": "registry.example.com/shop/api:1"}
    }));
    let d = decided(&observed(b));
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert!(d
        .status
        .message
        .as_deref()
        .unwrap()
        .contains("spec.source.context.url"));
    assert_eq!(
        cond(&d.status, condition::SUCCEEDED),
        ("False", "InvalidSpec")
    );
    assert_eq!(events(&d), [("InvalidSpec", true)]);
    assert_eq!(d.next, Next::Done);
}

// ---- cancel and timeout ----

#[test]
fn cancel_ends_the_build_at_once_but_keeps_the_replica_while_its_pod_runs() {
    let mut b = in_phase(build(), Phase::Building, Some("c-r0"));
    b.spec.cancel = true;
    let mut o = observed(b);
    o.children = Some(running_pods(1));
    let d = decided(&o);
    assert_eq!(d.status.phase, Some(Phase::Cancelled));
    assert!(matches!(d.effects[0], Effect::StopChildren(ref c) if c.pods == ["api-1-build-1"]));
    assert!(releases(&d).is_empty(), "released while its pod still runs");
    assert_eq!(events(&d), [("Cancelled", false)]);
}

#[test]
fn cancel_with_nothing_running_releases_the_replica_as_changed() {
    let mut b = in_phase(build(), Phase::Building, Some("c-r0"));
    b.spec.cancel = true;
    let mut o = observed(b);
    o.children = Some(Children::default());
    let d = decided(&o);
    assert_eq!(
        releases(&d),
        [&Release::Done {
            changed: true,
            saved: None,
            warmth: None,
            build: None
        }]
    );
}

#[test]
fn a_build_past_its_timeout_fails_with_the_timeout_named() {
    let mut o = observed(in_phase(build(), Phase::Building, Some("c-r0")));
    o.now = t(CREATED + 3601);
    o.children = Some(running_pods(1));
    let d = decided(&o);
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(cond(&d.status, condition::SUCCEEDED), ("False", "Timeout"));
    assert!(d
        .status
        .message
        .as_deref()
        .unwrap()
        .contains("spec.timeout (1h0m0s)"));
    assert!(d
        .effects
        .iter()
        .any(|e| matches!(e, Effect::StopChildren(_))));
}

// ---- placing ----

#[test]
fn a_keys_first_read_write_build_creates_its_cache_then_a_cold_replica() {
    let mut o = observed(placing(build()));
    o.plan = Some(cold(false));
    let d = decided(&o);
    let name = cache_name(&build());
    assert!(matches!(&d.effects[0], Effect::CreateCache(c) if c.name_any() == name));
    assert!(d.effects.iter().any(|e| matches!(e,
        Effect::AddReplica { pvc, node, state: ReplicaState::InUse, size_bytes: None, clone_of: None }
            if *pvc == format!("{name}-r0") && node == "node-2")));
    assert_eq!(d.status.phase, Some(Phase::Building));
    let p = d.status.placement.as_ref().unwrap();
    assert_eq!(
        (p.node.as_deref(), p.cache.as_deref()),
        (Some("node-2"), Some(name.as_str()))
    );
    assert_eq!(cond(&d.status, condition::CACHE_READY), ("True", "Cold"));
    assert!(cond_message(&d.status, condition::CACHE_READY).contains("no BuildCache yet"));
    assert_eq!(cond(&d.status, condition::PLACED), ("True", "Cold"));
    assert_eq!(
        d.status.durations.as_ref().unwrap().queued.as_deref(),
        Some("1m0s")
    );
    assert_eq!(events(&d), [("Placed", false)]);
    assert_eq!(d.next, Next::Soon);
}

fn importing() -> ImageBuild {
    build_with(serde_json::json!({
        "source": {"git": {"url": "https://github.com/acme/shop.git", "revision": "main"}},
        "output": {"image": "registry.example.com/shop/api:1"},
        "cache": {"registry": {"importFrom": ["registry.example.com/shop/api:cache"]}}
    }))
}

#[test]
fn a_seeded_cold_placement_records_the_registry_refs_and_its_pod_imports_them() {
    let mut o = observed(placing(importing()));
    let mut p = cold(false);
    p.registry_seed = true;
    o.plan = Some(p);
    let d = decided(&o);
    let placement = d.status.placement.clone().unwrap();
    assert_eq!(
        placement.imported_from,
        ["registry.example.com/shop/api:cache"]
    );
    // The next look creates the builder pod: it imports what the placement says.
    let mut placed = importing();
    placed.status = Some(d.status);
    let d = decided(&observed(placed));
    let args = created_pod(&d).spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(args.windows(2).any(|w| w[0] == "--import-cache"
        && w[1] == "type=registry,ref=registry.example.com/shop/api:cache"));
}

#[test]
fn an_unseeded_placement_imports_nothing_though_the_build_names_registry_caches() {
    let mut o = observed(placing(importing()));
    o.plan = Some(cold(false));
    let d = decided(&o);
    assert!(d
        .status
        .placement
        .as_ref()
        .unwrap()
        .imported_from
        .is_empty());
    let d = decided(&observed(in_phase(
        importing(),
        Phase::Building,
        Some("c-r0"),
    )));
    let args = created_pod(&d).spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(!args.contains(&"--import-cache".to_string()));
}

fn cond_message(s: &ImageBuildStatus, type_: &str) -> String {
    super::super::status::condition_of(s, type_)
        .unwrap()
        .message
        .clone()
}

#[test]
fn a_missing_cache_ref_fails_the_build_naming_the_field() {
    let mut b = placing(build());
    b.spec.cache.cache_ref = Some("nope".into());
    let mut o = observed(b);
    o.plan = Some(cold(false));
    let d = decided(&o);
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert!(d
        .status
        .message
        .as_deref()
        .unwrap()
        .starts_with("spec.cache.cacheRef: BuildCache nope does not exist"));
    assert!(!d
        .effects
        .iter()
        .any(|e| matches!(e, Effect::CreateCache(_))));
}

#[test]
fn a_cache_ref_to_another_keys_cache_fails_the_build() {
    let b = placing(build());
    let mut o = observed(b.clone());
    let mut other = cache_of(&b, vec![]);
    other.spec.key = "someone-else".into();
    o.cache = Some(other);
    o.plan = Some(cold(false));
    let d = decided(&o);
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert!(d
        .status
        .message
        .as_deref()
        .unwrap()
        .contains("has key \"someone-else\""));
}

#[test]
fn waiting_keeps_placing_with_the_expected_wait_and_still_makes_room() {
    let mut o = observed(placing(build()));
    let mut p = plan(PlannedAction::Wait);
    p.evictions = vec![Victim {
        namespace: "shop".into(),
        cache: "old".into(),
        pvc: "old-r0".into(),
    }];
    o.plan = Some(p);
    o.cache = Some(cache_of(&build(), vec![]));
    let d = decided(&o);
    assert_eq!(d.status.phase, Some(Phase::Placing));
    assert_eq!(
        d.status
            .placement
            .as_ref()
            .unwrap()
            .expected_wait
            .as_deref(),
        Some("12s")
    );
    assert!(matches!(&d.effects[..], [Effect::Evict(v)] if v.pvc == "old-r0"));
    assert_eq!(d.next, Next::Wait(12.0));
}

#[test]
fn a_hot_placement_claims_the_idle_replica() {
    let b = placing(build());
    let mut o = observed(b.clone());
    o.cache = Some(cache_of(
        &b,
        vec![replica("c-r0", ReplicaState::Idle, None)],
    ));
    o.plan = Some(plan(PlannedAction::UseReplica {
        namespace: "shop".into(),
        cache: cache_name(&b),
        pvc: "c-r0".into(),
        node: "node-1".into(),
    }));
    let d = decided(&o);
    assert!(d
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Claim { pvc, .. } if pvc == "c-r0")));
    assert_eq!(d.status.phase, Some(Phase::Building));
    assert_eq!(
        d.status.placement.as_ref().unwrap().replica.as_deref(),
        Some("c-r0")
    );
    assert_eq!(cond(&d.status, condition::CACHE_READY), ("True", "Hot"));
}

#[test]
fn a_restore_adds_a_restoring_replica_sized_for_the_snapshot_and_names_its_source_cache() {
    let b = placing(build());
    let mut o = observed(b.clone());
    o.cache = Some(cache_of(
        &b,
        vec![replica("c-r0", ReplicaState::Lost, None)],
    ));
    o.plan = Some(restore(false));
    let d = decided(&o);
    let name = cache_name(&b);
    assert!(d.effects.iter().any(|e| matches!(e,
        Effect::AddReplica { pvc, state: ReplicaState::Restoring, size_bytes: Some(5_000), .. }
            if *pvc == format!("{name}-r0"))));
    assert_eq!(d.status.phase, Some(Phase::Restoring));
    let from = d
        .status
        .placement
        .as_ref()
        .unwrap()
        .restored_from
        .clone()
        .unwrap();
    assert_eq!(
        (from.snapshot.as_str(), from.cache.as_deref()),
        ("s-1", Some("shop-main"))
    );
    assert_eq!(
        cond(&d.status, condition::CACHE_READY),
        ("False", "Restoring")
    );
}

#[test]
fn a_read_only_restore_is_a_throwaway_copy_and_adds_no_replica() {
    let b = placing(read_only());
    let mut o = observed(b);
    o.plan = Some(restore(true));
    let d = decided(&o);
    assert!(!d
        .effects
        .iter()
        .any(|e| matches!(e, Effect::AddReplica { .. } | Effect::CreateCache(_))));
    assert_eq!(d.status.phase, Some(Phase::Restoring));
    let p = d.status.placement.as_ref().unwrap();
    assert_eq!(
        (p.replica.as_deref(), p.cache.as_deref()),
        (None, Some("shop-main"))
    );
    assert_eq!(
        cond(&d.status, condition::CACHE_READY),
        ("False", "Restoring")
    );
    assert!(cond_message(&d.status, condition::CACHE_READY).contains("discarded after the build"));
    // Its builder pod seeds the throwaway volume in its restore init container.
    let pod = created_pod(&decided(&observed(d.status_in(read_only()))));
    assert_eq!(init_names(&pod), ["restore"]);
}

#[test]
fn a_read_only_cold_build_creates_nothing() {
    let mut o = observed(placing(read_only()));
    o.plan = Some(cold(true));
    let d = decided(&o);
    assert!(d
        .effects
        .iter()
        .all(|e| matches!(e, Effect::Measure(_) | Effect::Event { .. })));
    assert_eq!(d.status.placement.as_ref().unwrap().replica, None);
}

#[test]
fn a_cache_at_max_replicas_waits_instead_of_growing() {
    let b = placing(build());
    let mut o = observed(b.clone());
    o.cache = Some(cache_of(
        &b,
        vec![
            replica("c-r0", ReplicaState::InUse, Some("x")),
            replica("c-r1", ReplicaState::InUse, Some("y")),
        ],
    ));
    o.plan = Some(cold(false));
    let d = decided(&o);
    assert!(!d
        .effects
        .iter()
        .any(|e| matches!(e, Effect::AddReplica { .. })));
    assert_eq!(d.status.phase, Some(Phase::Placing));
    assert!(d
        .status
        .message
        .as_deref()
        .unwrap()
        .contains("at maxReplicas (2)"));
    assert_eq!(d.status.placement.as_ref().unwrap().node, None);
    assert_eq!(d.next, Next::AtCapacity);
}

#[test]
fn a_placement_whose_status_write_was_lost_keeps_the_replica_it_added() {
    let b = placing(build());
    let mut o = observed(b.clone());
    o.cache = Some(cache_of(
        &b,
        vec![replica("c-r5", ReplicaState::InUse, Some("api-1"))],
    ));
    o.plan = Some(cold(false));
    let d = decided(&o);
    assert!(d
        .effects
        .iter()
        .any(|e| matches!(e, Effect::AddReplica { pvc, .. } if pvc == "c-r5")));
}

#[test]
fn a_hot_claim_whose_status_write_was_lost_is_resumed_not_doubled() {
    // The build claimed c-r0 (used before: hot), then its status write conflicted. The
    // planner now sees c-r0 busy and proposes a restore elsewhere: the build keeps c-r0.
    let b = placing(build());
    let mut o = observed(b.clone());
    let mut held = replica("c-r0", ReplicaState::InUse, Some("api-1"));
    held.last_used = Some(Time(t(CREATED - 3600)));
    o.cache = Some(cache_of(&b, vec![held]));
    o.plan = Some(restore(false));
    let d = decided(&o);
    assert!(d
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Claim { pvc, .. } if pvc == "c-r0")));
    assert!(!d
        .effects
        .iter()
        .any(|e| matches!(e, Effect::AddReplica { .. } | Effect::CreateJob(_))));
    let placement = d.status.placement.as_ref().unwrap();
    assert_eq!(placement.node.as_deref(), Some("node-1"));
    assert_eq!(placement.replica.as_deref(), Some("c-r0"));
    assert_eq!(cond(&d.status, condition::CACHE_READY), ("True", "Hot"));
}

#[test]
fn evictions_come_before_the_new_replica() {
    let b = placing(build());
    let mut o = observed(b.clone());
    o.cache = Some(cache_of(&b, vec![]));
    let mut p = cold(false);
    p.evictions = vec![Victim {
        namespace: "other".into(),
        cache: "big".into(),
        pvc: "big-r0".into(),
    }];
    o.plan = Some(p);
    let d = decided(&o);
    let evict = d
        .effects
        .iter()
        .position(|e| matches!(e, Effect::Evict(_)))
        .unwrap();
    let add = d
        .effects
        .iter()
        .position(|e| matches!(e, Effect::AddReplica { .. }))
        .unwrap();
    assert!(evict < add);
}

#[test]
fn placing_without_the_planners_decision_is_an_internal_error() {
    let o = observed(placing(build()));
    assert!(matches!(decide(&o), Err(Error::Internal(_))));
}

// ---- restoring: the builder pod's init container ----

/// The pod a decision creates.
fn created_pod(d: &Decision) -> Pod {
    match d.effects.iter().find_map(|e| match e {
        Effect::CreatePod(p) => Some(p),
        _ => None,
    }) {
        Some(pod) => (**pod).clone(),
        None => panic!("no pod: {:?}", d.effects),
    }
}

fn init_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .unwrap()
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect()
}

impl Decision {
    /// `b` with this decision's status, as the next look reads it.
    fn status_in(&self, mut b: ImageBuild) -> ImageBuild {
        b.status = Some(self.status.clone());
        b
    }
}

fn restore_failed_pod() -> Option<PodOutcome> {
    Some(PodOutcome::Failed {
        reason: "RestoreFailed".into(),
        message: "container restore exited 1: store unreachable".into(),
    })
}

#[test]
fn a_restore_placement_gets_a_builder_pod_that_restores_first_and_no_job() {
    let d = decided(&observed(restoring_build()));
    assert!(
        !d.effects.iter().any(|e| matches!(e, Effect::CreateJob(_))),
        "no restore Job: {:?}",
        d.effects
    );
    let pod = created_pod(&d);
    assert_eq!(pod.name_any(), "api-1-build-1");
    assert_eq!(init_names(&pod), ["restore"]);
    let spec = pod.spec.as_ref().unwrap();
    let init = &spec.init_containers.as_ref().unwrap()[0];
    // It reads the snapshot from the cache that saved it, pinned to the recorded digest...
    let env = init.env.clone().unwrap();
    let cache = env.iter().find(|e| e.name == "HEARTH_CACHE").unwrap();
    assert_eq!(cache.value.as_deref(), Some("shop-main"));
    let args = init.args.clone().unwrap();
    assert_eq!(args[..4], ["snapshot", "restore", "s-1", "/cache/buildkit"]);
    let pin = args.iter().position(|a| a == "--manifest-sha256").unwrap();
    assert_eq!(
        args[pin + 1],
        "ab".repeat(32),
        "pinned to the recorded digest"
    );
    // ...into the replica the build then uses, with the store Secret it alone mounts.
    assert!(init
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.name == "cache" && m.mount_path == "/cache"));
    assert!(spec.volumes.iter().flatten().any(|v| v
        .persistent_volume_claim
        .as_ref()
        .is_some_and(|c| c.claim_name == "c-r0")));
    assert!(spec.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .all(|m| !m.mount_path.starts_with("/run/hearth/store")));
    assert_eq!(d.status.phase, Some(Phase::Restoring));
    assert_eq!(d.status.message.as_deref(), Some("restoring s-1 on node-1"));
    assert_eq!(d.next, Next::Poll);
}

#[test]
fn a_restore_without_a_recorded_digest_is_not_started_and_the_build_goes_cold() {
    // Placed by a version before pinning: nothing vouches for the manifest in the store.
    let mut b = restoring_build();
    let p = b.status.as_mut().unwrap().placement.as_mut().unwrap();
    p.restored_from.as_mut().unwrap().manifest_sha256 = None;
    let d = decided(&observed(b));
    assert!(
        !d.effects
            .iter()
            .any(|e| matches!(e, Effect::CreateJob(_) | Effect::CreatePod(_))),
        "nothing started: {:?}",
        d.effects
    );
    builds_cold_after_restore(&d);
    assert_eq!(d.status.attempts, Some(1), "no pod failed");
    let placement = d.status.placement.as_ref().unwrap();
    let why = placement.reason.as_deref().unwrap();
    assert!(
        why.contains("s-1") && why.contains("no recorded manifest digest"),
        "{why}"
    );
    let pod = created_pod(&decided(&observed(d.status_in(build()))));
    assert_eq!(pod.name_any(), "api-1-build-1");
    assert!(init_names(&pod).is_empty(), "built cold");
}

#[test]
fn a_cold_story_counts_the_snapshots_that_cannot_be_restored() {
    let b = build();
    let mut cache = cache_of(&b, Vec::new());
    let record = |id: &str, pin: Option<String>| SnapshotRecord {
        id: id.into(),
        time: Time(t(CREATED)),
        bytes: 1,
        new_bytes: 1,
        manifest_sha256: pin,
    };
    cache.status.as_mut().unwrap().snapshots = vec![
        record("listed", None),
        record("saved", Some("ab".repeat(32))),
    ];
    let story = cold_story("k", &[], Some(&cache), "no cache");
    assert!(
        story.contains("2 snapshot(s) (1 without a recorded manifest digest, never restored"),
        "{story}"
    );
}

#[test]
fn a_running_restore_is_polled_without_a_write() {
    let b = restoring_build();
    let mut o = observed(b.clone());
    o.pod = Some(PodOutcome::Running);
    o.restore = Some(JobOutcome::Running);
    let d = decided(&o);
    assert!(d.effects.is_empty());
    assert_eq!(Some(&d.status), b.status.as_ref());
    assert_eq!(d.next, Next::Poll);
}

#[test]
fn a_finished_restore_records_the_snapshot_on_the_replica_and_the_build_goes_on() {
    let mut o = observed(restoring_build());
    o.pod = Some(PodOutcome::Running);
    o.restore = Some(JobOutcome::Succeeded {
        result: Some(r#"{"bytes":5000,"seconds":3.9}"#.into()),
        seconds: Some(4.0),
    });
    let d = decided(&o);
    assert_eq!(
        releases(&d),
        [&Release::Restored {
            snapshot: "s-1".into(),
            sample: Some((5000, 3.9)),
        }]
    );
    assert!(d
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Measure(Sample::Transfer("restore", 5000)))));
    assert_eq!(d.status.phase, Some(Phase::Building));
    assert_eq!(
        d.status.durations.as_ref().unwrap().restore.as_deref(),
        Some("4s")
    );
    assert_eq!(
        cond(&d.status, condition::CACHE_READY),
        ("True", "Restored")
    );
    assert_eq!(d.next, Next::Poll, "the build runs on in the same pod");
    // The next look follows the same pod: no second one.
    let mut next = observed(d.status_in(build()));
    next.pod = Some(PodOutcome::Running);
    next.restore = o.restore.clone();
    let again = decided(&next);
    assert!(again.effects.is_empty(), "{:?}", again.effects);
}

#[test]
fn a_restore_and_build_both_seen_finished_record_the_restore_then_release() {
    let mut o = observed(restoring_build());
    o.pod = succeeded_pod();
    o.restore = Some(JobOutcome::Succeeded {
        result: None,
        seconds: Some(2.0),
    });
    let d = decided(&o);
    assert_eq!(d.status.phase, Some(Phase::Succeeded));
    assert!(
        matches!(
            releases(&d)[..],
            [
                Release::Restored { .. },
                Release::Snapshotting | Release::Done { .. }
            ]
        ),
        "{:?}",
        releases(&d)
    );
    assert_eq!(
        cond(&d.status, condition::CACHE_READY),
        ("True", "Restored")
    );
}

#[test]
fn a_failed_restore_builds_cold_in_the_next_attempt_saying_why() {
    let mut o = observed(restoring_build());
    o.pod = restore_failed_pod();
    o.restore = Some(JobOutcome::Failed {
        message: "container restore exited 1: pack p-1 is missing from the store".into(),
    });
    let d = decided(&o);
    builds_cold_after_restore(&d);
    assert_eq!(d.status.attempts, Some(2));
    let message = d.status.message.clone().unwrap();
    assert!(
        message.contains("restore of s-1 failed") && message.contains("pack p-1 is missing"),
        "{message}"
    );
    assert!(d
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Measure(Sample::StoreFailed("restore")))));
    // The next attempt: a new pod on the same replica, without the restore.
    let next = decided(&observed(d.status_in(build())));
    let pod = created_pod(&next);
    assert_eq!(pod.name_any(), "api-1-build-2");
    assert!(init_names(&pod).is_empty(), "built cold");
    assert!(pod.spec.unwrap().volumes.unwrap().iter().any(|v| v
        .persistent_volume_claim
        .as_ref()
        .is_some_and(|c| c.claim_name == "c-r0")));
}

#[test]
fn a_failed_seed_restore_of_a_read_only_build_builds_cold_in_the_next_attempt() {
    let mut b = restoring_build();
    b.spec = read_only().spec;
    let p = b.status.as_mut().unwrap().placement.as_mut().unwrap();
    p.replica = None;
    p.cache = Some("shop-main".into());
    let mut o = observed(b);
    o.pod = restore_failed_pod();
    o.restore = Some(JobOutcome::Failed {
        message: "container restore exited 1: store unreachable".into(),
    });
    let d = decided(&o);
    assert!(releases(&d).is_empty(), "no replica to release");
    assert_eq!(d.status.phase, Some(Phase::Building));
    assert_eq!(d.status.attempts, Some(2));
    let pod = created_pod(&decided(&observed(d.status_in(read_only()))));
    assert_eq!(pod.name_any(), "api-1-build-2");
    assert!(init_names(&pod).is_empty(), "an empty throwaway volume");
}

/// The replica is handed back as it was (matching no snapshot) and the build goes on cold,
/// saying why.
fn builds_cold_after_restore(d: &Decision) {
    assert_eq!(releases(d), [&Release::RestoreFailed]);
    assert_eq!(d.status.phase, Some(Phase::Building));
    assert_eq!(
        d.status.placement.as_ref().unwrap().warmth,
        Some(Warmth::Cold)
    );
    assert_eq!(
        cond(&d.status, condition::CACHE_READY),
        ("True", "RestoreFailed")
    );
    assert_eq!(events(d), [("RestoreFailed", true)]);
}

#[test]
fn a_node_lost_during_the_restore_retries_the_build_elsewhere() {
    let mut o = observed(restoring_build());
    o.pod = Some(PodOutcome::NodeLost);
    o.restore = Some(JobOutcome::Running);
    let d = decided(&o);
    assert_eq!(releases(&d), [&Release::Lost]);
    assert_eq!(d.status.phase, Some(Phase::Placing));
}

#[test]
fn restoring_without_a_snapshot_in_status_is_an_internal_error() {
    let mut b = restoring_build();
    b.status
        .as_mut()
        .unwrap()
        .placement
        .as_mut()
        .unwrap()
        .restored_from = None;
    assert!(matches!(decide(&observed(b)), Err(Error::Internal(_))));
}

// ---- building ----

#[test]
fn a_placed_build_gets_its_builder_pod_on_its_replica_and_node() {
    let b = in_phase(build(), Phase::Building, Some("c-r0"));
    let d = decided(&observed(b));
    let Effect::CreatePod(pod) = &d.effects[0] else {
        panic!("no pod: {:?}", d.effects)
    };
    assert_eq!(pod.name_any(), "api-1-build-1");
    assert_eq!(
        pod.labels().get(NODE_LABEL).map(String::as_str),
        Some("node-1")
    );
    let volumes = pod
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .clone()
        .unwrap_or_default();
    assert!(volumes.iter().any(|v| v
        .persistent_volume_claim
        .as_ref()
        .is_some_and(|c| c.claim_name == "c-r0")));
    assert_eq!(d.status.message.as_deref(), Some("building on node-1"));
    assert_eq!(d.next, Next::Poll);
}

#[test]
fn a_running_build_is_left_alone() {
    let b = in_phase(build(), Phase::Building, Some("c-r0"));
    let mut o = observed(b.clone());
    o.pod = Some(PodOutcome::Running);
    let d = decided(&o);
    assert!(d.effects.is_empty());
    assert_eq!(Some(&d.status), b.status.as_ref());
}

fn succeeded_pod() -> Option<PodOutcome> {
    Some(PodOutcome::Succeeded {
        digest: Some("sha256:abc".into()),
        seconds: Some(20.0),
        prune: None,
        git_commit: Some("1c2bbabf754d852521421e57e6878984a39c3a09".into()),
        image_size: Some(351_181),
    })
}

#[test]
fn success_with_a_save_due_publishes_succeeded_first_and_holds_the_replica_for_the_save() {
    let b = in_phase(build(), Phase::Building, Some("c-r0"));
    let mut o = observed(b.clone());
    o.pod = succeeded_pod();
    o.cache = Some(cache_of(
        &b,
        vec![replica("c-r0", ReplicaState::InUse, Some("api-1"))],
    ));
    let d = decided(&o);
    assert_eq!(d.status.phase, Some(Phase::Succeeded));
    assert_eq!(d.status.image_digest.as_deref(), Some("sha256:abc"));
    assert_eq!(
        d.status.git_commit.as_deref(),
        Some("1c2bbabf754d852521421e57e6878984a39c3a09"),
        "the commit the git source's revision resolved to"
    );
    assert_eq!(d.status.image_size, Some(351_181));
    assert_eq!(
        d.status.image.as_deref(),
        Some("registry.example.com/shop/api@sha256:abc")
    );
    assert_eq!(d.status.tags, ["registry.example.com/shop/api:1"]);
    assert_eq!(
        cond(&d.status, condition::SNAPSHOTTED),
        ("Unknown", "Saving")
    );
    assert!(saving(&d.status));
    assert_eq!(releases(&d), [&Release::Snapshotting]);
    assert_eq!(d.next, Next::Soon);
}

#[test]
fn a_pushed_build_reports_its_image_by_digest_and_every_tag_a_build_only_check_none() {
    let tagged = build_with(serde_json::json!({
        "source": {"git": {"url": "https://github.com/acme/shop.git", "revision": "main"}},
        "output": {"image": "registry.example.com/shop/api:1", "tags": ["latest", "mirror.example.com/shop/api:1"]}
    }));
    let mut o = observed(in_phase(tagged, Phase::Building, None));
    o.pod = succeeded_pod();
    let d = decided(&o);
    assert_eq!(
        d.status.image.as_deref(),
        Some("registry.example.com/shop/api@sha256:abc")
    );
    assert_eq!(
        d.status.tags,
        [
            "registry.example.com/shop/api:1",
            "registry.example.com/shop/api:latest",
            "mirror.example.com/shop/api:1"
        ]
    );
    let check = build_with(serde_json::json!({
        "source": {"git": {"url": "https://github.com/acme/shop.git", "revision": "main"}},
        "output": {"image": "registry.example.com/shop/api:1", "push": false}
    }));
    let mut o = observed(in_phase(check, Phase::Building, None));
    o.pod = succeeded_pod();
    let d = decided(&o);
    assert_eq!(d.status.phase, Some(Phase::Succeeded));
    assert_eq!(d.status.image, None);
    assert!(d.status.tags.is_empty());
}

#[test]
fn success_without_a_save_due_releases_the_replica_as_changed() {
    let b = in_phase(build(), Phase::Building, Some("c-r0"));
    let mut o = observed(b.clone());
    o.pod = succeeded_pod();
    let mut c = cache_of(
        &b,
        vec![replica("c-r0", ReplicaState::InUse, Some("api-1"))],
    );
    c.spec.snapshot.every = 5;
    o.cache = Some(c);
    let d = decided(&o);
    assert_eq!(
        cond(&d.status, condition::SNAPSHOTTED),
        ("False", "NotNeeded")
    );
    assert!(matches!(
        releases(&d)[..],
        [Release::Done {
            changed: true,
            saved: None,
            warmth: Some(Warmth::Hot),
            build: Some(_)
        }]
    ));
    assert_eq!(d.next, Next::Done);
}

#[test]
fn no_save_when_the_operator_has_no_store() {
    let b = in_phase(build(), Phase::Building, Some("c-r0"));
    let mut o = observed(b.clone());
    o.pod = succeeded_pod();
    o.cache = Some(cache_of(&b, vec![]));
    o.config = Arc::new(OperatorConfig::default());
    let d = decided(&o);
    assert_eq!(
        cond(&d.status, condition::SNAPSHOTTED),
        ("False", "NotNeeded")
    );
}

#[test]
fn a_read_only_build_never_writes_back() {
    let mut b = in_phase(read_only(), Phase::Building, None);
    b.status.as_mut().unwrap().placement.as_mut().unwrap().cache = Some("shop-main".into());
    let mut o = observed(b);
    o.pod = succeeded_pod();
    let d = decided(&o);
    assert!(releases(&d).is_empty());
    assert!(cond_message(&d.status, condition::SNAPSHOTTED).contains("may not write back"));
}

#[test]
fn a_failed_build_fails_with_its_reason_and_releases_its_replica() {
    let b = in_phase(build(), Phase::Building, Some("c-r0"));
    let mut o = observed(b);
    o.pod = Some(PodOutcome::Failed {
        reason: "BuildFailed".into(),
        message: "exit 1: RUN make".into(),
    });
    let d = decided(&o);
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(cond(&d.status, condition::BUILT), ("False", "BuildFailed"));
    assert!(
        matches!(releases(&d)[..], [Release::Done { changed: true, build: Some(ref f), .. }] if !f.succeeded)
    );
    assert_eq!(events(&d), [("BuildFailed", true)]);
}

#[test]
fn a_lost_node_retries_the_build_once_elsewhere() {
    let b = in_phase(build(), Phase::Building, Some("c-r0"));
    let mut o = observed(b);
    o.pod = Some(PodOutcome::NodeLost);
    let d = decided(&o);
    assert_eq!(releases(&d), [&Release::Lost]);
    assert!(d
        .effects
        .iter()
        .any(|e| matches!(e, Effect::DeletePod(p) if p == "api-1-build-1")));
    assert_eq!(d.status.phase, Some(Phase::Placing));
    assert_eq!(d.status.attempts, Some(2));
    assert_eq!(d.status.placement, None);
    assert_eq!(cond(&d.status, condition::PLACED), ("False", "NodeLost"));
}

#[test]
fn a_second_lost_node_fails_the_build() {
    let mut b = in_phase(build(), Phase::Building, Some("c-r0"));
    b.status.as_mut().unwrap().attempts = Some(MAX_ATTEMPTS);
    let mut o = observed(b);
    o.pod = Some(PodOutcome::NodeLost);
    let d = decided(&o);
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(cond(&d.status, condition::SUCCEEDED), ("False", "NodeLost"));
}

#[test]
fn a_failed_restore_does_not_use_up_the_retry_after_a_lost_node() {
    // Attempt 1 failed its restore; attempt 2 builds cold, and then its node is lost.
    let mut b = in_phase(build(), Phase::Building, Some("c-r0"));
    let st = b.status.as_mut().unwrap();
    st.attempts = Some(MAX_ATTEMPTS);
    set_condition(
        st,
        condition::CACHE_READY,
        true,
        "RestoreFailed",
        "restore failed",
        None,
        t(CREATED),
    );
    let mut o = observed(b);
    o.pod = Some(PodOutcome::NodeLost);
    let d = decided(&o);
    assert_eq!(d.status.phase, Some(Phase::Placing), "retried elsewhere");
    assert_eq!(d.status.attempts, Some(MAX_ATTEMPTS + 1));
}

// ---- the save after a build ----

#[test]
fn a_due_save_gets_its_job_with_at_least_ten_minutes() {
    let mut o = observed(saving_build());
    o.now = t(CREATED + 3590);
    let d = decided(&o);
    let Effect::CreateJob(job) = &d.effects[0] else {
        panic!("no job")
    };
    assert_eq!(job.name_any(), "api-1-save-1");
    assert_eq!(
        job.spec.as_ref().unwrap().active_deadline_seconds,
        Some(600)
    );
}

#[test]
fn a_finished_save_records_the_snapshot_and_frees_the_replica() {
    let mut o = observed(saving_build());
    o.job = Some(JobOutcome::Succeeded {
        result: Some(r#"{"bytes":1200,"id":"s-2","uploadedBytes":300}"#.into()),
        seconds: Some(3.0),
    });
    let d = decided(&o);
    assert_eq!(cond(&d.status, condition::SNAPSHOTTED), ("True", "Saved"));
    assert_eq!(
        d.status.completion_time,
        Some(Time(t(CREATED + 30))),
        "Succeeded is not re-stamped"
    );
    assert!(
        matches!(releases(&d)[..], [Release::Done { changed: false, saved: Some(ref r), .. }] if r.id == "s-2")
    );
    assert_eq!(events(&d), [("Snapshotted", false)]);
    assert_eq!(d.next, Next::Done);
}

#[test]
fn a_failed_save_keeps_the_build_succeeded_and_tells_the_cache() {
    let mut o = observed(saving_build());
    o.job = Some(JobOutcome::Failed {
        message: "no space".into(),
    });
    let d = decided(&o);
    assert_eq!(d.status.phase, Some(Phase::Succeeded));
    assert_eq!(
        cond(&d.status, condition::SNAPSHOTTED),
        ("False", "SaveFailed")
    );
    assert!(d
        .effects
        .iter()
        .any(|e| matches!(e, Effect::SaveFailed { message, .. } if message == "no space")));
    assert!(matches!(
        releases(&d)[..],
        [Release::Done {
            changed: true,
            saved: None,
            ..
        }]
    ));
    assert_eq!(events(&d), [("SaveFailed", true)]);
}

#[test]
fn a_build_left_snapshotting_by_an_older_controller_finishes_succeeded() {
    let mut o = observed(in_phase(build(), Phase::Snapshotting, Some("c-r0")));
    o.job = Some(JobOutcome::Succeeded {
        result: None,
        seconds: None,
    });
    let d = decided(&o);
    assert_eq!(d.status.phase, Some(Phase::Succeeded));
    assert_eq!(cond(&d.status, condition::SUCCEEDED), ("True", "Succeeded"));
}

// ---- after the end, and deletion ----

#[test]
fn a_finished_build_at_rest_does_nothing() {
    let b = in_phase(build(), Phase::Succeeded, Some("c-r0"));
    let d = decided(&observed(b.clone()));
    assert!(d.effects.is_empty());
    assert_eq!(Some(&d.status), b.status.as_ref());
    assert_eq!(d.next, Next::Done);
}

#[test]
fn a_finished_build_still_holding_its_replica_waits_for_its_pods_then_releases() {
    let b = in_phase(build(), Phase::Cancelled, Some("c-r0"));
    let mut o = observed(b);
    o.holds_claim = true;
    o.children = Some(running_pods(1));
    let d = decided(&o);
    assert!(releases(&d).is_empty());
    assert_eq!(d.next, Next::Linger);
    o.children = Some(Children::default());
    let d = decided(&o);
    assert_eq!(releases(&d).len(), 1);
    assert_eq!(d.next, Next::Done);
}

#[test]
fn deletion_is_done_only_once_the_pods_are_gone_and_the_replica_released() {
    let b = in_phase(build(), Phase::Building, Some("c-r0"));
    let mut o = observed(b);
    o.children = Some(running_pods(1));
    let (effects, done) = cleanup(&o);
    assert!(!done);
    assert!(matches!(&effects[..], [Effect::StopChildren(_)]));
    o.children = Some(Children::default());
    let (effects, done) = cleanup(&o);
    assert!(done);
    assert!(
        matches!(&effects[..], [Effect::Release { cache, .. }] if *cache == cache_name(&build()))
    );
}

#[test]
fn observe_asks_only_for_what_the_state_needs() {
    let now = t(CREATED + 60);
    let at_rest = wanted(
        &in_phase(build(), Phase::Succeeded, Some("c-r0")),
        now,
        &config(),
    );
    assert_eq!(
        at_rest,
        Wanted {
            claim: true,
            ..Wanted::default()
        }
    );
    let running = wanted(
        &in_phase(build(), Phase::Building, Some("c-r0")),
        now,
        &config(),
    );
    assert_eq!(running.pod.as_deref(), Some("api-1-build-1"));
    assert_eq!(running.cache, Some(cache_name(&build())));
    assert!(!running.plan && !running.children);
    let restoring = wanted(&restoring_build(), now, &config());
    assert_eq!(
        (restoring.pod.as_deref(), restoring.job),
        (Some("api-1-build-1"), None),
        "a restore runs in the builder pod"
    );
    let placing = wanted(&placing(build()), now, &config());
    assert!(placing.plan);
    let mut deleting = in_phase(build(), Phase::Building, Some("c-r0"));
    deleting.metadata.deletion_timestamp = Some(Time(now));
    assert!(wanted(&deleting, now, &config()).children);
    assert_eq!(
        wanted(&saving_build(), now, &config()).job.as_deref(),
        Some("api-1-save-1")
    );
    assert!(
        wanted(
            &in_phase(build(), Phase::Building, None),
            t(CREATED + 7200),
            &config()
        )
        .children
    );
}

// ---- the cache prune after a ReadWrite build (issue 16, item 4) ----

fn env_of(pod: &Pod) -> Vec<(String, String)> {
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn a_replica_builds_pod_prunes_with_its_caches_gc_settings_before_the_builds_deadline() {
    let b = in_phase(build(), Phase::Building, Some("c-r0"));
    let mut o = observed(b.clone());
    let mut c = cache_of(
        &b,
        vec![replica("c-r0", ReplicaState::InUse, Some("api-1"))],
    );
    c.spec.gc.keep_duration = std::time::Duration::from_secs(3 * 3600).into();
    c.spec.gc.keep_storage = Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
        "10Gi".into(),
    ));
    o.cache = Some(c);
    let d = decided(&o);
    let Effect::CreatePod(pod) = &d.effects[0] else {
        panic!("no pod: {:?}", d.effects)
    };
    let env = env_of(pod);
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("HEARTH_PRUNE_KEEP_DURATION"), Some("10800s"));
    assert_eq!(get("HEARTH_PRUNE_KEEP_STORAGE_MB"), Some("10737"));
    // Created + the default timeout (1h), not "now + what is left": the same on every loop.
    assert_eq!(
        get("HEARTH_PRUNE_DEADLINE"),
        Some((CREATED + 3600).to_string().as_str())
    );

    // A ReadOnly build's throwaway volume is never pruned.
    let ro = in_phase(read_only(), Phase::Building, None);
    let d = decided(&observed(ro));
    let Effect::CreatePod(pod) = &d.effects[0] else {
        panic!("no pod: {:?}", d.effects)
    };
    assert!(
        !env_of(pod)
            .iter()
            .any(|(n, _)| n.starts_with("HEARTH_PRUNE")),
        "{:?}",
        env_of(pod)
    );
}

#[test]
fn the_prunes_outcome_is_recorded_in_status_and_a_failed_prune_still_succeeds() {
    let b = in_phase(build(), Phase::Building, Some("c-r0"));
    for prune in [
        crate::api::CachePrune {
            result: crate::api::PruneResult::Pruned,
            bytes: Some(2_050_000),
            message: None,
        },
        crate::api::CachePrune {
            result: crate::api::PruneResult::Failed,
            bytes: None,
            message: Some("buildctl prune exited 1".into()),
        },
    ] {
        let mut o = observed(b.clone());
        o.pod = Some(PodOutcome::Succeeded {
            digest: Some("sha256:abc".into()),
            seconds: Some(20.0),
            prune: Some(prune.clone()),
            git_commit: None,
            image_size: None,
        });
        o.cache = Some(cache_of(
            &b,
            vec![replica("c-r0", ReplicaState::InUse, Some("api-1"))],
        ));
        let d = decided(&o);
        assert_eq!(d.status.phase, Some(Phase::Succeeded));
        assert_eq!(d.status.cache_prune, Some(prune));
        assert_eq!(releases(&d), [&Release::Snapshotting]);
    }
}

#[path = "decide_clone_tests.rs"]
mod clone_tests;
