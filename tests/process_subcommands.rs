//! Every `hearth` subcommand that talks to a Kubernetes API server, run as the real binary
//! with `KUBECONFIG` pointing at the fake API server over HTTPS (tests/cluster/apiserver).
//!
//! The binary once panicked at its first TLS connection (two rustls crypto providers
//! compiled in, none the process default) and no test noticed: the in-process tests build
//! their own clients. Here each subcommand must make real requests over TLS and exit with a
//! status it chose, never a panic (exit 101 or a signal, "panicked at" on stderr), and where
//! it is cheap, with the outcome it promises (`wait` exits 0 on Succeeded and 1 on Failed,
//! `build --no-wait` creates the ImageBuild, `logs` prints the builder's log, `controller`
//! becomes ready and stops cleanly on SIGTERM).
//!
//! This test binary links both providers (kube-fake-client's dev-dependency features add
//! aws-lc-rs), so without `hearth::crypto::install()` in `src/main.rs` every case here fails.

#[path = "cluster/apiserver/mod.rs"]
mod apiserver;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use apiserver::ApiServer;
use hearth::api::ImageBuild;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// The kubeconfig's namespace (see `ApiServer::kubeconfig`).
const NS: &str = "default";

/// Longest any one command may run: they all need well under a second of work.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A fake API server and a kubeconfig file for it.
struct Setup {
    server: ApiServer,
    client: kube::Client,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

async fn setup() -> Setup {
    let server = ApiServer::start().await;
    // Where the chart installs the controller (and its leader-election Lease).
    server.ensure_namespace("hearth-system");
    let client = server.client().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let kubeconfig = server.kubeconfig(dir.path());
    Setup {
        server,
        client,
        dir,
        kubeconfig,
    }
}

/// `hearth ARGS` with a clean environment: the kubeconfig, a private HOME, no colours.
fn hearth(s: &Setup, args: &[&str]) -> Command {
    let home = s.dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("KUBECONFIG", &s.kubeconfig)
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs a command to its end (at most [`COMMAND_TIMEOUT`]).
async fn output(mut cmd: Command, what: &str) -> Output {
    let child = cmd.spawn().expect("starting hearth");
    match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out.expect("hearth's output"),
        Err(_) => panic!("`{what}` still running after {COMMAND_TIMEOUT:?}"),
    }
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "`{what}`: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The process chose its exit: no signal, not Rust's panic status 101, no panic message.
fn assert_no_panic(what: &str, status: ExitStatus, stderr: &str, context: &str) {
    assert!(
        status.signal().is_none() && status.code() != Some(101),
        "`{what}` crashed ({status})\n{context}"
    );
    assert!(
        !stderr.contains("panicked at"),
        "`{what}` panicked\n{context}"
    );
}

/// Runs `hearth ARGS`, checks it did not panic and exited with `code`.
async fn run(s: &Setup, args: &[&str], code: i32) -> Output {
    let what = format!("hearth {}", args.join(" "));
    let out = output(hearth(s, args), &what).await;
    let context = describe(&what, &out);
    assert_no_panic(
        &what,
        out.status,
        &String::from_utf8_lossy(&out.stderr),
        &context,
    );
    assert_eq!(out.status.code(), Some(code), "{context}");
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Creates an ImageBuild of key `key` in the kubeconfig's namespace.
async fn create_build(s: &Setup, name: &str, key: &str) -> ImageBuild {
    let ib: ImageBuild = serde_json::from_value(json!({
        "apiVersion": "hearth.dev/v1alpha1", "kind": "ImageBuild",
        "metadata": {"name": name},
        "spec": {
            "source": {"git": {"url": "https://github.com/acme/shop.git", "revision": "main"}},
            "output": {"image": "registry.example.com/acme/shop:main"},
            "cache": {"key": key},
        },
    }))
    .expect("ImageBuild");
    Api::<ImageBuild>::namespaced(s.client.clone(), NS)
        .create(&PostParams::default(), &ib)
        .await
        .expect("create ImageBuild")
}

/// Sets an ImageBuild's status (merge patch of the status subresource), as the controller.
async fn set_status(s: &Setup, name: &str, status: Value) {
    Api::<ImageBuild>::namespaced(s.client.clone(), NS)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .expect("patch ImageBuild status");
}

/// When the fake controller set a condition.
const NOW: &str = "2026-01-01T00:00:00Z";

fn succeeded(digest: &str) -> Value {
    json!({
        "phase": "Succeeded",
        "attempts": 1,
        "cacheKey": "shop:main",
        "imageDigest": digest,
        "placement": {"node": "n1", "warmth": "Hot"},
        "conditions": [{
            "type": "Succeeded", "status": "True", "reason": "Succeeded",
            "message": "image pushed", "lastTransitionTime": NOW,
        }],
    })
}

const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_0_on_a_succeeded_build_and_1_on_a_failed_one() {
    let s = setup().await;
    create_build(&s, "shop-ok", "shop:main").await;
    set_status(&s, "shop-ok", succeeded(DIGEST)).await;
    create_build(&s, "shop-bad", "shop:main").await;
    set_status(
        &s,
        "shop-bad",
        json!({
            "phase": "Failed",
            "attempts": 1,
            "message": "buildkit exited 1 (Error)",
            "conditions": [{
                "type": "Succeeded", "status": "False", "reason": "BuildFailed",
                "message": "buildkit exited 1 (Error)", "lastTransitionTime": NOW,
            }],
        }),
    )
    .await;

    let ok = run(
        &s,
        &["wait", "shop-ok", "--timeout", "20s", "-o", "json"],
        0,
    )
    .await;
    let outcome: Value = serde_json::from_str(&stdout(&ok))
        .unwrap_or_else(|e| panic!("`wait -o json` prints JSON ({e}): {}", stdout(&ok)));
    assert_eq!(outcome["containerimage.digest"], DIGEST, "{outcome}");

    let bad = run(&s, &["wait", "shop-bad", "-n", NS, "--timeout", "20s"], 1).await;
    let text = stdout(&bad) + &String::from_utf8_lossy(&bad.stderr);
    assert!(text.contains("BuildFailed"), "{text}");

    // A build that does not exist is an API error (exit 1), not a crash.
    run(&s, &["wait", "no-such-build", "--timeout", "5s"], 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_no_wait_creates_the_image_build() {
    let s = setup().await;
    let out = run(
        &s,
        &[
            "build",
            "--no-wait",
            "--git",
            "https://github.com/acme/shop.git",
            "--revision",
            "feature-x",
            "-t",
            "registry.example.com/acme/shop:feature-x",
            "--cache-key",
            "shop:feature-x",
            "--restore-key",
            "shop:main",
        ],
        0,
    )
    .await;
    let printed = stdout(&out);
    let (ns, name) = printed
        .trim()
        .split_once('/')
        .unwrap_or_else(|| panic!("`build --no-wait` prints namespace/name: {printed:?}"));
    assert_eq!(ns, NS);
    let ib = s
        .server
        .object("imagebuilds", NS, name)
        .unwrap_or_else(|| panic!("ImageBuild {ns}/{name} was created"));
    assert_eq!(
        ib["spec"]["source"]["git"],
        json!({"url": "https://github.com/acme/shop.git", "revision": "feature-x"}),
        "{ib}"
    );
    assert_eq!(
        ib["spec"]["output"]["image"],
        "registry.example.com/acme/shop:feature-x"
    );
    assert_eq!(ib["spec"]["cache"]["key"], "shop:feature-x");
    assert_eq!(ib["spec"]["cache"]["restoreKeys"], json!(["shop:main"]));
}

/// `hearth build` without `--no-wait` follows the build until it ends (the test plays the
/// controller) and prints the digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_follows_the_build_to_its_digest() {
    let s = setup().await;
    let what = "hearth build --git ... -t ...";
    let mut child = hearth(
        &s,
        &[
            "build",
            "--git",
            "https://github.com/acme/shop.git",
            "-t",
            "registry.example.com/acme/shop:main",
            "--cache-key",
            "shop:main",
        ],
    )
    .spawn()
    .expect("starting hearth build");
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        if let Some(ib) = s.server.snapshot("imagebuilds").first() {
            let name = ib["metadata"]["name"].as_str().expect("name").to_string();
            set_status(&s, &name, succeeded(DIGEST)).await;
            break;
        }
        // Exited before creating anything: the checks below say how.
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "`{what}` created no ImageBuild");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out.expect("output"),
        Err(_) => panic!("`{what}` did not end after the build Succeeded"),
    };
    let context = describe(what, &out);
    assert_no_panic(
        what,
        out.status,
        &String::from_utf8_lossy(&out.stderr),
        &context,
    );
    assert_eq!(out.status.code(), Some(0), "{context}");
    assert!(stdout(&out).contains(DIGEST), "{context}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_prints_the_builders_log() {
    let s = setup().await;
    create_build(&s, "shop-logs", "shop:main").await;
    set_status(&s, "shop-logs", succeeded(DIGEST)).await;
    let pods = Api::<Pod>::namespaced(s.client.clone(), NS);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "shop-logs-build-1"},
        "spec": {"containers": [{"name": "buildkit", "image": "moby/buildkit"}]},
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    pods.patch_status(
        "shop-logs-build-1",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .expect("pod status");
    let log = "#1 [internal] load build definition from Dockerfile\n#1 DONE 0.0s\n";
    s.server.set_pod_log(NS, "shop-logs-build-1", log);

    let out = run(&s, &["logs", "shop-logs"], 0).await;
    assert!(stdout(&out).contains(log), "{}", describe("logs", &out));
    let out = run(&s, &["logs", "shop-logs", "-f", "-n", NS], 0).await;
    assert!(stdout(&out).contains(log), "{}", describe("logs -f", &out));
}

/// A free port of 127.0.0.1 (free when this returns; the caller binds it soon after).
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").to_string()
}

/// The HTTP status of `GET path` on `addr`, or None when nothing answers.
async fn http_status(addr: &str, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    s.write_all(request.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `hearth controller` with the admin server on `admin_addr`, its output in files.
fn controller(s: &Setup, admin_addr: &str, config: Option<&Path>) -> (Child, PathBuf, PathBuf) {
    let out = s.dir.path().join("controller.out");
    let err = s.dir.path().join("controller.err");
    let mut args = vec!["controller"];
    if let Some(config) = config {
        args.extend(["--config", config.to_str().expect("utf-8 path")]);
    }
    let mut cmd = hearth(s, &args);
    cmd.env("HEARTH_ADMIN_ADDR", admin_addr)
        .env("POD_NAMESPACE", "hearth-system")
        .env("POD_NAME", "hearth-controller-0")
        .env("HEARTH_LOG_FORMAT", "text")
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"));
    (cmd.spawn().expect("starting hearth controller"), out, err)
}

fn logs_of(out: &Path, err: &Path) -> (String, String) {
    (
        std::fs::read_to_string(out).unwrap_or_default(),
        std::fs::read_to_string(err).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_becomes_ready_and_stops_cleanly_on_sigterm() {
    let s = setup().await;
    let config = s.dir.path().join("config.yaml");
    std::fs::write(&config, "namespaces: [default]\n").expect("config");
    let addr = free_addr();
    let (mut child, out, err) = controller(&s, &addr, Some(&config));
    let what = "hearth controller";
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let (o, e) = logs_of(&out, &err);
            assert_no_panic(what, status, &e, &format!("stdout:\n{o}\nstderr:\n{e}"));
            panic!("`{what}` exited ({status}) before /readyz answered 200\nstdout:\n{o}\nstderr:\n{e}");
        }
        if http_status(&addr, "/readyz").await == Some(200) {
            break;
        }
        if Instant::now() > deadline {
            let (o, e) = logs_of(&out, &err);
            panic!("`{what}` not ready after {COMMAND_TIMEOUT:?}\nstdout:\n{o}\nstderr:\n{e}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(http_status(&addr, "/healthz").await, Some(200));
    // It reached the API server: its reflectors listed and it took part in the election.
    assert!(
        s.server.requests("nodes", "list") > 0,
        "{:?}",
        s.server.request_counts()
    );

    let pid = child.id().expect("pid");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).expect("pid"),
        rustix::process::Signal::TERM,
    )
    .expect("SIGTERM");
    let status = match tokio::time::timeout(COMMAND_TIMEOUT, child.wait()).await {
        Ok(status) => status.expect("wait"),
        Err(_) => {
            let (o, e) = logs_of(&out, &err);
            panic!("`{what}` still running {COMMAND_TIMEOUT:?} after SIGTERM\nstdout:\n{o}\nstderr:\n{e}");
        }
    };
    let (o, e) = logs_of(&out, &err);
    let context = format!("{status}\nstdout:\n{o}\nstderr:\n{e}");
    assert_no_panic(what, status, &e, &context);
    assert!(status.success(), "`{what}` exits 0 on SIGTERM: {context}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_refuses_an_admin_address_in_use() {
    let s = setup().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();
    let (child, out, err) = controller(&s, &addr, None);
    let what = format!("hearth controller (HEARTH_ADMIN_ADDR={addr}, in use)");
    let status = match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => output.expect("wait").status,
        Err(_) => panic!("`{what}` still running after {COMMAND_TIMEOUT:?}"),
    };
    let (o, e) = logs_of(&out, &err);
    let context = format!("{status}\nstdout:\n{o}\nstderr:\n{e}");
    assert_no_panic(&what, status, &e, &context);
    assert!(!status.success(), "`{what}` must fail: {context}");
    assert!(e.contains(&addr), "the error names {addr}: {context}");
    drop(taken);
}

#[tokio::test]
async fn an_error_prints_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-config.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["controller", "--config", &missing.to_string_lossy()])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "the cause printed more than once: {stderr}"
    );
}

#[tokio::test]
async fn simulate_names_the_line_of_a_binary_workload_and_validate_does_not_echo_a_huge_key() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("workload.bin");
    std::fs::write(&binary, b"# comment\n{}\n\xff\xfe\x00binary").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["simulate", "--workload", &binary.to_string_lossy()])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 3: not UTF-8 text"), "{stderr}");

    let big = dir.path().join("big.yaml");
    let key = "a".repeat(10_000);
    std::fs::write(
        &big,
        format!("apiVersion: hearth.dev/v1alpha1\nkind: BuildCache\nmetadata:\n  name: big\n  namespace: shop\nspec:\n  key: {key}\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["validate", &big.to_string_lossy()])
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("(10000 characters)"), "{text}");
    assert!(
        text.len() < 1_000,
        "the key was echoed back: {} bytes",
        text.len()
    );
}
