"""The NVML collector, with the NVML layer faked (no GPU on these machines)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.runtime.gpu_metrics import install_gpu_metrics

GIB = 1024**3


class FakeNvmlError(Exception):
    pass


@dataclass
class FakeCard:
    name: str
    uuid: str
    total: int
    used: int
    util_percent: int
    broken: bool = False


@dataclass
class Mem:
    total: int
    used: int


@dataclass
class Util:
    gpu: int
    memory: int = 0


@dataclass
class FakeNvml:
    """Two cards, like the original host; a card can be made to fail its queries."""

    cards: list[FakeCard] = field(
        default_factory=lambda: [
            FakeCard("NVIDIA GeForce RTX 3060", "GPU-aaaa", 12 * GIB, 1 * GIB, 5),
            FakeCard("NVIDIA GeForce RTX 3090", "GPU-bbbb", 24 * GIB, 20 * GIB, 73),
        ]
    )
    driver: bool = True
    inits: int = 0
    shutdowns: int = 0
    NVMLError: type[Exception] = FakeNvmlError

    def nvmlInit(self) -> None:
        if not self.driver:
            raise FakeNvmlError("Driver Not Loaded")
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.cards)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        return self.cards[index]

    def nvmlDeviceGetName(self, handle: FakeCard) -> bytes:
        return handle.name.encode()  # older pynvml returns bytes

    def nvmlDeviceGetUUID(self, handle: FakeCard) -> str:
        return handle.uuid

    def nvmlDeviceGetMemoryInfo(self, handle: FakeCard) -> Mem:
        if handle.broken:
            raise FakeNvmlError("GPU is lost")
        return Mem(handle.total, handle.used)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeCard) -> Util:
        if handle.broken:
            raise FakeNvmlError("GPU is lost")
        return Util(handle.util_percent)


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def labels(gpu: str, name: str, uuid: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"gpu": gpu, "name": name, "uuid": uuid}.items()))


def test_exports_only_the_card_cuda_shows_this_process() -> None:
    registry = CollectorRegistry()
    nvml = FakeNvml()
    collector = install_gpu_metrics(registry, nvml, environ={"CUDA_VISIBLE_DEVICES": "1"})
    assert collector is not None
    values = scrape(registry)
    card = labels("1", "NVIDIA GeForce RTX 3090", "GPU-bbbb")
    assert values[("parole_gpu_utilization_ratio", card)] == 0.73
    assert values[("parole_gpu_memory_used_bytes", card)] == 20 * GIB
    assert values[("parole_gpu_memory_total_bytes", card)] == 24 * GIB
    assert values[("parole_gpu_scrape_errors_total", ())] == 0
    assert not [k for k in values if k[1] and dict(k[1]).get("gpu") == "0"], "GPU 0 is not this process's"
    # Values are read at each scrape, not frozen at install.
    nvml.cards[1].used = 23 * GIB
    assert scrape(registry)[("parole_gpu_memory_used_bytes", card)] == 23 * GIB


def test_every_card_without_a_mask_and_one_install_per_registry() -> None:
    registry = CollectorRegistry()
    nvml = FakeNvml()
    first = install_gpu_metrics(registry, nvml, environ={})
    assert install_gpu_metrics(registry, nvml, environ={}) is first  # a second call does not re-register
    assert nvml.inits == 1
    values = scrape(registry)
    gpus = {dict(k[1])["gpu"] for k in values if k[0] == "parole_gpu_memory_total_bytes"}
    assert gpus == {"0", "1"}


def test_a_lost_card_is_counted_and_the_others_still_reported() -> None:
    registry = CollectorRegistry()
    nvml = FakeNvml()
    install_gpu_metrics(registry, nvml, environ={})
    nvml.cards[0].broken = True
    values = scrape(registry)
    assert ("parole_gpu_memory_used_bytes", labels("0", "NVIDIA GeForce RTX 3060", "GPU-aaaa")) not in values
    assert ("parole_gpu_memory_used_bytes", labels("1", "NVIDIA GeForce RTX 3090", "GPU-bbbb")) in values
    assert values[("parole_gpu_scrape_errors_total", ())] == 1


def test_nothing_registered_without_driver_or_visible_gpu() -> None:
    registry = CollectorRegistry()
    assert install_gpu_metrics(registry, FakeNvml(driver=False), environ={}) is None
    hidden = FakeNvml()
    assert install_gpu_metrics(registry, hidden, environ={"CUDA_VISIBLE_DEVICES": ""}) is None
    assert hidden.shutdowns == 1  # NVML released when there is nothing to watch
    assert "parole_gpu" not in generate_latest(registry).decode()


def test_nothing_registered_without_pynvml(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_pynvml(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "pynvml":
            raise ImportError("No module named 'pynvml'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    registry = CollectorRegistry()
    assert install_gpu_metrics(registry, environ={}) is None
