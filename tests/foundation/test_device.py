"""Device placement and GPU validation, with the device layer faked."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.runtime.config import DeviceSettings
from services.runtime.device import GIB, DeviceError, GpuInfo, resolve_placement, visible_gpus

T400 = GpuInfo(0, "NVIDIA T400 4GB", 4 * GIB, "GPU-aaaa-1111")
RTX3090 = GpuInfo(1, "NVIDIA GeForce RTX 3090", 24 * GIB, "GPU-bbbb-2222")


@dataclass
class FakeProbe:
    gpus: list[GpuInfo]

    def list_gpus(self) -> list[GpuInfo]:
        return list(self.gpus)


ORIGINAL_HOST = FakeProbe([T400, RTX3090])
ORIGINAL_PIN = {"visible_devices": "1", "require_gpu": True, "expected_name": "RTX 3090", "min_memory_gib": 20}


def test_original_host_pinned_to_second_card() -> None:
    env: dict[str, str] = {}
    p = resolve_placement(DeviceSettings(**ORIGINAL_PIN), ORIGINAL_HOST, env)  # type: ignore[arg-type]
    assert (p.device, p.device_index, p.compute_type, p.gpu) == ("cuda", 0, "float16", RTX3090)
    # The environment is set before any CUDA library loads, in PCI bus order like nvidia-smi.
    assert env == {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def test_wrong_card_is_refused_with_what_was_found() -> None:
    settings = DeviceSettings(**{**ORIGINAL_PIN, "visible_devices": "0"})  # type: ignore[arg-type]
    with pytest.raises(DeviceError) as err:
        resolve_placement(settings, ORIGINAL_HOST, {})
    msg = str(err.value)
    assert "T400" in msg and "RTX 3090" in msg and "CUDA_VISIBLE_DEVICES=0" in msg
    assert "does not match" in msg and "less than the required 20 GiB" in msg


def test_too_little_memory() -> None:
    settings = DeviceSettings(require_gpu=True, min_memory_gib=40)
    with pytest.raises(DeviceError, match="less than the required 40 GiB"):
        resolve_placement(settings, FakeProbe([RTX3090]), {})


def test_no_gpu_when_required() -> None:
    with pytest.raises(DeviceError, match="no GPU"):
        resolve_placement(DeviceSettings(require_gpu=True), FakeProbe([]), {})
    with pytest.raises(DeviceError, match="a GPU is required"):
        resolve_placement(DeviceSettings(device="cuda"), FakeProbe([]), {})


def test_mask_pointing_past_the_cards_is_caught() -> None:
    # A container that already exposes only the pinned card as device 0, with
    # CUDA_VISIBLE_DEVICES=1 set again inside it, would see no GPU at all.
    with pytest.raises(DeviceError, match="CUDA would see 0 GPU"):
        resolve_placement(
            DeviceSettings(**ORIGINAL_PIN),
            FakeProbe([RTX3090.__class__(0, RTX3090.name, RTX3090.total_memory_bytes)]),
            {},
        )  # type: ignore[arg-type]


def test_auto_falls_back_to_cpu_int8_without_gpu() -> None:
    p = resolve_placement(DeviceSettings(), FakeProbe([]), {})
    assert (p.device, p.compute_type, p.gpu) == ("cpu", "int8", None)


def test_auto_uses_first_visible_gpu_and_explicit_cpu_wins() -> None:
    assert resolve_placement(DeviceSettings(), ORIGINAL_HOST, {}).gpu == T400
    assert resolve_placement(DeviceSettings(device="cpu"), ORIGINAL_HOST, {}).device == "cpu"
    p = resolve_placement(DeviceSettings(compute_type="int8_float16"), ORIGINAL_HOST, {"CUDA_VISIBLE_DEVICES": "1"})
    assert p.gpu == RTX3090 and p.compute_type == "int8_float16"


def test_visibility_mask_by_uuid_and_order() -> None:
    assert visible_gpus([T400, RTX3090], {"CUDA_VISIBLE_DEVICES": "GPU-bbbb"}) == [RTX3090]
    assert visible_gpus([T400, RTX3090], {"CUDA_VISIBLE_DEVICES": "1,0"}) == [RTX3090, T400]
    assert visible_gpus([T400, RTX3090], {"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus([T400, RTX3090], {"CUDA_VISIBLE_DEVICES": "0,7,1"}) == [T400]  # CUDA stops at a bad entry
