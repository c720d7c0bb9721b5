"""enova.recommend.gpus: the catalogue, name lookup, --gpu-memory sizes and NVML observations."""

from __future__ import annotations

import pytest

from enova.errors import UsageError
from enova.recommend import gpus
from enova.recommend.model import GiB, MiB

ALL = ("H100-80GB-SXM", "H100-80GB-PCIe", "H200-141GB", "A100-80GB", "A100-40GB", "L40S-48GB", "L4-24GB",
       "A10G-24GB", "A10-24GB", "RTX-4090-24GB", "RTX-A6000-48GB", "T4-16GB", "V100-32GB")


def test_the_catalogue_holds_the_asked_gpus_each_with_its_sources():
    assert sorted(gpus.GPU_CATALOGUE) == sorted(ALL)
    for spec in gpus.GPU_CATALOGUE.values():
        assert spec.source.startswith("https://"), spec.name
        assert spec.memory_source, spec.name
        assert spec.bandwidth_gbs > 0


@pytest.mark.parametrize("name, nominal_gb", [
    ("H100-80GB-SXM", 80), ("H200-141GB", 141), ("A100-80GB", 80), ("A100-40GB", 40), ("L40S-48GB", 48),
    ("L4-24GB", 24), ("A10G-24GB", 24), ("RTX-4090-24GB", 24), ("RTX-A6000-48GB", 48), ("T4-16GB", 16),
    ("V100-32GB", 32),
])
def test_usable_memory_is_a_little_below_the_datasheets_capacity(name, nominal_gb):
    usable = gpus.GPU_CATALOGUE[name].memory_bytes / GiB
    assert 0.88 * nominal_gb < usable < nominal_gb


def test_only_ampere_and_later_have_bf16_and_only_ada_and_hopper_fp8():
    no_bf16 = {n for n, s in gpus.GPU_CATALOGUE.items() if not s.bf16}
    fp8 = {n for n, s in gpus.GPU_CATALOGUE.items() if s.fp8}
    assert no_bf16 == {"T4-16GB", "V100-32GB"}
    assert fp8 == {"H100-80GB-SXM", "H100-80GB-PCIe", "H200-141GB", "L40S-48GB", "L4-24GB", "RTX-4090-24GB"}


@pytest.mark.parametrize("typed, name", [
    ("L4", "L4-24GB"), ("l4-24gb", "L4-24GB"), ("rtx 4090", "RTX-4090-24GB"), ("RTX_4090_24GB", "RTX-4090-24GB"),
    ("h100", "H100-80GB-SXM"), ("H100 PCIe", "H100-80GB-PCIe"), ("a10g", "A10G-24GB"), ("A10", "A10-24GB"),
    ("a100-40gb", "A100-40GB"), ("A6000", "RTX-A6000-48GB"),
])
def test_names_are_looked_up_ignoring_case_and_separators(typed, name):
    target = gpus.gpu_target(typed)
    assert target.name == name
    assert target.memory_bytes == gpus.GPU_CATALOGUE[name].memory_bytes


def test_an_unknown_gpu_is_a_usage_error_listing_the_known_names():
    with pytest.raises(UsageError) as caught:
        gpus.gpu_target("B300")
    assert caught.value.exit_code == 2
    for name in ALL:
        assert name in str(caught.value)


def test_a100_alone_is_ambiguous_and_says_which_sizes_exist():
    with pytest.raises(UsageError, match="A100-80GB, A100-40GB"):
        gpus.gpu_target("a100")


def test_gpu_target_carries_count_fixedness_and_the_catalogues_capabilities():
    t = gpus.gpu_target("T4", count=2, fixed=True)
    assert (t.count, t.fixed_count, t.bf16, t.fp8, t.bandwidth_gbs) == (2, True, False, False, 320)
    assert "nvidia.com" in t.source
    with pytest.raises(UsageError):
        gpus.gpu_target("L4", count=0)


@pytest.mark.parametrize("text, expected", [
    ("24GiB", 24 * GiB), ("24GB", 24_000_000_000), ("80G", 80 * GiB), ("25769803776", 25769803776),
    ("22.5 GiB", int(22.5 * GiB)), ("512MiB", 512 * MiB), ("24gi", 24 * GiB),
])
def test_parse_memory_reads_binary_and_decimal_units(text, expected):
    assert gpus.parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "GiB", "24 GiBs", "-1GB", "0", "twenty"])
def test_parse_memory_refuses_what_it_cannot_read(text):
    with pytest.raises(UsageError):
        gpus.parse_memory(text)


def test_memory_target_takes_the_size_as_cuda_reports_it_and_assumes_bf16():
    t = gpus.memory_target(gpus.parse_memory("24GiB"), count=2)
    assert (t.memory_bytes, t.count, t.bf16, t.fp8, t.bandwidth_gbs) == (24 * GiB, 2, True, False, None)
    assert t.name == "24 GiB GPU"


@pytest.mark.parametrize("nvml_name, total_mib, entry", [
    ("NVIDIA A100-SXM4-40GB", 40960, "A100-40GB"),
    ("NVIDIA A100-SXM4-80GB", 81920, "A100-80GB"),
    ("NVIDIA A100 80GB PCIe", 81920, "A100-80GB"),
    ("NVIDIA H100 80GB HBM3", 81559, "H100-80GB-SXM"),   # nvidia-smi's 81559 MiB (LMCache #259)
    ("NVIDIA H100 PCIe", 81559, "H100-80GB-PCIe"),
    ("NVIDIA L4", 23034, "L4-24GB"),
    ("NVIDIA L40S", 46068, "L40S-48GB"),
    ("NVIDIA A10G", 23028, "A10G-24GB"),
    ("NVIDIA A10", 23028, "A10-24GB"),
    ("NVIDIA GeForce RTX 4090", 24564, "RTX-4090-24GB"),
    ("NVIDIA RTX A6000", 49140, "RTX-A6000-48GB"),
    ("Tesla T4", 15360, "T4-16GB"),
    ("Tesla V100-SXM2-32GB", 32768, "V100-32GB"),
    ("NVIDIA H200", 143771, "H200-141GB"),
])
def test_nvml_names_match_their_catalogue_entry_and_take_its_cuda_memory(nvml_name, total_mib, entry):
    spec = gpus.GPU_CATALOGUE[entry]
    t = gpus.from_nvml(nvml_name, total_mib * MiB, count=4)
    assert (t.name, t.count, t.bf16, t.fp8, t.bandwidth_gbs) == (nvml_name, 4, spec.bf16, spec.fp8,
                                                                 spec.bandwidth_gbs)
    assert t.memory_bytes == spec.memory_bytes
    assert entry in t.source


def test_a_known_family_in_another_size_keeps_its_capabilities_and_nvmls_memory():
    t = gpus.from_nvml("Tesla V100-SXM2-16GB", 16 * GiB)
    assert (t.bf16, t.fp8, t.bandwidth_gbs) == (False, False, None)
    assert t.memory_bytes == 16 * GiB - gpus.NVML_RESERVED_BYTES


def test_an_unknown_gpu_from_nvml_takes_nvmls_memory_less_the_driver_reserve():
    t = gpus.from_nvml("NVIDIA B200", 183 * GiB, count=8, fixed=True)
    assert (t.memory_bytes, t.bf16, t.fp8, t.fixed_count) == (183 * GiB - 512 * MiB, True, False, True)
    assert "not in the catalogue" in t.source
