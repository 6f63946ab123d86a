//! Every way a builder pod or snapshot job can end, read correctly.

use super::*;
use serde_json::json;

fn pod(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).expect("pod")
}

fn alive(_: &str) -> bool {
    true
}

#[test]
fn succeeded_pod_gives_digest_and_time() {
    let d = format!("sha256:{}", "b".repeat(64));
    let p = pod(
        json!({"spec": {"containers": [], "nodeName": "n1"}, "status": {"phase": "Succeeded", "containerStatuses": [{
        "name": "buildkit", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "message": format!("{{\"containerimage.digest\":\"{d}\"}}"),
            "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:42Z"}}}]}}),
    );
    assert_eq!(
        pod_outcome(&p, alive),
        PodOutcome::Succeeded {
            digest: Some(d),
            seconds: Some(42.0),
            prune: None,
            git_commit: None,
            image_size: None,
        }
    );
}

#[test]
fn succeeded_pod_gives_the_prunes_outcome_and_the_commit_from_the_report_lines_and_the_digest_after_them(
) {
    let d = format!("sha256:{}", "c".repeat(64));
    // buildctl writes its metadata indented, over several lines.
    let commit = "1c2bbabf754d852521421e57e6878984a39c3a09";
    let message = format!(
        "hearth-prune: total 1.99GB\nhearth-image-size: 6000102618\nhearth-git-commit: {commit}\n{{\n  \"containerimage.digest\": \"{d}\"\n}}"
    );
    let p = pod(
        json!({"spec": {"containers": [], "nodeName": "n1"}, "status": {"phase": "Succeeded", "containerStatuses": [{
        "name": "buildkit", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "message": message}}}]}}),
    );
    assert_eq!(
        pod_outcome(&p, alive),
        PodOutcome::Succeeded {
            digest: Some(d),
            seconds: None,
            prune: Some(crate::api::CachePrune {
                result: crate::api::PruneResult::Pruned,
                bytes: Some(1_990_000_000),
                message: None,
            }),
            git_commit: Some(commit.to_string()),
            image_size: Some(6_000_102_618),
        }
    );
}

#[test]
fn failed_pod_reports_exit_and_log_tail() {
    let p = pod(
        json!({"spec": {"containers": []}, "status": {"phase": "Failed", "containerStatuses": [{
        "name": "buildkit", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": "#7 ERROR: process \"/bin/sh -c make\" did not complete successfully: exit code: 2\n"}}}]}}),
    );
    match pod_outcome(&p, alive) {
        PodOutcome::Failed { reason, message } => {
            assert_eq!(reason, "BuildFailed");
            assert!(
                message.starts_with("buildkit exited 1 (Error): #7 ERROR"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn failure_messages_copy_only_the_end_of_a_long_termination_message() {
    let long = format!("{}é\nerror: the reason", "x".repeat(4000));
    let p = pod(
        json!({"spec": {"containers": []}, "status": {"phase": "Failed", "containerStatuses": [{
        "name": "buildkit", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": long}}}]}}),
    );
    match pod_outcome(&p, alive) {
        PodOutcome::Failed { message, .. } => {
            assert!(message.ends_with("error: the reason"), "{message}");
            assert!(
                message.chars().count() <= TAIL_CHARS + 40,
                "{}",
                message.len()
            );
            // Within the Event note's 1 KiB, with its "Reason: " prefix.
            assert!(message.len() < 1000, "{}", message.len());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn deadline_missing_secret_and_bad_image_fail_at_once() {
    let p = pod(
        json!({"spec": {"containers": []}, "status": {"phase": "Failed", "reason": "DeadlineExceeded"}}),
    );
    assert!(
        matches!(pod_outcome(&p, alive), PodOutcome::Failed { reason, .. } if reason == "Timeout")
    );
    for reason in ["CreateContainerConfigError", "ImagePullBackOff"] {
        let p = pod(
            json!({"spec": {"containers": []}, "status": {"phase": "Pending", "containerStatuses": [{
            "name": "buildkit", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": "secret \"push\" not found"}}}]}}),
        );
        match pod_outcome(&p, alive) {
            PodOutcome::Failed { reason: r, message } => {
                assert_eq!(r, reason);
                assert!(message.contains("secret \"push\" not found"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn pod_on_a_vanished_node_is_lost() {
    let p = pod(
        json!({"spec": {"containers": [], "nodeName": "gone"}, "status": {"phase": "Running"}}),
    );
    assert_eq!(pod_outcome(&p, |n| n != "gone"), PodOutcome::NodeLost);
    assert_eq!(pod_outcome(&p, alive), PodOutcome::Running);
}

#[test]
fn jobs_succeed_fail_or_run() {
    let job = |v: serde_json::Value| -> Job { serde_json::from_value(v).unwrap() };
    let ok = job(
        json!({"status": {"succeeded": 1, "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:00:08Z"}}),
    );
    assert_eq!(
        job_outcome(&ok, Some("{}")),
        JobOutcome::Succeeded {
            result: Some("{}".into()),
            seconds: Some(8.0)
        }
    );
    let failed = job(
        json!({"status": {"failed": 3, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}}),
    );
    match job_outcome(&failed, Some("error: pack p-12 is missing from the store")) {
        JobOutcome::Failed { message } => assert!(
            message.contains("BackoffLimitExceeded") && message.contains("p-12"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        job_outcome(&job(json!({"status": {"active": 1}})), None),
        JobOutcome::Running
    );
}

#[test]
fn save_result_is_read_even_when_cut() {
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let whole = r#"{"bytes":1200,"id":"s-20261122-ab12","uploadedBytes":300,"skipped":[]}"#;
    let r = saved_snapshot(whole, now).unwrap();
    assert_eq!(
        (r.id.as_str(), r.bytes, r.new_bytes),
        ("s-20261122-ab12", 1200, 300)
    );
    let cut = r#"{"bytes":1200,"bytesRead":5,"id":"s-20261122-ab12","skipped":["a/sock","b/sock"#;
    assert_eq!(saved_snapshot(cut, now).unwrap().id, "s-20261122-ab12");
    assert_eq!(saved_snapshot("Error: store unreachable", now), None);
}

#[test]
fn save_result_pins_the_manifest_digest_it_reports() {
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let digest = "ab".repeat(32);
    let whole = format!(
        r#"{{"bytes":1,"id":"s-1","manifestSha256":"{}","uploadedBytes":1}}"#,
        digest.to_uppercase()
    );
    let r = saved_snapshot(&whole, now).unwrap();
    assert_eq!(r.manifest_sha256.as_deref(), Some(digest.as_str()));
    // Cut at the termination-message limit after the digest (keys are sorted: it comes
    // before the unbounded `skipped` list).
    let cut = format!(r#"{{"bytes":1,"id":"s-1","manifestSha256":"{digest}","skipped":["a/so"#);
    let r = saved_snapshot(&cut, now).unwrap();
    assert_eq!(r.manifest_sha256.as_deref(), Some(digest.as_str()));
    // A result without one (an older `hearth`), or a malformed one, pins nothing.
    let old = r#"{"bytes":1,"id":"s-1","uploadedBytes":1}"#;
    assert_eq!(saved_snapshot(old, now).unwrap().manifest_sha256, None);
    let bad = r#"{"bytes":1,"id":"s-1","manifestSha256":"zz"}"#;
    assert_eq!(saved_snapshot(bad, now).unwrap().manifest_sha256, None);
}

#[test]
fn failed_receiver_fails_the_build_as_an_upload_failure() {
    let p = pod(
        json!({"spec": {"containers": []}, "status": {"phase": "Failed", "initContainerStatuses": [{
        "name": "receive", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 3, "message": "hearth receive: no upload arrived within 600s\n"}}}]}}),
    );
    match pod_outcome(&p, alive) {
        PodOutcome::Failed { reason, message } => {
            assert_eq!(reason, "UploadFailed");
            assert!(message.contains("no upload arrived"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn failed_registry_login_fails_the_build_saying_so() {
    let p = pod(
        json!({"spec": {"containers": []}, "status": {"phase": "Failed", "initContainerStatuses": [{
        "name": "registry-login", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 1, "message": "hearth registry-login: ECR GetAuthorizationToken in eu-west-1: AccessDeniedException\n"}}}]}}),
    );
    match pod_outcome(&p, alive) {
        PodOutcome::Failed { reason, message } => {
            assert_eq!(reason, "RegistryLoginFailed");
            assert!(
                message.contains("container registry-login exited 1: hearth registry-login: ECR"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A builder pod with a restore init container in `state` (none: not started).
fn restoring_pod(state: Option<serde_json::Value>) -> Pod {
    let statuses: Vec<serde_json::Value> = state
        .into_iter()
        .map(|s| json!({"name": "restore", "image": "x", "imageID": "", "ready": false, "restartCount": 0, "state": s}))
        .collect();
    pod(json!({
        "spec": {"initContainers": [{"name": "restore"}], "containers": [{"name": "buildkit"}]},
        "status": {"phase": "Pending", "initContainerStatuses": statuses}
    }))
}

#[test]
fn the_restore_init_container_is_read_running_done_with_its_result_or_failed() {
    let plain = pod(
        json!({"spec": {"containers": [{"name": "buildkit"}]}, "status": {"phase": "Running"}}),
    );
    assert_eq!(restore_step(&plain), None, "no restore in this pod");
    assert_eq!(
        restore_step(&restoring_pod(None)),
        Some(JobOutcome::Running)
    );
    let running = restoring_pod(Some(
        json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}}),
    ));
    assert_eq!(restore_step(&running), Some(JobOutcome::Running));
    let done = restoring_pod(Some(json!({"terminated": {"exitCode": 0,
        "message": "{\"bytes\":5000,\"seconds\":2.5}",
        "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:03Z"}})));
    assert_eq!(
        restore_step(&done),
        Some(JobOutcome::Succeeded {
            result: Some("{\"bytes\":5000,\"seconds\":2.5}".into()),
            seconds: Some(3.0)
        })
    );
    let long = format!(
        "{}\nError: pack p-1 is missing from the store",
        "x".repeat(4000)
    );
    let failed = restoring_pod(Some(
        json!({"terminated": {"exitCode": 1, "message": long}}),
    ));
    match restore_step(&failed) {
        Some(JobOutcome::Failed { message }) => {
            assert!(
                message.starts_with("container restore exited 1: "),
                "{message}"
            );
            assert!(
                message.ends_with("pack p-1 is missing from the store"),
                "{message}"
            );
            assert!(message.len() < 1000, "bounded: {} bytes", message.len());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_restore_result_gives_its_bytes_and_its_own_seconds() {
    let result = r#"{"id":"s-1","entries":9,"bytes":2000000000,"downloadedBytes":700000000,"packs":22,"skipped":[],"pinned":true,"strippedPrivileges":0,"seconds":8.0,"peakRssBytes":1}"#;
    assert_eq!(restore_sample(result), Some((2_000_000_000, 8.0)));
    assert_eq!(restore_sample(r#"{"bytes":5}"#), None, "no seconds");
    assert_eq!(restore_sample("Error: cut"), None);
}

#[test]
fn succeeded_pod_takes_the_scripts_digest_line_when_the_metadata_was_cut_before_it() {
    let d = format!("sha256:{}", "f".repeat(64));
    let message =
        format!("hearth-digest: {d}\n{{\n  \"containerimage.buildinfo\": {{\n    \"sources\": [");
    let p = pod(
        json!({"spec": {"containers": [], "nodeName": "n1"}, "status": {"phase": "Succeeded", "containerStatuses": [{
        "name": "buildkit", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "message": message}}}]}}),
    );
    assert!(
        matches!(pod_outcome(&p, alive), PodOutcome::Succeeded { digest: Some(got), .. } if got == d)
    );
}
