"""Model-to-hardware sizing (`tidegate plan`).

``model_spec`` reads a model's config.json into an architecture description, ``params`` counts
its parameters, ``memory`` turns both into bytes (weights, KV cache per token, what is left for
KV on a device), ``gpus`` is the table of devices, ``recommend`` picks the smallest device and
tensor-parallel size that meets a target, and ``profile_yaml`` writes the engine profile that
`tidegate up` and the Helm chart take. Everything is in bytes; GiB appears only on screen.
"""
