//! Jobs run to completion: created once under a deterministic name (a restarted controller
//! finds what it made) and read back with the termination message of their latest pod.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::ResourceExt;

use super::context::Context;
use super::error::Result;
use super::outcome::{job_outcome, JobOutcome};
use super::writes::create_or_get;

/// Creates the job if it does not exist yet and reads where it stands.
pub async fn job_state(ctx: &Context, namespace: &str, job: Job) -> Result<JobOutcome> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let current = match jobs.get_opt(&job.name_any()).await? {
        Some(j) => j,
        None => create_or_get(&jobs, &job).await?,
    };
    outcome_of(ctx, namespace, &current).await
}

/// Where job `name` stands; `None` when it does not exist.
pub async fn read_job(ctx: &Context, namespace: &str, name: &str) -> Result<Option<JobOutcome>> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    match jobs.get_opt(name).await? {
        Some(job) => Ok(Some(outcome_of(ctx, namespace, &job).await?)),
        None => Ok(None),
    }
}

/// The job's outcome, with its latest pod's termination message (the job's result).
async fn outcome_of(ctx: &Context, namespace: &str, job: &Job) -> Result<JobOutcome> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let latest = pods
        .list(&ListParams::default().labels(&format!("job-name={}", job.name_any())))
        .await?
        .items
        .into_iter()
        .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let message = latest
        .and_then(|p| p.status)
        .and_then(|s| s.container_statuses)
        .and_then(|cs| cs.into_iter().next())
        .and_then(|c| c.state)
        .and_then(|s| s.terminated)
        .and_then(|t| t.message);
    Ok(job_outcome(job, message.as_deref()))
}
