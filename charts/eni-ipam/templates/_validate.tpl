{{/*
Checks that need two values at once. JSON Schema (draft-07, which helm uses)
cannot compare two fields, so these run while rendering and stop the install
with a message saying what to change. They mirror the CEL rules of the
ENINode CRD (spec.ipam), so a value the chart accepts is one the API accepts.
*/}}
{{- define "eni-ipam.validate" -}}
{{- if hasKey .Values "clusterName" -}}
{{- fail (printf "clusterName was replaced by clusterId: set clusterId=%s to keep the ENIs tagged with that name this cluster's (or leave clusterId empty on a new install: the kube-system namespace UID is used), and remove clusterName" .Values.clusterName) -}}
{{- end -}}
{{- $pool := .Values.pool -}}
{{- if and (gt (int $pool.maxAllocate) 0) (gt (int $pool.minAllocate) (int $pool.maxAllocate)) -}}
{{- fail (printf "pool.minAllocate (%d) is greater than pool.maxAllocate (%d): lower minAllocate or raise maxAllocate (0 means no limit)" (int $pool.minAllocate) (int $pool.maxAllocate)) -}}
{{- end -}}
{{- if and (gt (int $pool.maxAllocate) 0) (gt (int $pool.preAllocate) (int $pool.maxAllocate)) -}}
{{- fail (printf "pool.preAllocate (%d) is greater than pool.maxAllocate (%d): lower preAllocate or raise maxAllocate (0 means no limit)" (int $pool.preAllocate) (int $pool.maxAllocate)) -}}
{{- end -}}
{{- $le := .Values.operator.leaderElection -}}
{{- if and $le.enabled (ge (include "eni-ipam.milliseconds" $le.renewDeadline | int64) (include "eni-ipam.milliseconds" $le.leaseDuration | int64)) -}}
{{- fail (printf "operator.leaderElection.renewDeadline (%s) must be shorter than leaseDuration (%s): a leader must give up before another may take over" $le.renewDeadline $le.leaseDuration) -}}
{{- end -}}
{{- if and $le.enabled (ge (include "eni-ipam.milliseconds" $le.retryPeriod | int64) (include "eni-ipam.milliseconds" $le.renewDeadline | int64)) -}}
{{- fail (printf "operator.leaderElection.retryPeriod (%s) must be shorter than renewDeadline (%s): the leader must get more than one try to renew" $le.retryPeriod $le.renewDeadline) -}}
{{- end -}}
{{- $rrsa := .Values.identity.alibaba.rrsa -}}
{{- if and (eq .Values.cloud "alibaba") (or $rrsa.roleArn $rrsa.oidcProviderArn) (not (and $rrsa.roleArn $rrsa.oidcProviderArn)) -}}
{{- fail "identity.alibaba.rrsa: roleArn and oidcProviderArn go together (RRSA without the webhook needs both); set the other or neither" -}}
{{- end -}}
{{- if and (eq .Values.cloud "alibaba") (eq .Values.identity.alibaba.mode "rrsa") (not (or $rrsa.roleName $rrsa.roleArn)) -}}
{{- fail "identity.alibaba.mode is rrsa but neither identity.alibaba.rrsa.roleName (with ack-pod-identity-webhook) nor rrsa.roleArn and rrsa.oidcProviderArn are set" -}}
{{- end -}}
{{- if and (eq .Values.cloud "alibaba") (eq .Values.identity.alibaba.mode "access-key") (not .Values.credentials.existingSecret) -}}
{{- fail "identity.alibaba.mode is access-key but credentials.existingSecret is empty: name the Secret holding the AccessKey" -}}
{{- end -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.operator.leaderElection.enabled) -}}
{{- fail (printf "operator.replicas is %d but operator.leaderElection.enabled is false: two operators would allocate for the same nodes; enable leader election or set replicas to 1" (int .Values.operator.replicas)) -}}
{{- end -}}
{{- end -}}

{{/* A duration as values.schema.json allows it (e.g. 500ms, 15s, 2m, 1h), in milliseconds. */}}
{{- define "eni-ipam.milliseconds" -}}
{{- $number := regexFind "^[0-9]+" . | int64 -}}
{{- $unit := regexReplaceAll "^[0-9]+" . "" -}}
{{- $scale := get (dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000) $unit | int64 -}}
{{- mul $number $scale -}}
{{- end -}}
