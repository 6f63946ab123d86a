//! A whole test cluster around the fake API server, for process-level end-to-end tests: the
//! API server over HTTPS on 127.0.0.1 ([`apiserver`]), a loopback S3 server, the scheduler and
//! volume binder ([`scheduler`]), the Job controller and pod GC ([`controllers`]), the garbage
//! collector and volume controllers ([`gc`]), optionally a loopback OCI registry the played
//! buildkitd pushes to ([`ClusterOpts::registry`]), one kubelet per node ([`kubelet`]) running the
//! real `hearth` binary for snapshot Jobs, and the REAL `hearth controller` process started as
//! users run it: a kubeconfig and the chart's config file.
//!
//! ```ignore
//! let c = TestCluster::start(ClusterOpts::default()).await;
//! c.apply_build("b1", spec).await;
//! let ib = c.wait_build("b1", "Succeeded", secs(60)).await;
//! assert!(c.runs.overlaps().is_empty());
//! ```
#![allow(dead_code)]

pub mod apiserver;
pub mod buildkit;
pub mod containers;
pub mod controllers;
pub mod describe;
pub mod gc;
pub mod kubelet;
pub mod record;
pub mod runtime;
pub mod scheduler;
pub mod util;
pub mod values;

#[path = "../snapshot_support/mod.rs"]
pub mod snapshot_support;

#[path = "../registry_support/mod.rs"]
pub mod registry_support;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hearth::api::{BuildCache, ImageBuild, ImageBuildSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;

use apiserver::ApiServer;
pub use buildkit::BuildkitOpts;
pub use controllers::ControllerOpts;
pub use record::{Procs, Runs};
use registry_support::{AuthMode, RegistryServer};
use snapshot_support::S3Server;
use values::render_config;
pub use values::Values;

/// Namespace of the builds.
pub const NS: &str = "shop";
/// Namespace of the operator (its Lease).
pub const OPERATOR_NS: &str = "hearth-system";
/// The StorageClass of replica volumes.
pub const STORAGE_CLASS: &str = "local";

/// Shorthand for durations in seconds.
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A node of the cluster.
#[derive(Clone, Debug)]
pub struct NodeOpts {
    /// Name (and `kubernetes.io/hostname`).
    pub name: String,
    /// `topology.kubernetes.io/zone`.
    pub zone: String,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
    /// Extra annotations (for example `hearth.dev/cache-budget`).
    pub annotations: BTreeMap<String, String>,
}

impl NodeOpts {
    /// A node in zone `z1`.
    pub fn new(name: &str) -> NodeOpts {
        NodeOpts {
            name: name.into(),
            zone: "z1".into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }
}

/// How to build the cluster.
#[derive(Clone, Debug)]
pub struct ClusterOpts {
    /// The nodes.
    pub nodes: Vec<NodeOpts>,
    /// The operator's config values.
    pub values: Values,
    /// Pod start latency of every kubelet.
    pub start_latency: Duration,
    /// The played buildkitd.
    pub buildkit: BuildkitOpts,
    /// Job controller and pod GC.
    pub controllers: ControllerOpts,
    /// `RUST_LOG` of the controller process.
    pub controller_log: String,
    /// Start the controller (false: call [`TestCluster::start_controller`] yourself).
    pub start_controller: bool,
    /// Run the loopback OCI registry (plain HTTP on 127.0.0.1) with this auth: the played
    /// buildkitd pushes images named `<TestCluster::registry_host>/...` there.
    pub registry: Option<AuthMode>,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        ClusterOpts {
            nodes: vec![NodeOpts::new("node-a"), NodeOpts::new("node-b")],
            values: Values::default(),
            start_latency: Duration::from_millis(200),
            buildkit: BuildkitOpts::default(),
            controllers: ControllerOpts::default(),
            controller_log: "info,hearth=debug,kube=warn".into(),
            start_controller: true,
            registry: None,
        }
    }
}

/// The cluster. Dropping it kills the controller and every pod process and stops the servers.
pub struct TestCluster {
    /// The fake API server.
    pub api: ApiServer,
    /// The loopback S3 server of the snapshot store.
    pub s3: S3Server,
    /// The loopback OCI registry, when [`ClusterOpts::registry`] asked for one.
    pub registry: Option<RegistryServer>,
    /// Every container run on the nodes.
    pub runs: Runs,
    /// Host root: `nodes/<node>/pv-*` volumes, pods' dirs, the config, the controller log.
    pub root: tempfile::TempDir,
    /// When the cluster started (for relative times in output).
    pub started: Instant,
    client: Client,
    opts: ClusterOpts,
    procs: Procs,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    kubelets: BTreeMap<String, tokio::task::JoinHandle<()>>,
    controller: Option<Child>,
    admin_addr: String,
    kubeconfig: PathBuf,
    config_file: PathBuf,
    log_file: PathBuf,
}

/// The `hearth` binary under test.
pub fn hearth_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hearth"))
}

impl TestCluster {
    /// Starts everything and waits until the controller is ready.
    pub async fn start(mut opts: ClusterOpts) -> TestCluster {
        let api = ApiServer::start().await;
        let s3 = S3Server::start().await;
        let registry = match opts.registry.clone() {
            Some(auth) => {
                let server = RegistryServer::start(auth.clone()).await;
                let credentials = match auth {
                    AuthMode::Anonymous => None,
                    AuthMode::Basic { username, password }
                    | AuthMode::Token {
                        username, password, ..
                    } => Some((username, password)),
                };
                opts.buildkit.registry = Some((server.addr.to_string(), credentials));
                // It serves plain HTTP, and the operator's config says so (the builder's
                // buildkitd.toml, the index Job's --plain-http).
                let this = format!(
                    "\n    - host: {:?}\n      http: true",
                    server.addr.to_string()
                );
                let others = opts.values.buildkitd_registries.trim();
                opts.values.buildkitd_registries = match others {
                    "[]" | "" => this,
                    _ => format!("{}{this}", opts.values.buildkitd_registries),
                };
                Some(server)
            }
            None => None,
        };
        let root = tempfile::tempdir().expect("cluster root");
        let client = api.client().await;
        let kubeconfig = api.kubeconfig(root.path());
        let config_file = root.path().join("config.yaml");
        std::fs::write(&config_file, render_config(&opts.values, &s3)).expect("config");
        let mut c = TestCluster {
            log_file: root.path().join("controller.log"),
            api,
            s3,
            registry,
            runs: Runs::default(),
            started: Instant::now(),
            client,
            procs: Procs::default(),
            tasks: Vec::new(),
            kubelets: BTreeMap::new(),
            controller: None,
            admin_addr: String::new(),
            kubeconfig,
            config_file,
            root,
            opts,
        };
        c.seed().await;
        let root = c.root.path().to_path_buf();
        c.tasks
            .push(scheduler::spawn(c.client.clone(), root.clone()));
        c.tasks.push(controllers::spawn(
            c.client.clone(),
            c.opts.controllers.clone(),
        ));
        c.tasks.push(gc::spawn(c.client.clone(), root));
        for n in c.opts.nodes.clone() {
            c.start_kubelet(&n.name);
        }
        if c.opts.start_controller {
            c.start_controller().await;
        }
        c
    }

    fn start_kubelet(&mut self, node: &str) {
        let agent = kubelet::NodeAgent {
            client: self.client.clone(),
            node: node.into(),
            root: self.root.path().to_path_buf(),
            opts: kubelet::KubeletOpts {
                start_latency: self.opts.start_latency,
                hearth_bin: hearth_bin(),
                buildkit: self.opts.buildkit.clone(),
            },
            runs: self.runs.clone(),
            procs: self.procs.clone(),
        };
        self.kubelets.insert(node.into(), kubelet::spawn(agent));
    }

    /// Creates the namespaces, the StorageClass, the store Secret and the nodes.
    async fn seed(&self) {
        let pp = PostParams::default();
        for ns in [NS, OPERATOR_NS] {
            let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
            Api::<Namespace>::all(self.client.clone())
                .create(&pp, &ns)
                .await
                .expect("namespace");
        }
        let class: StorageClass = serde_json::from_value(json!({
            "metadata": {"name": STORAGE_CLASS, "annotations": {scheduler::CLONE_ANNOTATION: "true"}},
            "provisioner": scheduler::PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
        }))
        .unwrap();
        Api::<StorageClass>::all(self.client.clone())
            .create(&pp, &class)
            .await
            .expect("storage class");
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": self.opts.values.credentials_secret, "namespace": NS},
            "stringData": {"AWS_ACCESS_KEY_ID": "hearth", "AWS_SECRET_ACCESS_KEY": "hearth-secret"},
        }))
        .unwrap();
        // stringData is write-only in Kubernetes: send data, as the API server stores it.
        let mut secret = secret;
        secret.data = secret.string_data.take().map(|d| {
            d.into_iter()
                .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
                .collect()
        });
        Api::<Secret>::namespaced(self.client.clone(), NS)
            .create(&pp, &secret)
            .await
            .expect("store secret");
        for n in &self.opts.nodes {
            self.add_node(n).await;
        }
    }

    /// Creates a Node object (Ready) and, if it has none yet, its kubelet.
    pub async fn add_node(&self, n: &NodeOpts) {
        let mut labels = n.labels.clone();
        labels.insert("kubernetes.io/hostname".into(), n.name.clone());
        labels.insert("topology.kubernetes.io/zone".into(), n.zone.clone());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": n.name, "labels": labels, "annotations": n.annotations},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                    "lastTransitionTime": util::now()}],
                "capacity": {"cpu": "8", "memory": "32Gi", "ephemeral-storage": "100Gi", "pods": "110"},
                "allocatable": {"cpu": "8", "memory": "32Gi", "ephemeral-storage": "100Gi", "pods": "110"},
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": n.name}],
            }
        }))
        .unwrap();
        let nodes: Api<Node> = Api::all(self.client.clone());
        let created = nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("node");
        if created
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_none()
        {
            let mut with_status = created.clone();
            with_status.status = node.status.clone();
            nodes
                .replace_status(&n.name, &PostParams::default(), &with_status)
                .await
                .expect("node status");
        }
        std::fs::create_dir_all(self.root.path().join("nodes").join(&n.name)).expect("node dir");
    }

    /// A node joins after start: its object and its kubelet.
    pub async fn join_node(&mut self, n: NodeOpts) {
        self.add_node(&n).await;
        self.start_kubelet(&n.name);
    }

    /// Deletes a Node: its kubelet kills its processes and stops; pod GC removes its pods.
    pub async fn delete_node(&self, name: &str) {
        util::delete(
            &Api::<Node>::all(self.client.clone()),
            name,
            &Default::default(),
        )
        .await
        .expect("delete node");
    }

    /// `127.0.0.1:PORT` of the loopback registry: images named `<this>/shop/app` are pushed
    /// there. Panics when the cluster was started without one.
    pub fn registry_host(&self) -> String {
        self.registry
            .as_ref()
            .expect("ClusterOpts::registry was not set")
            .addr
            .to_string()
    }

    /// Creates `name`, a `kubernetes.io/dockerconfigjson` Secret of the build namespace with
    /// `user`'s credentials for `registry` (as `kubectl create secret docker-registry` does).
    pub async fn create_push_secret(&self, name: &str, registry: &str, user: &str, password: &str) {
        use base64::Engine as _;
        let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
        let config = json!({"auths": {registry: {"auth": b64(format!("{user}:{password}"))}}});
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": b64(config.to_string())},
        }))
        .expect("Secret");
        Api::<Secret>::namespaced(self.client.clone(), NS)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create the push Secret");
    }

    /// A client of the API server.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// `http://127.0.0.1:PORT` of the controller's admin server.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    /// The controller's `/metrics` text (empty when it does not answer).
    pub async fn metrics(&self) -> String {
        http_get(&self.admin_addr, "/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The controller's log so far.
    pub fn controller_log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// Starts `hearth controller` (again) and waits for `/readyz`.
    pub async fn start_controller(&mut self) {
        assert!(
            self.controller.is_none(),
            "the controller is already running"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        self.admin_addr = format!("127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .expect("controller log");
        let _ = writeln!(
            &log,
            "=== hearth controller starting ({:?} after cluster start)",
            self.started.elapsed()
        );
        let child = controller_command(
            &self.root.path().join("controller-home"),
            &self.kubeconfig,
            &self.config_file,
            &self.admin_addr,
            &self.opts.controller_log,
            log,
        )
        .spawn()
        .expect("starting hearth controller");
        self.controller = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .controller
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.controller = None;
                panic!(
                    "hearth controller exited ({status}) before it was ready; its log:\n{}",
                    self.controller_log()
                );
            }
            if http_status(&self.admin_addr, "/readyz").await == Some(200) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "hearth controller not ready after 30 s; its log:\n{}",
                    self.controller_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the controller process started last is still running (it never exited).
    pub fn controller_running(&mut self) -> bool {
        self.controller
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGKILLs the controller process.
    pub fn kill_controller(&mut self) {
        if let Some(mut child) = self.controller.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Polls `f` every 50 ms until it returns Some; on timeout prints the controller's log
    /// tail and the cluster's state, then panics.
    pub async fn wait_for<T, F, Fut>(&self, desc: &str, timeout: Duration, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f().await {
                return v;
            }
            if Instant::now() > deadline {
                let state = self.describe().await;
                panic!(
                    "timed out after {timeout:?} waiting for {desc}\n--- controller log (tail) ---\n{}\n--- cluster ---\n{state}",
                    tail(&self.controller_log(), 120)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// ImageBuilds of the build namespace.
    pub fn builds(&self) -> Api<ImageBuild> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// BuildCaches of the build namespace.
    pub fn caches(&self) -> Api<BuildCache> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Pods of the build namespace.
    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Jobs of the build namespace.
    pub fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// PVCs of the build namespace.
    pub fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Creates an ImageBuild in the build namespace. A request whose connection the server
    /// dropped (the reliability tests drop them all) is sent again, as a client would; had the
    /// first one landed, the build it made is the one returned.
    pub async fn apply_build(&self, name: &str, spec: ImageBuildSpec) -> ImageBuild {
        let mut ib = ImageBuild::new(name, spec);
        ib.metadata.namespace = Some(NS.into());
        let mut tries = 0;
        loop {
            tries += 1;
            match self.builds().create(&PostParams::default(), &ib).await {
                Ok(created) => return created,
                Err(kube::Error::Api(e)) if e.code == 409 && tries > 1 => {
                    return self.builds().get(name).await.expect("get ImageBuild");
                }
                Err(kube::Error::Service(e)) if tries < 3 => {
                    eprintln!("create ImageBuild {name}: {e}; sending it again");
                }
                Err(e) => panic!("create ImageBuild: {e:?}"),
            }
        }
    }

    /// Waits until a build's `status.phase` is `phase` (its Debug name, e.g. "Succeeded").
    pub async fn wait_build(&self, name: &str, phase: &str, timeout: Duration) -> ImageBuild {
        let api = self.builds();
        self.wait_for(&format!("ImageBuild {name} to be {phase}"), timeout, || {
            let api = api.clone();
            async move {
                let ib = api.get_opt(name).await.ok()??;
                let p = ib.status.as_ref()?.phase.as_ref()?;
                (format!("{p:?}") == phase).then_some(ib)
            }
        })
        .await
    }

    /// The host dir of a PVC's volume, once bound.
    pub async fn pv_dir(&self, claim: &str) -> Option<PathBuf> {
        let pvc = self.claims().get_opt(claim).await.ok()??;
        let pv = pvc.spec?.volume_name?;
        let pv = Api::<PersistentVolume>::all(self.client.clone())
            .get_opt(&pv)
            .await
            .ok()??;
        pv.spec?.local.map(|l| PathBuf::from(l.path))
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.kill_controller();
        for t in self.tasks.iter().chain(self.kubelets.values()) {
            t.abort();
        }
        self.procs.kill(None);
        if std::thread::panicking() {
            eprintln!(
                "--- controller log (tail) ---\n{}\n--- runs ---\n{}",
                tail(&self.controller_log(), 200),
                self.runs.describe(self.started)
            );
        }
        if std::env::var_os("HEARTH_E2E_KEEP").is_some() {
            let kept = std::mem::replace(&mut self.root, tempfile::tempdir().expect("tempdir"));
            eprintln!("cluster root kept at {}", kept.keep().display());
        }
    }
}

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A valid ImageBuild spec for `key`, mode ReadWrite, with extra build args.
pub fn build_spec(key: &str, build_args: serde_json::Value) -> ImageBuildSpec {
    serde_json::from_value(json!({
        "source": {"git": {"url": "https://github.com/acme/shop.git", "revision": "main"}},
        "output": {"image": "registry.example/acme/shop:main"},
        "buildArgs": build_args,
        "cache": {"key": key, "mode": "ReadWrite"}
    }))
    .expect("ImageBuild spec")
}

/// `hearth controller` as users run it: a kubeconfig, the chart's config file, the admin
/// server on `admin_addr`, text logs to `log`, nothing else from this environment.
pub fn controller_command(
    home: &Path,
    kubeconfig: &Path,
    config_file: &Path,
    admin_addr: &str,
    rust_log: &str,
    log: std::fs::File,
) -> Command {
    std::fs::create_dir_all(home).expect("controller home");
    let mut command = Command::new(hearth_bin());
    command
        .args(["controller", "--config"])
        .arg(config_file)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("KUBECONFIG", kubeconfig)
        .env("HEARTH_ADMIN_ADDR", admin_addr)
        .env("POD_NAMESPACE", OPERATOR_NS)
        .env("POD_NAME", "hearth-controller-0")
        .env("HEARTH_LOG_FORMAT", "text")
        .env("RUST_LOG", rust_log)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    // Allocator tuning passes through, so a benchmark can compare it.
    if let Ok(arenas) = std::env::var("MALLOC_ARENA_MAX") {
        command.env("MALLOC_ARENA_MAX", arenas);
    }
    command
}

/// The HTTP status of a GET on a plain-HTTP server, or None when it does not answer.
pub async fn http_status(addr: &str, path: &str) -> Option<u16> {
    http_get(addr, path).await.map(|(status, _)| status)
}

/// The status and body of a GET on a plain-HTTP server, or None when it does not answer.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let addr = addr.to_string();
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        let status = buf.split_whitespace().nth(1)?.parse().ok()?;
        let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((status, body))
    })
    .await
    .ok()?
}

/// Whether a path exists and holds any file.
pub fn has_files(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}
