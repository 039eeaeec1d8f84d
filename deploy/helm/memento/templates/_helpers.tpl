{{- define "memento.fullname" -}}
{{- printf "%s-memento" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "memento.secretName" -}}
{{- if .Values.existingSecret -}}{{ .Values.existingSecret }}{{- else -}}{{ include "memento.fullname" . }}{{- end -}}
{{- end -}}

{{- define "memento.labels" -}}
app.kubernetes.io/name: memento
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "memento.daemonSelector" -}}
app.kubernetes.io/name: memento
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: daemon
{{- end -}}

{{- define "memento.mcpSelector" -}}
app.kubernetes.io/name: memento
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: mcp-server
{{- end -}}

{{- define "memento.otelEnv" -}}
{{- if .Values.otel.endpoint }}
- { name: OTEL_EXPORTER_OTLP_ENDPOINT, value: {{ .Values.otel.endpoint | quote }} }
- { name: OTEL_EXPORTER_OTLP_PROTOCOL, value: {{ .Values.otel.protocol | quote }} }
{{- end }}
{{- end -}}

{{- define "memento.podSecurity" -}}
securityContext: { runAsNonRoot: true, runAsUser: 10001, fsGroup: 10001 }
{{- end -}}
