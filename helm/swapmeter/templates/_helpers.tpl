{{/*
Names, labels and the pieces every SwapMeter pod shares (environment, security contexts).
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "swapmeter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: <release>-<chart> (just <release> when it already holds the chart name),
or fullnameOverride. Truncated to leave room for the longest suffix the chart appends
("-worker-metrics", 15 characters) within the 63 allowed.
*/}}
{{- define "swapmeter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-version, as the helm.sh/chart label wants it. */}}
{{- define "swapmeter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "swapmeter.labels" -}}
helm.sh/chart: {{ include "swapmeter.chart" . }}
{{ include "swapmeter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: swapmeter
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select this release's pods; add app.kubernetes.io/component per workload. */}}
{{- define "swapmeter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "swapmeter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "swapmeter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "swapmeter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret whose keys are the pods' SWAPMETER_* secrets. */}}
{{- define "swapmeter.secretName" -}}
{{- default (include "swapmeter.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/*
The JWT secret: the value given, else the one the release's Secret already holds (so an
upgrade does not sign everyone out), else a new random one. A generated one is stored
back in .Values, so that every template of this rendering (the Secret, the migration
hook's copy, the pods' checksum) sees the same one.
*/}}
{{- define "swapmeter.jwtSecret" -}}
{{- if not .Values.secrets.jwtSecret }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "swapmeter.fullname" .) }}
{{- $secret := randAlphaNum 48 }}
{{- if and $existing $existing.data (hasKey $existing.data "SWAPMETER_JWT_SECRET") }}
{{- $secret = index $existing.data "SWAPMETER_JWT_SECRET" | b64dec }}
{{- end }}
{{- $_ := set .Values.secrets "jwtSecret" $secret }}
{{- end }}
{{- .Values.secrets.jwtSecret }}
{{- end }}

{{/*
The audit chain's HMAC key, like the JWT secret: the value given, else the release's
Secret's (a new key at each upgrade would leave the rows signed before unverifiable),
else a new random one.
*/}}
{{- define "swapmeter.auditKey" -}}
{{- if not .Values.secrets.auditKey }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "swapmeter.fullname" .) }}
{{- $secret := randAlphaNum 48 }}
{{- if and $existing $existing.data (hasKey $existing.data "SWAPMETER_AUDIT_KEY") }}
{{- $secret = index $existing.data "SWAPMETER_AUDIT_KEY" | b64dec }}
{{- end }}
{{- $_ := set .Values.secrets "auditKey" $secret }}
{{- end }}
{{- .Values.secrets.auditKey }}
{{- end }}

{{/* The data of the chart's Secret. */}}
{{- define "swapmeter.secretData" -}}
{{- include "swapmeter.secretDataWith" (dict "root" . "databaseUrl" .Values.secrets.databaseUrl) }}
{{- end }}

{{/* The data of the migration hook's own Secret: the same, with the URL of the owner. */}}
{{- define "swapmeter.migrationSecretData" -}}
{{- $url := .Values.secrets.migrationDatabaseUrl | default .Values.secrets.databaseUrl }}
{{- include "swapmeter.secretDataWith" (dict "root" . "databaseUrl" $url) }}
{{- end }}

{{- define "swapmeter.secretDataWith" -}}
{{- $root := .root }}
{{- $secrets := $root.Values.secrets }}
SWAPMETER_JWT_SECRET: {{ include "swapmeter.jwtSecret" $root | b64enc | quote }}
SWAPMETER_AUDIT_KEY: {{ include "swapmeter.auditKey" $root | b64enc | quote }}
SWAPMETER_AUDIT_KEY_ID: {{ $secrets.auditKeyId | b64enc | quote }}
{{- with $secrets.auditOldKeys }}
SWAPMETER_AUDIT_OLD_KEYS: {{ . | b64enc | quote }}
{{- end }}
SWAPMETER_DATABASE_URL: {{ .databaseUrl | b64enc | quote }}
SWAPMETER_REDIS_URL: {{ $secrets.redisUrl | b64enc | quote }}
{{- with $secrets.bootstrapAdminEmail }}
SWAPMETER_BOOTSTRAP_ADMIN_EMAIL: {{ . | b64enc | quote }}
{{- end }}
{{- with $secrets.bootstrapAdminPassword }}
SWAPMETER_BOOTSTRAP_ADMIN_PASSWORD: {{ . | b64enc | quote }}
{{- end }}
{{- with $secrets.resultsSigningSecret }}
SWAPMETER_RESULTS_SIGNING_SECRET: {{ . | b64enc | quote }}
{{- end }}
{{- end }}

{{/* registry/repository[:tag|@digest] */}}
{{- define "swapmeter.imageRef" -}}
{{- $repo := .repository }}
{{- if .registry }}{{ $repo = printf "%s/%s" .registry .repository }}{{ end }}
{{- if .digest }}
{{- printf "%s@%s" $repo .digest }}
{{- else }}
{{- printf "%s:%s" $repo .tag }}
{{- end }}
{{- end }}

{{/* The CPU image (API, migrations, CPU workers). */}}
{{- define "swapmeter.image" -}}
{{- $img := .Values.image }}
{{- include "swapmeter.imageRef" (dict "registry" $img.registry "repository" $img.repository "tag" (default .Chart.AppVersion $img.tag) "digest" $img.digest) }}
{{- end }}

{{/* The workers' image: the GPU image when worker.gpu.enabled. */}}
{{- define "swapmeter.workerImage" -}}
{{- if .Values.worker.gpu.enabled }}
{{- $img := .Values.image }}
{{- $gpu := .Values.worker.gpu.image }}
{{- $tag := default (printf "%s-gpu" (default .Chart.AppVersion $img.tag)) $gpu.tag }}
{{- include "swapmeter.imageRef" (dict "registry" $img.registry "repository" (default $img.repository $gpu.repository) "tag" $tag "digest" "") }}
{{- else }}
{{- include "swapmeter.image" . }}
{{- end }}
{{- end }}

{{/* Pod-level security context (the `enabled` switch is not a Kubernetes field). */}}
{{- define "swapmeter.podSecurityContext" -}}
{{- if .Values.podSecurityContext.enabled -}}
securityContext:
  {{- omit .Values.podSecurityContext "enabled" | toYaml | nindent 2 }}
{{- end }}
{{- end }}

{{/* Container-level security context. */}}
{{- define "swapmeter.containerSecurityContext" -}}
{{- if .Values.containerSecurityContext.enabled -}}
securityContext:
  {{- omit .Values.containerSecurityContext "enabled" | toYaml | nindent 2 }}
{{- end }}
{{- end }}

{{/* The results claim (results.backend=volume). */}}
{{- define "swapmeter.resultsClaimName" -}}
{{- default (printf "%s-results" (include "swapmeter.fullname" .)) .Values.results.persistence.existingClaim }}
{{- end }}

{{/* The models claim. */}}
{{- define "swapmeter.modelsClaimName" -}}
{{- default (printf "%s-models" (include "swapmeter.fullname" .)) .Values.models.persistence.existingClaim }}
{{- end }}

{{/*
Environment of every SwapMeter container, secrets aside (those come from envFrom).
Settings are the ones app/settings.py reads; `config` and `extraEnv` come last so an
operator's value wins over the chart's.
*/}}
{{- define "swapmeter.env" -}}
- name: SWAPMETER_ENVIRONMENT
  value: {{ .Values.environment | quote }}
- name: SWAPMETER_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: SWAPMETER_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: SWAPMETER_DATA_DIR
  value: {{ .Values.dataDir | quote }}
# Libraries that write under $HOME (caches) write to the /tmp emptyDir: the root
# filesystem is read-only.
- name: HOME
  value: /tmp
- name: SWAPMETER_MODELS_DIR
  value: {{ .Values.models.mountPath | quote }}
- name: SWAPMETER_ALLOW_NONCOMMERCIAL_MODELS
  value: {{ .Values.models.allowNoncommercial | quote }}
{{- with .Values.models.baseUrl }}
- name: SWAPMETER_MODELS_BASE_URL
  value: {{ . | quote }}
{{- end }}
- name: SWAPMETER_RESULTS_BACKEND
  value: {{ eq .Values.results.backend "s3" | ternary "s3" "local" | quote }}
{{- if eq .Values.results.backend "s3" }}
- name: SWAPMETER_RESULTS_S3_BUCKET
  value: {{ required "results.s3.bucket is required when results.backend is s3" .Values.results.s3.bucket | quote }}
- name: SWAPMETER_RESULTS_S3_PREFIX
  value: {{ .Values.results.s3.prefix | quote }}
{{- with .Values.results.s3.endpointUrl }}
- name: SWAPMETER_RESULTS_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.results.s3.region }}
- name: SWAPMETER_RESULTS_S3_REGION
  value: {{ . | quote }}
- name: AWS_DEFAULT_REGION
  value: {{ . | quote }}
{{- end }}
{{- else }}
- name: SWAPMETER_RESULTS_DIR
  value: {{ .Values.results.persistence.mountPath | quote }}
{{- end }}
{{- with .Values.results.baseUrl }}
- name: SWAPMETER_RESULTS_BASE_URL
  value: {{ . | quote }}
{{- end }}
- name: SWAPMETER_RESULTS_RETENTION_SECONDS
  value: {{ .Values.results.retentionSeconds | quote }}
- name: SWAPMETER_RESULTS_URL_TTL_SECONDS
  value: {{ .Values.results.urlTtlSeconds | quote }}
- name: SWAPMETER_JOBS_WORKER_CONCURRENCY
  value: {{ .Values.worker.concurrency | quote }}
- name: SWAPMETER_JOBS_WORKER_METRICS_PORT
  value: {{ .Values.worker.metricsPort | quote }}
- name: SWAPMETER_JOBS_WORKER_METRICS_HOST
  value: {{ .Values.worker.metricsHost | quote }}
{{- with .Values.metrics.token.existingSecret }}
- name: SWAPMETER_METRICS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.metrics.token.key | quote }}
{{- end }}
{{- range $name, $value := .Values.config }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* envFrom of every SwapMeter container: the secrets, and the S3 credentials. */}}
{{- define "swapmeter.envFrom" -}}
- secretRef:
    name: {{ include "swapmeter.secretName" . }}
{{- if and (eq .Values.results.backend "s3") .Values.results.s3.existingSecret }}
- secretRef:
    name: {{ .Values.results.s3.existingSecret }}
{{- end }}
{{- end }}

{{/* The writable paths of a read-only root filesystem: /tmp and the data dir. */}}
{{- define "swapmeter.scratchVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: {{ .Values.dataDir }}
{{- if ne .Values.results.backend "s3" }}
- name: results
  mountPath: {{ .Values.results.persistence.mountPath }}
{{- end }}
{{- end }}

{{/* The volumes behind swapmeter.scratchVolumeMounts; `sizeLimit` bounds the data dir. */}}
{{- define "swapmeter.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
- name: data
  emptyDir:
    sizeLimit: {{ .sizeLimit }}
{{- if ne .context.Values.results.backend "s3" }}
- name: results
  persistentVolumeClaim:
    claimName: {{ include "swapmeter.resultsClaimName" .context }}
{{- end }}
{{- end }}

{{/*
Checkov checks that SwapMeter's workloads fail on purpose, each with its reason; checkov
reads `checkov.io/skipN: CHECK_ID=reason` annotations. The image ones apply only while
the values leave them failing.
*/}}
{{- define "swapmeter.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_35=SwapMeter reads its settings, secrets included, from SWAPMETER_* environment variables only (pydantic-settings); it has no file-based secrets
{{- if not .Values.image.digest }}
checkov.io/skip2: CKV_K8S_43=The image is pinned by its release tag; set image.digest to pin it by digest
{{- end }}
{{- if ne .Values.image.pullPolicy "Always" }}
checkov.io/skip3: CKV_K8S_15=Release tags are never re-pushed, so IfNotPresent runs the same image without a registry round trip per pod start
{{- end }}
{{- end }}
