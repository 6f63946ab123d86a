{{/* Names and labels shared by every template. */}}

{{- define "hearth.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every resource name: "<release>" when it already says hearth, else "<release>-hearth". */}}
{{- define "hearth.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "hearth.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the chart. */}}
{{- define "hearth.labels" -}}
helm.sh/chart: {{ include "hearth.chart" . }}
{{ include "hearth.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: hearth
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the controller pods (Deployment, Service, PDB, NetworkPolicy). */}}
{{- define "hearth.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hearth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The builder image: builder.image.repository:tag, or a plain builder.image string. */}}
{{- define "hearth.builderImage" -}}
{{- $image := .Values.builder.image }}
{{- if kindIs "string" $image }}
{{- required "builder.image is required" $image }}
{{- else }}
{{- printf "%s:%s" (required "builder.image.repository is required" $image.repository) (required "builder.image.tag is required" $image.tag) }}
{{- end }}
{{- end }}

{{/* The controller's ServiceAccount: serviceAccount.name, else the full name when the chart creates it. */}}
{{- define "hearth.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hearth.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false: the ServiceAccount the chart binds the controller's roles to (never the namespace's default)" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The hearth image, controller and snapshot Jobs alike. */}}
{{- define "hearth.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The operator config file, as the controller reads it with --config (keys fixed by the controller). */}}
{{/* Names of a [{name: ...}] list of Secrets, as a JSON list (the operator config takes names). */}}
{{- define "hearth.secretNames" -}}
{{- $names := list }}
{{- range . }}{{ $names = append $names .name }}{{ end }}
{{- toJson $names }}
{{- end }}

{{- define "hearth.config" -}}
builder:
  image: {{ include "hearth.builderImage" . | quote }}
  hearthImage: {{ default (include "hearth.image" .) .Values.builder.hearthImage | quote }}
  imagePullPolicy: {{ .Values.builder.imagePullPolicy }}
  resources:{{ if .Values.builder.resources }}{{ toYaml .Values.builder.resources | nindent 4 }}{{ else }} {{ toJson .Values.builder.resources }}{{ end }}
  nodeSelector:{{ if .Values.builder.nodeSelector }}{{ toYaml .Values.builder.nodeSelector | nindent 4 }}{{ else }} {{ toJson .Values.builder.nodeSelector }}{{ end }}
  tolerations:{{ if .Values.builder.tolerations }}{{ toYaml .Values.builder.tolerations | nindent 4 }}{{ else }} {{ toJson .Values.builder.tolerations }}{{ end }}
  serviceAccountName: {{ .Values.builder.serviceAccountName | quote }}
  automountServiceAccountToken: {{ .Values.builder.automountServiceAccountToken }}
  imagePullSecrets: {{ include "hearth.secretNames" .Values.builder.imagePullSecrets }}
  podLabels: {{ toJson .Values.builder.podLabels }}
  podAnnotations: {{ toJson .Values.builder.podAnnotations }}
  priorityClassName: {{ .Values.builder.priorityClassName | quote }}
  runtimeClassName: {{ .Values.builder.runtimeClassName | quote }}
  readOnlyRuntimeClassName: {{ .Values.builder.readOnlyRuntimeClassName | quote }}
  proxy:
    httpProxy: {{ .Values.builder.proxy.httpProxy | quote }}
    httpsProxy: {{ .Values.builder.proxy.httpsProxy | quote }}
    noProxy: {{ .Values.builder.proxy.noProxy | quote }}
  defaultArch: {{ .Values.builder.defaultArch | default "amd64" | quote }}
  registryLogin:
    providers: {{ toJson (.Values.builder.registryLogin.providers | default list) }}
    registries: {{ toJson (.Values.builder.registryLogin.registries | default list) }}
cache:
  storageClassName: {{ .Values.cache.storageClassName | quote }}
  size: {{ .Values.cache.size | quote }}
  nodeBudget: {{ .Values.cache.nodeBudget | quote }}
  maxReplicas: {{ int .Values.cache.maxReplicas }}
  cloneStorageClasses:{{ if .Values.cache.cloneStorageClasses }}{{ toYaml .Values.cache.cloneStorageClasses | nindent 4 }}{{ else }} []{{ end }}
  cloneBindTimeout: {{ .Values.cache.cloneBindTimeout | default "2m" | quote }}
snapshot:
  store: {{ .Values.snapshot.store | quote }}
  credentialsSecret: {{ .Values.snapshot.credentialsSecret | quote }}
  fileStoreClaim: {{ .Values.snapshot.fileStoreClaim | quote }}
  s3:
    endpoint: {{ .Values.snapshot.s3.endpoint | quote }}
    region: {{ .Values.snapshot.s3.region | quote }}
    pathStyle: {{ .Values.snapshot.s3.pathStyle }}
  every: {{ int .Values.snapshot.every }}
  minInterval: {{ .Values.snapshot.minInterval | quote }}
  gcInterval: {{ .Values.snapshot.gcInterval | quote }}
  gcGrace: {{ .Values.snapshot.gcGrace | quote }}
  deleteTimeout: {{ .Values.snapshot.deleteTimeout | quote }}
  retain: {{ int .Values.snapshot.retain }}
namespaces:{{ if .Values.namespaces }}{{ toYaml .Values.namespaces | nindent 2 }}{{ else }} []{{ end }}
tekton:
  enabled: {{ .Values.tekton.enabled }}
buildkitd:
  registries:{{ if .Values.buildkitd.registries }}{{ toYaml .Values.buildkitd.registries | nindent 4 }}{{ else }} []{{ end }}
{{- /* A TTL or limit set to null (Helm then drops the key) or, for a TTL, "" renders null: off. */}}
{{- $r := .Values.retention }}
retention:
  ttlAfterSucceeded: {{ with $r.ttlAfterSucceeded }}{{ . | quote }}{{ else }}null{{ end }}
  ttlAfterFailed: {{ with $r.ttlAfterFailed }}{{ . | quote }}{{ else }}null{{ end }}
  succeededLimit: {{ if kindIs "invalid" $r.succeededLimit }}null{{ else }}{{ int $r.succeededLimit }}{{ end }}
  failedLimit: {{ if kindIs "invalid" $r.failedLimit }}null{{ else }}{{ int $r.failedLimit }}{{ end }}
  minAge: {{ $r.minAge | quote }}
{{- end }}

{{/* Port of the snapshot store for the NetworkPolicy: from snapshot.s3.endpoint, else 443/80 by scheme. */}}
{{- define "hearth.storePort" -}}
{{- $endpoint := .Values.snapshot.s3.endpoint }}
{{- if $endpoint }}
{{- $url := urlParse $endpoint }}
{{- $hostport := splitList ":" $url.host }}
{{- if gt (len $hostport) 1 }}{{ last $hostport }}{{ else if eq $url.scheme "http" }}80{{ else }}443{{ end }}
{{- else }}443{{ end }}
{{- end }}

{{/* Refuse values the controller could not run with, at render time rather than in a crash loop. */}}
{{- define "hearth.validate" -}}
{{- if not (has .Values.logFormat (list "json" "text")) }}
{{- fail (printf "logFormat must be json or text, not %q" .Values.logFormat) }}
{{- end }}
{{- $store := .Values.snapshot.store }}
{{- if and $store (not (or (hasPrefix "s3://" $store) (hasPrefix "file:///" $store))) }}
{{- fail (printf "snapshot.store must be s3://bucket/prefix, file:///path or empty, not %q" $store) }}
{{- end }}
{{- if and (hasPrefix "s3://" $store) (not .Values.snapshot.credentialsSecret) }}
{{- fail "snapshot.credentialsSecret is required with an s3:// store: the Secret with the store credentials in each build namespace, mounted as files in the snapshot Jobs" }}
{{- end }}
{{- if and (hasPrefix "file://" $store) (not .Values.snapshot.fileStoreClaim) }}
{{- fail "snapshot.fileStoreClaim is required with a file:// store: the ReadWriteMany PVC the snapshot Jobs mount at the store path" }}
{{- end }}
{{- if lt (int .Values.replicaCount) 1 }}
{{- fail "replicaCount must be at least 1" }}
{{- end }}
{{- end }}
