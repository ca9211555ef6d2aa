{{/* Names ----------------------------------------------------------------------------- */}}

{{- define "ragtide.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: fullnameOverride, else <release>-<name>, or just the release name when it
already contains the chart name. Truncated to 63 characters (DNS label).
*/}}
{{- define "ragtide.fullname" -}}
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

{{/* The worker's objects: <fullname>-worker, still at most 63 characters. */}}
{{- define "ragtide.workerName" -}}
{{- printf "%s-worker" (include "ragtide.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{/* The gRPC objects (headless Service, Ingress): <fullname>-grpc, at most 63 characters. */}}
{{- define "ragtide.grpcName" -}}
{{- printf "%s-grpc" (include "ragtide.fullname" . | trunc 58 | trimSuffix "-") }}
{{- end }}

{{- define "ragtide.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ragtide.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ragtide.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels: the app.kubernetes.io recommended set ------------------------------------- */}}

{{- define "ragtide.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ragtide.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ragtide.labels" -}}
helm.sh/chart: {{ include "ragtide.chart" . }}
{{ include "ragtide.selectorLabels" . }}
app.kubernetes.io/version: {{ include "ragtide.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ragtide
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one component: "api", "worker", "test". Call with (dict "ctx" $ "component" "api"). */}}
{{- define "ragtide.componentLabels" -}}
{{ include "ragtide.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ragtide.componentSelectorLabels" -}}
{{ include "ragtide.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Image --------------------------------------------------------------------------------- */}}

{{- define "ragtide.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "ragtide.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "ragtide.imageTag" .) }}
{{- end }}
{{- end }}

{{/* Secrets ------------------------------------------------------------------------------- */}}

{{- define "ragtide.secretName" -}}
{{- default (include "ragtide.fullname" .) .Values.existingSecret }}
{{- end }}

{{/*
The secret-backed variables as a list of [env name, secret key] pairs, as JSON. With
existingSecret every non-empty key is referenced; otherwise only the URLs that are set,
from the chart's own Secret.
*/}}
{{- define "ragtide.secretVars" -}}
{{- $vars := list }}
{{- $table := list
  (list "RAGTIDE_STORE__URL" .Values.store.url .Values.existingSecretKeys.storeUrl)
  (list "RAGTIDE_REDIS__URL" .Values.redis.url .Values.existingSecretKeys.redisUrl)
  (list "RAGTIDE_RABBITMQ__URL" .Values.rabbitmq.url .Values.existingSecretKeys.rabbitmqUrl) }}
{{- range $table }}
{{- $env := index . 0 }}{{ $value := index . 1 }}{{ $key := index . 2 }}
{{- if $.Values.existingSecret }}
{{- if $key }}{{ $vars = append $vars (list $env $key) }}{{ end }}
{{- else if $value }}
{{- $vars = append $vars (list $env $key) }}
{{- end }}
{{- end }}
{{- toJson $vars }}
{{- end }}

{{/* Authentication ------------------------------------------------------------------- */}}

{{/* The Secret holding the admin key: auth.existingSecret, else existingSecret, else ours. */}}
{{- define "ragtide.adminKeySecretName" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecret }}
{{- else if .Values.existingSecret }}{{ .Values.existingSecret }}
{{- else }}{{ include "ragtide.fullname" . }}-auth{{ end }}
{{- end }}

{{- define "ragtide.adminKeySecretKey" -}}
{{- if or .Values.auth.existingSecret .Values.existingSecret }}{{ .Values.auth.existingSecretKey }}
{{- else }}admin-key{{ end }}
{{- end }}

{{/* true when the chart manages the admin key Secret itself. */}}
{{- define "ragtide.managesAdminKey" -}}
{{- if and .Values.auth.enabled (not .Values.auth.existingSecret) (not .Values.existingSecret) }}true{{ end }}
{{- end }}

{{/*
The admin key of the chart-managed Secret: auth.adminKey, else the key already in the
cluster (kept across upgrades), else a new random one.
*/}}
{{- define "ragtide.adminKey" -}}
{{- if .Values.auth.adminKey }}{{ .Values.auth.adminKey }}
{{- else }}
{{- $current := lookup "v1" "Secret" .Release.Namespace (include "ragtide.adminKeySecretName" .) }}
{{- if and $current $current.data (hasKey $current.data "admin-key") }}{{ index $current.data "admin-key" | b64dec }}
{{- else }}{{ randAlphaNum 48 }}{{ end }}
{{- end }}
{{- end }}

{{/*
What the checksum/admin-key annotation hashes, so a changed key rolls the pods on the
next upgrade: the key given as a value; for a Secret the chart does not write (or one
it generated), the key as the cluster holds it now (lookup; empty when rendering
offline or on first install).
*/}}
{{- define "ragtide.adminKeyFingerprint" -}}
{{- if and (include "ragtide.managesAdminKey" .) .Values.auth.adminKey }}value:{{ .Values.auth.adminKey }}
{{- else }}
{{- $name := include "ragtide.adminKeySecretName" . }}
{{- $key := include "ragtide.adminKeySecretKey" . }}
{{- $current := lookup "v1" "Secret" .Release.Namespace $name }}
{{- $data := "" }}
{{- if and $current $current.data (hasKey $current.data $key) }}{{ $data = index $current.data $key }}{{ end }}
{{- printf "secret:%s/%s:%s" $name $key $data }}
{{- end }}
{{- end }}

{{/* env, volume and mount that give a container the admin key as a file. */}}
{{- define "ragtide.authEnv" -}}
- name: RAGTIDE_AUTH__ENABLED
  value: {{ .Values.auth.enabled | quote }}
{{- if .Values.auth.enabled }}
- name: RAGTIDE_AUTH__ADMIN_KEY_FILE
  value: /etc/ragtide/auth/admin-key
{{- end }}
{{- end }}

{{- define "ragtide.authVolume" -}}
{{- if .Values.auth.enabled }}
- name: admin-key
  secret:
    secretName: {{ include "ragtide.adminKeySecretName" . }}
    defaultMode: 0440
    items:
      - key: {{ include "ragtide.adminKeySecretKey" . }}
        path: admin-key
{{- end }}
{{- end }}

{{- define "ragtide.authVolumeMount" -}}
{{- if .Values.auth.enabled }}
- name: admin-key
  mountPath: /etc/ragtide/auth
  readOnly: true
{{- end }}
{{- end }}

{{/* Tenant files: file name -> content, ids given without an extension become <id>.yaml. */}}
{{- define "ragtide.tenantFiles" -}}
{{- $files := dict }}
{{- range $name, $content := .Values.tenants }}
{{- if not (regexMatch "^[a-z0-9][a-z0-9._-]*$" $name) }}
{{- fail (printf "tenants: %q is not a tenant id or file name (lowercase letters, digits, . _ -)" $name) }}
{{- end }}
{{- if regexMatch "\\.(ya?ml|json)$" $name }}
{{- $_ := set $files $name (kindIs "string" $content | ternary $content (toYaml $content)) }}
{{- else if kindIs "map" $content }}
{{- $record := merge (dict "id" $name) (deepCopy $content) }}
{{- $_ := set $files (printf "%s.yaml" $name) (toYaml $record) }}
{{- else }}
{{- fail (printf "tenants.%s: a tenant id takes a mapping (the tenant record)" $name) }}
{{- end }}
{{- end }}
{{- toJson $files }}
{{- end }}

{{/* The secret key that holds RAGTIDE_RABBITMQ__URL, or "" when there is none. */}}
{{- define "ragtide.rabbitmqSecretKey" -}}
{{- range (include "ragtide.secretVars" . | fromJsonArray) }}
{{- if eq (index . 0) "RAGTIDE_RABBITMQ__URL" }}{{ index . 1 }}{{ end }}
{{- end }}
{{- end }}

{{/* Settings as RAGTIDE_* variables: nested maps joined with "__", lists as JSON. */}}
{{- define "ragtide.flattenSettings" -}}
{{- $prefix := .prefix }}
{{- range $key, $value := .values }}
{{- $name := printf "%s%s" $prefix (upper $key) }}
{{- if kindIs "map" $value }}
{{- include "ragtide.flattenSettings" (dict "prefix" (printf "%s__" $name) "values" $value) }}
{{- else if kindIs "slice" $value }}
{{ $name }}: {{ toJson $value | quote }}
{{- else if not (kindIs "invalid" $value) }}
{{ $name }}: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Shutdown ------------------------------------------------------------------------------ */}}

{{/*
preStop + drain + grace, in whole seconds rounded up; with gRPC one more grace: the gRPC
server stops after HTTP has finished (the app's lifespan exit) and gives its calls in
flight drain.graceSeconds of their own (RAGTIDE_HTTP__GRACE_SECONDS).
*/}}
{{- define "ragtide.drainTotal" -}}
{{- $d := .Values.drain }}
{{- $grpcGrace := .Values.grpc.enabled | ternary $d.graceSeconds 0 }}
{{- ceil (addf $d.preStopSeconds $d.seconds $d.graceSeconds $grpcGrace) | int }}
{{- end }}

{{- define "ragtide.drainSum" -}}
{{- if .Values.grpc.enabled }}drain.preStopSeconds + drain.seconds + 2 x drain.graceSeconds (HTTP, then gRPC)
{{- else }}drain.preStopSeconds + drain.seconds + drain.graceSeconds{{ end }}
{{- end }}

{{- define "ragtide.terminationGracePeriodSeconds" -}}
{{- $total := include "ragtide.drainTotal" . | int }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $total 10 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) $total }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed %s = %d: the kubelet would kill requests the drain promised to finish" .Values.terminationGracePeriodSeconds (include "ragtide.drainSum" .) $total) }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds | int }}
{{- end }}
{{- end }}

{{- define "ragtide.workerTerminationGracePeriodSeconds" -}}
{{- $grace := ceil .Values.worker.graceSeconds | int }}
{{- if kindIs "invalid" .Values.worker.terminationGracePeriodSeconds }}
{{- add $grace 10 }}
{{- else if le (int .Values.worker.terminationGracePeriodSeconds) $grace }}
{{- fail (printf "worker.terminationGracePeriodSeconds (%v) must exceed worker.graceSeconds (%d): the kubelet would kill tasks the worker promised to finish" .Values.worker.terminationGracePeriodSeconds $grace) }}
{{- else }}
{{- .Values.worker.terminationGracePeriodSeconds | int }}
{{- end }}
{{- end }}

{{/* Checks that a schema cannot express ---------------------------------------------- */}}

{{- define "ragtide.validate" -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%v) must not exceed autoscaling.maxReplicas (%v)" .Values.autoscaling.minReplicas .Values.autoscaling.maxReplicas) }}
{{- end }}
{{- if and .Values.existingSecret (or .Values.store.url .Values.redis.url .Values.rabbitmq.url) }}
{{- fail "set either existingSecret or store.url/redis.url/rabbitmq.url, not both: with existingSecret the URLs come from that Secret" }}
{{- end }}
{{- if and .Values.worker.enabled .Values.worker.keda.enabled (gt (int .Values.worker.keda.minReplicaCount) (int .Values.worker.keda.maxReplicaCount)) }}
{{- fail (printf "worker.keda.minReplicaCount (%v) must not exceed worker.keda.maxReplicaCount (%v)" .Values.worker.keda.minReplicaCount .Values.worker.keda.maxReplicaCount) }}
{{- end }}
{{- if and .Values.worker.enabled (not (include "ragtide.rabbitmqSecretKey" .)) }}
{{- fail "worker.enabled needs RabbitMQ: set rabbitmq.url, or existingSecret with existingSecretKeys.rabbitmqUrl" }}
{{- end }}
{{- $grpc := .Values.grpc }}
{{- if and $grpc.enabled (eq (int $grpc.port) (int .Values.http.port)) }}
{{- fail (printf "grpc.port (%v) must differ from http.port: gRPC listens on its own port" $grpc.port) }}
{{- end }}
{{- if and $grpc.probes (not $grpc.enabled) }}
{{- fail "grpc.probes needs grpc.enabled: the gRPC readiness probe asks the gRPC server" }}
{{- end }}
{{- if and $grpc.headless (not $grpc.enabled) }}
{{- fail "grpc.headless needs grpc.enabled" }}
{{- end }}
{{- if $grpc.ingress.enabled }}
{{- if not $grpc.enabled }}
{{- fail "grpc.ingress.enabled needs grpc.enabled" }}
{{- end }}
{{- if not $grpc.ingress.tls }}
{{- fail "grpc.ingress.enabled needs grpc.ingress.tls: ingress-nginx speaks HTTP/2, and so gRPC, to clients only over TLS" }}
{{- end }}
{{- if not $grpc.ingress.hosts }}
{{- fail "grpc.ingress.enabled needs grpc.ingress.hosts" }}
{{- end }}
{{- end }}
{{- if hasKey .Values.settings "data_dir" }}
{{- fail "settings.data_dir is set by the chart: it mounts dataVolume at /data" }}
{{- end }}
{{- $owned := dict
  "http" (list "host" "port" "drain_seconds" "grace_seconds")
  "store" (list "url") "redis" (list "url") "rabbitmq" (list "url" "queue")
  "worker" (list "host" "port" "grace_seconds")
  "auth" (list "enabled" "admin_key" "admin_key_file")
  "grpc" (list "port" "host") }}
{{- range $section, $keys := $owned }}
{{- $given := get $.Values.settings $section }}
{{- range $key := $keys }}
{{- if and (kindIs "map" $given) (hasKey $given $key) }}
{{- fail (printf "settings.%s.%s is set by the chart: use the chart's own value (http.port, drain.*, store.url, redis.url, rabbitmq.*, worker.*, auth.*, grpc.*)" $section $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- $secretVars := include "ragtide.secretVars" . }}
{{- if and (contains "RAGTIDE_RABBITMQ__URL" $secretVars) (not (contains "RAGTIDE_REDIS__URL" $secretVars)) (not .Values.settings.result_store) }}
{{- fail "RabbitMQ tasks need a result store that the API and the workers share: set redis.url (or existingSecretKeys.redisUrl), or settings.result_store" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both (null the other)" }}
{{- end }}
{{- end }}

{{/* Pod pieces shared by the API and the worker ------------------------------------- */}}

{{/* Topology spread constraints with this component's selector filled in. */}}
{{- define "ragtide.topologySpread" -}}
{{- $selector := fromYaml (include "ragtide.componentSelectorLabels" .) }}
{{- range .constraints }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
{{- if not (hasKey $c "matchLabelKeys") }}
{{- $_ := set $c "matchLabelKeys" (list "pod-template-hash") }}
{{- end }}
{{ print "- " (toYaml $c | nindent 2 | trim) }}
{{- end }}
{{- end }}

{{/* A probe: (dict "path" "/ready" "port" "http" "timing" .Values.readinessProbe) */}}
{{- define "ragtide.probe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
{{ toYaml .timing }}
{{- end }}

{{/*
The readiness probe of the gRPC server: the kubelet's native gRPC probe (GA in Kubernetes
1.27) asks grpc.health.v1 for ragtide.v1.Ragtide, SERVING exactly when /ready answers 200.
Its port is a number: a gRPC probe takes no port name.
*/}}
{{- define "ragtide.grpcProbe" -}}
grpc:
  port: {{ .port }}
  service: ragtide.v1.Ragtide
{{ toYaml .timing }}
{{- end }}

{{- define "ragtide.volumes" -}}
- name: data
  {{- toYaml .Values.dataVolume | nindent 2 }}
- name: tmp
  {{- toYaml .Values.tmpVolume | nindent 2 }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "ragtide.volumeMounts" -}}
- name: data
  mountPath: /data
- name: tmp
  mountPath: /tmp
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* env shared by every Ragtide container: secrets, then extraEnv. */}}
{{- define "ragtide.sharedEnv" -}}
{{- $secret := include "ragtide.secretName" . }}
- name: RAGTIDE_RABBITMQ__QUEUE
  value: {{ .Values.rabbitmq.queue | quote }}
{{- range (include "ragtide.secretVars" . | fromJsonArray) }}
- name: {{ index . 0 }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ index . 1 }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "ragtide.envFrom" -}}
- configMapRef:
    name: {{ include "ragtide.fullname" . }}
{{- with .Values.extraEnvFrom }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod annotations: checksums of the config the pod reads, so a change rolls it. */}}
{{- define "ragtide.checksums" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if and (not .Values.existingSecret) (or .Values.store.url .Values.redis.url .Values.rabbitmq.url) }}
checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- if .Values.auth.enabled }}
checksum/admin-key: {{ include "ragtide.adminKeyFingerprint" . | sha256sum }}
{{- end }}
{{- end }}
