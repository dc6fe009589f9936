"""GPU utilisation and memory as Prometheus metrics, read from NVML at each scrape.

A model service calls ``install_gpu_metrics()`` once; it does nothing unless nvidia-ml-py
(the ``gpu`` extra) imports, the NVIDIA driver answers and this process can see a GPU. Only
the cards CUDA will show this process (``CUDA_VISIBLE_DEVICES`` applied, as in
``services.runtime.device``) are exported, so a service pinned to GPU 1 reports GPU 1 alone.

Exported, labelled by ``gpu`` (NVML index: the host's physical index on bare metal, 0 for
the one card a container is given), ``name`` and ``uuid`` (stable across hosts and
containers, so series from several services on one card can be told apart or merged):

- ``parole_gpu_utilization_ratio``: busy fraction of the last sample period (0..1)
- ``parole_gpu_memory_used_bytes`` / ``parole_gpu_memory_total_bytes``: device-wide memory,
  including other processes' (Ollama on the same card counts)
- ``parole_gpu_scrape_errors_total``: NVML queries that failed (a lost card, a driver reset)
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any, Protocol

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.runtime.device import GpuInfo, visible_gpus
from services.runtime.logging import get_logger

log = get_logger(__name__)

_LABELS = ["gpu", "name", "uuid"]


class Nvml(Protocol):
    """The part of pynvml used here; tests pass a fake object with the same functions."""

    NVMLError: type[Exception]

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class GpuCollector(Collector):
    """Reads the given GPUs from an initialised NVML at every scrape."""

    def __init__(self, nvml: Nvml, gpus: Sequence[GpuInfo]) -> None:
        self._nvml = nvml
        self.gpus = list(gpus)
        self._errors = 0

    def collect(self) -> Iterator[Metric]:
        util = GaugeMetricFamily(
            "parole_gpu_utilization_ratio",
            "Fraction of the last sample period a kernel ran on the GPU.",
            labels=_LABELS,
        )
        used = GaugeMetricFamily(
            "parole_gpu_memory_used_bytes", "GPU memory in use, by every process on the card.", labels=_LABELS
        )
        total = GaugeMetricFamily("parole_gpu_memory_total_bytes", "GPU memory installed.", labels=_LABELS)
        for gpu in self.gpus:
            labels = [str(gpu.index), gpu.name, gpu.uuid]
            try:
                handle = self._nvml.nvmlDeviceGetHandleByIndex(gpu.index)
                memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
                rates = self._nvml.nvmlDeviceGetUtilizationRates(handle)
            except self._nvml.NVMLError as exc:
                # One bad card must not hide the others, nor fail the whole scrape.
                self._errors += 1
                log.warning("nvml query failed", gpu=gpu.index, error=str(exc))
                continue
            util.add_metric(labels, float(rates.gpu) / 100.0)
            used.add_metric(labels, float(memory.used))
            total.add_metric(labels, float(memory.total))
        errors = CounterMetricFamily("parole_gpu_scrape_errors", "NVML queries that failed during a scrape.")
        errors.add_metric([], float(self._errors))
        yield from (util, used, total, errors)

    def describe(self) -> Iterator[Metric]:
        # Registering must not query NVML; names are enough to detect duplicates.
        yield GaugeMetricFamily("parole_gpu_utilization_ratio", "", labels=_LABELS)
        yield GaugeMetricFamily("parole_gpu_memory_used_bytes", "", labels=_LABELS)
        yield GaugeMetricFamily("parole_gpu_memory_total_bytes", "", labels=_LABELS)
        yield CounterMetricFamily("parole_gpu_scrape_errors", "")


# Weak keys: a test's throwaway registry may be freed and its id reused by the next one.
_installed: weakref.WeakKeyDictionary[CollectorRegistry, GpuCollector] = weakref.WeakKeyDictionary()


def _import_pynvml() -> Nvml | None:
    try:
        import pynvml  # optional: the 'gpu' extra (nvidia-ml-py)
    except ImportError:
        return None
    nvml: Nvml = pynvml
    return nvml


def install_gpu_metrics(
    registry: CollectorRegistry = REGISTRY,
    nvml: Nvml | None = None,
    environ: MutableMapping[str, str] | None = None,
) -> GpuCollector | None:
    """Registers the GPU collector once per registry; None when there is nothing to export.

    Call it after the device placement ran (it set ``CUDA_VISIBLE_DEVICES``). NVML stays
    initialised for the life of the process: scrapes then cost a few microseconds.
    """
    existing = _installed.get(registry)
    if existing is not None:
        return existing
    nvml = nvml if nvml is not None else _import_pynvml()
    if nvml is None:
        return None
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        log.info("no GPU metrics: NVML unavailable", error=str(exc))
        return None
    try:
        physical = []
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            physical.append(
                GpuInfo(
                    i,
                    _text(nvml.nvmlDeviceGetName(handle)),
                    int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                    _text(nvml.nvmlDeviceGetUUID(handle)),
                )
            )
    except nvml.NVMLError as exc:
        log.warning("no GPU metrics: NVML could not list the GPUs", error=str(exc))
        nvml.nvmlShutdown()
        return None
    gpus = visible_gpus(physical, os.environ if environ is None else environ)
    if not gpus:
        nvml.nvmlShutdown()
        return None
    collector = GpuCollector(nvml, gpus)
    registry.register(collector)
    _installed[registry] = collector
    log.info("exporting GPU metrics", gpus=[g.describe() for g in gpus])
    return collector
