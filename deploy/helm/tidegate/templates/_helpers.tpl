{{/* Names, labels and the merged engine pools. */}}

{{- define "tidegate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tidegate.fullname" -}}
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

{{- define "tidegate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "tidegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "tidegate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tidegate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tidegate.gatewayName" -}}
{{- printf "%s-gateway" (include "tidegate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tidegate.secretName" -}}
{{- if .Values.secrets.create -}}
{{- printf "%s-secrets" (include "tidegate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- required "secrets.existingSecret is required when secrets.create is false" .Values.secrets.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* Resource name of a pool's engines: call with (list $ $pool). */}}
{{- define "tidegate.engineName" -}}
{{- $root := index . 0 -}}
{{- $pool := index . 1 -}}
{{- printf "%s-engine-%s" (include "tidegate.fullname" $root) $pool.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The pools with engines.defaults filled in, as YAML {pools: [...]}. A pool's keys replace the
defaults one by one; profile, autoscaling, multiNode, modelCache and upstream are merged key by
key, so a pool can set `enforce_eager: false` over a default of true (a plain deep merge would
drop false and null).
*/}}
{{- define "tidegate.pools" -}}
{{- $defaults := .Values.engines.defaults -}}
{{- $nested := list "profile" "autoscaling" "multiNode" "modelCache" "upstream" -}}
{{- $pools := list -}}
{{- $seen := dict -}}
{{- range $index, $given := .Values.engines.pools -}}
{{- $name := required (printf "engines.pools[%d].name is required" $index) $given.name -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) -}}
{{- fail (printf "engines.pools[%d].name %q must be a DNS label (a-z, 0-9, -)" $index $name) -}}
{{- end -}}
{{- if hasKey $seen $name -}}
{{- fail (printf "engines.pools: the name %q is used twice" $name) -}}
{{- end -}}
{{- $_ := set $seen $name true -}}
{{- $_ := required (printf "engines.pools[%d].model is required" $index) $given.model -}}
{{- $pool := deepCopy $defaults -}}
{{- range $key, $value := $given -}}
{{- if and (has $key $nested) (kindIs "map" $value) -}}
{{- $merged := deepCopy (get $defaults $key | default dict) -}}
{{- range $k, $v := $value -}}
{{- $_ := set $merged $k $v -}}
{{- end -}}
{{- $_ := set $pool $key $merged -}}
{{- else -}}
{{- $_ := set $pool $key $value -}}
{{- end -}}
{{- end -}}
{{- if not $pool.servedModelName -}}
{{- $_ := set $pool "servedModelName" $pool.model -}}
{{- end -}}
{{- $pools = append $pools $pool -}}
{{- end -}}
{{- include "tidegate.checkAdapters" $pools -}}
{{- toYaml (dict "pools" $pools) -}}
{{- end -}}

{{/*
Refuses LoRA adapters tidegate's config would refuse (config/adapters.py, engines.py): names
and versions as pool names, exactly one of path and hub_id, no '..' in a path, ranks 1-512, a
base_model other than the pool's model, a name clashing with a pool or listed twice. Call with
the merged pools; renders nothing.
*/}}
{{- define "tidegate.checkAdapters" -}}
{{- $served := dict -}}
{{- range . -}}
{{- $_ := set $served .servedModelName true -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $pool := . -}}
{{- $where := printf "engines.pools %s" $pool.name -}}
{{- $loras := ternary $pool.max_loras 4 (hasKey $pool "max_loras") -}}
{{- if not (and (kindIs "float64" $loras) (eq (float64 (int $loras)) $loras) (ge (int $loras) 1) (le (int $loras) 256)) -}}
{{- fail (printf "%s: max_loras %v must be an integer from 1 to 256" $where $loras) -}}
{{- end -}}
{{- if not (kindIs "invalid" $pool.max_lora_rank) -}}
{{- include "tidegate.checkRank" (list (printf "%s: max_lora_rank" $where) $pool.max_lora_rank) -}}
{{- end -}}
{{- range $index, $a := $pool.adapters | default list -}}
{{- $at := printf "%s: adapters[%d]" $where $index -}}
{{- if not (kindIs "map" $a) -}}
{{- fail (printf "%s must be a map (name, version, path or hub_id, base_model, max_lora_rank)" $at) -}}
{{- end -}}
{{- $name := toString ($a.name | default "") -}}
{{- if not (regexMatch "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$" $name) -}}
{{- fail (printf "%s: name %q must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit (it becomes a model and pool name)" $at $name) -}}
{{- end -}}
{{- $version := toString ($a.version | default "") -}}
{{- if and $version (not (regexMatch "^[A-Za-z0-9][A-Za-z0-9._-]{0,30}$" $version)) -}}
{{- fail (printf "%s (%s): version %q must be 1-31 letters, digits, '.', '_' or '-', starting with a letter or digit" $at $name $version) -}}
{{- end -}}
{{- $path := toString ($a.path | default "") -}}
{{- $hub := toString ($a.hub_id | default "") -}}
{{- if eq (empty $path) (empty $hub) -}}
{{- fail (printf "%s (%s): set exactly one of path and hub_id" $at $name) -}}
{{- end -}}
{{- if and $path (has ".." (splitList "/" $path)) -}}
{{- fail (printf "%s (%s): path %q may not contain '..' parts" $at $name $path) -}}
{{- end -}}
{{- if and $hub (not (regexMatch "^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$" $hub)) -}}
{{- fail (printf "%s (%s): hub_id %q must be a Hugging Face id OWNER/NAME" $at $name $hub) -}}
{{- end -}}
{{- if and $a.base_model (ne (toString $a.base_model) (toString $pool.model)) -}}
{{- fail (printf "%s (%s): it was trained on %s, but the pool serves %s (a LoRA on another base gives garbage, not an error)" $at $name $a.base_model $pool.model) -}}
{{- end -}}
{{- if hasKey $a "max_lora_rank" -}}
{{- include "tidegate.checkRank" (list (printf "%s (%s): max_lora_rank" $at $name) $a.max_lora_rank) -}}
{{- end -}}
{{- $target := ternary (printf "%s@%s" $name $version) $name (not (empty $version)) -}}
{{- range (list $name $target | uniq) -}}
{{- if hasKey $served . -}}
{{- fail (printf "%s: adapter %s clashes with the model (pool) of that name" $at .) -}}
{{- end -}}
{{- end -}}
{{- if hasKey $seen $target -}}
{{- fail (printf "%s: adapter %s is listed twice" $at $target) -}}
{{- end -}}
{{- $_ := set $seen $target true -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A LoRA rank value: (list WHERE VALUE); an integer from 1 to 512 or fail. */}}
{{- define "tidegate.checkRank" -}}
{{- $where := index . 0 -}}
{{- $rank := index . 1 -}}
{{- if not (and (kindIs "float64" $rank) (eq (float64 (int $rank)) $rank) (ge (int $rank) 1) (le (int $rank) 512)) -}}
{{- fail (printf "%s %v must be an integer from 1 to 512 (vLLM takes 1, 8, 16, 32, 64, 128, 256, 320 or 512; others are rounded up)" $where $rank) -}}
{{- end -}}
{{- end -}}

{{/* An adapter's vLLM LoRA name and gateway pool: NAME, or NAME@VERSION. */}}
{{- define "tidegate.adapterTarget" -}}
{{- if .version -}}{{ printf "%s@%s" .name .version }}{{- else -}}{{ .name }}{{- end -}}
{{- end -}}

{{/*
A pool's vLLM --max-lora-rank, as tidegate's lora_rank: the largest adapter rank (adapter
default 16; the pool's max_lora_rank when set and higher; 16 without either), rounded up to
a rank vLLM accepts. Call with the pool.
*/}}
{{- define "tidegate.loraRank" -}}
{{- $ranks := list -}}
{{- range .adapters | default list -}}
{{- $ranks = append $ranks (int (ternary .max_lora_rank 16 (hasKey . "max_lora_rank"))) -}}
{{- end -}}
{{- if not (kindIs "invalid" .max_lora_rank) -}}
{{- $ranks = append $ranks (int .max_lora_rank) -}}
{{- end -}}
{{- $rank := 16 -}}
{{- if $ranks -}}
{{- $rank = index $ranks 0 -}}
{{- range $ranks -}}
{{- if gt . $rank -}}{{- $rank = . -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- $out := 512 -}}
{{- range (list 512 320 256 128 64 32 16 8 1) -}}
{{- if le $rank . -}}{{- $out = . -}}{{- end -}}
{{- end -}}
{{- $out -}}
{{- end -}}

{{/* "true" when a pool's engines start with LoRA support (lora: true or any adapter). */}}
{{- define "tidegate.loraOn" -}}
{{- if or .lora .adapters -}}true{{- end -}}
{{- end -}}

{{/* The gateway's upstream entry of a pool: call with (list $ $pool). */}}
{{- define "tidegate.poolUpstream" -}}
{{- $root := index . 0 -}}
{{- $pool := index . 1 -}}
{{- $host := printf "%s.%s.svc.%s" (include "tidegate.engineName" (list $root $pool)) $root.Release.Namespace $root.Values.clusterDomain -}}
{{- $entry := dict "url" (printf "http://%s:%d/v1" $host (int $root.Values.engines.port)) "model" $pool.servedModelName "discovery" "dns" "max_concurrency" (int $pool.profile.max_num_seqs) "context_length" (int $pool.profile.max_model_len) -}}
{{- range $k, $v := $pool.upstream -}}
{{- $_ := set $entry $k $v -}}
{{- end -}}
{{- toYaml $entry -}}
{{- end -}}

{{/* All upstream entries: the pools', then gateway.providers. */}}
{{- define "tidegate.upstreams" -}}
{{- $root := . -}}
{{- $list := list -}}
{{- range (include "tidegate.pools" $root | fromYaml).pools -}}
{{- $upstream := include "tidegate.poolUpstream" (list $root .) | fromYaml -}}
{{- $list = append $list $upstream -}}
{{- /* Each adapter version: a pool of its own on the same engines (the gateway's config has
no adapters for upstreams), public model NAME, sending its vLLM LoRA name upstream. */ -}}
{{- range .adapters | default list -}}
{{- $target := include "tidegate.adapterTarget" . -}}
{{- $entry := deepCopy $upstream -}}
{{- $_ := set $entry "model" .name -}}
{{- $_ := set $entry "upstream_model" $target -}}
{{- $_ := set $entry "pool" $target -}}
{{- $list = append $list $entry -}}
{{- end -}}
{{- end -}}
{{- range $root.Values.gateway.providers -}}
{{- $list = append $list . -}}
{{- end -}}
{{- toYaml (dict "upstreams" $list) -}}
{{- end -}}

{{/* tidegate's YAML config for the gateway pods (secrets come from the environment). */}}
{{- define "tidegate.gatewayConfig" -}}
{{- $base := dict
  "home" "/var/lib/tidegate"
  "server" (dict "host" "0.0.0.0" "port" (int .Values.gateway.port) "metrics_host" "0.0.0.0" "metrics_port" (int .Values.gateway.metricsPort))
  "engines" (dict "replicas" 0 "drain_grace_s" (int .Values.gateway.drainSeconds))
-}}
{{- if or .Values.secrets.redisUrl (and (not .Values.secrets.create) (include "tidegate.severalGateways" .)) -}}
{{- /* scheduling.cluster.mode auto then shares each pool's capacity through the same Redis. */ -}}
{{- $_ := set $base "limits" (dict "backend" "redis") -}}
{{- end -}}
{{- if not .Values.gateway.providers -}}
{{- $_ := set $base "upstreams" (include "tidegate.upstreams" . | fromYaml).upstreams -}}
{{- end -}}
{{- toYaml (mergeOverwrite $base (deepCopy .Values.gateway.config)) -}}
{{- end -}}

{{/* vLLM's arguments from a pool's engine profile: call with (list $ $pool). */}}
{{- define "tidegate.vllmArgs" -}}
{{- $root := index . 0 -}}
{{- $pool := index . 1 -}}
{{- $p := $pool.profile -}}
- --model
- {{ $pool.model | quote }}
- --served-model-name
- {{ $pool.servedModelName | quote }}
- --host
- "0.0.0.0"
- --port
- {{ $root.Values.engines.port | quote }}
- --max-model-len
- {{ int $p.max_model_len | quote }}
- --max-num-seqs
- {{ int $p.max_num_seqs | quote }}
{{- if ne $p.device "cpu" }}
- --gpu-memory-utilization
- {{ $p.gpu_memory_utilization | toString | quote }}
{{- end }}
- --tensor-parallel-size
- {{ int $p.tensor_parallel_size | quote }}
{{- if $pool.multiNode.enabled }}
- --pipeline-parallel-size
- {{ int $pool.multiNode.pipelineParallelSize | quote }}
- --distributed-executor-backend
- ray
{{- end }}
- --dtype
- {{ $p.dtype | quote }}
{{- if $p.enforce_eager }}
- --enforce-eager
{{- end }}
{{- if $pool.priorityScheduling }}
- --scheduling-policy
- priority
{{- end }}
{{- if include "tidegate.loraOn" $pool }}
- --enable-lora
- --max-loras
- {{ int ($pool.max_loras | default 4) | quote }}
- --max-lora-rank
- {{ include "tidegate.loraRank" $pool | quote }}
{{- with $pool.adapters }}
- --lora-modules
{{- range . }}
- {{ printf "%s=%s" (include "tidegate.adapterTarget" .) (.path | default .hub_id) | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- range $p.extra_args }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Environment of an engine container: call with (list $ $pool). */}}
{{- define "tidegate.engineEnv" -}}
{{- $root := index . 0 -}}
{{- $pool := index . 1 -}}
- name: HF_HOME
  value: /models/hf
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "tidegate.secretName" $root }}
      key: HF_TOKEN
      optional: true
{{- if eq $pool.profile.device "cpu" }}
- name: VLLM_CPU_KVCACHE_SPACE
  value: {{ int $pool.profile.cpu_kvcache_space_gib | quote }}
{{- end }}
{{- if include "tidegate.loraOn" $pool }}
# The gateway loads and unloads adapters at runtime (POST /v1/load_lora_adapter).
- name: VLLM_ALLOW_RUNTIME_LORA_UPDATING
  value: "True"
{{- end }}
{{- range $k, $v := $pool.profile.extra_env }}
- name: {{ $k }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- end -}}

{{/* Resources of an engine container: GPUs = tensor_parallel_size. */}}
{{- define "tidegate.engineResources" -}}
{{- $pool := . -}}
{{- $res := deepCopy ($pool.resources | default dict) -}}
{{- if ne $pool.profile.device "cpu" -}}
{{- $gpus := int $pool.profile.tensor_parallel_size -}}
{{- $limits := deepCopy ($res.limits | default dict) -}}
{{- $_ := set $limits "nvidia.com/gpu" $gpus -}}
{{- $_ := set $res "limits" $limits -}}
{{- $requests := deepCopy ($res.requests | default dict) -}}
{{- $_ := set $requests "nvidia.com/gpu" $gpus -}}
{{- $_ := set $res "requests" $requests -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{/* Startup, readiness and liveness probes of an engine container. */}}
{{- define "tidegate.engineProbes" -}}
{{- $pool := . -}}
{{- $period := 10 -}}
startupProbe:
  httpGet:
    path: /health
    port: http
  periodSeconds: {{ $period }}
  timeoutSeconds: 5
  failureThreshold: {{ add1 (div (add (int $pool.loadTimeSeconds) (sub $period 1)) $period) }}
readinessProbe:
  httpGet:
    path: /health
    port: http
  periodSeconds: 5
  timeoutSeconds: 5
  failureThreshold: 3
livenessProbe:
  httpGet:
    path: /health
    port: http
  periodSeconds: 15
  timeoutSeconds: 10
  failureThreshold: 4
{{- end -}}

{{/* Volumes of an engine pod: call with (list $ $pool). */}}
{{- define "tidegate.engineVolumes" -}}
{{- $root := index . 0 -}}
{{- $pool := index . 1 -}}
- name: model-cache
{{- if eq $pool.modelCache.type "pvc" }}
  persistentVolumeClaim:
    claimName: {{ $pool.modelCache.existingClaim | default (printf "%s-models" (include "tidegate.engineName" (list $root $pool))) }}
{{- else }}
  emptyDir:
    sizeLimit: {{ $pool.modelCache.size }}
{{- end }}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ $pool.shmSize }}
{{- end -}}

{{- define "tidegate.engineMounts" -}}
- name: model-cache
  mountPath: /models
- name: dshm
  mountPath: /dev/shm
{{- end -}}

{{/* "true" when more than one gateway may run: gateway.replicas > 1 or the HPA on. */}}
{{- define "tidegate.severalGateways" -}}
{{- $g := .Values.gateway -}}
{{- if or $g.autoscaling.enabled (gt (int $g.replicas) 1) -}}true{{- end -}}
{{- end -}}

{{/*
Refuses several gateways on per-pod stores: each would admit every pool's full capacity and keep
its own limits, budgets and SQLite store (README: Scaling out). Renders nothing.
*/}}
{{- define "tidegate.checkGateways" -}}
{{- if include "tidegate.severalGateways" . -}}
{{- $g := .Values.gateway -}}
{{- $why := printf "gateway.replicas is %v" $g.replicas -}}
{{- if $g.autoscaling.enabled -}}
{{- $why = printf "gateway.autoscaling.enabled is true (minReplicas %v)" $g.autoscaling.minReplicas -}}
{{- end -}}
{{- $missing := list -}}
{{- if .Values.secrets.create -}}
{{- if not .Values.secrets.redisUrl -}}
{{- $missing = append $missing "secrets.redisUrl" -}}
{{- end -}}
{{- if not .Values.secrets.postgresUrl -}}
{{- $missing = append $missing "secrets.postgresUrl" -}}
{{- end -}}
{{- end -}}
{{- with $missing -}}
{{- fail (printf "%s, but %s %s empty: several gateways need Redis (shared pool capacity, limits and budgets) and PostgreSQL (one store of keys, tenants and usage), or each admits every pool's full capacity and keeps its own limits, budgets and SQLite store. Set %s, or run one gateway (gateway.replicas: 1, gateway.autoscaling.enabled: false)." $why (join " and " .) (ternary "is" "are" (eq (len .) 1)) (join " and " .)) -}}
{{- end -}}
{{- $config := include "tidegate.gatewayConfig" . | fromYaml -}}
{{- $backend := dig "limits" "backend" "memory" $config -}}
{{- if ne $backend "redis" -}}
{{- fail (printf "%s, but gateway.config.limits.backend is %q: several gateways must share their limits through Redis (remove it or set redis)." $why $backend) -}}
{{- end -}}
{{- $mode := dig "scheduling" "cluster" "mode" "auto" $config -}}
{{- if eq $mode "off" -}}
{{- fail (printf "%s, but gateway.config.scheduling.cluster.mode is \"off\": each gateway would admit every pool's full capacity (remove it or set auto)." $why) -}}
{{- end -}}
{{- /* Shares are equal, not by demand: a gateway whose share is 0 admits nothing. */ -}}
{{- $most := int (ternary $g.autoscaling.maxReplicas $g.replicas (eq (toString $g.autoscaling.enabled) "true")) -}}
{{- $knob := ternary "gateway.autoscaling.maxReplicas" "gateway.replicas" (eq (toString $g.autoscaling.enabled) "true") -}}
{{- range (include "tidegate.upstreams" . | fromYaml).upstreams -}}
{{- if and .max_concurrency (lt (int .max_concurrency) $most) -}}
{{- fail (printf "%s is %d, but model %q admits %d requests at a time per replica (max_concurrency): its capacity is split equally between the gateways, so on one replica the gateways beyond %d get a share of 0 and queue their requests until they time out. Lower %s, or raise max_num_seqs (a pool) or max_concurrency (a provider)." $knob $most .model (int .max_concurrency) (int .max_concurrency) $knob) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
