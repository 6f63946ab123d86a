//! The writes every reconciler makes, made one way: create-or-get on 409 (a restarted
//! controller finds what it made), delete ignoring 404 (already gone is done), and a whole
//! status written only when it changed, guarded by the resourceVersion read (a stale view
//! conflicts and is retried, never written over newer state).

use std::fmt::Debug;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::builders::labels::FIELD_MANAGER;
use super::error::{ignore_missing, is_status, Result};
use crate::api::{BuildCache, BuildCacheStatus, ImageBuild, ImageBuildStatus};

/// Parameters of every create and replace: the operator's field manager.
pub fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Parameters of every patch: the operator's field manager.
pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Creates `object`, or reads it when it exists already (409).
pub async fn create_or_get<K>(api: &Api<K>, object: &K) -> Result<K>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    match api.create(&post_params(), object).await {
        Ok(created) => Ok(created),
        Err(e) if is_status(&e, 409) => Ok(api.get(&object.name_any()).await?),
        Err(e) => Err(e.into()),
    }
}

/// Deletes `name` in the background; an object already gone counts as deleted.
pub async fn delete_ignoring_missing<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    ignore_missing(api.delete(name, &DeleteParams::background()).await)
}

/// A kind whose status the controller writes whole.
pub trait WholeStatus: Resource + Clone + Serialize + DeserializeOwned + Debug {
    /// The status type.
    type Status: Clone + Debug + PartialEq + Default;
    /// The status field.
    fn status_field(&mut self) -> &mut Option<Self::Status>;
    /// Whether `new` is worth a write over `old` (by default: any difference).
    fn differs(old: &Self::Status, new: &Self::Status) -> bool {
        old != new
    }
}

/// Writes `new` as the status of `read` (the object as read, whose resourceVersion guards
/// the write) unless it does not differ from the status read. The written object, or `None`
/// when nothing needed writing.
pub async fn write_status_if_changed<K: WholeStatus>(
    api: &Api<K>,
    read: &K,
    new: K::Status,
) -> Result<Option<K>, kube::Error> {
    let mut object = read.clone();
    let old = object.status_field().clone().unwrap_or_default();
    if !K::differs(&old, &new) && object.status_field().is_some() {
        return Ok(None);
    }
    *object.status_field() = Some(new);
    api.replace_status(&object.name_any(), &post_params(), &object)
        .await
        .map(Some)
}

impl WholeStatus for ImageBuild {
    type Status = ImageBuildStatus;
    fn status_field(&mut self) -> &mut Option<ImageBuildStatus> {
        &mut self.status
    }
    /// Condition transition times alone are not a change.
    fn differs(old: &ImageBuildStatus, new: &ImageBuildStatus) -> bool {
        let strip = |s: &ImageBuildStatus| {
            let mut s = s.clone();
            for c in &mut s.conditions {
                c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
            }
            s
        };
        strip(old) != strip(new)
    }
}

impl WholeStatus for BuildCache {
    type Status = BuildCacheStatus;
    fn status_field(&mut self) -> &mut Option<BuildCacheStatus> {
        &mut self.status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::conditions;

    #[test]
    fn condition_times_alone_are_not_an_image_build_write() {
        let at = |s| Timestamp::from_second(s).unwrap();
        let mut a = ImageBuildStatus::default();
        conditions::put(
            &mut a.conditions,
            "Placed",
            Some(true),
            "Hot",
            "",
            None,
            at(1),
        );
        let mut b = a.clone();
        b.conditions[0].last_transition_time = Time(at(99));
        assert!(!ImageBuild::differs(&a, &b));
        b.message = Some("x".into());
        assert!(ImageBuild::differs(&a, &b));
    }

    #[test]
    fn any_build_cache_status_change_is_a_write() {
        let a = BuildCacheStatus::default();
        let b = BuildCacheStatus {
            observed_generation: Some(2),
            ..BuildCacheStatus::default()
        };
        assert!(BuildCache::differs(&a, &b));
        assert!(!BuildCache::differs(&a, &a.clone()));
    }
}
