//! What a build asks of BuildKit's Dockerfile frontend besides its source and output, as
//! buildctl arguments: named build contexts (`--opt context:NAME=VALUE`), `pull`
//! (`--opt image-resolve-mode=pull`), `noCache` (`--no-cache`: every step runs again, the
//! state is still kept) and SSH agents (`--ssh ID=KEY[,KEY]`), whose private keys come from
//! Secrets through one read-only projected volume ([`ssh_keys_volume`]).

use k8s_openapi::api::core::v1::{Volume, VolumeMount};

use crate::api::ImageBuildSpec;

/// Where the SSH agents' keys are mounted, one file per agent id.
pub const SSH_DIR: &str = "/run/hearth/ssh";
const SSH_VOLUME: &str = "ssh-keys";

/// buildctl arguments for the frontend features of `spec`. (A git source fetched over SSH has
/// its key in the `default` agent, added by the builder script; the API refuses a `spec.ssh`
/// agent of that id then.)
pub fn frontend_args(spec: &ImageBuildSpec) -> Vec<String> {
    let mut args = Vec::new();
    for (name, value) in &spec.build_contexts {
        args.extend(["--opt".to_string(), format!("context:{name}={value}")]);
    }
    if spec.pull {
        args.extend(["--opt".to_string(), "image-resolve-mode=pull".to_string()]);
    }
    if spec.no_cache {
        args.push("--no-cache".to_string());
    }
    for agent in &spec.ssh {
        args.extend([
            "--ssh".to_string(),
            format!("{}={SSH_DIR}/{}", agent.id, agent.id),
        ]);
    }
    args
}

/// The volume and mount that carry `spec.ssh`'s keys (files named by agent id, mode 0400),
/// or none when no agent is forwarded.
pub fn ssh_keys_volume(spec: &ImageBuildSpec) -> Option<(Volume, VolumeMount)> {
    (!spec.ssh.is_empty()).then(|| {
        super::secret_keys_volume(
            SSH_VOLUME,
            SSH_DIR,
            spec.ssh.iter().map(|a| (&a.secret_ref, a.id.as_str())),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: serde_json::Value) -> ImageBuildSpec {
        let mut base = serde_json::json!({
            "source": {"git": {"url": "https://github.com/acme/shop.git"}},
            "output": {"image": "registry.example.com/shop/api:1"}
        });
        base.as_object_mut()
            .unwrap()
            .extend(value.as_object().unwrap().clone());
        serde_json::from_value(base).expect("spec")
    }

    #[test]
    fn a_plain_build_asks_nothing_of_the_frontend() {
        assert!(frontend_args(&spec(serde_json::json!({}))).is_empty());
        assert!(ssh_keys_volume(&spec(serde_json::json!({}))).is_none());
    }

    #[test]
    fn named_contexts_pull_and_no_cache_are_buildx_flags_spelled_for_buildctl() {
        let args = frontend_args(&spec(serde_json::json!({
            "buildContexts": {
                "docker.io/library/alpine:3.19": "docker-image://mirror.example.com/alpine:3.19",
                "docs": "https://github.com/acme/docs.git#main"
            },
            "pull": true,
            "noCache": true
        })));
        assert_eq!(
            args,
            [
                "--opt",
                "context:docker.io/library/alpine:3.19=docker-image://mirror.example.com/alpine:3.19",
                "--opt",
                "context:docs=https://github.com/acme/docs.git#main",
                "--opt",
                "image-resolve-mode=pull",
                "--no-cache",
            ]
        );
    }

    #[test]
    fn ssh_agents_get_their_key_files() {
        let spec = spec(serde_json::json!({
            "ssh": [
                {"id": "default", "secretRef": {"name": "deploy-key", "key": "ssh-privatekey"}},
                {"id": "gitlab", "secretRef": {"name": "gl", "key": "id_ed25519"}}
            ]
        }));
        assert_eq!(
            frontend_args(&spec),
            [
                "--ssh",
                "default=/run/hearth/ssh/default",
                "--ssh",
                "gitlab=/run/hearth/ssh/gitlab",
            ]
        );
        let (volume, mount) = ssh_keys_volume(&spec).expect("a volume");
        assert_eq!(mount.mount_path, SSH_DIR);
        assert_eq!(mount.read_only, Some(true));
        let projected = volume.projected.expect("projected");
        let items: Vec<_> = projected
            .sources
            .unwrap()
            .into_iter()
            .map(|s| {
                let secret = s.secret.unwrap();
                let item = secret.items.unwrap().remove(0);
                (secret.name, item.key, item.path, item.mode)
            })
            .collect();
        assert_eq!(
            items,
            [
                (
                    "deploy-key".to_string(),
                    "ssh-privatekey".to_string(),
                    "default".to_string(),
                    Some(0o400)
                ),
                (
                    "gl".to_string(),
                    "id_ed25519".to_string(),
                    "gitlab".to_string(),
                    Some(0o400)
                ),
            ]
        );
    }
}
