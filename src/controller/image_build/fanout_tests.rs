//! Every transition of a multi-platform parent, as plain tests of the pure decision.

use super::*;
use crate::api::{ImageBuildSpec, Placement, Warmth};
use crate::controller::builders::platform_builds::index_job_name;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

const CREATED: i64 = 1_800_000_000;
const AMD: &str = "api-1-amd64";
const ARM: &str = "api-1-arm64";

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

fn parent_with(extra: serde_json::Value) -> ImageBuild {
    let mut spec = serde_json::json!({
        "source": {"git": {"url": "https://github.com/acme/shop.git", "revision": "main"}},
        "platforms": ["linux/amd64", "linux/arm64"],
        "output": {"image": "registry.example.com/shop/api:1", "tags": ["latest"]}
    });
    if let (Some(base), Some(more)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            base.insert(k.clone(), v.clone());
        }
    }
    let spec: ImageBuildSpec = serde_json::from_value(spec).expect("spec");
    let mut b = ImageBuild::new("api-1", spec);
    b.metadata.namespace = Some("shop".into());
    b.metadata.uid = Some("uid-1".into());
    b.metadata.generation = Some(1);
    b.metadata.creation_timestamp = Some(Time(t(CREATED)));
    b
}

fn parent() -> ImageBuild {
    parent_with(serde_json::json!({}))
}

fn observed(b: ImageBuild, children: Vec<ImageBuild>) -> ParentObserved {
    ParentObserved {
        build: b,
        now: t(CREATED + 60),
        config: Arc::new(OperatorConfig::default()),
        children,
        index: None,
    }
}

/// The parent's child of `platform` in `phase` (none: just created), on `node`.
fn child(p: &ImageBuild, platform: &str, phase: Option<Phase>, digest: char) -> ImageBuild {
    let owner = owner_ref(p).unwrap();
    let mut c = child_build(p, platform, owner);
    c.metadata.uid = Some(format!("uid-{platform}"));
    c.status = phase.map(|phase| ImageBuildStatus {
        phase: Some(phase),
        message: Some(format!("{phase} message")),
        image_digest: (phase == Phase::Succeeded)
            .then(|| format!("sha256:{}", digest.to_string().repeat(64))),
        image_size: (phase == Phase::Succeeded).then_some(1_000 + digest as i64),
        placement: Some(Placement {
            node: Some(format!("node-{}", platform.rsplit('/').next().unwrap())),
            warmth: Some(Warmth::Hot),
            ..Placement::default()
        }),
        ..ImageBuildStatus::default()
    });
    c
}

fn both(p: &ImageBuild, amd: Option<Phase>, arm: Option<Phase>) -> Vec<ImageBuild> {
    vec![
        child(p, "linux/amd64", amd, 'a'),
        child(p, "linux/arm64", arm, 'b'),
    ]
}

fn created_builds(d: &Decision) -> Vec<ImageBuild> {
    d.effects
        .iter()
        .filter_map(|e| match e {
            Effect::CreateBuild(b) => Some((**b).clone()),
            _ => None,
        })
        .collect()
}

fn cancelled(d: &Decision) -> Vec<String> {
    d.effects
        .iter()
        .filter_map(|e| match e {
            Effect::CancelBuild(b) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

fn jobs(d: &Decision) -> Vec<String> {
    d.effects
        .iter()
        .filter_map(|e| match e {
            Effect::CreateJob(j) => j.metadata.name.clone(),
            _ => None,
        })
        .collect()
}

fn succeeded_condition(s: &ImageBuildStatus) -> Option<(String, String)> {
    s.conditions
        .iter()
        .find(|c| c.type_ == condition::SUCCEEDED)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[test]
fn a_new_parent_creates_one_child_per_platform_and_nothing_for_the_planner() {
    let d = decide_parent(&observed(parent(), vec![])).unwrap();
    let created = created_builds(&d);
    let names: Vec<_> = created.iter().map(|b| b.name_any()).collect();
    assert_eq!(names, [AMD, ARM]);
    assert_eq!(created[1].spec.platforms, ["linux/arm64"]);
    assert_eq!(d.status.phase, Some(Phase::Building));
    assert_eq!(d.status.cache_key, None, "a parent has no key of its own");
    assert_eq!(d.status.placement, None, "nor a placement");
    assert!(jobs(&d).is_empty());
    let listed: Vec<_> = d
        .status
        .platforms
        .iter()
        .map(|p| (p.platform.as_str(), p.build.as_str(), p.phase))
        .collect();
    assert_eq!(
        listed,
        [("linux/amd64", AMD, None), ("linux/arm64", ARM, None)]
    );
}

#[test]
fn only_missing_children_are_created() {
    let p = parent();
    let amd = child(&p, "linux/amd64", Some(Phase::Building), 'a');
    let d = decide_parent(&observed(p, vec![amd])).unwrap();
    let names: Vec<_> = created_builds(&d).iter().map(|b| b.name_any()).collect();
    assert_eq!(names, [ARM]);
}

#[test]
fn a_childs_name_taken_by_another_build_fails_the_parent_naming_spec_platforms() {
    let p = parent();
    let mut stranger = child(&p, "linux/arm64", Some(Phase::Building), 'b');
    stranger.metadata.owner_references = Some(vec![OwnerReference {
        uid: "someone-else".into(),
        ..owner_ref(&p).unwrap()
    }]);
    let amd = child(&p, "linux/amd64", Some(Phase::Building), 'a');
    let d = decide_parent(&observed(p, vec![amd, stranger])).unwrap();
    assert_eq!(d.status.phase, Some(Phase::Failed));
    let message = d.status.message.clone().unwrap();
    assert!(
        message.starts_with(
            "spec.platforms: ImageBuild api-1-arm64 exists and is not this build's child"
        ),
        "{message}"
    );
    assert!(created_builds(&d).is_empty(), "never adopted nor replaced");
    assert_eq!(
        cancelled(&d),
        [AMD],
        "its own child is cancelled, the stranger left alone"
    );
}

#[test]
fn while_children_build_status_lists_where_each_runs() {
    let p = parent();
    let children = both(&p, Some(Phase::Succeeded), Some(Phase::Building));
    let d = decide_parent(&observed(p, children)).unwrap();
    assert!(d.effects.is_empty(), "{:?}", d.effects);
    assert_eq!(d.status.phase, Some(Phase::Building));
    assert_eq!(
        d.status.message.as_deref(),
        Some("building: linux/arm64 Building")
    );
    let amd = &d.status.platforms[0];
    assert_eq!(amd.phase, Some(Phase::Succeeded));
    assert_eq!(amd.node.as_deref(), Some("node-amd64"));
    assert_eq!(amd.warmth, Some(Warmth::Hot));
    assert_eq!(amd.image_digest, Some(format!("sha256:{}", "a".repeat(64))));
    assert_eq!(d.status.platforms[1].node.as_deref(), Some("node-arm64"));
}

#[test]
fn all_children_succeeded_runs_the_index_job_once() {
    let p = parent();
    let children = both(&p, Some(Phase::Succeeded), Some(Phase::Succeeded));
    let d = decide_parent(&observed(p.clone(), children.clone())).unwrap();
    assert_eq!(jobs(&d), [index_job_name("api-1")]);
    let Some(Effect::CreateJob(job)) = d.effects.first() else {
        panic!()
    };
    let args = job.spec.clone().unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(
        args[..6],
        [
            "index".to_string(),
            "create".into(),
            "--source".into(),
            format!("registry.example.com/shop/api@sha256:{}", "a".repeat(64)),
            "--source".into(),
            format!("registry.example.com/shop/api@sha256:{}", "b".repeat(64)),
        ]
    );
    assert_eq!(d.status.phase, Some(Phase::Building));
    assert_eq!(succeeded_condition(&d.status), None, "not decided yet");
    // The Job exists and runs: nothing more is created.
    let mut o = observed(p, children);
    o.index = Some(JobOutcome::Running);
    let d = decide_parent(&o).unwrap();
    assert!(d.effects.is_empty(), "{:?}", d.effects);
}

#[test]
fn the_index_jobs_digest_makes_the_parent_succeed() {
    let p = parent();
    let mut o = observed(
        p.clone(),
        both(&p, Some(Phase::Succeeded), Some(Phase::Succeeded)),
    );
    let index = format!("sha256:{}", "c".repeat(64));
    o.index = Some(JobOutcome::Succeeded {
        result: Some(format!(
            r#"{{"digest":"{index}","mediaType":"application/vnd.oci.image.index.v1+json","size":700,"targets":[],"manifests":2}}"#
        )),
        seconds: Some(3.0),
    });
    let d = decide_parent(&o).unwrap();
    assert_eq!(d.status.phase, Some(Phase::Succeeded));
    assert_eq!(d.status.image_digest.as_deref(), Some(index.as_str()));
    // Both platforms' images ('a' and 'b' children).
    assert_eq!(d.status.image_size, Some(1_000 + 97 + 1_000 + 98));
    assert_eq!(
        d.status.image,
        Some(format!("registry.example.com/shop/api@{index}"))
    );
    assert_eq!(
        d.status.tags,
        [
            "registry.example.com/shop/api:1",
            "registry.example.com/shop/api:latest"
        ]
    );
    assert_eq!(
        succeeded_condition(&d.status),
        Some(("True".into(), "Succeeded".into()))
    );
    assert!(d.status.completion_time.is_some());
    assert!(jobs(&d).is_empty());
}

#[test]
fn an_index_job_without_a_digest_or_failed_fails_the_parent() {
    let p = parent();
    for (outcome, expect) in [
        (
            JobOutcome::Succeeded {
                result: Some("not json".into()),
                seconds: None,
            },
            "the index Job reported no digest: not json",
        ),
        (
            JobOutcome::Succeeded {
                result: Some(r#"{"digest":"sha256:short"}"#.into()),
                seconds: None,
            },
            "the index Job reported no digest",
        ),
        (
            JobOutcome::Failed {
                message: "PUT registry.example.com/shop/api:1: 401 UNAUTHORIZED".into(),
            },
            "the image index was not pushed: PUT registry.example.com/shop/api:1: 401 UNAUTHORIZED",
        ),
    ] {
        let mut o = observed(
            p.clone(),
            both(&p, Some(Phase::Succeeded), Some(Phase::Succeeded)),
        );
        o.index = Some(outcome);
        let d = decide_parent(&o).unwrap();
        assert_eq!(d.status.phase, Some(Phase::Failed));
        assert!(
            d.status.message.as_deref().unwrap().starts_with(expect),
            "{:?}",
            d.status.message
        );
        assert_eq!(
            succeeded_condition(&d.status),
            Some(("False".into(), "IndexFailed".into()))
        );
    }
}

#[test]
fn without_push_the_parent_succeeds_with_its_children_and_runs_no_index() {
    let p = parent_with(
        serde_json::json!({"output": {"image": "registry.example.com/shop/api:1", "push": false}}),
    );
    let d = decide_parent(&observed(
        p.clone(),
        both(&p, Some(Phase::Succeeded), Some(Phase::Succeeded)),
    ))
    .unwrap();
    assert_eq!(d.status.phase, Some(Phase::Succeeded));
    assert!(jobs(&d).is_empty());
    assert_eq!(d.status.image, None);
    assert!(d.status.tags.is_empty());
    assert_eq!(
        d.status.message.as_deref(),
        Some("built linux/amd64, linux/arm64 (not pushed)")
    );
}

#[test]
fn a_failed_child_fails_the_parent_at_once_and_cancels_the_others() {
    let p = parent();
    let d = decide_parent(&observed(
        p.clone(),
        both(&p, Some(Phase::Building), Some(Phase::Failed)),
    ))
    .unwrap();
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(
        d.status.message.as_deref(),
        Some("linux/arm64 (build api-1-arm64) failed: Failed message")
    );
    assert_eq!(
        succeeded_condition(&d.status),
        Some(("False".into(), "PlatformFailed".into()))
    );
    assert_eq!(cancelled(&d), [AMD]);
    assert!(created_builds(&d).is_empty() && jobs(&d).is_empty());
    // An ended parent decides nothing more.
    let mut ended = p;
    ended.status = Some(d.status);
    let again = decide_parent(&observed(
        ended.clone(),
        both(&ended, Some(Phase::Building), Some(Phase::Failed)),
    ))
    .unwrap();
    assert!(again.effects.is_empty());
}

#[test]
fn a_child_deleted_under_way_fails_the_parent_rather_than_building_it_again() {
    let mut p = parent();
    let first = decide_parent(&observed(
        p.clone(),
        both(&p, Some(Phase::Building), Some(Phase::Building)),
    ))
    .unwrap();
    p.status = Some(first.status);
    let amd = child(&p, "linux/amd64", Some(Phase::Building), 'a');
    let d = decide_parent(&observed(p, vec![amd])).unwrap();
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert!(created_builds(&d).is_empty());
    assert_eq!(
        d.status.message.as_deref(),
        Some("linux/arm64 (build api-1-arm64) was deleted before it ended")
    );
}

#[test]
fn cancel_cancels_the_children_and_ends_once_they_have() {
    let mut p = parent();
    p.spec.cancel = true;
    let d = decide_parent(&observed(
        p.clone(),
        both(&p, Some(Phase::Building), Some(Phase::Succeeded)),
    ))
    .unwrap();
    assert_eq!(cancelled(&d), [AMD], "an ended child is left as it is");
    assert_eq!(d.status.phase, Some(Phase::Building));
    assert_eq!(d.next, Next::Linger);
    // Already asked: not asked again.
    let mut children = both(&p, Some(Phase::Building), Some(Phase::Succeeded));
    children[0].spec.cancel = true;
    let d = decide_parent(&observed(p.clone(), children)).unwrap();
    assert!(cancelled(&d).is_empty());
    let d = decide_parent(&observed(
        p.clone(),
        both(&p, Some(Phase::Cancelled), Some(Phase::Succeeded)),
    ))
    .unwrap();
    assert_eq!(d.status.phase, Some(Phase::Cancelled));
    assert_eq!(
        succeeded_condition(&d.status),
        Some(("False".into(), "Cancelled".into()))
    );
    // Cancelled before any child was made: ends at once, creating none.
    let d = decide_parent(&observed(p, vec![])).unwrap();
    assert_eq!(d.status.phase, Some(Phase::Cancelled));
    assert!(created_builds(&d).is_empty());
}

#[test]
fn past_its_timeout_the_parent_fails_and_cancels_its_children() {
    let p = parent_with(serde_json::json!({"timeout": "10m"}));
    let mut o = observed(
        p.clone(),
        both(&p, Some(Phase::Building), Some(Phase::Building)),
    );
    o.now = t(CREATED + 601);
    let d = decide_parent(&o).unwrap();
    assert_eq!(d.status.phase, Some(Phase::Failed));
    assert_eq!(
        succeeded_condition(&d.status),
        Some(("False".into(), "Timeout".into()))
    );
    assert_eq!(cancelled(&d), [AMD, ARM]);
}
