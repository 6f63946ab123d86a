//! `hearth controller`: wires the reconcilers to the cluster. Reflectors feed the planner's
//! view; the admin server starts unready; nothing is written before the Lease is held; on
//! SIGTERM the controller drains and hands the Lease over.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tracing::{error, info, warn};

use super::admin::{self, AdminState};
use super::builders::labels;
use super::config::OperatorConfig;
use super::context::{Context, Stores};
use super::metrics::Metrics;
use super::slim::{self, StoredBuild};
use super::{build_cache, custom_run, gauges, image_build, retention_sweep};
use crate::api::{BuildCache, ImageBuild};

/// Most reconciles of one controller in flight at once. Unbounded, a restart ran every
/// object's reconcile at once (50,000 builds, 5,000 caches), each holding its copies of the
/// object and, for a BuildCache, of the planner's view: about 1 GiB at the peak, which the
/// allocator then kept.
const RECONCILE_CONCURRENCY: u16 = 16;

/// Every controller's runtime settings.
fn bounded() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY)
}

/// A controller of `K` as `Controller::new` makes it, whose store keeps each object without
/// what no reconciler reads ([`slim::metadata`]).
fn slim_controller<K>(api: Api<K>, config: watcher::Config) -> Controller<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let objects = reflector::reflector(writer, watcher(api, config).modify(slim::metadata::<K>))
        .applied_objects();
    Controller::for_stream(objects, store)
}

/// Name of the leader-election Lease.
pub const LEASE_NAME: &str = "hearth-controller";

/// Flags of `hearth controller`.
#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {
    /// Operator config file (YAML); built-in defaults when absent.
    #[arg(long, env = "HEARTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the admin server (`/healthz`, `/readyz`, `/metrics`).
    #[arg(long, env = "HEARTH_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,
    /// Namespace of the leader-election Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "hearth-system")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Log format: `json` or `text`.
    #[arg(long, env = "HEARTH_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    pub log_format: String,
}

/// Runs the controller until SIGTERM/SIGINT.
pub async fn run(args: ControllerArgs) -> anyhow::Result<()> {
    init_tracing(&args.log_format);
    let config = match &args.config {
        Some(path) => OperatorConfig::load(&path.to_string_lossy())?,
        None => OperatorConfig::default(),
    };
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("hearth-{}", std::process::id()));
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let metrics = Arc::new(Metrics::default());
    metrics.zero_known_series();
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    let admin_state = AdminState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let mut admin_stop = stop_rx.clone();
    let listener = admin::bind(args.admin_addr).await?;
    let admin = tokio::spawn(admin::serve(listener, admin_state, async move {
        let _ = admin_stop.wait_for(|s| *s).await;
    }));

    // Reflectors start at once (reads only), so a follower is warm when it takes over.
    // Namespaced objects are read per watched namespace when namespaces are listed: the
    // chart then grants Roles in those namespaces only, not cluster-wide reads.
    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let hearth_only =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let (nodes, f) = reflect(
        Api::all(client.clone()),
        watcher::Config::default(),
        slim::node,
    );
    tokio::spawn(f);
    let (volumes, f) = reflect::<PersistentVolume>(
        Api::all(client.clone()),
        watcher::Config::default(),
        slim::metadata,
    );
    tokio::spawn(f);
    let mut stores = Stores {
        nodes,
        volumes,
        claims: vec![],
        pods: vec![],
        caches: vec![],
        builds: vec![],
    };
    for scope in &scopes {
        let (claims, f) = reflect::<PersistentVolumeClaim>(
            api_in(&client, scope),
            hearth_only.clone(),
            slim::metadata,
        );
        tokio::spawn(f);
        let (pods, f) = reflect::<Pod>(api_in(&client, scope), hearth_only.clone(), slim::metadata);
        tokio::spawn(f);
        let (caches, f) = reflect::<BuildCache>(
            api_in(&client, scope),
            watcher::Config::default(),
            slim::metadata,
        );
        tokio::spawn(f);
        stores.claims.push(claims);
        stores.pods.push(pods);
        stores.caches.push(caches);
    }

    let lease = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
        .with_namespace(&args.lease_namespace)
        .with_identity(&identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .context("setting up leader election")?;
    let (mut leader, lease_task) = lease.watch().await;

    for store in [
        stores.nodes.wait_until_ready().await.is_ok(),
        stores.volumes.wait_until_ready().await.is_ok(),
    ] {
        if !store {
            anyhow::bail!("a reflector stopped before its cache synced");
        }
    }
    for s in &stores.claims {
        let _ = s.wait_until_ready().await;
    }
    for s in &stores.pods {
        let _ = s.wait_until_ready().await;
    }
    for s in &stores.caches {
        let _ = s.wait_until_ready().await;
    }
    // Caches synced and the lease is being followed: ready to take over.
    ready.store(true, Ordering::Relaxed);
    info!(%identity, "caches synced; waiting for the lease");

    let mut shutdown = Box::pin(shutdown_signal());
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                info!("shutting down before taking the lease");
                let _ = stop_tx.send(true);
                drop(leader);
                let _ = lease_task.await;
                let _ = admin.await;
                return Ok(());
            }
            changed = leader.changed() => {
                changed.context("leader election stopped")?;
                if *leader.borrow_and_update() { break; }
            }
        }
    }
    metrics.leader.set(1);
    info!(%identity, "leading");

    // The ImageBuild controllers come first: their stores are the builds' reflector that
    // BuildCache bookkeeping reads (one copy of every build in memory, not two).
    // Finished builds are kept compact (`StoredBuild`): most builds of a busy cluster are.
    let build_controllers: Vec<Controller<StoredBuild>> = scopes
        .iter()
        .map(|scope| {
            slim_controller(
                api_in::<StoredBuild>(&client, scope),
                watcher::Config::default().any_semantic(),
            )
            .with_config(bounded())
            .owns(api_in::<Pod>(&client, scope), hearth_only.clone())
            // Its builder pod and save Job; a multi-platform build's index Job.
            .owns(api_in::<Job>(&client, scope), hearth_only.clone())
            // A multi-platform build's children, one per platform: the parent follows them.
            .owns(
                api_in::<ImageBuild>(&client, scope),
                watcher::Config::default().labels(labels::PARENT),
            )
        })
        .collect();
    stores.builds = build_controllers.iter().map(|c| c.store()).collect();
    let builds_synced = stores.builds.clone();
    let ctx = Arc::new(Context::new(
        client.clone(),
        config.clone(),
        stores,
        metrics.clone(),
        &identity,
    ));
    let gauges_ctx = ctx.clone();
    let gauges_stop = stop_rx.clone();
    tokio::spawn(async move { gauges::every_interval(&gauges_ctx, gauges_stop).await });
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    // Retention deletes builds: only while leading, and not once the drain began.
    tokio::spawn(retention_sweep::run(ctx.clone(), drain_rx.clone()));
    tokio::spawn(async move {
        tokio::select! {
            _ = &mut shutdown => info!("SIGTERM: draining reconciles"),
            _ = async { loop { if leader.changed().await.is_err() || !*leader.borrow() { break; } } } => {
                warn!("lost the lease: stopping so another replica takes over");
            }
        }
        let _ = drain_tx.send(true);
        // Dropping the channel makes the lease task release the Lease.
        drop(leader);
    });
    let controllers = build_controllers.into_iter().map(|controller| {
        let mut drain = drain_rx.clone();
        controller
            .graceful_shutdown_on(async move {
                let _ = drain.wait_for(|d| *d).await;
            })
            .run(
                |build, ctx| {
                    timed(
                        image_build::CONTROLLER,
                        image_build::reconcile_stored,
                        build,
                        ctx,
                    )
                },
                image_build::error_policy,
                ctx.clone(),
            )
            .for_each(|result| async move {
                if let Err(e) = result {
                    warn!(error = %e, "reconcile failed");
                }
            })
    });
    let cache_controllers = scopes.iter().map(|scope| {
        let mut drain = drain_rx.clone();
        let builds = builds_synced.clone();
        let controller = slim_controller(
            api_in::<BuildCache>(&client, scope),
            watcher::Config::default(),
        )
        .with_config(bounded())
        .owns(
            api_in::<PersistentVolumeClaim>(&client, scope),
            hearth_only.clone(),
        )
        // Its maintenance Jobs (save, gc, forget, pre-warm): a finished one is acted on at
        // once instead of at the next follow-up poll.
        .owns(api_in::<Job>(&client, scope), hearth_only.clone())
        .graceful_shutdown_on(async move {
            let _ = drain.wait_for(|d| *d).await;
        })
        .run(
            |cache, ctx| timed(build_cache::CONTROLLER, build_cache::reconcile, cache, ctx),
            build_cache::error_policy,
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "reconcile failed");
            }
        });
        // Bookkeeping releases the claims of builds it does not find: it must not look
        // before the builds' stores hold every build.
        async move {
            for store in &builds {
                if store.wait_until_ready().await.is_err() {
                    return;
                }
            }
            controller.await
        }
    });
    // The Tekton custom task, only when enabled: CustomRuns exist only where Tekton is
    // installed, and the chart grants access to them only then.
    let tekton_scopes = if config.tekton.enabled {
        &scopes[..]
    } else {
        &[]
    };
    let run_controllers = tekton_scopes.iter().map(|scope| {
        let mut drain = drain_rx.clone();
        Controller::new(
            api_in::<custom_run::CustomRun>(&client, scope),
            watcher::Config::default(),
        )
        .with_config(bounded())
        .owns(
            api_in::<ImageBuild>(&client, scope),
            watcher::Config::default().labels(custom_run::CUSTOM_RUN_LABEL),
        )
        .graceful_shutdown_on(async move {
            let _ = drain.wait_for(|d| *d).await;
        })
        .run(
            |run, ctx| timed(custom_run::CONTROLLER, custom_run::reconcile, run, ctx),
            custom_run::error_policy,
            ctx.clone(),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "custom run reconcile failed");
            }
        })
    });
    // Retention deletes builds: only while leading, and not once the drain began. Polled in
    // this task with the controllers, not spawned: a kube `Store` wakes only the last task of
    // several awaiting `wait_until_ready` (its oneshot keeps one waker), and the controllers'
    // runners and the caches' bookkeeping above await the builds' stores from this task.
    let retention = retention_sweep::run(ctx.clone(), drain_rx.clone());
    let reconcilers = futures::future::join4(
        futures::future::join_all(controllers),
        futures::future::join_all(cache_controllers),
        futures::future::join_all(run_controllers),
        retention,
    );
    let mut drained = drain_rx.clone();
    tokio::select! {
        _ = reconcilers => info!("reconciles drained"),
        // Every step is recorded in status before the next, so stopping mid-reconcile loses
        // nothing: after a bounded wait, go, rather than be killed at the grace period's end.
        // (kube-runtime's runner waits for its store to be ready; a drain that stops the watch
        // before the first list completes leaves it waiting for ever.)
        _ = async {
            let _ = drained.wait_for(|d| *d).await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => warn!(timeout = ?DRAIN_TIMEOUT, "reconciles still running after the drain began; stopping anyway"),
    }
    metrics.leader.set(0);
    match lease_task.await {
        Ok(Ok(_)) => info!("lease released"),
        Ok(Err(e)) => error!(error = %e, "releasing the lease"),
        Err(e) => error!(error = %e, "lease task"),
    }
    let _ = stop_tx.send(true);
    let _ = admin.await;
    Ok(())
}

/// One reconcile, timed into `hearth_reconcile_duration_seconds{controller}`.
async fn timed<K, F, Fut, T>(
    controller: &'static str,
    reconcile: F,
    obj: Arc<K>,
    ctx: Arc<Context>,
) -> T
where
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let metrics = ctx.metrics.clone();
    metrics.timed(controller, reconcile(obj, ctx)).await
}

/// An API over one namespace, or all of them.
fn api_in<K>(client: &Client, scope: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    slim: fn(&mut K),
) -> (Store<K>, impl std::future::Future<Output = ()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).modify(slim).default_backoff())
        .applied_objects();
    (store, async move {
        stream.for_each(|_| futures::future::ready(())).await;
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Longest wait for in-flight reconciles after SIGTERM or a lost lease.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    // Colour only on a terminal: pod logs are files, and escape codes garble them.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
