//! What a builder Pod or a snapshot Job has come to, read from their status: pure functions,
//! so every failure path is tested without a cluster.

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

use super::durations::between;
use crate::api::SnapshotRecord;
use crate::controller::builders::build_script::split_termination_message;
use crate::controller::builders::pod::digest_from_metadata;
use crate::snapshot::pin::ManifestDigest;

/// Waiting reasons that will not fix themselves: the build fails with them at once.
const STUCK_REASONS: [&str; 5] = [
    "CreateContainerConfigError",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerError",
];

/// Most of a container's termination message (up to 4 KiB, a log tail) copied into a
/// failure message: its end, where the log says why. It keeps `status.message` within a
/// condition message's bound, and the Warning Event's note within the API's 1 KiB.
pub const TAIL_CHARS: usize = 800;

/// The last [`TAIL_CHARS`] characters of a termination message, trimmed.
pub(crate) fn tail_of(message: &str) -> &str {
    let message = message.trim();
    let skip = message.chars().count().saturating_sub(TAIL_CHARS);
    match message.char_indices().nth(skip) {
        Some((at, _)) => &message[at..],
        None => message,
    }
}

/// Where a builder pod stands.
#[derive(Clone, Debug, PartialEq)]
pub enum PodOutcome {
    /// Scheduled or running.
    Running,
    /// The build finished and (when asked) pushed.
    Succeeded {
        /// Image digest from buildctl's metadata.
        digest: Option<String>,
        /// Seconds the build container ran.
        seconds: Option<f64>,
        /// How the prune after a ReadWrite build went (none for other builds).
        prune: Option<crate::api::CachePrune>,
        /// The commit BuildKit resolved a git source to.
        git_commit: Option<String>,
        /// The image's size in bytes (config and layers as pushed), when the builder read it.
        image_size: Option<i64>,
    },
    /// The build failed: a reason (`BuildFailed`, `Timeout`, `ImagePullBackOff`...) and a
    /// message with the container's exit and the tail of its log.
    Failed {
        /// CamelCase reason.
        reason: String,
        /// What happened.
        message: String,
    },
    /// The pod's node is gone: the build may be retried elsewhere.
    NodeLost,
}

/// Reads a builder pod. `node_exists` says whether a node is still in the cluster.
pub fn pod_outcome(pod: &Pod, node_exists: impl Fn(&str) -> bool) -> PodOutcome {
    let Some(status) = &pod.status else {
        return PodOutcome::Running;
    };
    if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
        if !node_exists(node) {
            return PodOutcome::NodeLost;
        }
    }
    if status.reason.as_deref() == Some("NodeLost") {
        return PodOutcome::NodeLost;
    }
    let container = status
        .container_statuses
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.name == "buildkit"));
    let init_failed = status
        .init_container_statuses
        .iter()
        .flatten()
        .find_map(|c| {
            let t = c.state.as_ref()?.terminated.as_ref()?;
            (t.exit_code != 0).then(|| {
                (
                    c.name.clone(),
                    t.exit_code,
                    t.message.clone().unwrap_or_default(),
                )
            })
        });
    for c in status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
    {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.clone().unwrap_or_default();
            if STUCK_REASONS.contains(&reason.as_str()) {
                let message = format!(
                    "container {}: {reason}: {}",
                    c.name,
                    w.message.clone().unwrap_or_default()
                );
                return PodOutcome::Failed {
                    reason,
                    message: message.trim_end_matches([' ', ':']).to_string(),
                };
            }
        }
    }
    match status.phase.as_deref() {
        Some("Succeeded") => {
            let terminated = container
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.terminated.as_ref());
            let report = split_termination_message(
                terminated.and_then(|t| t.message.as_deref()).unwrap_or(""),
            );
            // The script's line first: the metadata may have been cut before the digest.
            let digest = report
                .digest
                .clone()
                .or_else(|| digest_from_metadata(report.metadata));
            let (prune, git_commit, image_size) =
                (report.prune, report.git_commit, report.image_size);
            let seconds = terminated
                .and_then(|t| Some(between(t.started_at.as_ref()?.0, t.finished_at.as_ref()?.0)));
            PodOutcome::Succeeded {
                digest,
                seconds,
                prune,
                git_commit,
                image_size,
            }
        }
        Some("Failed") => {
            if status.reason.as_deref() == Some("DeadlineExceeded") {
                return PodOutcome::Failed {
                    reason: "Timeout".into(),
                    message: "the build ran past spec.timeout".into(),
                };
            }
            if let Some((name, code, tail)) = init_failed {
                let reason = match name.as_str() {
                    crate::contract::RECEIVER_CONTAINER => "UploadFailed",
                    crate::controller::builders::docker_config::LOGIN_CONTAINER => {
                        "RegistryLoginFailed"
                    }
                    _ => "RestoreFailed",
                };
                return PodOutcome::Failed {
                    reason: reason.into(),
                    message: format!("container {name} exited {code}: {}", tail_of(&tail)),
                };
            }
            let terminated = container
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.terminated.as_ref());
            let message = match terminated {
                Some(t) => format!(
                    "buildkit exited {} ({}): {}",
                    t.exit_code,
                    t.reason.clone().unwrap_or_else(|| "Error".into()),
                    tail_of(t.message.as_deref().unwrap_or_default())
                ),
                None => status
                    .message
                    .clone()
                    .unwrap_or_else(|| "the builder pod failed".into()),
            };
            PodOutcome::Failed {
                reason: "BuildFailed".into(),
                message,
            }
        }
        _ => PodOutcome::Running,
    }
}

/// The restore init container of a builder pod, if the pod has one: running, succeeded with
/// its termination message (`hearth snapshot restore --json`'s result), or failed with its
/// exit code and the tail of its message (the command's log; store credentials are read from
/// files and never logged).
pub fn restore_step(pod: &Pod) -> Option<JobOutcome> {
    let name = crate::controller::builders::pod::RESTORE_CONTAINER;
    let in_spec = pod
        .spec
        .as_ref()?
        .init_containers
        .iter()
        .flatten()
        .any(|c| c.name == name);
    if !in_spec {
        return None;
    }
    let terminated = pod
        .status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == name))
        .and_then(|c| c.state.as_ref()?.terminated.as_ref());
    let Some(t) = terminated else {
        return Some(JobOutcome::Running);
    };
    let message = t.message.as_deref().unwrap_or_default();
    let seconds = match (&t.started_at, &t.finished_at) {
        (Some(s), Some(f)) => Some(between(s.0, f.0)).filter(|s| *s >= 0.0),
        _ => None,
    };
    Some(if t.exit_code == 0 {
        JobOutcome::Succeeded {
            result: (!message.trim().is_empty()).then(|| message.to_string()),
            seconds,
        }
    } else {
        JobOutcome::Failed {
            message: format!(
                "container {name} exited {}: {}",
                t.exit_code,
                tail_of(message)
            )
            .trim_end_matches([' ', ':'])
            .to_string(),
        }
    })
}

/// Where a snapshot command stands: a save Job, or a builder pod's restore init container.
#[derive(Clone, Debug, PartialEq)]
pub enum JobOutcome {
    /// Not finished.
    Running,
    /// Finished; the container's termination message (the command's JSON result), if read.
    Succeeded {
        /// The JSON result.
        result: Option<String>,
        /// Seconds from start to completion.
        seconds: Option<f64>,
    },
    /// Failed after its retries.
    Failed {
        /// Why, from the job condition and the last pod's message.
        message: String,
    },
}

/// Reads a Job; `pod_message` is the termination message of its latest pod, when known.
pub fn job_outcome(job: &Job, pod_message: Option<&str>) -> JobOutcome {
    let Some(status) = &job.status else {
        return JobOutcome::Running;
    };
    let condition = |t: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t && c.status == "True")
    };
    if status.succeeded.unwrap_or(0) > 0 || condition("Complete").is_some() {
        let seconds = match (&status.start_time, &status.completion_time) {
            (Some(s), Some(c)) => Some(between(s.0, c.0)),
            _ => None,
        };
        return JobOutcome::Succeeded {
            result: pod_message.map(String::from),
            seconds,
        };
    }
    if let Some(c) = condition("Failed") {
        let mut message = format!(
            "{}: {}",
            c.reason.clone().unwrap_or_else(|| "Failed".into()),
            c.message.clone().unwrap_or_default()
        );
        if let Some(tail) = pod_message.filter(|m| !m.trim().is_empty()) {
            message.push_str("; last attempt: ");
            message.push_str(tail_of(tail));
        }
        return JobOutcome::Failed { message };
    }
    JobOutcome::Running
}

/// Bytes written by a restore, from `hearth snapshot restore --json`.
pub fn restored_bytes(result: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(result)
        .ok()?
        .get("bytes")?
        .as_u64()
}

/// Bytes written and the restore's own wall seconds (not the pod's), from
/// `hearth snapshot restore --json`: a throughput sample.
pub fn restore_sample(result: &str) -> Option<(u64, f64)> {
    let value = serde_json::from_str::<serde_json::Value>(result).ok()?;
    let seconds = value.get("seconds")?.as_f64()?;
    Some((value.get("bytes")?.as_u64()?, seconds))
}

/// The snapshot a save Job reported (`hearth snapshot save --json`), even when the message
/// was cut at the termination-message limit, pinned by the manifest digest it reported (none
/// when that is missing or malformed: such a record is never restored).
pub fn saved_snapshot(result: &str, now: Timestamp) -> Option<SnapshotRecord> {
    let value: Option<serde_json::Value> = serde_json::from_str(result).ok();
    let field = |name: &str| -> Option<String> {
        if let Some(v) = value.as_ref().and_then(|v| v.get(name)) {
            return Some(
                v.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string()),
            );
        }
        let at = result.find(&format!("\"{name}\":"))? + name.len() + 3;
        let rest = result[at..].trim_start().trim_start_matches('"');
        Some(
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect(),
        )
    };
    let id = field("id").filter(|id| !id.is_empty())?;
    let number = |name: &str| field(name).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    Some(SnapshotRecord {
        id,
        time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
        bytes: number("bytes"),
        new_bytes: number("uploadedBytes"),
        manifest_sha256: field("manifestSha256")
            .and_then(|d| ManifestDigest::parse(&d).ok())
            .map(|d| d.to_string()),
    })
}

#[cfg(test)]
#[path = "outcome_tests.rs"]
mod tests;
