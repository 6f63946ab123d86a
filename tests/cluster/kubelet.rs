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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, Node, PersistentVolume, PersistentVolumeClaim, Pod, PodStatus,
};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use super::buildkit::{self, BuildkitOpts};
use super::record::{Procs, Run, Runs};
use super::runtime::{self, ProcessSpec, Rewriter};
use super::util::{self, report, selector_matches, TICK};

/// Label of a pod's role (see `src/controller/builders/labels.rs`).
const ROLE: &str = "hearth.dev/role";
/// The upload receiver init container of builder pods.
const RECEIVER: &str = "receive";

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

fn grace_of(pod: &Pod) -> Duration {
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
async fn pv_of_claim(
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

/// How a container ended.
struct Exit {
    code: i32,
    message: String,
    started: jiff::Timestamp,
    finished: jiff::Timestamp,
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

/// Volume name -> (host dir, whether it is a PV).
type Volumes = BTreeMap<String, (PathBuf, bool)>;

async fn setup_volumes(agent: &NodeAgent, pod: &Pod, pod_dir: &Path) -> Result<Volumes, String> {
    let ns = pod.namespace().unwrap_or_default();
    let mut out = Volumes::new();
    for sub in ["logs", "termination", "home"] {
        std::fs::create_dir_all(pod_dir.join(sub)).map_err(|e| e.to_string())?;
    }
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(source) = &v.persistent_volume_claim {
            let dir = pv_of_claim(&agent.client, &ns, &source.claim_name, None).await?;
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            out.insert(v.name.clone(), (dir, true));
            continue;
        }
        let dir = pod_dir.join("volumes").join(&v.name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut files: Vec<(String, String, Option<Vec<(String, String)>>)> = Vec::new();
        if let Some(s) = &v.secret {
            let items = s
                .items
                .as_ref()
                .map(|i| i.iter().map(|k| (k.key.clone(), k.path.clone())).collect());
            files.push((
                s.secret_name.clone().unwrap_or_default(),
                String::new(),
                items,
            ));
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(s) = &source.secret {
                let items = s
                    .items
                    .as_ref()
                    .map(|i| i.iter().map(|k| (k.key.clone(), k.path.clone())).collect());
                files.push((s.name.clone(), String::new(), items));
            }
        }
        for (secret, _, items) in files {
            let data = runtime::secret_data(&agent.client, &ns, &secret)
                .await
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            let pairs: Vec<(String, String)> =
                items.unwrap_or_else(|| data.keys().map(|k| (k.clone(), k.clone())).collect());
            for (key, path) in pairs {
                if let Some(value) = data.get(&key) {
                    let file = dir.join(path);
                    if let Some(parent) = file.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                    }
                    std::fs::write(file, value).map_err(|e| e.to_string())?;
                }
            }
        }
        out.insert(v.name.clone(), (dir, false));
    }
    Ok(out)
}

/// Runs (or plays) one container; records the run.
async fn run_container(
    agent: &NodeAgent,
    pod: &Pod,
    c: &Container,
    volumes: &Volumes,
    pod_dir: &Path,
    term: watch::Receiver<Option<Duration>>,
) -> Exit {
    let started = jiff::Timestamp::now();
    let role = pod.labels().get(ROLE).cloned();
    let is_build = role.as_deref() == Some("build");
    if is_build && c.name == RECEIVER {
        return Exit {
            code: 0,
            message: String::new(),
            started,
            finished: jiff::Timestamp::now(),
        };
    }
    let log = pod_dir.join("logs").join(format!("{}.log", c.name));
    let term_file = pod_dir.join("termination").join(&c.name);
    let _ = std::fs::write(&term_file, b"");
    let mut pairs = vec![(
        c.termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into()),
        term_file.to_string_lossy().into_owned(),
    )];
    let (mut pv_dirs, mut mounts) = (Vec::new(), Vec::new());
    for m in c.volume_mounts.iter().flatten() {
        let Some((dir, is_pv)) = volumes.get(&m.name) else {
            continue;
        };
        let host = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => dir.join(sub),
            None => dir.clone(),
        };
        let _ = std::fs::create_dir_all(&host);
        if *is_pv {
            pv_dirs.push(dir.clone());
        }
        mounts.push(host.clone());
        pairs.push((
            m.mount_path.trim_end_matches('/').to_string(),
            host.to_string_lossy().into_owned(),
        ));
    }
    let rw = Rewriter::new(pairs);
    let fail = |message: String| Exit {
        code: 128,
        message,
        started,
        finished: jiff::Timestamp::now(),
    };
    let env = match runtime::resolve_env(&agent.client, pod, c).await {
        Ok(env) => env,
        Err(e) => return fail(format!("CreateContainerConfigError: {e}")),
    };
    let mut env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k, rw.apply(&v))).collect();
    let bin_dir = agent
        .opts
        .hearth_bin
        .parent()
        .unwrap_or(Path::new("/"))
        .to_string_lossy()
        .into_owned();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push((
            "PATH".into(),
            format!("{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        ));
    }
    env.push((
        "HOME".into(),
        pod_dir.join("home").to_string_lossy().into_owned(),
    ));
    env.push(("HOSTNAME".into(), pod.name_any()));
    let args: Vec<String> = c.args.iter().flatten().map(|a| rw.apply(a)).collect();
    let index = agent.runs.start(Run {
        namespace: pod.namespace().unwrap_or_default(),
        pod: pod.name_any(),
        container: c.name.clone(),
        role,
        node: agent.node.clone(),
        pv_dirs,
        mounts,
        started: Instant::now(),
        ended: None,
        exit_code: None,
        message: String::new(),
    });
    let code = if is_build && c.name == "buildkit" {
        let play = buildkit::Play {
            args,
            env,
            log: log.clone(),
            termination_log: term_file.clone(),
            seed: pod.uid().unwrap_or_default(),
        };
        let mut kill = term.clone();
        let fut = buildkit::play(&agent.opts.buildkit, play, term);
        tokio::pin!(fut);
        tokio::select! {
            code = &mut fut => code,
            grace = runtime::wait_term(&mut kill) => tokio::select! {
                code = &mut fut => code,
                _ = tokio::time::sleep(grace) => 137,
            },
        }
    } else {
        let Some(command) = c.command.clone() else {
            agent.runs.finish(index, 128, "no command");
            return fail("container has no command (image entrypoints are not modelled)".into());
        };
        let mut argv: Vec<String> = command.iter().map(|a| rw.apply(a)).collect();
        argv.extend(args);
        let cwd = c
            .working_dir
            .as_deref()
            .map(|w| PathBuf::from(rw.apply(w)))
            .unwrap_or_else(|| pod_dir.join("home"));
        let spec = ProcessSpec {
            node: agent.node.clone(),
            argv,
            env,
            cwd,
            log: log.clone(),
        };
        match runtime::run_process(spec, &agent.procs, term).await {
            Ok(code) => code,
            Err(e) => {
                agent.runs.finish(index, 128, &e);
                return fail(e);
            }
        }
    };
    let message = runtime::termination_message(
        &term_file,
        &log,
        c.termination_message_policy.as_deref(),
        code,
    );
    agent.runs.finish(index, code, &message);
    Exit {
        code,
        message,
        started,
        finished: jiff::Timestamp::now(),
    }
}
