"""Local vLLM engines: install, model preparation, replica supervision and engine metrics.

Entry points: ``install.EngineInstaller``, ``model_prepare.ModelPreparer`` /
``model_prepare.resolve_model`` and ``supervisor.EngineSupervisor``.
"""
