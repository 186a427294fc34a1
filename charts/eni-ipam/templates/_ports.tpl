{{/*
The ports the chart opens on every node. The agent, the device plugin, the
operator and the webhook all run on the node's network (hostNetwork), so
their ports share one space with each other and with what every node already
runs: kubelet, kube-proxy and, on nodes the operator and the webhook tolerate,
the control plane. A clash would only show as a pod that cannot bind, so the
install stops here instead, naming the value to change.
*/}}

{{/* Ports held on Kubernetes nodes by others, and by whom. */}}
{{- define "eni-ipam.reservedHostPorts" -}}
{{- dict "10248" "kubelet's healthz" "10250" "kubelet's API" "10255" "kubelet's read-only API" "10249" "kube-proxy's metrics" "10256" "kube-proxy's healthz" "10257" "kube-controller-manager" "10259" "kube-scheduler" "6443" "kube-apiserver" "2379" "etcd" "2380" "etcd's peers" "2381" "etcd's metrics" | toJson -}}
{{- end -}}

{{/* The chart's own host ports, by the value that sets each. */}}
{{- define "eni-ipam.hostPorts" -}}
{{- $v := .Values -}}
{{- dict "agent.metricsPort" $v.agent.metricsPort "devicePlugin.metricsPort" $v.devicePlugin.metricsPort "operator.metricsPort" $v.operator.metricsPort "webhook.port" $v.webhook.port "webhook.metricsPort" $v.webhook.metricsPort | toJson -}}
{{- end -}}

{{- define "eni-ipam.validateHostPorts" -}}
{{- $reserved := include "eni-ipam.reservedHostPorts" . | fromJson -}}
{{- $ports := include "eni-ipam.hostPorts" . | fromJson -}}
{{- $seen := dict -}}
{{- range $value := keys $ports | sortAlpha -}}
{{- $port := toString (int (get $ports $value)) -}}
{{- if hasKey $reserved $port -}}
{{- fail (printf "%s (%s) is %s on every node: eni-ipam's pods run on the node's network (hostNetwork), so pick another port" $value $port (get $reserved $port)) -}}
{{- end -}}
{{- if hasKey $seen $port -}}
{{- fail (printf "%s and %s are both %s: both open it on the node's network (hostNetwork), so give each its own port" (get $seen $port) $value $port) -}}
{{- end -}}
{{- $_ := set $seen $port $value -}}
{{- end -}}
{{- end -}}
