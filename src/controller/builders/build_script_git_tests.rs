//! The script's git-credential step, run as the builder runs it, once per shape of git Secret
//! (the keys Tekton, Shipwright and kpack take): the exact arguments the fake
//! `buildctl-daemonless.sh` receives, the computed `Authorization` header and its redaction,
//! and the `ssh` wrapper that makes a `known_hosts` key the only hosts trusted.

use base64::Engine;

use super::*;

fn git_build(url: &str) -> ImageBuild {
    let spec: ImageBuildSpec = serde_json::from_value(serde_json::json!({
        "source": {"git": {"url": url, "secretRef": {"name": "git"}}},
        "output": {"image": "registry.example.com/shop/api:1"}
    }))
    .expect("spec");
    let mut ib = ImageBuild::new("api-42", spec);
    ib.metadata.namespace = Some("shop".into());
    ib
}

/// Records buildctl's arguments, one a line, in `$HEARTH_WORK_DIR/buildctl.args`, then runs `then`.
fn recording(then: &str) -> String {
    format!("for a in \"$@\"; do printf '%s\\n' \"$a\"; done > \"$HEARTH_WORK_DIR/buildctl.args\"\n{then}\nexit 3\n")
}

struct Run {
    node: Node,
    code: i32,
    /// The pod's buildctl arguments (after `sh -c SCRIPT hearth-build`).
    pod_args: Vec<String>,
    /// What buildctl received, in container paths; empty when it never ran.
    received: Vec<String>,
    message: String,
}

impl Run {
    /// The arguments the script added to the pod's.
    fn added(&self) -> Vec<&str> {
        assert!(
            self.received.starts_with(&self.pod_args),
            "the script kept the pod's arguments first: {:?}",
            self.received
        );
        self.received[self.pod_args.len()..]
            .iter()
            .map(String::as_str)
            .collect()
    }
}

/// Runs a build of `url` whose git Secret has `keys`, with a recording fake that then runs `then`.
fn run(url: &str, keys: &[(&str, &str)], then: &str) -> Run {
    let (args, env, mounts) = container_of(&git_build(url), StateVolume::Replica("r".into()), None);
    let node = Node::new(&mounts);
    for (key, value) in keys {
        node.secret(&format!("/run/hearth/git/{key}"), value);
    }
    let (code, _) = node.run(&node.rewrite(&recording(then)), &args, &env);
    let root = node.root.path().display().to_string();
    let received = std::fs::read_to_string(node.host("/tmp/hearth/buildctl.args"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.replace(&root, ""))
        .collect();
    let message = node.termination_message();
    Run {
        node,
        code,
        pod_args: args[3..].to_vec(),
        received,
        message,
    }
}

#[test]
fn basic_auth_secrets_become_a_host_scoped_authorization_header_that_is_redacted() {
    // Created from files: trailing newlines are not part of the credential.
    let keys = [
        ("username", "bot\n"),
        ("password", &format!("{PASSWORD}\n")),
    ];
    let leak = "printf '#3 header %s bare %s\\n' \"$(cat /tmp/hearth/git-auth/header)\" \"$(cat /tmp/hearth/git-auth/basic)\"";
    let run = run("https://github.com/acme/shop.git", &keys, leak);
    assert_eq!(
        run.added(),
        [
            "--secret",
            "id=GIT_AUTH_HEADER.github.com,src=/tmp/hearth/git-auth/header"
        ]
    );
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("bot:{PASSWORD}"));
    let header_file = run.node.host("/tmp/hearth/git-auth/header");
    assert_eq!(
        std::fs::read_to_string(&header_file).unwrap(),
        format!("basic {basic}")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&header_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "the header is the builder's alone: {mode:o}"
    );
    assert_eq!(run.code, 3);
    assert!(
        run.message.contains("#3 header *** bare ***"),
        "{}",
        run.message
    );
    assert!(!run.message.contains(&basic), "{}", run.message);
}

#[test]
fn a_token_key_is_passed_as_a_host_scoped_git_auth_token() {
    let run = run(
        "https://git.example.com:8443/acme/shop.git",
        &[("token", TOKEN)],
        "",
    );
    assert_eq!(
        run.added(),
        [
            "--secret",
            "id=GIT_AUTH_TOKEN.git.example.com:8443,src=/run/hearth/git/token"
        ]
    );
    assert!(!run.node.host("/tmp/hearth/git-auth").exists());
}

#[test]
fn ssh_auth_secrets_forward_the_key_and_trust_buildkits_keyscan_without_known_hosts() {
    let run = run(
        "git@github.com:acme/shop.git",
        &[("ssh-privatekey", KEY)],
        "command -v ssh > \"$HEARTH_WORK_DIR/ssh.path\"",
    );
    assert_eq!(
        run.added(),
        ["--ssh", "default=/run/hearth/git/ssh-privatekey"]
    );
    let ssh = std::fs::read_to_string(run.node.host("/tmp/hearth/ssh.path")).unwrap_or_default();
    assert!(!ssh.contains("hearth"), "no wrapper: {ssh}");
}

#[test]
fn a_known_hosts_key_overrides_the_options_buildkit_gives_ssh() {
    if !std::path::Path::new("/usr/bin/ssh").exists() {
        eprintln!("skipped: no /usr/bin/ssh to resolve options with");
        return;
    }
    // As BuildKit's git source runs it (GIT_SSH_COMMAND), with a scanned or no host key; `-G`
    // prints the options ssh would use.
    let then = "ssh -F /dev/null -o UserKnownHostsFile=/tmp/scanned -G git@github.com > \"$HEARTH_WORK_DIR/ssh.1\"
ssh -F /dev/null -o StrictHostKeyChecking=no -G git@github.com > \"$HEARTH_WORK_DIR/ssh.2\"";
    let run = run(
        "ssh://git@github.com/acme/shop.git",
        &[
            ("ssh-privatekey", KEY),
            ("known_hosts", "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"),
        ],
        then,
    );
    assert_eq!(
        run.added(),
        ["--ssh", "default=/run/hearth/git/ssh-privatekey"]
    );
    let known_hosts = run.node.host("/run/hearth/git/known_hosts");
    for file in ["/tmp/hearth/ssh.1", "/tmp/hearth/ssh.2"] {
        let options = std::fs::read_to_string(run.node.host(file)).unwrap_or_default();
        for want in [
            format!("userknownhostsfile {}", known_hosts.display()),
            "globalknownhostsfile /dev/null".to_string(),
            "stricthostkeychecking true".to_string(),
        ] {
            assert!(
                options.lines().any(|l| l == want),
                "{file}: {want:?} not in\n{options}"
            );
        }
    }
}

#[test]
fn a_secret_without_the_keys_the_url_needs_fails_before_buildctl_naming_them() {
    for (url, keys, expected) in [
        (
            "https://github.com/acme/shop.git",
            &[("ca.crt", "x")][..],
            "neither username and password (kubernetes.io/basic-auth) nor token",
        ),
        (
            "https://github.com/acme/shop.git",
            &[("password", PASSWORD)][..],
            "needs both username and password",
        ),
        (
            "ssh://git@github.com/acme/shop.git",
            &[("token", TOKEN)][..],
            "no ssh-privatekey key",
        ),
    ] {
        let run = run(url, keys, "");
        assert_eq!(run.code, 1, "{url} {keys:?}");
        assert!(run.received.is_empty(), "buildctl ran: {:?}", run.received);
        assert!(run.message.contains(expected), "{keys:?}: {}", run.message);
    }
}
