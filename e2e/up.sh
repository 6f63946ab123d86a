#!/usr/bin/env bash
# Brings up the e2e cluster: kind (1 control plane, 3 workers, local-path volumes), MinIO with
# a bucket, a plain-HTTP registry the builds push to, a git server with the test context, the
# hearth image built from the Dockerfile,
# the CRDs and the chart (store on MinIO), and the build namespace with Pod Security
# "privileged" and the store credentials. Idempotent: run it again after changing the code.
#   e2e/up.sh                 # then e2e/run.sh, and e2e/down.sh to remove it all
# Needs docker, kind (>= 0.24), kubectl, helm (3 or 4), jq. See e2e/README.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

need docker kind kubectl helm jq

fill() {
  sed -e "s|@MINIO_IMAGE@|$MINIO_IMAGE|g" -e "s|@MC_IMAGE@|$MC_IMAGE|g" \
    -e "s|@MINIO_USER@|$MINIO_USER|g" -e "s|@MINIO_PASSWORD@|$MINIO_PASSWORD|g" \
    -e "s|@BUCKET@|$BUCKET|g" -e "s|@GITD_IMAGE@|$GITD_IMAGE|g" -e "s|@NS@|$NS|g" \
    -e "s|@REGISTRY_IMAGE@|$REGISTRY_IMAGE|g" "$1"
}

log "kind cluster $CLUSTER"
if kind get clusters | grep -qx "$CLUSTER"; then
  info "exists"
else
  kind create cluster --name "$CLUSTER" --config "$E2E_DIR/kind.yaml" ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 120s
fi
kc get nodes -o wide
kc get storageclass standard -o jsonpath='{.provisioner} {.volumeBindingMode}{"\n"}' |
  grep -q 'WaitForFirstConsumer' || die "kind's StorageClass 'standard' should bind WaitForFirstConsumer"

log "images: hearth (from the Dockerfile), the git server, BuildKit, MinIO, the registry"
DOCKER_BUILDKIT=1 docker build -t "$HEARTH_IMAGE" "$ROOT"
docker build -t "$GITD_IMAGE" "$E2E_DIR/gitd"
for image in "$BUILDKIT_IMAGE" "$MINIO_IMAGE" "$MC_IMAGE" "$REGISTRY_IMAGE"; do
  docker image inspect "$image" >/dev/null 2>&1 || docker pull "$image"
done
# Loaded into every node, so pods start without pulling (and without Docker Hub limits).
kind load docker-image --name "$CLUSTER" "$HEARTH_IMAGE" "$GITD_IMAGE" "$BUILDKIT_IMAGE" "$MINIO_IMAGE" "$MC_IMAGE" "$REGISTRY_IMAGE"

log "MinIO and bucket '$BUCKET'"
fill "$E2E_DIR/manifests/minio.yaml" | kc apply -f -
kc -n minio rollout status deploy/minio --timeout=180s
kc -n minio wait --for=condition=Complete job/minio-bucket --timeout=180s

log "registry $REGISTRY (plain HTTP; builds push there)"
fill "$E2E_DIR/manifests/registry.yaml" | kc apply -f -
kc -n registry rollout status deploy/registry --timeout=180s

log "build namespace $NS: Pod Security privileged (rootless BuildKit, snapshot Jobs), store credentials, git server"
kc create namespace "$NS" --dry-run=client -o yaml | kc apply -f -
kc label namespace "$NS" --overwrite pod-security.kubernetes.io/enforce=privileged
kc -n "$NS" create secret generic hearth-store --dry-run=client -o yaml \
  --from-literal=AWS_ACCESS_KEY_ID="$MINIO_USER" --from-literal=AWS_SECRET_ACCESS_KEY="$MINIO_PASSWORD" |
  kc apply -f -
fill "$E2E_DIR/manifests/gitd.yaml" | kc apply -f -
kc -n "$NS" rollout restart deploy/gitd >/dev/null # pick up a rebuilt image of the same tag
kc -n "$NS" rollout status deploy/gitd --timeout=120s

log "Hearth: CRDs and chart (controller namespace $SYSTEM_NS is Pod Security restricted)"
# CRDs first and server-side: helm installs crds/ only once, never upgrades them.
kc apply --server-side --force-conflicts -f "$ROOT/crds/"
kc wait --for=condition=Established crd/imagebuilds.hearth.dev crd/buildcaches.hearth.dev --timeout=60s
kc create namespace "$SYSTEM_NS" --dry-run=client -o yaml | kc apply -f -
kc label namespace "$SYSTEM_NS" --overwrite pod-security.kubernetes.io/enforce=restricted
helm --kube-context "$CONTEXT" upgrade --install hearth "$ROOT/charts/hearth" \
  --namespace "$SYSTEM_NS" -f "$E2E_DIR/values.yaml" --set builder.defaultArch="$E2E_ARCH" --wait --timeout 5m ||
  { controller_logs >&2; die "helm upgrade --install hearth failed (controller logs above)"; }
# The same tag may hold a rebuilt image: restart so the pods run it.
kc -n "$SYSTEM_NS" rollout restart deploy/hearth
kc -n "$SYSTEM_NS" rollout status deploy/hearth --timeout=180s ||
  { controller_logs >&2; die "the restarted controller did not roll out (logs above)"; }
# Ready means /readyz answered: the controller reached the API server and synced its caches.
controller_ready "${E2E_READY_TIMEOUT:-120}"
retry 60 "a controller holds the Lease hearth-controller" leader >/dev/null
info "leader: $(leader)"

log "ready: run e2e/run.sh"
