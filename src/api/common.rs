//! Small types shared by both resources: object references and condition names.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to an object (a Secret, a BuildCache) by name in the same namespace.
/// Hearth never follows a reference into another namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// Name of the object, in the same namespace as the referring resource.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// Condition types that an ImageBuild reports, in the order a build reaches them.
pub mod condition {
    /// The build has a node and a replica (or a decision to start cold).
    pub const PLACED: &str = "Placed";
    /// The cache replica is ready: hot, restored from a snapshot, or created empty.
    pub const CACHE_READY: &str = "CacheReady";
    /// buildkitd finished the build and pushed the image (when `push` is set).
    pub const BUILT: &str = "Built";
    /// The replica's state was saved to the store (or saving was not needed).
    pub const SNAPSHOTTED: &str = "Snapshotted";
    /// Terminal summary: `True` on success, `False` as soon as the build fails or is cancelled.
    pub const SUCCEEDED: &str = "Succeeded";
    /// Every condition an ImageBuild carries.
    pub const ALL: [&str; 5] = [PLACED, CACHE_READY, BUILT, SNAPSHOTTED, SUCCEEDED];
}
