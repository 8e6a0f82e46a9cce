{{/*
Chart name, truncated to the 63 characters Kubernetes allows in a name.
*/}}
{{- define "callwaiting-tts.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, plus the chart name unless the release name already holds it.
*/}}
{{- define "callwaiting-tts.fullname" -}}
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

{{- define "callwaiting-tts.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "callwaiting-tts.labels" -}}
helm.sh/chart: {{ include "callwaiting-tts.chart" . }}
{{ include "callwaiting-tts.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "callwaiting-tts.selectorLabels" -}}
app.kubernetes.io/name: {{ include "callwaiting-tts.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "callwaiting-tts.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "callwaiting-tts.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Secret holding SECRET_KEY, DATABASE_URL, REDIS_URL and the other credentials: the chart's or the operator's.
*/}}
{{- define "callwaiting-tts.secretName" -}}
{{- default (include "callwaiting-tts.fullname" .) .Values.existingSecret }}
{{- end }}

{{- define "callwaiting-tts.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
GPU workers may run their own build (for example when the other roles use a CPU-only image).
*/}}
{{- define "callwaiting-tts.workerImage" -}}
{{- $repository := .Values.worker.image.repository | default .Values.image.repository }}
{{- printf "%s:%s" $repository (.Values.worker.image.tag | default .Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "callwaiting-tts.databaseUrl" -}}
{{- if .Values.postgresql.enabled }}
{{- $password := required "postgresql.auth.password is required when postgresql.enabled (or set existingSecret)" .Values.postgresql.auth.password }}
{{- printf "postgres://%s:%s@%s-postgresql:5432/%s" .Values.postgresql.auth.username $password (include "callwaiting-tts.fullname" .) .Values.postgresql.auth.database }}
{{- else }}
{{- required "externalDatabase.url is required when postgresql.enabled is false (or set existingSecret)" .Values.externalDatabase.url }}
{{- end }}
{{- end }}

{{- define "callwaiting-tts.redisUrl" -}}
{{- if .Values.redis.enabled }}
{{- $auth := "" }}
{{- if .Values.redis.auth.enabled }}
{{- $auth = printf ":%s@" (required "redis.auth.password is required when redis.auth.enabled (or set existingSecret)" .Values.redis.auth.password) }}
{{- end }}
{{- printf "redis://%s%s-redis:6379/0" $auth (include "callwaiting-tts.fullname" .) }}
{{- else }}
{{- required "externalRedis.url is required when redis.enabled is false (or set existingSecret)" .Values.externalRedis.url }}
{{- end }}
{{- end }}

{{/*
ALLOWED_HOSTS: localhost for the kubelet's probes (sent with that Host header), the web Service's in-cluster
names, every ingress host, and allowedHosts.
*/}}
{{- define "callwaiting-tts.allowedHosts" -}}
{{- $service := printf "%s-web" (include "callwaiting-tts.fullname" .) }}
{{- printf "localhost,127.0.0.1,%s,%s.%s,%s.%s.svc" $service $service .Release.Namespace $service .Release.Namespace }}
{{- if .Values.ingress.enabled }}
{{- range .Values.ingress.hosts }},{{ .host }}{{ end }}
{{- end }}
{{- range .Values.allowedHosts }},{{ . }}{{ end }}
{{- end }}

{{/*
Environment shared by every app container: settings from the ConfigMap, credentials from the Secret (explicit
keys, so a ConfigMap can never shadow them), and writable places for a read-only root filesystem.
*/}}
{{- define "callwaiting-tts.appEnv" -}}
envFrom:
  - configMapRef:
      name: {{ include "callwaiting-tts.fullname" . }}
env:
  - name: SECRET_KEY
    valueFrom:
      secretKeyRef:
        name: {{ include "callwaiting-tts.secretName" . }}
        key: SECRET_KEY
  - name: DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ include "callwaiting-tts.secretName" . }}
        key: DATABASE_URL
  - name: REDIS_URL
    valueFrom:
      secretKeyRef:
        name: {{ include "callwaiting-tts.secretName" . }}
        key: REDIS_URL
  {{- range list "CELERY_BROKER_URL" "AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY" "METRICS_TOKEN" "EMAIL_HOST_PASSWORD" }}
  - name: {{ . }}
    valueFrom:
      secretKeyRef:
        name: {{ include "callwaiting-tts.secretName" $ }}
        key: {{ . }}
        optional: true
  {{- end }}
  - name: DATA_DIR
    value: /data
  # The image's home (/app) is read-only: libraries that cache under ~ (matplotlib, torch) write to /tmp,
  # and numba (through librosa) needs a cache directory it can write.
  - name: HOME
    value: /tmp
  - name: NUMBA_CACHE_DIR
    value: /tmp/numba
{{- end }}

{{/*
Volumes every app pod mounts: /tmp, and /data (local media, shared when media.persistence is on).
*/}}
{{- define "callwaiting-tts.appVolumes" -}}
- name: tmp
  emptyDir: {}
- name: data
  {{- if .Values.media.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ .Values.media.persistence.existingClaim | default (printf "%s-media" (include "callwaiting-tts.fullname" .)) }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- end }}

{{- define "callwaiting-tts.appVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /data
{{- end }}

{{/*
checksum/* pod annotations: pods restart when the settings or the chart's Secret change.
*/}}
{{- define "callwaiting-tts.configChecksums" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if not .Values.existingSecret }}
checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}
