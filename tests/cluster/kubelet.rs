//! The node agent ("kubelet"), one per node, as an API client: it runs the pods bound to its
//! node. Volumes map to host dirs (a PVC to its PV's `local.path`, an emptyDir to a dir of the
//! pod, secret volumes to files written from the Secret); containers run as real processes
//! (see [`super::runtime`]) except the builder pod's `buildkit` container, which is played
//! in-process (see [`super::buildkit`]), and the upload receiver, reported Completed at once.
//! Init containers run first, in order; a failed one fails the pod (restartPolicy Never).
//! A pod whose PVC is not Bound to a PV on this node, or whose Secrets are missing, stays
//! Pending with the waiting reason `ContainerCreating`. On a deletionTimestamp the running pod
//! gets SIGTERM, SIGKILL after its grace period, a final status, then a DELETE with
//! `gracePeriodSeconds: 0`; a finished pod is just deleted so. `activeDeadlineSeconds` kills
//! the pod (phase Failed, reason DeadlineExceeded). When its Node is deleted, the kubelet kills
//! its processes and stops, leaving its pods to pod GC.
//!
//! Not modelled: restarts (restartPolicy other than Never), probes, resources, images,
//! configMap volumes, users and capabilities (every process runs as the test's user), events.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, Node, PersistentVolume, PersistentVolumeClaim, Pod, PodStatus,
};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use super::buildkit::BuildkitOpts;
use super::containers::{run_container, setup_volumes, Exit};
use super::record::{Procs, Runs};
use super::runtime;
use super::util::{self, report, selector_matches, TICK};

/// Knobs of every kubelet.
#[derive(Clone, Debug)]
pub struct KubeletOpts {
    /// Time from seeing a runnable pod to starting it (image pull, sandbox).
    pub start_latency: Duration,
    /// The real `hearth` binary; its dir comes first in every container's PATH.
    pub hearth_bin: PathBuf,
    /// The played buildkitd.
    pub buildkit: BuildkitOpts,
}

/// One node's agent.
pub struct NodeAgent {
    /// API client.
    pub client: Client,
    /// Node name.
    pub node: String,
    /// The cluster's host root (`<root>/nodes/<node>/...`).
    pub root: PathBuf,
    /// Knobs.
    pub opts: KubeletOpts,
    /// Where runs are recorded.
    pub runs: Runs,
    /// Where process groups are registered.
    pub procs: Procs,
}

struct Tracked {
    term: Arc<watch::Sender<Option<Duration>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts a node's kubelet; it stops when its Node is deleted or the task is aborted.
pub fn spawn(agent: NodeAgent) -> tokio::task::JoinHandle<()> {
    let agent = Arc::new(agent);
    tokio::spawn(async move {
        let mut tracked: HashMap<String, Tracked> = HashMap::new();
        let mut waiting: HashMap<String, String> = HashMap::new();
        loop {
            match Api::<Node>::all(agent.client.clone())
                .get_opt(&agent.node)
                .await
            {
                Ok(Some(node)) if node.metadata.deletion_timestamp.is_none() => {
                    if let Err(e) = tick(&agent, &node, &mut tracked, &mut waiting).await {
                        report("kubelet", &agent.node, &e);
                    }
                }
                Ok(_) => {
                    for t in tracked.values() {
                        t.task.abort();
                    }
                    agent.procs.kill(Some(&agent.node));
                    agent.runs.kill_node(&agent.node);
                    return;
                }
                Err(e) => report("kubelet", &agent.node, &e),
            }
            tokio::time::sleep(TICK).await;
        }
    })
}

pub(super) fn grace_of(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64)
}

fn terminate(term: &watch::Sender<Option<Duration>>, grace: Duration) {
    term.send_if_modified(|t| {
        if t.is_some_and(|g| g <= grace) {
            return false;
        }
        *t = Some(grace);
        true
    });
}

async fn tick(
    agent: &Arc<NodeAgent>,
    node: &Node,
    tracked: &mut HashMap<String, Tracked>,
    waiting: &mut HashMap<String, String>,
) -> kube::Result<()> {
    let pods = Api::<Pod>::all(agent.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let mine: Vec<Pod> = pods
        .into_iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&agent.node))
        .collect();
    for pod in &mine {
        let uid = pod.uid().unwrap_or_default();
        let api: Api<Pod> =
            Api::namespaced(agent.client.clone(), &pod.namespace().unwrap_or_default());
        let deleted = pod.metadata.deletion_timestamp.is_some();
        if let Some(t) = tracked.get(&uid) {
            if deleted && t.task.is_finished() {
                util::delete(&api, &pod.name_any(), &util::force()).await?;
            } else if deleted {
                terminate(&t.term, grace_of(pod));
            }
            continue;
        }
        if deleted {
            util::delete(&api, &pod.name_any(), &util::force()).await?;
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        match ready(agent, node, pod).await {
            Ok(()) => {
                waiting.remove(&uid);
                let (tx, rx) = watch::channel(None);
                let tx = Arc::new(tx);
                let task = tokio::spawn(run_pod(agent.clone(), pod.clone(), tx.clone(), rx));
                tracked.insert(uid, Tracked { term: tx, task });
            }
            Err(message) => {
                if waiting.get(&uid) != Some(&message) {
                    set_waiting(&api, pod, &message).await?;
                    waiting.insert(uid, message);
                }
            }
        }
    }
    // Pods removed behind the kubelet's back (force-deleted): kill what still runs.
    tracked.retain(|uid, t| {
        let present = mine.iter().any(|p| p.uid().as_deref() == Some(uid));
        if !present && !t.task.is_finished() {
            terminate(&t.term, Duration::ZERO);
        }
        present || !t.task.is_finished()
    });
    Ok(())
}

/// Whether a pod can start here: its claims Bound to PVs of this node, its Secrets present.
async fn ready(agent: &NodeAgent, node: &Node, pod: &Pod) -> Result<(), String> {
    let ns = pod.namespace().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    for v in spec.volumes.iter().flatten() {
        if let Some(source) = &v.persistent_volume_claim {
            pv_of_claim(&agent.client, &ns, &source.claim_name, Some(node)).await?;
        }
        if let Some(secret) = &v.secret {
            let name = secret.secret_name.clone().unwrap_or_default();
            if secret.optional != Some(true) && secret_missing(agent, &ns, &name).await {
                return Err(format!(
                    "MountVolume.SetUp failed: secret {name:?} not found"
                ));
            }
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(secret) = &source.secret {
                if secret.optional != Some(true) && secret_missing(agent, &ns, &secret.name).await {
                    return Err(format!(
                        "MountVolume.SetUp failed: secret {:?} not found",
                        secret.name
                    ));
                }
            }
        }
    }
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        runtime::resolve_env(&agent.client, pod, c)
            .await
            .map_err(|e| format!("CreateContainerConfigError: {e}"))?;
    }
    Ok(())
}

async fn secret_missing(agent: &NodeAgent, ns: &str, name: &str) -> bool {
    !matches!(
        runtime::secret_data(&agent.client, ns, name).await,
        Ok(Some(_))
    )
}

/// The host dir of a claim's PV, if the claim is Bound to a PV usable on `node`.
pub(super) async fn pv_of_claim(
    client: &Client,
    ns: &str,
    claim: &str,
    node: Option<&Node>,
) -> Result<PathBuf, String> {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get_opt(claim)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("persistentvolumeclaim {claim:?} not found"))?;
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let Some(pv_name) = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|_| bound)
    else {
        return Err(format!("persistentvolumeclaim {claim:?} is not bound"));
    };
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get_opt(&pv_name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("persistentvolume {pv_name:?} not found"))?;
    let spec = pv.spec.unwrap_or_default();
    if let (Some(node), Some(sel)) = (
        node,
        spec.node_affinity
            .as_ref()
            .and_then(|a| a.required.as_ref()),
    ) {
        if !selector_matches(sel, node) {
            return Err(format!(
                "volume node affinity conflict: {pv_name} is not on this node"
            ));
        }
    }
    spec.local
        .map(|l| PathBuf::from(l.path))
        .or_else(|| spec.host_path.map(|h| PathBuf::from(h.path)))
        .ok_or_else(|| format!("persistentvolume {pv_name:?} has no local path"))
}

fn waiting_status(c: &Container, reason: &str, message: Option<&str>) -> ContainerStatus {
    serde_json::from_value(
        json!({"name": c.name, "image": c.image.clone().unwrap_or_default(),
        "imageID": "", "ready": false, "restartCount": 0, "started": false,
        "state": {"waiting": {"reason": reason, "message": message}}}),
    )
    .expect("container status")
}

async fn set_waiting(api: &Api<Pod>, pod: &Pod, message: &str) -> kube::Result<()> {
    let spec = pod.spec.clone().unwrap_or_default();
    util::update_status(api, &pod.name_any(), |p| {
        let status = p.status.get_or_insert_with(Default::default);
        status.phase = Some("Pending".into());
        status.container_statuses = Some(
            spec.containers
                .iter()
                .map(|c| waiting_status(c, "ContainerCreating", Some(message)))
                .collect(),
        );
        true
    })
    .await
    .map(|_| ())
}

fn condition(type_: &str, ok: bool) -> serde_json::Value {
    json!({"type": type_, "status": if ok {"True"} else {"False"}, "lastTransitionTime": util::now()})
}

fn conditions(initialized: bool, ready: bool) -> Vec<k8s_openapi::api::core::v1::PodCondition> {
    serde_json::from_value(json!([
        condition("PodScheduled", true),
        condition("Initialized", initialized),
        condition("ContainersReady", ready),
        condition("Ready", ready),
    ]))
    .expect("conditions")
}

async fn write(api: &Api<Pod>, name: &str, status: &PodStatus) {
    let r = util::update_status(api, name, |p| {
        p.status = Some(status.clone());
        true
    })
    .await;
    if let Err(e) = r {
        report("kubelet", &format!("status of {name}"), &e);
    }
}

fn terminated_status(c: &Container, exit: &Exit) -> ContainerStatus {
    serde_json::from_value(
        json!({"name": c.name, "image": c.image.clone().unwrap_or_default(),
        "imageID": "", "ready": false, "restartCount": 0, "started": false,
        "state": {"terminated": {"exitCode": exit.code,
            "reason": if exit.code == 0 {"Completed"} else {"Error"},
            "message": (!exit.message.is_empty()).then_some(&exit.message),
            "startedAt": exit.started.to_string(), "finishedAt": exit.finished.to_string()}}}),
    )
    .expect("container status")
}

fn running_status(c: &Container, ready: bool) -> ContainerStatus {
    serde_json::from_value(
        json!({"name": c.name, "image": c.image.clone().unwrap_or_default(),
        "imageID": "", "ready": ready, "restartCount": 0, "started": true,
        "state": {"running": {"startedAt": util::now()}}}),
    )
    .expect("container status")
}

/// Runs one pod from start to final status (and its deletion, when it was deleted).
async fn run_pod(
    agent: Arc<NodeAgent>,
    pod: Pod,
    term_tx: Arc<watch::Sender<Option<Duration>>>,
    mut term: watch::Receiver<Option<Duration>>,
) {
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(agent.client.clone(), &pod.namespace().unwrap_or_default());
    let spec = pod.spec.clone().unwrap_or_default();
    tokio::select! {
        _ = tokio::time::sleep(agent.opts.start_latency) => {}
        _ = runtime::wait_term(&mut term) => {
            let _ = util::delete(&api, &name, &util::force()).await;
            return;
        }
    }
    let pod_dir = agent
        .root
        .join("nodes")
        .join(&agent.node)
        .join("pods")
        .join(pod.uid().unwrap_or_default());
    let volumes = match setup_volumes(&agent, &pod, &pod_dir).await {
        Ok(v) => v,
        Err(e) => {
            let _ = set_waiting(&api, &pod, &e).await;
            return;
        }
    };
    let deadline_hit = Arc::new(AtomicBool::new(false));
    if let Some(secs) = spec.active_deadline_seconds {
        let (hit, tx, grace) = (deadline_hit.clone(), term_tx.clone(), grace_of(&pod));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs.max(0) as u64)).await;
            hit.store(true, Ordering::SeqCst);
            terminate(&tx, grace);
        });
    }
    let inits = spec.init_containers.clone().unwrap_or_default();
    let mut status = PodStatus {
        phase: Some("Pending".into()),
        start_time: Some(util::now()),
        host_ip: Some("127.0.0.1".into()),
        pod_ip: Some("127.0.0.1".into()),
        conditions: Some(conditions(inits.is_empty(), false)),
        init_container_statuses: (!inits.is_empty()).then(|| {
            inits
                .iter()
                .map(|c| waiting_status(c, "PodInitializing", None))
                .collect()
        }),
        container_statuses: Some(
            spec.containers
                .iter()
                .map(|c| waiting_status(c, "PodInitializing", None))
                .collect(),
        ),
        ..Default::default()
    };
    write(&api, &name, &status).await;
    let mut failed = false;
    for (i, c) in inits.iter().enumerate() {
        if term.borrow().is_some() {
            failed = true;
            break;
        }
        status.init_container_statuses.as_mut().unwrap()[i] = running_status(c, false);
        write(&api, &name, &status).await;
        let exit = run_container(&agent, &pod, c, &volumes, &pod_dir, term.clone()).await;
        status.init_container_statuses.as_mut().unwrap()[i] = terminated_status(c, &exit);
        write(&api, &name, &status).await;
        if exit.code != 0 {
            failed = true;
            break;
        }
    }
    if !failed && term.borrow().is_none() {
        status.phase = Some("Running".into());
        status.conditions = Some(conditions(true, true));
        status.container_statuses = Some(
            spec.containers
                .iter()
                .map(|c| running_status(c, true))
                .collect(),
        );
        write(&api, &name, &status).await;
        let exits = futures::future::join_all(
            spec.containers
                .iter()
                .map(|c| run_container(&agent, &pod, c, &volumes, &pod_dir, term.clone())),
        )
        .await;
        failed = exits.iter().any(|e| e.code != 0);
        status.container_statuses = Some(
            spec.containers
                .iter()
                .zip(&exits)
                .map(|(c, e)| terminated_status(c, e))
                .collect(),
        );
    } else {
        failed = true;
    }
    status.phase = Some(if failed { "Failed" } else { "Succeeded" }.into());
    status.conditions = Some(conditions(true, false));
    if deadline_hit.load(Ordering::SeqCst) {
        status.reason = Some("DeadlineExceeded".into());
        status.message =
            Some("Pod was active on the node longer than the specified deadline".into());
    }
    write(&api, &name, &status).await;
    if term.borrow().is_some() && !deadline_hit.load(Ordering::SeqCst) {
        if let Err(e) = util::delete(&api, &name, &util::force()).await {
            report("kubelet", &format!("deleting {name}"), &e);
        }
    }
}
