//! The docker `config.json` a pod's registry client reads (buildctl in the builder pod,
//! `hearth index create` in the index Job): the push Secret mounted read-only as it is, or,
//! when the operator's `builder.registryLogin` serves one of the build's registries, a memory
//! emptyDir that the `registry-login` init container ([`LOGIN_CONTAINER`]) fills with
//! short-lived tokens from the pod's cloud identity merged over the push Secret (which only
//! that init container then mounts).

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, KeyToPath, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::restricted;
use crate::controller::config::OperatorConfig;

/// Name of the init container that logs in with the pod's cloud identity.
pub const LOGIN_CONTAINER: &str = "registry-login";
/// The memory emptyDir it writes config.json into.
pub const LOGIN_VOLUME: &str = "registry-login";
/// Where it reads the push Secret's config.json from.
pub const BASE_DIR: &str = "/run/hearth/docker-base";
/// A config.json is a few KiB; the limit keeps a runaway writer from eating the pod's memory.
const LOGIN_VOLUME_LIMIT: &str = "1Mi";

/// What a pod gets for its registry client's `DOCKER_CONFIG`.
#[derive(Clone, Debug, PartialEq)]
pub struct DockerConfig {
    /// Volumes for the pod.
    pub volumes: Vec<Volume>,
    /// The reader container's mount of the config dir (read-only).
    pub mount: VolumeMount,
    /// The `registry-login` init container, when the pod logs in.
    pub login: Option<Container>,
}

/// The docker config of a pod whose reader container has `DOCKER_CONFIG=dir`: `push_secret`
/// (a `kubernetes.io/dockerconfigjson` Secret, mounted as volume `secret_volume`) and logins
/// to `hosts` (from [`crate::controller::config::RegistryLoginSettings::hosts`]). `None` when
/// there is neither: the reader runs anonymously.
pub fn docker_config(
    push_secret: Option<&str>,
    secret_volume: &str,
    hosts: &[String],
    dir: &str,
    config: &OperatorConfig,
) -> Option<DockerConfig> {
    let secret = push_secret.map(|name| Volume {
        name: secret_volume.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(name.into()),
            items: Some(vec![KeyToPath {
                key: ".dockerconfigjson".into(),
                path: "config.json".into(),
                mode: None,
            }]),
            // Readable by the pod's group only (fsGroup), never by other users.
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Default::default()
    });
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    };
    if hosts.is_empty() {
        let secret = secret?;
        return Some(DockerConfig {
            mount: mount(secret_volume, dir, true),
            volumes: vec![secret],
            login: None,
        });
    }
    let mut args = vec!["registry-login".to_string()];
    for provider in &config.builder.registry_login.providers {
        args.extend(["--provider".to_string(), provider.as_str().to_string()]);
    }
    for host in hosts {
        args.extend(["--registry".to_string(), host.clone()]);
    }
    let mut login_mounts = vec![mount(LOGIN_VOLUME, dir, false)];
    if secret.is_some() {
        args.extend(["--base".to_string(), BASE_DIR.to_string()]);
        login_mounts.push(mount(secret_volume, BASE_DIR, true));
    }
    args.extend(["--out".to_string(), dir.to_string()]);
    let login = Container {
        name: LOGIN_CONTAINER.into(),
        image: Some(config.builder.hearth_image.clone()),
        image_pull_policy: Some(config.builder.image_pull_policy.clone()),
        command: Some(vec!["hearth".into()]),
        args: Some(args),
        volume_mounts: Some(login_mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(restricted()),
        ..Default::default()
    };
    let tokens = Volume {
        name: LOGIN_VOLUME.into(),
        // In memory: the tokens never touch the node's disk.
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Quantity(LOGIN_VOLUME_LIMIT.into())),
        }),
        ..Default::default()
    };
    Some(DockerConfig {
        volumes: std::iter::once(tokens).chain(secret).collect(),
        mount: mount(LOGIN_VOLUME, dir, true),
        login: Some(login),
    })
}
