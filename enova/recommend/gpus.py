"""The GPUs sizing knows by name: a small catalogue with its sources, and the three ways a
GpuTarget is made (a catalogue name, a bare memory size, an NVML observation).

Pure, no I/O. Called by the CLI (`enova recommend --gpu L4 --gpus 2`, `--gpu-memory 24GiB`) and
by the host driver that reads NVML (`from_nvml`); the result goes to enova.recommend.sizing.

Memory is the figure vLLM sizes from: the total CUDA reports (`torch.cuda.mem_get_info()[1]`,
the `total_gpu_memory` of vLLM's profiler log and the "total capacity of X GiB" of PyTorch's
out-of-memory message), in bytes, computed from GiB (2**30). It is below the datasheet's
"24GB"/"80GB" because the driver and ECC keep part of the memory. Each entry says where its
figure was read; where no log was found for a card, the figure of a card with the same memory
is used and the entry says so. Bandwidth is the datasheet's, in GB/s (10**9 bytes/s).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from enova.errors import UsageError
from enova.recommend.model import GiB, MiB, GpuTarget


@dataclass(frozen=True)
class GpuSpec:
    """One catalogue entry. `memory_bytes`: what CUDA reports as total (see module docstring);
    `nominal`: the datasheet's capacity as NVIDIA writes it; `bf16`/`fp8`: tensor-core support
    (bf16 from Ampere, sm_80; fp8 from Ada/Hopper, sm_89/sm_90)."""

    name: str
    nominal: str
    memory_bytes: int
    memory_source: str
    bandwidth_gbs: float
    bf16: bool
    fp8: bool
    source: str                      # the datasheet
    nvml_pattern: str                # regex over the normalised NVML name ("nvidia a10g")


def _gib(x: float) -> int:
    return int(round(x * GiB))


_OOM = "PyTorch's out-of-memory message on this card reads 'total capacity of {} GiB'"

GPU_CATALOGUE: dict[str, GpuSpec] = {spec.name: spec for spec in (
    GpuSpec("H100-80GB-SXM", "80GB HBM3", _gib(79.22),
            "vLLM's profiler log on an H100 80GB: 'total_gpu_memory 79.22GiB' "
            "(https://github.com/vllm-project/vllm/pull/10511)",
            3350, True, True, "https://www.nvidia.com/en-us/data-center/h100/", r"\bh100\b"),
    GpuSpec("H100-80GB-PCIe", "80GB HBM2e", _gib(79.22),
            "assumed equal to the H100 SXM's 79.22 GiB (same 80 GB, nvidia-smi shows 81559 MiB on both)",
            2000, True, True, "https://www.nvidia.com/en-us/data-center/h100/", r"\bh100\b.*\bpcie\b"),
    GpuSpec("H200-141GB", "141GB HBM3e", _gib(139.80), _OOM.format("139.80") + " (8 x H200 reports)",
            4800, True, True, "https://www.nvidia.com/en-us/data-center/h200/", r"\bh200\b"),
    GpuSpec("A100-80GB", "80GB HBM2e", _gib(79.15),
            _OOM.format("79.15") + " (vLLM worker OOM reports on A100-SXM4-80GB)",
            2039, True, False,
            "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
            "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf", r"\ba100\b"),
    GpuSpec("A100-40GB", "40GB HBM2", _gib(39.39), _OOM.format("39.39"),
            1555, True, False,
            "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
            "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf", r"\ba100\b"),
    GpuSpec("L40S-48GB", "48GB GDDR6 (ECC)", _gib(44.39),
            _OOM.format("44.39") + " (vLLM CUDA-graph capture OOM on a 48 GB Ada card, ECC on)",
            864, True, True, "https://www.nvidia.com/en-us/data-center/l40s/", r"\bl40s\b"),
    GpuSpec("L4-24GB", "24GB GDDR6", _gib(22.03),
            _OOM.format("22.03") + " (https://github.com/ArcInstitute/evo2/issues/190)",
            300, True, True, "https://www.nvidia.com/en-us/data-center/l4/", r"\bl4\b"),
    GpuSpec("A10G-24GB", "24GB GDDR6", _gib(22.18),
            "assumed equal to the A10's 22.18 GiB (same GA102 board memory, 23028 MiB in nvidia-smi on both)",
            600, True, False, "https://aws.amazon.com/ec2/instance-types/g5/", r"\ba10g\b"),
    GpuSpec("A10-24GB", "24GB GDDR6", _gib(22.18),
            _OOM.format("22.18") + " (https://github.com/OpenBMB/MiniCPM-V/issues/640)",
            600, True, False, "https://www.nvidia.com/en-us/data-center/products/a10-gpu/", r"\ba10\b"),
    GpuSpec("RTX-4090-24GB", "24GB GDDR6X", _gib(23.55),
            "vLLM's profiler log 'total_gpu_memory (23.55GiB)' on a 24 GB card "
            "(https://github.com/vllm-project/vllm/issues/11550), and 0.98 x total = 23.08 GiB on two "
            "RTX 4090s (https://github.com/vllm-project/vllm/issues/13061)",
            1008, True, True,
            "https://www.nvidia.com/en-us/geforce/graphics-cards/40-series/rtx-4090/", r"\b4090\b"),
    GpuSpec("RTX-A6000-48GB", "48GB GDDR6", _gib(47.53), _OOM.format("47.53"),
            768, True, False, "https://www.nvidia.com/en-us/design-visualization/rtx-a6000/",
            r"\ba6000\b"),
    GpuSpec("T4-16GB", "16GB GDDR6", _gib(14.74), _OOM.format("14.74") + " (Colab and Kaggle T4)",
            320, False, False, "https://www.nvidia.com/en-us/data-center/tesla-t4/", r"\bt4\b"),
    GpuSpec("V100-32GB", "32GB HBM2", _gib(31.73), _OOM.format("31.73") + " (V100-SXM2-32GB)",
            900, False, False, "https://www.nvidia.com/en-us/data-center/v100/", r"\bv100\b"),
)}

# Short names a user types; the A100 has two sizes, so "a100" alone is not an alias.
_ALIASES: dict[str, str] = {
    "h100": "H100-80GB-SXM", "h100sxm": "H100-80GB-SXM", "h10080gb": "H100-80GB-SXM",
    "h100pcie": "H100-80GB-PCIe", "h200": "H200-141GB", "l40s": "L40S-48GB", "l4": "L4-24GB",
    "a10g": "A10G-24GB", "a10": "A10-24GB", "rtx4090": "RTX-4090-24GB", "4090": "RTX-4090-24GB",
    "a6000": "RTX-A6000-48GB", "rtxa6000": "RTX-A6000-48GB", "t4": "T4-16GB", "v100": "V100-32GB",
}

# NVML's total counts memory that CUDA does not hand out: an H100 shows 81559 MiB in nvidia-smi
# (https://github.com/LMCache/LMCache/issues/259) and 79.22 GiB (81121 MiB) in vLLM's log, an L4
# 23034 MiB against 22.03 GiB (22559 MiB): 438 and 475 MiB. For a card the catalogue does not
# know, this much is taken off NVML's figure.
NVML_RESERVED_BYTES = 512 * MiB


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def known_names() -> list[str]:
    return sorted(GPU_CATALOGUE)


def lookup(name: str) -> GpuSpec:
    """The catalogue entry for `name`, ignoring case and separators ("l4", "L4-24GB", "rtx 4090").
    Raises UsageError (exit 2) listing the known names."""
    key = _key(name)
    for spec in GPU_CATALOGUE.values():
        if _key(spec.name) == key:
            return spec
    if key in _ALIASES:
        return GPU_CATALOGUE[_ALIASES[key]]
    hint = " (A100 comes in two sizes: A100-80GB, A100-40GB)" if key == "a100" else ""
    raise UsageError(f"unknown GPU {name!r}{hint}; known: {', '.join(known_names())}; "
                     "or give its memory with --gpu-memory (e.g. 24GiB)")


def gpu_target(name: str, count: int = 1, fixed: bool = False) -> GpuTarget:
    """`count` catalogue GPUs. fixed=True: a replica uses exactly `count` (a spec's resources.gpus);
    False: up to `count`, the fewest that serve well (`enova recommend --gpus N`)."""
    _check_count(count)
    spec = lookup(name)
    return GpuTarget(name=spec.name, memory_bytes=spec.memory_bytes, count=count,
                     bandwidth_gbs=spec.bandwidth_gbs, bf16=spec.bf16, fp8=spec.fp8,
                     source=f"catalogue: {spec.source}; memory: {spec.memory_source}",
                     fixed_count=fixed)


def memory_target(memory_bytes: int, count: int = 1, fixed: bool = False) -> GpuTarget:
    """A GPU known only by its memory (`--gpu-memory 24GiB`): taken as the total CUDA reports.
    bf16 is assumed (every GPU since Ampere); fp8 is not."""
    _check_count(count)
    if memory_bytes <= 0:
        raise UsageError(f"GPU memory must be positive (got {memory_bytes})")
    return GpuTarget(name=f"{memory_bytes / GiB:.4g} GiB GPU", memory_bytes=int(memory_bytes),
                     count=count, bf16=True, fp8=False,
                     source="--gpu-memory (taken as the total CUDA reports; bf16 assumed)",
                     fixed_count=fixed)


def from_nvml(name: str, memory_total_bytes: int, count: int = 1, fixed: bool = False) -> GpuTarget:
    """An observed GPU: NVML's device name and total memory. When the name matches a catalogue
    entry of about that size (within 6%), the entry's CUDA memory figure, bf16/fp8 and bandwidth
    are used. A known family in another size (a V100 16GB) keeps the family's bf16/fp8 and takes
    NVML's total less NVML_RESERVED_BYTES; an unknown card also assumes bf16 and no fp8."""
    _check_count(count)
    family = match_nvml(name, memory_total_bytes)
    usable = max(memory_total_bytes - NVML_RESERVED_BYTES, 0)
    reserved = f"NVML total {memory_total_bytes / GiB:.2f} GiB less {NVML_RESERVED_BYTES // MiB} MiB the driver keeps"
    if family is not None and _same_size(family, memory_total_bytes):
        return GpuTarget(name=name, memory_bytes=min(family.memory_bytes, memory_total_bytes),
                         count=count, bandwidth_gbs=family.bandwidth_gbs, bf16=family.bf16,
                         fp8=family.fp8, fixed_count=fixed,
                         source=f"NVML {name} matched catalogue {family.name}: {family.memory_source}")
    if family is not None:
        return GpuTarget(name=name, memory_bytes=usable, count=count, bf16=family.bf16,
                         fp8=family.fp8, fixed_count=fixed,
                         source=f"{reserved}; bf16/fp8 of the {family.name} family")
    return GpuTarget(name=name, memory_bytes=usable, count=count, bf16=True, fp8=False,
                     fixed_count=fixed, source=f"{reserved}; not in the catalogue: bf16 assumed")


def match_nvml(name: str, memory_total_bytes: int) -> GpuSpec | None:
    """The catalogue entry an NVML name denotes: among the entries whose pattern matches the
    most specifically (H100 PCIe before H100), the nearest in memory ("NVIDIA A100-SXM4-40GB"
    -> A100-40GB). None when no pattern matches."""
    text = re.sub(r"[^a-z0-9]+", " ", name.lower())
    candidates = [s for s in GPU_CATALOGUE.values() if re.search(s.nvml_pattern, text)]
    candidates.sort(key=lambda s: (-len(s.nvml_pattern), abs(s.memory_bytes - memory_total_bytes)))
    return candidates[0] if candidates else None


def _same_size(spec: GpuSpec, memory_total_bytes: int) -> bool:
    """NVML's total is a few hundred MiB above CUDA's; 6% tells 40 from 80 GB and 16 from 32."""
    return abs(spec.memory_bytes - memory_total_bytes) <= 0.06 * spec.memory_bytes


_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "ki": 1024, "kib": 1024, "kb": 1000,
    "m": MiB, "mi": MiB, "mib": MiB, "mb": 1000 ** 2,
    "g": GiB, "gi": GiB, "gib": GiB, "gb": 1000 ** 3,
    "t": 1024 ** 4, "ti": 1024 ** 4, "tib": 1024 ** 4, "tb": 1000 ** 4,
}


def parse_memory(text: str) -> int:
    """Bytes from "24GiB", "24GB", "80G", "22.5 GiB", "25769803776". GiB/Gi/G are 2**30 (as
    docker and `free -g` read "G"); GB is 10**9. Raises UsageError on anything else."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise UsageError(f"cannot read memory size {text!r}: use e.g. 24GiB, 24GB, 80G or bytes")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise UsageError(f"memory size must be positive (got {text!r})")
    return value


def _check_count(count: int) -> None:
    if count < 1:
        raise UsageError(f"GPU count must be at least 1 (got {count})")
