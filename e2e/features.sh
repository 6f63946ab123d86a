#!/usr/bin/env bash
# Build feature scenarios against the cluster that e2e/up.sh brought up (after, or without,
# e2e/run.sh): several tags, attestations, a cold build seeded from a registry cache, and
# retention of finished builds. Every build pushes to the in-cluster registry ($REGISTRY),
# whose contents are read through its /v2 API from inside its pod.
#   e2e/features.sh                       every scenario, in order
#   e2e/features.sh tags registry-cache   some of them
# Each run uses its own keys (from E2E_RUN_ID, default the time). registry-cache cordons a node
# for a while and always uncordons it.
# Prints "features: N passed, M failed" and exits non-zero when a scenario failed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

need kubectl jq

ALL=(tags attestations registry-cache retention)

# build NAME KEY [PATCH] [SLEEP]: a ReadWrite build of the test context, pushed to
# $REGISTRY/e2e/app:NAME, with the JSON object PATCH merged into it (jq's `*`).
build() {
  jq -n --arg name "$1" --arg key "$2" --argjson patch "${3:-"{}"}" --arg sleep "${4:-0}" \
    --arg ns "$NS" --arg run "$RUN" --arg git "$GIT_URL" --arg registry "$REGISTRY" '{
      apiVersion: "hearth.dev/v1alpha1", kind: "ImageBuild",
      metadata: {name: $name, namespace: $ns, labels: {"e2e.hearth.dev/run": $run}},
      spec: {
        source: {git: {url: $git, revision: "main"}},
        buildArgs: {RUN_ID: $name, SLEEP: $sleep},
        output: {image: "\($registry)/e2e/app:\($name)"},
        cache: {key: $key, mode: "ReadWrite"},
        timeout: "20m"
      }
    } * $patch' | kc apply -f -
}

# ------------------------------------------------------------------ scenarios

# Two more names for one build, a bare tag and a full reference in another repository: the
# status lists every name pushed and the image by digest, and in the registry each name
# resolves to status.imageDigest.
scenario_tags() {
  local b=tags-$RUN digest ref
  build "$b" "e2e/tags-$RUN" "$(jq -nc --arg bare "$b-extra" --arg full "$REGISTRY/e2e/other:$b" \
    '{spec: {output: {tags: [$bare, $full]}}}')"
  wait_builds "$b"
  assert_succeeded "$b" Cold
  digest=$(ibf "$b" .status.imageDigest)
  assert_eq "$(ibf "$b" .status.image)" "$REGISTRY/e2e/app@$digest" "$b status.image"
  assert_eq "$(ibf "$b" '.status.tags | join(" ")')" \
    "$REGISTRY/e2e/app:$b $REGISTRY/e2e/app:$b-extra $REGISTRY/e2e/other:$b" "$b status.tags"
  for ref in $(ibf "$b" '.status.tags[]') "$(ibf "$b" .status.image)"; do
    assert_eq "$(digest_of "$ref")" "$digest" "digest of $ref in the registry"
  done
}

# attestation_types NAME: the build's pushed image, by digest, must be an index of one image
# manifest and one attestation manifest referring to it; prints the attestation's in-toto
# predicate types, sorted, one per line.
attestation_types() {
  local b=$1 image index att_digest repo
  image=$(ibf "$b" .status.image)
  repo=${image%@*}
  assert_eq "$(digest_of "$image")" "$(ibf "$b" .status.imageDigest)" "$b: digest of $image in the registry" >&2
  index=$(manifest_body "$image")
  assert_eq "$(jq -r .mediaType <<<"$index")" application/vnd.oci.image.index.v1+json "$b: pushed media type (an index)" >&2
  local images atts
  images=$(jq -c '[.manifests[] | select(.annotations["vnd.docker.reference.type"] != "attestation-manifest")]' <<<"$index")
  atts=$(jq -c '[.manifests[] | select(.annotations["vnd.docker.reference.type"] == "attestation-manifest")]' <<<"$index")
  assert_eq "$(jq length <<<"$images")" 1 "$b: image manifests in the index" >&2
  assert_eq "$(jq length <<<"$atts")" 1 "$b: attestation manifests in the index" >&2
  assert_eq "$(jq -r '.[0].annotations["vnd.docker.reference.digest"]' <<<"$atts")" "$(jq -r '.[0].digest' <<<"$images")" \
    "$b: the attestation manifest refers to the image manifest" >&2
  att_digest=$(jq -r '.[0].digest' <<<"$atts")
  manifest_body "$repo@$att_digest" | jq -r '.layers[].annotations["in-toto.io/predicate-type"] // "none"' | sort
}

# Attestations as buildx makes them: by default (min provenance) the pushed reference is an
# index holding an attestation manifest with SLSA provenance; with an SBOM asked for, an SPDX
# document as well; with provenance disabled and no SBOM, a plain image manifest.
scenario_attestations() {
  local min=att-min-$RUN sbom=att-sbom-$RUN off=att-off-$RUN types body
  build "$min" "e2e/att-$RUN-min"
  build "$sbom" "e2e/att-$RUN-sbom" '{"spec": {"output": {"attestations": {"sbom": true}}}}'
  build "$off" "e2e/att-$RUN-off" '{"spec": {"output": {"attestations": {"provenance": {"mode": "disabled"}}}}}'
  wait_builds "$min" "$sbom" "$off"
  types=$(attestation_types "$min")
  assert_match "$types" '^https://slsa\.dev/provenance/v[0-9.]+$' "$min attestation predicate types (provenance alone)"
  types=$(attestation_types "$sbom")
  assert_match "${types//$'\n'/ }" '^https://slsa\.dev/provenance/v[0-9.]+ https://spdx\.dev/Document$' \
    "$sbom attestation predicate types (provenance and SPDX SBOM)"
  assert_eq "$(digest_of "$(ibf "$off" .status.image)")" "$(ibf "$off" .status.imageDigest)" "$off: digest in the registry"
  body=$(manifest_body "$(ibf "$off" .status.image)")
  assert_match "$(jq -r .mediaType <<<"$body")" \
    '^application/vnd\.(docker\.distribution\.manifest\.v2|oci\.image\.manifest\.v1)\+json$' \
    "$off pushed media type (a plain image manifest)"
  assert_eq "$(jq -r '.manifests // [] | length' <<<"$body")" 0 "$off manifests in it (none: not an index)"
}

# import_args NAME: how many --import-cache arguments the builder pod got; empty when it is gone.
import_args() {
  local pod
  pod=$(builder_pod "$1")
  [[ -z "$pod" ]] || kc -n "$NS" get "$pod" -o json |
    jq '[.spec.initContainers[]?, .spec.containers[] | (.command // [])[], (.args // [])[] | select(. == "--import-cache")] | length'
}

# A registry cache seeds a cold node: build A exports its cache (mode max) to the registry;
# with A's node cordoned, the first build of a new key that imports it is Cold, says
# placement.importedFrom, and its BuildKit log shows the cache imported and the RUN step
# CACHED (it never ran). The next build of that key is Hot and imports nothing.
scenario_registry_cache() {
  local a=regcache-a-$RUN b=regcache-b-$RUN c=regcache-c-$RUN ref="$REGISTRY/e2e/cache:$RUN" key="e2e/regcache-b-$RUN"
  local log step
  # One RUN_ID for the three, so the RUN step is the same step in each (its cache key).
  build "$a" "e2e/regcache-a-$RUN" "$(jq -nc --arg id "regcache-$RUN" --arg ref "$ref" \
    '{spec: {buildArgs: {RUN_ID: $id}, cache: {registry: {exportTo: {ref: $ref, mode: "max"}}}}}')"
  wait_builds "$a"
  assert_succeeded "$a" Cold
  info "ok: the registry cache $ref is there: $(digest_of "$ref")"
  CORDONED=$(ibf "$a" .status.placement.node)
  trap 'kc uncordon "$CORDONED" >/dev/null || true' EXIT
  kc cordon "$CORDONED"
  local seeded
  seeded=$(jq -nc --arg id "regcache-$RUN" --arg ref "$ref" '{spec: {buildArgs: {RUN_ID: $id}, cache: {registry: {importFrom: [$ref]}}}}')
  build "$b" "$key" "$seeded"
  wait_builds "$b"
  assert_succeeded "$b" Cold
  assert_ne "$(ibf "$b" .status.placement.node)" "$CORDONED" "$b node (A's node is cordoned)"
  assert_eq "$(ibf "$b" '.status.placement.importedFrom // [] | join(" ")')" "$ref" "$b placement.importedFrom"
  assert_eq "$(ibf "$b" .status.placement.restoredFrom)" "" "$b placement.restoredFrom (nothing of its own to restore)"
  assert_match "$(ibf "$b" .status.placement.reason)" 'registry cache' "$b placement.reason (the planner says it is seeded)"
  log=$(builder_log "$b")
  [[ -n "$log" ]] || die "no builder log of $b to read"
  grep -F "importing cache manifest from" <<<"$log" | grep -qF "e2e/cache:$RUN" ||
    die "$b's BuildKit log does not show the import of $ref"
  info "ok: $b's BuildKit log shows the import of $ref"
  step=$(sed -n 's/.*#\([0-9][0-9]*\) \[[^]]*\] RUN .*/\1/p' <<<"$log" | head -1)
  [[ -n "$step" ]] || die "no RUN step in $b's BuildKit log"
  grep -q "#$step CACHED" <<<"$log" || die "$b's RUN step (#$step) is not CACHED: $(grep "#$step " <<<"$log" | head -5)"
  info "ok: $b's RUN step (#$step) CACHED"
  assert_eq "$(grep -c 'hearth-e2e: build ' <<<"$log" || true)" 0 "$b RUN step executions (cached: none)"
  assert_eq "$(import_args "$b")" 1 "$b builder --import-cache arguments"
  wait_snapshotted "$b"
  build "$c" "$key" "$seeded"
  wait_builds "$c"
  assert_succeeded "$c" Hot
  assert_eq "$(ibf "$c" '.status.placement.importedFrom // [] | join(" ")')" "" "$c placement.importedFrom (hot: no import)"
  local n
  n=$(import_args "$c")
  if [[ -n "$n" ]]; then
    assert_eq "$n" 0 "$c builder --import-cache arguments"
    [[ "$(builder_log "$c")" != *"importing cache manifest"* ]] || die "$c (hot) imported a registry cache"
  else
    info "builder pod of $c gone: its arguments not checked"
  fi
}

# seconds DURATION: a Go duration (h, m, s, ms; fractions dropped) in whole seconds.
seconds() {
  local d=$1 n=0
  while [[ "$d" =~ ^([0-9]+)(\.[0-9]+)?(h|ms|m|s)(.*)$ ]]; do
    case ${BASH_REMATCH[3]} in
      h) n=$((n + BASH_REMATCH[1] * 3600)) ;;
      m) n=$((n + BASH_REMATCH[1] * 60)) ;;
      s) n=$((n + BASH_REMATCH[1])) ;;
    esac
    d=${BASH_REMATCH[4]}
  done
  [[ -z "$d" ]] || die "not a duration: '$1'"
  echo "$n"
}

# min_age: the operator's retention.minAge (no build is deleted sooner after it ended), from
# the controller's config; the operator's default, 10m, when the config does not set it.
min_age() {
  local v
  v=$(kc -n "$SYSTEM_NS" get configmap hearth-config -o json | jq -r '.data["config.yaml"]' |
    awk '/^retention:/ { r = 1; next } /^[^ ]/ { r = 0 } r && $1 == "minAge:" { gsub(/"/, "", $2); print $2 }')
  echo "${v:-10m}"
}

gone() { ! kc -n "$NS" get imagebuild "$1" >/dev/null 2>&1; }
no_pods() { [[ -z "$(kc -n "$NS" get pods -l "hearth.dev/build=$1" -o name 2>/dev/null)" ]]; }

# A finished build with ttlAfterSucceeded 1m (the least the API takes) is deleted after it
# (and not sooner than the operator's minAge), with an Expired Event saying how long after it
# ended, and its pods go with it; a build created with it, still running, stays.
scenario_retention() {
  local done=ret-done-$RUN ttl='{"spec": {"retention": {"ttlAfterSucceeded": "1m"}}}' wait note age phase
  BUSY=ret-busy-$RUN
  wait=$(seconds "$(min_age)")
  ((wait > 60)) || wait=60
  info "the finished build should go $wait s after it ended (the TTL, or minAge when longer)"
  build "$done" "e2e/ret-$RUN-done" "$ttl"
  # Still building long after $done has gone: a TTL counts from the end, never from creation.
  build "$BUSY" "e2e/ret-$RUN-busy" "$ttl" $((wait + 300))
  trap 'kc -n "$NS" delete imagebuild "$BUSY" --wait=false >/dev/null 2>&1 || true' EXIT
  wait_builds "$done"
  retry $((wait + 180)) "$done deleted by retention" gone "$done"
  info "ok: $done deleted"
  retry 120 "the pods of $done gone" no_pods "$done"
  info "ok: no pod of $done left"
  note=$(kc -n "$NS" get events -o json | jq -r --arg o "$done" \
    '[.items[] | select(.reason == "Expired" and (.regarding.name == $o or .involvedObject.name == $o)) | (.note // .message)] | last // empty')
  [[ -n "$note" ]] || die "no Expired Event about $done"
  info "ok: Expired: $note"
  age=$(sed -n 's/^deleted \([^ ]*\) after it ended.*/\1/p' <<<"$note")
  (($(seconds "$age") >= wait)) || die "$done deleted $age after it ended, sooner than ${wait}s"
  phase=$(ibf "$BUSY" .status.phase) || die "$BUSY (still running) was deleted"
  assert_match "$phase" '^(Pending|Restoring|Building)$' "$BUSY phase (still under way, kept)"
}

# ------------------------------------------------------------------ main

scenario_main features imagebuilds.hearth.dev "registry $REGISTRY" "$@"
