{{/* tidegate's alert rules; deploy/prometheus/alerts.yaml is this rendered with the defaults
(a test keeps them equal). */}}
{{- define "tidegate.alertGroups" -}}
{{- $r := .Values.metrics.prometheusRule -}}
groups:
  - name: tidegate
    rules:
      - alert: TidegateHighErrorRate
        expr: |-
          sum by (model) (rate(tidegate_requests_total{outcome=~"upstream|timeout"}[5m]))
            / clamp_min(sum by (model) (rate(tidegate_requests_total[5m])), 1e-9)
            > {{ $r.errorRateThreshold }}
        for: {{ $r.for }}
        labels:
          severity: critical
        annotations:
          summary: "{{`{{ $labels.model }}`}}: {{`{{ $value | humanizePercentage }}`}} of requests fail upstream or time out"
          description: Server-side failures (engine errors, timeouts) above {{ $r.errorRateThreshold }} of requests.
      - alert: TidegateTTFTP95High
        expr: |-
          histogram_quantile(0.95,
            sum by (model, le) (rate(tidegate_time_to_first_token_seconds_bucket[5m])))
            > {{ $r.ttftP95TargetSeconds }}
        for: {{ $r.for }}
        labels:
          severity: warning
        annotations:
          summary: "{{`{{ $labels.model }}`}}: p95 time to first token is {{`{{ $value | humanizeDuration }}`}}"
          description: p95 TTFT is over the {{ $r.ttftP95TargetSeconds }}s target; the pool is saturated or prompts grew.
      - alert: TidegatePoolSaturated
        expr: |-
          sum by (model) (tidegate_pool_in_flight_requests)
            / clamp_min(max by (model) (tidegate_pool_capacity), 1)
            > {{ $r.saturationThreshold }}
        for: {{ $r.for }}
        labels:
          severity: warning
        annotations:
          summary: "{{`{{ $labels.model }}`}}: in-flight requests exceed the pool's capacity ({{`{{ $value }}`}})"
          description: Requests queue inside the engines; check that the autoscaler can add replicas.
      - alert: TidegateEngineQueueGrowing
        expr: |-
          sum by (model_name) (vllm:num_requests_waiting) > 0
            and sum by (model_name) (deriv(vllm:num_requests_waiting[10m])) > 0
        for: {{ $r.for }}
        labels:
          severity: warning
        annotations:
          summary: "{{`{{ $labels.model_name }}`}}: the engines' waiting queue keeps growing"
          description: vLLM's waiting queue grew for the whole window; capacity is short of demand.
      - alert: TidegateNoReadyReplica
        expr: tidegate_pool_ready_replicas == 0
        for: 5m
        labels:
          severity: critical
        annotations:
          summary: "{{`{{ $labels.model }}`}}: no ready replica"
          description: Requests for this model get 503; engines are down, loading or scaled to zero.
      - alert: TidegateDependencyDown
        expr: min by (dependency) (tidegate_dependency_up) == 0
        for: 2m
        labels:
          severity: critical
        annotations:
          summary: "{{`{{ $labels.dependency }}`}} does not answer a gateway's health probe"
          description: "store: PostgreSQL (unknown keys get 503, usage waits in the write-ahead log); limit_store: Redis (each tenant's on_limiter_unavailable applies). The gateways stay ready, so only this alert tells."
      - alert: TidegateReplicaDown
        expr: max by (model, replica) (tidegate_replica_state{state=~"crashed|unhealthy"}) == 1
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: "{{`{{ $labels.model }}`}}: replica {{`{{ $labels.replica }}`}} is down"
          description: A replica crashed or fails its health checks.
      - alert: TidegateKVCacheSaturated
        expr: |-
          max by (model_name) ({__name__=~"vllm:(kv|gpu)_cache_usage_perc"}) > {{ $r.kvCacheThreshold }}
            or max by (model) (tidegate_engine_kv_cache_usage_ratio) > {{ $r.kvCacheThreshold }}
        for: {{ $r.for }}
        labels:
          severity: warning
        annotations:
          summary: KV cache above {{ $r.kvCacheThreshold }} full
          description: Engines are about to preempt requests; lower max_num_seqs or add replicas.
      - alert: TidegateEnginePreempting
        expr: sum by (model_name) (rate(vllm:num_preemptions_total[5m])) > 0
        for: {{ $r.for }}
        labels:
          severity: warning
        annotations:
          summary: "{{`{{ $labels.model_name }}`}}: the engine preempts requests"
          description: The KV cache cannot hold the running batch; requests are recomputed.
{{- end -}}
