//! The Hearth API: the `ImageBuild` and `BuildCache` custom resources (group `hearth.dev`,
//! version `v1alpha1`), the pure helpers that derive cache keys and names from them, and an
//! offline checker that applies the CRD schemas and CEL rules the way an API server would.

pub mod build_cache;
pub mod check;
pub mod common;
pub mod image_build;
pub mod keys;
pub mod quantity;
pub mod registry;

pub use build_cache::{
    BuildCache, BuildCacheSpec, BuildCacheStatus, CacheGcPolicy, CacheOperation, CacheStorage,
    DeletionPolicy, HitCounts, KeyHistory, OperationKind, ReplicaState, ReplicaStatus,
    SnapshotPolicy, SnapshotRecord, VolumeAccessMode,
};
pub use image_build::{
    BuildResources, BuildSecret, CacheMode, CachePrune, CacheSpec, ContextSource, Durations,
    GitSource, ImageBuild, ImageBuildSpec, ImageBuildStatus, Phase, Placement, PlatformBuild,
    PlatformMode, PruneResult, PvcContext, RestoredFrom, RetentionSpec, SecretKeyRef, SourceSpec,
    SshAgent, UploadSource, Warmth, FRONTEND_OPTIONS,
};
pub use registry::{
    Attestations, Compression, ExportMode, OutputSpec, Provenance, ProvenanceMode, RegistryCache,
    RegistryExport,
};

/// API group of every Hearth resource.
pub const GROUP: &str = "hearth.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";
