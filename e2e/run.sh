#!/usr/bin/env bash
# Runs the e2e scenarios against the cluster that e2e/up.sh brought up.
#   e2e/run.sh                     every scenario, in order
#   e2e/run.sh cold hot            some of them (hot, restored, concurrent, readonly and branch
#                                  use the cache the scenarios before them left: pass E2E_RUN_ID
#                                  of that run to continue it)
# Each run uses its own cache key (from E2E_RUN_ID, default the time), so runs do not mix.
# Prints "e2e: N passed, M failed" and exits non-zero when a scenario failed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

need kubectl jq

KEY="e2e/app-$RUN"                         # the cache key of the scenarios that share a cache
ALL=(cold hot restored concurrent readonly branch invalid controller-restart retention)

# ------------------------------------------------------------------ helpers

# cache_of KEY: the BuildCache of a key (exactly one; its spec.key is the key in use, KEY@arch).
cache_of() {
  local names
  names=$(kc -n "$NS" get buildcaches -o json | jq -r --arg k "$(scoped "$1")" '.items[] | select(.spec.key == $k) | .metadata.name')
  [[ $(wc -w <<<"$names") == 1 ]] || die "expected one BuildCache with key $1, found: '${names//$'\n'/ }'"
  echo "$names"
}
bc() { kc -n "$NS" get buildcache "$1" -o json; }
bcf() { bc "$1" | jq -r "$2 // empty"; }
snapshot_ids() { bcf "$1" '[.status.snapshots[]?.id] | join(",")'; }

# cache_uses NAME: how many times the test Dockerfile's cache mount has been used, from the
# builder's log; empty when the builder pod is gone.
cache_uses() {
  builder_log "$1" |
    sed -n 's/.*hearth-e2e: build [^,]*, cache mount used \([0-9]*\) times.*/\1/p' | tail -1
}

# check_cache_uses NAME REGEX WHAT: the cache-mount count in the builder's log matches REGEX.
check_cache_uses() {
  local uses
  uses=$(cache_uses "$1")
  if [[ -z "$uses" ]]; then
    info "builder pod of $1 gone: cache-mount count not checked"
  else
    assert_match "$uses" "$2" "$3"
  fi
}

# assert_replica BC PVC NODE STATE: the BuildCache lists replica PVC on NODE in STATE.
assert_replica() {
  local r
  r=$(bc "$1" | jq -c --arg p "$2" '.status.replicas[]? | select(.pvc == $p)')
  [[ -n "$r" ]] || die "BuildCache $1 has no replica $2: $(bcf "$1" '.status.replicas' | jq -c .)"
  assert_eq "$(jq -r '.node // empty' <<<"$r")" "$3" "replica $2 node"
  assert_eq "$(jq -r '.state' <<<"$r")" "$4" "replica $2 state"
  assert_eq "$(jq -r '.holder // empty' <<<"$r")" "" "replica $2 holder"
  local labels
  labels=$(kc -n "$NS" get pvc "$2" -o json | jq -c '.metadata.labels')
  assert_eq "$(jq -r '."app.kubernetes.io/managed-by"' <<<"$labels")" hearth "PVC $2 label managed-by"
  assert_eq "$(jq -r '."hearth.dev/cache"' <<<"$labels")" "$1" "PVC $2 label hearth.dev/cache"
  # Where the volume really is: the bound PV's node affinity (local-path).
  local pv
  pv=$(kc -n "$NS" get pvc "$2" -o jsonpath='{.spec.volumeName}')
  assert_eq "$(kc get pv "$pv" -o json | jq -r '.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[] | select(.key == "kubernetes.io/hostname") | .values[0]')" \
    "$3" "PV of $2 lives on"
}

# ------------------------------------------------------------------ scenarios

# A key's first build starts cold, and leaves a replica on its node and a snapshot in MinIO.
scenario_cold() {
  local b=cold-$RUN
  imagebuild "$b" "$KEY" ReadWrite
  wait_builds "$b"
  assert_succeeded "$b" Cold
  # Succeeded comes when the image is pushed; the save follows (Snapshotted Unknown, then True).
  wait_snapshotted "$b"
  assert_eq "$(ibf "$b" .status.attempts)" 1 "$b attempts"
  local cache node replica
  cache=$(cache_of "$KEY")
  node=$(ibf "$b" .status.placement.node)
  replica=$(ibf "$b" .status.placement.replica)
  assert_match "$replica" "^$cache-r[0-9]+\$" "replica PVC name"
  assert_replica "$cache" "$replica" "$node" Idle
  assert_eq "$(bcf "$cache" '.status.snapshots | length')" 1 "$cache snapshots"
  assert_eq "$(bcf "$cache" ".status.replicas[] | select(.pvc == \"$replica\") | .snapshotId")" \
    "$(bcf "$cache" '.status.snapshots[0].id')" "replica holds the snapshot just saved"
  assert_eq "$(bcf "$cache" .status.hits.cold)" 1 "$cache hits.cold"
  check_cache_uses "$b" '^1$' "cache mount uses in a cold build"
}

# The next build of the key runs hot: same node, same replica, and saves a new snapshot.
scenario_hot() {
  local b=hot-$RUN cache node replica before
  cache=$(cache_of "$KEY")
  replica=$(bcf "$cache" '[.status.replicas[]? | select(.state == "Idle")][0].pvc')
  node=$(bcf "$cache" "[.status.replicas[]? | select(.pvc == \"$replica\")][0].node")
  [[ -n "$replica" ]] || die "no idle replica of $cache: run the cold scenario first (same E2E_RUN_ID)"
  before=$(bcf "$cache" '.status.snapshots | length')
  imagebuild "$b" "$KEY" ReadWrite
  wait_builds "$b"
  assert_succeeded "$b" Hot
  wait_snapshotted "$b" # the new snapshot, and the replica Idle again, come after Succeeded
  assert_eq "$(ibf "$b" .status.placement.node)" "$node" "$b runs on the cache's node"
  assert_eq "$(ibf "$b" .status.placement.replica)" "$replica" "$b uses the same replica"
  assert_replica "$cache" "$replica" "$node" Idle
  assert_eq "$(bcf "$cache" '.status.snapshots | length')" $((before + 1)) "$cache snapshots after a hot ReadWrite build"
  assert_eq "$(bcf "$cache" ".status.replicas[] | select(.pvc == \"$replica\") | .snapshotId")" \
    "$(bcf "$cache" '.status.snapshots[0].id')" "replica holds the newest snapshot"
  [[ "$(bcf "$cache" .status.hits.hot)" -ge 1 ]] || die "$cache hits.hot should count the hot build"
  check_cache_uses "$b" '^([2-9]|[1-9][0-9]+)$' "cache mount uses in a hot build"
}

# replicas_gone CACHE PVC...: the BuildCache no longer lists these replicas as usable.
replicas_gone() {
  local cache=$1 p
  shift
  for p in "$@"; do
    [[ -z "$(bcf "$cache" ".status.replicas[]? | select(.pvc == \"$p\" and .state != \"Lost\") | .pvc")" ]] || return 1
  done
}

# The replica is deleted and its node cordoned: the next build restores the newest snapshot
# onto a new replica on another node (or, if the controller pre-warmed it there first, finds
# it hot).
scenario_restored() {
  local b=restored-$RUN cache latest pvcs pvc node n
  cache=$(cache_of "$KEY")
  latest=$(bcf "$cache" '.status.snapshots[0].id')
  [[ -n "$latest" ]] || die "$cache has no snapshot: run cold and hot first (same E2E_RUN_ID)"
  pvcs=$(bcf "$cache" '.status.replicas[]?.pvc')
  CORDONED=$(bcf "$cache" '[.status.replicas[]?.node // empty] | unique | .[]')
  [[ -n "$pvcs" ]] || die "$cache has no replica to delete"
  # Cordoned nodes come back whatever happens below (the scenario runs in a subshell).
  trap 'for n in $CORDONED; do kc uncordon "$n" >/dev/null || true; done' EXIT
  for n in $CORDONED; do kc cordon "$n"; done
  for pvc in $pvcs; do kc -n "$NS" delete pvc "$pvc" --wait=true --timeout=120s; done
  # shellcheck disable=SC2086 # one argument per PVC
  retry 120 "the controller notices the deleted replica(s) $pvcs" replicas_gone "$cache" $pvcs
  imagebuild "$b" "$KEY" ReadWrite
  wait_builds "$b"
  node=$(ibf "$b" .status.placement.node)
  for n in $CORDONED; do assert_ne "$node" "$n" "$b node (a cordoned node held the deleted replica)"; done
  if [[ "$(ibf "$b" .status.placement.warmth)" == Hot ]]; then
    # The controller got there first: it restored the newest snapshot in the background
    # (pre-warm) onto another node, and the build found it there.
    assert_succeeded "$b" Hot
    event_seen Prewarmed "$cache" || die "$b ran hot after its replica was deleted, with no Prewarmed event on $cache"
    info "the cache was pre-warmed before $b came: $(bcf "$cache" '[.status.replicas[]? | select(.pvc == "'"$(ibf "$b" .status.placement.replica)"'") | .snapshotId][0]')"
  else
    assert_succeeded "$b" Restored
    assert_eq "$(ibf "$b" .status.placement.restoredFrom.key)" "$(scoped "$KEY")" "$b restoredFrom.key"
    assert_eq "$(ibf "$b" .status.placement.restoredFrom.cache)" "$cache" "$b restoredFrom.cache"
    assert_eq "$(ibf "$b" .status.placement.restoredFrom.snapshot)" "$latest" "$b restoredFrom.snapshot (the newest)"
    assert_match "$(ibf "$b" .status.durations.restore)" '^.+$' "$b durations.restore"
    [[ "$(bcf "$cache" .status.hits.restored)" -ge 1 ]] || die "$cache hits.restored should count the restore"
  fi
  wait_snapshotted "$b" # the replica is held by the save until then
  assert_replica "$cache" "$(ibf "$b" .status.placement.replica)" "$node" Idle
  check_cache_uses "$b" '^([2-9]|[1-9][0-9]+)$' "cache mount uses after a restore (the mount came back)"
}

# Two builds of one key at once: both succeed, and no replica is ever mounted by both.
CONCURRENT_VIOLATIONS=""
no_shared_replica() {
  local shared
  # Live pods (builder, restore, save) of the two builds, by the replica PVCs they mount.
  shared=$(kc -n "$NS" get pods -l "hearth.dev/build in (conc-a-$RUN,conc-b-$RUN)" -o json | jq -r '
    [.items[] | select(.status.phase == "Pending" or .status.phase == "Running")
      | .metadata.labels["hearth.dev/build"] as $b
      | .spec.volumes[]? | select(.persistentVolumeClaim) | {pvc: .persistentVolumeClaim.claimName, b: $b}]
    | group_by(.pvc) | map(select((map(.b) | unique | length) > 1)) | map(.[0].pvc) | join(",")')
  if [[ -n "$shared" ]]; then
    CONCURRENT_VIOLATIONS+="$shared "
    info "both builds mount $shared at once"
  fi
}
scenario_concurrent() {
  local a=conc-a-$RUN b=conc-b-$RUN cache
  imagebuild "$a" "$KEY" ReadWrite 20
  imagebuild "$b" "$KEY" ReadWrite 20
  ON_POLL=no_shared_replica wait_builds "$a" "$b"
  # The saves run after Succeeded with the replica mounted: keep watching until both are done.
  wait_snapshotted "$a"
  wait_snapshotted "$b"
  no_shared_replica
  [[ -z "$CONCURRENT_VIOLATIONS" ]] || die "a replica was used by both builds at once: $CONCURRENT_VIOLATIONS"
  info "ok: no replica mounted by both builds at once (sampled every ~2s)"
  local ra rb
  for x in "$a" "$b"; do
    assert_succeeded "$x" "$(ibf "$x" .status.placement.warmth)"
  done
  ra=$(ibf "$a" .status.placement.replica)
  rb=$(ibf "$b" .status.placement.replica)
  info "$a: $(ibf "$a" .status.placement.warmth) on $ra; $b: $(ibf "$b" .status.placement.warmth) on $rb"
  if [[ "$ra" == "$rb" ]]; then
    info "both used $ra, one after the other"
  fi
  cache=$(cache_of "$KEY")
  assert_eq "$(bcf "$cache" '[.status.replicas[]? | select(.holder != null and .holder != "")] | length')" 0 "replicas still held after both builds"
  [[ "$(bcf "$cache" '.status.replicas | length')" -le 2 ]] || die "$cache has more replicas than maxReplicas (2)"
}

# A ReadOnly build may use the cache but never writes back: no new snapshot, no save Job.
scenario_readonly() {
  local b=readonly-$RUN cache before
  cache=$(cache_of "$KEY")
  before=$(snapshot_ids "$cache")
  [[ -n "$before" ]] || die "$cache has no snapshot yet: run the scenarios before it (same E2E_RUN_ID)"
  imagebuild "$b" "$KEY" ReadOnly
  wait_builds "$b"
  assert_succeeded "$b" "$(ibf "$b" .status.placement.warmth)"
  info "$b warmth: $(ibf "$b" .status.placement.warmth)"
  sleep "${E2E_SETTLE:-15}" # a save would start right after the build; give it the chance to show up
  assert_eq "$(snapshot_ids "$cache")" "$before" "$cache snapshots after a ReadOnly build"
  assert_ne "$(condition "$b" Snapshotted)" True "$b condition Snapshotted"
  assert_eq "$(kc -n "$NS" get jobs -o name | grep -c -- "/$b-save-" || true)" 0 "save Jobs of $b"
}

# A feature branch's first build (its own key, restoreKeys: [main's key]) on a node without
# main's replica restores main's saved snapshot: warmth Restored, restoredFrom naming main's key
# and main's BuildCache (whose store prefix the restore init container must read: reading the branch's own
# prefix once found nothing), and it succeeds. Its save goes to the branch's own cache.
scenario_branch() {
  local b=branch-$RUN key="$KEY-feature" main latest main_snaps node n branch_cache
  main=$(cache_of "$KEY")
  latest=$(bcf "$main" '.status.snapshots[0].id')
  [[ -n "$latest" ]] || die "$main has no saved snapshot: run cold first (same E2E_RUN_ID)"
  main_snaps=$(snapshot_ids "$main")
  # main's replicas' nodes are cordoned, so the branch build lands elsewhere; they come back
  # whatever happens (the scenario runs in a subshell).
  CORDONED=$(bcf "$main" '[.status.replicas[]? | select(.state != "Lost") | .node // empty] | unique | .[]')
  trap 'for n in $CORDONED; do kc uncordon "$n" >/dev/null || true; done' EXIT
  for n in $CORDONED; do kc cordon "$n"; done
  imagebuild "$b" "$key" ReadWrite 0 "" "$KEY"
  wait_builds "$b"
  assert_succeeded "$b" Restored
  node=$(ibf "$b" .status.placement.node)
  for n in $CORDONED; do assert_ne "$node" "$n" "$b node (a cordoned node holds main's replica)"; done
  assert_eq "$(ibf "$b" .status.cacheKey)" "$(scoped "$key")" "$b cacheKey (its own)"
  assert_eq "$(ibf "$b" .status.placement.restoredFrom.key)" "$(scoped "$KEY")" "$b restoredFrom.key (main's)"
  assert_eq "$(ibf "$b" .status.placement.restoredFrom.cache)" "$main" "$b restoredFrom.cache (main's BuildCache)"
  assert_eq "$(ibf "$b" .status.placement.restoredFrom.snapshot)" "$latest" "$b restoredFrom.snapshot (main's newest)"
  assert_match "$(ibf "$b" .status.durations.restore)" '^.+$' "$b durations.restore"
  check_cache_uses "$b" '^([2-9]|[1-9][0-9]+)$' "cache mount uses in a branch build restored from main (main's state came along)"
  wait_snapshotted "$b"
  branch_cache=$(cache_of "$key")
  assert_ne "$branch_cache" "$main" "the branch's BuildCache"
  assert_eq "$(bcf "$branch_cache" '.status.snapshots | length')" 1 "$branch_cache snapshots (the branch's save)"
  assert_replica "$branch_cache" "$(ibf "$b" .status.placement.replica)" "$node" Idle
  assert_eq "$(snapshot_ids "$main")" "$main_snaps" "$main snapshots (a branch build never writes main's cache)"
}

# Invalid ImageBuilds are refused by the API server, with the field named: one written here,
# and every sample of config/samples/invalid/ (each names its field in "# expect-field:").
scenario_invalid() {
  local out
  if out=$(kc apply -f - 2>&1 <<YAML
apiVersion: hearth.dev/v1alpha1
kind: ImageBuild
metadata:
  name: invalid-$RUN
  namespace: $NS
spec:
  source:
    git:
      url: $GIT_URL
  output:
    image: shop/api:latest
YAML
  ); then
    die "an ImageBuild without a registry host was accepted: $out"
  fi
  [[ "$out" == *spec.output.image* && "$out" == *"registry host"* ]] || die "refused, but without naming spec.output.image: $out"
  info "ok: refused: $out"
  kc -n "$NS" get imagebuild "invalid-$RUN" >/dev/null 2>&1 && die "invalid-$RUN exists"
  local f field n=0
  for f in "$ROOT"/config/samples/invalid/*.yaml; do
    [[ "$f" == *-update-* ]] && continue # those need a stored object first (hearth validate --update covers them)
    field=$(sed -n 's/^# expect-field: *//p' "$f")
    [[ -n "$field" ]] || die "$f has no '# expect-field:' line"
    if out=$(sed "s/^  namespace: .*/  namespace: $NS/" "$f" | kc create --dry-run=server -f - 2>&1); then
      die "$(basename "$f") was accepted by the API server"
    fi
    [[ "$out" == *"$field"* ]] || die "$(basename "$f") refused without naming $field: $out"
    n=$((n + 1))
  done
  info "ok: $n invalid samples refused by the API server, each naming its field"
}

# leader_is_not OLD: some controller other than OLD holds the Lease.
leader_is_not() {
  local l
  l=$(leader) && [[ "$l" != "$1" ]]
}

# The controller is killed (both replicas, no graceful shutdown) while a build runs: a new
# leader takes over and the same build attempt completes.
scenario_controller_restart() {
  local b=restart-$RUN key="e2e/restart-$RUN" old pod uid
  imagebuild "$b" "$key" ReadWrite 60
  wait_phase "$b" Building
  pod=$(kc -n "$NS" get pods -l "hearth.dev/build=$b" -o name | grep -- "-build-" | head -1)
  [[ -n "$pod" ]] || die "no builder pod of $b while Building"
  uid=$(kc -n "$NS" get "$pod" -o jsonpath='{.metadata.uid}')
  old=$(leader || true)
  info "killing every controller pod (leader $old) while $pod runs"
  kc -n "$SYSTEM_NS" delete pods -l app.kubernetes.io/name=hearth --grace-period=0 --force --wait=false
  kc -n "$SYSTEM_NS" rollout status deploy/hearth --timeout=180s
  retry 120 "a new controller pod takes the Lease" leader_is_not "$old"
  info "new leader: $(leader)"
  wait_builds "$b"
  assert_succeeded "$b" Cold
  assert_eq "$(ibf "$b" .status.attempts)" 1 "$b attempts (the build was not restarted)"
  if kc -n "$NS" get "$pod" >/dev/null 2>&1; then
    assert_eq "$(kc -n "$NS" get "$pod" -o jsonpath='{.metadata.uid}')" "$uid" "builder pod is the one that ran before the kill"
  fi
}

# A build kept only a minute (spec.retention, set after it ended: retention may change then) is
# deleted with its pods once saved and past it (e2e/values.yaml lowers retention.minAge to 1m),
# with an Expired Event; its cache stays whole.
build_gone() { ! kc -n "$NS" get imagebuild "$1" >/dev/null 2>&1; }
pods_gone() { [[ -z "$(kc -n "$NS" get pods -l "hearth.dev/build=$1" -o name)" ]]; }
scenario_retention() {
  local b=retention-$RUN key="$KEY-retention" cache snaps
  imagebuild "$b" "$key" ReadWrite
  wait_builds "$b"
  wait_snapshotted "$b"
  cache=$(cache_of "$key")
  snaps=$(bcf "$cache" '.status.snapshots | length')
  kc -n "$NS" patch imagebuild "$b" --type merge -p '{"spec":{"retention":{"ttlAfterSucceeded":"1m"}}}' >/dev/null
  retry 240 "$b deleted a minute after it ended" build_gone "$b"
  retry 120 "the pods of $b deleted with it" pods_gone "$b"
  event_seen Expired "$b" || die "no Expired Event for $b"
  assert_eq "$(bcf "$cache" '.status.snapshots | length')" "$snaps" "$cache keeps its snapshots"
  info "ok: $b and its pods deleted by retention"
}

# ------------------------------------------------------------------ main

scenario_main e2e imagebuilds.hearth.dev "cache key $KEY" "$@"
