{{/* Common labels of every object of this release. */}}
{{- define "herdwatch.labels" -}}
app.kubernetes.io/name: herdwatch
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "herdwatch.agentSelector" -}}
app.kubernetes.io/name: herdwatch
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "herdwatch.operatorSelector" -}}
app.kubernetes.io/name: herdwatch
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* image reference: registry/name:tag, or name:tag when no registry is set. */}}
{{- define "herdwatch.image" -}}
{{- $root := index . 0 -}}{{- $name := index . 1 -}}
{{- if $root.Values.image.registry -}}
{{ printf "%s/%s:%s" (trimSuffix "/" $root.Values.image.registry) $name $root.Values.image.tag }}
{{- else -}}
{{ printf "%s:%s" $name $root.Values.image.tag }}
{{- end -}}
{{- end -}}
