"""enova's NVML exporter: each GPU's figures under enova's names with the labels DCGM's exporter
uses (`gpu` = index), a field NVML refuses left out without failing the scrape, and a plain
reason when there is no GPU (a stand-in NVML module for the mapping; the real one on this host)."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest

from enova.monitor.gpu_exporter import NOT_INSTALLED, GpuCollector, nvml_module
from enova.monitor.dashboards import dashboards


class NVMLError(Exception):
    pass


class FakeNvml:
    """A stand-in for pynvml with pynvml's call names; `refuse` names calls that raise NVMLError."""

    NVMLError = NVMLError
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, gpus: list[dict], *, init_error: str | None = None, refuse: set[str] = frozenset()):
        self.gpus, self.init_error, self.refuse = gpus, init_error, set(refuse)
        self.shutdowns = 0

    def _check(self, call: str) -> None:
        if call in self.refuse:
            raise NVMLError(f"{call}: Not Supported")

    def nvmlInit(self):
        if self.init_error:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        self._check("count")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        self._check(f"handle{index}")
        return self.gpus[index]

    def nvmlDeviceGetUUID(self, h):
        return h["uuid"].encode()   # older bindings return bytes

    def nvmlDeviceGetName(self, h):
        return h["name"]

    def nvmlDeviceGetMemoryInfo(self, h):
        self._check("memory")
        return SimpleNamespace(total=h["total"], used=h["used"], free=h["total"] - h["used"])

    def nvmlDeviceGetUtilizationRates(self, h):
        self._check("utilization")
        return SimpleNamespace(gpu=h["util"], memory=0)

    def nvmlDeviceGetTemperature(self, h, sensor):
        assert sensor == self.NVML_TEMPERATURE_GPU
        self._check("temperature")
        return h["temp"]

    def nvmlDeviceGetPowerUsage(self, h):
        self._check("power")
        return h["mw"]


A100 = {"uuid": "GPU-aaaa", "name": "NVIDIA A100-SXM4-80GB", "total": 80 * 2**30, "used": 10 * 2**30,
        "util": 75, "temp": 61, "mw": 250_500}
L4 = {"uuid": "GPU-bbbb", "name": "NVIDIA L4", "total": 24 * 2**30, "used": 0, "util": 0, "temp": 35, "mw": 16_000}


def registry(nvml) -> CollectorRegistry:
    r = CollectorRegistry()
    r.register(GpuCollector(nvml))
    return r


def value(r: CollectorRegistry, metric: str, **labels) -> float | None:
    return r.get_sample_value(metric, labels)


def test_each_gpu_is_labelled_by_index_uuid_and_name_with_figures_in_base_units():
    r = registry(FakeNvml([A100, L4]))
    a = {"gpu": "0", "uuid": "GPU-aaaa", "name": "NVIDIA A100-SXM4-80GB"}
    assert value(r, "enova_gpu_utilization_ratio", **a) == 0.75
    assert value(r, "enova_gpu_memory_used_bytes", **a) == 10 * 2**30
    assert value(r, "enova_gpu_memory_total_bytes", **a) == 80 * 2**30
    assert value(r, "enova_gpu_temperature_celsius", **a) == 61
    assert value(r, "enova_gpu_power_watts", **a) == 250.5
    assert value(r, "enova_gpu_utilization_ratio", gpu="1", uuid="GPU-bbbb", name="NVIDIA L4") == 0.0
    assert value(r, "enova_gpu_available") == 1
    assert [s for m in r.collect() for s in m.samples if s.name == "enova_gpu_info"] == []   # info only when none


def test_a_field_nvml_refuses_is_left_out_and_the_rest_still_scraped():
    nvml = FakeNvml([A100, L4], refuse={"power", "memory", "handle1"})
    r = registry(nvml)
    a = {"gpu": "0", "uuid": "GPU-aaaa", "name": "NVIDIA A100-SXM4-80GB"}
    assert value(r, "enova_gpu_power_watts", **a) is None
    assert value(r, "enova_gpu_memory_used_bytes", **a) is None
    assert value(r, "enova_gpu_utilization_ratio", **a) == 0.75
    assert value(r, "enova_gpu_temperature_celsius", **a) == 61
    assert value(r, "enova_gpu_temperature_celsius", gpu="1", uuid="GPU-bbbb", name="NVIDIA L4") is None
    assert value(r, "enova_gpu_available") == 1
    assert nvml.shutdowns >= 1   # NVML is released after every scrape


def test_no_gpu_is_available_zero_with_the_reason_said_plainly():
    cases = {
        NOT_INSTALLED: None,
        "NVML unavailable: NVML Shared Library Not Found": FakeNvml([], init_error="NVML Shared Library Not Found"),
        "NVML reports 0 devices": FakeNvml([]),
        "NVML query failed: count: Not Supported": FakeNvml([A100], refuse={"count"}),
    }
    for reason, nvml in cases.items():
        r = registry(nvml)
        assert value(r, "enova_gpu_available") == 0, reason
        assert value(r, "enova_gpu_info", reason=reason) == 1, reason
        assert value(r, "enova_gpu_utilization_ratio", gpu="0", uuid="GPU-aaaa", name="NVIDIA A100-SXM4-80GB") is None


def test_the_dashboards_gpu_panel_reads_the_exporters_name_by_its_gpu_label():
    queries = [t["expr"] for d in dashboards().values() for p in d["panels"] for t in p.get("targets", [])]
    gpu = [q for q in queries if "enova_gpu_utilization_ratio" in q]
    assert gpu and all("by (gpu)" in q for q in gpu)


def test_on_this_host_with_no_gpu_the_real_nvml_says_so():
    r = registry(nvml_module())
    assert value(r, "enova_gpu_available") == 0
    text = generate_latest(r).decode()
    assert 'enova_gpu_info{reason="NVML unavailable: ' in text or f'enova_gpu_info{{reason="{NOT_INSTALLED}"}}' in text
