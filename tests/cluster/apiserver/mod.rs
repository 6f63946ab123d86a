//! A stateful, in-memory Kubernetes API server for process-level tests, over HTTPS on
//! 127.0.0.1 with a certificate made at start and a bearer token. It serves the built-in
//! kinds a Hearth cluster uses and Hearth's CRDs (and any CRD a test registers), with the
//! semantics that matter to a controller: Status errors, one global resourceVersion,
//! optimistic concurrency, status subresources, generation, finalizers, graceful pod
//! deletion, PVC/PV protection, watches with bookmarks and 410s (and, on demand, history
//! expired mid-run or every connection dropped), and server-side apply
//! conflicts. It runs nothing: scheduling, Jobs, garbage collection and kubelets are other
//! test components, clients of this server like any other.
//!
//! ```ignore
//! let server = ApiServer::start().await;
//! server.ensure_namespace("shop");                    // content needs its namespace
//! let client = server.client().await;                 // or server.kubeconfig(dir) for a process
//! assert_eq!(server.writes("imagebuilds"), 0);        // counters of requests by verb
//! let pods = server.snapshot("pods");                 // raw state, without HTTP
//! server.seed_object("imagebuilds", build_with_status)?; // content at rest, without HTTP
//! ```
//!
//! What a client of it must do as on a real cluster (each is refused otherwise):
//! - create content only in an existing namespace (`ensure_namespace`);
//! - place a pod with `POST pods/<name>/binding` (a pod's spec is fixed after create, but
//!   for images, deadlines and tolerations); change a pod's status through `pods/<name>/status`
//!   (status in a write to the pod itself is ignored), likewise every kind with a status;
//! - end a running pod's graceful deletion with a DELETE with `gracePeriodSeconds=0` (what
//!   the kubelet sends once the containers have stopped);
//! - remove `kubernetes.io/pvc-protection` / `pv-protection` for a claim or volume to go;
//! - send `fieldManager` with an apply patch; respect other managers' fields or `force`.
//!
//! Approximations (see each file's header): strategic merge by a table of merge keys;
//! field ownership at leaf granularity (lists atomic); core/v1 and events.k8s.io/v1 Events
//! are separate stores; no `pods/attach` or
//! port-forward; `limit`/`continue` paging serves each page from the current state (a real
//! server serves all pages from one snapshot); no `dryRun` (refused), no RBAC.

#![allow(dead_code)]

mod admission;
mod apply;
mod builtins;
mod exec;
mod http;
mod logs;
mod namespaces;
mod registry;
mod selectors;
mod status;
mod store;
mod strategic;
mod tls;
mod update;
mod watch;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub use exec::ExecRequest;
pub use registry::ResourceType;
use store::{Fault, State};

/// What every request handler shares.
pub struct Shared {
    state: Mutex<State>,
    /// The current resourceVersion, sent after every write (wakes the watches).
    changes: tokio::sync::watch::Sender<u64>,
    /// Bumped to close every open connection at once ([`ApiServer::drop_connections`]).
    drops: tokio::sync::watch::Sender<u64>,
    token: String,
    /// host:port
    address: String,
}

/// A running fake API server; dropping it stops it.
pub struct ApiServer {
    shared: Arc<Shared>,
    url: String,
    ca_pem: String,
    task: JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl ApiServer {
    /// Starts a server on a free port of 127.0.0.1 with Hearth's CRDs (`crds/hearth.dev.yaml`)
    /// registered.
    pub async fn start() -> ApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let (ca_pem, acceptor) = tls::make();
        let state = State::new();
        let (changes, _) = tokio::sync::watch::channel(state.rv);
        let token = format!("hearth-test-{:016x}", {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(&address)
        });
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            changes,
            drops: tokio::sync::watch::channel(0).0,
            token,
            address: address.clone(),
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let shared = serving.clone();
                let mut dropped = shared.drops.subscribe();
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(http::handle(shared, req).await) }
                    });
                    let serving = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .with_upgrades();
                    // Dropping the connection closes its socket mid-request or mid-stream.
                    tokio::select! {
                        _ = serving => {}
                        _ = dropped.changed() => {}
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        let server = ApiServer {
            shared,
            url: format!("https://{address}"),
            ca_pem,
            task,
            dir: tempfile::tempdir().expect("temporary directory"),
        };
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/hearth.dev.yaml");
        let yaml = std::fs::read_to_string(&crds).expect("crds/hearth.dev.yaml");
        server.register_crds_yaml(&yaml).expect("Hearth's CRDs");
        server.kubeconfig(server.dir.path());
        server
    }

    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The CA certificate (PEM) that signed the server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The bearer token the server accepts (anything else is 401).
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Writes `dir/kubeconfig`: this server, its CA, the token, namespace `default`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let b64 = base64::engine::general_purpose::STANDARD;
        let config = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "hearth-test",
            "clusters": [{"name": "hearth-test", "cluster": {
                "server": self.url, "certificate-authority-data": b64.encode(&self.ca_pem)}}],
            "users": [{"name": "hearth-test", "user": {"token": self.shared.token}}],
            "contexts": [{"name": "hearth-test", "context": {
                "cluster": "hearth-test", "user": "hearth-test", "namespace": "default"}}],
        });
        let path = dir.join("kubeconfig");
        std::fs::write(&path, serde_yaml::to_string(&config).expect("yaml")).expect("kubeconfig");
        path
    }

    /// A client made from the kubeconfig file, the way users' clients are.
    ///
    /// This test process links both rustls providers (kube's ring and, through the AWS SDK,
    /// aws-lc-rs), so kube's client would panic at its first connection exactly as the
    /// binary once did; the test client picks ring as the process default. The `hearth`
    /// process under test gets no such help: it must pick one itself.
    pub async fn client(&self) -> kube::Client {
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let path = self.dir.path().join("kubeconfig");
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("read kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("kube config");
        kube::Client::try_from(config).expect("kube client")
    }

    /// Stops serving (also done on drop); open watches end.
    pub fn shutdown(&self) {
        self.task.abort();
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().expect("state")
    }

    /// Finds a type by plural (`pods`, core first), `plural.group` (`jobs.batch`,
    /// `events.events.k8s.io`) or kind (`ImageBuild`).
    pub fn resource(&self, name: &str) -> Option<ResourceType> {
        let state = self.state();
        let types = state.registry.types();
        types
            .iter()
            .find(|t| t.qualified() == name)
            .or_else(|| {
                types
                    .iter()
                    .filter(|t| t.plural == name || t.kind == name)
                    .min_by_key(|t| !t.group.is_empty())
            })
            .cloned()
    }

    fn resource_or_panic(&self, name: &str) -> ResourceType {
        self.resource(name)
            .unwrap_or_else(|| panic!("the fake API server serves no resource {name:?}"))
    }

    /// Registers every CustomResourceDefinition of a (multi-document) YAML stream, as if
    /// applied: each is stored as a CRD object and its served versions are served.
    /// Returns how many CRDs were registered.
    pub fn register_crds_yaml(&self, yaml: &str) -> Result<usize, String> {
        let mut n = 0;
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let value: Value = serde::Deserialize::deserialize(doc).map_err(|e| e.to_string())?;
            if value.is_null() {
                continue;
            }
            self.register_crd(value)?;
            n += 1;
        }
        Ok(n)
    }

    /// Registers one CRD (JSON form, e.g. `serde_json::to_value(CustomRun::crd())`).
    pub fn register_crd(&self, crd: Value) -> Result<(), String> {
        let rt = self.resource_or_panic("customresourcedefinitions");
        let name = crd
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or("CRD without a name")?
            .to_string();
        let mut state = self.state();
        let _ = state.delete(&rt, None, &name, &Default::default());
        state.create(&rt, None, crd, None).map_err(|e| e.message)?;
        let rv = state.rv;
        drop(state);
        self.shared.changes.send_replace(rv);
        Ok(())
    }

    /// Creates an object without HTTP, as a create request would (defaults, admission,
    /// events); `resource` as for [`ApiServer::resource`]. For seeding nodes, namespaces,
    /// storage classes...
    pub fn create_object(&self, resource: &str, object: Value) -> Result<Value, String> {
        let rt = self.resource_or_panic(resource);
        let ns = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut state = self.state();
        let created = state
            .create(&rt, ns.as_deref(), object, Some("test"))
            .map_err(|e| e.message)?;
        let rv = state.rv;
        drop(state);
        self.shared.changes.send_replace(rv);
        Ok(created)
    }

    /// Creates an object without HTTP as [`ApiServer::create_object`] does, then, when it
    /// came with a `status`, writes that status as a `status` subresource PUT would (a create
    /// drops the status of kinds that have the subresource). For seeding many objects at rest
    /// quickly (the scale benchmark), instead of two HTTP calls each.
    pub fn seed_object(&self, resource: &str, object: Value) -> Result<Value, String> {
        let rt = self.resource_or_panic(resource);
        let status = object.get("status").cloned();
        let mut created = self.create_object(resource, object)?;
        // Built-in kinds keep the status a create sends; custom ones with the subresource drop it.
        let Some(status) = status.filter(|_| rt.custom && rt.status) else {
            return Ok(created);
        };
        let ns = created
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string);
        let name = created
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        created["status"] = status;
        let mut state = self.state();
        let updated = state
            .update(
                &rt,
                ns.as_deref(),
                &name,
                Some("status"),
                created,
                Some("test"),
            )
            .map_err(|e| e.message)?;
        let rv = state.rv;
        drop(state);
        self.shared.changes.send_replace(rv);
        Ok(updated)
    }

    /// Creates the namespace unless it exists (content needs one, as on a real server).
    pub fn ensure_namespace(&self, name: &str) {
        if self.object("namespaces", "", name).is_none() {
            let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            self.create_object("namespaces", ns).expect("namespace");
        }
    }

    /// Every object of a resource, as stored (sorted by namespace, name).
    pub fn snapshot(&self, resource: &str) -> Vec<Value> {
        let rt = self.resource_or_panic(resource);
        let mut state = self.state();
        state.collection(&rt).objects.values().cloned().collect()
    }

    /// One object as stored (`namespace` "" for cluster-scoped).
    pub fn object(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let rt = self.resource_or_panic(resource);
        let ns = (!namespace.is_empty()).then_some(namespace);
        self.state().get(&rt, ns, name).ok()
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state().rv
    }

    /// Requests so far, by (resource, verb). A resource is named `plural[.group][/sub]`, e.g.
    /// `pods`, `pods/status`, `jobs.batch`, `imagebuilds.hearth.dev/status`; verbs are
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub fn request_counts(&self) -> BTreeMap<(String, String), u64> {
        self.state().requests.clone()
    }

    fn matches(key: &str, resource: &str) -> bool {
        let main = key.split('/').next().unwrap_or(key);
        main == resource || main.split('.').next() == Some(resource) || key == resource
    }

    /// Requests of one verb to a resource (plural or `plural.group`, subresources included).
    pub fn requests(&self, resource: &str, verb: &str) -> u64 {
        self.request_counts()
            .iter()
            .filter(|((r, v), _)| v == verb && Self::matches(r, resource))
            .map(|(_, n)| n)
            .sum()
    }

    /// Write requests (create, update, patch, delete, deletecollection) to a resource,
    /// subresources included; `"*"` counts every resource.
    pub fn writes(&self, resource: &str) -> u64 {
        self.request_counts()
            .iter()
            .filter(|((r, v), _)| {
                matches!(
                    v.as_str(),
                    "create" | "update" | "patch" | "delete" | "deletecollection"
                ) && (resource == "*" || Self::matches(r, resource))
            })
            .map(|(_, n)| n)
            .sum()
    }

    pub fn reset_counters(&self) {
        self.state().requests.clear();
    }

    /// The next `n` writes to `resource` (its plural, any subresource) fail: 409 answers a
    /// stale-object Conflict, any other code an InternalError with that code.
    pub fn fail_next_writes(&self, resource: &str, n: usize, code: u16) {
        let plural = self.resource_or_panic(resource).qualified();
        let mut state = self.state();
        let queue = state.faults.entry(plural).or_default();
        queue.extend(std::iter::repeat_n(
            Fault {
                code,
                refusal: None,
            },
            n,
        ));
    }

    /// The next `n` writes to `resource` are refused with `code`, `reason` and `message`, as
    /// an admission plugin refuses them (a pod naming a ServiceAccount that does not exist:
    /// 403 Forbidden).
    pub fn refuse_next_writes(
        &self,
        resource: &str,
        n: usize,
        code: u16,
        reason: &str,
        message: &str,
    ) {
        let plural = self.resource_or_panic(resource).qualified();
        let mut state = self.state();
        let queue = state.faults.entry(plural).or_default();
        let refusal = Some((reason.to_string(), message.to_string()));
        queue.extend(std::iter::repeat_n(Fault { code, refusal }, n));
    }

    /// Delay added to every request (before it is handled).
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// How often watches that allow bookmarks get one (default 2 s).
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.state().bookmark_interval = interval;
    }

    /// What `pods/<name>/log` answers for that pod's containers without a log of their own
    /// (replacing what it had).
    pub fn set_pod_log(&self, namespace: &str, name: &str, text: &str) {
        self.set_container_log(namespace, name, "", text);
    }

    /// Adds to the log of a pod's containers without a log of their own.
    pub fn append_pod_log(&self, namespace: &str, name: &str, text: &str) {
        self.append_container_log(namespace, name, "", text);
    }

    /// What `pods/<name>/log?container=<container>` answers (replacing what it had).
    pub fn set_container_log(&self, namespace: &str, pod: &str, container: &str, text: &str) {
        let mut state = self.state();
        let key = (
            namespace.to_string(),
            pod.to_string(),
            container.to_string(),
        );
        state.pod_logs.insert(key, text.to_string());
        let rv = state.rv;
        drop(state);
        // Wakes the followers of the log.
        self.shared.changes.send_replace(rv);
    }

    /// Adds to a container's log (followers get it at once).
    pub fn append_container_log(&self, namespace: &str, pod: &str, container: &str, text: &str) {
        let mut state = self.state();
        let key = (
            namespace.to_string(),
            pod.to_string(),
            container.to_string(),
        );
        state.pod_logs.entry(key).or_default().push_str(text);
        let rv = state.rv;
        drop(state);
        self.shared.changes.send_replace(rv);
    }

    /// Who runs `pods/exec` commands: given the pod, container, command and stdin, it writes
    /// stdout and returns the exit code (what a test node agent does in the container).
    pub fn set_exec_handler<F>(&self, handler: F)
    where
        F: Fn(ExecRequest) -> futures::future::BoxFuture<'static, i32> + Send + Sync + 'static,
    {
        self.state().exec = Some(Arc::new(handler));
    }

    /// Forgets the event logs: a watch from any resourceVersion handed out so far gets 410
    /// Expired (as after an etcd compaction), so clients must list again. (The global
    /// resourceVersion moves on by one so a list made after this can be watched from.)
    pub fn compact(&self) {
        let mut state = self.state();
        state.rv += 1;
        state.compacted = state.rv;
        for col in state.collections.values_mut() {
            col.log.clear();
        }
    }

    /// Forgets the watch history mid-run, as a kube-apiserver whose watch cache restarted or
    /// whose etcd compacted: history is [`ApiServer::compact`]ed and every open watch ends
    /// (as the real server ends watchers it can no longer serve), so each resumes from its
    /// last resourceVersion and is answered a 410 Expired ERROR event, then must list again.
    pub fn expire_watch_history(&self) {
        self.compact();
        let mut state = self.state();
        state.watch_generation += 1;
        let rv = state.rv;
        drop(state);
        self.shared.changes.send_replace(rv);
    }

    /// Closes every open connection at once, watches and requests in flight alike (as a
    /// restarting API server or a load balancer dropping its backends does); clients see
    /// their connection reset and must connect again. A request being handled when its
    /// connection goes may or may not have been applied, as on a real server.
    pub fn drop_connections(&self) {
        self.shared.drops.send_modify(|n| *n += 1);
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
