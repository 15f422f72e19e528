"""Local vLLM engines: install, model preparation, replica supervision and engine metrics.

Entry points: ``install.EngineInstaller``, ``model_prepare.ModelPreparer`` /
``model_prepare.resolve_model``, ``pools.plan_replicas`` (every local pool's replicas and
their vLLM commands) and ``supervisor.EngineSupervisor`` (one ``replica_set.PoolReplicas`` per
pool, an ``autoscaler.PoolAutoscaler`` per autoscaling pool).
"""
