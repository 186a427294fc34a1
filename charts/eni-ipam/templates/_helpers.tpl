{{/*
Names, labels and the image, shared by every template of the chart.
*/}}

{{/* The prefix of every object's name: the release name, unless it already says eni-ipam. */}}
{{- define "eni-ipam.fullname" -}}
{{- if contains "eni-ipam" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-eni-ipam" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "eni-ipam.labels" -}}
app.kubernetes.io/name: eni-ipam
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "root" $ "component" "operator"). */}}
{{- define "eni-ipam.selectorLabels" -}}
app.kubernetes.io/name: eni-ipam
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component's objects. */}}
{{- define "eni-ipam.componentLabels" -}}
{{ include "eni-ipam.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The one image holding every binary. */}}
{{- define "eni-ipam.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Name of the webhook's serving certificate Secret. */}}
{{- define "eni-ipam.webhookTlsSecret" -}}
{{- printf "%s-webhook-tls" (include "eni-ipam.fullname" .) -}}
{{- end -}}

{{/* Namespaces the webhook never patches: kube-system, the release namespace, and the admin's list. */}}
{{- define "eni-ipam.webhookExcludedNamespaces" -}}
{{- $names := list "kube-system" .Release.Namespace -}}
{{- range .Values.webhook.excludeNamespaces }}{{ $names = append $names . }}{{ end -}}
{{- $names | uniq | join "," -}}
{{- end -}}

{{/* The container security context of processes that need nothing from the node. */}}
{{- define "eni-ipam.restrictedSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The toleration of the agent's startup taint, for the pods that must run before any
node has pod IPs (operator, webhook); empty when the agent does not remove it. */}}
{{- define "eni-ipam.startupTaintToleration" -}}
{{- if .Values.agent.startupTaint.enabled }}
- {key: {{ .Values.agent.startupTaint.key | quote }}, operator: Exists, effect: NoSchedule}
{{- end }}
{{- end -}}
