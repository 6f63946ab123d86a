//! The scheduler and the volume binder, as one API client. Every tick it places each Pending
//! pod that has no `spec.nodeName`: on a Ready, schedulable, live node that matches the pod's
//! `nodeSelector` and required node affinity, and whose PVCs can be used there. A PVC bound to
//! a PV with node affinity pins the pod to that PV's node (so a pod whose volume lives on a
//! lost node stays Pending, as in Kubernetes). An unbound PVC of a `WaitForFirstConsumer`
//! class is provisioned on the chosen node first: a PV with `local.path` in
//! `<root>/nodes/<node>/pv-<pv name>`, node affinity on `kubernetes.io/hostname`, the claim's
//! size, a claimRef and reclaim policy Delete; then the claim is bound and the pod is bound.
//! Pods created with `spec.nodeName` bypass it, as they bypass a real scheduler.
//!
//! A claim whose `dataSource` is another PVC is a clone, as a CSI driver with `CLONE_VOLUME`
//! makes one: only of a bound claim of the same namespace and StorageClass, the class marked
//! [`CLONE_ANNOTATION`] (the driver's capability), on the source PV's node, its dir a copy of
//! the source's. Otherwise the claim stays unbound with a `ProvisioningFailed` Event, as the
//! external-provisioner reports a driver that cannot clone.
//!
//! Not modelled: taints and tolerations, resource requests, pod (anti-)affinity, topology
//! spread, preemption, Immediate-binding classes (their claims are never provisioned).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Binding, Event, Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::util::{self, hostname_selector, is_code, report, selector_matches, TICK};

/// Provisioner name of the test StorageClass.
pub const PROVISIONER: &str = "hearth.test/local";
/// StorageClass annotation saying its (test) CSI driver can clone volumes.
pub const CLONE_ANNOTATION: &str = "hearth.test/clone-volume";

/// Starts the scheduler; it runs until the task is aborted.
pub fn spawn(client: Client, root: PathBuf) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = tick(&client, &root).await {
                report("scheduler", "tick", &e);
            }
            tokio::time::sleep(TICK).await;
        }
    })
}

/// Whether a pod is waiting for the scheduler.
fn unscheduled(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none()
        && pod.spec.as_ref().is_some_and(|s| s.node_name.is_none())
        && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Whether a node can take new pods at all.
pub fn node_usable(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    ready
        && node.metadata.deletion_timestamp.is_none()
        && !node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false)
}

/// A claim a pod uses and what placing the pod needs of it.
enum ClaimNeed {
    /// Bound to a PV that may only be used on matching nodes.
    Bound(Box<PersistentVolume>),
    /// Unbound, of a WaitForFirstConsumer class: provision on the chosen node (a copy of the
    /// source PV's dir for a clone, which must then be on that PV's node).
    Provision(
        Box<PersistentVolumeClaim>,
        String,
        Option<Box<PersistentVolume>>,
    ),
}

struct World {
    nodes: Vec<Node>,
    claims: Vec<PersistentVolumeClaim>,
    volumes: Vec<PersistentVolume>,
    classes: Vec<StorageClass>,
    load: BTreeMap<String, usize>,
}

async fn tick(client: &Client, root: &Path) -> kube::Result<()> {
    let lp = ListParams::default();
    let pods = Api::<Pod>::all(client.clone()).list(&lp).await?.items;
    let pending: Vec<&Pod> = pods.iter().filter(|p| unscheduled(p)).collect();
    if pending.is_empty() {
        return Ok(());
    }
    let mut world = World {
        nodes: Api::<Node>::all(client.clone()).list(&lp).await?.items,
        claims: Api::<PersistentVolumeClaim>::all(client.clone())
            .list(&lp)
            .await?
            .items,
        volumes: Api::<PersistentVolume>::all(client.clone())
            .list(&lp)
            .await?
            .items,
        classes: Api::<StorageClass>::all(client.clone())
            .list(&lp)
            .await?
            .items,
        load: BTreeMap::new(),
    };
    for p in &pods {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if let (Some(node), false) = (
            p.spec.as_ref().and_then(|s| s.node_name.clone()),
            matches!(phase, Some("Succeeded" | "Failed")),
        ) {
            *world.load.entry(node).or_default() += 1;
        }
    }
    for pod in pending {
        match place(pod, &world) {
            Ok((node, needs)) => {
                // A claim provisioned now is stale in this tick's lists: relist first.
                let provisioned = needs.iter().any(|n| matches!(n, ClaimNeed::Provision(..)));
                if let Err(e) = bind(client, root, pod, &node, needs).await {
                    report("scheduler", &format!("binding {}", pod.name_any()), &e);
                    continue;
                }
                *world.load.entry(node).or_default() += 1;
                if provisioned {
                    break;
                }
            }
            Err(reason) => {
                if let Some((claim, message)) = refused_clone(pod, &world, &reason) {
                    if let Err(e) = provisioning_failed(client, claim, &message).await {
                        report("scheduler", "event", &e);
                    }
                }
                if let Err(e) = mark_unschedulable(client, pod, &reason).await {
                    report("scheduler", "pod status", &e);
                }
            }
        }
    }
    Ok(())
}

/// The node for a pod (least loaded, then by name) and its claims' needs, or why none fits.
fn place(pod: &Pod, world: &World) -> Result<(String, Vec<ClaimNeed>), String> {
    let ns = pod.namespace().unwrap_or_default();
    let spec = pod.spec.as_ref().ok_or("no spec")?;
    let mut needs = Vec::new();
    for v in spec.volumes.iter().flatten() {
        let Some(source) = &v.persistent_volume_claim else {
            continue;
        };
        let claim = world
            .claims
            .iter()
            .find(|c| c.namespace().as_deref() == Some(&ns) && c.name_any() == source.claim_name)
            .ok_or_else(|| format!("persistentvolumeclaim {:?} not found", source.claim_name))?;
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(format!(
                "persistentvolumeclaim {:?} is being deleted",
                source.claim_name
            ));
        }
        match claim.spec.as_ref().and_then(|s| s.volume_name.clone()) {
            Some(pv) => {
                let pv = world
                    .volumes
                    .iter()
                    .find(|v| v.name_any() == pv)
                    .ok_or_else(|| format!("persistentvolume {pv:?} not found"))?;
                needs.push(ClaimNeed::Bound(Box::new(pv.clone())));
            }
            None => {
                let class = claim
                    .spec
                    .as_ref()
                    .and_then(|s| s.storage_class_name.clone())
                    .unwrap_or_default();
                let wffc = world.classes.iter().any(|c| {
                    c.name_any() == class
                        && c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
                });
                if !wffc {
                    return Err(format!(
                        "pod has unbound immediate PersistentVolumeClaims ({:?}, class {class:?})",
                        source.claim_name
                    ));
                }
                let source = clone_source(claim, &class, world)?;
                needs.push(ClaimNeed::Provision(Box::new(claim.clone()), class, source));
            }
        }
    }
    let selector = spec.node_selector.clone().unwrap_or_default();
    let affinity = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let mut fits: Vec<&Node> = world
        .nodes
        .iter()
        .filter(|n| node_usable(n))
        .filter(|n| {
            let labels = n.labels();
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .filter(|n| affinity.is_none_or(|a| selector_matches(a, n)))
        .filter(|n| {
            needs.iter().all(|need| match need {
                ClaimNeed::Bound(pv) => pv
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_affinity.as_ref())
                    .and_then(|a| a.required.as_ref())
                    .is_none_or(|sel| selector_matches(sel, n)),
                ClaimNeed::Provision(_, _, source) => source.as_ref().is_none_or(|pv| {
                    pv.spec
                        .as_ref()
                        .and_then(|s| s.node_affinity.as_ref())
                        .and_then(|a| a.required.as_ref())
                        .is_none_or(|sel| selector_matches(sel, n))
                }),
            })
        })
        .collect();
    fits.sort_by_key(|n| {
        (
            world.load.get(&n.name_any()).copied().unwrap_or(0),
            n.name_any(),
        )
    });
    match fits.first() {
        Some(n) => Ok((n.name_any(), needs)),
        None => Err(format!(
            "0/{} nodes are available: none is Ready and schedulable, matches the pod's node \
             selector and affinity, and can use its volumes",
            world.nodes.len()
        )),
    }
}

/// Prefix of the reason a clone is refused for (then told in a `ProvisioningFailed` Event).
const CLONE_REFUSED: &str = "clone refused: ";

/// The PV a claim is to be cloned from (its `dataSource` names a PVC), or `None` for a plain
/// claim; `Err` when the driver would refuse the clone.
fn clone_source(
    claim: &PersistentVolumeClaim,
    class: &str,
    world: &World,
) -> Result<Option<Box<PersistentVolume>>, String> {
    let Some(source) = claim
        .spec
        .as_ref()
        .and_then(|s| s.data_source.as_ref())
        .filter(|d| d.kind == "PersistentVolumeClaim")
    else {
        return Ok(None);
    };
    let refuse = |why: String| Err(format!("{CLONE_REFUSED}{}: {why}", claim.name_any()));
    let clones = world.classes.iter().any(|c| {
        c.name_any() == class
            && c.annotations().get(CLONE_ANNOTATION).map(String::as_str) == Some("true")
    });
    if !clones {
        return refuse(format!(
            "rpc error: code = InvalidArgument desc = the driver of StorageClass {class:?} does not support volume cloning (no CLONE_VOLUME capability)"
        ));
    }
    let ns = claim.namespace();
    let Some(src) = world
        .claims
        .iter()
        .find(|c| c.namespace() == ns && c.name_any() == source.name)
    else {
        return refuse(format!("source PVC {:?} not found", source.name));
    };
    let src_class = src.spec.as_ref().and_then(|s| s.storage_class_name.clone());
    if src_class.as_deref() != Some(class) {
        return refuse(format!(
            "source PVC {:?} is of StorageClass {src_class:?}, not {class:?}",
            source.name
        ));
    }
    let pv = src
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_ref())
        .and_then(|v| world.volumes.iter().find(|pv| &pv.name_any() == v));
    match pv {
        Some(pv) => Ok(Some(Box::new(pv.clone()))),
        None => refuse(format!("source PVC {:?} is not bound", source.name)),
    }
}

/// The claim of `pod` a refused clone `reason` is about, and the message.
fn refused_clone<'a>(
    pod: &Pod,
    world: &'a World,
    reason: &str,
) -> Option<(&'a PersistentVolumeClaim, String)> {
    let rest = reason.strip_prefix(CLONE_REFUSED)?;
    let (name, message) = rest.split_once(": ")?;
    let ns = pod.namespace();
    let claim = world
        .claims
        .iter()
        .find(|c| c.namespace() == ns && c.name_any() == name)?;
    Some((claim, message.to_string()))
}

/// Records a `ProvisioningFailed` Event on `claim` (once per claim), as the CSI
/// external-provisioner does.
async fn provisioning_failed(
    client: &Client,
    claim: &PersistentVolumeClaim,
    message: &str,
) -> kube::Result<()> {
    let ns = claim.namespace().unwrap_or_default();
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let name = format!("{}.provisioning-failed", claim.name_any());
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns,
            "name": claim.name_any(), "uid": claim.uid()},
        "reason": "ProvisioningFailed",
        "message": format!("failed to provision volume with StorageClass: {message}"),
        "type": "Warning",
        "source": {"component": PROVISIONER},
        "firstTimestamp": util::now(),
        "lastTimestamp": util::now(),
        "count": 1,
    }))
    .expect("event");
    match events.create(&PostParams::default(), &event).await {
        Ok(_) => Ok(()),
        Err(e) if is_code(&e, 409) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Where the PV of a claim provisioned on `node` keeps its data.
pub fn pv_dir(root: &Path, node: &str, pv: &str) -> PathBuf {
    root.join("nodes").join(node).join(format!("pv-{pv}"))
}

/// Provisions the pod's unbound claims on `node`, binds them, then binds the pod.
async fn bind(
    client: &Client,
    root: &Path,
    pod: &Pod,
    node: &str,
    needs: Vec<ClaimNeed>,
) -> kube::Result<()> {
    for need in needs {
        if let ClaimNeed::Provision(claim, class, source) = need {
            provision(client, root, &claim, &class, node, source.as_deref()).await?;
        }
    }
    let ns = pod.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let name = pod.name_any();
    let binding = Binding {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.into()),
            ..Default::default()
        },
    };
    match pods
        .create_subresource::<Binding, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => Ok(()),
        // A server without the binding subresource: set the node directly.
        Err(e) if is_code(&e, 404) || is_code(&e, 405) => util::update(&pods, &name, |p| {
            let spec = p.spec.get_or_insert_with(Default::default);
            if spec.node_name.is_some() {
                return false;
            }
            spec.node_name = Some(node.into());
            true
        })
        .await
        .map(|_| ()),
        Err(e) => Err(e),
    }
}

/// Creates the claim's PV on `node` (its host dir first, a copy of `source`'s for a clone)
/// and binds the claim to it.
async fn provision(
    client: &Client,
    root: &Path,
    claim: &PersistentVolumeClaim,
    class: &str,
    node: &str,
    source: Option<&PersistentVolume>,
) -> kube::Result<()> {
    let ns = claim.namespace().unwrap_or_default();
    let claim_name = claim.name_any();
    let uid = claim.uid().unwrap_or_default();
    let pv_name = format!("pvc-{uid}");
    let dir = pv_dir(root, node, &pv_name);
    std::fs::create_dir_all(&dir).expect("PV host dir");
    if let Some(path) = source
        .and_then(|pv| pv.spec.as_ref()?.local.as_ref())
        .map(|l| PathBuf::from(&l.path))
    {
        copy_tree(&path, &dir).expect("clone the source PV's dir");
    }
    let spec = claim.spec.clone().unwrap_or_default();
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned())
        .map(|q| q.0)
        .unwrap_or_else(|| "1Gi".into());
    let access = spec
        .access_modes
        .clone()
        .unwrap_or_else(|| vec!["ReadWriteOnce".into()]);
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": access,
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": class,
            "volumeMode": "Filesystem",
            "local": {"path": dir.to_string_lossy()},
            "nodeAffinity": {"required": hostname_selector(node)},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "namespace": ns, "name": claim_name, "uid": uid},
        }
    }))
    .expect("PV");
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    match pvs.create(&PostParams::default(), &pv).await {
        Ok(_) => {}
        Err(e) if is_code(&e, 409) => {}
        Err(e) => return Err(e),
    }
    util::update_status(&pvs, &pv_name, |pv| {
        let status = pv.status.get_or_insert_with(Default::default);
        if status.phase.as_deref() == Some("Bound") {
            return false;
        }
        status.phase = Some("Bound".into());
        true
    })
    .await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    util::update(&claims, &claim_name, |c| {
        let spec = c.spec.get_or_insert_with(Default::default);
        if spec.volume_name.is_some() {
            return false;
        }
        spec.volume_name = Some(pv_name.clone());
        let annotations = c.metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert("pv.kubernetes.io/bind-completed".into(), "yes".into());
        annotations.insert("pv.kubernetes.io/bound-by-controller".into(), "yes".into());
        annotations.insert("volume.kubernetes.io/selected-node".into(), node.into());
        true
    })
    .await?;
    util::update_status(&claims, &claim_name, |c| {
        let status = c.status.get_or_insert_with(Default::default);
        if status.phase.as_deref() == Some("Bound") {
            return false;
        }
        status.phase = Some("Bound".into());
        status.access_modes = Some(access.clone());
        status.capacity = Some(BTreeMap::from([(
            "storage".to_string(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity(size.clone()),
        )]));
        true
    })
    .await?;
    Ok(())
}

/// Copies the tree `from` into `to` (files, dirs, symlinks), as a volume clone would.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Records why a pod cannot be placed (condition PodScheduled=False), when it changed.
async fn mark_unschedulable(client: &Client, pod: &Pod, reason: &str) -> kube::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    util::update_status(&pods, &pod.name_any(), |p| {
        let status = p.status.get_or_insert_with(Default::default);
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        if conditions
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.message.as_deref() == Some(reason))
        {
            return false;
        }
        conditions.retain(|c| c.type_ != "PodScheduled");
        conditions.push(
            serde_json::from_value(json!({"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": reason,
                "lastTransitionTime": util::now()}))
            .expect("condition"),
        );
        status.phase = Some("Pending".into());
        true
    })
    .await
    .map(|_| ())
}
