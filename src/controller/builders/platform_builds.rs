//! The objects of a build of several platforms built natively (issue 17's fan-out): one child
//! ImageBuild per platform, an ordinary single-platform build pushed by digest into the
//! parent's repository, and the index Job (`hearth index create`) that assembles the
//! children's digests into one OCI image index pushed under every name of the parent. Pure:
//! the parent and the operator config in, objects out (the Job as `INDEX_CONTRACT.md` states).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSecurityContext, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

use super::docker_config::docker_config;
use super::jobs::{env_var, hearth_job, proxy_env, result_command};
use super::labels;
use super::restricted;
use crate::api::{ImageBuild, ImageBuildSpec, RegistryCache};
use crate::controller::buildkitd_config::RegistrySettings;
use crate::controller::config::OperatorConfig;

/// Role of the index Job, in its name and labels.
pub const INDEX_ROLE: &str = "index";
/// The index Job's `DOCKER_CONFIG`: the push Secret's `.dockerconfigjson` as `config.json`, or
/// the `registry-login` init container's output ([`super::docker_config`]).
pub const DOCKER_CONFIG_DIR: &str = "/hearth/docker";
/// The push Secret's volume.
const DOCKER_CONFIG_VOLUME: &str = "docker-config";
/// Environment variables of the index Job holding each registry's CA bundle (`<prefix><n>`).
pub const INDEX_CA_ENV_PREFIX: &str = "HEARTH_REGISTRY_CA_";
/// The unprivileged user of the index Job (the builder's, as [`unprivileged`] runs it).
const INDEX_USER: i64 = 1000;
/// Longest tag a registry takes (the distribution spec's `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`).
const MAX_TAG_LEN: usize = 128;

/// The name part of a platform: `linux/arm64/v8` gives `arm64-v8`, `linux/amd64` gives `amd64`
/// (the os is left out: a build's platforms differ by architecture).
pub fn platform_suffix(platform: &str) -> String {
    platform
        .split('/')
        .skip(1)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
        .replace('_', "-")
}

/// Name of the child ImageBuild building `platform` for `parent`: `<parent>-<arch>[-<variant>]`,
/// at most 63 characters (its pods' names and its labels derive from it), shortened with a
/// hash of the parent's name when too long.
pub fn child_build_name(parent: &str, platform: &str) -> String {
    let suffix = format!("-{}", platform_suffix(platform));
    if parent.len() + suffix.len() <= 63 {
        return format!("{parent}{suffix}");
    }
    let hash = &blake3::hash(parent.as_bytes()).to_hex()[..8];
    let keep = 63usize.saturating_sub(suffix.len() + hash.len() + 1);
    let head = parent[..keep.min(parent.len())].trim_end_matches(['-', '.']);
    format!("{head}-{hash}{suffix}")
}

/// The registry cache a child uses: the parent's `exportTo` ref with the platform in its tag
/// (`app:buildcache` gives `app:buildcache-arm64`, a ref without a tag `app:latest-arm64`), so
/// two children never overwrite one cache image; an `importFrom` entry that is the parent's
/// export ref becomes the child's, so each architecture imports what it exported. Other refs
/// are imported as written.
pub fn child_registry_cache(registry: &RegistryCache, platform: &str) -> RegistryCache {
    let mut child = registry.clone();
    let Some(export) = child.export_to.as_mut() else {
        return child;
    };
    let parent_ref = export.reference.clone();
    export.reference = ref_for_platform(&parent_ref, platform);
    for import in &mut child.import_from {
        if *import == parent_ref {
            *import = export.reference.clone();
        }
    }
    child
}

/// `reference` with `-<platform suffix>` appended to its tag (`latest` when it has none),
/// the tag kept within a registry's 128 characters.
fn ref_for_platform(reference: &str, platform: &str) -> String {
    let last_slash = reference.rfind('/').unwrap_or(0);
    let (repository, tag) = match reference[last_slash..].rfind(':') {
        Some(colon) => (
            &reference[..last_slash + colon],
            &reference[last_slash + colon + 1..],
        ),
        None => (reference, "latest"),
    };
    let suffix = format!("-{}", platform_suffix(platform));
    let keep = MAX_TAG_LEN.saturating_sub(suffix.len()).min(tag.len());
    format!("{repository}:{}{suffix}", &tag[..keep])
}

/// Whether an `output.annotations` key annotates the index the parent pushes (`index:KEY`,
/// which goes to the index Job) or something no pushed object of a child carries
/// (`index-descriptor:KEY`, an OCI layout's): neither is a child's.
fn index_level(key: &str) -> bool {
    key.starts_with("index:") || key.starts_with("index-descriptor:")
}

/// The child ImageBuild building `platform` of `parent`: the parent's spec for that one
/// platform (no mode), pushed by digest into the parent's repository without tags, with the
/// manifest-level annotations only (index-level ones go on the index), the registry cache of
/// [`child_registry_cache`]; labelled with its parent and platform, owned by the parent
/// (controller, blockOwnerDeletion), so it goes when the parent goes.
pub fn child_build(parent: &ImageBuild, platform: &str, owner: OwnerReference) -> ImageBuild {
    let mut spec: ImageBuildSpec = parent.spec.clone();
    spec.platforms = vec![platform.to_string()];
    spec.platform_mode = None;
    spec.cancel = false;
    spec.output.image = parent.spec.output.repository().to_string();
    spec.output.tags = Vec::new();
    spec.output.push_by_digest = parent.spec.output.push;
    spec.output.annotations.retain(|k, _| !index_level(k));
    spec.cache.registry = spec
        .cache
        .registry
        .as_ref()
        .map(|r| child_registry_cache(r, platform));
    let mut labels = BTreeMap::new();
    labels.insert(labels::MANAGED_BY.to_string(), labels::MANAGER.to_string());
    labels.insert(
        labels::PARENT.to_string(),
        labels::truncate_label(&parent.name_any()),
    );
    labels.insert(
        labels::PLATFORM.to_string(),
        labels::truncate_label(&platform_suffix(platform)),
    );
    let mut child = ImageBuild::new(&child_build_name(&parent.name_any(), platform), spec);
    child.metadata.namespace = parent.namespace();
    child.metadata.labels = Some(labels);
    child.metadata.owner_references = Some(vec![OwnerReference {
        controller: Some(true),
        block_owner_deletion: Some(true),
        ..owner
    }]);
    child
}

/// Whether `child` is `parent`'s: its controller ownerReference has the parent's uid. Another
/// ImageBuild of a child's name (a user's, or a deleted parent's of the same name) is never
/// adopted.
pub fn is_child_of(child: &ImageBuild, parent: &ImageBuild) -> bool {
    let Some(uid) = parent.metadata.uid.as_deref() else {
        return false;
    };
    child
        .owner_references()
        .iter()
        .any(|r| r.controller == Some(true) && r.uid == uid)
}

/// The `--annotation` values of the index: the parent's `index:KEY` annotations, prefix removed.
pub fn index_annotations(spec: &ImageBuildSpec) -> Vec<String> {
    spec.output
        .annotations
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("index:").map(|k| format!("{k}={v}")))
        .collect()
}

/// Name of the parent's index Job.
pub fn index_job_name(parent: &str) -> String {
    crate::contract::child_name(parent, INDEX_ROLE, 1)
}

/// The arguments of `hearth index create` for `parent`, whose children pushed `digests` (in
/// `spec.platforms` order): every source by digest in the parent's repository, every name of
/// the parent as a target, the index-level annotations, and the operator's plain-HTTP and
/// insecure registries.
pub fn index_args(
    parent: &ImageBuildSpec,
    digests: &[String],
    config: &OperatorConfig,
) -> Vec<String> {
    let mut args = vec!["index".to_string(), "create".to_string()];
    for digest in digests {
        args.push("--source".into());
        args.push(parent.output.by_digest(digest));
    }
    for name in parent.output.names() {
        args.push("--target".into());
        args.push(name);
    }
    for annotation in index_annotations(parent) {
        args.push("--annotation".into());
        args.push(annotation);
    }
    let registries = &config.buildkitd.registries;
    for r in registries.iter().filter(|r| r.http) {
        args.push("--plain-http".into());
        args.push(r.host.clone());
    }
    for r in registries.iter().filter(|r| r.insecure) {
        args.push("--insecure".into());
        args.push(r.host.clone());
    }
    for (var, r) in registry_cas(config) {
        args.push("--ca-env".into());
        args.push(format!("{}={var}", r.host));
    }
    args.push("--json".into());
    args
}

/// Each operator-configured registry with a CA bundle, and the index Job's variable holding it.
fn registry_cas(config: &OperatorConfig) -> impl Iterator<Item = (String, &RegistrySettings)> {
    let registries = config.buildkitd.registries.iter().enumerate();
    registries
        .filter(|(_, r)| !r.ca.is_empty())
        .map(|(i, r)| (format!("{INDEX_CA_ENV_PREFIX}{i}"), r))
}

/// The index Job of `parent`: `hearth index create` ([`index_args`]) with the `hearth` image,
/// its JSON result in the termination message, the push Secret (if any) mounted read-only as
/// `$DOCKER_CONFIG/config.json`; unprivileged (it only talks to registries), owned by the
/// parent, running at most `deadline_seconds`.
pub fn index_job(
    parent: &ImageBuild,
    digests: &[String],
    owner: OwnerReference,
    deadline_seconds: i64,
    config: &OperatorConfig,
) -> Job {
    let name = parent.name_any();
    let labels = labels::for_build(&name, None, INDEX_ROLE);
    // The children are in the repository of `output.image`, one of the names.
    let names = parent.spec.output.names();
    let login_hosts = config
        .builder
        .registry_login
        .hosts(names.iter().map(String::as_str));
    let docker = docker_config(
        parent
            .spec
            .output
            .push_secret_ref
            .as_ref()
            .map(|s| s.name.as_str()),
        DOCKER_CONFIG_VOLUME,
        &login_hosts,
        DOCKER_CONFIG_DIR,
        config,
    );
    // Each registry's CA bundle as a value (a ConfigMap cannot cross into the namespace),
    // named by `--ca-env`.
    let mut env: Vec<EnvVar> = registry_cas(config)
        .map(|(var, r)| env_var(&var, &r.ca))
        .collect();
    if docker.is_some() {
        env.push(env_var("DOCKER_CONFIG", DOCKER_CONFIG_DIR));
    }
    // The registries through the builders' proxy, as buildkitd reached them.
    env.extend(proxy_env(config));
    let env = (!env.is_empty()).then_some(env);
    let mounts = docker.as_ref().map(|d| vec![d.mount.clone()]);
    let (volumes, login) = match docker {
        Some(d) => (Some(d.volumes), d.login),
        None => (None, None),
    };
    // Logging in with the cloud identity takes the builder pods' ServiceAccount, which the
    // identity is bound to (an IRSA role, a GKE Workload Identity binding).
    let service_account = login
        .as_ref()
        .map(|_| config.builder.service_account_name.clone())
        .filter(|name| !name.is_empty());
    let container = Container {
        name: INDEX_ROLE.into(),
        image: Some(config.builder.hearth_image.clone()),
        image_pull_policy: Some(config.builder.image_pull_policy.clone()),
        command: Some(result_command()),
        args: Some(index_args(&parent.spec, digests, config)),
        env,
        volume_mounts: mounts,
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(restricted()),
        ..Default::default()
    };
    let tolerations = config.builder.tolerations.clone();
    let pod = PodSpec {
        tolerations: (!tolerations.is_empty()).then_some(tolerations),
        security_context: Some(PodSecurityContext {
            run_as_user: Some(INDEX_USER),
            run_as_group: Some(INDEX_USER),
            run_as_non_root: Some(true),
            fs_group: Some(INDEX_USER),
            ..Default::default()
        }),
        service_account_name: service_account,
        init_containers: login.map(|c| vec![c]),
        containers: vec![container],
        volumes,
        ..Default::default()
    };
    let metadata = ObjectMeta {
        name: Some(index_job_name(&name)),
        namespace: parent.namespace(),
        labels: Some(labels),
        owner_references: Some(vec![OwnerReference {
            controller: Some(true),
            block_owner_deletion: Some(true),
            ..owner
        }]),
        ..Default::default()
    };
    hearth_job(metadata, deadline_seconds, pod, config)
}

#[cfg(test)]
#[path = "platform_builds_tests.rs"]
mod tests;
