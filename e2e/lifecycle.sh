#!/usr/bin/env bash
# BuildCache lifecycle scenarios against the cluster that e2e/up.sh brought up (after, or
# without, e2e/run.sh): node budget eviction, maxReplicas, deletion with each policy, and
# deletion while the store is unreachable.
#   e2e/lifecycle.sh                      every scenario, in order
#   e2e/lifecycle.sh budget delete        some of them
# Each run uses its own keys (from E2E_RUN_ID, default the time). The unreachable-store
# scenario scales MinIO to zero for a few minutes and always scales it back.
# Prints "lifecycle: N passed, M failed" and exits non-zero when a scenario failed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

need kubectl jq

DELETE_TIMEOUT=${E2E_DELETE_TIMEOUT:-180} # > snapshot.deleteTimeout in e2e/values.yaml (2m)
ALL=(budget max-replicas prewarm delete retain unreachable-store)

# build NAME KEY [CACHE]: a ReadWrite build of the test context (with a cacheRef when given).
build() { imagebuild "$1" "$2" ReadWrite 0 "${3:-}"; }

# cache NAME KEY POLICY: a BuildCache with a deletion policy.
cache() {
  kc apply -f - <<YAML
apiVersion: hearth.dev/v1alpha1
kind: BuildCache
metadata:
  name: $1
  namespace: $NS
spec:
  key: "$(scoped "$2")"
  deletionPolicy: $3
YAML
}

bcf() { kc -n "$NS" get buildcache "$1" -o json | jq -r "$2 // empty"; }
cache_of() { kc -n "$NS" get buildcaches -o json | jq -r --arg k "$(scoped "$1")" '.items[] | select(.spec.key == $k) | .metadata.name'; }

# wait_saved NAME: wait_succeeded, then the save that follows it (Snapshotted=True): a build
# is Succeeded once its image is pushed, before its snapshot exists and its replica is free.
wait_saved() {
  wait_succeeded "$1"
  wait_snapshotted "$1"
}

# wait_succeeded NAME: waits for the build to succeed; fails at once on Failed or Cancelled.
wait_succeeded() {
  local deadline=$((SECONDS + BUILD_TIMEOUT)) phase
  while :; do
    phase=$(ibf "$1" .status.phase)
    case $phase in
      Succeeded) return 0 ;;
      Failed | Cancelled) die "$1 ended $phase: $(ibf "$1" .status.message)" ;;
    esac
    ((SECONDS < deadline)) || die "timed out waiting for $1 ($phase)"
    sleep 2
  done
}

# store_ls CACHE: the cache's snapshot ids in the store, as the namespace's credentials see
# them (a one-shot pod running `hearth snapshot ls`).
store_ls() {
  local pod=ls-$RUN-$RANDOM
  kc -n "$NS" run "$pod" --quiet --rm -i --restart=Never --image="$HEARTH_IMAGE" \
    --image-pull-policy=IfNotPresent \
    --overrides='{"spec":{"containers":[{"name":"'"$pod"'","image":"'"$HEARTH_IMAGE"'","args":["snapshot","ls","--json","--cache","'"$1"'"],"envFrom":[{"secretRef":{"name":"hearth-store"}}],"env":[{"name":"HEARTH_STORE","value":"s3://hearth/e2e"},{"name":"HEARTH_NAMESPACE","value":"'"$NS"'"},{"name":"AWS_REGION","value":"us-east-1"},{"name":"AWS_ENDPOINT_URL_S3","value":"http://minio.minio.svc.cluster.local:9000"},{"name":"AWS_S3_FORCE_PATH_STYLE","value":"true"}]}]}}' \
    2>/dev/null | jq -r '[.[].id] | join(",")'
}

gone() { ! kc -n "$NS" get buildcache "$1" >/dev/null 2>&1; }
replica_state() { bcf "$1" ".status.replicas[]? | select(.pvc == \"$2\") | .state"; }
evicted() { [[ "$(replica_state "$1" "$2")" != Idle ]] && ! kc -n "$NS" get pvc "$2" >/dev/null 2>&1; }

# ------------------------------------------------------------------ scenarios

# A node over its cache budget evicts a saved idle replica (PVC deleted, Event Evicted); the
# snapshot stays, and the next build of the key restores it (or finds it pre-warmed).
scenario_budget() {
  local key="e2e/budget-$RUN" b=budget-a-$RUN cache pvc node
  build "$b" "$key"
  wait_saved "$b"
  cache=$(cache_of "$key")
  pvc=$(ibf "$b" .status.placement.replica)
  node=$(ibf "$b" .status.placement.node)
  [[ -n "$(bcf "$cache" .status.snapshots[0].id)" ]] || die "$cache has no snapshot"
  trap 'kc annotate node "$node" hearth.dev/cache-budget- >/dev/null || true' EXIT
  kc annotate --overwrite node "$node" hearth.dev/cache-budget=1Ki
  retry 180 "replica $pvc evicted from $node" evicted "$cache" "$pvc"
  retry 60 "an Evicted event on $cache" event_seen Evicted "$cache"
  info "ok: $pvc evicted: $(kc -n "$NS" get events -o json | jq -r --arg o "$cache" '[.items[] | select(.reason == "Evicted") | (.note // .message)] | last')"
  kc annotate node "$node" hearth.dev/cache-budget-
  build "budget-b-$RUN" "$key"
  wait_succeeded "budget-b-$RUN"
  # The snapshot stayed: the next build restores it, unless the controller pre-warmed it onto
  # another node with room first (then it runs hot there).
  case "$(ibf "budget-b-$RUN" .status.placement.warmth)" in
    Restored) ;;
    Hot) event_seen Prewarmed "$cache" || die "budget-b-$RUN ran hot after the eviction with no Prewarmed event" ;;
    *) die "budget-b-$RUN warmth after eviction: $(ibf "budget-b-$RUN" .status.placement.warmth) (want Restored, or Hot after a pre-warm)" ;;
  esac
}

# Lowering maxReplicas retires the extra idle replica (saved first if it must be).
scenario_max_replicas() {
  local key="e2e/max-$RUN" cache
  build "max-a-$RUN" "$key"
  build "max-b-$RUN" "$key"
  wait_saved "max-a-$RUN"
  wait_saved "max-b-$RUN"
  cache=$(cache_of "$key")
  local live
  live=$(bcf "$cache" '[.status.replicas[]? | select(.state != "Lost" and .state != "Evicting")] | length')
  if ((live < 2)); then
    info "the two builds shared one replica (one waited for the other): nothing to retire"
    return 0
  fi
  kc -n "$NS" patch buildcache "$cache" --type=merge -p '{"spec":{"maxReplicas":1}}'
  retry 180 "$cache down to one replica" bash -c "[[ \$(kubectl --context $CONTEXT -n $NS get buildcache $cache -o json | jq '[.status.replicas[]? | select(.state != \"Lost\" and .state != \"Evicting\")] | length') == 1 ]]"
  retry 60 "an Evicted event on $cache" event_seen Evicted "$cache"
}

# A cache whose only replica is lost (PVC gone, node cordoned) is restored in the background
# onto another node, with no build asking: a Prewarm operation, an Idle replica elsewhere, an
# Event Prewarmed; the next build of the key then runs hot there.
scenario_prewarm() {
  local key="e2e/prewarm-$RUN" cache pvc node warm
  build "prewarm-a-$RUN" "$key"
  wait_saved "prewarm-a-$RUN"
  # A second build gives the key a history worth pre-warming for (two builds, a rate).
  build "prewarm-b-$RUN" "$key"
  wait_saved "prewarm-b-$RUN"
  cache=$(cache_of "$key")
  pvc=$(ibf "prewarm-b-$RUN" .status.placement.replica)
  node=$(ibf "prewarm-b-$RUN" .status.placement.node)
  [[ -n "$(bcf "$cache" .status.snapshots[0].id)" ]] || die "$cache has no snapshot"
  trap 'kc uncordon "$node" >/dev/null || true' EXIT
  kc cordon "$node"
  kc -n "$NS" delete pvc "$pvc" --wait=true --timeout=120s
  retry 300 "a Prewarmed event on $cache" event_seen Prewarmed "$cache"
  warm=$(bcf "$cache" '[.status.replicas[]? | select(.state == "Idle")][0]')
  [[ -n "$warm" ]] || die "$cache has no idle replica after the pre-warm"
  assert_ne "$(jq -r .node <<<"$warm")" "$node" "pre-warmed replica's node (the cordoned node lost it)"
  info "ok: $(kc -n "$NS" get events -o json | jq -r --arg o "$cache" '[.items[] | select(.reason == "Prewarmed") | (.note // .message)] | last')"
  build "prewarm-c-$RUN" "$key"
  wait_succeeded "prewarm-c-$RUN"
  assert_eq "$(ibf "prewarm-c-$RUN" .status.placement.warmth)" Hot "warmth after the pre-warm"
  assert_eq "$(ibf "prewarm-c-$RUN" .status.placement.replica)" "$(jq -r .pvc <<<"$warm")" "replica used after the pre-warm"
}

# deletionPolicy Delete: deleting the BuildCache removes its snapshots from the store first.
scenario_delete() {
  local key="e2e/delete-$RUN" cache=delete-$RUN
  cache "$cache" "$key" Delete
  build "delete-b-$RUN" "$key" "$cache"
  wait_saved "delete-b-$RUN"
  [[ -n "$(store_ls "$cache")" ]] || die "no snapshot of $cache in the store after a build"
  kc -n "$NS" delete imagebuild "delete-b-$RUN" --wait=true
  kc -n "$NS" delete buildcache "$cache" --wait=false
  retry "$DELETE_TIMEOUT" "BuildCache $cache gone" gone "$cache"
  assert_eq "$(store_ls "$cache")" "" "snapshots of $cache in the store after deletion"
}

# deletionPolicy Retain (the default): the snapshots stay.
scenario_retain() {
  local key="e2e/retain-$RUN" cache=retain-$RUN before
  cache "$cache" "$key" Retain
  build "retain-b-$RUN" "$key" "$cache"
  wait_saved "retain-b-$RUN"
  before=$(store_ls "$cache")
  [[ -n "$before" ]] || die "no snapshot of $cache in the store after a build"
  kc -n "$NS" delete imagebuild "retain-b-$RUN" --wait=true
  kc -n "$NS" delete buildcache "$cache" --wait=false
  retry 120 "BuildCache $cache gone" gone "$cache"
  assert_eq "$(store_ls "$cache")" "$before" "snapshots of $cache after deletion with Retain"
}

# The store is down when a Delete-policy cache is deleted: it stays (finalizer, condition
# StoreReachable=False) until snapshot.deleteTimeout, then goes with a SnapshotsLeft Warning.
scenario_unreachable_store() {
  local key="e2e/unreachable-$RUN" cache=unreachable-$RUN
  cache "$cache" "$key" Delete
  build "unreachable-b-$RUN" "$key" "$cache"
  wait_saved "unreachable-b-$RUN"
  kc -n "$NS" delete imagebuild "unreachable-b-$RUN" --wait=true
  trap 'kc -n minio scale deploy/minio --replicas=1 >/dev/null; kc -n minio rollout status deploy/minio --timeout=180s >/dev/null || true' EXIT
  kc -n minio scale deploy/minio --replicas=0
  kc -n minio wait --for=delete pod -l app=minio --timeout=120s || true
  kc -n "$NS" delete buildcache "$cache" --wait=false
  retry 180 "StoreReachable=False on $cache" bash -c "[[ \$(kubectl --context $CONTEXT -n $NS get buildcache $cache -o json | jq -r '.status.conditions[]? | select(.type == \"StoreReachable\") | .status') == False ]]"
  gone "$cache" && die "$cache went before deleteTimeout while the store was down"
  retry "$DELETE_TIMEOUT" "BuildCache $cache gone after deleteTimeout" gone "$cache"
  retry 60 "a SnapshotsLeft event" event_seen SnapshotsLeft "$cache"
}

# ------------------------------------------------------------------ main

scenario_main lifecycle buildcaches.hearth.dev "" "$@"
