"""Convert a GGUF file into a Hugging Face folder (config, tokenizer, chat template, safetensors).

Run as a child process by `enova.modelstore.builtin`, so that torch and transformers (and the
conversion's ~1 GB peak) never stay in the enova process:

    python -m enova.modelstore.convert --gguf /path/model.gguf --out /path/new-folder

transformers de-quantizes the GGUF tensors on load, so the weights are plain bf16 tensors; it
still marks the model as GGUF-quantized and refuses to save it, so that mark is removed before
`save_pretrained`. `--out` must not exist or be empty. On success the last stdout line is a JSON
summary; on failure a message goes to stderr and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def convert(gguf: Path, out: Path) -> dict[str, object]:
    """Load `gguf` with transformers and save it as a Hugging Face folder in `out`.

    Blocks for about 15 s and peaks near 1 GB for a 135M model. Not idempotent: `out` must be
    absent or empty. Raises RuntimeError when the saved folder lacks a chat template the GGUF had,
    and whatever transformers raises for an unreadable file.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if out.exists() and any(out.iterdir()):
        raise RuntimeError(f"{out} is not empty")
    folder, name = str(gguf.parent), gguf.name

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, **{_dtype_keyword(): torch.bfloat16})
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        tokenizer.model_max_length = positions  # the GGUF leaves it at "unlimited" (1e30)

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    for path in out.iterdir():  # safetensors writes 0600; a container user may need to read it
        if path.is_file():
            path.chmod(0o644)

    saved = AutoTokenizer.from_pretrained(str(out))
    if tokenizer.chat_template and saved.chat_template != tokenizer.chat_template:
        raise RuntimeError(f"the chat template did not survive into {out}")
    return {
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": "bfloat16",
        "chat_template": bool(saved.chat_template),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }


def _dtype_keyword() -> str:
    """transformers renamed `torch_dtype` to `dtype` in 4.56 and deprecated the old name."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m enova.modelstore.convert", description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, required=True, help="the GGUF file to convert")
    parser.add_argument("--out", type=Path, required=True, help="the folder to create (absent or empty)")
    args = parser.parse_args(argv)
    if not args.gguf.is_file():
        print(f"enova.modelstore.convert: error: {args.gguf} is not a file", file=sys.stderr)
        return 1
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        summary = convert(args.gguf, args.out)
    except Exception as exc:  # noqa: BLE001 - a child process: report anything as one line and exit 1
        print(f"enova.modelstore.convert: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
