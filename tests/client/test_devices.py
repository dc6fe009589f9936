"""Microphone and speaker detection, with PyAudio missing or faked (no sound card here)."""

from __future__ import annotations

import sys
import types
from typing import Any, ClassVar

import pytest

from client import devices


def test_missing_pyaudio_names_the_client_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyaudio", None)  # makes "import pyaudio" fail
    with pytest.raises(devices.AudioDeviceError, match=r"the client extra"):
        devices.load_pyaudio()
    assert "client extra" in (devices.microphone_problem() or "")


class _FakePyAudio:
    """PortAudio with no default input and one output device that opens."""

    opened: ClassVar[list[dict[str, Any]]] = []

    def get_default_input_device_info(self) -> dict[str, Any]:
        raise OSError("No Default Input Device Available")

    def get_default_output_device_info(self) -> dict[str, Any]:
        return {"index": 3}

    def get_format_from_width(self, width: int) -> int:
        return 8

    def open(self, **kw: Any) -> Any:
        if kw.get("input_device_index") == 7:
            raise OSError("Invalid input device")
        self.opened.append(kw)
        return types.SimpleNamespace(close=lambda: None)

    def terminate(self) -> None:
        return None


def test_no_microphone_is_detected_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("pyaudio")
    fake.PyAudio = _FakePyAudio  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pyaudio", fake)
    _FakePyAudio.opened.clear()
    assert devices.microphone_problem() == "no default input device (no sound card?)"
    assert "input device 7 cannot be opened: Invalid input device" in (devices.microphone_problem(7) or "")
    assert devices.speaker_problem() is None
    assert _FakePyAudio.opened[-1]["output_device_index"] == 3 and _FakePyAudio.opened[-1]["output"]
