#!/usr/bin/env bash
# Adds the pipeline engines to the e2e cluster that e2e/up.sh brought up: Tekton Pipelines and
# Argo Workflows from their release manifests, Hearth's Tekton custom task switched on
# (tekton.enabled=true), and in the build namespace the hearth-build Task, the hearth-build
# WorkflowTemplate, their Roles, and a push Secret for the test registry. Idempotent.
#   e2e/up.sh && e2e/pipelines-up.sh && e2e/pipelines.sh
# Knobs: TEKTON_VERSION, TEKTON_RELEASE (URL of release.yaml), ARGO_VERSION, ARGO_RELEASE
# (URL of install.yaml), E2E_REGISTRY (where the pipeline builds push; default the in-cluster registry).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

need kubectl helm

TEKTON_VERSION=${TEKTON_VERSION:-v1.0.0}
TEKTON_RELEASE=${TEKTON_RELEASE:-https://storage.googleapis.com/tekton-releases/pipeline/previous/$TEKTON_VERSION/release.yaml}
ARGO_VERSION=${ARGO_VERSION:-v3.6.2}
ARGO_RELEASE=${ARGO_RELEASE:-https://github.com/argoproj/argo-workflows/releases/download/$ARGO_VERSION/install.yaml}
REGISTRY=${E2E_REGISTRY:-$REGISTRY} # default: the in-cluster registry (lib.sh)

kc get crd imagebuilds.hearth.dev >/dev/null 2>&1 || die "no Hearth on context $CONTEXT: run e2e/up.sh first"

log "Tekton Pipelines $TEKTON_VERSION ($TEKTON_RELEASE)"
kc apply --server-side --force-conflicts -f "$TEKTON_RELEASE"
kc -n tekton-pipelines rollout status deploy/tekton-pipelines-controller --timeout=300s
kc -n tekton-pipelines rollout status deploy/tekton-pipelines-webhook --timeout=300s
kc wait --for=condition=Established crd/customruns.tekton.dev crd/pipelineruns.tekton.dev --timeout=60s
# Custom tasks are always on in Tekton 1.x; releases before 0.46 needed this flag.
kc -n tekton-pipelines patch configmap feature-flags --type merge -p '{"data":{"enable-custom-tasks":"true"}}' >/dev/null || true

log "Argo Workflows $ARGO_VERSION ($ARGO_RELEASE)"
kc create namespace argo --dry-run=client -o yaml | kc apply -f -
kc -n argo apply --server-side --force-conflicts -f "$ARGO_RELEASE"
kc -n argo rollout status deploy/workflow-controller --timeout=300s

log "Hearth with the Tekton custom task (tekton.enabled=true)"
helm --kube-context "$CONTEXT" upgrade --install hearth "$ROOT/charts/hearth" \
  --namespace "$SYSTEM_NS" -f "$E2E_DIR/values.yaml" --set builder.defaultArch="$E2E_ARCH" --set tekton.enabled=true --wait --timeout 5m
kc -n "$SYSTEM_NS" get configmap hearth-config -o jsonpath='{.data.config\.yaml}' | grep -A1 '^tekton:' | grep -q 'enabled: true' ||
  die "the operator config does not enable the Tekton custom task"
# The controller reads its config at start.
kc -n "$SYSTEM_NS" rollout restart deploy/hearth
kc -n "$SYSTEM_NS" rollout status deploy/hearth --timeout=180s ||
  { controller_logs >&2; die "the restarted controller did not roll out (logs above)"; }
controller_ready "${E2E_READY_TIMEOUT:-120}"
retry 60 "a controller holds the Lease hearth-controller" leader >/dev/null

log "in $NS: the Task, the WorkflowTemplate, their ServiceAccounts and Roles, a push Secret for $REGISTRY"
kc -n "$NS" apply -f "$ROOT/config/tekton/hearth-build.yaml" -f "$ROOT/config/tekton/rbac.yaml" \
  -f "$ROOT/config/argo/hearth-build.yaml" -f "$ROOT/config/argo/rbac.yaml"
kc -n "$NS" create rolebinding hearth-build --role=hearth-build --serviceaccount="$NS:hearth-build" \
  --dry-run=client -o yaml | kc apply -f -
kc -n "$NS" create rolebinding hearth-workflow --role=hearth-workflow --serviceaccount="$NS:hearth-workflow" \
  --dry-run=client -o yaml | kc apply -f -
# The WorkflowTemplate and the custom-task Pipeline name a push Secret; the test registry
# (in-cluster, or ttl.sh) takes anonymous pushes, so its content is never used.
kc -n "$NS" create secret docker-registry registry-push --docker-server="$REGISTRY" \
  --docker-username=hearth-e2e --docker-password=unused --dry-run=client -o yaml | kc apply -f -

log "ready: run e2e/pipelines.sh"
