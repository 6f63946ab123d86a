#!/usr/bin/env bash
# Runs the pipeline scenarios against the cluster that e2e/up.sh and e2e/pipelines-up.sh
# brought up: Hearth driven by Tekton (the hearth-build Task; the custom task, with its cancel
# and timeout) and by Argo Workflows (the hearth-build WorkflowTemplate, chained and failing).
#   e2e/pipelines.sh                      every scenario
#   e2e/pipelines.sh tekton-custom-task   some of them
# Builds push to E2E_REGISTRY (default the in-cluster registry e2e/up.sh runs) so the digests
# the pipelines report are real. Prints "pipelines: N passed, M failed".
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

need kubectl jq

KEY="e2e/pipelines-$RUN"
REGISTRY=${E2E_REGISTRY:-$REGISTRY} # default: the in-cluster registry (lib.sh)
TIMEOUT=${E2E_BUILD_TIMEOUT:-900}
ALL=(tekton-task tekton-custom-task tekton-cancel tekton-timeout argo argo-failure)
DIGEST='^sha256:[0-9a-f]{64}$'

# image NAME: a pushable reference for this run (the tag is a lifetime should E2E_REGISTRY be
# ttl.sh, which keeps images that long).
image() { echo "$REGISTRY/hearth-e2e-$RUN-$1:1h"; }

# ------------------------------------------------------------------ helpers

# get KIND NAME JQ: one field of an object in the build namespace.
get() { kc -n "$NS" get "$1" "$2" -o json | jq -r "$3 // empty"; }

# succeeded KIND NAME: the status of its Succeeded condition (Tekton).
succeeded() { get "$1" "$2" '.status.conditions[]? | select(.type == "Succeeded") | .status'; }
reason() { get "$1" "$2" '.status.conditions[]? | select(.type == "Succeeded") | .reason'; }

# wait_tekton KIND NAME: until its Succeeded condition is True or False; prints it.
wait_tekton() {
  local deadline=$((SECONDS + TIMEOUT)) s
  while :; do
    s=$(succeeded "$1" "$2")
    [[ "$s" == True || "$s" == False ]] && { echo "$s"; return 0; }
    ((SECONDS < deadline)) || { dump_tekton "$2" >&2; die "timed out waiting for $1 $2"; }
    sleep 3
  done
}

# wait_argo NAME: until the Workflow ends; prints its phase.
wait_argo() {
  local deadline=$((SECONDS + TIMEOUT)) p
  while :; do
    p=$(get workflow "$1" .status.phase)
    case $p in Succeeded | Failed | Error) echo "$p"; return 0 ;; esac
    ((SECONDS < deadline)) || { dump_argo "$1" >&2; die "timed out waiting for Workflow $1"; }
    sleep 3
  done
}

# wait_ib_phase NAME PHASE: until the ImageBuild reaches PHASE.
wait_ib_phase() {
  local deadline=$((SECONDS + TIMEOUT))
  until [[ "$(get imagebuild "$1" .status.phase 2>/dev/null)" == "$2" ]]; do
    ((SECONDS < deadline)) || die "timed out waiting for ImageBuild $1 to reach $2"
    sleep 2
  done
}

dump_tekton() {
  echo "--- PipelineRun/TaskRuns/CustomRuns of $1"
  kc -n "$NS" get pipelineruns,taskruns,customruns -l "tekton.dev/pipelineRun=$1" -o wide 2>/dev/null || true
  kc -n "$NS" get pipelinerun "$1" -o json 2>/dev/null | jq '.status.conditions' || true
  kc -n "$NS" get customruns -l "tekton.dev/pipelineRun=$1" -o json 2>/dev/null | jq '.items[].status' || true
  local pod
  for pod in $(kc -n "$NS" get pods -l "tekton.dev/pipelineRun=$1" -o name 2>/dev/null); do
    echo "--- log of $pod"
    kc -n "$NS" logs "$pod" --all-containers --tail=40 2>/dev/null || true
  done
  echo "--- controller log (last 40 lines)"
  kc -n "$SYSTEM_NS" logs deploy/hearth --tail=40 2>/dev/null || true
}

dump_argo() {
  echo "--- Workflow $1"
  kc -n "$NS" get workflow "$1" -o json 2>/dev/null | jq '.status | {phase, message, nodes: [.nodes[]? | {displayName, phase, message, outputs}]}' || true
  kc -n "$NS" get imagebuilds -l "workflows.argoproj.io/workflow=$1" -o wide 2>/dev/null || true
}

# ib_for_image IMAGE: the ImageBuild that built IMAGE (exactly one).
ib_for_image() {
  local names
  names=$(kc -n "$NS" get imagebuilds -o json | jq -r --arg i "$1" '.items[] | select(.spec.output.image == $i) | .metadata.name')
  [[ $(wc -w <<<"$names") == 1 ]] || die "expected one ImageBuild of $1, found: '${names//$'\n'/ }'"
  echo "$names"
}

# customrun PIPELINERUN TASK: the CustomRun of a pipeline task; fails while there is none.
customrun() {
  local name
  name=$(kc -n "$NS" get customruns -l "tekton.dev/pipelineRun=$1,tekton.dev/pipelineTask=$2" -o json | jq -r '.items[0].metadata.name // empty')
  [[ -n "$name" ]] && echo "$name"
}

# expect_tekton KIND NAME: waits for it to end and fails (with the details) unless it succeeded.
expect_tekton() {
  local s
  s=$(wait_tekton "$1" "$2")
  if [[ "$s" != True ]]; then
    dump_tekton "$2"
    die "$1 $2 ended Succeeded=${s:-?} ($(reason "$1" "$2"))"
  fi
  info "ok: $1 $2 Succeeded"
}

# expect_argo NAME PHASE: waits for the Workflow to end, fails (with the details) unless in PHASE.
expect_argo() {
  local p
  p=$(wait_argo "$1")
  if [[ "$p" != "$2" ]]; then
    dump_argo "$1"
    die "Workflow $1 ended $p, expected $2"
  fi
  info "ok: Workflow $1 $p"
}

# run_result KIND NAME RESULT: a Tekton result (v1 "results", v1beta1 "taskResults").
run_result() {
  get "$1" "$2" "(.status.results // .status.taskResults // [])[] | select(.name == \"$3\") | .value"
}

# custom_task_run NAME SLEEP [TIMEOUT]: a PipelineRun with one custom-task build of the test
# context (the build's RUN step sleeps SLEEP seconds).
custom_task_run() {
  local name=$1 sleep=$2 timeout=${3:-}
  kc create -f - <<YAML
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: $name
  namespace: $NS
spec:
  pipelineSpec:
    tasks:
      - name: build
        taskRef: {apiVersion: hearth.dev/v1alpha1, kind: ImageBuild}
        ${timeout:+timeout: $timeout}
        params:
          - {name: IMAGE, value: "$(image "$name")"}
          - {name: GIT_URL, value: "$GIT_URL"}
          - {name: GIT_REVISION, value: main}
          - {name: CACHE_KEY, value: "$KEY-slow"}
          - {name: BUILD_ARGS, value: ["RUN_ID=$name", "SLEEP=$sleep"]}
YAML
}

# ------------------------------------------------------------------ scenarios

# The hearth-build Task uploads a cloned workspace and reports the digest; a second run of the
# same cache key is Hot, its Dockerfile outside CONTEXT (sent apart from the context).
scenario_tekton_task() {
  local n pr tr img ib dockerfile copy
  for n in 1 2; do
    pr=task-$RUN-$n
    img=$(image "task-$n")
    dockerfile=src/Dockerfile copy=""
    if [[ $n == 2 ]]; then
      dockerfile=docker/Dockerfile
      # Expanded once into the script below (Tekton then fills in the workspace path).
      # shellcheck disable=SC2016 # Tekton's $(...), not the shell's
      copy='mkdir "$(workspaces.output.path)/docker" && mv "$(workspaces.output.path)/src/Dockerfile" "$(workspaces.output.path)/docker/"'
    fi
    kc create -f - <<YAML
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: $pr
  namespace: $NS
spec:
  taskRunTemplate:
    serviceAccountName: hearth-build
  workspaces:
    - name: shared
      volumeClaimTemplate:
        spec:
          accessModes: [ReadWriteOnce]
          resources: {requests: {storage: 100Mi}}
  pipelineSpec:
    workspaces: [{name: shared}]
    tasks:
      - name: fetch
        workspaces: [{name: output, workspace: shared}]
        taskSpec:
          workspaces: [{name: output}]
          steps:
            - name: clone
              image: $GITD_IMAGE
              imagePullPolicy: Never
              script: |
                #!/bin/sh
                set -eu
                git clone -q --depth 1 "$GIT_URL" "\$(workspaces.output.path)/src"
                $copy
      - name: build
        runAfter: [fetch]
        taskRef: {name: hearth-build}
        workspaces: [{name: source, workspace: shared}]
        params:
          - {name: IMAGE, value: "$img"}
          - {name: CONTEXT, value: src}
          - {name: DOCKERFILE, value: $dockerfile}
          - {name: BUILD_ARGS, value: ["RUN_ID=$pr"]}
          - {name: CACHE_KEY, value: "$KEY-task"}
          - {name: BUILDER_IMAGE, value: "$HEARTH_IMAGE"}
YAML
    expect_tekton pipelinerun "$pr"
    tr=$(kc -n "$NS" get taskruns -l "tekton.dev/pipelineRun=$pr,tekton.dev/pipelineTask=build" -o jsonpath='{.items[0].metadata.name}')
    assert_match "$(run_result taskrun "$tr" IMAGE_DIGEST)" "$DIGEST" "$tr result IMAGE_DIGEST"
    assert_eq "$(run_result taskrun "$tr" IMAGE_URL)" "$img" "$tr result IMAGE_URL"
    ib=$(ib_for_image "$img")
    assert_eq "$(get imagebuild "$ib" .status.imageDigest)" "$(run_result taskrun "$tr" IMAGE_DIGEST)" "IMAGE_DIGEST is the ImageBuild's digest"
    assert_eq "$(get imagebuild "$ib" .status.placement.warmth)" "$([[ $n == 1 ]] && echo Cold || echo Hot)" "$ib warmth (run $n)"
    if [[ $n == 2 ]]; then
      assert_eq "$(get imagebuild "$ib" .spec.dockerfile)" ../docker/Dockerfile "$ib spec.dockerfile (outside CONTEXT)"
      assert_eq "$(get imagebuild "$ib" .spec.source.upload.separateDockerfile)" true "$ib sent its Dockerfile apart"
    fi
    # The run ends when the build is Succeeded (image pushed); its save follows. The second
    # run is Hot on the saved replica: wait for the save, not just the run.
    wait_snapshotted "$ib"
  done
}

# The custom task: two chained builds, the second FROM-arg pinned to the first's digest; no
# step pod; results on the CustomRuns and the Pipeline.
scenario_tekton_custom_task() {
  local pr=custom-$RUN cr_base cr_app base_digest app_digest
  kc create -f - <<YAML
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: $pr
  namespace: $NS
spec:
  pipelineSpec:
    results:
      - {name: APP_DIGEST, value: "\$(tasks.app.results.IMAGE_DIGEST)"}
    tasks:
      - name: base
        taskRef: {apiVersion: hearth.dev/v1alpha1, kind: ImageBuild}
        params:
          - {name: IMAGE, value: "$(image base)"}
          - {name: GIT_URL, value: "$GIT_URL"}
          - {name: GIT_REVISION, value: main}
          - {name: CACHE_KEY, value: "$KEY-custom"}
          - {name: BUILD_ARGS, value: ["RUN_ID=$pr-base"]}
          - {name: PUSH_SECRET, value: registry-push}
      - name: app
        taskRef: {apiVersion: hearth.dev/v1alpha1, kind: ImageBuild}
        params:
          - {name: IMAGE, value: "$(image app)"}
          - {name: GIT_URL, value: "$GIT_URL"}
          - {name: CACHE_KEY, value: "$KEY-custom"}
          - {name: BUILD_ARGS, value: ["RUN_ID=$pr-app", "BASE=\$(tasks.base.results.IMAGE_DIGEST)"]}
YAML
  expect_tekton pipelinerun "$pr"
  cr_base=$(customrun "$pr" base)
  cr_app=$(customrun "$pr" app)
  base_digest=$(run_result customrun "$cr_base" IMAGE_DIGEST)
  app_digest=$(run_result customrun "$cr_app" IMAGE_DIGEST)
  assert_match "$base_digest" "$DIGEST" "$cr_base result IMAGE_DIGEST"
  assert_eq "$(run_result customrun "$cr_base" IMAGE_URL)" "$(image base)" "$cr_base result IMAGE_URL"
  assert_eq "$(reason customrun "$cr_base")" Succeeded "$cr_base reason"
  assert_match "$(get customrun "$cr_base" .status.startTime)" '^.+$' "$cr_base startTime"
  assert_match "$(get customrun "$cr_base" .status.completionTime)" '^.+$' "$cr_base completionTime"
  # One ImageBuild per CustomRun, of its name, owned by it.
  assert_eq "$(get imagebuild "$cr_base" '.metadata.ownerReferences[0].kind')" CustomRun "ImageBuild $cr_base owner"
  assert_eq "$(get imagebuild "$cr_base" .status.imageDigest)" "$base_digest" "IMAGE_DIGEST is the ImageBuild's digest"
  assert_eq "$(get imagebuild "$cr_app" .spec.buildArgs.BASE)" "$base_digest" "the second build got the first one's digest"
  assert_eq "$(get imagebuild "$cr_app" .status.placement.warmth)" Hot "the second build of the key is Hot"
  assert_eq "$(get pipelinerun "$pr" '.status.results[]? | select(.name == "APP_DIGEST") | .value')" "$app_digest" "Pipeline result APP_DIGEST"
  assert_eq "$(kc -n "$NS" get pods -l "tekton.dev/pipelineRun=$pr" -o name | wc -l | tr -d ' ')" 0 "pods of the PipelineRun (none: nothing waits)"
}

# Cancelling the PipelineRun cancels the CustomRun (CustomRunCancelled) and its ImageBuild.
scenario_tekton_cancel() {
  local pr=cancel-$RUN cr
  custom_task_run "$pr" 300
  retry 120 "the CustomRun of $pr exists" customrun "$pr" build >/dev/null
  cr=$(customrun "$pr" build)
  retry 60 "ImageBuild $cr exists" kc -n "$NS" get imagebuild "$cr" >/dev/null
  wait_ib_phase "$cr" Building
  kc -n "$NS" patch pipelinerun "$pr" --type merge -p '{"spec":{"status":"Cancelled"}}'
  assert_eq "$(wait_tekton customrun "$cr")" False "CustomRun $cr Succeeded"
  assert_eq "$(reason customrun "$cr")" CustomRunCancelled "CustomRun $cr reason"
  wait_ib_phase "$cr" Cancelled
  info "ok: ImageBuild $cr Cancelled"
  assert_eq "$(succeeded pipelinerun "$pr")" False "PipelineRun $pr Succeeded"
}

# A pipeline task timeout reaches the CustomRun (spec.timeout): CustomRunTimedOut, build cancelled.
scenario_tekton_timeout() {
  local pr=timeout-$RUN cr
  custom_task_run "$pr" 300 45s
  retry 120 "the CustomRun of $pr exists" customrun "$pr" build >/dev/null
  cr=$(customrun "$pr" build)
  assert_eq "$(get customrun "$cr" .spec.timeout)" 45s "CustomRun $cr spec.timeout (from the pipeline task)"
  assert_eq "$(wait_tekton customrun "$cr")" False "CustomRun $cr Succeeded"
  assert_eq "$(reason customrun "$cr")" CustomRunTimedOut "CustomRun $cr reason"
  # The run's timeout bounds the ImageBuild too: whichever controller sees it first, the
  # build stops, Cancelled by the custom task or Failed with reason Timeout by itself.
  retry 120 "ImageBuild $cr stops" ib_stopped "$cr"
  info "ok: ImageBuild $cr $(get imagebuild "$cr" .status.phase) ($(get imagebuild "$cr" '.status.conditions[]? | select(.type == "Succeeded") | .reason'))"
}

# ib_stopped NAME: the build ended Cancelled, or Failed on its own timeout.
ib_stopped() {
  local json
  json=$(kc -n "$NS" get imagebuild "$1" -o json)
  jq -e '.status.phase == "Cancelled" or (.status.phase == "Failed" and ([.status.conditions[]? | select(.type == "Succeeded") | .reason] == ["Timeout"]))' <<<"$json" >/dev/null
}

# argo_workflow NAME: a Workflow of two chained builds through the WorkflowTemplate.
argo_workflow() {
  kc create -f - <<YAML
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  name: $1
  namespace: $NS
spec:
  entrypoint: images
  serviceAccountName: hearth-workflow
  templates:
    - name: images
      dag:
        tasks:
          - name: base
            templateRef: {name: hearth-build, template: build}
            arguments:
              parameters:
                - {name: image, value: "$(image "$1-base")"}
                - {name: git-url, value: "$GIT_URL"}
                - {name: cache-key, value: "$KEY-argo"}
                - {name: build-args, value: '{"RUN_ID": "$1-base"}'}
          - name: app
            depends: base
            templateRef: {name: hearth-build, template: build}
            arguments:
              parameters:
                - {name: image, value: "$(image "$1-app")"}
                - {name: git-url, value: "$GIT_URL"}
                - {name: cache-key, value: "$KEY-argo"}
                - {name: build-args, value: '{"RUN_ID": "$1-app", "BASE": "{{tasks.base.outputs.parameters.image-digest}}"}'}
YAML
}

# node_output WORKFLOW TASK PARAM: an output parameter of a DAG task's node.
node_output() {
  get workflow "$1" ".status.nodes[] | select(.displayName == \"$2\") | .outputs.parameters[]? | select(.name == \"$3\") | .value"
}

# The WorkflowTemplate builds twice, chained: outputs the digests, the second build gets the first's.
scenario_argo() {
  local wf=argo-$RUN base app
  argo_workflow "$wf"
  expect_argo "$wf" Succeeded
  base=$(node_output "$wf" base image-build)
  app=$(node_output "$wf" app image-build)
  assert_match "$(node_output "$wf" base image-digest)" "$DIGEST" "$wf base output image-digest"
  assert_eq "$(node_output "$wf" base image-digest)" "$(get imagebuild "$base" .status.imageDigest)" "image-digest is the ImageBuild's digest"
  assert_eq "$(get imagebuild "$app" .spec.buildArgs.BASE)" "$(node_output "$wf" base image-digest)" "the second build got the first one's digest"
  assert_eq "$(node_output "$wf" app image-url)" "$(image "$wf-app")" "$wf app output image-url"
  assert_eq "$(get imagebuild "$app" '.metadata.ownerReferences[0].kind')" Workflow "ImageBuild $app owner"
}

# A build that fails ends the Workflow Failed at once (failureCondition), not at a timeout.
scenario_argo_failure() {
  local wf=argo-fail-$RUN start=$SECONDS
  kc create -f - <<YAML
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  name: $wf
  namespace: $NS
spec:
  entrypoint: build
  serviceAccountName: hearth-workflow
  workflowTemplateRef: {name: hearth-build}
  arguments:
    parameters:
      - {name: image, value: "$(image "$wf")"}
      - {name: git-url, value: "$GIT_URL"}
      - {name: dockerfile, value: No.Dockerfile}
YAML
  expect_argo "$wf" Failed
  assert_eq "$(get imagebuild "$(kc -n "$NS" get imagebuilds -l "workflows.argoproj.io/workflow=$wf" -o jsonpath='{.items[0].metadata.name}')" .status.phase)" Failed "its ImageBuild phase"
  info "ok: failed after $((SECONDS - start))s (the build's own timeout is 1h)"
}

# ------------------------------------------------------------------ main

kc get crd customruns.tekton.dev >/dev/null 2>&1 || die "no Tekton on context $CONTEXT: run e2e/pipelines-up.sh first"
kc get crd workflows.argoproj.io >/dev/null 2>&1 || die "no Argo Workflows on context $CONTEXT: run e2e/pipelines-up.sh first"
scenarios=("$@")
((${#scenarios[@]})) || scenarios=("${ALL[@]}")
check_scenarios "${ALL[*]}" "${scenarios[@]}"

log "run $RUN: cache keys $KEY-*, images $REGISTRY/hearth-e2e-$RUN-*, scenarios: ${scenarios[*]}"
run_scenarios pipelines "${scenarios[@]}"
