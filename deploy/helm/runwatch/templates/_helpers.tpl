{{/* The release's resource name: RELEASE-runwatch, or fullnameOverride; at most 63 characters. */}}
{{- define "runwatch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (.Values.nameOverride | default .Chart.Name) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "runwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ .Values.nameOverride | default .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "runwatch.labels" -}}
{{ include "runwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The alerts config as the JSON file runwatch reads (also hashed into a pod annotation: a change restarts the pods). */}}
{{- define "runwatch.alertsJson" -}}
{{- toJson .Values.alerts.config -}}
{{- end -}}

{{- define "runwatch.tokensSecret" -}}
{{- if .Values.auth.existingSecret -}}
{{- .Values.auth.existingSecret -}}
{{- else -}}
{{- printf "%s-tokens" (include "runwatch.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "runwatch.alertsSecret" -}}
{{- if .Values.alerts.existingSecret -}}
{{- .Values.alerts.existingSecret -}}
{{- else -}}
{{- printf "%s-alerts" (include "runwatch.fullname" .) -}}
{{- end -}}
{{- end -}}
