//! The cluster's state as text, printed when a test times out: nodes, PVs, PVCs, Jobs, pods
//! (with container states and why they are unschedulable), BuildCaches, ImageBuilds and runs.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use kube::ResourceExt;

use super::{tail, TestCluster};

impl TestCluster {
    /// The cluster's state, for failure output.
    pub async fn describe(&self) -> String {
        let mut out = String::new();
        let lp = ListParams::default();
        let c = &self.client;
        if let Ok(l) = Api::<Node>::all(c.clone()).list(&lp).await {
            for n in l.items {
                out.push_str(&format!(
                    "node {} unschedulable={:?}\n",
                    n.name_any(),
                    n.spec.and_then(|s| s.unschedulable)
                ));
            }
        }
        if let Ok(l) = Api::<PersistentVolume>::all(c.clone()).list(&lp).await {
            for pv in l.items {
                let claim = pv
                    .spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .and_then(|r| r.name.clone());
                out.push_str(&format!(
                    "pv {} claim={claim:?} phase={:?} deleting={}\n",
                    pv.name_any(),
                    pv.status.and_then(|s| s.phase),
                    pv.metadata.deletion_timestamp.is_some()
                ));
            }
        }
        if let Ok(l) = Api::<PersistentVolumeClaim>::all(c.clone()).list(&lp).await {
            for pvc in l.items {
                out.push_str(&format!(
                    "pvc {}/{} volume={:?} phase={:?} deleting={} finalizers={:?}\n",
                    pvc.namespace().unwrap_or_default(),
                    pvc.name_any(),
                    pvc.spec.as_ref().and_then(|s| s.volume_name.clone()),
                    pvc.status.as_ref().and_then(|s| s.phase.clone()),
                    pvc.metadata.deletion_timestamp.is_some(),
                    pvc.finalizers()
                ));
            }
        }
        if let Ok(l) = Api::<Job>::all(c.clone()).list(&lp).await {
            for j in l.items {
                let s = j.status.clone().unwrap_or_default();
                let conds: Vec<String> = s
                    .conditions
                    .iter()
                    .flatten()
                    .map(|c| {
                        format!(
                            "{}={} {}",
                            c.type_,
                            c.status,
                            c.reason.clone().unwrap_or_default()
                        )
                    })
                    .collect();
                out.push_str(&format!(
                    "job {}/{} active={:?} succeeded={:?} failed={:?} {conds:?}\n",
                    j.namespace().unwrap_or_default(),
                    j.name_any(),
                    s.active,
                    s.succeeded,
                    s.failed
                ));
            }
        }
        if let Ok(l) = Api::<Pod>::all(c.clone()).list(&lp).await {
            for p in l.items {
                let s = p.status.clone().unwrap_or_default();
                let states: Vec<String> = s
                    .init_container_statuses
                    .iter()
                    .flatten()
                    .chain(s.container_statuses.iter().flatten())
                    .map(|cs| {
                        let st = cs.state.clone().unwrap_or_default();
                        match (st.waiting, st.running, st.terminated) {
                            (Some(w), _, _) => format!(
                                "{}: waiting {} {}",
                                cs.name,
                                w.reason.unwrap_or_default(),
                                w.message.unwrap_or_default()
                            ),
                            (_, Some(_), _) => format!("{}: running", cs.name),
                            (_, _, Some(t)) => format!(
                                "{}: exit {} {}",
                                cs.name,
                                t.exit_code,
                                tail(&t.message.unwrap_or_default(), 3)
                            ),
                            _ => format!("{}: ?", cs.name),
                        }
                    })
                    .collect();
                let sched = s
                    .conditions
                    .iter()
                    .flatten()
                    .find(|c| c.type_ == "PodScheduled" && c.status == "False")
                    .and_then(|c| c.message.clone());
                out.push_str(&format!(
                    "pod {}/{} node={:?} phase={:?} deleting={} {states:?}{}\n",
                    p.namespace().unwrap_or_default(),
                    p.name_any(),
                    p.spec.as_ref().and_then(|s| s.node_name.clone()),
                    s.phase,
                    p.metadata.deletion_timestamp.is_some(),
                    sched
                        .map(|m| format!(" unschedulable: {m}"))
                        .unwrap_or_default()
                ));
            }
        }
        if let Ok(l) = self.caches().list(&lp).await {
            for bc in l.items {
                out.push_str(&format!(
                    "buildcache {} status={}\n",
                    bc.name_any(),
                    serde_json::to_string(&bc.status).unwrap_or_default()
                ));
            }
        }
        if let Ok(l) = self.builds().list(&lp).await {
            for ib in l.items {
                out.push_str(&format!(
                    "imagebuild {} status={}\n",
                    ib.name_any(),
                    serde_json::to_string(&ib.status).unwrap_or_default()
                ));
            }
        }
        out.push_str("runs:\n");
        out.push_str(&self.runs.describe(self.started));
        out
    }
}
