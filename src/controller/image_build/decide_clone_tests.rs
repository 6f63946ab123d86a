//! The clone transitions: placing a clone, following its PVC to bound, falling back to a
//! restore when it is refused or not bound in time, and letting go of the source.

use super::super::clone::{failed_before, CLONE_FAILED};
use super::*;

/// The planner's clone of main's replica `main-r0` (snapshot s-1) on node-1.
fn clone_plan() -> Planned {
    Planned {
        warmth: Warmth::Restored,
        ..plan(PlannedAction::Clone {
            node: "node-1".into(),
            key: "main-key".into(),
            cache: "shop-main".into(),
            pvc: "shop-main-r0".into(),
            snapshot: Some("s-1".into()),
            bytes: 7_000,
        })
    }
}

/// The build as the clone placement leaves it.
fn cloning_build() -> ImageBuild {
    let mut o = observed(placing(build()));
    o.cache = Some(cache_of(&build(), Vec::new()));
    o.plan = Some(clone_plan());
    decided(&o).status_in(build())
}

fn claim(bound: bool, age: i64, failure: Option<&str>) -> Option<CloneClaim> {
    Some(CloneClaim {
        bound,
        created: Some(t(CREATED + 60 - age)),
        failure: failure.map(String::from),
    })
}

fn holds_released(d: &Decision) -> bool {
    d.effects.iter().any(|e| {
        matches!(e,
        Effect::ReleaseCloneHold { cache, pvc } if cache == "shop-main" && pvc == "shop-main-r0")
    })
}

#[test]
fn a_clone_placement_holds_its_source_then_adds_a_replica_cloned_from_it() {
    let mut o = observed(placing(build()));
    o.cache = Some(cache_of(&build(), Vec::new()));
    o.plan = Some(clone_plan());
    let d = decided(&o);
    let hold = d
        .effects
        .iter()
        .position(|e| matches!(e, Effect::HoldForClone { cache, pvc } if cache == "shop-main" && pvc == "shop-main-r0"))
        .expect("the source is held");
    let add = d
        .effects
        .iter()
        .position(|e| matches!(e,
            Effect::AddReplica { state: ReplicaState::Restoring, size_bytes: Some(7_000), clone_of: Some((source, Some(snapshot))), .. }
                if source == "shop-main-r0" && snapshot == "s-1"))
        .expect("a replica cloned from it, matching its snapshot");
    assert!(hold < add, "held before its clone exists: {:?}", d.effects);
    assert_eq!(d.status.phase, Some(Phase::Restoring));
    let p = d.status.placement.as_ref().unwrap();
    let from = p.cloned_from.as_ref().expect("clonedFrom");
    assert_eq!(
        (
            from.key.as_str(),
            from.cache.as_str(),
            from.replica.as_str()
        ),
        ("main-key", "shop-main", "shop-main-r0")
    );
    assert_eq!(p.restored_from, None, "nothing is restored");
    assert_eq!(p.warmth, Some(Warmth::Restored));
    assert_eq!(
        cond(&d.status, condition::CACHE_READY),
        ("False", "Cloning")
    );
}

#[test]
fn while_the_clone_binds_the_builder_pod_is_created_without_a_restore() {
    let mut o = observed(cloning_build());
    o.clone = claim(false, 5, None);
    let d = decided(&o);
    let pod = created_pod(&d);
    assert!(
        init_names(&pod).iter().all(|n| n != "restore"),
        "{:?}",
        init_names(&pod)
    );
    assert!(pod
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .any(|v| v
            .persistent_volume_claim
            .as_ref()
            .is_some_and(|c| Some(&c.claim_name)
                == o.build
                    .status
                    .as_ref()
                    .unwrap()
                    .placement
                    .as_ref()
                    .unwrap()
                    .replica
                    .as_ref())));
    assert!(
        !holds_released(&d),
        "the source stays held until the clone is bound"
    );
    assert_eq!(d.status.phase, Some(Phase::Restoring));
    // The pod waits for its volume: nothing changes until the clone is bound.
    o.pod = Some(PodOutcome::Running);
    let d = decided(&o);
    assert!(d.effects.is_empty(), "{:?}", d.effects);
    assert_eq!(d.next, Next::Soon);
}

#[test]
fn a_bound_clone_lets_go_of_its_source_and_the_build_goes_on_with_the_new_replica() {
    let mut o = observed(cloning_build());
    o.clone = claim(true, 5, None);
    o.pod = Some(PodOutcome::Running);
    let d = decided(&o);
    assert!(holds_released(&d), "{:?}", d.effects);
    assert_eq!(releases(&d), [&Release::Cloned]);
    assert_eq!(d.status.phase, Some(Phase::Building));
    assert_eq!(cond(&d.status, condition::CACHE_READY), ("True", "Cloned"));
    assert!(cond_message(&d.status, condition::CACHE_READY).contains("shop-main-r0"));
    let restore = d
        .status
        .durations
        .as_ref()
        .and_then(|x| x.restore.as_deref());
    assert_eq!(
        restore,
        Some("5s"),
        "the clone's time from its PVC's creation to bound"
    );
    assert!(
        !d.effects
            .iter()
            .any(|e| matches!(e, Effect::Measure(Sample::Step("restore", _)))),
        "a clone is not a restore the planner learns from: {:?}",
        d.effects
    );
}

#[test]
fn a_refused_clone_is_deleted_and_the_build_placed_again_to_restore() {
    let mut o = observed(cloning_build());
    o.clone = claim(
        false,
        5,
        Some("rpc error: code = Unimplemented desc = clone not supported"),
    );
    o.pod = Some(PodOutcome::Running);
    let d = decided(&o);
    assert!(d
        .effects
        .iter()
        .any(|e| matches!(e, Effect::DeletePod(p) if p == "api-1-build-1")));
    assert!(holds_released(&d));
    assert_eq!(
        releases(&d),
        [&Release::CloneFailed],
        "the clone's replica is retired"
    );
    assert_eq!(d.status.phase, Some(Phase::Placing));
    assert_eq!(
        d.status.attempts,
        Some(2),
        "a new pod name for the next attempt"
    );
    assert_eq!(d.status.placement, None);
    assert_eq!(
        cond(&d.status, condition::CACHE_READY),
        ("False", CLONE_FAILED)
    );
    let why = cond_message(&d.status, condition::CACHE_READY);
    assert!(
        why.contains("restoring instead") && why.contains("clone not supported"),
        "{why}"
    );
    assert_eq!(events(&d), [(CLONE_FAILED, true)]);
    assert!(
        failed_before(&d.status_in(build())),
        "the next placement never clones"
    );
    assert!(!failed_before(&cloning_build()));
}

#[test]
fn a_clone_not_bound_within_the_timeout_falls_back_to_a_restore() {
    let mut o = observed(cloning_build());
    o.pod = Some(PodOutcome::Running);
    o.clone = claim(false, 119, None);
    assert_eq!(
        decided(&o).status.phase,
        Some(Phase::Restoring),
        "still within 2m"
    );
    o.clone = claim(false, 121, None);
    let d = decided(&o);
    assert_eq!(d.status.phase, Some(Phase::Placing));
    assert!(cond_message(&d.status, condition::CACHE_READY).contains("cloneBindTimeout"));
    // A clone whose PVC is gone fails at once.
    o.clone = None;
    assert_eq!(decided(&o).status.phase, Some(Phase::Placing));
}

#[test]
fn a_build_cancelled_while_cloning_lets_go_of_the_source() {
    let mut b = cloning_build();
    b.spec.cancel = true;
    let mut o = observed(b);
    o.children = Some(running_pods(1));
    let d = decided(&o);
    assert_eq!(d.status.phase, Some(Phase::Cancelled));
    assert!(holds_released(&d), "{:?}", d.effects);
}
