"""Audio files in and out: any uploaded file to PCM16 mono, and synthesised PCM to the
formats OpenAI clients ask for, encoded as it streams (PyAV, FFmpeg's libraries).

The fleet speaks raw PCM16 only; this module is the whole of the gateway's audio format work.
"""

from __future__ import annotations

import io
import struct
from typing import Literal

import av
import av.error
import numpy as np

from services.gateway.errors import ApiError, bad_request
from services.runtime.audio import PCM16_WIDTH

# Demuxers accepted for uploads: the formats OpenAI documents (and HA/browsers record in).
# Probing anything else would expose every FFmpeg demuxer to untrusted bytes for no use.
ALLOWED_DEMUXERS = frozenset(
    {"wav", "mp3", "ogg", "flac", "matroska,webm", "mov,mp4,m4a,3gp,3g2,mj2", "aac", "mpeg", "w64", "aiff"}
)

SpeechFormat = Literal["wav", "pcm", "mp3", "opus", "flac", "aac"]
SPEECH_FORMATS: tuple[str, ...] = ("wav", "pcm", "mp3", "opus", "flac", "aac")
CONTENT_TYPES: dict[str, str] = {
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "flac": "audio/flac",
    "aac": "audio/aac",
}
# (container, codec) of the compressed formats; Opus goes in Ogg as OpenAI sends it.
_AV_FORMATS: dict[str, tuple[str, str]] = {
    "mp3": ("mp3", "libmp3lame"),
    "opus": ("ogg", "libopus"),
    "flac": ("flac", "flac"),
    "aac": ("adts", "aac"),
}


def decode_file(blob: bytes, rate: int, max_seconds: float) -> bytes:
    """An uploaded audio file (WAV, MP3, OGG, FLAC, WebM, M4A...) as PCM16 mono at ``rate``.

    Blocking (FFmpeg decodes in this thread): call it through ``asyncio.to_thread``.
    """
    if not blob:
        raise bad_request("the uploaded file is empty", param="file", code="empty_file")
    out = bytearray()
    limit = int(max_seconds * rate) * PCM16_WIDTH
    try:
        with av.open(io.BytesIO(blob), mode="r") as container:
            if container.format.name not in ALLOWED_DEMUXERS:
                raise bad_request(
                    f"unsupported file format {container.format.name!r}; send WAV, MP3, OGG, FLAC, WebM or M4A",
                    param="file",
                    code="unsupported_format",
                )
            if not container.streams.audio:
                raise bad_request("the file holds no audio stream", param="file", code="no_audio")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            for frame in container.decode(container.streams.audio[0]):
                for converted in resampler.resample(frame):
                    out += converted.to_ndarray().astype("<i2", copy=False).tobytes()
                if len(out) > limit:
                    raise bad_request(
                        f"the audio lasts more than {max_seconds:g} s, the longest this server transcribes",
                        param="file",
                        code="audio_too_long",
                    )
            for converted in resampler.resample(None):
                out += converted.to_ndarray().astype("<i2", copy=False).tobytes()
    except ApiError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, EOFError) as exc:
        raise bad_request(
            f"the file could not be decoded as audio ({exc.__class__.__name__}: {exc})",
            param="file",
            code="invalid_audio",
        ) from exc
    if not out:
        raise bad_request("the file holds no audio samples", param="file", code="empty_audio")
    return bytes(out)


class _Sink:
    """Write-only, non-seekable output for PyAV: muxers then write a streamable file (FLAC
    does not go back to patch its header) and every byte written can be sent at once."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


class SpeechEncoder:
    """PCM16 mono chunks in, bytes of the requested format out, as they become available."""

    def __init__(self, fmt: str, rate: int) -> None:
        if fmt not in SPEECH_FORMATS:
            raise bad_request(
                f"response_format must be one of {', '.join(SPEECH_FORMATS)}; got {fmt!r}",
                param="response_format",
            )
        self.format = fmt
        self.rate = rate
        self._header_sent = False
        self._sink: _Sink | None = None
        self._container: av.container.OutputContainer | None = None
        self._stream: av.AudioStream | None = None
        self._pts = 0

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]

    def _open(self) -> None:
        container_format, codec = _AV_FORMATS[self.format]
        self._sink = _Sink()
        self._container = av.open(self._sink, mode="w", format=container_format)
        stream = self._container.add_stream(codec, rate=self.rate)
        stream.layout = "mono"  # type: ignore[union-attr]
        self._stream = stream  # type: ignore[assignment]

    def feed(self, pcm: bytes) -> bytes:
        """Encodes a chunk; returns what can be sent now (may be empty while the codec fills a frame)."""
        if self.format == "pcm":
            return pcm
        if self.format == "wav":
            if self._header_sent:
                return pcm
            self._header_sent = True
            return streaming_wav_header(self.rate) + pcm
        if self._container is None:
            self._open()
        assert self._container is not None and self._stream is not None and self._sink is not None
        if pcm:
            samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = self.rate
            frame.pts = self._pts
            self._pts += samples.shape[1]
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return self._sink.take()

    def finish(self) -> bytes:
        """Flushes the codec and closes the container; returns the last bytes."""
        if self.format == "pcm":
            return b""
        if self.format == "wav":
            return b"" if self._header_sent else streaming_wav_header(self.rate)
        if self._container is None:
            self._open()
        assert self._container is not None and self._stream is not None and self._sink is not None
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._sink.take()


def streaming_wav_header(rate: int) -> bytes:
    """A RIFF/WAVE header for PCM16 mono whose length is not known yet: both sizes are the
    largest value, which players and decoders read as "until the end of the stream"."""
    unknown = 0xFFFFFFFF
    byte_rate = rate * PCM16_WIDTH
    return (
        b"RIFF"
        + struct.pack("<I", unknown)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, byte_rate, PCM16_WIDTH, 16)
        + b"data"
        + struct.pack("<I", unknown)
    )
