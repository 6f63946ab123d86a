//! Helpers the cluster's actors share: the poll interval, API error tests, read-modify-write
//! updates that retry on conflicts, label and node-affinity matching, and clocks.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeSelector, NodeSelectorRequirement};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PostParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How often every actor relists what it looks after.
pub const TICK: Duration = Duration::from_millis(50);

/// The current time as the API serializes it.
pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// Whether an API call failed with this HTTP status.
pub fn is_code(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == code)
}

/// Logs an actor's error unless it is a conflict or a vanished object (both normal: the
/// next tick sees the new state).
pub fn report(actor: &str, what: &str, err: &kube::Error) {
    if !is_code(err, 409) && !is_code(err, 404) {
        eprintln!("[cluster:{actor}] {what}: {err}");
    }
}

/// GET, change, PUT (the main resource), retrying on conflicts. `change` returns false to
/// skip the write. Returns the stored object, or None when it is gone or unchanged.
pub async fn update<K, F>(api: &Api<K>, name: &str, change: F) -> kube::Result<Option<K>>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    F: FnMut(&mut K) -> bool,
{
    read_change_write(api, name, change, false).await
}

/// As [`update`], through the status subresource.
pub async fn update_status<K, F>(api: &Api<K>, name: &str, change: F) -> kube::Result<Option<K>>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    F: FnMut(&mut K) -> bool,
{
    read_change_write(api, name, change, true).await
}

async fn read_change_write<K, F>(
    api: &Api<K>,
    name: &str,
    mut change: F,
    status: bool,
) -> kube::Result<Option<K>>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    F: FnMut(&mut K) -> bool,
{
    for _ in 0..10 {
        let Some(mut obj) = api.get_opt(name).await? else {
            return Ok(None);
        };
        if !change(&mut obj) {
            return Ok(None);
        }
        let pp = PostParams::default();
        let written = if status {
            api.replace_status(name, &pp, &obj).await
        } else {
            api.replace(name, &pp, &obj).await
        };
        match written {
            Ok(o) => return Ok(Some(o)),
            Err(e) if is_code(&e, 409) => continue,
            Err(e) if is_code(&e, 404) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Removes one finalizer from an object (a no-op when it is not there).
pub async fn remove_finalizer<K>(api: &Api<K>, name: &str, finalizer: &str) -> kube::Result<()>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    update(api, name, |obj| {
        let finalizers = obj.meta_mut().finalizers.get_or_insert_with(Vec::new);
        let before = finalizers.len();
        finalizers.retain(|f| f != finalizer);
        finalizers.len() != before
    })
    .await
    .map(|_| ())
}

/// DELETE, treating "already gone" as done.
pub async fn delete<K>(api: &Api<K>, name: &str, dp: &DeleteParams) -> kube::Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, dp).await {
        Ok(_) => Ok(()),
        Err(e) if is_code(&e, 404) => Ok(()),
        Err(e) => Err(e),
    }
}

/// DELETE with `gracePeriodSeconds: 0`: the kubelet's "it is gone" (and a force delete).
pub fn force() -> DeleteParams {
    DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    }
}

/// Whether one node-selector requirement holds for a set of labels (and the object name,
/// for `matchFields` on `metadata.name`).
fn requirement_holds(
    req: &NodeSelectorRequirement,
    labels: &BTreeMap<String, String>,
    value_of_field: Option<&str>,
) -> bool {
    let value = value_of_field.or_else(|| labels.get(&req.key).map(String::as_str));
    let values = req.values.clone().unwrap_or_default();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(x)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|x| x.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if req.operator == "Gt" {
                v > x
            } else {
                v < x
            }
        }
        _ => false,
    }
}

/// Whether a node matches a node selector (terms ORed, requirements within a term ANDed).
pub fn selector_matches(selector: &NodeSelector, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.as_deref().unwrap_or_default();
    selector.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.iter().flatten();
        let fields = term.match_fields.iter().flatten();
        let empty = term.match_expressions.as_ref().is_none_or(Vec::is_empty)
            && term.match_fields.as_ref().is_none_or(Vec::is_empty);
        !empty
            && exprs
                .into_iter()
                .all(|r| requirement_holds(r, &labels, None))
            && fields
                .into_iter()
                .all(|r| r.key == "metadata.name" && requirement_holds(r, &labels, Some(name)))
    })
}

/// The node-selector requirement `kubernetes.io/hostname in [node]`.
pub fn hostname_selector(node: &str) -> NodeSelector {
    serde_json::from_value(
        serde_json::json!({"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}),
    )
    .expect("node selector")
}

/// Five lowercase alphanumerics, as generated names end with.
pub fn random_suffix() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
        ^ (std::process::id() as u64) << 32
        ^ COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) << 48;
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..5)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}
