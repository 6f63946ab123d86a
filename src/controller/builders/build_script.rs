//! The builder container's shell script (busybox `sh`, `awk`, `find`, `tail`, `head`, `tee`,
//! as in BuildKit's rootless Alpine image), and the environment it reads. It runs
//! `buildctl-daemonless.sh` with the build's arguments, its output to the container log and to
//! a file, and writes the termination message itself: buildctl's metadata (the image digest)
//! on success; on failure the log's tail (the last [`TAIL_LINES`] lines, at most
//! [`TAIL_BYTES`] bytes) with every value of the mounted build, git and registry secrets
//! replaced by `***` (literal matching: secrets hold regex metacharacters). The container's
//! `terminationMessagePolicy` is `File`, so the kubelet never copies an unredacted log tail.

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

/// The script, run as `sh -c SCRIPT hearth-build BUILDCTL_ARGS...`. User values reach buildctl
/// only as separate arguments (`"$@"`), never through the shell.
pub fn script() -> String {
    let awk = REDACT_AWK.replace("MIN", &MIN_SECRET_CHARS.to_string());
    format!(
        r#"set -u
work="${WORK_DIR_ENV}"
out="${TERMINATION_LOG_ENV}"
mkdir -p "$work"
# buildctl's output to the container log and to a file; its exit status, not tee's.
{{ buildctl-daemonless.sh "$@" 2>&1; echo "$?" > "$work/buildctl.status"; }} | tee "$work/build.log"
status=$(cat "$work/buildctl.status" 2>/dev/null) || status=1
if [ "$status" = 0 ]; then
  head -c 4000 "$work/metadata.json" > "$out" && exit 0
  echo "buildctl succeeded but wrote no metadata file" > "$out"
  exit 1
fi
for dir in ${REDACT_DIRS_ENV}; do [ -d "$dir" ] && find "$dir" -type f; done > "$work/secret-files" 2>/dev/null
tail -n {TAIL_LINES} "$work/build.log" | awk -v list="$work/secret-files" '{awk}' | tail -c {TAIL_BYTES} > "$out"
exit "$status"
"#
    )
}

#[cfg(test)]
#[path = "build_script_tests.rs"]
mod tests;
