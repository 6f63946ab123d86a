//! The builder container's shell script (busybox `sh`, `awk`, `find`, `tail`, `head`, `tee`,
//! `timeout`, `date`, as in BuildKit's rootless Alpine image), and the environment it reads.
//! It runs `buildctl-daemonless.sh` with the build's arguments, its output to the container
//! log and to a file, and writes the termination message itself: buildctl's metadata (the
//! image digest) on success; on failure the log's tail (the last [`TAIL_LINES`] lines, at most
//! [`TAIL_BYTES`] bytes) with every value of the mounted build, git and registry secrets
//! replaced by `***` (literal matching: secrets hold regex metacharacters). The container's
//! `terminationMessagePolicy` is `File`, so the kubelet never copies an unredacted log tail.
//!
//! Git credentials ([`git_auth`]): the controller reads no Secret values and has no RBAC to
//! learn a Secret's type, so the whole git Secret is mounted and the script picks by which keys
//! exist, then adds BuildKit's own arguments: `username` and `password` (a
//! `kubernetes.io/basic-auth` Secret) become an `Authorization` header value (`basic
//! base64(user:pass)`, computed here into the scratch dir, never in env or args) passed as
//! `GIT_AUTH_HEADER.<host>`; a `token` key is passed as `GIT_AUTH_TOKEN.<host>`; `ssh-privatekey`
//! (a `kubernetes.io/ssh-auth` Secret) is forwarded as the default SSH agent key, and a
//! `known_hosts` key is enforced through an `ssh` wrapper first on buildkitd's `PATH`.
//!
//! buildkitd's configuration, when the operator config has one, comes in the environment and
//! is written to files before buildkitd starts (see [`BUILDKITD_CONFIG_ENV`]).
//!
//! On a replica (a ReadWrite build, whose state may be saved next), a successful build is
//! followed by `buildctl prune` with the BuildCache's gc settings ([`Prune`]); its outcome
//! goes back to the controller as the first line of the termination message
//! ([`split_termination_message`]). A prune that fails or runs out of time never fails the
//! build. For a git source, the commit BuildKit resolved (its build info's pin, in buildctl's
//! metadata) comes back the same way, and so does the image's size, read from the manifests
//! the image exporter left in buildkitd's content store.

use super::jobs::STATE_DIR;
use crate::api::{CachePrune, PruneResult};

/// Lines of the log a failure message keeps.
pub const TAIL_LINES: usize = 40;
/// Bytes of the log a failure message keeps (after redaction).
pub const TAIL_BYTES: usize = 2048;
/// Shortest secret value, or line of a multi-line value, that is redacted: shorter ones would
/// mask ordinary text of the log (and are not credentials).
pub const MIN_SECRET_CHARS: usize = 4;

/// Environment variable: the builder's scratch dir (buildctl's metadata file and log).
pub const WORK_DIR_ENV: &str = "HEARTH_WORK_DIR";
/// Environment variable: where the termination message goes.
pub const TERMINATION_LOG_ENV: &str = "HEARTH_TERMINATION_LOG";
/// Environment variable: the space-separated dirs whose files' values are redacted.
pub const REDACT_DIRS_ENV: &str = "HEARTH_REDACT_DIRS";
/// Environment variable: where the build's git Secret is mounted (all its keys); unset when
/// the build has no git credentials.
pub const GIT_SECRET_DIR_ENV: &str = "HEARTH_GIT_SECRET_DIR";
/// Environment variable: how the git source is fetched, `https` or `ssh`.
pub const GIT_TRANSPORT_ENV: &str = "HEARTH_GIT_TRANSPORT";
/// Environment variable: the git source's host (`host[:port]`, as BuildKit's git source takes
/// it from the URL), to scope the https credential to the repository's own host.
pub const GIT_HOST_ENV: &str = "HEARTH_GIT_HOST";
/// The dir, under the scratch dir, where the script writes the computed `Authorization`
/// header value; the pod lists it among the dirs to redact.
pub const GIT_AUTH_SUBDIR: &str = "git-auth";
/// Environment variable: the scratch dir's subdir where buildkitd's configuration is written.
pub const BUILDKITD_DIR_ENV: &str = "HEARTH_BUILDKITD_DIR";
/// Environment variable: `buildkitd.toml` (see [`crate::controller::buildkitd_config`]),
/// written to `$HEARTH_BUILDKITD_DIR/buildkitd.toml`.
pub const BUILDKITD_CONFIG_ENV: &str = "HEARTH_BUILDKITD_CONFIG";
/// Prefix of the environment variables holding CA bundles: `HEARTH_BUILDKITD_CA_<n>` is
/// written to `$HEARTH_BUILDKITD_DIR/ca-<n>.pem`, the file the TOML names.
pub const BUILDKITD_CA_ENV_PREFIX: &str = "HEARTH_BUILDKITD_CA_";
/// Environment variable: `buildctl prune --keep-duration` (a Go duration); the prune runs
/// only when the three `HEARTH_PRUNE_*` variables are set.
pub const PRUNE_KEEP_DURATION_ENV: &str = "HEARTH_PRUNE_KEEP_DURATION";
/// Environment variable: `buildctl prune --keep-storage`, in MB (10^6 bytes, as buildctl reads it).
pub const PRUNE_KEEP_STORAGE_ENV: &str = "HEARTH_PRUNE_KEEP_STORAGE_MB";
/// Environment variable: the build's deadline, in Unix seconds; the prune ends before it.
pub const PRUNE_DEADLINE_ENV: &str = "HEARTH_PRUNE_DEADLINE";
/// Seconds kept free before the deadline: the container's exit and clock skew between the
/// controller and the node. The pod's `activeDeadlineSeconds` would otherwise kill a prune
/// and turn a pushed image into a `Timeout`.
pub const PRUNE_DEADLINE_MARGIN_SECONDS: i64 = 30;
/// Longest a prune may run.
pub const PRUNE_MAX_SECONDS: i64 = 600;
/// A prune with less time than this left is skipped.
pub const PRUNE_MIN_SECONDS: i64 = 10;
/// Prefix of a termination message's line that carries the prune's outcome.
pub const PRUNE_REPORT_PREFIX: &str = "hearth-prune: ";
/// Prefix of a termination message's line that carries the image digest, taken out of buildctl's
/// metadata by the script: the metadata is cut to fit the message, and its build info (sorted
/// first) can push `containerimage.digest` past the cut.
pub const DIGEST_PREFIX: &str = "hearth-digest: ";
/// Prints the `sha256:...` of buildctl's metadata's `containerimage.digest`.
const DIGEST_AWK: &str = r#"match($0, /"containerimage\.digest"[ \t]*:[ \t]*"sha256:[0-9a-f]+"/) { s = substr($0, RSTART, RLENGTH); sub(/^.*"sha256:/, "sha256:", s); sub(/"$/, "", s); if (length(s) == 71) print s; exit }"#;
/// Prefix of a termination message's line that carries the image's size in bytes.
pub const IMAGE_SIZE_PREFIX: &str = "hearth-image-size: ";
/// Prints the image's size: the compressed bytes of its config and layers as pushed, each blob
/// counted once, for every platform of an index and without its attestation manifests (their
/// layers are `application/vnd.in-toto+json`). It reads the manifest (or index) named `root`
/// and the manifests it lists from buildkitd's content store (`blobs`), where the image
/// exporter left them; prints nothing when one is missing (the size is then unknown, never a
/// guess). Descriptors are `"digest":"sha256:<hex>","size":<n>` once whitespace is gone: the
/// order the OCI types serialize in.
const IMAGE_SIZE_AWK: &str = r#"
function slurp(hex,   f, line, body) {
  f = blobs "/" hex; body = ""
  while ((getline line < f) > 0) body = body line
  close(f); gsub(/[ \t\r]/, "", body); return body
}
function descriptors(body, hex, size,   n) {
  n = 0
  while (match(body, /"digest":"sha256:[0-9a-f]+","size":[0-9]+/)) {
    split(substr(body, RSTART + 17, RLENGTH - 17), part, "\",\"size\":")
    hex[++n] = part[1]; size[n] = part[2]; body = substr(body, RSTART + RLENGTH)
  }
  return n
}
function add(body,   hex, size, n, i) {
  n = descriptors(body, hex, size)
  for (i = 1; i <= n; i++) if (!(hex[i] in seen)) { seen[hex[i]] = 1; total += size[i] }
}
BEGIN {
  body = slurp(root); if (body == "") exit
  if (body ~ /"manifests":\[/) {
    n = descriptors(body, list, sizes)
    for (i = 1; i <= n; i++) {
      m = slurp(list[i]); if (m == "") exit
      if (m !~ /vnd\.in-toto\+json/) add(m)
    }
  } else add(body)
  if (total > 0) printf "%.0f\n", total
}
"#;
/// Prefix of a termination message's line that carries the git commit BuildKit resolved.
pub const GIT_COMMIT_PREFIX: &str = "hearth-git-commit: ";
/// Environment variable: the git source's URL, whose resolved commit the script reports.
pub const GIT_URL_ENV: &str = "HEARTH_GIT_URL";

/// Finds, in buildctl's metadata file (indented JSON; BuildKit v0.11+ writes its build info's
/// sources there, each `type`, `ref`, `pin` on its own line), the pin of the git source whose
/// ref is the build's URL (with `#ref[:dir]` or not), and prints it if it is a commit id.
const GIT_PIN_AWK: &str = r##"
function val(line) { sub(/^[^:]*:[ 	]*"/, "", line); sub(/"[ 	]*,?[ 	]*$/, "", line); return line }
/^[ 	]*"type":/ { type = val($0) }
/^[ 	]*"ref":/ { ref = val($0) }
/^[ 	]*"pin":/ {
  pin = val($0)
  if (type == "git" && (ref == url || index(ref, url "#") == 1) && pin ~ /^[0-9a-f]+$/ && (length(pin) == 40 || length(pin) == 64)) { print pin; exit }
}
"##;

/// Reads every file under the dirs named in `list` (one path a line) and replaces each value
/// and each line of a value, and each credential string of a JSON file (`auth`, `password`,
/// `identitytoken`, `registrytoken`: a registry's `config.json`), longest first, by `***`,
/// with `index`/`substr` only (no regex built from a secret).
const REDACT_AWK: &str = r#"
function add(s) { if (length(s) >= MIN) { n++; needle[n] = s } }
function json_values(line,   parts, m, k, key) {
  m = split(line, parts, "\"")
  for (k = 2; k + 2 <= m; k += 2) {
    key = tolower(parts[k])
    if ((key == "auth" || key == "password" || key == "identitytoken" || key == "registrytoken") && parts[k + 1] ~ /^[ \t]*:[ \t]*$/) add(parts[k + 2])
  }
}
BEGIN {
  while ((getline f < list) > 0) {
    while ((getline line < f) > 0) {
      sub(/\r$/, "", line)
      add(line)
      json_values(line)
    }
    close(f)
  }
  close(list)
  for (i = 2; i <= n; i++) {
    s = needle[i]
    for (j = i - 1; j >= 1 && length(needle[j]) < length(s); j--) needle[j + 1] = needle[j]
    needle[j + 1] = s
  }
}
{
  text = $0
  for (k = 1; k <= n; k++) {
    out = ""
    while ((p = index(text, needle[k])) > 0) {
      out = out substr(text, 1, p - 1) "***"
      text = substr(text, p + length(needle[k]))
    }
    text = out text
  }
  print text
}
"#;

/// The script's git-credential step: appends BuildKit's git arguments to `"$@"` by which keys
/// the mounted Secret has (see the module header). Secret values go only through files and
/// pipes (`tr`, `base64`), never a command's arguments; `printf` is a shell builtin.
///
/// BuildKit's git source (v0.11 to v0.25) looks up `GIT_AUTH_HEADER.<host>`, then
/// `GIT_AUTH_TOKEN.<host>`, then the unscoped ids, and sends the header value as
/// `Authorization: <value>` (a token as `basic base64(x-access-token:<token>)`); host-scoped ids
/// keep the credential from being sent to other hosts a Dockerfile fetches from. For SSH, the
/// Dockerfile frontend builds the main git context itself and cannot be given known hosts: it
/// trusts the key an `ssh-keyscan` of the host returns (or, when the scan fails, runs ssh with
/// `StrictHostKeyChecking=no`). BuildKit runs `ssh` from its `PATH`; ssh keeps the first value
/// of each option, so a wrapper that puts `UserKnownHostsFile=<known_hosts>`,
/// `GlobalKnownHostsFile=/dev/null` and `StrictHostKeyChecking=yes` before BuildKit's own
/// options makes the Secret's `known_hosts` the only hosts trusted.
pub fn git_auth() -> String {
    format!(
        r#"git_dir="${{{GIT_SECRET_DIR_ENV}:-}}"
if [ -n "$git_dir" ]; then
  case "${{{GIT_TRANSPORT_ENV}:-}}" in
  ssh)
    [ -f "$git_dir/ssh-privatekey" ] || fail "the git Secret has no ssh-privatekey key (an SSH URL needs a kubernetes.io/ssh-auth Secret)"
    set -- "$@" --ssh "default=$git_dir/ssh-privatekey"
    if [ -f "$git_dir/known_hosts" ]; then
      real_ssh=$(command -v ssh) || fail "the git Secret has known_hosts but the builder image has no ssh"
      mkdir -p "$work/bin"
      printf '#!/bin/sh\nexec %s -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null -o UserKnownHostsFile=%s "$@"\n' "$real_ssh" "$git_dir/known_hosts" > "$work/bin/ssh"
      chmod 755 "$work/bin/ssh"
      PATH="$work/bin:$PATH"
      export PATH
    fi
    ;;
  https)
    host="${GIT_HOST_ENV}"
    if [ -f "$git_dir/username" ] || [ -f "$git_dir/password" ]; then
      [ -f "$git_dir/username" ] && [ -f "$git_dir/password" ] || fail "the git Secret needs both username and password (a kubernetes.io/basic-auth Secret), or a token key"
      auth="$work/{GIT_AUTH_SUBDIR}"
      (
        umask 077
        mkdir -p "$auth"
        {{ tr -d '\r\n' < "$git_dir/username"; printf ':'; tr -d '\r\n' < "$git_dir/password"; }} | base64 | tr -d '\n' > "$auth/basic"
        {{ printf 'basic '; cat "$auth/basic"; }} > "$auth/header"
      ) || fail "could not write the git Authorization header"
      set -- "$@" --secret "id=GIT_AUTH_HEADER.$host,src=$auth/header"
    elif [ -f "$git_dir/token" ]; then
      set -- "$@" --secret "id=GIT_AUTH_TOKEN.$host,src=$git_dir/token"
    else
      fail "the git Secret has neither username and password (kubernetes.io/basic-auth) nor token keys"
    fi
    ;;
  esac
fi
"#
    )
}

/// The script, run as `sh -c SCRIPT hearth-build BUILDCTL_ARGS...`. User values reach buildctl
/// only as separate arguments (`"$@"`), never through the shell.
pub fn script() -> String {
    let awk = REDACT_AWK.replace("MIN", &MIN_SECRET_CHARS.to_string());
    let git_auth = git_auth();
    format!(
        r#"set -u
work="${WORK_DIR_ENV}"
out="${TERMINATION_LOG_ENV}"
mkdir -p "$work"
fail() {{ echo "hearth: $1" >&2; echo "$1" > "$out"; exit 1; }}
{git_auth}if [ -n "${{{BUILDKITD_CONFIG_ENV}:-}}" ]; then
  # buildkitd's configuration, from the pod's spec, before buildkitd starts (its --config).
  mkdir -p "${BUILDKITD_DIR_ENV}" || fail "could not create ${BUILDKITD_DIR_ENV}"
  printf '%s' "${BUILDKITD_CONFIG_ENV}" > "${BUILDKITD_DIR_ENV}/buildkitd.toml" || fail "could not write buildkitd.toml"
  awk -v dir="${BUILDKITD_DIR_ENV}" 'BEGIN {{ n = length("{BUILDKITD_CA_ENV_PREFIX}"); for (k in ENVIRON) if (substr(k, 1, n) == "{BUILDKITD_CA_ENV_PREFIX}" && substr(k, n + 1) ~ /^[0-9]+$/) {{ f = dir "/ca-" substr(k, n + 1) ".pem"; printf "%s", ENVIRON[k] > f; close(f) }} }}' || fail "could not write buildkitd's CA bundles"
fi
# buildctl's output to the container log and to a file; its exit status, not tee's.
{{ buildctl-daemonless.sh "$@" 2>&1; echo "$?" > "$work/buildctl.status"; }} | tee "$work/build.log"
status=$(cat "$work/buildctl.status" 2>/dev/null) || status=1
if [ "$status" = 0 ]; then
  if [ ! -f "$work/metadata.json" ]; then
    echo "buildctl succeeded but wrote no metadata file" > "$out"
    exit 1
  fi
  report=
  if [ -n "${{{PRUNE_KEEP_DURATION_ENV}:-}}" ] && [ -n "${{{PRUNE_KEEP_STORAGE_ENV}:-}}" ] && [ -n "${{{PRUNE_DEADLINE_ENV}:-}}" ]; then
    # Drop what no recent build used before the state can be saved; never fails the build.
    left=$(( ${PRUNE_DEADLINE_ENV} - $(date +%s) - {PRUNE_DEADLINE_MARGIN_SECONDS} ))
    [ "$left" -gt {PRUNE_MAX_SECONDS} ] && left={PRUNE_MAX_SECONDS}
    if [ "$left" -lt {PRUNE_MIN_SECONDS} ]; then
      report="skipped $left"
    else
      echo "hearth: buildctl prune --keep-duration ${PRUNE_KEEP_DURATION_ENV} --keep-storage ${PRUNE_KEEP_STORAGE_ENV} (at most ${{left}}s)"
      # To a file, not a pipe: a child that outlives the timeout cannot hold the script.
      timeout "$left" buildctl-daemonless.sh prune --keep-duration "${PRUNE_KEEP_DURATION_ENV}" --keep-storage "${PRUNE_KEEP_STORAGE_ENV}" > "$work/prune.log" 2>&1
      pruned=$?
      cat "$work/prune.log"
      total=$(awk '$1 == "Total:" {{ t = $2 }} END {{ print t }}' "$work/prune.log")
      if [ "$pruned" = 0 ] && [ -n "$total" ]; then report="total $total"; else report="failed $pruned"; fi
    fi
  fi
  digest=$(awk '{DIGEST_AWK}' "$work/metadata.json")
  size=
  if [ -n "$digest" ]; then
    # The image exporter left the manifests in buildkitd's content store (the worker's dir).
    for blobs in {STATE_DIR}/runc-*/content/blobs/sha256; do
      [ -f "$blobs/${{digest#sha256:}}" ] && size=$(awk -v blobs="$blobs" -v root="${{digest#sha256:}}" '{IMAGE_SIZE_AWK}' < /dev/null) && break
    done
  fi
  commit=
  if [ -n "${{{GIT_URL_ENV}:-}}" ]; then
    commit=$(awk -v url="${GIT_URL_ENV}" '{GIT_PIN_AWK}' "$work/metadata.json")
  fi
  {{
    [ -n "$report" ] && printf '{PRUNE_REPORT_PREFIX}%s\n' "$report" | head -c 80
    [ -n "$digest" ] && printf '{DIGEST_PREFIX}%s\n' "$digest" | head -c 90
    [ -n "$size" ] && printf '{IMAGE_SIZE_PREFIX}%s\n' "$size" | head -c 45
    [ -n "$commit" ] && printf '{GIT_COMMIT_PREFIX}%s\n' "$commit"
    head -c {METADATA_BYTES} "$work/metadata.json"
  }} > "$out"
  exit 0
fi
for dir in ${REDACT_DIRS_ENV}; do [ -d "$dir" ] && find "$dir" -type f; done > "$work/secret-files" 2>/dev/null
tail -n {TAIL_LINES} "$work/build.log" | awk -v list="$work/secret-files" '{awk}' | tail -c {TAIL_BYTES} > "$out"
exit "$status"
"#
    )
}

/// Bytes of buildctl's metadata a termination message keeps (the kubelet keeps 4096; the
/// prune's line comes first, at most 80, then the digest's, at most 90, the size's, at most
/// 45, and the commit's, at most 84).
pub const METADATA_BYTES: usize = 3700;

/// The prune after a ReadWrite build: what it keeps, from the BuildCache's gc settings, and
/// when the build's time is up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prune {
    /// Records used more recently than this are kept (`--keep-duration`).
    pub keep_duration: std::time::Duration,
    /// BuildKit prunes only while the cache holds more than this (`--keep-storage`).
    pub keep_bytes: u64,
    /// The build's deadline, in Unix seconds.
    pub deadline_unix: i64,
}

impl Prune {
    /// The builder container's environment for the prune step.
    pub fn env(&self) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
        [
            (
                PRUNE_KEEP_DURATION_ENV,
                format!("{}s", self.keep_duration.as_secs()),
            ),
            (
                PRUNE_KEEP_STORAGE_ENV,
                (self.keep_bytes / 1_000_000).max(1).to_string(),
            ),
            (PRUNE_DEADLINE_ENV, self.deadline_unix.to_string()),
        ]
        .into_iter()
        .map(|(name, value)| super::jobs::env_var(name, &value))
        .collect()
    }
}

/// What a successful builder reports in its termination message.
#[derive(Debug, PartialEq)]
pub struct BuilderReport<'a> {
    /// The prune's outcome, when it ran.
    pub prune: Option<CachePrune>,
    /// The image digest (`sha256:` and 64 hex digits), taken from the whole metadata file.
    pub digest: Option<String>,
    /// The commit BuildKit resolved the git source to, when it said.
    pub git_commit: Option<String>,
    /// The image's size in bytes (config and layers, compressed), when the script could read it.
    pub image_size: Option<i64>,
    /// buildctl's metadata (JSON, possibly cut).
    pub metadata: &'a str,
}

/// Splits a successful builder's termination message into the script's report lines (each
/// `hearth-...: `, before the metadata) and buildctl's metadata.
pub fn split_termination_message(message: &str) -> BuilderReport<'_> {
    let mut report = BuilderReport {
        prune: None,
        digest: None,
        git_commit: None,
        image_size: None,
        metadata: message,
    };
    loop {
        let rest = report.metadata;
        let (line, after) = rest.split_once('\n').unwrap_or((rest, ""));
        if let Some(prune) = line.strip_prefix(PRUNE_REPORT_PREFIX) {
            report.prune = Some(prune_outcome(prune.trim()));
        } else if let Some(digest) = line.strip_prefix(DIGEST_PREFIX) {
            let digest = digest.trim();
            let hex = digest.strip_prefix("sha256:").unwrap_or_default();
            let is_digest =
                hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            report.digest = is_digest.then(|| digest.to_string());
        } else if let Some(commit) = line.strip_prefix(GIT_COMMIT_PREFIX) {
            let commit = commit.trim();
            let is_id = matches!(commit.len(), 40 | 64)
                && commit
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
            report.git_commit = is_id.then(|| commit.to_string());
        } else if let Some(size) = line.strip_prefix(IMAGE_SIZE_PREFIX) {
            report.image_size = size.trim().parse().ok().filter(|n: &i64| *n > 0);
        } else {
            return report;
        }
        report.metadata = after;
    }
}

/// The status of a prune from the script's report: `total <buildctl's Total>`, `failed <exit>`
/// or `skipped <seconds left>`.
fn prune_outcome(report: &str) -> CachePrune {
    let (word, value) = report.split_once(' ').unwrap_or((report, ""));
    let failed = |message: String| CachePrune {
        result: PruneResult::Failed,
        bytes: None,
        message: Some(message),
    };
    match word {
        "total" => match parse_buildkit_bytes(value) {
            Some(bytes) => CachePrune {
                result: PruneResult::Pruned,
                bytes: Some(i64::try_from(bytes).unwrap_or(i64::MAX)),
                message: None,
            },
            None => failed(format!("buildctl prune printed a total that is not a size: {value:?}")),
        },
        "failed" => failed(match value {
            "124" | "137" | "143" => format!("buildctl prune ran out of time (exit {value}); the cache was saved unpruned"),
            "0" => "buildctl prune exited 0 but printed no `Total:` line; the cache was saved as it was".to_string(),
            _ => format!("buildctl prune exited {value}; the cache was saved unpruned"),
        }),
        "skipped" => CachePrune {
            result: PruneResult::Skipped,
            bytes: None,
            message: Some(format!(
                "too little of spec.timeout was left after the build ({value}s once {PRUNE_DEADLINE_MARGIN_SECONDS}s are kept free; the prune needs {PRUNE_MIN_SECONDS}s)"
            )),
        },
        _ => failed(format!("unknown prune report {report:?}")),
    }
}

/// Bytes from a size as BuildKit prints it (`github.com/tonistiigi/units`, `%.2f`): `0B`,
/// `123B`, `2.05MB`, `1.00kB`, decimal units up to `EB`; binary ones (`1.5GiB`) too.
pub fn parse_buildkit_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return None;
    }
    let number: f64 = number.parse().ok()?;
    const DECIMAL: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    const BINARY: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let scale = match (
        DECIMAL.iter().position(|u| *u == unit),
        BINARY.iter().position(|u| *u == unit),
    ) {
        (Some(exp), _) => 1e3f64.powi(exp as i32),
        (None, Some(exp)) => 1024f64.powi(exp as i32),
        (None, None) => return None,
    };
    let bytes = (number * scale).round();
    (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
#[path = "build_script_tests.rs"]
mod tests;
