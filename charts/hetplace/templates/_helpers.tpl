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

{{/*
Gateways at client sites (templates/gateway*.yaml). Their pods are named `<name>-gateway` so the
operator's selectors (name + instance) never match them.
*/}}
{{- define "hetplace.gatewaySelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-gateway" (include "hetplace.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "hetplace.gatewayLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "hetplace.gatewaySelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: hetplace
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/*
A site's object name, `<fullname>-gateway-<site>`, a DNS-1123 label of at most 63 characters for
any site name (a Token: letters, digits, '-', '_', '.'). A name lowered, rewritten or cut is
suffixed with a hash of the site, so two sites never share a name. Called with (list $ $site).
*/}}
{{- define "hetplace.gatewayName" -}}
{{- $root := index . 0 -}}
{{- $site := index . 1 -}}
{{- $slug := $site | lower | replace "_" "-" | replace "." "-" -}}
{{- $name := printf "%s-gateway-%s" (include "hetplace.fullname" $root) $slug -}}
{{- if and (eq $slug $site) (le (len $name) 63) -}}
{{- $name -}}
{{- else -}}
{{- printf "%s-%s" ($name | trunc 54 | trimSuffix "-") (sha256sum $site | trunc 8) -}}
{{- end -}}
{{- end -}}

{{- define "hetplace.gatewayImage" -}}
{{- $image := .Values.gateway.image -}}
{{- if not $image.repository -}}
{{- include "hetplace.image" . -}}
{{- else if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
What a site's gateway watches: {"workloads": [...], "namespaces": [...]} as JSON. Workloads or
namespaces as the site gives them; neither: the operator's watchNamespaces; empty namespaces and
workloads: every namespace. `rbacNamespaces` are the namespaces its Roles go in (none: ClusterRole).
*/}}
{{- define "hetplace.gatewayScope" -}}
{{- $root := index . 0 -}}
{{- $site := index . 1 -}}
{{- $workloads := default (list) $site.workloads -}}
{{- $namespaces := default (list) $site.namespaces -}}
{{- if and (not $workloads) (not $namespaces) -}}
{{- $namespaces = $root.Values.settings.watchNamespaces -}}
{{- end -}}
{{- $rbac := $namespaces -}}
{{- if $workloads -}}
{{- $rbac = (list) -}}
{{- range $workloads -}}
{{- $rbac = append $rbac (splitList "/" . | first) -}}
{{- end -}}
{{- end -}}
{{- dict "workloads" $workloads "namespaces" $namespaces "rbacNamespaces" ($rbac | uniq) | toJson -}}
{{- end -}}

{{/* Values the schema cannot refuse alone: a site listed twice, replicas on a DaemonSet, workloads
with namespaces, two listeners on one port. Each failure names the site or the field. */}}
{{- define "hetplace.gatewayCheck" -}}
{{- $seen := dict -}}
{{- range $i, $site := .Values.sites -}}
{{- if hasKey $seen $site.name -}}
{{- fail (printf "sites[%d]: site %q is listed twice (also sites[%v]); each site runs one gateway" $i $site.name (get $seen $site.name)) -}}
{{- end -}}
{{- $_ := set $seen $site.name $i -}}
{{- if and $site.workloads $site.namespaces -}}
{{- fail (printf "sites[%d] (%s): give workloads or namespaces, not both (hetplace gateway takes --workload or --namespace)" $i $site.name) -}}
{{- end -}}
{{- if and (eq ($site.kind | default "Deployment") "DaemonSet") (hasKey $site "replicas") -}}
{{- fail (printf "sites[%d] (%s): replicas is for kind Deployment; a DaemonSet runs one gateway on each of the site's nodes" $i $site.name) -}}
{{- end -}}
{{- end -}}
{{- $ports := .Values.gateway.ports -}}
{{- $listening := without (list (int $ports.http) (int $ports.grpc) (int $ports.metrics)) 0 -}}
{{- if ne (len $listening) (len (uniq $listening)) -}}
{{- fail (printf "gateway.ports: http (%v), grpc (%v) and metrics (%v) must differ: each is its own listener" $ports.http $ports.grpc $ports.metrics) -}}
{{- end -}}
{{- end -}}
