{{/* The optional model server (modelServer.*): names, image, args and checks. --------- */}}

{{/* <fullname>-model, at most 63 characters. */}}
{{- define "ragtide.modelServerName" -}}
{{- printf "%s-model" (include "ragtide.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{/* The OpenAI-compatible base URL of the model Service, as the API calls it. */}}
{{- define "ragtide.modelServerUrl" -}}
{{- printf "http://%s.%s.svc:%v/v1" (include "ragtide.modelServerName" .) .Release.Namespace .Values.modelServer.port }}
{{- end }}

{{/* The engine's own block (modelServer.llamacpp or modelServer.vllm). */}}
{{- define "ragtide.modelServerEngine" -}}
{{- toJson (get .Values.modelServer .Values.modelServer.engine) }}
{{- end }}

{{- define "ragtide.modelServerImage" -}}
{{- $image := (include "ragtide.modelServerEngine" . | fromJson).image }}
{{- if $image.digest }}{{ printf "%s@%s" $image.repository $image.digest }}
{{- else }}{{ printf "%s:%s" $image.repository $image.tag }}{{ end }}
{{- end }}

{{/*
Requests decoded plus requests waiting, summed over the model server's pods: the
saturation KEDA divides by targetRequestsPerReplica. One selector for both series, so
the sum is there even while one of them is not (yet) scraped.
*/}}
{{- define "ragtide.modelServerQuery" -}}
{{- $name := include "ragtide.modelServerName" . }}
{{- $m := printf "namespace=%q,pod=~%q" .Release.Namespace (printf "%s-[a-z0-9]+-[a-z0-9]+" $name) }}
{{- $names := eq .Values.modelServer.engine "vllm" | ternary "vllm:num_requests_running|vllm:num_requests_waiting" "llamacpp:requests_processing|llamacpp:requests_deferred" }}
{{- printf "sum({__name__=~%q,%s})" $names $m }}
{{- end }}

{{/* The server's arguments (the image's entrypoint is the server). */}}
{{- define "ragtide.modelServerArgs" -}}
{{- $ms := .Values.modelServer }}
{{- if eq $ms.engine "vllm" }}
{{- $v := $ms.vllm }}
- --model
- {{ $v.model | quote }}
- --served-model-name
- {{ $ms.modelName | quote }}
- --host
- "0.0.0.0"
- --port
- {{ $ms.port | quote }}
- --tensor-parallel-size
- {{ $v.gpus | quote }}
- --gpu-memory-utilization
- {{ $v.gpuMemoryUtilization | quote }}
{{- if not (kindIs "invalid" $v.maxModelLen) }}
- --max-model-len
- {{ $v.maxModelLen | quote }}
{{- end }}
{{- range $v.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- else }}
{{- $l := $ms.llamacpp }}
- --model
- {{ printf "/models/%s" $l.modelFile | quote }}
- --alias
- {{ $ms.modelName | quote }}
- --host
- "0.0.0.0"
- --port
- {{ $ms.port | quote }}
- --ctx-size
- {{ $l.contextSize | quote }}
- --parallel
- {{ $l.parallel | quote }}
{{- if not (kindIs "invalid" $l.threads) }}
- --threads
- {{ $l.threads | quote }}
{{- end }}
# /metrics: llamacpp:requests_processing and llamacpp:requests_deferred for the autoscaler.
- --metrics
{{- range $l.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ragtide.modelServerValidate" -}}
{{- $ms := .Values.modelServer }}
{{- if and $ms.autoscaling.enabled (gt (int $ms.autoscaling.minReplicas) (int $ms.autoscaling.maxReplicas)) }}
{{- fail (printf "modelServer.autoscaling.minReplicas (%v) must not exceed modelServer.autoscaling.maxReplicas (%v)" $ms.autoscaling.minReplicas $ms.autoscaling.maxReplicas) }}
{{- end }}
{{- if and $ms.download.enabled (ne $ms.engine "llamacpp") }}
{{- fail "modelServer.download fetches a GGUF for engine llamacpp; vLLM downloads modelServer.vllm.model itself" }}
{{- end }}
{{- if and $ms.download.enabled (not (and $ms.download.url $ms.download.sha256)) }}
{{- fail "modelServer.download.enabled needs download.url and download.sha256 (the file is checked before use)" }}
{{- end }}
{{- end }}
