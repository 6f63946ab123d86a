//! Architecture on the fake cluster: nodes labelled `kubernetes.io/arch` amd64 and arm64, builds
//! placed only on nodes of their architecture, each architecture with its own cache.

mod support;

use hearth::api::{keys, Phase, Warmth};
use serde_json::json;
use support::{arch_node, s3_config, spec, Cluster};

const IMAGE: &str = "registry.example.com/shop/api:1";

async fn mixed_cluster() -> Cluster {
    Cluster::with_nodes(
        vec![arch_node("amd-1", "amd64"), arch_node("arm-1", "arm64")],
        s3_config(),
    )
    .await
}

#[tokio::test]
async fn an_arm64_cache_never_reaches_an_amd64_build() {
    let mut c = mixed_cluster().await;
    // An arm64 build: on the arm64 node, in the arm64 cache of the key.
    c.submit("arm", spec(IMAGE, json!({"platforms": ["linux/arm64"]})))
        .await;
    let arm = c.run_to_end("arm", 'a').await.status.unwrap();
    assert_eq!(arm.phase, Some(Phase::Succeeded));
    assert_eq!(arm.cache_key.as_deref(), Some("shop:main@arm64"));
    let arm_place = arm.placement.unwrap();
    assert_eq!(arm_place.node.as_deref(), Some("arm-1"));
    assert_eq!(
        arm_place.cache.as_deref(),
        Some(keys::cache_name_for_key("shop:main@arm64").as_str())
    );
    c.bind_pvc(arm_place.replica.as_deref().unwrap(), "arm-1")
        .await;

    // The same key with no platform builds for the default architecture (amd64): the idle
    // arm64 replica and its snapshot are not its cache; it starts cold on the amd64 node, in
    // a cache of its own.
    c.submit("amd", spec(IMAGE, json!({}))).await;
    assert_eq!(c.settle("amd").await, Some(Phase::Building));
    let amd = c.build("amd").await.status.unwrap();
    assert_eq!(amd.cache_key.as_deref(), Some("shop:main@amd64"));
    let amd_place = amd.placement.unwrap();
    assert_eq!(
        (amd_place.node.as_deref(), amd_place.warmth),
        (Some("amd-1"), Some(Warmth::Cold))
    );
    assert_eq!(amd_place.restored_from, None);
    assert_eq!(
        amd_place.cache.as_deref(),
        Some(keys::cache_name_for_key("shop:main@amd64").as_str())
    );
    let pod = c.pods().get("amd-build-1").await.unwrap();
    assert_eq!(
        pod.metadata.labels.unwrap()["hearth.dev/node"],
        "amd-1",
        "the builder pod is pinned to the amd64 node"
    );

    // Another arm64 build finds its own replica hot.
    c.submit(
        "arm2",
        spec(IMAGE, json!({"platforms": ["linux/arm64/v8"]})),
    )
    .await;
    assert_eq!(c.settle("arm2").await, Some(Phase::Building));
    let again = c.build("arm2").await.status.unwrap().placement.unwrap();
    assert_eq!(again.warmth, Some(Warmth::Hot));
    assert_eq!(
        (again.node, again.replica),
        (arm_place.node, arm_place.replica)
    );
}

#[tokio::test]
async fn a_build_for_an_architecture_no_node_has_waits_and_says_so() {
    let mut c = mixed_cluster().await;
    c.submit("s390", spec(IMAGE, json!({"platforms": ["linux/s390x"]})))
        .await;
    assert_eq!(c.settle("s390").await, Some(Phase::Placing));
    let st = c.build("s390").await.status.unwrap();
    assert_eq!(st.cache_key.as_deref(), Some("shop:main@s390x"));
    assert!(
        st.message
            .as_deref()
            .unwrap_or("")
            .contains("no ready node has the build's architecture"),
        "{:?}",
        st.message
    );
    assert!(
        st.placement.unwrap().node.is_none(),
        "never placed elsewhere"
    );
    assert!(
        c.pods().get_opt("s390-build-1").await.unwrap().is_none(),
        "no builder pod"
    );
}

#[tokio::test]
async fn the_default_architecture_comes_from_the_operator_config() {
    let mut config = s3_config();
    config.builder.default_arch = "arm64".into();
    let mut c = Cluster::with_nodes(
        vec![arch_node("amd-1", "amd64"), arch_node("arm-1", "arm64")],
        config,
    )
    .await;
    c.submit("b", spec(IMAGE, json!({}))).await;
    assert_eq!(c.settle("b").await, Some(Phase::Building));
    let st = c.build("b").await.status.unwrap();
    assert_eq!(st.cache_key.as_deref(), Some("shop:main@arm64"));
    assert_eq!(st.placement.unwrap().node.as_deref(), Some("arm-1"));
}

#[tokio::test]
async fn an_emulated_build_runs_once_for_every_platform_on_its_first_platform_s_nodes() {
    let mut c = mixed_cluster().await;
    c.submit(
        "multi",
        spec(
            IMAGE,
            json!({"platforms": ["linux/arm64", "linux/amd64"], "platformMode": "Emulate"}),
        ),
    )
    .await;
    assert_eq!(c.settle("multi").await, Some(Phase::Building));
    let st = c.build("multi").await.status.unwrap();
    assert_eq!(st.cache_key.as_deref(), Some("shop:main@arm64"));
    assert_eq!(st.placement.unwrap().node.as_deref(), Some("arm-1"));
    // One builder pod, asking BuildKit for both platforms in one pass.
    let pod = c.pods().get("multi-build-1").await.unwrap();
    let args: Vec<String> = pod
        .spec
        .unwrap()
        .containers
        .into_iter()
        .flat_map(|c| c.args.unwrap_or_default())
        .collect();
    let at = args
        .iter()
        .position(|a| a == "platform=linux/arm64,linux/amd64")
        .unwrap_or_else(|| panic!("no platform opt in {args:?}"));
    assert_eq!(args[at - 1], "--opt");
    assert!(c
        .pods()
        .get_opt("multi-amd64-build-1")
        .await
        .unwrap()
        .is_none());
}
