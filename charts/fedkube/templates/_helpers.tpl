{{/* The release's full name, the base of every object's name: "<release>" or "<release>-fedkube". */}}
{{- define "fedkube.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the operator's pod (stable across upgrades). */}}
{{- define "fedkube.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Labels on every object of the chart. */}}
{{- define "fedkube.labels" -}}
{{ include "fedkube.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "fedkube.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fedkube.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "fedkube.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "fedkube.trainerImage" -}}
{{- printf "%s:%s" .Values.trainerImage.repository (default .Chart.AppVersion .Values.trainerImage.tag) -}}
{{- end -}}

{{- define "fedkube.webhookServiceName" -}}
{{- printf "%s-webhook" (include "fedkube.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The ValidatingWebhookConfiguration is cluster-scoped: named after the release and its namespace. */}}
{{- define "fedkube.webhookConfigName" -}}
{{- printf "%s.%s.fedkube.io" (include "fedkube.fullname" .) .Release.Namespace -}}
{{- end -}}

{{- define "fedkube.webhookCertName" -}}
{{- printf "%s-webhook-tls" (include "fedkube.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Namespaces the operator serves in namespaced mode (validated by the schema: exact names). */}}
{{- define "fedkube.watchNamespaces" -}}
{{- if not .Values.watch.allNamespaces -}}
{{- if not .Values.watch.namespaces -}}
{{- fail "watch.namespaces must list at least one namespace when watch.allNamespaces is false" -}}
{{- end -}}
{{- toJson (uniq .Values.watch.namespaces) -}}
{{- else -}}
[]
{{- end -}}
{{- end -}}

{{/* The operator's command line: the one place where values become flags of `fedkube operator`. */}}
{{- define "fedkube.operatorArgs" -}}
- operator
{{- if .Values.watch.allNamespaces }}
- --all-namespaces
{{- else }}
{{- range (include "fedkube.watchNamespaces" . | fromJsonArray) }}
- --namespace={{ . }}
{{- end }}
{{- end }}
- --liveness=http://0.0.0.0:{{ .Values.operator.healthPort }}/healthz
- --log-format={{ .Values.operator.logFormat }}
{{- if eq .Values.operator.logLevel "verbose" }}
- --verbose
{{- else if eq .Values.operator.logLevel "debug" }}
- --debug
{{- end }}
- --image={{ include "fedkube.trainerImage" . }}
{{- with .Values.trainerImage.pullPolicy }}
- --image-pull-policy={{ . }}
{{- end }}
- --poll-interval={{ .Values.operator.pollIntervalSeconds }}
- --backoff-base={{ .Values.operator.backoffBaseSeconds }}
- --backoff-max={{ .Values.operator.backoffMaxSeconds }}
- --finished-pod-grace={{ .Values.operator.finishedPodGraceSeconds }}
- --checkpoint-volume-size={{ .Values.checkpoints.volumeSize }}
{{- with .Values.checkpoints.storageClass }}
- --checkpoint-storage-class={{ . }}
{{- end }}
{{- if .Values.metrics.enabled }}
- --metrics-port={{ .Values.metrics.port }}
{{- end }}
{{- if .Values.webhook.enabled }}
- --webhook-port={{ .Values.webhook.port }}
- --webhook-service={{ .Release.Namespace }}/{{ include "fedkube.webhookServiceName" . }}
- --webhook-service-port=443
{{- if .Values.webhook.certManager.enabled }}
- --webhook-cert=/etc/fedkube/webhook-tls/tls.crt
- --webhook-key=/etc/fedkube/webhook-tls/tls.key
{{- else }}
- --webhook-config={{ include "fedkube.webhookConfigName" . }}
{{- end }}
{{- end }}
{{- end -}}
