//! The controller-manager's duties that Hearth depends on, as API clients: the Job controller
//! (one pod at a time from the template, retries up to `backoffLimit`, `activeDeadlineSeconds`,
//! `ttlSecondsAfterFinished`) and pod GC (pods bound to a node that no longer exists are
//! marked Failed and force-deleted after a short delay). The garbage collector and the volume
//! protection and reclaim controllers are in [`super::gc`].
//!
//! Differences from Kubernetes: `completions` and `parallelism` are taken as 1; there is no
//! exponential backoff between retries (a fixed, by default zero, delay instead); no pod
//! failure policy, success policy, suspend, or job-tracking finalizers on pods.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};

use super::util::{self, report, TICK};

/// Knobs of the controller-manager duties.
#[derive(Clone, Debug)]
pub struct ControllerOpts {
    /// How long a pod bound to a vanished node lingers before pod GC deletes it.
    pub pod_gc_delay: Duration,
    /// Delay before a failed Job pod is replaced (Kubernetes: 10 s, doubling).
    pub job_retry_delay: Duration,
}

impl Default for ControllerOpts {
    fn default() -> Self {
        ControllerOpts {
            pod_gc_delay: Duration::from_millis(500),
            job_retry_delay: Duration::ZERO,
        }
    }
}

/// Starts the Job controller and pod GC; they run until the task is aborted.
pub fn spawn(client: Client, opts: ControllerOpts) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut orphans: HashMap<String, Instant> = HashMap::new();
        loop {
            if let Err(e) = jobs_tick(&client, &opts).await {
                report("jobs", "tick", &e);
            }
            if let Err(e) = pod_gc_tick(&client, &opts, &mut orphans).await {
                report("podgc", "tick", &e);
            }
            tokio::time::sleep(TICK).await;
        }
    })
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn condition(status: &JobStatus, type_: &str) -> Option<JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
        .cloned()
}

fn finished_at(status: &JobStatus) -> Option<jiff::Timestamp> {
    if let Some(t) = &status.completion_time {
        return Some(t.0);
    }
    condition(status, "Failed").and_then(|c| c.last_transition_time.map(|t| t.0))
}

fn new_condition(type_: &str, reason: &str, message: &str) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(util::now()),
        last_transition_time: Some(util::now()),
    }
}

async fn jobs_tick(client: &Client, opts: &ControllerOpts) -> kube::Result<()> {
    let lp = ListParams::default();
    let jobs = Api::<Job>::all(client.clone()).list(&lp).await?.items;
    if jobs.is_empty() {
        return Ok(());
    }
    let pods = Api::<Pod>::all(client.clone()).list(&lp).await?.items;
    for job in jobs {
        if let Err(e) = sync_job(client, opts, &job, &pods).await {
            report("jobs", &format!("job {}", job.name_any()), &e);
        }
    }
    Ok(())
}

async fn sync_job(
    client: &Client,
    opts: &ControllerOpts,
    job: &Job,
    pods: &[Pod],
) -> kube::Result<()> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let uid = job.uid().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let spec = job.spec.clone().unwrap_or_default();
    let current = job.status.clone().unwrap_or_default();
    let mine: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.owner_references().iter().any(|o| o.uid == uid))
        .collect();
    let active: Vec<&&Pod> = mine
        .iter()
        .filter(|p| !is_terminal(p) && p.metadata.deletion_timestamp.is_none())
        .collect();

    if condition(&current, "Complete").is_some() || condition(&current, "Failed").is_some() {
        // Finished: nothing may keep running, and the TTL controller deletes it in time.
        for p in &active {
            util::delete(&pod_api, &p.name_any(), &DeleteParams::default()).await?;
        }
        if let (Some(ttl), Some(at)) = (spec.ttl_seconds_after_finished, finished_at(&current)) {
            if jiff::Timestamp::now() >= at + jiff::SignedDuration::from_secs(ttl as i64) {
                util::delete(&jobs, &name, &DeleteParams::background()).await?;
            }
        }
        return Ok(());
    }

    let succeeded = mine
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
        .count() as i32;
    let failed = mine
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
        .count() as i32;
    let mut status = current.clone();
    let start = status.start_time.clone().unwrap_or_else(util::now);
    status.start_time = Some(start.clone());
    status.succeeded = (succeeded > 0).then_some(succeeded);
    status.failed = (failed > 0).then_some(failed);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let deadline_passed = spec
        .active_deadline_seconds
        .is_some_and(|d| jiff::Timestamp::now() >= start.0 + jiff::SignedDuration::from_secs(d));
    let mut create = false;
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if succeeded > 0 {
        conditions.push(new_condition(
            "SuccessCriteriaMet",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        ));
        conditions.push(new_condition(
            "Complete",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        ));
        status.completion_time = Some(util::now());
    } else if failed > backoff_limit {
        conditions.push(new_condition(
            "Failed",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ));
    } else if deadline_passed {
        conditions.push(new_condition(
            "Failed",
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ));
    } else if active.is_empty() {
        let last_failure = mine
            .iter()
            .filter_map(|p| p.status.as_ref())
            .flat_map(|s| s.container_statuses.iter().flatten())
            .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.clone())
            .map(|t| t.0)
            .max();
        let waited = last_failure.is_none_or(|t| {
            jiff::Timestamp::now()
                >= t + jiff::SignedDuration::try_from(opts.job_retry_delay).unwrap_or_default()
        });
        create = waited;
    }
    let terminal = status.conditions.as_ref().is_some_and(|cs| {
        cs.iter()
            .any(|c| matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True")
    });
    status.active = if terminal {
        None
    } else {
        Some(active.len() as i32 + create as i32).filter(|a| *a > 0)
    };
    status.ready = Some(
        active
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count() as i32,
    );
    if terminal {
        status.ready = Some(0);
        for p in &active {
            util::delete(&pod_api, &p.name_any(), &DeleteParams::default()).await?;
        }
    }
    if create {
        let pod = job_pod(job);
        pod_api.create(&PostParams::default(), &pod).await?;
    }
    if status != current {
        let mut updated = job.clone();
        updated.status = Some(status);
        jobs.replace_status(&name, &PostParams::default(), &updated)
            .await?;
    }
    Ok(())
}

/// The next pod of a Job, from its template.
fn job_pod(job: &Job) -> Pod {
    let name = job.name_any();
    let uid = job.uid().unwrap_or_default();
    let template = job.spec.clone().unwrap_or_default().template;
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.clone().unwrap_or_default();
    labels.insert("job-name".into(), name.clone());
    labels.insert("controller-uid".into(), uid.clone());
    labels.insert("batch.kubernetes.io/job-name".into(), name.clone());
    labels.insert("batch.kubernetes.io/controller-uid".into(), uid.clone());
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{}", util::random_suffix())),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name,
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

async fn pod_gc_tick(
    client: &Client,
    opts: &ControllerOpts,
    orphans: &mut HashMap<String, Instant>,
) -> kube::Result<()> {
    let lp = ListParams::default();
    let pods = Api::<Pod>::all(client.clone()).list(&lp).await?.items;
    let nodes: BTreeMap<String, Node> = Api::<Node>::all(client.clone())
        .list(&lp)
        .await?
        .items
        .into_iter()
        .map(|n| (n.name_any(), n))
        .collect();
    let mut seen = HashMap::new();
    for pod in pods {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        if nodes.contains_key(&node) {
            continue;
        }
        let uid = pod.uid().unwrap_or_default();
        let first = orphans.get(&uid).copied().unwrap_or_else(Instant::now);
        seen.insert(uid, first);
        if first.elapsed() < opts.pod_gc_delay {
            continue;
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        if !is_terminal(&pod) {
            let r = util::update_status(&api, &name, |p| {
                let status = p.status.get_or_insert_with(Default::default);
                status.phase = Some("Failed".into());
                let conditions = status.conditions.get_or_insert_with(Vec::new);
                conditions.push(
                    serde_json::from_value(serde_json::json!({"type": "DisruptionTarget",
                        "status": "True", "reason": "DeletionByPodGC",
                        "message": "PodGC: node no longer exists",
                        "lastTransitionTime": Time(jiff::Timestamp::now())}))
                    .expect("condition"),
                );
                true
            })
            .await;
            if let Err(e) = r {
                report("podgc", &name, &e);
            }
        }
        util::delete(&api, &name, &util::force()).await?;
    }
    *orphans = seen;
    Ok(())
}
