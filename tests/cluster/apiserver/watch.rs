//! WATCH: a stream of JSON lines `{"type": ..., "object": ...}` read from a collection's
//! event log. It starts with synthetic ADDED events (resourceVersion absent or "0", or
//! `sendInitialEvents=true`, which ends them with the `k8s.io/initial-events-end` BOOKMARK),
//! or with every change after the given resourceVersion; a resourceVersion older than the
//! log answers a 410 Expired ERROR event. Selector transitions are translated as the real
//! server does (MODIFIED into the selector is ADDED, out of it DELETED). Periodic BOOKMARKs
//! when asked; the stream ends at `timeoutSeconds`, when the server stops, or when it ends
//! every open watch ([`super::ApiServer::expire_watch_history`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::registry::ResourceType;
use super::selectors::Selectors;
use super::store::{meta_str, ApiError, Event, EventType, State};
use super::Shared;

/// The watch request's parameters.
pub struct WatchParams {
    pub namespace: Option<String>,
    pub selectors: Selectors,
    pub resource_version: Option<String>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout: Duration,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("json");
    v.push(b'\n');
    Bytes::from(v)
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut obj = json!({
        "kind": rt.kind, "apiVersion": rt.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
    });
    if initial_end {
        obj["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line("BOOKMARK", &obj)
}

struct Watch {
    shared: Arc<Shared>,
    rt: ResourceType,
    params: WatchParams,
    changes: tokio::sync::watch::Receiver<u64>,
    /// Every event at or below this resourceVersion has been looked at.
    last: u64,
    /// `State::watch_generation` when the watch started: the stream ends once it moves.
    generation: u64,
    pending: VecDeque<Bytes>,
    deadline: Instant,
    next_bookmark: Instant,
    bookmark_interval: Duration,
    done: bool,
}

impl Watch {
    fn visible(&self, obj: &Value) -> bool {
        self.params
            .namespace
            .as_deref()
            .is_none_or(|ns| !self.rt.namespaced || meta_str(obj, "namespace") == Some(ns))
            && self.params.selectors.matches(obj)
    }

    /// The event as this watcher sees it, if at all.
    fn translate<'a>(&self, ev: &'a Event) -> Option<(EventType, &'a Value)> {
        let now = self.visible(&ev.object);
        let before = ev.prev.as_ref().is_some_and(|p| self.visible(p));
        match (ev.kind, before, now) {
            (EventType::Added, _, true) => Some((EventType::Added, &ev.object)),
            (EventType::Modified, true, true) => Some((EventType::Modified, &ev.object)),
            (EventType::Modified, false, true) => Some((EventType::Added, &ev.object)),
            (EventType::Modified, true, false) => Some((EventType::Deleted, &ev.object)),
            (EventType::Deleted, _, true) => Some((EventType::Deleted, &ev.object)),
            _ => None,
        }
    }

    /// Queues the events after `last`; ends the stream when the server ended open watches.
    fn poll_log(&mut self) {
        let state = self.shared.state.lock().expect("state");
        if state.watch_generation != self.generation {
            self.done = true;
            return;
        }
        if let Some(col) = state.collections.get(&self.rt.key()) {
            let start = col.log.partition_point(|e| e.rv <= self.last);
            for ev in &col.log[start..] {
                if let Some((kind, obj)) = self.translate(ev) {
                    self.pending.push_back(line(kind.as_str(), obj));
                }
            }
        }
        self.last = state.rv;
    }

    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some(b);
            }
            if self.done {
                return None;
            }
            self.poll_log();
            if !self.pending.is_empty() || self.done {
                continue;
            }
            tokio::select! {
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        self.done = true;
                    }
                }
                _ = tokio::time::sleep_until(self.deadline) => self.done = true,
                _ = tokio::time::sleep_until(self.next_bookmark), if self.params.bookmarks => {
                    self.next_bookmark = Instant::now() + self.bookmark_interval;
                    self.pending.push_back(bookmark(&self.rt, self.last, false));
                }
            }
        }
    }
}

/// Starts a watch: the initial events are taken now, under the lock, so nothing written
/// after this request is missed or seen twice.
pub fn start(
    shared: Arc<Shared>,
    state: &mut State,
    rt: ResourceType,
    params: WatchParams,
) -> Result<impl Stream<Item = Bytes> + Send + 'static, ApiError> {
    let mut pending = VecDeque::new();
    let rv = params
        .resource_version
        .as_deref()
        .filter(|rv| !rv.is_empty() && *rv != "0");
    let mut done = false;
    let last = match rv {
        Some(rv) if !params.send_initial_events => {
            let rv: u64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?;
            if rv < state.compacted {
                let status = ApiError::new(
                    410,
                    "Expired",
                    format!("too old resource version: {rv} ({})", state.compacted + 1),
                )
                .status();
                pending.push_back(line("ERROR", &status));
                done = true;
            }
            rv
        }
        _ => {
            let list = state.list(&rt, params.namespace.as_deref(), &params.selectors);
            for obj in list["items"].as_array().into_iter().flatten() {
                pending.push_back(line("ADDED", obj));
            }
            if params.send_initial_events {
                pending.push_back(bookmark(&rt, state.rv, true));
            }
            state.rv
        }
    };
    let now = Instant::now();
    let bookmark_interval = state.bookmark_interval;
    let watch = Watch {
        changes: shared.changes.subscribe(),
        shared,
        rt,
        deadline: now + params.timeout,
        next_bookmark: now + bookmark_interval,
        bookmark_interval,
        params,
        last,
        generation: state.watch_generation,
        pending,
        done,
    };
    Ok(futures::stream::unfold(watch, |mut w| async move {
        w.next().await.map(|b| (b, w))
    }))
}
