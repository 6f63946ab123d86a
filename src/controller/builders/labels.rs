//! Label and annotation names Hearth puts on what it creates, and object names derived from
//! their owners (deterministic, so a restarted controller finds what it made).

use std::collections::BTreeMap;

/// Marks every object the controller creates.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY`].
pub const MANAGER: &str = "hearth";
/// The ImageBuild a pod or job works for.
pub const BUILD: &str = "hearth.dev/build";
/// The BuildCache a PVC or job belongs to.
pub const CACHE: &str = "hearth.dev/cache";
/// The parent ImageBuild of a child building one platform of a multi-platform build.
pub const PARENT: &str = "hearth.dev/parent";
/// The platform a child ImageBuild builds (`arm64-v8` for `linux/arm64/v8`).
pub const PLATFORM: &str = "hearth.dev/platform";
/// What a pod or job does: `build`, `restore`, `save` or `index`.
pub const ROLE: &str = "hearth.dev/role";
/// Node annotation overriding the per-node cache budget (a quantity, e.g. `500Gi`).
pub const NODE_BUDGET_ANNOTATION: &str = "hearth.dev/cache-budget";
/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "hearth-controller";

/// Labels of an object working for `build` (and `cache`, when it has one).
pub fn for_build(build: &str, cache: Option<&str>, role: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert(MANAGED_BY.to_string(), MANAGER.to_string());
    labels.insert(BUILD.to_string(), truncate_label(build));
    labels.insert(ROLE.to_string(), role.to_string());
    if let Some(cache) = cache {
        labels.insert(CACHE.to_string(), truncate_label(cache));
    }
    labels
}

/// Label values are at most 63 characters.
pub fn truncate_label(value: &str) -> String {
    value
        .chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.', '_'])
        .to_string()
}

/// Name of replica `n` of a BuildCache.
pub fn replica_pvc_name(cache: &str, n: u32) -> String {
    format!("{cache}-r{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        let labels = for_build(&"b".repeat(100), Some("c"), "build");
        assert_eq!(labels[BUILD].len(), 63);
        assert_eq!(labels[MANAGED_BY], "hearth");
    }
}
