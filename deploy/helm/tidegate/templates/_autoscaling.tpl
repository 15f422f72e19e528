{{/*
A pool's autoscaling block is tidegate's AutoscalingPolicy, key for key (the same block a pool
takes in tidegate's config, `tidegate plan simulate --policy` replays and the local supervisor
executes). "tidegate.scaling" checks it as tidegate would and maps it onto KEDA/HPA terms:
call with (list $ $pool); renders YAML {policy, scaledObject} (README: Autoscaling).
*/}}

{{- define "tidegate.scaling" -}}
{{- $root := index . 0 -}}
{{- $pool := index . 1 -}}
{{- $a := $pool.autoscaling | default dict -}}
{{- $where := printf "engines pool %q: autoscaling" $pool.name -}}
{{- /* Chart 0.1 keys: refused with their new names, since silently dropping a tuned window or
a saturation threshold would deploy a different policy than the one reviewed. */ -}}
{{- $renamed := dict
  "minReplicas" "min_replicas (KEDA's minReplicaCount is min_replicas + warm_standby)"
  "maxReplicas" "max_replicas"
  "pollingInterval" "evaluation_interval_s"
  "cooldownPeriod" "idle_scale_to_min_s (and cooldown_s: one scale-down per cooldown_s)"
  "scaleUpStabilizationSeconds" "scale_up_stabilization_s"
  "scaleDownStabilizationSeconds" "scale_down_stabilization_s"
  "targetSaturation" "signal + target"
  "activationSaturation" "signal + target"
  "query" "signal + target"
  "metricType" "signal + target (always Value)"
-}}
{{- $old := list -}}
{{- range $key, $_ := $a -}}
{{- if hasKey $renamed $key -}}
{{- $old = append $old (printf "%s -> %s" $key (get $renamed $key)) -}}
{{- end -}}
{{- end -}}
{{- with $old -}}
{{- fail (printf "%s uses the chart's old camelCase keys; it now takes tidegate's autoscaling policy keys verbatim (the block of a pool in tidegate's config): %s. The ScaledObject queries tidegate_pool_scaling_signal, so a saturation threshold or custom query has no direct equivalent: pick signal (queue_depth, in_flight_per_replica, predicted_wait) and target. See the chart README, Autoscaling." $where (join "; " .)) -}}
{{- end -}}
{{- $ints := list "min_replicas" "max_replicas" "warm_standby" -}}
{{- $floats := list "target" "prescale_fraction" "scale_up_stabilization_s" "scale_down_stabilization_s" "cooldown_s" "idle_scale_to_min_s" "evaluation_interval_s" -}}
{{- $known := concat (list "enabled" "signal") $ints $floats -}}
{{- $unknown := list -}}
{{- range $key, $_ := $a -}}
{{- if not (has $key $known) -}}
{{- $unknown = append $unknown $key -}}
{{- end -}}
{{- end -}}
{{- with $unknown -}}
{{- fail (printf "%s: unknown key(s) %s (the policy keys are %s)" $where (join ", " .) (join ", " $known)) -}}
{{- end -}}
{{- $missing := list -}}
{{- range $known -}}
{{- if not (hasKey $a .) -}}
{{- $missing = append $missing . -}}
{{- end -}}
{{- end -}}
{{- with $missing -}}
{{- fail (printf "%s: %s missing (set to null?); engines.defaults.autoscaling carries tidegate's defaults" $where (join ", " .)) -}}
{{- end -}}
{{- if not (kindIs "bool" $a.enabled) -}}
{{- fail (printf "%s.enabled must be true or false, not %v" $where $a.enabled) -}}
{{- end -}}
{{- $signals := list "queue_depth" "in_flight_per_replica" "predicted_wait" -}}
{{- if not (has $a.signal $signals) -}}
{{- fail (printf "%s.signal must be one of %s, not %v" $where (join ", " $signals) $a.signal) -}}
{{- end -}}
{{- range concat $ints $floats -}}
{{- $v := get $a . -}}
{{- if not (or (kindIs "float64" $v) (kindIs "int64" $v) (kindIs "int" $v)) -}}
{{- fail (printf "%s.%s must be a number, not %v" $where . $v) -}}
{{- end -}}
{{- if lt (float64 $v) 0.0 -}}
{{- fail (printf "%s.%s must not be negative (%v)" $where . $v) -}}
{{- end -}}
{{- if and (has . $ints) (ne (float64 $v) (floor $v)) -}}
{{- fail (printf "%s.%s must be a whole number, not %v" $where . $v) -}}
{{- end -}}
{{- end -}}
{{- $min := int $a.min_replicas -}}
{{- $max := int $a.max_replicas -}}
{{- $standby := int $a.warm_standby -}}
{{- if lt $max 1 -}}
{{- fail (printf "%s.max_replicas must be at least 1 (%d)" $where $max) -}}
{{- end -}}
{{- if gt $min $max -}}
{{- fail (printf "%s.min_replicas (%d) must not exceed max_replicas (%d)" $where $min $max) -}}
{{- end -}}
{{- if gt (add $min $standby) $max -}}
{{- fail (printf "%s.warm_standby (%d) does not fit: standbys count inside max_replicas (%d), and min_replicas (%d) already takes %d of them" $where $standby $max $min $min) -}}
{{- end -}}
{{- range list "target" "evaluation_interval_s" "prescale_fraction" -}}
{{- if le (float64 (get $a .)) 0.0 -}}
{{- fail (printf "%s.%s must be positive (%v)" $where . (get $a .)) -}}
{{- end -}}
{{- end -}}
{{- if gt (float64 $a.prescale_fraction) 1.0 -}}
{{- fail (printf "%s.prescale_fraction must be at most 1 (%v)" $where $a.prescale_fraction) -}}
{{- end -}}
{{- /* The HPA counts whole seconds: windows and periods round up, never shorter than asked. */ -}}
{{- $poll := max 1 (int (ceil $a.evaluation_interval_s)) -}}
{{- $upWindow := int (ceil $a.scale_up_stabilization_s) -}}
{{- $downWindow := int (ceil $a.scale_down_stabilization_s) -}}
{{- /* One scale-down per step, and none within cooldown_s of the last: 1 pod per period. */ -}}
{{- $downPeriod := max $poll (int (ceil $a.cooldown_s)) -}}
{{- range $name, $value := dict "scale_up_stabilization_s" $upWindow "scale_down_stabilization_s" $downWindow -}}
{{- if gt (int $value) 3600 -}}
{{- fail (printf "%s.%s is %d s, but the HPA's stabilizationWindowSeconds allows at most 3600" $where $name (int $value)) -}}
{{- end -}}
{{- end -}}
{{- if gt (int $downPeriod) 1800 -}}
{{- fail (printf "%s: cooldown_s (and evaluation_interval_s) make a scale-down period of %d s, but the HPA's policy periodSeconds allows at most 1800" $where (int $downPeriod)) -}}
{{- end -}}
{{- /* KEDA's cooldownPeriod is the quiet time before its last step, to min_replicas 0: the idle
rule when on, else what the HPA's own scale-down would take (window, then one cooldown). */ -}}
{{- $cooldownPeriod := int (ceil $a.idle_scale_to_min_s) -}}
{{- if eq $cooldownPeriod 0 -}}
{{- $cooldownPeriod = max $downWindow (int (ceil $a.cooldown_s)) -}}
{{- end -}}
{{- /* The effective target: for predicted_wait, prescale_fraction × the interactive class's
ttft_target_s of the gateway config this chart renders (tidegate's default class carries 2 s;
a class given without one has none), else target: effective_target() in tidegate. */ -}}
{{- $threshold := $a.target -}}
{{- if eq $a.signal "predicted_wait" -}}
{{- $scheduling := (include "tidegate.gatewayConfig" $root | fromYaml).scheduling | default dict -}}
{{- $ttft := 2.0 -}}
{{- if hasKey $scheduling "interactive" -}}
{{- $ttft = get ($scheduling.interactive | default dict) "ttft_target_s" -}}
{{- end -}}
{{- if and (or (kindIs "float64" $ttft) (kindIs "int64" $ttft) (kindIs "int" $ttft)) (gt (float64 $ttft) 0.0) -}}
{{- $threshold = mulf $a.prescale_fraction $ttft -}}
{{- end -}}
{{- end -}}
{{- /* The gateway names a pool like its upstream entry: `pool`, else the model. Each gateway
exports the signal of its own share of the pool's requests: the per-replica counts add up over
gateways (sum), a predicted wait does not (max, the worst gateway's). One gateway: both agree. */ -}}
{{- $poolName := ($pool.upstream | default dict).pool | default $pool.servedModelName | replace "\\" "\\\\" | replace "\"" "\\\"" -}}
{{- $aggregate := ternary "max" "sum" (eq $a.signal "predicted_wait") -}}
{{- $scaledObject := dict
  "minReplicaCount" (min (add $min $standby) $max)
  "maxReplicaCount" $max
  "pollingInterval" $poll
  "cooldownPeriod" $cooldownPeriod
  "scaleUp" (dict "stabilizationWindowSeconds" $upWindow "policies" (list (dict "type" "Pods" "value" $max "periodSeconds" $poll)))
  "scaleDown" (dict "stabilizationWindowSeconds" $downWindow "policies" (list (dict "type" "Pods" "value" 1 "periodSeconds" $downPeriod)))
  "query" (printf "%s(tidegate_pool_scaling_signal{pool=\"%s\",signal=\"%s\"})" $aggregate $poolName $a.signal)
  "threshold" (toString $threshold)
-}}
{{- toYaml (dict "policy" $a "scaledObject" $scaledObject) -}}
{{- end -}}
