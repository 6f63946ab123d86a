//! The builder container's exact script (taken from the built Pod) run with `sh` on this
//! machine, its mounts mapped to a temp dir as a kubelet maps them, and a fake
//! `buildctl-daemonless.sh` on PATH that prints the mounted secrets and fails, or succeeds,
//! and prunes as the real `buildctl prune` prints (or fails, or hangs).

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::api::{CachePrune, ImageBuild, ImageBuildSpec, PruneResult};
use crate::controller::builders::build_script::{
    parse_buildkit_bytes, split_termination_message, BuilderReport, Prune,
};
use crate::controller::builders::pod::{
    builder_pod, digest_from_metadata, BuilderInputs, StateVolume,
};
use crate::controller::builders::Pin;
use crate::controller::config::OperatorConfig;

/// A secret with regex and sed metacharacters, `&` and `\`.
const PIP: &str = r"https://u:p@ss&w0rd\1.*[x]$(x)@pypi.example.com/simple";
/// A multi-line secret (a key): each line of 4+ characters is redacted on its own.
const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA&\\x\nQyNTUxOQAAACD+/=\n-----END OPENSSH PRIVATE KEY-----\n";
const TOKEN: &str = "ghp_T0kenWith|Pipe^Caret";
const PASSWORD: &str = "Pa55|w*rd";
const AUTH: &str = "Ym90OlBhNTV8dypyZA==";

fn build() -> ImageBuild {
    let spec: ImageBuildSpec = serde_json::from_value(serde_json::json!({
        "source": {"git": {"url": "https://github.com/acme/shop.git", "secretRef": {"name": "gh"}}},
        "secrets": [
            {"id": "pip", "secretRef": {"name": "pip-creds", "key": "index-url"}},
            {"id": "deploy-key", "secretRef": {"name": "keys", "key": "id"}}
        ],
        "output": {"image": "registry.example.com/shop/api:1", "pushSecretRef": {"name": "push"}}
    }))
    .expect("spec");
    let mut ib = ImageBuild::new("api-42", spec);
    ib.metadata.namespace = Some("shop".into());
    ib
}

/// The container's args and env, and its mount paths.
fn container() -> (Vec<String>, Vec<(String, String)>, Vec<String>) {
    container_on(StateVolume::Replica("r".into()), None)
}

/// The container of a build on `state`, with the prune step `prune`.
fn container_on(
    state: StateVolume,
    prune: Option<Prune>,
) -> (Vec<String>, Vec<(String, String)>, Vec<String>) {
    container_of(&build(), state, prune)
}

/// The container of `build` on `state`, with the prune step `prune`.
fn container_of(
    build: &ImageBuild,
    state: StateVolume,
    prune: Option<Prune>,
) -> (Vec<String>, Vec<(String, String)>, Vec<String>) {
    container_configured(build, state, prune, &OperatorConfig::default())
}

/// The container of `build` on `state` under the operator config `config`.
fn container_configured(
    build: &ImageBuild,
    state: StateVolume,
    prune: Option<Prune>,
    config: &OperatorConfig,
) -> (Vec<String>, Vec<(String, String)>, Vec<String>) {
    let inputs = BuilderInputs {
        attempt: 1,
        state,
        pin: Pin::Node("n".into()),
        gc_keep_bytes: None,
        prune,
        deadline_seconds: 60,
        import_cache: Vec::new(),
        owner: OwnerReference::default(),
    };
    let pod = builder_pod(build, &inputs, config).expect("pod");
    let c = pod.spec.expect("spec").containers.remove(0);
    assert_eq!(c.command.as_deref(), Some(&["sh".to_string()][..]));
    assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
    let env = c
        .env
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect();
    let mounts = c
        .volume_mounts
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mount_path)
        .collect();
    (c.args.unwrap_or_default(), env, mounts)
}

/// A node: each mount path (and `/dev/termination-log`) mapped to a dir of `root`.
struct Node {
    root: tempfile::TempDir,
    map: Vec<(String, PathBuf)>,
}

impl Node {
    fn new(mounts: &[String]) -> Node {
        let root = tempfile::tempdir().unwrap();
        let mut map: Vec<(String, PathBuf)> = mounts
            .iter()
            .map(|m| (m.clone(), root.path().join(m.trim_start_matches('/'))))
            .collect();
        map.push((
            "/dev/termination-log".into(),
            root.path().join("termination-log"),
        ));
        map.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
        for (_, host) in &map {
            std::fs::create_dir_all(host.parent().unwrap()).unwrap();
        }
        Node { root, map }
    }

    fn host(&self, path: &str) -> PathBuf {
        PathBuf::from(self.rewrite(path))
    }

    fn rewrite(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (from, to) in &self.map {
            out = out.replace(from.as_str(), &to.to_string_lossy());
        }
        out
    }

    /// Writes a Secret key as the kubelet does (a file under the mount path).
    fn secret(&self, path: &str, value: &str) {
        let file = self.host(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, value).unwrap();
    }

    /// Runs the container's command with a fake `buildctl-daemonless.sh`.
    fn run(&self, fake: &str, args: &[String], env: &[(String, String)]) -> (i32, String) {
        let bin = self.root.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let fake_path = bin.join("buildctl-daemonless.sh");
        std::fs::write(&fake_path, format!("#!/bin/sh\n{fake}")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake_path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = Command::new("sh")
            .args(args.iter().map(|a| self.rewrite(a)))
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, self.rewrite(v))))
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn termination_message(&self) -> String {
        std::fs::read_to_string(self.host("/dev/termination-log")).unwrap_or_default()
    }
}

/// A fake buildctl printing 100 lines, then each secret as a build step would, then failing.
const LEAKY_BUILDCTL: &str = r##"i=0
while [ $i -lt 100 ]; do echo "#2 filler line $i"; i=$((i+1)); done
printf '#5 RUN pip install --index-url %s\n' "$(cat /run/hearth/secrets/pip)"
printf '#5 key:\n'; cat /run/hearth/secrets/deploy-key
printf '#6 token=%s and again %s\n' "$(cat /run/hearth/git/token)" "$(cat /run/hearth/git/token)"
printf '#7 password %s auth %s\n' 'Pa55|w*rd' 'Ym90OlBhNTV8dypyZA=='
echo 'error: failed to solve: process "/bin/sh -c pip install" did not complete successfully: exit code: 1' >&2
exit 3
"##;

fn node_with_secrets(mounts: &[String]) -> Node {
    let node = Node::new(mounts);
    node.secret("/run/hearth/secrets/pip", &format!("{PIP}\n"));
    node.secret("/run/hearth/secrets/deploy-key", KEY);
    node.secret("/run/hearth/git/token", TOKEN);
    node.secret(
        "/run/hearth/docker/config.json",
        &format!(r#"{{"auths":{{"registry.example.com":{{"username":"bot","password":"{PASSWORD}","auth":"{AUTH}"}}}}}}"#),
    );
    node
}

#[test]
fn a_failed_build_leaves_a_bounded_tail_with_every_secret_redacted() {
    let (args, env, mounts) = container();
    let node = node_with_secrets(&mounts);
    // The fake reads the secrets where the pod mounts them, mapped like the script's paths.
    let fake = node.rewrite(LEAKY_BUILDCTL);
    let (code, stdout) = node.run(&fake, &args, &env);
    assert_eq!(code, 3, "buildctl's exit status, not tee's");
    // `kubectl logs` still shows everything, unredacted.
    assert!(
        stdout.contains("#2 filler line 0") && stdout.contains(TOKEN),
        "{stdout}"
    );
    let message = node.termination_message();
    assert!(
        message.contains("did not complete successfully") && message.contains("#7 password ***"),
        "{message}"
    );
    assert!(message.len() <= 2048, "{} bytes", message.len());
    assert!(message.lines().count() <= 40, "{message}");
    let mut leaked: Vec<&str> = vec![PIP, TOKEN, PASSWORD, AUTH];
    leaked.extend(KEY.lines());
    for secret in leaked {
        assert!(!message.contains(secret), "{secret:?} leaked:\n{message}");
    }
    assert!(
        message.contains("#5 RUN pip install --index-url ***"),
        "{message}"
    );
    assert!(message.contains("#6 token=*** and again ***"), "{message}");
}

#[test]
fn a_successful_build_writes_buildctls_metadata() {
    let (args, env, mounts) = container();
    let node = node_with_secrets(&mounts);
    let fake = r##"while [ $# -gt 0 ]; do
  if [ "$1" = --metadata-file ]; then printf '{"containerimage.digest":"sha256:abc"}' > "$2"; fi
  shift
done
echo "#9 exporting to image"
"##;
    let (code, stdout) = node.run(fake, &args, &env);
    assert_eq!(code, 0);
    assert!(stdout.contains("#9 exporting to image"));
    assert_eq!(
        node.termination_message(),
        r#"{"containerimage.digest":"sha256:abc"}"#
    );
}

/// A fake that builds (writing the metadata), and for `prune` records its arguments in
/// `$HEARTH_WORK_DIR/prune.args` and runs `PRUNE` (a shell snippet).
fn building_and_pruning(prune: &str) -> String {
    format!(
        r##"if [ "$1" = prune ]; then echo "$@" > "$HEARTH_WORK_DIR/prune.args"; {prune}
fi
while [ $# -gt 0 ]; do
  if [ "$1" = --metadata-file ]; then printf '{{"containerimage.digest":"sha256:abc"}}' > "$2"; fi
  shift
done
echo "#9 exporting to image"
"##
    )
}

/// What BuildKit v0.11.6's `buildctl prune` printed here when it dropped two layers and a cache
/// mount (a table, then the `Total:` line; tabs as tabwriter writes them).
const REAL_PRUNE_OUTPUT: &str = "ID\tRECLAIMABLE\tSIZE\tLAST ACCESSED\nnrkke3n6mpcd2xy3nu9n8mtp6                                              \ttrue       \t16.38kB\t\n71h0s4lvh0uxhgufa3b4ma6rn                                              \ttrue       \t1.99MB\t\nsnrjh1kqujr620q09yy800rxh*                                             \ttrue       \t4.10kB\t\nTotal:\t2.05MB\n";

fn week_prune(deadline_in: i64) -> Prune {
    Prune {
        keep_duration: std::time::Duration::from_secs(7 * 24 * 3600),
        keep_bytes: 40_000_000_000,
        deadline_unix: jiff::Timestamp::now().as_second() + deadline_in,
    }
}

/// Runs a successful build with a pruning fake on `state`; returns the exit code, the
/// termination message and the prune's arguments (empty when it did not run).
fn run_pruning(state: StateVolume, prune: Prune, fake_prune: &str) -> (i32, String, String) {
    let (args, env, mounts) = container_on(state, Some(prune));
    let node = node_with_secrets(&mounts);
    let (code, _) = node.run(&building_and_pruning(fake_prune), &args, &env);
    let pruned = std::fs::read_to_string(node.host("/tmp/hearth/prune.args")).unwrap_or_default();
    (code, node.termination_message(), pruned)
}

#[test]
fn a_readwrite_build_prunes_with_the_caches_gc_settings_and_reports_the_bytes() {
    let print = format!(
        "printf '{}'; exit 0",
        REAL_PRUNE_OUTPUT.replace('\n', "\\n").replace('\t', "\\t")
    );
    let (code, message, pruned) =
        run_pruning(StateVolume::Replica("r".into()), week_prune(3600), &print);
    assert_eq!(code, 0, "{message}");
    assert_eq!(
        pruned.trim(),
        "prune --keep-duration 604800s --keep-storage 40000"
    );
    let BuilderReport {
        prune, metadata, ..
    } = split_termination_message(&message);
    assert_eq!(
        prune,
        Some(CachePrune {
            result: PruneResult::Pruned,
            bytes: Some(2_050_000),
            message: None
        }),
        "{message}"
    );
    assert_eq!(metadata, r#"{"containerimage.digest":"sha256:abc"}"#);
    assert_eq!(
        digest_from_metadata(metadata).as_deref(),
        Some("sha256:abc")
    );
}

#[test]
fn a_throwaway_build_never_prunes() {
    // ReadOnly and Disabled builds: their volume is discarded, never saved.
    let (code, message, pruned) = run_pruning(
        StateVolume::Throwaway { seed: None },
        week_prune(3600),
        "echo 'Total:\t1.00GB'; exit 0",
    );
    assert_eq!(code, 0);
    assert_eq!(pruned, "", "the prune ran on a throwaway volume");
    assert_eq!(message, r#"{"containerimage.digest":"sha256:abc"}"#);
    assert_eq!(split_termination_message(&message).prune, None);
}

#[test]
fn a_failing_prune_does_not_fail_the_build() {
    // It printed records before failing, but no total: nothing is claimed.
    let (code, message, pruned) = run_pruning(
        StateVolume::Replica("r".into()),
        week_prune(3600),
        "printf 'ID\\tRECLAIMABLE\\tSIZE\\tLAST ACCESSED\\nabc\\ttrue\\t1.99MB\\t\\n'; echo 'error: failed to call prune: connection refused' >&2; exit 1",
    );
    assert_eq!(code, 0, "{message}");
    assert!(pruned.starts_with("prune "), "{pruned}");
    let BuilderReport {
        prune, metadata, ..
    } = split_termination_message(&message);
    let prune = prune.expect("a prune report");
    assert_eq!(prune.result, PruneResult::Failed);
    assert_eq!(prune.bytes, None);
    assert!(prune.message.unwrap_or_default().contains("exited 1"));
    assert_eq!(
        digest_from_metadata(metadata).as_deref(),
        Some("sha256:abc")
    );
}

#[test]
fn a_prune_is_skipped_when_the_builds_time_is_almost_up_and_stopped_before_it_is() {
    let (code, message, pruned) = run_pruning(
        StateVolume::Replica("r".into()),
        week_prune(35),
        "echo 'Total:\t0B'",
    );
    assert_eq!((code, pruned.as_str()), (0, ""), "{message}");
    let prune = split_termination_message(&message).prune.expect("report");
    assert_eq!(prune.result, PruneResult::Skipped, "{message}");

    // 30 s kept free, 12 s left: a prune that hangs is stopped, and the build still succeeds.
    let started = std::time::Instant::now();
    let (code, message, _) =
        run_pruning(StateVolume::Replica("r".into()), week_prune(42), "sleep 60");
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
    assert_eq!(code, 0, "{message}");
    let prune = split_termination_message(&message).prune.expect("report");
    assert_eq!(prune.result, PruneResult::Failed, "{message}");
    assert!(prune
        .message
        .unwrap_or_default()
        .contains("ran out of time"));
}

#[test]
fn buildkit_sizes_parse_as_its_units_print_them() {
    for (text, bytes) in [
        ("0B", Some(0)),
        ("123B", Some(123)),
        ("1.00kB", Some(1000)),
        ("16.38kB", Some(16_380)),
        ("2.05MB", Some(2_050_000)),
        ("1.99GB", Some(1_990_000_000)),
        ("3.50TB", Some(3_500_000_000_000)),
        ("1.5GiB", Some(1_610_612_736)),
        ("MB", None),
        ("", None),
        ("1.2.3MB", None),
        ("12 parrots", None),
        ("-1MB", None),
    ] {
        assert_eq!(parse_buildkit_bytes(text), bytes, "{text:?}");
    }
    // A report that is not a size, or no total at all, is a failed prune, not 0 bytes.
    for report in ["total lots", "failed 0"] {
        let message = format!("hearth-prune: {report}\n{{}}");
        let split = split_termination_message(&message);
        assert_eq!(
            split.prune.map(|p| p.result),
            Some(PruneResult::Failed),
            "{report}"
        );
        assert_eq!(split.metadata, "{}");
    }
}

/// buildctl's metadata file as BuildKit v0.11.6 wrote it here for a git context (indented; its
/// build info decoded), with a named context from another repository listed first.
const GIT_METADATA: &str = r#"{
  "containerimage.buildinfo": {
    "frontend": "dockerfile.v0",
    "attrs": {
      "context": "https://github.com/acme/shop.git",
      "filename": "Dockerfile"
    },
    "sources": [
      {
        "type": "git",
        "ref": "https://github.com/acme/protos.git#v3",
        "pin": "0000000000000000000000000000000000000003"
      },
      {
        "type": "git",
        "ref": "https://github.com/acme/shop.git",
        "pin": "1c2bbabf754d852521421e57e6878984a39c3a09"
      }
    ]
  },
  "containerimage.digest": "sha256:0e152308005fabdfe8ab692bc54564462a3569f0293ecc0ae872c6502db6376b"
}"#;

/// Runs the builder's script with a fake buildctl that succeeds and writes `metadata` as its
/// metadata file; the termination message the script wrote.
fn succeeded_with_metadata(metadata: &str) -> String {
    succeeded_with_content(metadata, &[])
}

/// As [`succeeded_with_metadata`], with `blobs` (sha256 hex, body) in buildkitd's content store
/// on the state volume, where the image exporter leaves the manifests it pushed.
fn succeeded_with_content(metadata: &str, blobs: &[(&str, &str)]) -> String {
    let (args, env, mounts) = container();
    let node = node_with_secrets(&mounts);
    let store = node.host("/cache/buildkit/runc-overlayfs/content/blobs/sha256");
    std::fs::create_dir_all(&store).unwrap();
    for (hex, body) in blobs {
        std::fs::write(store.join(hex), body).unwrap();
    }
    let meta = node.root.path().join("meta.json");
    std::fs::write(&meta, metadata).unwrap();
    let fake = format!(
        r##"while [ $# -gt 0 ]; do
  if [ "$1" = --metadata-file ]; then cp {} "$2"; fi
  shift
done
"##,
        meta.display()
    );
    let (code, _) = node.run(&fake, &args, &env);
    assert_eq!(code, 0);
    node.termination_message()
}

#[test]
fn a_git_build_reports_the_commit_buildkit_resolved() {
    let message = succeeded_with_metadata(GIT_METADATA);
    let report = split_termination_message(&message);
    assert_eq!(
        report.git_commit.as_deref(),
        Some("1c2bbabf754d852521421e57e6878984a39c3a09"),
        "{message}"
    );
    assert_eq!(
        digest_from_metadata(report.metadata).as_deref(),
        Some("sha256:0e152308005fabdfe8ab692bc54564462a3569f0293ecc0ae872c6502db6376b")
    );
}

#[test]
fn report_lines_are_read_in_any_order_and_a_malformed_commit_is_dropped() {
    let message =
        "hearth-git-commit: 1c2bbabf754d852521421e57e6878984a39c3a09\nhearth-prune: total 0B\n{}";
    let report = split_termination_message(message);
    assert_eq!(
        report.git_commit.as_deref(),
        Some("1c2bbabf754d852521421e57e6878984a39c3a09")
    );
    assert_eq!(report.prune.map(|p| p.result), Some(PruneResult::Pruned));
    assert_eq!(report.metadata, "{}");
    for bad in [
        "main",
        "1C2BBABF754D852521421E57E6878984A39C3A09",
        "$(reboot)",
    ] {
        let message = format!("hearth-git-commit: {bad}\n{{}}");
        assert_eq!(
            split_termination_message(&message).git_commit,
            None,
            "{bad}"
        );
    }
}

#[path = "build_script_git_tests.rs"]
mod git;

#[test]
fn buildkitds_configuration_is_written_where_its_config_flag_points_before_it_starts() {
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let config = OperatorConfig {
        buildkitd: serde_yaml::from_str(&format!(
            "registries: [{{host: docker.io, mirrors: [mirror.corp]}}, {{host: 'registry.internal:5000', ca: {pem:?}}}]"
        ))
        .unwrap(),
        ..Default::default()
    };
    let (args, env, mounts) =
        container_configured(&build(), StateVolume::Replica("r".into()), None, &config);
    let node = node_with_secrets(&mounts);
    let fake = r#"printf '%s' "$BUILDKITD_FLAGS" > "$HEARTH_WORK_DIR/flags"; exit 3"#;
    let (code, _) = node.run(fake, &args, &env);
    assert_eq!(code, 3, "{}", node.termination_message());
    let flags = std::fs::read_to_string(node.host("/tmp/hearth/flags")).unwrap();
    let config_file = flags
        .split_once("--config ")
        .map(|(_, rest)| rest.split(' ').next().unwrap_or(""))
        .unwrap_or_else(|| panic!("no --config in {flags}"));
    assert_eq!(
        config_file,
        node.rewrite("/tmp/hearth/buildkitd/buildkitd.toml")
    );
    let toml = std::fs::read_to_string(config_file).unwrap();
    let expected = config.buildkitd.render("/tmp/hearth/buildkitd").unwrap();
    assert_eq!(toml, node.rewrite(&expected.config.content));
    let ca = toml
        .lines()
        .find_map(|l| l.trim().strip_prefix("ca = [\""))
        .and_then(|l| l.strip_suffix("\"]"))
        .expect("a ca line");
    assert_eq!(std::fs::read_to_string(ca).unwrap(), pem);
}

#[test]
fn the_digest_survives_metadata_too_long_for_the_termination_message() {
    // A build info listing many sources sorts before the digest, and outgrows the message.
    let sources: Vec<String> = (0..60)
        .map(|i| {
            format!(
                "      {{\n        \"type\": \"docker-image\",\n        \"ref\": \"docker.io/library/base-{i}:latest\",\n        \"pin\": \"sha256:{}\"\n      }}",
                "e".repeat(64)
            )
        })
        .collect();
    let digest = format!("sha256:{}", "d".repeat(64));
    let metadata = format!(
        "{{\n  \"containerimage.buildinfo\": {{\n    \"sources\": [\n{}\n    ]\n  }},\n  \"containerimage.digest\": \"{digest}\"\n}}",
        sources.join(",\n")
    );
    assert!(metadata.len() > 8000);
    let message = succeeded_with_metadata(&metadata);
    assert!(message.len() <= 4096, "{} bytes", message.len());
    let report = split_termination_message(&message);
    assert_eq!(
        digest_from_metadata(report.metadata),
        None,
        "the cut metadata alone has lost it"
    );
    assert_eq!(report.digest.as_deref(), Some(digest.as_str()), "{message}");
}

/// Hex digests of the content-store blobs below (names only: the script reads them by name).
const INDEX: &str = "d2c23df245ed9b290a5ad92f9ee658578a6da048725a2a9fdb86a93974d625f2";
const AMD64: &str = "bed97f9ba111838b96d6eddfc05893f8ba14c1918406d93e23f3d85a46f58706";
const ARM64: &str = "aa97f9ba111838b96d6eddfc05893f8ba14c1918406d93e23f3d85a46f587000";
const ATTESTATION: &str = "ef933740971955ebe8aac1c9fd97b18a5c588f115c105391a3ff7efb2dad1c28";

/// A manifest as BuildKit 0.11.6 writes it (indented), its config and layers of these sizes.
fn manifest(config: (char, u64), layers: &[(char, u64)], layer_type: &str) -> String {
    let desc = |(c, size): (char, u64), media: &str| {
        format!(
            "{{\n      \"mediaType\": \"{media}\",\n      \"digest\": \"sha256:{}\",\n      \"size\": {size}\n    }}",
            c.to_string().repeat(64)
        )
    };
    let layers: Vec<String> = layers.iter().map(|l| desc(*l, layer_type)).collect();
    format!(
        "{{\n  \"mediaType\": \"application/vnd.oci.image.manifest.v1+json\",\n  \"schemaVersion\": 2,\n  \"config\": {},\n  \"layers\": [\n    {}\n  ]\n}}",
        desc(config, "application/vnd.oci.image.config.v1+json"),
        layers.join(",\n    ")
    )
}

/// An index of two platforms and the attestation manifest of the first, as BuildKit writes it.
fn index() -> String {
    format!(
        r#"{{
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "schemaVersion": 2,
  "manifests": [
    {{
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "digest": "sha256:{AMD64}",
      "size": 669,
      "platform": {{ "architecture": "amd64", "os": "linux" }}
    }},
    {{
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "digest": "sha256:{ARM64}",
      "size": 669,
      "platform": {{ "architecture": "arm64", "os": "linux", "variant": "v8" }}
    }},
    {{
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "digest": "sha256:{ATTESTATION}",
      "size": 565,
      "annotations": {{
        "vnd.docker.reference.digest": "sha256:{AMD64}",
        "vnd.docker.reference.type": "attestation-manifest"
      }},
      "platform": {{ "architecture": "unknown", "os": "unknown" }}
    }}
  ]
}}"#
    )
}

fn metadata_for(hex: &str) -> String {
    format!(r#"{{"containerimage.digest": "sha256:{hex}"}}"#)
}

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

#[test]
fn the_image_size_is_its_config_and_layers_each_counted_once() {
    let one = manifest(('c', 703), &[('a', 300_273), ('b', 50_205)], GZIP);
    let message = succeeded_with_content(&metadata_for(AMD64), &[(AMD64, &one)]);
    assert_eq!(
        split_termination_message(&message).image_size,
        Some(703 + 300_273 + 50_205),
        "{message}"
    );

    // Two platforms sharing a base layer of 6 GB (past 32 bits); the attestation's in-toto
    // layer is not the image's.
    let amd = manifest(('c', 703), &[('a', 6_000_000_000), ('b', 50_205)], GZIP);
    let arm = manifest(('d', 710), &[('a', 6_000_000_000), ('e', 51_000)], GZIP);
    let att = manifest(('f', 241), &[('9', 9_999)], "application/vnd.in-toto+json");
    let index = index();
    let message = succeeded_with_content(
        &metadata_for(INDEX),
        &[
            (INDEX, &index),
            (AMD64, &amd),
            (ARM64, &arm),
            (ATTESTATION, &att),
        ],
    );
    assert_eq!(
        split_termination_message(&message).image_size,
        Some(703 + 6_000_000_000 + 50_205 + 710 + 51_000),
        "{message}"
    );
}

#[test]
fn an_image_size_is_not_reported_when_a_manifest_is_missing() {
    let amd = manifest(('c', 703), &[('a', 300_273)], GZIP);
    let index = index();
    for blobs in [vec![], vec![(INDEX, index.as_str()), (AMD64, amd.as_str())]] {
        let message = succeeded_with_content(&metadata_for(INDEX), &blobs);
        let report = split_termination_message(&message);
        assert_eq!(report.image_size, None, "{message}");
        assert_eq!(report.digest, Some(format!("sha256:{INDEX}")));
    }
}
