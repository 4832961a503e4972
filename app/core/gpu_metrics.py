"""GPU utilisation and memory of a worker's host, read through NVML at each scrape.

Optional: ``nvidia-ml-py`` comes with the ``gpu`` extra. Without it, or without an NVIDIA
driver, a worker still exports ``swapmeter_gpu_devices 0``, so a dashboard can tell "no
GPU here" from "no data". Registered by ``swapmeter worker`` only: the API runs no model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

log = logging.getLogger(__name__)

# Every name this collector may export (the dashboards' GPU panels use these).
NAMES = (
    "swapmeter_gpu_devices",
    "swapmeter_gpu_utilization_ratio",
    "swapmeter_gpu_memory_used_bytes",
    "swapmeter_gpu_memory_total_bytes",
)


def _nvml() -> Any | None:
    """The initialised NVML module, or None where there is no library or no driver."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.info("no GPU metrics: NVML unavailable (%s)", exc)
        return None
    return pynvml


class GpuCollector(Collector):
    def __init__(self, nvml: Any | None) -> None:
        self.nvml = nvml

    def collect(self) -> Iterator[GaugeMetricFamily]:
        devices = GaugeMetricFamily(
            "swapmeter_gpu_devices", "NVIDIA GPUs NVML sees on this worker's host (0: none)."
        )
        util = GaugeMetricFamily(
            "swapmeter_gpu_utilization_ratio",
            "Share of the last sample period the GPU was busy running kernels (0 to 1).",
            labels=["gpu"],
        )
        used = GaugeMetricFamily(
            "swapmeter_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"]
        )
        total = GaugeMetricFamily(
            "swapmeter_gpu_memory_total_bytes", "GPU memory in all.", labels=["gpu"]
        )
        count = 0
        if self.nvml is not None:
            try:
                count = self.nvml.nvmlDeviceGetCount()
                for index in range(count):
                    handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
                    rates = self.nvml.nvmlDeviceGetUtilizationRates(handle)
                    memory = self.nvml.nvmlDeviceGetMemoryInfo(handle)
                    util.add_metric([str(index)], rates.gpu / 100.0)
                    used.add_metric([str(index)], float(memory.used))
                    total.add_metric([str(index)], float(memory.total))
            except self.nvml.NVMLError as exc:  # a driver hiccup: this scrape goes without
                log.warning("GPU metrics not read: %s", exc)
        devices.add_metric([], count)
        yield devices
        if count:
            yield from (util, used, total)


def register(registry: Any = REGISTRY) -> GpuCollector:
    collector = GpuCollector(_nvml())
    registry.register(collector)
    return collector
