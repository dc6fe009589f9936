"""Microphone and speaker through PyAudio (the ``client`` extra), imported only when used.

Everything else in the client works without PyAudio or a sound card (WAV and text modes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.session import CHUNK_MS
from services.runtime.audio import PCM16_WIDTH, SPEECH_RATE


class AudioDeviceError(RuntimeError):
    """PyAudio is missing, or the wanted device does not exist or cannot be opened."""


def load_pyaudio() -> Any:
    """The pyaudio module, or an error naming the extra that provides it."""
    try:
        import pyaudio
    except ImportError as exc:
        raise AudioDeviceError(
            "PyAudio is not installed: pip install -e '.[client]' (the client extra; it needs the "
            "PortAudio headers, e.g. apt install portaudio19-dev). WAV (--wav) and text (--text) "
            "modes work without it."
        ) from exc
    return pyaudio


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    # PortAudio's ALSA and JACK back-ends print dozens of C-level lines while probing cards
    # that do not exist; they say nothing the error we raise does not.
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def open_pyaudio() -> Any:
    """A PyAudio instance (terminate it when done)."""
    pyaudio = load_pyaudio()
    with _quiet_stderr():
        return pyaudio.PyAudio()


@dataclass(frozen=True)
class Device:
    """An audio device as PortAudio lists it."""

    index: int
    name: str
    inputs: int
    outputs: int
    default_rate: int
    host_api: str


def list_devices() -> list[Device]:
    """Every input and output device PortAudio sees."""
    pa = open_pyaudio()
    try:
        devices = []
        for i in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(i)
            api = pa.get_host_api_info_by_index(info["hostApi"])["name"]
            devices.append(
                Device(
                    i,
                    str(info["name"]),
                    int(info["maxInputChannels"]),
                    int(info["maxOutputChannels"]),
                    int(info["defaultSampleRate"]),
                    str(api),
                )
            )
        return devices
    finally:
        pa.terminate()


def _probe(output: bool, device: int | None) -> str | None:
    """None when a mono 16-bit stream opens on the device; else why not."""
    try:
        pa = open_pyaudio()
    except AudioDeviceError as exc:
        return str(exc)
    try:
        kind = "output" if output else "input"
        if device is None:
            try:
                with _quiet_stderr():
                    info = pa.get_default_output_device_info() if output else pa.get_default_input_device_info()
            except OSError:
                return f"no default {kind} device (no sound card?)"
            device = int(info["index"])
        try:
            with _quiet_stderr():
                stream = pa.open(
                    format=pa.get_format_from_width(PCM16_WIDTH),
                    channels=1,
                    rate=SPEECH_RATE,
                    input=not output,
                    output=output,
                    input_device_index=None if output else device,
                    output_device_index=device if output else None,
                    start=False,
                )
            stream.close()
        except (OSError, ValueError) as exc:
            return f"{kind} device {device} cannot be opened: {exc}"
        return None
    finally:
        pa.terminate()


def microphone_problem(device: int | None = None) -> str | None:
    """None when a microphone can be opened (``device`` or the default); else why not."""
    return _probe(False, device)


def speaker_problem(device: int | None = None) -> str | None:
    """None when a speaker can be opened (``device`` or the default); else why not."""
    return _probe(True, device)


class MicrophoneSource:
    """Microphone audio, 100 ms chunks of PCM16 mono at 16 kHz (PortAudio resamples)."""

    def __init__(self, device: int | None = None, sample_rate: int = SPEECH_RATE) -> None:
        self.device = device
        self.sample_rate = sample_rate

    async def frames(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        pa = open_pyaudio()
        pyaudio = load_pyaudio()

        def callback(data: bytes | None, frames: int, info: Any, status: int) -> tuple[None, int]:
            # PortAudio's own thread: hand the chunk to the event loop, never block here.
            if data:
                loop.call_soon_threadsafe(queue.put_nowait, data)
            return None, pyaudio.paContinue

        try:
            with _quiet_stderr():
                stream = pa.open(
                    format=pa.get_format_from_width(PCM16_WIDTH),
                    channels=1,
                    rate=self.sample_rate,
                    input=True,
                    input_device_index=self.device,
                    frames_per_buffer=self.sample_rate * CHUNK_MS // 1000,
                    stream_callback=callback,
                )
        except (OSError, ValueError) as exc:
            pa.terminate()
            raise AudioDeviceError(f"cannot open the microphone (device {self.device}): {exc}") from exc
        try:
            while True:
                yield await queue.get()
        finally:
            stream.stop_stream()
            stream.close()
            pa.terminate()


class SpeakerSink:
    """Plays answer audio on a speaker as it arrives; stops within ~40 ms when cancelled.

    All PyAudio calls run on one dedicated thread, in order: a stop (closing the stream, which
    drops what PortAudio still buffers) therefore never races a write in progress.
    """

    SLICE_SECONDS = 0.04

    def __init__(self, device: int | None = None) -> None:
        self.device = device
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speaker")
        self._pa: Any = None
        self._stream: Any = None
        self._rate = 0

    def _open(self, rate: int) -> None:
        if self._pa is None:
            self._pa = open_pyaudio()
        if self._stream is not None and self._rate == rate:
            return
        self._close_stream()
        try:
            with _quiet_stderr():
                self._stream = self._pa.open(
                    format=self._pa.get_format_from_width(PCM16_WIDTH),
                    channels=1,
                    rate=rate,
                    output=True,
                    output_device_index=self.device,
                )
        except (OSError, ValueError) as exc:
            raise AudioDeviceError(f"cannot open the speaker (device {self.device}) at {rate} Hz: {exc}") from exc
        self._rate = rate

    def _write(self, rate: int, data: bytes) -> None:
        self._open(rate)
        self._stream.write(data)

    def _close_stream(self) -> None:
        if self._stream is not None:
            # Closing an active stream discards its pending buffers (Pa_CloseStream).
            self._stream.close()
            self._stream = None

    async def play(self, turn_id: str, pcm: bytes, sample_rate: int) -> None:
        loop = asyncio.get_running_loop()
        step = max(PCM16_WIDTH, int(sample_rate * self.SLICE_SECONDS) * PCM16_WIDTH)
        try:
            for i in range(0, len(pcm), step):
                await loop.run_in_executor(self._executor, self._write, sample_rate, pcm[i : i + step])
        except asyncio.CancelledError:
            # Queued after the write in flight, so the sound stops right after it.
            loop.run_in_executor(self._executor, self._close_stream)
            raise

    async def finish(self, turn_id: str, stopped: bool) -> Path | None:
        return None

    def close(self) -> None:
        self._executor.submit(self._close_stream)
        if self._pa is not None:
            self._executor.submit(self._pa.terminate)
        self._executor.shutdown(wait=True)
