//! The loop that talks to the API: create the ImageBuild, follow its status, upload the
//! context when the receiver runs, follow the builder's log, cancel on a signal or past the
//! deadline. The builder's log and the upload sit behind [`LogSource`] and [`Uploader`], so
//! tests substitute them (the fake API has no `pods/log` or `pods/exec`).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{BoxStream, FuturesUnordered, SelectAll};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};

use super::follow::{exit_for, phase, Exit, Tracker};
use super::ui::Ui;
use crate::api::keys::cache_name_for_key;
use crate::api::{BuildCache, ImageBuild, Phase};
use crate::contract::{self, RECEIVER_CONTAINER};
use crate::upload::UploadError;

/// Lines of the builder's log kept for a failure's summary.
pub const TAIL_LINES: usize = 20;
/// The builder container whose log is followed.
pub const BUILDER_CONTAINER: &str = "buildkit";

/// The builder's log, line by line.
pub trait LogSource: Send + Sync {
    /// Lines of `container` in `pod`; with `follow`, until the container exits.
    fn lines(
        &self,
        pod: &str,
        container: &str,
        follow: bool,
    ) -> BoxStream<'static, std::io::Result<String>>;
}

/// A packed context waiting to be sent.
#[derive(Clone, Debug)]
pub struct PendingUpload {
    /// The tar on local disk.
    pub tar: PathBuf,
    /// Its size.
    pub size: u64,
    /// Its sha256.
    pub sha256: String,
}

/// Sends a packed context to the receiver in a pod; answers the entries unpacked.
pub trait Uploader: Send + Sync {
    /// Streams `upload` into the receiver container of `pod`, adding sent bytes to `sent`.
    fn upload(
        &self,
        pod: &str,
        upload: PendingUpload,
        sent: Arc<AtomicU64>,
    ) -> BoxFuture<'static, Result<u64, UploadError>>;
}

/// What to do while following.
#[derive(Clone, Debug, Default)]
pub struct FollowOptions {
    /// A context to upload once the receiver runs.
    pub upload: Option<PendingUpload>,
    /// Follow the builder's log.
    pub logs: bool,
    /// Stop once the upload is done (`--no-wait` with a DIR).
    pub stop_after_upload: bool,
    /// Give up after this long.
    pub deadline: Option<Duration>,
    /// Cancel the build when giving up at the deadline (`hearth build`, not `hearth wait`).
    pub cancel_at_deadline: bool,
    /// A signal cancels the build (`hearth build`); a second one stops waiting at once.
    pub cancel_on_signal: bool,
}

/// How following ended.
#[derive(Debug)]
pub struct Followed {
    /// The exit code.
    pub exit: Exit,
    /// The build as last seen.
    pub build: ImageBuild,
    /// The end of the builder's log, as followed.
    pub log_tail: Vec<String>,
    /// Why it stopped before a terminal phase, if it did.
    pub note: Option<String>,
}

/// Errors talking to the API.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API refused or failed a request.
    #[error("{0}")]
    Kube(#[from] kube::Error),
    /// The upload failed.
    #[error("upload: {0}")]
    Upload(#[from] UploadError),
}

/// The API objects a session uses and the substitutable parts.
#[derive(Clone)]
pub struct Session {
    /// ImageBuilds of the namespace.
    pub builds: Api<ImageBuild>,
    /// Pods of the namespace.
    pub pods: Api<Pod>,
    /// BuildCaches of the namespace (only to show how many bytes a restore moves).
    pub caches: Api<BuildCache>,
    /// The builder's log.
    pub logs: Arc<dyn LogSource>,
    /// The context upload.
    pub uploader: Arc<dyn Uploader>,
    /// How often status is read.
    pub poll: Duration,
}

/// An upload under way: the build it serves, the pod it goes to, and how it ended.
type UploadDone = (String, String, Result<u64, UploadError>);

/// A build whose builder pod the session serves (the context, the log): the build followed,
/// or each platform's child of a parent built one platform per architecture.
#[derive(Default)]
struct Served {
    /// Before each of its lines: empty for the build itself, `[linux/arm64] ` for a child.
    prefix: String,
    /// Its phases and the size of its restore, for a child (the build followed has its own).
    tracker: Tracker,
    restore_bytes: Option<u64>,
    /// The pod whose log is followed.
    logs_for: Option<String>,
    /// The pod the context is being sent to, and the one that has it.
    uploading_to: Option<String>,
    uploaded_to: Option<String>,
    /// Bytes sent to `uploading_to`.
    sent: Arc<AtomicU64>,
}

/// The builds whose pods serve build `ib`, each with the prefix of its lines: the build itself,
/// or, for a parent built one platform per architecture, each platform's child as its status
/// lists them (the controller names them; none before it has).
fn served_builds(ib: &ImageBuild) -> Vec<(String, String)> {
    if !ib.spec.fans_out() {
        return vec![(ib.metadata.name.clone().unwrap_or_default(), String::new())];
    }
    ib.status
        .iter()
        .flat_map(|s| &s.platforms)
        .map(|p| (p.build.clone(), format!("[{}] ", p.platform)))
        .collect()
}

/// The builder pod of the build's current attempt.
pub fn builder_pod_name(ib: &ImageBuild) -> String {
    let attempt = ib.status.as_ref().and_then(|s| s.attempts).unwrap_or(1);
    contract::builder_pod_name(ib.metadata.name.as_deref().unwrap_or(""), attempt)
}

fn container_running(pod: &Pod, name: &str, init: bool) -> bool {
    let status = pod.status.as_ref();
    let list = if init {
        status.and_then(|s| s.init_container_statuses.as_ref())
    } else {
        status.and_then(|s| s.container_statuses.as_ref())
    };
    list.into_iter().flatten().any(|c| {
        c.name == name
            && c.state
                .as_ref()
                .is_some_and(|s| s.running.is_some() || (!init && s.terminated.is_some()))
    })
}

impl Session {
    /// Sets `spec.cancel: true` (a merge patch: nothing else is touched).
    pub async fn cancel(&self, name: &str) -> Result<(), kube::Error> {
        let patch = serde_json::json!({"spec": {"cancel": true}});
        self.builds
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    async fn restore_bytes(&self, ib: &ImageBuild) -> Option<u64> {
        let p = ib.status.as_ref()?.placement.as_ref()?;
        let from = p.restored_from.as_ref()?;
        // The snapshot belongs to the restore key's cache, which may not be the build's own.
        let names = [p.cache.clone(), Some(cache_name_for_key(&from.key))];
        for name in names.into_iter().flatten() {
            let Ok(cache) = self.caches.get(&name).await else {
                continue;
            };
            let found = cache.status.and_then(|st| {
                st.snapshots
                    .iter()
                    .find(|s| s.id == from.snapshot)
                    .map(|s| s.bytes.max(0) as u64)
            });
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// Follows build `name` until it ends, the deadline passes, a signal stops it, or (with
    /// `stop_after_upload`) the context is in.
    pub async fn follow(
        &self,
        name: &str,
        opts: FollowOptions,
        ui: &mut dyn Ui,
        mut signals: BoxStream<'static, ()>,
    ) -> Result<Followed, ClientError> {
        let mut tracker = Tracker::default();
        let mut tail: VecDeque<String> = VecDeque::new();
        let mut logs: SelectAll<BoxStream<'static, std::io::Result<String>>> = SelectAll::new();
        let mut uploads: FuturesUnordered<BoxFuture<'static, UploadDone>> = FuturesUnordered::new();
        let mut served: BTreeMap<String, Served> = BTreeMap::new();
        let upload = opts.upload.clone();
        let mut cancelling = false;
        let mut restore_bytes = None;
        let mut last: Option<ImageBuild> = None;
        let deadline = async {
            match opts.deadline {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let done =
            |exit, build: ImageBuild, tail: &VecDeque<String>, note: Option<String>| Followed {
                exit,
                build,
                log_tail: tail.iter().cloned().collect(),
                note,
            };

        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let ib = self.builds.get(name).await?;
                    if phase(&ib) == Phase::Restoring && restore_bytes.is_none() {
                        restore_bytes = self.restore_bytes(&ib).await;
                    }
                    for line in tracker.observe(&ib, restore_bytes) {
                        ui.line(&line);
                    }
                    if let Some(exit) = exit_for(&ib) {
                        // The log may still hold the last lines: take what is ready.
                        while let Some(Some(Ok(line))) = logs.next().now_or_never() {
                            ui.log(&line);
                            push_tail(&mut tail, line);
                        }
                        return Ok(done(exit, ib, &tail, None));
                    }
                    for (build, prefix) in served_builds(&ib) {
                        let state = served.entry(build.clone()).or_insert_with(|| Served {
                            prefix,
                            ..Served::default()
                        });
                        let b = if build == name {
                            ib.clone()
                        } else {
                            let Some(b) = self.builds.get_opt(&build).await? else {
                                continue;
                            };
                            if phase(&b) == Phase::Restoring && state.restore_bytes.is_none() {
                                state.restore_bytes = self.restore_bytes(&b).await;
                            }
                            for line in state.tracker.observe(&b, state.restore_bytes) {
                                ui.line(&format!("{}{line}", state.prefix));
                            }
                            b
                        };
                        self.serve(&b, state, &upload, opts.logs, &mut logs, &mut uploads, ui)
                            .await?;
                    }
                    if let Some(total) = upload.as_ref().map(|u| u.size) {
                        let active: Vec<&Served> =
                            served.values().filter(|s| s.uploading_to.is_some()).collect();
                        if !active.is_empty() {
                            let sent = active.iter().map(|s| s.sent.load(Ordering::Relaxed)).sum();
                            ui.upload(sent, total * active.len() as u64);
                        }
                    }
                    last = Some(ib);
                }
                line = logs.next(), if !logs.is_empty() => {
                    // A log that ended (the container exited) or broke leaves the set: status
                    // tells the rest.
                    if let Some(Ok(line)) = line {
                        ui.log(&line);
                        push_tail(&mut tail, line);
                    }
                }
                Some((build, pod, result)) = uploads.next(), if !uploads.is_empty() => {
                    let entries = result.map_err(ClientError::Upload)?;
                    let state = served.get_mut(&build).expect("an upload serves a known build");
                    state.uploading_to = None;
                    state.uploaded_to = Some(pod);
                    ui.line(&format!(
                        "{}uploaded {} entries ({}), verified by the receiver",
                        state.prefix,
                        entries,
                        super::follow::human_bytes(upload.as_ref().map(|u| u.size).unwrap_or(0))
                    ));
                    if opts.stop_after_upload {
                        // Every build the parent lists has its context (a child not yet
                        // listed still needs one).
                        let ib = self.builds.get(name).await?;
                        let all_in = served_builds(&ib).iter().all(|(b, _)| {
                            served.get(b).is_some_and(|s| s.uploaded_to.is_some())
                        });
                        if all_in {
                            return Ok(done(Exit::Succeeded, ib, &tail, Some("uploaded; not waiting (--no-wait)".into())));
                        }
                    }
                }
                signal = signals.next(), if opts.cancel_on_signal => {
                    if signal.is_none() {
                        continue;
                    }
                    if cancelling {
                        let ib = match last.take() { Some(ib) => ib, None => self.builds.get(name).await? };
                        return Ok(done(Exit::TimedOutOrCancelled, ib, &tail, Some("stopped waiting; the build is being cancelled".into())));
                    }
                    cancelling = true;
                    ui.line("cancelling: spec.cancel set (interrupt again to stop waiting)");
                    self.cancel(name).await?;
                }
                () = &mut deadline => {
                    let d = opts.deadline.unwrap_or_default();
                    if opts.cancel_at_deadline {
                        self.cancel(name).await?;
                    }
                    let ib = self.builds.get(name).await?;
                    let note = if opts.cancel_at_deadline {
                        format!("timed out after {}s; the build was cancelled", d.as_secs())
                    } else {
                        format!("timed out after {}s; the build goes on", d.as_secs())
                    };
                    ui.line(&note);
                    return Ok(done(Exit::TimedOutOrCancelled, ib, &tail, Some(note)));
                }
            }
        }
    }

    /// Serves build `b`'s builder pod once it is up: sends the context when its receiver runs
    /// (per pod: a build retried on another node has a new pod that needs it again), then
    /// follows its log, its lines prefixed as the build's.
    #[allow(clippy::too_many_arguments)]
    async fn serve(
        &self,
        b: &ImageBuild,
        state: &mut Served,
        upload: &Option<PendingUpload>,
        follow_logs: bool,
        logs: &mut SelectAll<BoxStream<'static, std::io::Result<String>>>,
        uploads: &mut FuturesUnordered<BoxFuture<'static, UploadDone>>,
        ui: &mut dyn Ui,
    ) -> Result<(), ClientError> {
        let builder_up = matches!(phase(b), Phase::Building | Phase::Snapshotting);
        let pod_name = builder_pod_name(b);
        let needs_upload = upload.is_some()
            && state.uploading_to.is_none()
            && state.uploaded_to.as_deref() != Some(pod_name.as_str());
        let needs_logs = follow_logs && state.logs_for.as_deref() != Some(pod_name.as_str());
        if !builder_up || !(needs_upload || needs_logs) {
            return Ok(());
        }
        let Some(pod) = self.pods.get_opt(&pod_name).await? else {
            return Ok(());
        };
        if let (Some(u), true) = (upload, needs_upload) {
            if container_running(&pod, RECEIVER_CONTAINER, true) {
                ui.line(&format!(
                    "{}uploading context ({}) to {pod_name}",
                    state.prefix,
                    super::follow::human_bytes(u.size)
                ));
                state.sent = Arc::new(AtomicU64::new(0));
                let sending = self
                    .uploader
                    .upload(&pod_name, u.clone(), state.sent.clone());
                let task = tokio::spawn(sending);
                let (build, pod) = (
                    b.metadata.name.clone().unwrap_or_default(),
                    pod_name.clone(),
                );
                uploads.push(Box::pin(async move {
                    let result = task
                        .await
                        .unwrap_or_else(|e| Err(UploadError::Remote(format!("upload task: {e}"))));
                    (build, pod, result)
                }));
                state.uploading_to = Some(pod_name.clone());
            }
        }
        let context_in =
            upload.is_none() || state.uploaded_to.as_deref() == Some(pod_name.as_str());
        if needs_logs && context_in && container_running(&pod, BUILDER_CONTAINER, false) {
            let prefix = state.prefix.clone();
            let lines = self.logs.lines(&pod_name, BUILDER_CONTAINER, true);
            logs.push(if prefix.is_empty() {
                lines
            } else {
                lines
                    .map(move |l| l.map(|l| format!("{prefix}{l}")))
                    .boxed()
            });
            state.logs_for = Some(pod_name);
        }
        Ok(())
    }
}

fn push_tail(tail: &mut VecDeque<String>, line: String) {
    if tail.len() == TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line);
}
