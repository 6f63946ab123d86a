//! Several platforms built natively (issue 17's fan-out) on the fake cluster: nodes labelled
//! amd64 and arm64; a parent ImageBuild of linux/amd64 and linux/arm64 makes one child build
//! per platform, each placed on a node of its architecture and pushed by digest; once both
//! have succeeded the index Job runs `hearth index create` and the parent takes its digest.

mod support;

use hearth::api::common::condition;
use hearth::api::{ImageBuild, ImageBuildStatus, Phase, Warmth};
use hearth::controller::config::RetentionSettings;
use hearth::controller::retention_sweep;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::Duration;
use kube::ResourceExt;
use serde_json::json;
use support::{arch_node, metadata, s3_config, spec, Cluster};

const IMAGE: &str = "registry.example.com/shop/api:1";
const AMD: &str = "multi-amd64";
const ARM: &str = "multi-arm64";

async fn mixed_cluster() -> Cluster {
    Cluster::with_nodes(
        vec![arch_node("amd-1", "amd64"), arch_node("arm-1", "arm64")],
        s3_config(),
    )
    .await
}

fn two_platforms(extra: serde_json::Value) -> hearth::api::ImageBuildSpec {
    let mut base = json!({"platforms": ["linux/amd64", "linux/arm64"], "output": {"image": IMAGE, "tags": ["latest"]}});
    if let (Some(b), Some(more)) = (base.as_object_mut(), extra.as_object()) {
        b.extend(more.clone());
    }
    spec(IMAGE, base)
}

/// The parent's children, as the API lists them by their label.
async fn children(c: &Cluster) -> Vec<ImageBuild> {
    c.builds()
        .list(&ListParams::default().labels("hearth.dev/parent=multi"))
        .await
        .unwrap()
        .items
}

async fn index_jobs(c: &Cluster) -> Vec<Job> {
    c.jobs()
        .list(&ListParams::default().labels("hearth.dev/role=index"))
        .await
        .unwrap()
        .items
}

fn status(ib: &ImageBuild) -> ImageBuildStatus {
    ib.status.clone().unwrap_or_default()
}

fn succeeded(st: &ImageBuildStatus) -> Option<(String, String)> {
    st.conditions
        .iter()
        .find(|x| x.type_ == condition::SUCCEEDED)
        .map(|x| (x.status.clone(), x.reason.clone()))
}

async fn pod_args(c: &Cluster, pod: &str) -> Vec<String> {
    c.pods()
        .get(pod)
        .await
        .unwrap()
        .spec
        .unwrap()
        .containers
        .into_iter()
        .flat_map(|c| c.args.unwrap_or_default())
        .collect()
}

/// Submits the parent and reconciles it and both children until the children build.
async fn started(c: &mut Cluster, extra: serde_json::Value) {
    c.submit("multi", two_platforms(extra)).await;
    assert_eq!(c.settle("multi").await, Some(Phase::Building));
    assert_eq!(c.settle(AMD).await, Some(Phase::Building));
    assert_eq!(c.settle(ARM).await, Some(Phase::Building));
}

#[tokio::test]
async fn two_platforms_build_on_their_own_nodes_then_one_index_is_pushed() {
    let mut c = mixed_cluster().await;
    started(&mut c, json!({})).await;
    let parent = c.build("multi").await;
    let st = status(&parent);
    assert_eq!(st.cache_key, None, "the parent never reaches the planner");
    assert_eq!(st.placement, None);
    assert!(
        c.pods().get_opt("multi-build-1").await.unwrap().is_none(),
        "the parent runs no builder"
    );

    // Each child: owned by the parent, on a node of its architecture, with its own cache,
    // pushing by digest into the parent's repository.
    let kids = children(&c).await;
    assert_eq!(kids.len(), 2);
    for (name, node, arch) in [(AMD, "amd-1", "amd64"), (ARM, "arm-1", "arm64")] {
        let kid = c.build(name).await;
        let owner = &kid.owner_references()[0];
        assert_eq!(
            (
                owner.uid.as_str(),
                owner.controller,
                owner.block_owner_deletion
            ),
            (parent.uid().unwrap().as_str(), Some(true), Some(true))
        );
        let kst = status(&kid);
        assert_eq!(kst.cache_key, Some(format!("shop:main@{arch}")));
        assert_eq!(kst.placement.unwrap().node.as_deref(), Some(node));
        let args = pod_args(&c, &format!("{name}-build-1")).await;
        assert!(
            args.contains(&format!("platform=linux/{arch}")),
            "{name}: {args:?}"
        );
        assert!(
            args.contains(
                &"type=image,name=registry.example.com/shop/api,push=true,push-by-digest=true"
                    .to_string()
            ),
            "{name}: {args:?}"
        );
    }

    // Both finish (and save their caches); the parent then runs the index Job, once.
    c.run_to_end(AMD, 'a').await;
    assert_eq!(c.settle("multi").await, Some(Phase::Building));
    assert!(
        index_jobs(&c).await.is_empty(),
        "not before every platform is built"
    );
    c.run_to_end(ARM, 'b').await;
    c.settle("multi").await;
    let (_, amd_digest) = metadata('a');
    let (_, arm_digest) = metadata('b');
    let jobs = index_jobs(&c).await;
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.name_any(), "multi-index-1");
    let pod = job.spec.clone().unwrap().template.spec.unwrap();
    assert_eq!(
        pod.containers[0].args.clone().unwrap(),
        [
            "index".to_string(),
            "create".into(),
            "--source".into(),
            format!("registry.example.com/shop/api@{amd_digest}"),
            "--source".into(),
            format!("registry.example.com/shop/api@{arm_digest}"),
            "--target".into(),
            IMAGE.into(),
            "--target".into(),
            "registry.example.com/shop/api:latest".into(),
            "--json".into(),
        ]
    );
    assert_eq!(job.owner_references()[0].uid, parent.uid().unwrap());
    let st = status(&c.build("multi").await);
    let where_ran: Vec<_> = st
        .platforms
        .iter()
        .map(|p| {
            (
                p.platform.as_str(),
                p.build.as_str(),
                p.phase,
                p.node.as_deref(),
                p.warmth,
                p.image_digest.clone(),
            )
        })
        .collect();
    assert_eq!(
        where_ran,
        [
            (
                "linux/amd64",
                AMD,
                Some(Phase::Succeeded),
                Some("amd-1"),
                Some(Warmth::Cold),
                Some(amd_digest)
            ),
            (
                "linux/arm64",
                ARM,
                Some(Phase::Succeeded),
                Some("arm-1"),
                Some(Warmth::Cold),
                Some(arm_digest)
            ),
        ]
    );

    // The index Job reports its digest: the parent has Succeeded with it.
    let index = format!("sha256:{}", "c".repeat(64));
    let result = format!(
        r#"{{"digest":"{index}","mediaType":"application/vnd.oci.image.index.v1+json","size":812,"targets":["{IMAGE}","registry.example.com/shop/api:latest"],"manifests":2}}"#
    );
    c.finish_job("multi-index-1", true, &result).await;
    assert_eq!(c.settle("multi").await, Some(Phase::Succeeded));
    let st = status(&c.build("multi").await);
    assert_eq!(st.image_digest.as_deref(), Some(index.as_str()));
    assert_eq!(
        st.image,
        Some(format!("registry.example.com/shop/api@{index}"))
    );
    assert_eq!(st.tags, [IMAGE, "registry.example.com/shop/api:latest"]);
    assert_eq!(succeeded(&st), Some(("True".into(), "Succeeded".into())));
    // The builds counted are the two that ran, each with its warmth; not the parent.
    let counted: Vec<String> = c
        .ctx
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("hearth_builds_total{"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        counted,
        [r#"hearth_builds_total{warmth="Cold",outcome="Succeeded"} 2"#],
        "{counted:?}"
    );

    // Reconciling again changes nothing: no second child, no second Job.
    for _ in 0..3 {
        c.reconcile("multi").await.unwrap();
    }
    assert_eq!(children(&c).await.len(), 2);
    assert_eq!(index_jobs(&c).await.len(), 1);
}

#[tokio::test]
async fn reconciling_a_parent_again_and_again_creates_each_child_and_job_once() {
    let mut c = mixed_cluster().await;
    c.submit("multi", two_platforms(json!({}))).await;
    for _ in 0..4 {
        c.reconcile("multi").await.unwrap();
    }
    assert_eq!(children(&c).await.len(), 2);
    c.run_to_end(AMD, 'a').await;
    c.run_to_end(ARM, 'b').await;
    for _ in 0..4 {
        c.reconcile("multi").await.unwrap();
    }
    assert_eq!(children(&c).await.len(), 2);
    assert_eq!(index_jobs(&c).await.len(), 1);
    // A restarted controller finds what it made.
    c.restart_controller().await;
    c.reconcile("multi").await.unwrap();
    assert_eq!(children(&c).await.len(), 2);
    assert_eq!(index_jobs(&c).await.len(), 1);
}

#[tokio::test]
async fn a_failed_platform_fails_the_parent_and_cancels_the_other() {
    let mut c = mixed_cluster().await;
    started(&mut c, json!({})).await;
    c.finish_pod(
        &format!("{ARM}-build-1"),
        1,
        "ERROR: process \"/bin/sh -c make\" did not complete successfully: exit code: 2",
    )
    .await;
    assert_eq!(c.settle(ARM).await, Some(Phase::Failed));
    assert_eq!(c.settle("multi").await, Some(Phase::Failed));
    let st = status(&c.build("multi").await);
    let message = st.message.clone().unwrap();
    assert!(
        message.starts_with("linux/arm64 (build multi-arm64) failed: ")
            && message.contains("exit code: 2"),
        "{message}"
    );
    assert_eq!(succeeded(&st).unwrap().0, "False");
    // The amd64 build is cancelled, and ends so.
    assert!(c.build(AMD).await.spec.cancel);
    assert_eq!(c.settle(AMD).await, Some(Phase::Cancelled));
    assert!(index_jobs(&c).await.is_empty());
}

#[tokio::test]
async fn cancelling_the_parent_cancels_its_children_and_ends_when_they_have() {
    let mut c = mixed_cluster().await;
    started(&mut c, json!({})).await;
    c.builds()
        .patch(
            "multi",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"cancel": true}})),
        )
        .await
        .unwrap();
    c.reconcile("multi").await.unwrap();
    assert!(c.build(AMD).await.spec.cancel && c.build(ARM).await.spec.cancel);
    assert_eq!(
        Cluster::phase_of(&c.build("multi").await),
        Some(Phase::Building),
        "until its children have stopped"
    );
    assert_eq!(c.settle(AMD).await, Some(Phase::Cancelled));
    assert_eq!(c.settle(ARM).await, Some(Phase::Cancelled));
    assert_eq!(c.settle("multi").await, Some(Phase::Cancelled));
    assert!(c
        .pods()
        .get_opt(&format!("{AMD}-build-1"))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn without_push_the_parent_succeeds_with_its_children_and_pushes_no_index() {
    let mut c = mixed_cluster().await;
    started(&mut c, json!({"output": {"image": IMAGE, "push": false}})).await;
    let args = pod_args(&c, &format!("{AMD}-build-1")).await;
    assert!(
        args.contains(&"type=image,name=registry.example.com/shop/api,push=false".to_string()),
        "{args:?}"
    );
    c.run_to_end(AMD, 'a').await;
    c.run_to_end(ARM, 'b').await;
    assert_eq!(c.settle("multi").await, Some(Phase::Succeeded));
    assert!(index_jobs(&c).await.is_empty());
    let st = status(&c.build("multi").await);
    assert_eq!(st.image, None);
    assert!(st.tags.is_empty());
}

#[tokio::test]
async fn an_emulated_build_of_two_platforms_has_no_children() {
    let mut c = mixed_cluster().await;
    c.submit("multi", two_platforms(json!({"platformMode": "Emulate"})))
        .await;
    assert_eq!(c.settle("multi").await, Some(Phase::Building));
    assert!(children(&c).await.is_empty());
    assert!(c.pods().get_opt("multi-build-1").await.unwrap().is_some());
}

/// A cluster whose retention keeps `limit` succeeded builds (no TTL, 10 minutes' minimum age).
async fn with_history_limit(limit: u32) -> Cluster {
    let mut config = s3_config();
    config.retention = RetentionSettings {
        ttl_after_succeeded: None,
        ttl_after_failed: None,
        succeeded_limit: Some(limit),
        failed_limit: None,
        min_age: Duration::from(std::time::Duration::from_secs(600)),
    };
    Cluster::with_nodes(
        vec![arch_node("amd-1", "amd64"), arch_node("arm-1", "arm64")],
        config,
    )
    .await
}

/// Both children push their images (their caches' saves still running); the index is pushed
/// and the parent has succeeded.
async fn pushed_while_children_save(c: &mut Cluster) {
    started(c, json!({})).await;
    for (name, digest) in [(AMD, 'a'), (ARM, 'b')] {
        c.finish_pod(&format!("{name}-build-1"), 0, &metadata(digest).0)
            .await;
        assert_eq!(c.settle(name).await, Some(Phase::Succeeded));
        assert!(c
            .jobs()
            .get_opt(&format!("{name}-save-1"))
            .await
            .unwrap()
            .is_some());
    }
    c.settle("multi").await;
    let index = format!(r#"{{"digest":"sha256:{}"}}"#, "c".repeat(64));
    c.finish_job("multi-index-1", true, &index).await;
    assert_eq!(c.settle("multi").await, Some(Phase::Succeeded));
}

async fn children_saved(c: &mut Cluster) {
    for name in [AMD, ARM] {
        c.finish_job(&format!("{name}-save-1"), true, support::SAVED)
            .await;
        c.settle(name).await;
    }
}

async fn sweep(c: &mut Cluster) -> Vec<String> {
    c.sync().await;
    retention_sweep::sweep(&c.ctx).await.deleted
}

#[tokio::test]
async fn retention_keeps_the_parent_while_a_child_saves_its_cache() {
    let mut c = with_history_limit(0).await;
    pushed_while_children_save(&mut c).await;
    c.advance(3600);
    assert_eq!(
        sweep(&mut c).await,
        Vec::<String>::new(),
        "deleting the parent would take the saving children with it"
    );
    children_saved(&mut c).await;
    assert_eq!(sweep(&mut c).await, ["shop/multi"]);
}

#[tokio::test]
async fn retention_never_deletes_nor_counts_a_child_on_its_own() {
    // One succeeded build kept: the parent. Its children are not builds of the history.
    let mut c = with_history_limit(1).await;
    pushed_while_children_save(&mut c).await;
    children_saved(&mut c).await;
    c.advance(3600);
    assert_eq!(sweep(&mut c).await, Vec::<String>::new());
    assert_eq!(children(&c).await.len(), 2);
}
