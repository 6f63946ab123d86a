//! Jobs run to completion: created once under a deterministic name (a restarted controller
//! finds what it made) and read back with the termination message of their latest pod.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::ResourceExt;

use super::builders::labels;
use super::context::Context;
use super::error::{is_status, Result};
use super::image_build::outcome::{job_outcome, JobOutcome};

/// Creates the job if it does not exist yet and reads where it stands.
pub async fn job_state(ctx: &Context, namespace: &str, job: Job) -> Result<JobOutcome> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let name = job.name_any();
    let current = match jobs.get_opt(&name).await? {
        Some(j) => j,
        None => match jobs
            .create(
                &PostParams {
                    field_manager: Some(labels::FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &job,
            )
            .await
        {
            Ok(j) => j,
            Err(e) if is_status(&e, 409) => jobs.get(&name).await?,
            Err(e) => return Err(e.into()),
        },
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let latest = pods
        .list(&ListParams::default().labels(&format!("job-name={name}")))
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
    Ok(job_outcome(&current, message.as_deref()))
}
