//! Pure parts of following a build: what changed between two looks at an ImageBuild (as
//! progress lines), the exit code of a finished one, and how its outcome reads.

use crate::api::common::condition;
use crate::api::{ImageBuild, Phase, Warmth};

/// Exit codes of `hearth build` and `hearth wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The build succeeded.
    Succeeded = 0,
    /// The build failed.
    Failed = 1,
    /// Bad input: a flag, the directory, the kubeconfig.
    BadInput = 2,
    /// Timed out or cancelled.
    TimedOutOrCancelled = 3,
}

impl Exit {
    /// As a process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The phase of a build, `Pending` when it has none yet.
pub fn phase(ib: &ImageBuild) -> Phase {
    ib.status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or(Phase::Pending)
}

/// The reason of the `Succeeded` condition (`BuildFailed`, `Timeout`, `Cancelled`...).
pub fn failure_reason(ib: &ImageBuild) -> Option<String> {
    ib.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == condition::SUCCEEDED && c.status != "True")
        .map(|c| c.reason.clone())
}

/// The exit code for a build in a terminal phase; `None` while it runs.
pub fn exit_for(ib: &ImageBuild) -> Option<Exit> {
    match phase(ib) {
        Phase::Succeeded => Some(Exit::Succeeded),
        Phase::Cancelled => Some(Exit::TimedOutOrCancelled),
        Phase::Failed if failure_reason(ib).as_deref() == Some("Timeout") => {
            Some(Exit::TimedOutOrCancelled)
        }
        Phase::Failed => Some(Exit::Failed),
        _ => None,
    }
}

/// What has been reported so far, so each change is told once.
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    phase: Option<Phase>,
    placed: bool,
    waiting: Option<String>,
}

impl Tracker {
    /// Lines describing what changed since the last look. `restore_bytes` is the size of the
    /// snapshot being restored, when the caller could find it.
    pub fn observe(&mut self, ib: &ImageBuild, restore_bytes: Option<u64>) -> Vec<String> {
        let mut lines = Vec::new();
        let status = ib.status.clone().unwrap_or_default();
        let placement = status.placement.clone().unwrap_or_default();
        let now = phase(ib);
        if let (Some(wait), Phase::Placing) = (&placement.expected_wait, now) {
            if self.waiting.as_ref() != Some(wait) {
                lines.push(format!(
                    "placing: waiting for a busy replica of the cache (expected {wait})"
                ));
                self.waiting = Some(wait.clone());
            }
        }
        if !self.placed && placement.warmth.is_some() {
            self.placed = true;
            let node = placement.node.as_deref().unwrap_or("?");
            let key = status.cache_key.as_deref().unwrap_or("?");
            lines.push(match placement.warmth {
                Some(Warmth::Hot) => format!("placed: Hot cache on node {node} (key {key})"),
                Some(Warmth::Restored) if placement.cloned_from.is_some() => {
                    let from = placement.cloned_from.as_ref();
                    let (replica, from) = from
                        .map(|c| (c.replica.as_str(), c.key.as_str()))
                        .unwrap_or(("?", key));
                    format!("placed: replica {replica} of key {from} cloned on node {node}")
                }
                Some(Warmth::Restored) => {
                    let from = placement
                        .restored_from
                        .as_ref()
                        .map(|r| r.key.as_str())
                        .unwrap_or(key);
                    format!("placed: cache restored from key {from} onto node {node}")
                }
                _ => format!(
                    "placed: Cold on node {node} (key {key}){}",
                    placement
                        .reason
                        .as_ref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
            });
        }
        if self.phase != Some(now) {
            self.phase = Some(now);
            match now {
                Phase::Pending => lines.push("pending: waiting for the controller".into()),
                Phase::Placing => lines.push("placing: looking for a warm cache".into()),
                Phase::Restoring => {
                    let snap = placement
                        .restored_from
                        .as_ref()
                        .map(|r| format!(" snapshot {} of key {}", r.snapshot, r.key))
                        .unwrap_or_default();
                    let bytes = restore_bytes
                        .map(|b| format!(" ({})", human_bytes(b)))
                        .unwrap_or_default();
                    lines.push(format!("restoring:{snap}{bytes}"));
                }
                // A parent builds through its children, one per platform.
                Phase::Building if ib.spec.fans_out() => lines.push(format!(
                    "building {} platforms, each on nodes of its architecture: {}",
                    ib.spec.platforms.len(),
                    ib.spec.platforms.join(", ")
                )),
                Phase::Building => lines.push(format!(
                    "building on node {}",
                    placement.node.as_deref().unwrap_or("?")
                )),
                Phase::Snapshotting => lines.push("snapshotting: saving the cache".into()),
                Phase::Succeeded | Phase::Failed | Phase::Cancelled => {}
            }
        }
        lines
    }
}

/// `1.2GiB`-style sizes.
pub fn human_bytes(b: u64) -> String {
    format!("{}B", crate::api::quantity::human(b))
}

/// The cache story in one line: `Hot`, `Restored from key K` (or by cloning a replica of it)
/// or `Cold`, with where.
pub fn cache_story(ib: &ImageBuild) -> String {
    let status = ib.status.clone().unwrap_or_default();
    let p = status.placement.clone().unwrap_or_default();
    let key = status.cache_key.unwrap_or_else(|| "?".into());
    let node = p.node.unwrap_or_else(|| "?".into());
    match p.warmth {
        Some(Warmth::Hot) => format!("Hot (key {key}, replica on node {node})"),
        Some(Warmth::Restored) => match (p.restored_from, p.cloned_from) {
            (Some(r), _) => format!(
                "Restored from key {} (snapshot {}) onto node {node}",
                r.key, r.snapshot
            ),
            (None, Some(c)) => format!(
                "Restored by cloning replica {} of key {} on node {node}",
                c.replica, c.key
            ),
            (None, None) => format!("Restored (key {key}) onto node {node}"),
        },
        Some(Warmth::Cold) => format!(
            "Cold (key {key}, node {node}){}",
            p.reason.map(|r| format!(": {r}")).unwrap_or_default()
        ),
        None => "none (the build never got a cache)".into(),
    }
}

/// The summary printed when a build has ended. `log_tail` is the end of the builder's log as
/// followed by the client (shown for failures).
pub fn render_outcome(ib: &ImageBuild, log_tail: &[String]) -> String {
    let status = ib.status.clone().unwrap_or_default();
    let name = format!(
        "{}/{}",
        ib.metadata.namespace.as_deref().unwrap_or(""),
        ib.metadata.name.as_deref().unwrap_or("")
    );
    let mut out = String::new();
    let phase = phase(ib);
    match phase {
        Phase::Succeeded => {
            out.push_str(&format!("Succeeded  {name}\n"));
            let digest = status.image_digest.as_deref().unwrap_or("(not reported)");
            out.push_str(&format!("  image    {}\n", ib.spec.output.image));
            for tag in ib.spec.output.names().iter().skip(1) {
                out.push_str(&format!("  tag      {tag}\n"));
            }
            out.push_str(&format!("  digest   {digest}\n"));
            if let Some(size) = status.image_size {
                out.push_str(&format!("  size     {}\n", human_bytes(size.max(0) as u64)));
            }
            if let Some(commit) = &status.git_commit {
                out.push_str(&format!("  commit   {commit}\n"));
            }
        }
        _ => {
            let reason = failure_reason(ib).unwrap_or_else(|| format!("{phase:?}"));
            out.push_str(&format!("{phase:?}  {name}: {reason}\n"));
            if let Some(m) = &status.message {
                for line in m.lines() {
                    out.push_str(&format!("  | {line}\n"));
                }
            }
        }
    }
    if ib.spec.fans_out() {
        // A parent: each platform's child, its cache and where it ran.
        for p in ib.status.iter().flat_map(|s| &s.platforms) {
            out.push_str(&format!(
                "  {:<8} {} {} (build {}{}{})\n",
                p.platform,
                p.phase
                    .map(|ph| ph.to_string())
                    .unwrap_or_else(|| "Pending".into()),
                p.warmth.map(|w| w.to_string()).unwrap_or_default(),
                p.build,
                p.node
                    .as_ref()
                    .map(|n| format!(", node {n}"))
                    .unwrap_or_default(),
                p.image_digest
                    .as_ref()
                    .map(|d| format!(", {d}"))
                    .unwrap_or_default()
            ));
        }
    } else {
        out.push_str(&format!("  cache    {}\n", cache_story(ib)));
    }
    if let Some(d) = &status.durations {
        let parts: Vec<String> = [
            ("queued", &d.queued),
            ("restore", &d.restore),
            ("build", &d.build),
            ("snapshot", &d.snapshot),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
        .collect();
        if !parts.is_empty() {
            out.push_str(&format!("  time     {}\n", parts.join(", ")));
        }
    }
    if phase != Phase::Succeeded && !log_tail.is_empty() {
        out.push_str("  log tail:\n");
        for line in log_tail {
            out.push_str(&format!("  > {line}\n"));
        }
    }
    out
}

/// The outcome as JSON (`-o json`), also the content of `--metadata-file` with BuildKit's
/// `containerimage.digest` and `image.name` keys added.
pub fn outcome_json(ib: &ImageBuild) -> serde_json::Value {
    let status = ib.status.clone().unwrap_or_default();
    let p = status.placement.clone().unwrap_or_default();
    serde_json::json!({
        "name": ib.metadata.name,
        "namespace": ib.metadata.namespace,
        "phase": phase(ib),
        "reason": failure_reason(ib),
        "message": status.message,
        "image": ib.spec.output.image,
        "digest": status.image_digest,
        "containerimage.digest": status.image_digest,
        // As BuildKit writes it: every name pushed, comma-separated.
        "image.name": ib.spec.output.names().join(","),
        "tags": ib.spec.output.names(),
        "platforms": status.platforms,
        "gitCommit": status.git_commit,
        "imageSize": status.image_size,
        "cacheKey": status.cache_key,
        "warmth": p.warmth,
        "restoredFrom": p.restored_from,
        "importedFrom": p.imported_from,
        "node": p.node,
        "durations": status.durations,
        "exitCode": exit_for(ib).map(Exit::code),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_names_every_tag_pushed_as_buildkit_does_and_the_registry_seed() {
        let mut ib: ImageBuild = serde_json::from_value(serde_json::json!({
            "apiVersion": "hearth.dev/v1alpha1", "kind": "ImageBuild",
            "metadata": {"name": "api-1", "namespace": "shop"},
            "spec": {
                "source": {"git": {"url": "https://github.com/acme/shop.git"}},
                "output": {"image": "r.io/shop/api:1", "tags": ["latest"]}
            },
            "status": {"phase": "Succeeded", "imageDigest": "sha256:ab",
                "placement": {"warmth": "Cold", "importedFrom": ["r.io/shop/api:cache"]}}
        }))
        .unwrap();
        let v = outcome_json(&ib);
        assert_eq!(v["image.name"], "r.io/shop/api:1,r.io/shop/api:latest");
        assert_eq!(v["importedFrom"][0], "r.io/shop/api:cache");
        assert!(render_outcome(&ib, &[]).contains("  tag      r.io/shop/api:latest\n"));
        ib.spec.output.tags.clear();
        assert_eq!(outcome_json(&ib)["image.name"], "r.io/shop/api:1");
    }

    #[test]
    fn a_cloned_cache_says_which_replica_it_was_cloned_from() {
        let ib: ImageBuild = serde_json::from_value(serde_json::json!({
            "apiVersion": "hearth.dev/v1alpha1", "kind": "ImageBuild",
            "metadata": {"name": "fx-1", "namespace": "shop"},
            "spec": {
                "source": {"git": {"url": "https://github.com/acme/shop.git"}},
                "output": {"image": "r.io/shop/api:1"}
            },
            "status": {"phase": "Succeeded", "cacheKey": "shop:fx@amd64",
                "placement": {"warmth": "Restored", "node": "n1", "clonedFrom":
                    {"key": "shop:main@amd64", "cache": "shop-main", "replica": "shop-main-r0"}}}
        }))
        .unwrap();
        assert_eq!(
            cache_story(&ib),
            "Restored by cloning replica shop-main-r0 of key shop:main@amd64 on node n1"
        );
    }
}
