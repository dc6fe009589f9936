"""Device placement and start-up validation.

The original host had two GPUs and every process had to run on the second one
(CUDA_VISIBLE_DEVICES=1, CUDA_DEVICE_ORDER=PCI_BUS_ID). Here each service reads its
``DeviceSettings``, sets the CUDA environment before any CUDA library loads, asks a
``GpuProbe`` which cards exist, maps the visible ones to physical cards the way CUDA does,
and picks CUDA or CPU. When told to require a GPU it checks the card's name and memory and
refuses to start otherwise: a service never runs silently on the wrong device.

NVML (and nvidia-smi) list every physical card whatever CUDA_VISIBLE_DEVICES says, in PCI
bus order, so applying the visibility mask ourselves gives the card CUDA will really use.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Protocol

from services.runtime.config import DeviceSettings

GIB = 1024**3


@dataclass(frozen=True)
class GpuInfo:
    """One physical GPU."""

    index: int
    """Physical index in PCI bus order (what nvidia-smi shows)."""
    name: str
    total_memory_bytes: int
    uuid: str = ""

    def describe(self) -> str:
        return f"GPU {self.index} '{self.name}' ({self.total_memory_bytes / GIB:.1f} GiB)"


class GpuProbe(Protocol):
    """Lists the physical GPUs of the host. Tests pass a fake one."""

    def list_gpus(self) -> list[GpuInfo]: ...


class NvmlProbe:
    """NVML through nvidia-ml-py, else nvidia-smi, else no GPU."""

    def list_gpus(self) -> list[GpuInfo]:
        try:
            import pynvml  # optional: the 'gpu' extra
        except ImportError:
            return self._from_smi()
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError:
            return []  # no driver: no usable GPU
        try:
            gpus = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(h)
                uuid = pynvml.nvmlDeviceGetUUID(h)
                gpus.append(
                    GpuInfo(
                        i,
                        name.decode() if isinstance(name, bytes) else name,
                        int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
                        uuid.decode() if isinstance(uuid, bytes) else uuid,
                    )
                )
            return gpus
        finally:
            pynvml.nvmlShutdown()

    @staticmethod
    def _from_smi() -> list[GpuInfo]:
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return []
        try:
            out = subprocess.run(
                [smi, "--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout
        except (subprocess.SubprocessError, OSError):
            return []
        gpus = []
        for line in out.strip().splitlines():
            idx, name, mem_mib, uuid = (p.strip() for p in line.split(","))
            gpus.append(GpuInfo(int(idx), name, int(float(mem_mib)) * 1024 * 1024, uuid))
        return gpus


class DeviceError(RuntimeError):
    """The configured device is not what this host offers; the message says what was found."""


@dataclass(frozen=True)
class Placement:
    """Where a model runs."""

    device: str
    """"cuda" or "cpu" (as faster-whisper and CTranslate2 spell it)."""
    device_index: int
    compute_type: str
    gpu: GpuInfo | None = None

    def describe(self) -> str:
        where = f"cuda:{self.device_index} = {self.gpu.describe()}" if self.gpu else "cpu"
        return f"{where}, {self.compute_type}"


def apply_cuda_env(settings: DeviceSettings, environ: MutableMapping[str, str] | None = None) -> None:
    """Sets CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER; call before any CUDA library loads."""
    env = os.environ if environ is None else environ
    if settings.visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = settings.visible_devices
    env.setdefault("CUDA_DEVICE_ORDER", settings.device_order)


def visible_gpus(physical: list[GpuInfo], environ: MutableMapping[str, str] | None = None) -> list[GpuInfo]:
    """The GPUs CUDA will show, in CUDA's order, given CUDA_VISIBLE_DEVICES."""
    env = os.environ if environ is None else environ
    mask = env.get("CUDA_VISIBLE_DEVICES")
    if mask is None:
        return list(physical)
    out: list[GpuInfo] = []
    for token in (t.strip() for t in mask.split(",")):
        if not token:
            break  # CUDA stops at the first empty or invalid entry
        if token.isdigit():
            found = next((g for g in physical if g.index == int(token)), None)
        else:
            found = next((g for g in physical if g.uuid and g.uuid.startswith(token)), None)
        if found is None:
            break
        out.append(found)
    return out


def resolve_placement(
    settings: DeviceSettings,
    probe: GpuProbe | None = None,
    environ: MutableMapping[str, str] | None = None,
) -> Placement:
    """Picks the device, validating it when the settings ask for a GPU."""
    env = os.environ if environ is None else environ
    apply_cuda_env(settings, env)
    wants_gpu = settings.device == "cuda" or settings.require_gpu
    if settings.device == "cpu" and not settings.require_gpu:
        return Placement("cpu", 0, _compute_type(settings, cuda=False))
    physical = (probe or NvmlProbe()).list_gpus()
    visible = visible_gpus(physical, env)
    found = "; ".join(g.describe() for g in physical) or "no GPU"
    mask = env.get("CUDA_VISIBLE_DEVICES", "<unset>")
    if settings.device_index >= len(visible):
        if wants_gpu:
            raise DeviceError(
                f"a GPU is required (device index {settings.device_index}) but CUDA would see "
                f"{len(visible)} GPU(s) with CUDA_VISIBLE_DEVICES={mask}; this host has: {found}"
            )
        return Placement("cpu", 0, _compute_type(settings, cuda=False))
    gpu = visible[settings.device_index]
    if settings.require_gpu:
        problems = []
        if settings.expected_name and not re.search(settings.expected_name, gpu.name, re.IGNORECASE):
            problems.append(f"its name does not match '{settings.expected_name}'")
        if settings.min_memory_gib and gpu.total_memory_bytes < settings.min_memory_gib * GIB:
            problems.append(f"it has less than the required {settings.min_memory_gib:g} GiB")
        if problems:
            raise DeviceError(
                f"wrong GPU: CUDA device {settings.device_index} with CUDA_VISIBLE_DEVICES={mask} is "
                f"{gpu.describe()}, and {' and '.join(problems)}; this host has: {found}"
            )
    return Placement("cuda", settings.device_index, _compute_type(settings, cuda=True), gpu)


def _compute_type(settings: DeviceSettings, *, cuda: bool) -> str:
    if settings.compute_type != "auto":
        return settings.compute_type
    # int8 on CPU: float32 is several times slower there for Whisper with no accuracy gain
    # worth having; float16 is the native fast path on CUDA.
    return "float16" if cuda else "int8"
