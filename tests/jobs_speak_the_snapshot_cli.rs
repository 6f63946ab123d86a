//! The restore and save jobs the controller builds run commands the `hearth snapshot` CLI
//! accepts: their args and env parse with the real parser, so the two cannot drift apart.
//! (One test in this binary: it sets process environment variables.)

use clap::Parser;
use hearth::cli::{Cli, Command};
use hearth::controller::builders::jobs::{snapshot_job, SnapshotJobInputs, SnapshotOp};
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
    for op in [
        SnapshotOp::Restore {
            snapshot: "snap-1".into(),
        },
        SnapshotOp::Save,
    ] {
        let job = snapshot_job(&op, &inputs, &config);
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
        for expected in [
            "s3://caches/prod",
            "shop",
            "shop-main",
            "/cache/buildkit",
            "json: true",
        ] {
            assert!(debug.contains(expected), "{expected} not in {debug}");
        }
    }
}
