"""enova's own GPU exporter: NVML figures per GPU as Prometheus metrics, for hosts with no DCGM exporter.

A prometheus-client Collector read at every scrape. It is registered in the reconciler's registry
(enova.reconcile.metrics), so the reconciler's `/metrics` (job `enova-reconciler`) carries it:

    enova_gpu_utilization_ratio{gpu,uuid,name}      GPU busy time over NVML's last sample period, 0-1
    enova_gpu_memory_used_bytes{gpu,uuid,name}      device memory in use
    enova_gpu_memory_total_bytes{gpu,uuid,name}     device memory installed
    enova_gpu_temperature_celsius{gpu,uuid,name}    core temperature
    enova_gpu_power_watts{gpu,uuid,name}            power draw
    enova_gpu_available                             1 when NVML reports at least one GPU, else 0
    enova_gpu_info{reason}                          1, only when there is no GPU: why (NVML missing, no device)

`gpu` is the device index, as DCGM's exporter labels it (the dashboards read either by `gpu`).
An NVML error for one field of one GPU leaves that one series out; nothing NVML raises fails the
scrape. The collector takes the NVML module as a parameter (`nvml_module()` is the real one), so
the mapping is tested with a stand-in. Blocks on NVML for a few milliseconds per scrape.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

GPU_LABELS = ["gpu", "uuid", "name"]
GPU_METRICS = {
    "enova_gpu_utilization_ratio": "GPU utilisation over NVML's last sample period (0-1).",
    "enova_gpu_memory_used_bytes": "GPU memory in use, bytes.",
    "enova_gpu_memory_total_bytes": "GPU memory installed, bytes.",
    "enova_gpu_temperature_celsius": "GPU core temperature, degrees Celsius.",
    "enova_gpu_power_watts": "GPU power draw, watts.",
}
NOT_INSTALLED = "nvidia-ml-py is not installed"


def nvml_module() -> ModuleType | None:
    """The real NVML binding (`pynvml` from nvidia-ml-py), or None when it is not installed."""
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class GpuCollector(Collector):
    """NVML per GPU as the metrics above. `nvml` is a module with pynvml's API (or None: not installed)."""

    def __init__(self, nvml: Any | None):
        self.nvml = nvml

    def collect(self) -> Iterator[Metric]:
        families = {name: GaugeMetricFamily(name, doc, labels=GPU_LABELS) for name, doc in GPU_METRICS.items()}
        count, reason = self._read(families)
        available = GaugeMetricFamily("enova_gpu_available", "1 when NVML reports at least one GPU, else 0.")
        available.add_metric([], 1.0 if count else 0.0)
        yield available
        info = GaugeMetricFamily("enova_gpu_info", "Present (1) only when there is no GPU: why.", labels=["reason"])
        if not count:
            info.add_metric([reason], 1.0)
        yield info
        yield from families.values()

    def _read(self, families: dict[str, GaugeMetricFamily]) -> tuple[int, str]:
        """Fill `families`; (GPUs seen, why none when none)."""
        nvml = self.nvml
        if nvml is None:
            return 0, NOT_INSTALLED
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            return 0, f"NVML unavailable: {exc}"
        try:
            try:
                count = int(nvml.nvmlDeviceGetCount())
            except nvml.NVMLError as exc:
                return 0, f"NVML query failed: {exc}"
            if count == 0:
                return 0, "NVML reports 0 devices"
            for index in range(count):
                self._read_device(nvml, index, families)
            return count, ""
        finally:
            try:
                nvml.nvmlShutdown()
            except nvml.NVMLError:
                pass

    @staticmethod
    def _read_device(nvml: Any, index: int, families: dict[str, GaugeMetricFamily]) -> None:
        def field(call):
            try:
                return call()
            except nvml.NVMLError:
                return None

        handle = field(lambda: nvml.nvmlDeviceGetHandleByIndex(index))
        if handle is None:
            return
        uuid = field(lambda: _text(nvml.nvmlDeviceGetUUID(handle))) or ""
        name = field(lambda: _text(nvml.nvmlDeviceGetName(handle))) or ""
        labels = [str(index), uuid, name]
        memory = field(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        values = {
            "enova_gpu_utilization_ratio": field(lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0),
            "enova_gpu_memory_used_bytes": None if memory is None else float(memory.used),
            "enova_gpu_memory_total_bytes": None if memory is None else float(memory.total),
            "enova_gpu_temperature_celsius": field(
                lambda: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))),
            "enova_gpu_power_watts": field(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),  # mW
        }
        for metric, value in values.items():
            if value is not None:
                families[metric].add_metric(labels, float(value))
