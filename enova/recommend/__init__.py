"""Engine settings recommended from a model's real geometry and the hardware's real memory.

Pure: model.py (data), geometry.py (config.json -> ModelGeometry, parameter and weight bytes),
kvcache.py (KV-cache bytes and token capacity as vLLM counts them), gpus.py (a cited GPU
catalogue), sizing.py (geometry + target + workload -> Recommendation or Refusal), render.py
(text and JSON). The drivers that read a config from disk or the Hub and observe the host live
in enova.modelstore.config and enova.observe.host; the CLI (`enova recommend`) and the planner
(`engine.args: auto`) call sizing.recommend.
"""
