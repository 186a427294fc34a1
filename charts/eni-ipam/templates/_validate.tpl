{{/*
Checks that need two values at once. JSON Schema (draft-07, which helm uses)
cannot compare two fields, so these run while rendering and stop the install
with a message saying what to change. They mirror the CEL rules of the
ENINode CRD (spec.ipam), so a value the chart accepts is one the API accepts.
*/}}
{{- define "eni-ipam.validate" -}}
{{- $pool := .Values.pool -}}
{{- if and (gt (int $pool.maxAllocate) 0) (gt (int $pool.minAllocate) (int $pool.maxAllocate)) -}}
{{- fail (printf "pool.minAllocate (%d) is greater than pool.maxAllocate (%d): lower minAllocate or raise maxAllocate (0 means no limit)" (int $pool.minAllocate) (int $pool.maxAllocate)) -}}
{{- end -}}
{{- if and (gt (int $pool.maxAllocate) 0) (gt (int $pool.preAllocate) (int $pool.maxAllocate)) -}}
{{- fail (printf "pool.preAllocate (%d) is greater than pool.maxAllocate (%d): lower preAllocate or raise maxAllocate (0 means no limit)" (int $pool.preAllocate) (int $pool.maxAllocate)) -}}
{{- end -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.operator.leaderElection.enabled) -}}
{{- fail (printf "operator.replicas is %d but operator.leaderElection.enabled is false: two operators would allocate for the same nodes; enable leader election or set replicas to 1" (int .Values.operator.replicas)) -}}
{{- end -}}
{{- end -}}
