{{- define "colony-operator.name" -}}colony-operator{{- end -}}
{{- define "colony-operator.fullname" -}}
{{- if contains "colony-operator" .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-colony-operator" .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}
{{- define "colony-operator.labels" -}}
app.kubernetes.io/name: colony-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "colony-operator.selectorLabels" -}}
app.kubernetes.io/name: colony-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "colony-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "colony-operator.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}
