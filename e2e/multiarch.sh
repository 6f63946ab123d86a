#!/usr/bin/env bash
# Architecture scenarios against the cluster that e2e/up.sh brought up: builds placed only on
# nodes of their architecture (kubernetes.io/arch), each architecture with its own cache.
#   e2e/multiarch.sh                      every scenario, in order
#   e2e/multiarch.sh unplaceable          some of them
# kind's nodes all run the host's architecture ($E2E_ARCH); the `other-arch` scenario relabels
# one worker as the other architecture for its duration (the label is put back whatever
# happens; a kubelet restart would also put it back). `emulate` needs binfmt handlers on the
# nodes (E2E_BINFMT=1, e.g. after `docker run --privileged --rm tonistiigi/binfmt --install all`
# on the host) and is skipped, saying so, without them; so is `fanout` (one build per platform,
# the other architecture's on the relabelled worker, then one index).
# Prints "multiarch: N passed, M failed" and exits non-zero when a scenario failed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

need kubectl jq

ALL=(unplaceable other-arch emulate fanout)
case $E2E_ARCH in
  amd64) OTHER=arm64 ;;
  *) OTHER=amd64 ;;
esac

# platform_build NAME KEY MODE PLATFORM...: a ReadWrite build of the test context for these
# platforms (MODE: "" or Emulate); pushed to the in-cluster registry, as in run.sh.
platform_build() {
  local name=$1 key=$2 mode=$3 platforms
  shift 3
  platforms=$(printf '"%s",' "$@")
  imagebuild "$name" "$key" ReadWrite 0 "" "" "platforms: [${platforms%,}]${mode:+$'\n'  platformMode: $mode}"
}

# wait_phase NAME PHASE...: waits until the build is in one of the phases; prints it.
wait_phase() {
  local name=$1 deadline=$((SECONDS + BUILD_TIMEOUT)) phase
  shift
  while :; do
    phase=$(ibf "$name" .status.phase)
    [[ " $* " == *" $phase "* ]] && { echo "$phase"; return 0; }
    ((SECONDS < deadline)) || die "timed out waiting for $name to be one of: $* (is '$phase')"
    sleep 2
  done
}

# relabel_a_worker: the first worker says kubernetes.io/arch=$OTHER until the scenario's
# subshell exits (put back whatever happens); its name in OTHER_NODE.
relabel_a_worker() {
  OTHER_NODE=$(kc get nodes -l '!node-role.kubernetes.io/control-plane' -o json | jq -r '.items[0].metadata.name')
  [[ -n "$OTHER_NODE" ]] || die "no worker node"
  # shellcheck disable=SC2064 # the node's name now, not at exit
  trap "kubectl --context $CONTEXT label node $OTHER_NODE --overwrite kubernetes.io/arch=$E2E_ARCH >/dev/null" EXIT
  kc label node "$OTHER_NODE" --overwrite kubernetes.io/arch="$OTHER"
  info "$OTHER_NODE now says kubernetes.io/arch=$OTHER"
}

placed_node() { [[ -n "$(ibf "$1" .status.placement.node)" ]]; }
says_no_node_of_its_arch() { ibf "$1" .status.message | grep -q "no ready node has the build's architecture"; }

# ------------------------------------------------------------------ scenarios

# A build for an architecture no node has stays Placing, says why, and never gets a pod.
scenario_unplaceable() {
  local b="arch-none-$RUN"
  platform_build "$b" "e2e/arch-$RUN" "" linux/s390x
  retry 60 "$b says no node has its architecture" says_no_node_of_its_arch "$b"
  assert_eq "$(ibf "$b" .status.phase)" Placing "$b phase"
  assert_eq "$(ibf "$b" .status.cacheKey)" "e2e/arch-$RUN@s390x" "$b cacheKey"
  assert_eq "$(ibf "$b" .status.placement.node)" "" "$b node"
  assert_eq "$(kc -n "$NS" get pods -l "hearth.dev/build=$b" -o name)" "" "$b pods"
  kc -n "$NS" delete imagebuild "$b" --wait=true
}

# One worker relabelled as the other architecture: a build for that architecture lands there
# and only there, in a cache of its own; a build of the same key for the host's architecture
# never does, and builds and succeeds elsewhere.
scenario_other_arch() {
  local key="e2e/arch-$RUN" node other="arch-other-$RUN" native="arch-native-$RUN" phase
  relabel_a_worker
  node=$OTHER_NODE

  platform_build "$other" "$key" "" "linux/$OTHER"
  retry 120 "$other placed" placed_node "$other"
  assert_eq "$(ibf "$other" .status.placement.node)" "$node" "$other node (the only $OTHER node)"
  assert_eq "$(ibf "$other" .status.cacheKey)" "$key@$OTHER" "$other cacheKey"
  # The node really is $E2E_ARCH: without binfmt the build's RUN step cannot run there; its
  # placement is what this checks, so stop it.
  kc -n "$NS" patch imagebuild "$other" --type merge -p '{"spec":{"cancel":true}}' >/dev/null
  phase=$(wait_phase "$other" Succeeded Failed Cancelled)
  info "$other ended $phase"

  platform_build "$native" "$key" "" "linux/$E2E_ARCH"
  assert_eq "$(wait_phase "$native" Succeeded Failed Cancelled)" Succeeded "$native phase"
  assert_ne "$(ibf "$native" .status.placement.node)" "$node" "$native node (never the $OTHER node)"
  assert_eq "$(ibf "$native" .status.cacheKey)" "$key@$E2E_ARCH" "$native cacheKey"
  assert_eq "$(ibf "$native" .status.placement.warmth)" Cold "$native warmth (the $OTHER cache is not its own)"
  assert_ne "$(ibf "$native" .status.placement.cache)" "$(ibf "$other" .status.placement.cache)" "the two architectures' BuildCaches"
}

# platformMode Emulate: one build of both platforms on a node of the first one's
# architecture, under binfmt.
scenario_emulate() {
  if [[ "${E2E_BINFMT:-0}" != 1 ]]; then
    info "skipped: set E2E_BINFMT=1 once the nodes have binfmt handlers for $OTHER"
    return 0
  fi
  local b="arch-emulate-$RUN"
  platform_build "$b" "e2e/arch-emulate-$RUN" Emulate "linux/$E2E_ARCH" "linux/$OTHER"
  assert_eq "$(wait_phase "$b" Succeeded Failed Cancelled)" Succeeded "$b phase"
  assert_eq "$(ibf "$b" .status.cacheKey)" "e2e/arch-emulate-$RUN@$E2E_ARCH" "$b cacheKey"
  assert_match "$(ibf "$b" .status.imageDigest)" '^sha256:[0-9a-f]{64}$' "$b digest"
}

# Several platforms built natively (the default with no platformMode): one child build per
# platform on a node of its architecture, each in its own cache, then one index pushed under
# the parent's name listing both. One worker is relabelled as the other architecture; its
# child's RUN steps run there under binfmt, so this needs E2E_BINFMT=1 too.
scenario_fanout() {
  if [[ "${E2E_BINFMT:-0}" != 1 ]]; then
    info "skipped: set E2E_BINFMT=1 once the nodes have binfmt handlers for $OTHER"
    return 0
  fi
  local b="arch-fanout-$RUN" key="e2e/arch-fanout-$RUN" p child node digest index
  relabel_a_worker
  platform_build "$b" "$key" "" "linux/$E2E_ARCH" "linux/$OTHER"
  assert_eq "$(wait_phase "$b" Succeeded Failed Cancelled)" Succeeded "$b phase"
  assert_eq "$(ibf "$b" '.status.platforms | length')" 2 "$b children"
  for p in "$E2E_ARCH" "$OTHER"; do
    child=$(ibf "$b" ".status.platforms[] | select(.platform == \"linux/$p\") | .build")
    [[ -n "$child" ]] || die "$b has no child for linux/$p"
    assert_eq "$(ibf "$child" .status.phase)" Succeeded "$child phase"
    assert_eq "$(ibf "$child" .status.cacheKey)" "$key@$p" "$child cacheKey"
    node=$(ibf "$child" .status.placement.node)
    if [[ "$p" == "$OTHER" ]]; then
      assert_eq "$node" "$OTHER_NODE" "$child node (the only $OTHER node)"
    else
      assert_ne "$node" "$OTHER_NODE" "$child node (never the $OTHER node)"
    fi
  done
  digest=$(ibf "$b" .status.imageDigest)
  assert_eq "$(digest_of "$REGISTRY/e2e/app:$b")" "$digest" "$b: the index under the parent's name"
  index=$(manifest_body "$REGISTRY/e2e/app:$b")
  assert_eq "$(jq -r '[.manifests[] | select(.platform.os == "linux") | .platform.architecture] | sort | join(",")' <<<"$index")" \
    "$(printf '%s\n' "$E2E_ARCH" "$OTHER" | sort | paste -sd, -)" "$b: the index's platforms"
}

# ------------------------------------------------------------------ main

scenario_main multiarch imagebuilds.hearth.dev "nodes $E2E_ARCH, other $OTHER" "$@"
