{{/*
Chart name, overridable with nameOverride. Truncated to 63 characters: label values and DNS-1123
names may not be longer.
*/}}
{{- define "kube-dmem.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of every resource: the release name, plus the chart name unless the release name
already contains it. Truncated to 45 characters so that every name built from it with a component
suffix ("-device-plugin", 14 characters) is still a valid Service name (a DNS label, at most 63).
*/}}
{{- define "kube-dmem.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version for the helm.sh/chart label ("+" is not allowed in label values).
*/}}
{{- define "kube-dmem.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every resource. Component labels are added by the component helpers below.
*/}}
{{- define "kube-dmem.labels" -}}
helm.sh/chart: {{ include "kube-dmem.chart" . }}
{{ include "kube-dmem.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kube-dmem
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels. Selectors are immutable on Deployments and DaemonSets, so they never carry the
version or anything else that changes between releases.
*/}}
{{- define "kube-dmem.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-dmem.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* ---------------------------------------------------------------- operator */}}

{{- define "kube-dmem.operator.fullname" -}}
{{- printf "%s-operator" (include "kube-dmem.fullname" .) }}
{{- end }}

{{- define "kube-dmem.operator.selectorLabels" -}}
{{ include "kube-dmem.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kube-dmem.operator.labels" -}}
{{ include "kube-dmem.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kube-dmem.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "kube-dmem.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- device plugin (node agent) */}}

{{- define "kube-dmem.devicePlugin.fullname" -}}
{{- printf "%s-device-plugin" (include "kube-dmem.fullname" .) }}
{{- end }}

{{- define "kube-dmem.devicePlugin.selectorLabels" -}}
{{ include "kube-dmem.selectorLabels" . }}
app.kubernetes.io/component: device-plugin
{{- end }}

{{- define "kube-dmem.devicePlugin.labels" -}}
{{ include "kube-dmem.labels" . }}
app.kubernetes.io/component: device-plugin
{{- end }}

{{- define "kube-dmem.devicePlugin.serviceAccountName" -}}
{{- if .Values.devicePlugin.serviceAccount.create }}
{{- default (include "kube-dmem.devicePlugin.fullname" .) .Values.devicePlugin.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.devicePlugin.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference from a component's image values: a digest pins it and wins over the tag; the tag
defaults to the chart's appVersion so chart and binaries move together.
Usage: include "kube-dmem.image" (dict "image" .Values.operator.image "ctx" .)
*/}}
{{- define "kube-dmem.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}
