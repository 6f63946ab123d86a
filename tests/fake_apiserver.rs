//! The fake Kubernetes API server of the process-level tests (tests/cluster/apiserver),
//! exercised as the controller uses a real one: through a kube::Client built from a
//! kubeconfig, over HTTPS, with kube-runtime watchers and kube-lease-manager.

#[path = "cluster/apiserver/mod.rs"]
mod apiserver;

use std::time::Duration;

use apiserver::ApiServer;
use futures::{StreamExt, TryStreamExt};
use hearth::api::ImageBuild;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use kube::core::WatchEvent;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

const NS: &str = "shop";

fn pod(name: &str, labels: Value, node: Option<&str>) -> Pod {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    });
    if let Some(node) = node {
        v["spec"]["nodeName"] = json!(node);
    }
    serde_json::from_value(v).unwrap()
}

fn image_build(name: &str) -> ImageBuild {
    serde_json::from_value(json!({
        "apiVersion": "hearth.dev/v1alpha1", "kind": "ImageBuild",
        "metadata": {"name": name},
        "spec": {
            "source": {"git": {"url": "https://example.com/shop.git", "revision": "main"}},
            "output": {"image": "registry.example.com/shop:latest"},
            "cache": {"key": "shop:main"},
        },
    }))
    .unwrap()
}

fn api_code<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn start() -> (ApiServer, Client) {
    let server = ApiServer::start().await;
    server.ensure_namespace(NS);
    server.ensure_namespace("other");
    let client = server.client().await;
    (server, client)
}

#[tokio::test]
async fn discovery_version_and_unknown_resources() {
    let (_server, client) = start().await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.33.0");
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let group = discovery.get("hearth.dev").expect("hearth.dev served");
    let kinds: Vec<String> = group
        .recommended_resources()
        .into_iter()
        .map(|(r, _)| r.kind)
        .collect();
    assert!(kinds.contains(&"ImageBuild".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"BuildCache".to_string()), "{kinds:?}");
    assert!(discovery.get("batch").is_some());

    let unknown = kube::discovery::ApiResource {
        group: "nope.dev".into(),
        version: "v1".into(),
        api_version: "nope.dev/v1".into(),
        kind: "Nope".into(),
        plural: "nopes".into(),
    };
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), NS, &unknown);
    assert_eq!(api_code(api.get("x").await), (404, "NotFound".into()));

    // ConfigMaps have no status subresource.
    let cms: Api<ConfigMap> = Api::namespaced(client, NS);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    assert_eq!(
        api_code(cms.get_status("c").await),
        (404, "NotFound".into())
    );
}

#[tokio::test]
async fn pod_crud_and_errors_are_statuses() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let created = pods
        .create(&PostParams::default(), &pod("p", json!({"app": "a"}), None))
        .await
        .unwrap();
    assert_eq!(
        created.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    assert!(created.uid().is_some());
    assert!(created.creation_timestamp().is_some());
    assert_eq!(created.metadata.generation, Some(1));
    let rv: u64 = created.resource_version().unwrap().parse().unwrap();
    assert_eq!(rv, server.resource_version());

    assert_eq!(
        api_code(
            pods.create(&PostParams::default(), &pod("p", json!({}), None))
                .await
        ),
        (409, "AlreadyExists".into())
    );
    assert_eq!(
        api_code(pods.get("missing").await),
        (404, "NotFound".into())
    );

    let mut got = pods.get("p").await.unwrap();
    got.labels_mut().insert("tier".into(), "web".into());
    let replaced = pods
        .replace("p", &PostParams::default(), &got)
        .await
        .unwrap();
    assert_eq!(replaced.labels()["tier"], "web");
    assert!(replaced.resource_version() > created.resource_version());
    // Only metadata changed: same generation.
    assert_eq!(replaced.metadata.generation, Some(1));

    // Stale replace: the object was modified since `got` was read.
    assert_eq!(
        api_code(pods.replace("p", &PostParams::default(), &got).await),
        (409, "Conflict".into())
    );
    // Stale patch precondition.
    let stale =
        json!({"metadata": {"resourceVersion": created.resource_version(), "labels": {"x": "y"}}});
    assert_eq!(
        api_code(
            pods.patch("p", &PatchParams::default(), &Patch::Merge(&stale))
                .await
        ),
        (409, "Conflict".into())
    );
    // A current one applies.
    let fresh =
        json!({"metadata": {"resourceVersion": replaced.resource_version(), "labels": {"x": "y"}}});
    let patched = pods
        .patch("p", &PatchParams::default(), &Patch::Merge(&fresh))
        .await
        .unwrap();
    assert_eq!(patched.labels()["x"], "y");

    // A no-op write changes nothing, not even the resourceVersion.
    let rv = server.resource_version();
    let same = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(same.resource_version(), patched.resource_version());
    assert_eq!(server.resource_version(), rv);

    // JSON patch.
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/labels/x", "value": "y"},
        {"op": "remove", "path": "/metadata/labels/x"},
    ]))
    .unwrap();
    let patched = pods
        .patch("p", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert!(!patched.labels().contains_key("x"));

    // Unbound pod: deleted at once.
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_code(pods.get("p").await), (404, "NotFound".into()));
    assert_eq!(
        api_code(pods.delete("p", &DeleteParams::default()).await),
        (404, "NotFound".into())
    );
    // Every write request counts, refused ones too.
    assert_eq!(server.writes("pods"), 10);
    assert_eq!(server.requests("pods", "create"), 2);
}

#[tokio::test]
async fn image_build_status_subresource_and_generation() {
    let (server, client) = start().await;
    let builds: Api<ImageBuild> = Api::namespaced(client, NS);
    let mut ib = image_build("b");
    ib.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
    let created = builds.create(&PostParams::default(), &ib).await.unwrap();
    // Status is dropped on create for a custom resource with a status subresource.
    assert!(created.status.is_none());
    assert_eq!(created.metadata.generation, Some(1));

    // Status on the main resource is ignored; spec changes bump generation.
    let main = json!({"spec": {"target": "prod"}, "status": {"phase": "Failed"}});
    let after = builds
        .patch("b", &PatchParams::default(), &Patch::Merge(&main))
        .await
        .unwrap();
    assert_eq!(after.metadata.generation, Some(2));
    let raw = server.object("imagebuilds", NS, "b").unwrap();
    assert!(raw.get("status").is_none());
    assert_eq!(raw["spec"]["target"], "prod");

    let status = json!({"status": {"phase": "Building"}});
    let after = builds
        .patch_status("b", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(
        server.object("imagebuilds", NS, "b").unwrap()["status"]["phase"],
        "Building"
    );
    assert_eq!(after.metadata.generation, Some(2));
    // The CRD's own rules hold: the spec is frozen once the build has started.
    let frozen = json!({"spec": {"target": "other"}});
    assert_eq!(
        api_code(
            builds
                .patch("b", &PatchParams::default(), &Patch::Merge(&frozen))
                .await
        ),
        (422, "Invalid".into())
    );

    // PUT on /status changes only status.
    let mut whole = builds.get("b").await.unwrap();
    whole.spec.target = Some("other".into());
    whole.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
    let after = builds
        .replace_status("b", &PostParams::default(), &whole)
        .await
        .unwrap();
    assert_eq!(after.spec.target.as_deref(), Some("prod"));
    assert_eq!(after.metadata.generation, Some(2));
    let raw = server.object("imagebuilds", NS, "b").unwrap();
    assert_eq!(raw["status"]["phase"], "Succeeded");

    // generateName.
    let mut gen = image_build("");
    gen.metadata.name = None;
    gen.metadata.generate_name = Some("shop-".into());
    let a = builds.create(&PostParams::default(), &gen).await.unwrap();
    let b = builds.create(&PostParams::default(), &gen).await.unwrap();
    assert!(a.name_any().starts_with("shop-") && a.name_any().len() == 10);
    assert_ne!(a.name_any(), b.name_any());
    assert_eq!(server.snapshot("imagebuilds").len(), 3);

    // Server-side apply creates, and records the field manager.
    let applied = json!({
        "apiVersion": "hearth.dev/v1alpha1", "kind": "ImageBuild",
        "metadata": {"name": "applied"},
        "spec": image_build("applied").spec,
    });
    let created = builds
        .patch(
            "applied",
            &PatchParams::apply("tests"),
            &Patch::Apply(&applied),
        )
        .await
        .unwrap();
    let managers: Vec<_> = created
        .managed_fields()
        .iter()
        .map(|m| m.manager.clone().unwrap_or_default())
        .collect();
    assert_eq!(managers, ["tests"]);
    builds
        .delete("applied", &DeleteParams::default())
        .await
        .unwrap();
    assert!(server.object("imagebuilds", NS, "applied").is_none());
}

#[tokio::test]
async fn label_and_field_selectors() {
    let (_server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let other: Api<Pod> = Api::namespaced(client.clone(), "other");
    let pp = PostParams::default();
    pods.create(
        &pp,
        &pod("a", json!({"app": "web", "tier": "front"}), Some("n1")),
    )
    .await
    .unwrap();
    pods.create(&pp, &pod("b", json!({"app": "web"}), Some("n2")))
        .await
        .unwrap();
    pods.create(&pp, &pod("c", json!({"app": "db"}), None))
        .await
        .unwrap();
    other
        .create(&pp, &pod("d", json!({"app": "web"}), Some("n1")))
        .await
        .unwrap();
    let names = |list: kube::core::ObjectList<Pod>| {
        let mut v: Vec<String> = list.items.iter().map(|p| p.name_any()).collect();
        v.sort();
        v
    };
    let all: Api<Pod> = Api::all(client);
    let cases: &[(&str, &str, &[&str])] = &[
        ("app=web", "", &["a", "b", "d"]),
        ("app==web,tier", "", &["a"]),
        ("app!=web", "", &["c"]),
        ("app in (db, web),!tier", "", &["b", "c", "d"]),
        ("app notin (web)", "", &["c"]),
        ("", "spec.nodeName=n1", &["a", "d"]),
        ("", "metadata.namespace=other", &["d"]),
        (
            "",
            "metadata.name!=a,status.phase=Pending",
            &["b", "c", "d"],
        ),
        ("app=web", "spec.nodeName!=n1", &["b"]),
    ];
    for (labels, fields, want) in cases {
        let lp = ListParams::default().labels(labels).fields(fields);
        assert_eq!(
            names(all.list(&lp).await.unwrap()),
            *want,
            "{labels} / {fields}"
        );
    }
    let lp = ListParams::default().labels("app=web");
    assert_eq!(names(pods.list(&lp).await.unwrap()), ["a", "b"]);
}

/// What a watcher saw, as "TYPE name".
fn seen(events: &[Event<ConfigMap>]) -> Vec<String> {
    events
        .iter()
        .flat_map(|e| match e {
            Event::Apply(o) => vec![format!("apply {}", o.name_any())],
            Event::Delete(o) => vec![format!("delete {}", o.name_any())],
            Event::Init => vec!["init".into()],
            Event::InitApply(o) => vec![format!("init-apply {}", o.name_any())],
            Event::InitDone => vec!["init-done".into()],
        })
        .collect()
}

async fn watcher_sees_changes_in_order(streaming: bool) {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let pp = PostParams::default();
    let cm = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
    };
    cms.create(&pp, &cm("before")).await.unwrap();
    let mut config = watcher::Config::default();
    if streaming {
        config = config.streaming_lists();
    }
    let mut stream = watcher::watcher(cms.clone(), config).boxed();
    let mut events = Vec::new();
    while !matches!(events.last(), Some(Event::InitDone)) {
        events.push(stream.try_next().await.unwrap().unwrap());
    }
    cms.create(&pp, &cm("x")).await.unwrap();
    let data = json!({"data": {"k": "w"}});
    cms.patch("x", &PatchParams::default(), &Patch::Merge(&data))
        .await
        .unwrap();
    cms.delete("x", &DeleteParams::default()).await.unwrap();
    for _ in 0..3 {
        let ev = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        events.push(ev);
    }
    let mut want = vec![
        "init",
        "init-apply before",
        "init-done",
        "apply x",
        "apply x",
        "delete x",
    ];
    if streaming {
        // A streaming list starts with the initial events themselves.
        want.remove(0);
    }
    assert_eq!(seen(&events), want);
    assert_eq!(server.requests("configmaps", "watch"), 1);
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted_in_order() {
    watcher_sees_changes_in_order(false).await;
}

#[tokio::test]
async fn streaming_list_watcher_sees_changes_in_order() {
    watcher_sees_changes_in_order(true).await;
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version_and_410_after_compaction() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let pp = PostParams::default();
    let cm = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
    };
    let list = cms.list(&ListParams::default()).await.unwrap();
    let from = list.metadata.resource_version.unwrap();
    cms.create(&pp, &cm("a")).await.unwrap();
    cms.create(&pp, &cm("b")).await.unwrap();
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    // A reconnect from the list's resourceVersion replays exactly what followed it.
    let wp = WatchParams::default().timeout(1);
    let events: Vec<_> = cms
        .watch(&wp, &from)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(o) => format!("ADDED {}", o.name_any()),
            WatchEvent::Modified(o) => format!("MODIFIED {}", o.name_any()),
            WatchEvent::Deleted(o) => format!("DELETED {}", o.name_any()),
            WatchEvent::Bookmark(_) => "BOOKMARK".into(),
            WatchEvent::Error(e) => format!("ERROR {}", e.code),
        })
        .collect();
    assert_eq!(kinds, ["ADDED a", "ADDED b", "DELETED a"]);

    // Bookmarks when asked.
    server.set_bookmark_interval(Duration::from_millis(100));
    let mut wp = WatchParams::default().timeout(1);
    wp.bookmarks = true;
    let rv = server.resource_version().to_string();
    let events: Vec<_> = cms
        .watch(&wp, &rv)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(events.iter().any(|e| matches!(e, WatchEvent::Bookmark(_))));

    // After compaction an old resourceVersion is Gone; the watcher relists and goes on.
    server.compact();
    let events: Vec<_> = cms
        .watch(&wp, &from)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(
        matches!(&events[..], [WatchEvent::Error(e)] if e.code == 410),
        "{events:?}"
    );
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, NS);
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "f", "finalizers": ["hearth.dev/cleanup"]}}),
    )
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    cms.delete("f", &DeleteParams::default()).await.unwrap();
    let marked = cms.get("f").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(0));
    // No new finalizers on an object being deleted.
    let more = json!({"metadata": {"finalizers": ["hearth.dev/cleanup", "other"]}});
    assert_eq!(
        api_code(
            cms.patch("f", &PatchParams::default(), &Patch::Merge(&more))
                .await
        ),
        (422, "Invalid".into())
    );
    let none = json!({"metadata": {"finalizers": null}});
    cms.patch("f", &PatchParams::default(), &Patch::Merge(&none))
        .await
        .unwrap();
    assert_eq!(api_code(cms.get("f").await), (404, "NotFound".into()));
    assert!(server.snapshot("configmaps").is_empty());
}

#[tokio::test]
async fn running_pods_are_deleted_gracefully() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let pp = PostParams::default();
    let mut p = pod("run", json!({}), Some("n1"));
    p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(5);
    pods.create(&pp, &p).await.unwrap();
    pods.delete("run", &DeleteParams::default()).await.unwrap();
    let terminating = pods.get("run").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(5));
    // Deleting again with a longer grace changes nothing; the kubelet's grace 0 removes it.
    pods.delete("run", &DeleteParams::default().grace_period(10))
        .await
        .unwrap();
    assert_eq!(
        pods.get("run")
            .await
            .unwrap()
            .metadata
            .deletion_grace_period_seconds,
        Some(5)
    );
    pods.delete("run", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert!(server.object("pods", NS, "run").is_none());

    // A finished pod goes at once.
    pods.create(&pp, &pod("done", json!({}), Some("n1")))
        .await
        .unwrap();
    let done = json!({"status": {"phase": "Succeeded"}});
    pods.patch_status("done", &PatchParams::default(), &Patch::Merge(&done))
        .await
        .unwrap();
    pods.delete("done", &DeleteParams::default()).await.unwrap();
    assert!(server.object("pods", NS, "done").is_none());
}

#[tokio::test]
async fn volume_protection_finalizers_are_added() {
    let (server, client) = start().await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "cache"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap();
    let created = pvcs.create(&PostParams::default(), &pvc).await.unwrap();
    assert_eq!(created.finalizers(), ["kubernetes.io/pvc-protection"]);
    pvcs.delete("cache", &DeleteParams::default())
        .await
        .unwrap();
    assert!(server
        .object("persistentvolumeclaims", NS, "cache")
        .unwrap()["metadata"]["deletionTimestamp"]
        .is_string());

    let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(client);
    let pv = serde_json::from_value(json!({"metadata": {"name": "pv1"}, "spec": {}})).unwrap();
    let created = pvs.create(&PostParams::default(), &pv).await.unwrap();
    assert_eq!(created.finalizers(), ["kubernetes.io/pv-protection"]);
}

#[tokio::test]
async fn requests_without_the_token_are_unauthorized() {
    let server = ApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = server.kubeconfig(dir.path());
    let mut kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    kubeconfig.auth_infos[0].auth_info.as_mut().unwrap().token = Some("wrong".to_string().into());
    let _ = server.client().await; // installs the test process's crypto provider
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    let pods: Api<Pod> = Api::namespaced(client, NS);
    assert_eq!(api_code(pods.get("x").await), (401, "Unauthorized".into()));
}

#[tokio::test]
async fn injected_faults_and_pod_logs() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap();
    server.fail_next_writes("configmaps", 1, 409);
    server.fail_next_writes("configmaps", 1, 500);
    let pp = PostParams::default();
    assert_eq!(api_code(cms.create(&pp, &cm).await).0, 409);
    assert_eq!(api_code(cms.create(&pp, &cm).await).0, 500);
    cms.create(&pp, &cm).await.unwrap();

    let pods: Api<Pod> = Api::namespaced(client, NS);
    pods.create(&pp, &pod("p", json!({}), Some("n1")))
        .await
        .unwrap();
    server.set_pod_log(NS, "p", "built in 2s\n");
    let log = pods.logs("p", &Default::default()).await.unwrap();
    assert_eq!(log, "built in 2s\n");
    server.set_container_log(NS, "p", "c", "from c\n");
    let only_c = kube::api::LogParams {
        container: Some("c".into()),
        ..Default::default()
    };
    assert_eq!(pods.logs("p", &only_c).await.unwrap(), "from c\n");
    let other = kube::api::LogParams {
        container: Some("sidecar".into()),
        ..Default::default()
    };
    assert_eq!(pods.logs("p", &other).await.unwrap(), "built in 2s\n");
}

#[tokio::test]
async fn lease_manager_elects_one_leader() {
    let (_server, client) = start().await;
    let manager = |identity: &str| {
        kube_lease_manager::LeaseManagerBuilder::new(client.clone(), "hearth-leader")
            .with_namespace(NS)
            .with_identity(identity)
            .with_duration(4)
            .with_grace(1)
            .build()
    };
    let a = manager("a").await.unwrap();
    let b = manager("b").await.unwrap();
    let (ra, rb) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(2), a.changed()),
        tokio::time::timeout(Duration::from_secs(2), b.changed()),
    );
    // Exactly one became leader; the other is still waiting.
    let (leader, follower) = match (ra, rb) {
        (Ok(Ok(true)), Err(_)) => (a, b),
        (Err(_), Ok(Ok(true))) => (b, a),
        other => panic!("expected one leader, got {other:?}"),
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let lease = leases.get("hearth-leader").await.unwrap();
    let holder = lease.spec.unwrap().holder_identity.unwrap();
    assert!(holder == "a" || holder == "b");
    // The leader hands over; the other takes it.
    leader.release().await.unwrap();
    let took = tokio::time::timeout(Duration::from_secs(5), follower.changed())
        .await
        .expect("follower takes over")
        .unwrap();
    assert!(took);
    assert_ne!(
        leases
            .get("hearth-leader")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .unwrap(),
        holder
    );
}

#[tokio::test]
async fn custom_resources_are_pruned_defaulted_and_validated_by_their_crd() {
    let (server, client) = start().await;
    let builds: Api<ImageBuild> = Api::namespaced(client.clone(), NS);
    let mut raw = serde_json::to_value(image_build("v")).unwrap();
    raw["spec"]["bogus"] = json!("dropped");
    raw["spec"].as_object_mut().unwrap().remove("dockerfile");
    let created: ImageBuild = builds
        .create(
            &PostParams::default(),
            &serde_json::from_value(raw.clone()).unwrap(),
        )
        .await
        .unwrap();
    let stored = server.object("imagebuilds", NS, "v").unwrap();
    assert!(stored["spec"].get("bogus").is_none(), "{stored}");
    assert_eq!(
        created.spec.output.image,
        "registry.example.com/shop:latest"
    );

    // A bad image reference is refused with 422 and the field.
    let bad = json!({"spec": {"output": {"image": "not a reference"}}});
    let err = builds
        .patch("v", &PatchParams::default(), &Patch::Merge(&bad))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
            assert!(s.message.contains("spec.output.image"), "{}", s.message);
        }
        other => panic!("{other:?}"),
    }
    // Not stored.
    assert_eq!(
        server.object("imagebuilds", NS, "v").unwrap()["spec"]["output"]["image"],
        "registry.example.com/shop:latest"
    );

    // Any other CRD can be registered, e.g. Tekton's CustomRun.
    use hearth::controller::custom_run::CustomRun;
    use kube::CustomResourceExt;
    server
        .register_crd(serde_json::to_value(CustomRun::crd()).unwrap())
        .unwrap();
    let runs: Api<CustomRun> = Api::namespaced(client, NS);
    assert!(runs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
async fn server_side_apply_conflicts_between_managers() {
    let (_server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, NS);
    let cm = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"k": v}});
    cms.patch("s", &PatchParams::apply("a"), &Patch::Apply(&cm("1")))
        .await
        .unwrap();
    // Another manager changing a field "a" owns: 409, unless forced.
    let err = cms
        .patch("s", &PatchParams::apply("b"), &Patch::Apply(&cm("2")))
        .await;
    assert_eq!(api_code(err), (409, "Conflict".into()));
    // The same value is shared ownership, no conflict.
    cms.patch("s", &PatchParams::apply("b"), &Patch::Apply(&cm("1")))
        .await
        .unwrap();
    let forced = cms
        .patch(
            "s",
            &PatchParams::apply("c").force(),
            &Patch::Apply(&cm("3")),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["k"], "3");
    // "a" now conflicts with "c".
    let err = cms
        .patch("s", &PatchParams::apply("a"), &Patch::Apply(&cm("1")))
        .await;
    assert_eq!(api_code(err), (409, "Conflict".into()));
}

#[tokio::test]
async fn pods_are_placed_by_binding_and_their_spec_is_fixed() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.create(&PostParams::default(), &pod("p", json!({}), None))
        .await
        .unwrap();
    let place = json!({"spec": {"nodeName": "n1"}});
    assert_eq!(
        api_code(
            pods.patch("p", &PatchParams::default(), &Patch::Merge(&place))
                .await
        ),
        (422, "Invalid".into())
    );
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"},
    });
    pods.create_subresource::<Value, kube::core::Status>(
        "binding",
        "p",
        &PostParams::default(),
        &binding,
    )
    .await
    .unwrap();
    assert_eq!(
        pods.get("p")
            .await
            .unwrap()
            .spec
            .unwrap()
            .node_name
            .as_deref(),
        Some("n1")
    );
    // Images may change.
    let image = json!({"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}});
    pods.patch("p", &PatchParams::default(), &Patch::Strategic(&image))
        .await
        .unwrap();

    // Jobs get the generated selector and template labels, as from the real Job strategy.
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client, NS);
    let job = serde_json::from_value(json!({
        "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]}}},
    }))
    .unwrap();
    let job = jobs.create(&PostParams::default(), &job).await.unwrap();
    let uid = job.uid().unwrap();
    let spec = job.spec.unwrap();
    assert_eq!(
        spec.selector.unwrap().match_labels.unwrap()["batch.kubernetes.io/controller-uid"],
        uid
    );
    let labels = spec.template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["job-name"], "j");
    assert_eq!(labels["controller-uid"], uid);
    assert_eq!(server.requests("jobs", "create"), 1);
}

#[tokio::test]
async fn watches_follow_objects_into_and_out_of_a_selector() {
    let (_server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, NS);
    let from = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "m", "labels": {"a": "no"}}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    for v in ["yes", "yes2", "no"] {
        let p = json!({"metadata": {"labels": {"a": v}}});
        cms.patch("m", &PatchParams::default(), &Patch::Merge(&p))
            .await
            .unwrap();
    }
    let wp = WatchParams::default().labels("a in (yes, yes2)").timeout(1);
    let events: Vec<_> = cms
        .watch(&wp, &from)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(_) => "ADDED",
            WatchEvent::Modified(_) => "MODIFIED",
            WatchEvent::Deleted(_) => "DELETED",
            _ => "OTHER",
        })
        .collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);

    // deletecollection with a selector.
    let mut other: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "keep", "labels": {"a": "keep"}}}))
            .unwrap();
    cms.create(&PostParams::default(), &other).await.unwrap();
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("a=no"),
    )
    .await
    .unwrap();
    let left: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(left, ["keep"]);
    other.metadata.resource_version = None;
}

#[tokio::test]
async fn watcher_reconnects_from_its_resource_version_and_relists_after_410() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, NS);
    let pp = PostParams::default();
    let cm = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
    };
    // Each watch request ends after a second; the watcher resumes from the last RV it saw.
    let config = watcher::Config::default().timeout(1);
    // Driven by a task, as a controller drives it, so it reconnects while nothing happens.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut stream = watcher::watcher(cms.clone(), config).boxed();
    let driver = tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            // Errors (the 410) are reported before the watcher relists.
            if let Ok(ev) = ev {
                if tx.send(ev).is_err() {
                    return;
                }
            }
        }
    });
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("event in time")
            .expect("watcher running")
    };
    let mut events = Vec::new();
    while !matches!(events.last(), Some(Event::InitDone)) {
        events.push(next().await);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cms.create(&pp, &cm("x")).await.unwrap();
    cms.delete("x", &DeleteParams::default()).await.unwrap();
    events.push(next().await);
    events.push(next().await);
    assert_eq!(seen(&events), ["init", "init-done", "apply x", "delete x"]);
    assert!(server.requests("configmaps", "watch") >= 2);
    assert_eq!(server.requests("configmaps", "list"), 1);

    // History compacted: the next reconnect is answered 410 Gone, and the watcher relists.
    cms.create(&pp, &cm("y")).await.unwrap();
    events.clear();
    events.push(next().await);
    server.compact();
    while !matches!(events.last(), Some(Event::InitDone)) {
        events.push(next().await);
    }
    assert_eq!(
        seen(&events),
        ["apply y", "init", "init-apply y", "init-done"]
    );
    assert_eq!(server.requests("configmaps", "list"), 2);
    driver.abort();
}

#[tokio::test]
async fn followed_pod_logs_stream_until_the_pod_finishes() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, NS);
    pods.create(&PostParams::default(), &pod("b", json!({}), Some("n1")))
        .await
        .unwrap();
    server.set_pod_log(NS, "b", "");
    server.append_pod_log(NS, "b", "step 1\n");
    let params = kube::api::LogParams {
        follow: true,
        ..Default::default()
    };
    let reader = pods.log_stream("b", &params).await.unwrap();
    let mut lines = futures::AsyncBufReadExt::lines(reader);
    assert_eq!(lines.next().await.unwrap().unwrap(), "step 1");
    server.append_pod_log(NS, "b", "step 2\n");
    assert_eq!(lines.next().await.unwrap().unwrap(), "step 2");
    let done = json!({"status": {"phase": "Succeeded"}});
    pods.patch_status("b", &PatchParams::default(), &Patch::Merge(&done))
        .await
        .unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(5), lines.next())
        .await
        .expect("the log ends with the pod");
    assert!(rest.is_none());
}

#[tokio::test]
async fn namespaces_hold_content_and_terminate_with_it() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap();
    assert_eq!(
        api_code(cms.create(&PostParams::default(), &cm).await),
        (404, "NotFound".into())
    );
    server.ensure_namespace("gone");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "gone");
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "gone");
    pods.create(&PostParams::default(), &pod("run", json!({}), Some("n1")))
        .await
        .unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    namespaces
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    // The running pod holds the namespace in Terminating; nothing new may be created.
    let ns = namespaces.get("gone").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    assert!(server.object("configmaps", "gone", "c").is_none());
    assert_eq!(
        api_code(cms.create(&PostParams::default(), &cm).await),
        (403, "Forbidden".into())
    );
    // The kubelet's final delete empties it, and the namespace goes.
    pods.delete("run", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert_eq!(
        api_code(namespaces.get("gone").await),
        (404, "NotFound".into())
    );
}

#[tokio::test]
async fn requests_run_concurrently_and_shutdown_stops_the_server() {
    let (server, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    // An open watch blocks nothing; slow requests overlap.
    let mut watch = cms
        .watch(&WatchParams::default().timeout(30), "0")
        .await
        .unwrap()
        .boxed();
    server.set_latency(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let lp = ListParams::default();
    let gets = (0..6).map(|_| cms.list(&lp));
    for r in futures::future::join_all(gets).await {
        r.unwrap();
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "{took:?}");
    server.set_latency(Duration::ZERO);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "w"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    assert!(matches!(
        watch.try_next().await.unwrap(),
        Some(WatchEvent::Added(_))
    ));

    server.shutdown();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(cms.get("w").await.is_err());
}

#[tokio::test]
async fn a_lease_whose_holder_died_is_taken_over_after_it_expires() {
    let (_server, client) = start().await;
    let manager = |identity: &str| {
        kube_lease_manager::LeaseManagerBuilder::new(client.clone(), "hearth-leader")
            .with_namespace(NS)
            .with_identity(identity)
            .with_duration(2)
            .with_grace(1)
            .build()
    };
    let a = manager("a").await.unwrap();
    assert!(a.changed().await.unwrap());
    // "a" is killed: it neither renews nor releases.
    drop(a);
    let b = manager("b").await.unwrap();
    let started = std::time::Instant::now();
    let took = tokio::time::timeout(Duration::from_secs(8), b.changed())
        .await
        .expect("b takes over")
        .unwrap();
    assert!(took);
    assert!(started.elapsed() >= Duration::from_millis(500));
    let leases: Api<Lease> = Api::namespaced(client, NS);
    let spec = leases.get("hearth-leader").await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(2));
}

#[tokio::test]
async fn strategic_merge_patches_merge_lists_by_their_keys() {
    let (_server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let mut p = pod("s", json!({}), Some("n1"));
    p.metadata.finalizers = Some(vec!["a".into()]);
    pods.create(&PostParams::default(), &p).await.unwrap();
    let status = |t: &str, s: &str| json!({"status": {"conditions": [{"type": t, "status": s}]}});
    let pp = PatchParams::default();
    pods.patch_status("s", &pp, &Patch::Strategic(&status("Ready", "False")))
        .await
        .unwrap();
    pods.patch_status("s", &pp, &Patch::Strategic(&status("Initialized", "True")))
        .await
        .unwrap();
    let got = pods
        .patch_status("s", &pp, &Patch::Strategic(&status("Ready", "True")))
        .await
        .unwrap();
    let conditions: Vec<(String, String)> = got
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect();
    assert_eq!(
        conditions,
        [
            ("Ready".into(), "True".into()),
            ("Initialized".into(), "True".into())
        ]
    );
    // Finalizers merge as a set; $deleteFromPrimitiveList removes.
    let add = json!({"metadata": {"finalizers": ["b"]}});
    let got = pods.patch("s", &pp, &Patch::Strategic(&add)).await.unwrap();
    assert_eq!(got.finalizers(), ["a", "b"]);
    let remove = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}});
    let got = pods
        .patch("s", &pp, &Patch::Strategic(&remove))
        .await
        .unwrap();
    assert_eq!(got.finalizers(), ["b"]);
}

#[tokio::test]
async fn exec_runs_the_registered_handler_over_websocket() {
    let (server, client) = start().await;
    server.set_exec_handler(|mut req: apiserver::ExecRequest| {
        Box::pin(async move {
            // An "echo with a prefix" command: stdin back to stdout.
            let mut got = Vec::new();
            while let Some(chunk) = req.stdin.recv().await {
                got.extend_from_slice(&chunk);
            }
            let reply = format!(
                "{} {}: {}",
                req.container,
                req.command.join(" "),
                String::from_utf8_lossy(&got)
            );
            let _ = req.stdout.send(reply.into());
            if req.command[0] == "fail" {
                3
            } else {
                0
            }
        })
    });
    let pods: Api<Pod> = Api::namespaced(client, NS);
    pods.create(&PostParams::default(), &pod("p", json!({}), Some("n1")))
        .await
        .unwrap();
    let params = kube::api::AttachParams::default()
        .container("c")
        .stdin(true)
        .stdout(true)
        .stderr(false);
    for (cmd, want_ok) in [("ok", true), ("fail", false)] {
        let mut attached = pods.exec("p", [cmd, "arg"], &params).await.unwrap();
        let mut stdin = attached.stdin().unwrap();
        let mut stdout = attached.stdout().unwrap();
        let status = attached.take_status().unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stdin, b"hello")
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::shutdown(&mut stdin)
            .await
            .unwrap();
        drop(stdin);
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut out)
            .await
            .unwrap();
        assert_eq!(out, format!("c {cmd} arg: hello"));
        let status = status.await.unwrap();
        assert_eq!(
            status.status.as_deref() == Some("Success"),
            want_ok,
            "{status:?}"
        );
        attached.join().await.unwrap();
    }
}
