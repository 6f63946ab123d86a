//! The one finalizer flow of every reconciler: an object being deleted gets its cleanup,
//! which says done or pending, and the finalizer is removed in one place, here, once it is
//! done; a live object gets the finalizer first, then its reconcile. Finalizers are added and
//! removed with merge patches that carry the resourceVersion read, so a concurrent change
//! conflicts instead of being overwritten. (kube-runtime's helper uses a JSON patch `test` on
//! an absent field, which some API implementations refuse.)

use std::future::Future;
use std::sync::Arc;

use kube::api::{Api, Patch};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::error::{is_status, Result};
use super::writes::patch_params;

/// ImageBuild finalizer: the build's replica claim is released before the ImageBuild goes.
pub const RELEASE: &str = "hearth.dev/release";
/// BuildCache finalizer: the cache's snapshots are forgotten (deletionPolicy Delete) first.
pub const SNAPSHOTS: &str = "hearth.dev/snapshots";

/// What a cleanup step of an object being deleted reports.
#[derive(Debug)]
pub enum Cleanup {
    /// Nothing is left: the finalizer goes.
    Done,
    /// Still under way: look again as the action says.
    Pending(Action),
}

/// Reconciles `object` under finalizer `name`: `cleanup` while it is being deleted (the
/// finalizer removed once cleanup is done), otherwise the finalizer ensured, then `apply`.
pub async fn reconcile_with<K, A, FA, C, FC>(
    api: &Api<K>,
    object: Arc<K>,
    name: &str,
    apply: A,
    cleanup: C,
) -> Result<Action>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    A: FnOnce(Arc<K>) -> FA,
    FA: Future<Output = Result<Action>>,
    C: FnOnce(Arc<K>) -> FC,
    FC: Future<Output = Result<Cleanup>>,
{
    if object.meta().deletion_timestamp.is_some() {
        if !object.finalizers().iter().any(|f| f == name) {
            return Ok(Action::await_change());
        }
        return match cleanup(object.clone()).await? {
            Cleanup::Done => {
                remove(api, object.as_ref(), name).await?;
                Ok(Action::await_change())
            }
            Cleanup::Pending(next) => Ok(next),
        };
    }
    let object = match ensure(api, object.as_ref(), name).await? {
        Some(updated) => Arc::new(updated),
        None => object,
    };
    apply(object).await
}

/// Adds `name` to the object's finalizers if missing; returns the updated object.
pub async fn ensure<K>(api: &Api<K>, obj: &K, name: &str) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    if obj.finalizers().iter().any(|f| f == name) {
        return Ok(None);
    }
    let mut finalizers = obj.finalizers().to_vec();
    finalizers.push(name.to_string());
    patch(api, obj, finalizers).await.map(Some)
}

/// Removes `name` from the object's finalizers (the object may then go). A conflict (the
/// object changed since it was read, e.g. by the cleanup's own status write) is retried on a
/// fresh read, so only this finalizer is removed and nothing else is overwritten.
pub async fn remove<K>(api: &Api<K>, obj: &K, name: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut current = obj.clone();
    let mut attempts = 0;
    loop {
        if !current.finalizers().iter().any(|f| f == name) {
            return Ok(());
        }
        let finalizers: Vec<String> = current
            .finalizers()
            .iter()
            .filter(|f| *f != name)
            .cloned()
            .collect();
        attempts += 1;
        match patch(api, &current, finalizers).await {
            Err(e) if is_status(&e, 404) => return Ok(()),
            Err(e) if is_status(&e, 409) && attempts < REMOVE_ATTEMPTS => {
                match api.get_opt(&obj.name_any()).await? {
                    Some(fresh) => current = fresh,
                    None => return Ok(()),
                }
            }
            other => return other.map(|_| ()),
        }
    }
}

/// Attempts at removing a finalizer when the object keeps changing under it.
const REMOVE_ATTEMPTS: usize = 5;

async fn patch<K>(api: &Api<K>, obj: &K, finalizers: Vec<String>) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let body =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.resource_version()}});
    api.patch(&obj.name_any(), &patch_params(), &Patch::Merge(&body))
        .await
}
