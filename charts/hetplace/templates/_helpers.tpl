{{/* Names and labels shared by every template. */}}

{{- define "hetplace.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hetplace.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "hetplace.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hetplace.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hetplace.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "hetplace.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: hetplace
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "hetplace.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hetplace.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: set it when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "hetplace.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
One HETPLACE_* variable per setting (camelCase key -> HETPLACE_UPPER_SNAKE_CASE, as pydantic-settings
reads config.Settings). Strings go as they are; numbers, booleans, lists and maps as JSON. Empty
strings, lists and maps are left out so the operator keeps its default.
*/}}
{{- define "hetplace.settingsEnv" -}}
{{- range $key, $value := .Values.settings }}
{{- $empty := or (kindIs "invalid" $value) (and (kindIs "string" $value) (eq $value "")) (and (kindIs "map" $value) (eq (len $value) 0)) (and (kindIs "slice" $value) (eq (len $value) 0)) }}
{{- if not $empty }}
- name: HETPLACE_{{ snakecase $key | upper }}
  value: {{ ternary $value (toJson $value) (kindIs "string" $value) | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The namespaces the operator watches; empty: the whole cluster. */}}
{{- define "hetplace.clusterwide" -}}
{{- if eq (len .Values.settings.watchNamespaces) 0 }}true{{ end -}}
{{- end -}}
