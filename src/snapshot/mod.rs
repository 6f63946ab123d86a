//! The snapshot engine: saves a BuildKit state directory into a store as an immutable,
//! content-addressed, incremental snapshot, and restores it on any node.
//!
//! Format (see `docs/snapshots.md`): FastCDC chunks named by BLAKE3, zstd-compressed unless
//! incompressible, packed into objects of tens of MiB that keep a subtree's chunks together;
//! one sealed manifest per snapshot, bound to its namespace and cache and written last, and
//! pinned by the SHA-256 of its bytes ([`pin`]) where the controller keeps it.
//!
//! Pure modules: [`layout`], [`codec`], [`manifest`], [`pack`], [`pin`]. I/O: [`tree`], [`index`],
//! [`pipeline`], [`save`], [`restore`], [`staging`], [`open_files`], [`apply`], [`catalog`], [`gc`],
//! [`verify`].

pub mod apply;
pub mod bench;
pub mod bench_tree;
pub mod catalog;
pub mod cli;
pub mod codec;
pub mod gc;
pub mod index;
pub mod layout;
pub mod manifest;
pub mod open_files;
pub mod pack;
pub mod pin;
pub mod pipeline;
pub mod restore;
pub mod save;
pub mod staging;
pub mod tree;
pub mod verify;

pub use catalog::{forget_cache, list_snapshots, SnapshotInfo};
pub use gc::{gc, GcOptions, GcReport};
pub use restore::{restore, RestoreOptions, RestoreReport};
pub use save::{save, SaveOptions, SaveReport};
