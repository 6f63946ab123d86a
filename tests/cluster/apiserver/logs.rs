//! `pods/<name>/log`: the text a test set for the pod (by default one line naming it). With
//! `follow=true` the body stays open and carries what is appended, until the pod has
//! finished (Succeeded or Failed) or is gone, as a kubelet ends it when the container exits.
//! A log is set for one container, or for the pod (every container without its own).

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use serde_json::Value;

use super::store::State;
use super::Shared;

/// The log text of a pod's container so far.
pub fn text(state: &State, ns: &str, name: &str, container: &str) -> String {
    let key = |c: &str| (ns.to_string(), name.to_string(), c.to_string());
    state
        .pod_logs
        .get(&key(container))
        .or_else(|| state.pod_logs.get(&key("")))
        .cloned()
        .unwrap_or_else(|| format!("log of pod {ns}/{name}\n"))
}

fn finished(state: &mut State, ns: &str, name: &str) -> bool {
    let Some(rt) = state.registry.find("", "v1", "pods").cloned() else {
        return true;
    };
    match state.get(&rt, Some(ns), name) {
        Ok(pod) => matches!(
            pod.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        ),
        Err(_) => true,
    }
}

/// The followed log: what is there now, then each addition, until the pod is done.
pub fn follow(
    shared: Arc<Shared>,
    ns: String,
    name: String,
    container: String,
) -> impl Stream<Item = Bytes> + Send + 'static {
    let changes = shared.changes.subscribe();
    futures::stream::unfold(
        (shared, changes, 0usize, false),
        move |(shared, mut changes, sent, done)| {
            let (ns, name, container) = (ns.clone(), name.clone(), container.clone());
            async move {
                if done {
                    return None;
                }
                loop {
                    let (chunk, over) = {
                        let mut state = shared.state.lock().expect("state");
                        let text = text(&state, &ns, &name, &container);
                        let over = finished(&mut state, &ns, &name);
                        (text.get(sent..).unwrap_or("").to_string(), over)
                    };
                    if !chunk.is_empty() || over {
                        let sent = sent + chunk.len();
                        return Some((Bytes::from(chunk), (shared, changes, sent, over)));
                    }
                    if changes.changed().await.is_err() {
                        return None;
                    }
                }
            }
        },
    )
}
