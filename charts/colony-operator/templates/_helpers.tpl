{{/* The chart name, unless overridden. */}}
{{- define "colony-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The name of every object: fullnameOverride, the release name when it already contains the
chart name, else <release>-<chart>. */}}
{{- define "colony-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "colony-operator.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "colony-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "colony-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "colony-operator.labels" -}}
{{ include "colony-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "colony-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "colony-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "colony-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* Whether the operator watches every namespace (ClusterRole) or one (Role). */}}
{{- define "colony-operator.clusterScoped" -}}
{{- if eq .Values.watchNamespace "" -}}true{{- end -}}
{{- end -}}

{{/* The name of the leader Lease. It is fixed in the operator (LEASE_NAME in
operator/src/runtime/leader.rs); the chart's test checks the two agree. */}}
{{- define "colony-operator.leaseName" -}}colony-operator{{- end -}}
