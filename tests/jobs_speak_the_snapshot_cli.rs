//! The restore, save, gc and forget jobs the controller builds run commands the `hearth snapshot` CLI
//! accepts: their args and env parse with the real parser, so the two cannot drift apart.
//! (One test in this binary: it sets process environment variables.)

use clap::Parser;
use hearth::cli::{Cli, Command};
use hearth::controller::builders::jobs::{
    cache_job, snapshot_job, CacheJobInputs, SnapshotJobInputs, SnapshotOp,
};
use hearth::controller::builders::Pin;
use hearth::controller::config::OperatorConfig;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

#[test]
fn restore_and_save_jobs_parse_with_the_snapshot_cli() {
    let mut config = OperatorConfig::default();
    config.snapshot.store = "s3://caches/prod".into();
    config.snapshot.s3.endpoint = "http://minio:9000".into();
    config.snapshot.s3.path_style = true;
    let inputs = SnapshotJobInputs {
        namespace: "shop".into(),
        cache: "shop-main".into(),
        build: "b1".into(),
        attempt: 1,
        pvc: "shop-main-r0".into(),
        pin: Pin::Node("n1".into()),
        tolerations: vec![],
        deadline_seconds: 600,
        owner: OwnerReference {
            api_version: "hearth.dev/v1alpha1".into(),
            kind: "ImageBuild".into(),
            name: "b1".into(),
            uid: "u".into(),
            ..Default::default()
        },
    };
    let cache_inputs = |replica: Option<(String, Pin)>| CacheJobInputs {
        namespace: "shop".into(),
        cache: "shop-main".into(),
        seq: 4,
        replica,
        deadline_seconds: 600,
        owner: inputs.owner.clone(),
    };
    let replica = Some(("shop-main-r0".to_string(), Pin::Node("n1".into())));
    let jobs = [
        snapshot_job(
            &SnapshotOp::Restore {
                snapshot: "snap-1".into(),
                from: "shop-main".into(),
                manifest_sha256: "ab".repeat(32),
            },
            &inputs,
            &config,
        ),
        snapshot_job(&SnapshotOp::Save, &inputs, &config),
        cache_job(&SnapshotOp::Save, &cache_inputs(replica), &config),
        cache_job(
            &SnapshotOp::Gc {
                retain: 3,
                keep: vec!["snap-0".into(), "snap-1".into()],
                grace_seconds: 3600,
            },
            &cache_inputs(None),
            &config,
        ),
        cache_job(&SnapshotOp::Forget, &cache_inputs(None), &config),
    ];
    for job in jobs {
        let role = job.metadata.labels.as_ref().unwrap()["hearth.dev/role"].clone();
        let container = job
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers
            .remove(0);
        let command = container.command.unwrap();
        assert_eq!(command[..2], ["sh".to_string(), "-c".to_string()]);
        assert!(command[2].starts_with("hearth \"$@\""), "{command:?}");
        for var in container.env.unwrap() {
            std::env::set_var(&var.name, var.value.unwrap_or_default());
        }
        let mut argv = vec!["hearth".to_string()];
        argv.extend(container.args.unwrap());
        let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        assert!(matches!(cli.command, Command::Snapshot(_)), "{argv:?}");
        let debug = format!("{:?}", cli.command);
        // The store Secret's mount, and its name for errors, reach the CLI through env.
        let mut expected = vec![
            "s3://caches/prod",
            "shop",
            "shop-main",
            "json: true",
            "credentials_dir: Some(\"/run/hearth/store-credentials\")",
            "credentials_secret: Some(\"hearth-store\")",
        ];
        let pinned = format!("manifest_sha256: Some(ManifestDigest({}))", "ab".repeat(32));
        match role.as_str() {
            "restore" => expected.extend(["/cache/buildkit", &pinned]),
            "save" => expected.push("/cache/buildkit"),
            "gc" => expected.extend([
                "retain: Some(3)",
                "keep: [\"snap-0\", \"snap-1\"]",
                "grace: 1h",
            ]),
            "forget" => expected.push("all: true"),
            other => panic!("unexpected role {other}"),
        }
        for expected in expected {
            assert!(debug.contains(expected), "{expected} not in {debug}");
        }
    }
}
