//! A stateful fake cluster for reconcile tests: the fake API server (kube-fake-client) with
//! Hearth's resources, reflector stores synced from it on demand, an adjustable clock, and a
//! "kubelet" that moves pods and jobs along as a real cluster would.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use hearth::api::{BuildCache, ImageBuild, ImageBuildSpec};
use hearth::controller::config::OperatorConfig;
use hearth::controller::context::{Context, Stores};
use hearth::controller::custom_run::CustomRun;
use hearth::controller::image_build;
use hearth::controller::metrics::Metrics;
use hearth::controller::slim::StoredBuild;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

pub const NS: &str = "shop";

/// The fake cluster and a controller context over it.
pub struct Cluster {
    pub client: Client,
    pub ctx: Arc<Context>,
    writers: Writers,
    clock: Arc<Mutex<Timestamp>>,
}

/// The writers of a context's stores (what the watches would feed).
pub struct Writers {
    pub nodes: Writer<Node>,
    pub volumes: Writer<PersistentVolume>,
    pub claims: Writer<PersistentVolumeClaim>,
    pub pods: Writer<Pod>,
    pub caches: Writer<BuildCache>,
    pub builds: Writer<StoredBuild>,
}

/// Empty stores of one watched scope, and their writers.
pub fn stores() -> (Stores, Writers) {
    let (nodes, nw) = reflector::store();
    let (volumes, vw) = reflector::store();
    let (claims, cw) = reflector::store();
    let (pods, pw) = reflector::store();
    let (caches, bw) = reflector::store();
    let (builds, iw) = reflector::store();
    let stores = Stores {
        nodes,
        volumes,
        claims: vec![claims],
        pods: vec![pods],
        caches: vec![caches],
        builds: vec![builds],
    };
    let writers = Writers {
        nodes: nw,
        volumes: vw,
        claims: cw,
        pods: pw,
        caches: bw,
        builds: iw,
    };
    (stores, writers)
}

/// Fills `writer`'s store with `items`, as a watch's initial list does.
pub fn fill<K>(writer: &mut Writer<K>, items: impl IntoIterator<Item = K>)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + 'static,
{
    writer.apply_watcher_event(&watcher::Event::Init);
    for item in items {
        writer.apply_watcher_event(&watcher::Event::InitApply(item));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
}

pub fn node(name: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": "z1"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap()
}

/// A Ready node whose kubelet reports architecture `arch` (`kubernetes.io/arch`).
pub fn arch_node(name: &str, arch: &str) -> Node {
    let mut n = node(name);
    n.labels_mut()
        .insert("kubernetes.io/arch".into(), arch.into());
    n
}

pub fn spec(image: &str, extra: serde_json::Value) -> ImageBuildSpec {
    let mut v = json!({
        "source": {"git": {"url": "https://github.com/acme/shop.git", "revision": "main"}},
        "output": {"image": image},
        "cache": {"key": "shop:main"}
    });
    if let (Some(base), Some(more)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in more {
            base.insert(k.clone(), val.clone());
        }
    }
    serde_json::from_value(v).unwrap()
}

pub fn s3_config() -> OperatorConfig {
    let mut c = OperatorConfig::default();
    c.snapshot.store = "s3://caches/test".into();
    c
}

impl Cluster {
    pub async fn new(nodes: &[&str], config: OperatorConfig) -> Cluster {
        Self::with_nodes(nodes.iter().map(|n| node(n)).collect(), config).await
    }

    /// A cluster of these nodes (labelled as the test needs).
    pub async fn with_nodes(nodes: Vec<Node>, config: OperatorConfig) -> Cluster {
        let mut builder = kube_fake_client::ClientBuilder::new()
            .with_resource::<ImageBuild>()
            .with_resource::<BuildCache>()
            .with_status_subresource::<ImageBuild>()
            .with_status_subresource::<BuildCache>()
            .with_resource::<CustomRun>()
            .with_status_subresource::<CustomRun>();
        for n in nodes {
            builder = builder.with_object(n);
        }
        let client = builder.build().await.expect("fake client");
        let clock = Arc::new(Mutex::new(Timestamp::now()));
        let (ctx, writers) = Self::context(&client, config, clock.clone());
        let mut cluster = Cluster {
            client,
            ctx,
            writers,
            clock,
        };
        cluster.sync().await;
        cluster
    }

    fn context(
        client: &Client,
        config: OperatorConfig,
        clock: Arc<Mutex<Timestamp>>,
    ) -> (Arc<Context>, Writers) {
        let (stores, writers) = stores();
        let mut ctx = Context::new(
            client.clone(),
            config,
            stores,
            Arc::new(Metrics::default()),
            "test",
        );
        ctx.clock = Arc::new(move || *clock.lock().unwrap());
        (Arc::new(ctx), writers)
    }

    /// A new controller over the same cluster (a restart): fresh stores, same objects.
    pub async fn restart_controller(&mut self) {
        let config = (*self.ctx.config).clone();
        let (ctx, writers) = Self::context(&self.client, config, self.clock.clone());
        self.ctx = ctx;
        self.writers = writers;
        self.sync().await;
    }

    /// Replaces every store's content with what the API holds now (as a relist would).
    pub async fn sync(&mut self) {
        let c = self.client.clone();
        relist(&mut self.writers.nodes, Api::all(c.clone())).await;
        relist(&mut self.writers.volumes, Api::all(c.clone())).await;
        relist(&mut self.writers.claims, Api::all(c.clone())).await;
        relist(&mut self.writers.pods, Api::all(c.clone())).await;
        relist(&mut self.writers.caches, Api::all(c.clone())).await;
        relist(&mut self.writers.builds, Api::all(c)).await;
    }

    pub fn advance(&self, seconds: i64) {
        let mut t = self.clock.lock().unwrap();
        *t = t.checked_add(SignedDuration::from_secs(seconds)).unwrap();
    }

    pub fn builds(&self) -> Api<ImageBuild> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn caches(&self) -> Api<BuildCache> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Now on the cluster's clock.
    pub fn now(&self) -> Timestamp {
        *self.clock.lock().unwrap()
    }

    /// Creates an ImageBuild, stamped with the cluster's clock as an API server would.
    pub async fn submit(&self, name: &str, spec: ImageBuildSpec) -> ImageBuild {
        let mut ib = ImageBuild::new(name, spec);
        ib.metadata.namespace = Some(NS.into());
        ib.metadata.creation_timestamp = Some(Time(self.now()));
        self.builds()
            .create(&PostParams::default(), &ib)
            .await
            .expect("create ImageBuild")
    }

    pub async fn build(&self, name: &str) -> ImageBuild {
        self.builds().get(name).await.expect("get ImageBuild")
    }

    pub async fn cache(&self, name: &str) -> BuildCache {
        self.caches().get(name).await.expect("get BuildCache")
    }

    /// One reconcile of a build, with the stores synced first (as watches would have done),
    /// and the build as the controller's store keeps it (a finished one compact).
    pub async fn reconcile(
        &mut self,
        name: &str,
    ) -> Result<Action, hearth::controller::error::Error> {
        self.sync().await;
        let ib = self.build(name).await;
        image_build::reconcile_stored(Arc::new(StoredBuild::from(ib)), self.ctx.clone()).await
    }

    pub fn runs(&self) -> Api<CustomRun> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// One reconcile of a Tekton CustomRun (the custom task reconciler).
    pub async fn reconcile_run(
        &mut self,
        name: &str,
    ) -> Result<Action, hearth::controller::error::Error> {
        self.sync().await;
        let run = self.runs().get(name).await.expect("get CustomRun");
        hearth::controller::custom_run::reconcile(Arc::new(run), self.ctx.clone()).await
    }

    /// One reconcile of a BuildCache, stores synced first.
    pub async fn reconcile_cache(&mut self, name: &str) {
        self.sync().await;
        let bc = self.cache(name).await;
        hearth::controller::build_cache::reconcile(Arc::new(bc), self.ctx.clone())
            .await
            .expect("reconcile BuildCache");
    }

    /// Reconciles until the phase stops changing (at most `n` times); returns the phase.
    pub async fn settle(&mut self, name: &str) -> Option<hearth::api::Phase> {
        let mut last = None;
        for _ in 0..8 {
            match self.reconcile(name).await {
                Ok(_) => {}
                Err(hearth::controller::error::Error::ClaimConflict(_)) => continue,
                Err(e) => panic!("reconcile {name}: {e}"),
            }
            let phase = self.build(name).await.status.and_then(|s| s.phase);
            if phase == last && phase.is_some() {
                break;
            }
            last = phase;
        }
        last
    }

    /// Reconciles `name` until it is Placing (the next reconcile places it).
    pub async fn until_placing(&mut self, name: &str) {
        for _ in 0..4 {
            if Cluster::phase_of(&self.build(name).await) == Some(hearth::api::Phase::Placing) {
                return;
            }
            self.reconcile(name).await.expect("reconcile");
        }
        panic!(
            "{name} never reached Placing: {:?}",
            self.build(name).await.status
        );
    }

    /// One reconcile of `name` from a copy read before another writer (a person labelling
    /// the build, a pipeline) updated it: the reconcile's claims and other writes go through,
    /// its status write conflicts. Returns the reconcile's error.
    pub async fn reconcile_behind_another_writer(&mut self, name: &str) -> String {
        self.sync().await;
        let stale = self.build(name).await;
        self.builds()
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"metadata": {"labels": {"team": "checkout"}}})),
            )
            .await
            .expect("another writer updates the build");
        let err = image_build::reconcile(Arc::new(stale), self.ctx.clone())
            .await
            .expect_err("the status write conflicts");
        format!("{err}")
    }

    pub fn phase_of(ib: &ImageBuild) -> Option<hearth::api::Phase> {
        ib.status.as_ref().and_then(|s| s.phase)
    }

    // --- the "kubelet": what nodes do to pods and jobs ---

    /// The builder pod of a build finishes with buildctl's metadata as termination message.
    pub async fn finish_pod(&self, pod: &str, exit: i32, message: &str) {
        self.finish_pod_after(pod, exit, message, 40).await
    }

    /// As [`Cluster::finish_pod`], the build container having run `seconds`.
    pub async fn finish_pod_after(&self, pod: &str, exit: i32, message: &str, seconds: i64) {
        let started: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        let finished = started
            .checked_add(SignedDuration::from_secs(seconds))
            .unwrap();
        let mut p = self.placed_pod(pod).await;
        let phase = if exit == 0 { "Succeeded" } else { "Failed" };
        p.status = Some(serde_json::from_value(json!({
            "phase": phase,
            "containerStatuses": [{"name": "buildkit", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": exit, "reason": if exit == 0 {"Completed"} else {"Error"}, "message": message,
                    "startedAt": started.to_string(), "finishedAt": finished.to_string()}}}]
        })).unwrap());
        self.pods()
            .replace_status(pod, &PostParams::default(), &p)
            .await
            .expect("pod status");
    }

    /// The restore init container of a builder pod ends after 9 s with `message` as its
    /// termination message: the pod runs on (`exit` 0) or fails.
    pub async fn finish_restore(&self, pod: &str, exit: i32, message: &str) {
        let mut p = self.placed_pod(pod).await;
        p.status = Some(serde_json::from_value(json!({
            "phase": if exit == 0 {"Running"} else {"Failed"},
            "initContainerStatuses": [{"name": "restore", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": exit, "message": message,
                    "startedAt": "2026-11-22T10:00:00Z", "finishedAt": "2026-11-22T10:00:09Z"}}}]
        })).unwrap());
        self.pods()
            .replace_status(pod, &PostParams::default(), &p)
            .await
            .expect("pod status");
    }

    /// A builder pod as read, on the node its `hearth.dev/node` label names (n1 without one),
    /// as the scheduler would have placed it.
    async fn placed_pod(&self, pod: &str) -> Pod {
        let mut p = self.pods().get(pod).await.expect("builder pod");
        let node = p
            .labels()
            .get("hearth.dev/node")
            .cloned()
            .unwrap_or_else(|| "n1".into());
        p.spec.as_mut().unwrap().node_name = Some(node);
        p
    }

    /// Puts a pod on a node (the scheduler), still running.
    pub async fn schedule_pod(&self, pod: &str, node: &str) {
        let mut p = self.pods().get(pod).await.expect("pod");
        p.spec.as_mut().unwrap().node_name = Some(node.into());
        p.status = Some(serde_json::from_value(json!({"phase": "Running"})).unwrap());
        self.pods()
            .replace(pod, &PostParams::default(), &p)
            .await
            .expect("pod update");
    }

    /// A job completes (or fails), its pod leaving `message` as termination message.
    pub async fn finish_job(&self, job: &str, ok: bool, message: &str) {
        let mut j = self.jobs().get(job).await.expect("job");
        j.status = Some(if ok {
            serde_json::from_value(json!({"succeeded": 1, "startTime": "2026-11-22T10:00:00Z", "completionTime": "2026-11-22T10:00:09Z",
                "conditions": [{"type": "Complete", "status": "True"}]})).unwrap()
        } else {
            serde_json::from_value(json!({"failed": 3, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]})).unwrap()
        });
        self.jobs()
            .replace_status(job, &PostParams::default(), &j)
            .await
            .expect("job status");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("{job}-x1"), "namespace": NS, "labels": {"job-name": job}},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": if ok {"Succeeded"} else {"Failed"}, "containerStatuses": [{"name": "c", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": if ok {0} else {1}, "message": message}}}]}
        })).unwrap();
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("job pod");
    }

    /// A PV bound to a replica PVC, on a node (the provisioner, after the first pod is placed).
    pub async fn bind_pvc(&self, pvc: &str, node: &str) {
        let pv_name = format!("pv-{pvc}");
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": pv_name},
            "spec": {"capacity": {"storage": "50Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/x"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}
        })).unwrap();
        Api::<PersistentVolume>::all(self.client.clone())
            .create(&PostParams::default(), &pv)
            .await
            .expect("pv");
        let mut claim = self.claims().get(pvc).await.expect("pvc");
        claim.spec.as_mut().unwrap().volume_name = Some(pv_name);
        self.claims()
            .replace(pvc, &PostParams::default(), &claim)
            .await
            .expect("bind pvc");
    }

    pub async fn delete_node(&self, name: &str) {
        Api::<Node>::all(self.client.clone())
            .delete(name, &Default::default())
            .await
            .expect("delete node");
    }
}

async fn relist<K>(writer: &mut Writer<K>, api: Api<K>)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + 'static,
{
    let items = api.list(&ListParams::default()).await.expect("list").items;
    fill(writer, items);
}

/// buildctl metadata with a digest.
pub fn metadata(digest_char: char) -> (String, String) {
    let digest = format!("sha256:{}", digest_char.to_string().repeat(64));
    (
        format!("{{\"containerimage.digest\": \"{digest}\", \"image.name\": \"r\"}}"),
        digest,
    )
}

/// What `hearth snapshot save --json` reports (a digest of 64 hex digits, like the real one).
pub const SAVED: &str = r#"{"bytes":1200000,"id":"snap-1","manifestSha256":"5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a","uploadedBytes":800000}"#;
/// The manifest digest in [`SAVED`].
pub const SAVED_PIN: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

impl Cluster {
    /// Runs build `name` from submit to the end, finishing its pod with an image of
    /// `digest_char` (and its save job, when it has one, with [`SAVED`]).
    pub async fn run_to_end(&mut self, name: &str, digest_char: char) -> ImageBuild {
        self.settle(name).await;
        let (meta, _) = metadata(digest_char);
        self.finish_pod(&format!("{name}-build-1"), 0, &meta).await;
        self.settle(name).await;
        let save = format!("{name}-save-1");
        if self.jobs().get_opt(&save).await.unwrap().is_some() {
            self.finish_job(&save, true, SAVED).await;
            self.settle(name).await;
        }
        self.build(name).await
    }
}
