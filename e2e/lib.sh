# shellcheck shell=bash disable=SC2034 # the names are used by the scripts that source this file
# Shared by up.sh, run.sh and down.sh: names, a kubectl bound to the e2e cluster, assertions.

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$E2E_DIR/.." && pwd)
CLUSTER=${E2E_CLUSTER:-hearth-e2e}        # kind cluster name
CONTEXT=kind-$CLUSTER                     # its kubectl context (kind's naming)
NS=hearth-e2e                             # where the builds run
SYSTEM_NS=hearth-system                   # where the controller runs
CONTROLLER_SELECTOR=app.kubernetes.io/name=hearth  # the controller pods (chart's selector labels)
HEARTH_IMAGE=${HEARTH_IMAGE:-ghcr.io/hearth-dev/hearth:e2e}
BUILDKIT_IMAGE=${BUILDKIT_IMAGE:-docker.io/moby/buildkit:v0.25.1-rootless}
GITD_IMAGE=hearth-e2e-gitd:1
REGISTRY_IMAGE=${REGISTRY_IMAGE:-docker.io/library/registry:2.8.3}
# The in-cluster registry the builds push to, as image references name it (plain HTTP: see
# buildkitd.registries in e2e/values.yaml).
REGISTRY=registry.registry.svc.cluster.local:5000
# MinIO stopped publishing new images in 2025; these tags were published and are pinned.
# Override both when your registry mirror has others.
MINIO_IMAGE=${MINIO_IMAGE:-docker.io/minio/minio:RELEASE.2025-04-22T22-12-26Z}
MC_IMAGE=${MC_IMAGE:-docker.io/minio/mc:RELEASE.2025-04-16T18-13-26Z}
MINIO_USER=hearth-e2e
# What the scenario scripts share: the run's id (its cache keys and image tags; pass
# E2E_RUN_ID to continue a run), the test context's repository, and how long a build may take.
RUN=${E2E_RUN_ID:-$(date +%H%M%S)}
GIT_URL="git://gitd.$NS.svc.cluster.local/app.git"
BUILD_TIMEOUT=${E2E_BUILD_TIMEOUT:-900}    # seconds a build may take, image pulls included
MINIO_PASSWORD=hearth-e2e-not-a-secret
BUCKET=hearth

# The nodes' architecture (kind's nodes run the host's): builds without platforms run on it
# (up.sh sets builder.defaultArch to it), and every cache key in use ends in @$E2E_ARCH.
host_arch() { case "$(uname -m)" in x86_64 | amd64) echo amd64 ;; aarch64 | arm64) echo arm64 ;; *) uname -m ;; esac; }
E2E_ARCH=${E2E_ARCH:-$(host_arch)}
export E2E_ARCH
scoped() { printf '%s@%s' "$1" "$E2E_ARCH"; } # the key in use for cache.key KEY

kc() { kubectl --context "$CONTEXT" "$@"; }

log() { printf '\n== %s\n' "$*"; }
info() { printf '   %s\n' "$*"; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
# Whether an Event with reason $1 about object $2 exists in $NS (events.k8s.io or core fields).
event_seen() { kc -n "$NS" get events -o json | jq -e --arg r "$1" --arg o "$2" '.items[] | select(.reason == $r and .regarding.name == $o or .reason == $r and .involvedObject.name == $o)' >/dev/null; }

need() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null || die "$c is needed on PATH (see e2e/README.md)"
  done
}

# assert_eq ACTUAL EXPECTED WHAT
assert_eq() {
  [[ "$1" == "$2" ]] || die "$3: got '$1', expected '$2'"
  info "ok: $3 = '$1'"
}

# assert_ne ACTUAL UNEXPECTED WHAT
assert_ne() {
  [[ "$1" != "$2" ]] || die "$3: got '$1', expected anything else"
  info "ok: $3 = '$1' (not '$2')"
}

# assert_match ACTUAL REGEX WHAT
assert_match() {
  [[ "$1" =~ $2 ]] || die "$3: got '$1', expected to match /$2/"
  info "ok: $3 = '$1'"
}

# retry SECONDS WHAT CMD...: run CMD every 2 s until it succeeds or SECONDS pass.
retry() {
  local timeout=$1 what=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    ((SECONDS < deadline)) || die "timed out after ${timeout}s: $what"
    sleep 2
  done
}

# leader: the identity holding the controller's Lease; fails when none does.
leader() {
  local holder
  holder=$(kc -n "$SYSTEM_NS" get lease hearth-controller -o jsonpath='{.spec.holderIdentity}' 2>/dev/null) || return 1
  [[ -n "$holder" ]] && echo "$holder"
}

# controller_logs: the controller pods and their logs, the previous container's too (a
# crash-looping controller's panic is there), for someone debugging a controller that is not
# Ready.
controller_logs() {
  echo "--- controller pods"
  kc -n "$SYSTEM_NS" get pods -l "$CONTROLLER_SELECTOR" -o wide 2>&1 || true
  echo "--- controller logs (last 60 lines per pod)"
  kc -n "$SYSTEM_NS" logs -l "$CONTROLLER_SELECTOR" --all-containers --prefix --tail=60 2>&1 || true
  echo "--- previous controller containers (after a restart)"
  kc -n "$SYSTEM_NS" logs -l "$CONTROLLER_SELECTOR" --all-containers --prefix --previous --tail=60 2>&1 || true
}

# controller_ready [SECONDS]: every controller pod is Ready, i.e. its /readyz answers: it
# reached the API server (over TLS) and its caches synced. Dies with the controllers' logs
# otherwise. A controller that panics at its first connection to the API server never gets
# there (it once did exactly that, and only a build timing out showed it). Waits in rounds of
# 20 s: a pod of the previous rollout still terminating is never Ready, and kubectl wait gives
# up on it when it is gone; the next round no longer sees it.
controller_ready() {
  local deadline=$((SECONDS + ${1:-180}))
  until kc -n "$SYSTEM_NS" wait --for=condition=Ready pod -l "$CONTROLLER_SELECTOR" --timeout=20s; do
    if ((SECONDS >= deadline)); then
      controller_logs >&2
      die "the controller pods ($CONTROLLER_SELECTOR in $SYSTEM_NS) are not Ready after ${1:-180}s (logs above)"
    fi
    sleep 2
  done
}

# wait_snapshotted NAME [SECONDS]: until the ImageBuild's Snapshotted condition is True. A
# ReadWrite build is Succeeded as soon as its image is pushed; the save runs after that
# (Snapshotted=Unknown), so anything that needs the snapshot (or the replica free again) must
# wait for this, not for Succeeded. Dies when the save failed (Snapshotted=False).
wait_snapshotted() {
  local deadline=$((SECONDS + ${2:-600})) json s
  while :; do
    json=$(kc -n "$NS" get imagebuild "$1" -o json)
    s=$(jq -r '.status.conditions[]? | select(.type == "Snapshotted") | .status' <<<"$json")
    case $s in
      True)
        info "ok: $1 Snapshotted = 'True'"
        return 0 ;;
      False) die "$1 Snapshotted=False: $(jq -r '.status.conditions[]? | select(.type == "Snapshotted") | .message' <<<"$json")" ;;
    esac
    ((SECONDS < deadline)) || die "timed out after ${2:-600}s waiting for $1 Snapshotted=True (now '${s:-absent}')"
    sleep 2
  done
}

# check_scenarios "KNOWN..." NAME...: dies on a name that is not among the known ones.
# imagebuild NAME KEY MODE [SLEEP] [CACHE] [RESTORE_KEY] [SPEC]: apply an ImageBuild of the
# test context (git source from the in-cluster gitd, with a cacheRef when CACHE is given,
# restoreKeys [RESTORE_KEY] when that is, and SPEC's lines, indented as spec fields, added).
imagebuild() {
  local name=$1 key=$2 mode=$3 sleep=${4:-0} ref="" restore="" extra=${7:-}
  [[ -n "${5:-}" ]] && ref="cacheRef: $5"
  [[ -n "${6:-}" ]] && restore="restoreKeys: [\"$6\"]"
  kc apply -f - <<YAML
apiVersion: hearth.dev/v1alpha1
kind: ImageBuild
metadata:
  name: $name
  namespace: $NS
  labels:
    e2e.hearth.dev/run: "$RUN"
spec:
  source:
    git:
      url: $GIT_URL
      revision: main
  buildArgs:
    RUN_ID: "$name"
    SLEEP: "$sleep"
  $extra
  output:
    image: $REGISTRY/e2e/app:$name
  cache:
    key: "$key"
    mode: $mode
    $ref
    $restore
  timeout: 20m
YAML
}

check_scenarios() {
  local known=$1 s
  shift
  for s in "$@"; do
    [[ " $known " == *" $s "* ]] || die "unknown scenario '$s' (known: $known)"
  done
}

# The in-cluster registry ($REGISTRY, e2e/up.sh), read from inside its pod.

# Run in the registry's pod (busybox wget and sha256sum): the manifest of repository $1 at tag
# or digest $2, as the registry serves it to a client that takes every image media type; its
# digest first (sha256 of the exact bytes, as the registry computes it), then the manifest.
# shellcheck disable=SC2016 # expanded by the shell in the registry's pod
FETCH_MANIFEST='f=/tmp/manifest.$$
wget -q -O "$f" \
  --header "Accept: application/vnd.oci.image.index.v1+json" \
  --header "Accept: application/vnd.oci.image.manifest.v1+json" \
  --header "Accept: application/vnd.docker.distribution.manifest.list.v2+json" \
  --header "Accept: application/vnd.docker.distribution.manifest.v2+json" \
  "http://localhost:5000/v2/$1/manifests/$2" || { rm -f "$f"; echo "no manifest $1 $2 in the registry" >&2; exit 1; }
echo "sha256:$(sha256sum "$f" | cut -d " " -f 1)"
cat "$f"
rm -f "$f"'

# manifest REF: the digest line, then the manifest, of REF (REPO:TAG or REPO@DIGEST in
# $REGISTRY). Fails when the registry has no such manifest.
manifest() {
  local path=${1#"$REGISTRY/"} repo ref
  [[ "$path" != "$1" ]] || die "$1 is not in the e2e registry $REGISTRY"
  if [[ "$path" == *@* ]]; then
    repo=${path%@*} ref=${path#*@}
  else
    repo=${path%:*} ref=${path##*:}
  fi
  kc -n registry exec deploy/registry -c registry -- sh -c "$FETCH_MANIFEST" fetch "$repo" "$ref"
}
digest_of() {
  local m
  m=$(manifest "$1") && head -1 <<<"$m"
}
manifest_body() {
  local m
  m=$(manifest "$1") && tail -n +2 <<<"$m"
}

# scenario_main LABEL CRD NOTE [NAME...]: a scenario script's main. Hearth is installed (CRD
# is there), the scenarios asked (all of the script's ALL when none) are known, the controller
# is Ready (one that cannot reach the API server fails here, with its logs, not as builds that
# never start), then run_scenarios LABEL; NOTE ends the opening log line.
scenario_main() {
  local label=$1 crd=$2 note=$3
  shift 3
  kc get crd "$crd" >/dev/null 2>&1 || die "no Hearth on context $CONTEXT: run e2e/up.sh first"
  local scenarios=("$@")
  ((${#scenarios[@]})) || scenarios=("${ALL[@]}")
  check_scenarios "${ALL[*]}" "${scenarios[@]}"
  log "$label run $RUN: ${scenarios[*]}${note:+, $note}"
  controller_ready "${E2E_READY_TIMEOUT:-120}"
  info "ok: controller pods Ready"
  run_scenarios "$label" "${scenarios[@]}"
}

# run_scenarios LABEL NAME...: runs each scenario_NAME in a subshell under set -e, says PASS
# or FAIL with its time, ends with "LABEL: N passed, M failed"; fails when any failed.
run_scenarios() {
  local label=$1 s start rc passed=0
  shift
  local failed=()
  for s in "$@"; do
    log "scenario $s"
    start=$SECONDS
    set +e
    ( set -e; "scenario_${s//-/_}" )
    rc=$?
    set -e
    if ((rc == 0)); then
      passed=$((passed + 1))
      info "PASS $s ($((SECONDS - start))s)"
    else
      failed+=("$s")
      info "FAIL $s ($((SECONDS - start))s)"
    fi
  done
  log "summary (run $RUN)"
  ((${#failed[@]} == 0)) || info "failed: ${failed[*]}"
  echo "$label: $passed passed, ${#failed[@]} failed"
  ((${#failed[@]} == 0))
}

# ------------------------------------------------------------------ builds
# (the scripts that build set RUN, GIT_URL and BUILD_TIMEOUT)

ib() { kc -n "$NS" get imagebuild "$1" -o json; }
ibf() { ib "$1" | jq -r "$2 // empty"; }                  # one field of an ImageBuild
condition() { ibf "$1" ".status.conditions[]? | select(.type == \"$2\") | .status"; }

# dump NAME: what someone debugging a failed build wants to see.
dump() {
  echo "--- ImageBuild $1 status"
  ib "$1" | jq '.status' || true
  echo "--- events"
  kc -n "$NS" get events --field-selector "involvedObject.name=$1" --sort-by=.lastTimestamp 2>/dev/null | tail -20 || true
  echo "--- pods and jobs of the build"
  kc -n "$NS" get pods,jobs -l "hearth.dev/build=$1" -o wide 2>/dev/null || true
  local pod
  for pod in $(kc -n "$NS" get pods -l "hearth.dev/build=$1" -o name 2>/dev/null); do
    echo "--- log of $pod (last 30 lines)"
    kc -n "$NS" logs "$pod" --all-containers --tail=30 2>/dev/null || true
  done
  echo "--- controller log (last 40 lines)"
  kc -n "$SYSTEM_NS" logs deploy/hearth --tail=40 2>/dev/null || true
}

# wait_builds NAME...: until every build is terminal; fails unless all Succeeded. Calls
# $ON_POLL (if set) on every round, for scenarios that watch something while builds run.
wait_builds() {
  local deadline=$((SECONDS + BUILD_TIMEOUT)) name phase pending last=""
  while :; do
    pending=()
    local now=""
    for name in "$@"; do
      phase=$(ibf "$name" '.status.phase')
      now+="$name=${phase:-none} "
      case $phase in
        Succeeded) ;;
        Failed | Cancelled)
          dump "$name"
          die "$name ended $phase: $(ibf "$name" '.status.message')" ;;
        *) pending+=("$name") ;;
      esac
    done
    [[ "$now" != "$last" ]] && info "phases: $now" && last=$now
    [[ -n "${ON_POLL:-}" ]] && "$ON_POLL"
    ((${#pending[@]} == 0)) && return 0
    if ((SECONDS > deadline)); then
      for name in "${pending[@]}"; do dump "$name"; done
      die "timed out after ${BUILD_TIMEOUT}s waiting for ${pending[*]}"
    fi
    sleep 2
  done
}

# wait_phase NAME PHASE: until the build reaches PHASE (or a later one).
wait_phase() {
  local deadline=$((SECONDS + BUILD_TIMEOUT)) phase
  while :; do
    phase=$(ibf "$1" '.status.phase')
    [[ "$phase" == "$2" ]] && return 0
    case $phase in Succeeded | Failed | Cancelled) dump "$1"; die "$1 reached $phase before $2" ;; esac
    ((SECONDS < deadline)) || { dump "$1"; die "timed out waiting for $1 to reach $2"; }
    sleep 1
  done
}

# assert_succeeded NAME WARMTH: the status every successful build must show.
assert_succeeded() {
  local name=$1 json c
  json=$(ib "$name")
  f() { jq -r "$1 // empty" <<<"$json"; }
  assert_eq "$(f .status.phase)" Succeeded "$name phase"
  assert_eq "$(f .status.placement.warmth)" "$2" "$name placement.warmth"
  assert_match "$(f .status.placement.node)" '^.+$' "$name placement.node"
  assert_match "$(f .status.placement.replica)" '^.+$' "$name placement.replica"
  assert_match "$(f .status.imageDigest)" '^sha256:[0-9a-f]{64}$' "$name imageDigest"
  assert_eq "$(f .status.cacheKey)" "$(scoped "$(f .spec.cache.key)")" "$name cacheKey"
  for c in Placed CacheReady Built Succeeded; do
    assert_eq "$(f ".status.conditions[]? | select(.type == \"$c\") | .status")" True "$name condition $c"
  done
  assert_match "$(f .status.completionTime)" '^.+$' "$name completionTime"
  info "durations: $(f .status.durations | jq -c .)"
}

# builder_pod NAME: the build's builder pod (pod/NAME-build-...), empty when it is gone.
builder_pod() {
  kc -n "$NS" get pods -l "hearth.dev/build=$1" -o name 2>/dev/null | grep -- "-build-" | tail -1 || true
}

# builder_log NAME: the builder pod's log (BuildKit's plain progress), empty when it is gone.
builder_log() {
  local pod
  pod=$(builder_pod "$1")
  [[ -z "$pod" ]] || kc -n "$NS" logs "$pod" --all-containers 2>/dev/null
}
