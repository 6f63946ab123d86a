//! `hearth build`, `hearth wait` and `hearth logs` against the stateful fake API with the real
//! reconcilers: the client creates the ImageBuild, follows its phases while the test plays
//! controller and kubelet, uploads the context, and exits with the outcome's code.
//!
//! The fake API has no `pods/exec` or `pods/log`: the upload goes through a substitute
//! `Uploader` that runs the real sender and receiver over a local socket pair, and the
//! builder's log comes from a scripted `LogSource`.
//!
//! The outputs of a hot, a restored and a failed build are written to
//! `target/cli-examples/` and printed (`cargo test --test cli_build -- --nocapture`).

mod support;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;
use hearth::api::{CacheMode, ImageBuild, Phase};
use hearth::cli::{Cli, Command};
use hearth::client::follow::Exit;
use hearth::client::session::{LogSource, PendingUpload, Uploader};
use hearth::client::ui::{PlainUi, SharedBuffer};
use hearth::client::Env;
use hearth::upload::UploadError;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use support::{arch_node, metadata, s3_config, spec, Cluster, NS, SAVED};

/// BuildKit's plain progress, as the builder's log would stream it.
fn buildkit_log(failing: bool) -> Vec<String> {
    let mut lines = vec![
        "#1 [internal] load build definition from Dockerfile".to_string(),
        "#1 DONE 0.0s".into(),
        "#5 [2/3] RUN --mount=type=cache,target=/root/.cache pip install -r requirements.txt"
            .into(),
    ];
    if failing {
        lines.push("#5 1.204 ERROR: No matching distribution found for flask==9.9".into());
        lines.push("#5 ERROR: process \"/bin/sh -c pip install -r requirements.txt\" did not complete successfully: exit code: 1".into());
    } else {
        lines.push("#5 CACHED".into());
        lines.push("#7 exporting to image".into());
        lines.push("#7 pushing layers 0.4s done".into());
        lines.push("#7 DONE 0.9s".into());
    }
    lines
}

struct ScriptedLogs {
    lines: Vec<String>,
    asked: Mutex<Vec<String>>,
}

impl LogSource for ScriptedLogs {
    fn lines(
        &self,
        pod: &str,
        container: &str,
        _follow: bool,
    ) -> BoxStream<'static, std::io::Result<String>> {
        self.asked
            .lock()
            .unwrap()
            .push(format!("{pod}/{container}"));
        futures::stream::iter(self.lines.clone().into_iter().map(Ok)).boxed()
    }
}

/// The real sender and receiver over a socket pair; the context lands in `dir/<pod>/context`.
struct PipeUploader {
    dir: PathBuf,
}

impl Uploader for PipeUploader {
    fn upload(
        &self,
        pod: &str,
        upload: PendingUpload,
        sent: Arc<AtomicU64>,
    ) -> BoxFuture<'static, Result<u64, UploadError>> {
        let dst = self.dir.join(pod);
        Box::pin(async move {
            std::fs::create_dir_all(&dst).unwrap();
            let (client, server) = UnixStream::pair().unwrap();
            let receiver = std::thread::spawn(move || {
                let mut out = server.try_clone().unwrap();
                let r = hearth::upload::receive::receive(&server, &dst, None);
                hearth::upload::receive::reply(&mut out, &r).unwrap();
            });
            client.set_nonblocking(true).unwrap();
            let (read, mut write) = tokio::net::UnixStream::from_std(client)
                .unwrap()
                .into_split();
            let reply = hearth::upload::send::send_file(
                &upload.tar,
                upload.size,
                &upload.sha256,
                &mut write,
                read,
                &sent,
            )
            .await;
            receiver.join().unwrap();
            reply
        })
    }
}

/// A receiver that refuses the upload.
struct RefusingUploader;

impl Uploader for RefusingUploader {
    fn upload(
        &self,
        _pod: &str,
        _upload: PendingUpload,
        _sent: Arc<AtomicU64>,
    ) -> BoxFuture<'static, Result<u64, UploadError>> {
        Box::pin(async {
            Err(UploadError::Remote(
                "upload refused: entry \"../etc/passwd\" contains '..'; nothing was written".into(),
            ))
        })
    }
}

struct Harness {
    out: SharedBuffer,
    logs: Arc<ScriptedLogs>,
    received: tempfile::TempDir,
    signal: Option<tokio::sync::mpsc::UnboundedSender<()>>,
}

impl Harness {
    fn new(failing_log: bool) -> Harness {
        Harness {
            out: SharedBuffer::default(),
            logs: Arc::new(ScriptedLogs {
                lines: buildkit_log(failing_log),
                asked: Mutex::new(Vec::new()),
            }),
            received: tempfile::tempdir().unwrap(),
            signal: None,
        }
    }

    fn env(&mut self, c: &Cluster, uploader: Option<Arc<dyn Uploader>>) -> Env {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        self.signal = Some(tx);
        let uploader = uploader.unwrap_or_else(|| {
            Arc::new(PipeUploader {
                dir: self.received.path().to_path_buf(),
            })
        });
        Env {
            client: c.client.clone(),
            default_namespace: NS.into(),
            logs: self.logs.clone(),
            uploader,
            ui: Box::new(PlainUi::new(
                Box::new(self.out.clone()),
                Box::new(self.out.clone()),
            )),
            signals: futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed(),
            poll: Duration::from_millis(5),
            suffix: Box::new(|| "t1x2z".to_string()),
            getenv: Box::new(|k| (k == "PY").then(|| "3.12".to_string())),
        }
    }

    /// Waits until the client has printed `needle` (a bounded number of short sleeps; the
    /// bound only turns a hang into a failure that shows the output so far).
    async fn printed(&self, needle: &str) {
        for _ in 0..4000 {
            if self.out.text().contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "never printed {needle:?}; output so far:\n{}",
            self.out.text()
        );
    }
}

fn parse<T>(argv: &[&str], pick: impl Fn(Command) -> Option<T>) -> T {
    let mut full = vec!["hearth"];
    full.extend_from_slice(argv);
    pick(Cli::try_parse_from(full).expect("parses").command).expect("that subcommand")
}

fn build_args(argv: &[&str]) -> hearth::client::args::BuildArgs {
    let mut full = vec!["build"];
    full.extend_from_slice(argv);
    parse(&full, |c| match c {
        Command::Build(a) => Some(*a),
        _ => None,
    })
}

/// A small context directory `app` with a Dockerfile (in a temporary directory: keep both).
fn context_dir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("app");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("Dockerfile"), "FROM python:3.12\nCOPY . /app\n").unwrap();
    std::fs::write(d.join("app.py"), "print('hi')\n").unwrap();
    std::fs::write(d.join(".dockerignore"), "*.pyc\n").unwrap();
    std::fs::write(d.join("junk.pyc"), "x").unwrap();
    (t, d)
}

/// The ImageBuild the client created.
async fn created(c: &Cluster, h: &Harness) -> ImageBuild {
    h.printed("created imagebuild").await;
    c.builds()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|b| {
            b.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.ends_with("-t1x2z"))
        })
        .expect("created by the client")
}

/// Starts `hearth build ARGV` in the background; its handle and the build's name.
async fn start(
    c: &Cluster,
    h: &mut Harness,
    argv: &[&str],
) -> (tokio::task::JoinHandle<Exit>, String) {
    let env = h.env(c, None);
    let client = tokio::spawn(hearth::client::build(build_args(argv), env));
    let name = created(c, h).await.metadata.name.unwrap();
    (client, name)
}

/// Reconciles until the build reaches `phase`, then waits for the client to have said so.
async fn drive_to(c: &mut Cluster, h: &Harness, name: &str, phase: Phase, line: &str) {
    for _ in 0..8 {
        if Cluster::phase_of(&c.build(name).await) == Some(phase) {
            break;
        }
        c.reconcile(name).await.expect("reconcile");
    }
    assert_eq!(Cluster::phase_of(&c.build(name).await), Some(phase));
    if matches!(
        phase,
        Phase::Restoring | Phase::Building | Phase::Snapshotting
    ) {
        // The step's job or pod is created by the reconcile after the phase is written.
        c.reconcile(name).await.expect("reconcile");
        assert_eq!(Cluster::phase_of(&c.build(name).await), Some(phase));
    }
    h.printed(line).await;
}

async fn set_pod_status(c: &Cluster, pod: &str, status: serde_json::Value) {
    let mut p: Pod = c.pods().get(pod).await.expect("builder pod");
    p.status = Some(serde_json::from_value(status).unwrap());
    c.pods()
        .replace_status(pod, &PostParams::default(), &p)
        .await
        .unwrap();
}

/// The kubelet starts the receiver init container.
async fn receiver_runs(c: &Cluster, pod: &str) {
    set_pod_status(
        c,
        pod,
        json!({"phase": "Pending", "initContainerStatuses": [{"name": "receive", "image": "x", "imageID": "",
        "ready": false, "restartCount": 0, "state": {"running": {}}}]}),
    )
    .await;
}

/// ...then, the context in, the buildkit container.
async fn buildkit_runs(c: &Cluster, pod: &str) {
    set_pod_status(
        c,
        pod,
        json!({"phase": "Running", "containerStatuses": [{"name": "buildkit", "image": "x", "imageID": "",
        "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
    )
    .await;
}

/// A first build of key `shop:main` run to the end: its replica stays idle on its node.
async fn warm_cache(c: &mut Cluster) -> String {
    c.submit("b0", spec("registry.example.com/shop/api:0", json!({})))
        .await;
    c.settle("b0").await;
    let (meta, _) = metadata('0');
    c.finish_pod("b0-build-1", 0, &meta).await;
    c.settle("b0").await;
    c.finish_job("b0-save-1", true, SAVED).await;
    assert_eq!(c.settle("b0").await, Some(Phase::Succeeded));
    let p = c.build("b0").await.status.unwrap().placement.unwrap();
    let node = p.node.unwrap();
    c.bind_pvc(p.replica.as_deref().unwrap(), &node).await;
    node
}

fn keep_example(name: &str, text: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../cli-examples");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.txt")), text).unwrap();
    println!("----- {name} -----\n{text}");
}

#[tokio::test]
async fn hot_build_uploads_the_context_follows_and_prints_the_digest() {
    let mut c = Cluster::new(&["n1", "n2"], s3_config()).await;
    let node = warm_cache(&mut c).await;
    let mut h = Harness::new(false);
    let (_tmp, ctx) = context_dir();
    let files = tempfile::tempdir().unwrap();
    let digest_file = files.path().join("digest");
    let meta_file = files.path().join("meta.json");
    let args = build_args(&[
        ctx.to_str().unwrap(),
        "-t",
        "registry.example.com/shop/api:2",
        "--cache-key",
        "shop:main",
        "--digest-file",
        digest_file.to_str().unwrap(),
        "--metadata-file",
        meta_file.to_str().unwrap(),
    ]);
    let env = h.env(&c, None);
    let client = tokio::spawn(hearth::client::build(args, env));

    let ib = created(&c, &h).await;
    let name = ib.metadata.name.clone().unwrap();
    assert_eq!(name, "api-t1x2z");
    let upload = ib.spec.source.upload.clone().expect("an upload source");
    assert_eq!(upload.timeout, std::time::Duration::from_secs(600));
    assert_eq!(upload.origin.as_deref(), Some("upload/app"));
    h.printed("pending").await;
    drive_to(&mut c, &h, &name, Phase::Placing, "placing").await;
    drive_to(&mut c, &h, &name, Phase::Building, "building on node").await;
    let pod = format!("{name}-build-1");
    receiver_runs(&c, &pod).await;
    h.printed("uploaded").await;
    // The context arrived whole in the receiver, without what .dockerignore excludes.
    let got = h.received.path().join(&pod).join("context");
    assert_eq!(
        std::fs::read_to_string(got.join("app.py")).unwrap(),
        "print('hi')\n"
    );
    assert!(got.join("Dockerfile").exists() && !got.join("junk.pyc").exists());
    buildkit_runs(&c, &pod).await;
    h.printed("#7 DONE 0.9s").await;
    assert_eq!(
        h.logs.asked.lock().unwrap().as_slice(),
        [format!("{pod}/buildkit")]
    );
    let (meta, digest) = metadata('h');
    c.finish_pod(&pod, 0, &meta).await;
    // The replica was saved minutes ago (snapshot.minInterval): no save is due.
    drive_to(&mut c, &h, &name, Phase::Succeeded, "Succeeded").await;

    assert_eq!(client.await.unwrap(), Exit::Succeeded);
    let out = h.out.text();
    assert!(
        out.contains(&format!(
            "placed: Hot cache on node {node} (key shop:main@amd64)"
        )),
        "{out}"
    );
    assert!(out.contains(&format!("digest   {digest}")), "{out}");
    assert!(out.contains("cache    Hot (key shop:main@amd64"), "{out}");
    assert_eq!(std::fs::read_to_string(&digest_file).unwrap(), digest);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_file).unwrap()).unwrap();
    assert_eq!(meta["containerimage.digest"], digest.as_str());
    assert_eq!(meta["warmth"], "Hot");
    keep_example("hot", &out);
}

/// `-f` naming a Dockerfile outside DIR, as `docker buildx build -f ../docker/x DIR` takes it:
/// the Dockerfile travels apart from the context (only that file), the ImageBuild says
/// where it lies from the context, and BuildKit gets the two as separate local sources.
#[tokio::test]
async fn a_dockerfile_outside_dir_travels_apart_from_the_context() {
    let mut c = Cluster::new(&["n1", "n2"], s3_config()).await;
    warm_cache(&mut c).await;
    let mut h = Harness::new(false);
    let (tmp, ctx) = context_dir();
    let docker = tmp.path().join("docker");
    std::fs::create_dir(&docker).unwrap();
    std::fs::write(
        docker.join("api.Dockerfile"),
        "FROM alpine\nCOPY app.py /\n",
    )
    .unwrap();
    std::fs::write(docker.join("unrelated.txt"), "not sent").unwrap();
    let file = docker.join("api.Dockerfile");
    let argv = [
        ctx.to_str().unwrap(),
        "-t",
        "registry.example.com/shop/api:3",
        "--cache-key",
        "shop:main",
        "-f",
        file.to_str().unwrap(),
    ];
    let (client, name) = start(&c, &mut h, &argv).await;
    let ib = c.build(&name).await;
    assert_eq!(ib.spec.dockerfile, "../docker/api.Dockerfile");
    assert!(ib.spec.source.upload.as_ref().unwrap().separate_dockerfile);
    let violations = hearth::api::check::check(&serde_json::to_value(&ib).unwrap(), None).unwrap();
    assert!(violations.is_empty(), "{violations:?}");

    drive_to(&mut c, &h, &name, Phase::Building, "building on node").await;
    let pod = format!("{name}-build-1");
    let spec = serde_json::to_string(&c.pods().get(&pod).await.unwrap().spec).unwrap();
    for arg in [
        "context=/upload/context/context",
        "dockerfile=/upload/context/dockerfile",
        "filename=api.Dockerfile",
    ] {
        assert!(spec.contains(arg), "{arg} in {spec}");
    }
    receiver_runs(&c, &pod).await;
    h.printed("uploaded").await;
    let got = h.received.path().join(&pod).join("context");
    assert_eq!(
        std::fs::read_to_string(got.join("context/app.py")).unwrap(),
        "print('hi')\n"
    );
    assert!(
        !got.join("context/junk.pyc").exists(),
        ".dockerignore still applies"
    );
    let sent: Vec<_> = std::fs::read_dir(got.join("dockerfile"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        sent,
        ["api.Dockerfile"],
        "only the Dockerfile travels apart"
    );
    assert_eq!(
        std::fs::read_to_string(got.join("dockerfile/api.Dockerfile")).unwrap(),
        "FROM alpine\nCOPY app.py /\n"
    );
    buildkit_runs(&c, &pod).await;
    let (meta, _) = metadata('s');
    c.finish_pod(&pod, 0, &meta).await;
    drive_to(&mut c, &h, &name, Phase::Succeeded, "Succeeded").await;
    assert_eq!(client.await.unwrap(), Exit::Succeeded);
}

#[tokio::test]
async fn restored_build_says_from_which_key() {
    let mut c = Cluster::new(&["n1", "n2"], s3_config()).await;
    let node = warm_cache(&mut c).await;
    c.delete_node(&node).await;
    let mut h = Harness::new(false);
    let (client, name) = start(
        &c,
        &mut h,
        &[
            "--git",
            "https://github.com/acme/shop.git",
            "--revision",
            "feature-x",
            "-t",
            "registry.example.com/shop/api:feature-x",
            "--cache-key",
            "shop:feature-x",
            "--restore-key",
            "shop:main",
        ],
    )
    .await;
    drive_to(&mut c, &h, &name, Phase::Placing, "placing").await;
    drive_to(&mut c, &h, &name, Phase::Restoring, "restoring").await;
    c.finish_restore(&format!("{name}-build-1"), 0, "{}").await;
    drive_to(&mut c, &h, &name, Phase::Building, "building on node").await;
    let pod = format!("{name}-build-1");
    buildkit_runs(&c, &pod).await;
    h.printed("#7 DONE").await;
    let (meta, _) = metadata('r');
    // The builder script reports the commit BuildKit resolved `feature-x` to.
    let commit = "1c2bbabf754d852521421e57e6878984a39c3a09";
    c.finish_pod(&pod, 0, &format!("hearth-git-commit: {commit}\n{meta}"))
        .await;
    // Succeeded once the image is pushed: the client is done before the save ends.
    drive_to(&mut c, &h, &name, Phase::Succeeded, "Succeeded").await;
    assert_eq!(client.await.unwrap(), Exit::Succeeded);
    c.reconcile(&name).await.expect("reconcile");
    c.finish_job(&format!("{name}-save-1"), true, SAVED).await;
    c.reconcile(&name).await.expect("reconcile");
    let st = c.build(&name).await.status.unwrap();
    assert!(
        !hearth::controller::image_build::status::saving(&st),
        "saved after"
    );
    let out = h.out.text();
    assert!(
        out.contains("restoring: snapshot snap-1 of key shop:main@amd64 (1.1MiB)"),
        "{out}"
    );
    assert!(
        out.contains("cache    Restored from key shop:main@amd64 (snapshot snap-1)"),
        "{out}"
    );
    assert!(out.contains(&format!("  commit   {commit}\n")), "{out}");
    assert_eq!(st.git_commit.as_deref(), Some(commit));
    keep_example("restored", &out);
}

#[tokio::test]
async fn failed_build_exits_1_with_the_reason_and_the_log_tail() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    let mut h = Harness::new(true);
    let (_tmp, ctx) = context_dir();
    let (client, name) = start(
        &c,
        &mut h,
        &[
            ctx.to_str().unwrap(),
            "-t",
            "registry.example.com/shop/api:3",
        ],
    )
    .await;
    drive_to(&mut c, &h, &name, Phase::Building, "building on node").await;
    let pod = format!("{name}-build-1");
    receiver_runs(&c, &pod).await;
    h.printed("uploaded").await;
    buildkit_runs(&c, &pod).await;
    h.printed("exit code: 1").await;
    c.finish_pod(
        &pod,
        1,
        "#5 ERROR: process \"/bin/sh -c pip install -r requirements.txt\" did not complete successfully: exit code: 1",
    )
    .await;
    drive_to(&mut c, &h, &name, Phase::Failed, "Failed").await;
    assert_eq!(client.await.unwrap(), Exit::Failed);
    let out = h.out.text();
    assert!(
        out.contains(&format!("Failed  {NS}/{name}: BuildFailed")),
        "{out}"
    );
    assert!(
        out.contains("  > #5 1.204 ERROR: No matching distribution found for flask==9.9"),
        "{out}"
    );
    assert!(out.contains("cache    Cold"), "{out}");
    keep_example("failed", &out);
}

#[tokio::test]
async fn interrupt_cancels_the_build_and_exits_3_once_cancelled() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    let mut h = Harness::new(false);
    let (client, name) = start(
        &c,
        &mut h,
        &[
            "--git",
            "https://github.com/acme/shop.git",
            "-t",
            "registry.example.com/shop/api:4",
        ],
    )
    .await;
    drive_to(&mut c, &h, &name, Phase::Building, "building on node").await;
    h.signal.as_ref().unwrap().send(()).unwrap();
    h.printed("cancelling").await;
    assert!(
        c.build(&name).await.spec.cancel,
        "spec.cancel set by a merge patch"
    );
    assert!(
        !client.is_finished(),
        "waits for the build to end Cancelled"
    );
    drive_to(&mut c, &h, &name, Phase::Cancelled, "Cancelled").await;
    assert_eq!(client.await.unwrap(), Exit::TimedOutOrCancelled);
}

#[tokio::test]
async fn a_build_past_its_timeout_exits_3() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    let mut h = Harness::new(false);
    let (client, name) = start(
        &c,
        &mut h,
        &[
            "--git",
            "https://github.com/acme/shop.git",
            "-t",
            "registry.example.com/shop/api:5",
            "--timeout",
            "10m",
        ],
    )
    .await;
    assert_eq!(
        c.build(&name).await.spec.timeout,
        std::time::Duration::from_secs(600)
    );
    drive_to(&mut c, &h, &name, Phase::Building, "building on node").await;
    c.advance(11 * 60);
    drive_to(&mut c, &h, &name, Phase::Failed, "Timeout").await;
    assert_eq!(client.await.unwrap(), Exit::TimedOutOrCancelled);
}

#[tokio::test(start_paused = true)]
async fn the_client_gives_up_past_its_own_deadline_and_cancels() {
    // No controller runs: the build never moves. The client waits --timeout plus a minute
    // (in the test runtime's virtual time), then cancels it and exits 3.
    let c = Cluster::new(&["n1"], s3_config()).await;
    let mut h = Harness::new(false);
    let args = build_args(&[
        "--git",
        "https://github.com/acme/shop.git",
        "-t",
        "registry.example.com/shop/api:6",
        "--timeout",
        "1m",
    ]);
    let env = h.env(&c, None);
    let exit = hearth::client::build(args, env).await;
    assert_eq!(exit, Exit::TimedOutOrCancelled);
    let ib = c.builds().get("api-t1x2z").await.unwrap();
    assert!(ib.spec.cancel);
    assert!(
        h.out
            .text()
            .contains("timed out after 120s; the build was cancelled"),
        "{}",
        h.out.text()
    );
}

#[tokio::test]
async fn no_wait_creates_the_build_from_the_flags_and_returns() {
    let c = Cluster::new(&["n1"], s3_config()).await;
    let mut h = Harness::new(false);
    let args = build_args(&[
        "--git",
        "https://github.com/acme/shop.git",
        "--revision",
        "v1.2",
        "-t",
        "registry.example.com/shop/api:7",
        "-t",
        "registry.example.com/shop/api:pr-7",
        "--annotation",
        "org.opencontainers.image.source=https://github.com/acme/shop",
        "--provenance=false",
        "--cache-from",
        "registry.example.com/shop/api:cache",
        "--shm-size",
        "1g",
        "-f",
        "docker/api.Dockerfile",
        "--target",
        "runtime",
        "--build-arg",
        "PY",
        "--build-arg",
        "MODE=prod",
        "--platform",
        "linux/amd64,linux/arm64",
        "--emulate",
        "--label",
        "team=shop",
        "--cache-key",
        "shop:pr-7",
        "--restore-key",
        "shop:main",
        "--read-only",
        "--build-context",
        "protos=https://github.com/acme/protos.git#v3",
        "--ssh",
        "default=deploy-key",
        "--ssh",
        "gitlab=gl-key:id_ed25519",
        "--pull",
        "--no-cache",
        "--push-secret",
        "registry-push",
        "--timeout",
        "45m",
        "-n",
        NS,
        "--no-wait",
    ]);
    let env = h.env(&c, None);
    assert_eq!(hearth::client::build(args, env).await, Exit::Succeeded);
    assert!(
        h.out.text().ends_with(&format!("{NS}/api-t1x2z\n")),
        "{}",
        h.out.text()
    );
    let s = c.builds().get("api-t1x2z").await.unwrap().spec;
    let git = s.source.git.unwrap();
    assert_eq!(
        (git.url.as_str(), git.revision.as_deref()),
        ("https://github.com/acme/shop.git", Some("v1.2"))
    );
    assert_eq!(s.dockerfile, "docker/api.Dockerfile");
    assert_eq!(s.target.as_deref(), Some("runtime"));
    assert_eq!(s.build_args["PY"], "3.12");
    assert_eq!(s.build_args["MODE"], "prod");
    assert_eq!(s.platforms, ["linux/amd64", "linux/arm64"]);
    assert_eq!(s.platform_mode, Some(hearth::api::PlatformMode::Emulate));
    assert_eq!(s.labels["team"], "shop");
    assert_eq!(s.cache.key.as_deref(), Some("shop:pr-7"));
    assert_eq!(s.cache.restore_keys, ["shop:main"]);
    assert_eq!(s.cache.mode, CacheMode::ReadOnly);
    assert_eq!(
        s.build_contexts["protos"],
        "https://github.com/acme/protos.git#v3"
    );
    let ssh: Vec<_> = s
        .ssh
        .iter()
        .map(|a| {
            (
                a.id.as_str(),
                a.secret_ref.name.as_str(),
                a.secret_ref.key.as_str(),
            )
        })
        .collect();
    assert_eq!(
        ssh,
        [
            ("default", "deploy-key", "ssh-privatekey"),
            ("gitlab", "gl-key", "id_ed25519")
        ]
    );
    // --no-cache means what it means in buildx: every step runs again, the cache is kept.
    assert!(s.pull && s.no_cache);
    assert_eq!(s.output.tags, ["registry.example.com/shop/api:pr-7"]);
    assert_eq!(
        s.output.annotations["org.opencontainers.image.source"],
        "https://github.com/acme/shop"
    );
    assert_eq!(
        s.output.attestations.provenance.mode,
        hearth::api::ProvenanceMode::Disabled
    );
    assert_eq!(
        s.cache.registry.unwrap().import_from,
        ["registry.example.com/shop/api:cache"]
    );
    assert_eq!(s.frontend_options["shm-size"], "1073741824");
    assert_eq!(s.output.push_secret_ref.unwrap().name, "registry-push");
    assert_eq!(s.timeout, std::time::Duration::from_secs(45 * 60));
}

#[tokio::test]
async fn bad_input_names_the_flag_exits_2_and_creates_nothing() {
    let c = Cluster::new(&["n1"], s3_config()).await;
    let (_tmp, ctx) = context_dir();
    let dir = ctx.to_str().unwrap().to_string();
    // A directory, not a file: outside DIR or in it, no Dockerfile there.
    let outside = std::env::temp_dir().to_str().unwrap().to_string();
    let d = dir.as_str();
    let git = ["--git", "https://github.com/acme/shop.git"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![d], "-t/--tag: an image to build is required"),
        (
            vec![d, "-t", "api:latest"],
            "-t/--tag: must be a full image reference",
        ),
        (
            vec![d, "-t", "r.io/a/b", "--platform", "linux"],
            "--platform:",
        ),
        (
            vec![d, "-t", "r.io/a/b", "--platform", "linux/amd64,linux/amd64/v2"],
            "--platform: with platformMode Native (the default) each platform is built on nodes of its own architecture",
        ),
        (
            vec![d, "-t", "r.io/a/b", "--build-arg", "NOPE"],
            "--build-arg: \"NOPE\" has no value",
        ),
        (
            vec![d, "-t", "r.io/a/b", "--keep-for", "a week"],
            "--keep-for: \"a week\" is not a duration",
        ),
        (
            // The API's own bound: a pipeline must see the outcome before the build goes.
            vec![d, "-t", "r.io/a/b", "--keep-for", "30s"],
            "--keep-for: must be a duration of at least 1m",
        ),
        (
            vec![d, "-t", "r.io/a/b", "--build-arg", "1X=2"],
            "--build-arg: names must match",
        ),
        (
            vec![d, "-t", "r.io/a/b", "--cache-key", "bad key"],
            "--cache-key:",
        ),
        (
            vec![d, "-t", "r.io/a/b", "--restore-key", "bad key"],
            "--restore-key:",
        ),
        (
            vec![d, "-t", "r.io/a/b", "-t", "shop/b:2"],
            "-t/--tag: each entry must be a tag",
        ),
        (
            vec![
                d,
                "-t",
                "r.io/a/b",
                "--build-context",
                "docs=file:///home/docs",
            ],
            "--build-context: values must be docker-image://REF or an https:// URL",
        ),
        (
            vec![d, "-t", "r.io/a/b", "--build-context", "docs"],
            "--build-context: \"docs\" is not NAME=",
        ),
        (
            vec![d, "-t", "r.io/a/b", "--ssh", "deploy-key"],
            "--ssh: \"deploy-key\" is not ID=SECRET[:KEY]",
        ),
        (
            [
                vec!["-t", "r.io/a/b", "-f", "../Dockerfile"],
                vec!["--git", "https://github.com/acme/shop.git#main:svc/api"],
            ]
            .concat(),
            "-f/--file: ../Dockerfile must be a file in the repository",
        ),
        (
            [
                vec!["-t", "r.io/a/b", "--revision", "v2"],
                vec!["--git", "https://github.com/acme/shop.git#main"],
            ]
            .concat(),
            "--revision: --git already names the revision \"main\"",
        ),
        (
            vec![
                d,
                "-t",
                "r.io/a/b",
                "--read-only",
                "--cache-to",
                "type=registry,ref=r.io/a/b:cache",
            ],
            "--cache-to: a ReadOnly (untrusted) build must not export a cache",
        ),
        (
            vec![d, "-t", "r.io/a/b", "--cache-from", "type=local,src=/tmp"],
            "--cache-from: type=local is not supported",
        ),
        (
            vec![d, "-t", "r.io/a/b", "--ulimit", "nofile"],
            "--add-host/--shm-size/--ulimit: add-hosts must be",
        ),
        (
            vec![d, "-t", "r.io/a/b", "--timeout", "25h"],
            "--timeout: must be greater than 0s and at most 24h",
        ),
        (
            vec![d, "-t", "r.io/a/b", "--timeout", "soon"],
            "--timeout: \"soon\" is not a duration",
        ),
        (
            vec![d, "-t", "r.io/a/b", "--upload-timeout", "2h"],
            "--upload-timeout: must be greater than 0s and at most 1h",
        ),
        (
            vec![d, "-t", "r.io/a/b", "-f", outside.as_str()],
            "-f/--file: no Dockerfile at",
        ),
        (
            vec![d, "-t", "r.io/a/b", "-f", "/nonexistent/Dockerfile"],
            "-f/--file: /nonexistent/Dockerfile does not exist",
        ),
        (
            vec!["/nonexistent-dir", "-t", "r.io/a/b"],
            "DIR: /nonexistent-dir is not a directory",
        ),
        (
            vec!["-t", "r.io/a/b"],
            "DIR: give a local context directory",
        ),
        (
            [vec![d, "-t", "r.io/a/b"], git.to_vec()].concat(),
            "--git: give either a local DIR or --git",
        ),
        (
            [
                vec!["-t", "r.io/a/b", "--revision", "bad rev"],
                git.to_vec(),
            ]
            .concat(),
            "--revision:",
        ),
        (
            [vec!["-t", "r.io/a/b", "--target=-x"], git.to_vec()].concat(),
            "--target:",
        ),
    ];
    for (argv, want) in cases {
        let mut h = Harness::new(false);
        let env = h.env(&c, None);
        let exit = hearth::client::build(build_args(&argv), env).await;
        let out = h.out.text();
        assert_eq!(exit, Exit::BadInput, "{argv:?}: {out}");
        assert!(out.contains(want), "{argv:?}: expected {want:?} in {out:?}");
    }
    assert!(c
        .builds()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());

    // What clap itself refuses is bad input too (its exit code is 2), naming the flag.
    let err = Cli::try_parse_from(["hearth", "build", "-t", "r.io/a/b", "--revision", "main"])
        .unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains("--git"), "{err}");
    let err = Cli::try_parse_from(["hearth", "build", "-t", "r.io/a/b", "--cache-mode", "Off"])
        .unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.to_string().contains("--cache-mode")
            && err.to_string().contains("ReadWrite, ReadOnly or Disabled"),
        "{err}"
    );
}

#[tokio::test]
async fn a_refused_upload_exits_1_with_the_receiver_s_reason() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    let mut h = Harness::new(false);
    let (_tmp, ctx) = context_dir();
    let args = build_args(&[
        ctx.to_str().unwrap(),
        "-t",
        "registry.example.com/shop/api:8",
    ]);
    let env = h.env(&c, Some(Arc::new(RefusingUploader)));
    let client = tokio::spawn(hearth::client::build(args, env));
    let name = created(&c, &h).await.metadata.name.unwrap();
    drive_to(&mut c, &h, &name, Phase::Building, "building on node").await;
    receiver_runs(&c, &format!("{name}-build-1")).await;
    assert_eq!(client.await.unwrap(), Exit::Failed);
    assert!(
        h.out
            .text()
            .contains("error: upload: receiver: upload refused: entry \"../etc/passwd\""),
        "{}",
        h.out.text()
    );
}

fn wait_args(name: &str) -> hearth::client::args::WaitArgs {
    parse(&["wait", name, "-n", NS], |c| match c {
        Command::Wait(a) => Some(a),
        _ => None,
    })
}

#[tokio::test]
async fn wait_exits_at_once_with_the_outcome_s_code() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    // Failed.
    c.submit("f1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    c.settle("f1").await;
    c.finish_pod("f1-build-1", 1, "boom").await;
    assert_eq!(c.settle("f1").await, Some(Phase::Failed));
    // Cancelled.
    c.submit(
        "x1",
        spec(
            "registry.example.com/shop/api:2",
            json!({"cache": {"key": "other"}}),
        ),
    )
    .await;
    c.settle("x1").await;
    let mut ib = c.build("x1").await;
    ib.spec.cancel = true;
    c.builds()
        .replace("x1", &PostParams::default(), &ib)
        .await
        .unwrap();
    assert_eq!(c.settle("x1").await, Some(Phase::Cancelled));

    for (name, want) in [("f1", Exit::Failed), ("x1", Exit::TimedOutOrCancelled)] {
        let mut h = Harness::new(false);
        let env = h.env(&c, None);
        assert_eq!(
            hearth::client::wait(wait_args(name), env).await,
            want,
            "{name}"
        );
    }

    // Succeeded, while waiting.
    c.submit(
        "s1",
        spec(
            "registry.example.com/shop/api:3",
            json!({"cache": {"key": "third", "mode": "Disabled"}}),
        ),
    )
    .await;
    let mut h = Harness::new(false);
    let env = h.env(&c, None);
    let waiting = tokio::spawn(hearth::client::wait(wait_args("s1"), env));
    drive_to(&mut c, &h, "s1", Phase::Building, "building on node").await;
    let (meta, digest) = metadata('s');
    c.finish_pod("s1-build-1", 0, &meta).await;
    drive_to(&mut c, &h, "s1", Phase::Succeeded, "Succeeded").await;
    assert_eq!(waiting.await.unwrap(), Exit::Succeeded);
    assert!(h.out.text().contains(&digest));
}

#[tokio::test(start_paused = true)]
async fn wait_gives_up_at_its_timeout_without_cancelling() {
    let c = Cluster::new(&["n1"], s3_config()).await;
    c.submit("w1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    let mut h = Harness::new(false);
    let env = h.env(&c, None);
    let mut args = wait_args("w1");
    args.timeout = Some("30s".into());
    assert_eq!(
        hearth::client::wait(args, env).await,
        Exit::TimedOutOrCancelled
    );
    assert!(!c.build("w1").await.spec.cancel);
}

#[tokio::test]
async fn logs_prints_the_builder_s_log_of_the_current_attempt() {
    let mut c = Cluster::new(&["n1"], s3_config()).await;
    c.submit("l1", spec("registry.example.com/shop/api:1", json!({})))
        .await;
    c.settle("l1").await;
    let mut h = Harness::new(false);
    let env = h.env(&c, None);
    let args = parse(&["logs", "l1", "-n", NS, "-f"], |c| match c {
        Command::Logs(a) => Some(a),
        _ => None,
    });
    assert_eq!(hearth::client::logs(args, env).await, Exit::Succeeded);
    assert!(h.out.text().contains("#7 DONE 0.9s"));
    assert_eq!(
        h.logs.asked.lock().unwrap().as_slice(),
        ["l1-build-1/buildkit"]
    );
}

#[tokio::test]
async fn a_build_retried_on_another_node_gets_the_context_again() {
    let mut c = Cluster::new(&["n1", "n2"], s3_config()).await;
    let mut h = Harness::new(false);
    let (_tmp, ctx) = context_dir();
    let (client, name) = start(
        &c,
        &mut h,
        &[
            ctx.to_str().unwrap(),
            "-t",
            "registry.example.com/shop/api:9",
        ],
    )
    .await;
    drive_to(&mut c, &h, &name, Phase::Building, "building on node").await;
    let first = format!("{name}-build-1");
    receiver_runs(&c, &first).await;
    h.printed(&format!("uploading context (4.0KiB) to {first}"))
        .await;
    h.printed("uploaded").await;
    // Its node goes away: the controller retries the build once, with a new builder pod.
    let node = c
        .build(&name)
        .await
        .status
        .unwrap()
        .placement
        .unwrap()
        .node
        .unwrap();
    c.schedule_pod(&first, &node).await;
    c.delete_node(&node).await;
    c.settle(&name).await;
    assert_eq!(c.build(&name).await.status.unwrap().attempts, Some(2));
    let second = format!("{name}-build-2");
    receiver_runs(&c, &second).await;
    h.printed(&format!("uploading context (4.0KiB) to {second}"))
        .await;
    for _ in 0..4000 {
        if h.out.text().matches("verified by the receiver").count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(h
        .received
        .path()
        .join(&second)
        .join("context/app.py")
        .exists());
    buildkit_runs(&c, &second).await;
    let (meta, _) = metadata('2');
    c.finish_pod(&second, 0, &meta).await;
    c.settle(&name).await;
    if c.jobs()
        .get_opt(&format!("{name}-save-2"))
        .await
        .unwrap()
        .is_some()
    {
        c.finish_job(&format!("{name}-save-2"), true, SAVED).await;
        c.settle(&name).await;
    }
    assert_eq!(client.await.unwrap(), Exit::Succeeded);
}

/// Several platforms without `--emulate`: the client uploads the context to each platform's
/// child (each builder pod has its own receiver), follows both logs with the platform before
/// each line, and ends with the parent: its index digest and where each platform ran.
#[tokio::test]
async fn a_build_of_two_platforms_serves_each_child_and_prints_where_each_ran() {
    let mut c = Cluster::with_nodes(
        vec![arch_node("amd-1", "amd64"), arch_node("arm-1", "arm64")],
        s3_config(),
    )
    .await;
    let mut h = Harness::new(false);
    let (_tmp, ctx) = context_dir();
    let (client, name) = start(
        &c,
        &mut h,
        &[
            ctx.to_str().unwrap(),
            "-t",
            "registry.example.com/shop/api:2",
            "--platform",
            "linux/amd64,linux/arm64",
        ],
    )
    .await;
    assert!(c.build(&name).await.spec.fans_out());
    drive_to(&mut c, &h, &name, Phase::Building, "building 2 platforms").await;
    let kids: Vec<String> = ["amd64", "arm64"]
        .iter()
        .map(|a| format!("{name}-{a}"))
        .collect();
    for kid in &kids {
        c.settle(kid).await;
        assert_eq!(
            Cluster::phase_of(&c.build(kid).await),
            Some(Phase::Building)
        );
    }
    // Each child's receiver gets the context, each builder's log is followed.
    for (kid, platform) in kids.iter().zip(["linux/amd64", "linux/arm64"]) {
        let pod = format!("{kid}-build-1");
        c.reconcile(&name).await.unwrap();
        receiver_runs(&c, &pod).await;
        h.printed(&format!("[{platform}] uploaded")).await;
        let got = h.received.path().join(&pod).join("context");
        assert!(got.join("Dockerfile").exists(), "{pod} got the context");
        buildkit_runs(&c, &pod).await;
        h.printed(&format!("[{platform}] #7 DONE 0.9s")).await;
    }
    for (kid, d) in kids.iter().zip(['a', 'b']) {
        c.run_to_end(kid, d).await;
    }
    c.settle(&name).await;
    let index = format!("sha256:{}", "c".repeat(64));
    c.finish_job(
        &format!("{name}-index-1"),
        true,
        &format!(r#"{{"digest":"{index}","mediaType":"application/vnd.oci.image.index.v1+json","size":812,"targets":["registry.example.com/shop/api:2"],"manifests":2}}"#),
    )
    .await;
    drive_to(&mut c, &h, &name, Phase::Succeeded, "Succeeded").await;
    assert_eq!(client.await.unwrap(), Exit::Succeeded);
    let out = h.out.text();
    assert!(out.contains(&format!("digest   {index}")), "{out}");
    let (_, amd) = metadata('a');
    assert!(
        out.contains(&format!(
            "  linux/amd64 Succeeded Cold (build {name}-amd64, node amd-1, {amd})"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "  linux/arm64 Succeeded Cold (build {name}-arm64, node arm-1"
        )),
        "{out}"
    );
    let asked = h.logs.asked.lock().unwrap().clone();
    assert_eq!(
        asked,
        kids.iter()
            .map(|k| format!("{k}-build-1/buildkit"))
            .collect::<Vec<_>>()
    );
    keep_example("two-platforms", &out);
}
