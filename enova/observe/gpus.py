"""GPU inventory through NVML, and an honest "no GPU" when there is none.

Called by enova.status and apply.executor (to map `resources.gpus` to devices).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_total_mib: int
    memory_used_mib: int


@dataclass(frozen=True)
class GpuInventory:
    gpus: tuple[Gpu, ...] = field(default_factory=tuple)
    driver: str = ""
    reason: str = ""  # why there are none, when there are none

    @property
    def available(self) -> bool:
        return bool(self.gpus)

    def describe(self) -> str:
        if not self.gpus:
            return f"no GPU ({self.reason})"
        names = ", ".join(f"{g.index}: {g.name} {g.memory_total_mib} MiB" for g in self.gpus)
        return f"{len(self.gpus)} GPU(s), driver {self.driver}: {names}"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def gpu_inventory() -> GpuInventory:
    """Query NVML. Blocks briefly; never raises: failures become an empty inventory with a reason."""
    try:
        import pynvml
    except ImportError:
        return GpuInventory(reason="nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return GpuInventory(reason=f"NVML unavailable: {exc}")
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(Gpu(
                index=index,
                uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                name=_text(pynvml.nvmlDeviceGetName(handle)),
                memory_total_mib=int(mem.total) // (1024 * 1024),
                memory_used_mib=int(mem.used) // (1024 * 1024),
            ))
        return GpuInventory(gpus=tuple(gpus), driver=driver,
                            reason="" if gpus else "NVML reports 0 devices")
    except pynvml.NVMLError as exc:
        return GpuInventory(reason=f"NVML query failed: {exc}")
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
