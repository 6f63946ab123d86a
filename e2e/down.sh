#!/usr/bin/env bash
# Deletes the e2e cluster and everything in it (MinIO's data is an emptyDir, so it goes too).
# The images built by up.sh stay in the local Docker; `docker rmi` them if you like.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

need kind
kind delete cluster --name "$CLUSTER"
