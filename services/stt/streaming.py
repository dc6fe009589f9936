"""Streaming recognition: voice activity, endpointing, interims, speculative and final decodes.

``Endpointer`` is a synchronous state machine over 32 ms VAD windows: it says when speech
starts, when a short pause begins (time to decode speculatively), when speech resumes (throw
that decode away) and when the utterance ends. ``StreamSession`` drives it over an audio
stream and schedules decodes through the ``Recognizer``, yielding domain events that the
servicer turns into protobuf messages. Neither knows about gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from services.runtime.audio import SPEECH_RATE, FloatAudio
from services.runtime.logging import get_logger
from services.stt.config import StreamingSettings
from services.stt.engine import DecodeOptions, Transcript, Word
from services.stt.recognizer import EOS_TO_FINAL, SPECULATIVE, Recognition, Recognizer

log = get_logger(__name__)

WINDOW = 512
"""Silero VAD's window at 16 kHz: 32 ms."""

VadModel = Callable[[FloatAudio], float]
"""Speech probability of the next 512-sample window of a stream (stateful)."""

EndReason = Literal["silence", "max_length", "end_of_stream"]
T = TypeVar("T")


def _ms_to_windows(ms: int) -> int:
    return max(1, -(-ms * SPEECH_RATE // 1000 // WINDOW))


def _level(window: FloatAudio) -> float:
    return float(np.dot(window, window)) / max(1, window.size)


@dataclass(frozen=True)
class SpeechStarted:
    utterance: int
    at_sample: int
    """Stream sample where the first voiced window began."""


@dataclass(frozen=True)
class Paused:
    """A short pause: ``audio`` is what the final will be if the pause ends the utterance."""

    utterance: int
    audio: FloatAudio
    start_sample: int
    end_sample: int


@dataclass(frozen=True)
class Resumed:
    """Speech came back before end of speech; a speculative decode is now stale."""

    utterance: int


@dataclass(frozen=True)
class SpeechEnded:
    utterance: int
    audio: FloatAudio
    start_sample: int
    end_sample: int
    at_sample: int
    """Stream sample at which the end was detected."""
    reason: EndReason
    voice_end_sample: int
    """Stream sample at which the voice stopped: the end of the last window heard as speech.
    ``end_sample`` runs on by the pause decoded with it (``speculative_pause_ms``), so this is
    the end of speech a listener would name, and what latency is measured from."""


EndpointEvent = SpeechStarted | Paused | Resumed | SpeechEnded


class Endpointer:
    """Finds utterances in a 16 kHz stream with a streaming VAD.

    A window at or above ``threshold`` is speech; below ``neg_threshold`` silence; in between
    it keeps the current state (hysteresis, so a soft syllable does not end an utterance).
    The decoded audio of an utterance runs from ``pre_roll`` before the first voiced window to
    ``pause`` after the last one; Paused and SpeechEnded carry the same slice when nothing was
    said in between, which is what lets the speculative decode stand as the final.
    """

    def __init__(self, vad: VadModel, settings: StreamingSettings, end_silence_ms: int | None = None) -> None:
        self._vad = vad
        self.threshold = settings.vad_threshold
        self.neg_threshold = settings.vad_neg_threshold
        eos_ms = end_silence_ms or settings.end_of_speech_silence_ms
        self.eos_windows = _ms_to_windows(eos_ms)
        # The pause can only come before the end; at equal length there is nothing to gain.
        self.pause_windows = min(_ms_to_windows(settings.speculative_pause_ms), self.eos_windows)
        self.speculate = self.pause_windows < self.eos_windows
        self.min_speech_windows = _ms_to_windows(settings.min_speech_ms)
        self.pre_roll_windows = settings.pre_roll_ms * SPEECH_RATE // 1000 // WINDOW
        self.max_windows = int(settings.max_utterance_seconds * SPEECH_RATE) // WINDOW
        self._residue = np.zeros(0, dtype=np.float32)
        self._samples = 0  # stream samples consumed into whole windows
        self._pre: deque[FloatAudio] = deque(maxlen=max(1, self.pre_roll_windows))
        self._candidate: list[FloatAudio] = []
        self._utt: list[FloatAudio] | None = None
        # Energy (mean square) of each window of the utterance: where a too-long one is cut.
        self._levels: list[float] = []
        self._utt_start = 0
        self._voiced_windows = 0  # windows up to and including the last voiced one
        self._silence = 0  # silent windows since the last voiced one
        self._paused = False
        self.utterances = 0

    @property
    def in_speech(self) -> bool:
        return self._utt is not None

    @property
    def speaking(self) -> bool:
        """Inside an utterance and the last window was speech."""
        return self._utt is not None and self._silence == 0

    @property
    def utterance_samples(self) -> int:
        return 0 if self._utt is None else len(self._utt) * WINDOW

    def utterance_audio(self) -> tuple[FloatAudio, int]:
        """Audio of the utterance so far and its first stream sample (for interims)."""
        assert self._utt is not None
        return np.concatenate(self._utt), self._utt_start

    def feed(self, audio: FloatAudio) -> list[EndpointEvent]:
        """Consumes 16 kHz audio; returns the events it caused, in order."""
        buf = np.concatenate([self._residue, audio]) if self._residue.size else audio
        whole = buf.size - buf.size % WINDOW
        self._residue = buf[whole:].copy()
        events: list[EndpointEvent] = []
        for i in range(0, whole, WINDOW):
            events += self._window(np.ascontiguousarray(buf[i : i + WINDOW], dtype=np.float32))
        return events

    def flush(self) -> list[EndpointEvent]:
        """End of stream: an utterance in progress ends here."""
        if self._utt is None:
            return []
        if self._residue.size and self._silence == 0:
            self._utt.append(self._residue)
        self._residue = np.zeros(0, dtype=np.float32)
        return [self._end("end_of_stream", keep_all=self._silence == 0)]

    def _window(self, w: FloatAudio) -> list[EndpointEvent]:
        prob = self._vad(w)
        self._samples += WINDOW
        if self._utt is None:
            return self._idle(w, prob)
        self._utt.append(w)
        self._levels.append(_level(w))
        events: list[EndpointEvent] = []
        voiced = prob >= self.threshold or (prob >= self.neg_threshold and self._silence == 0)
        if voiced:
            if self._paused:
                events.append(Resumed(self.utterances))
                self._paused = False
            self._silence = 0
            self._voiced_windows = len(self._utt)
        else:
            self._silence += 1
            if self.speculate and self._silence == self.pause_windows:
                audio, start, end = self._slice()
                self._paused = True
                events.append(Paused(self.utterances, audio, start, end))
            if self._silence >= self.eos_windows:
                events.append(self._end("silence"))
                return events
        if len(self._utt) >= self.max_windows:
            events += self._cut()
        return events

    def _cut(self) -> list[EndpointEvent]:
        """The utterance reached the cap: end it at its quietest window in the second half
        (a breath between words, so no word is split) and go on with the rest as a new one.

        Quietest by energy, not by VAD probability: Silero's recurrent state holds the
        probability near 1 across the short gaps of connected speech, so its minimum often
        falls inside a word, while the signal itself drops to the noise floor between words."""
        assert self._utt is not None
        half = len(self._levels) // 2
        quietest = half + int(np.argmin(self._levels[half:]))
        rest, rest_levels = self._utt[quietest + 1 :], self._levels[quietest + 1 :]
        del self._utt[quietest + 1 :]
        self._voiced_windows = len(self._utt)
        ended = self._end("max_length", keep_all=True)
        self._utt, self._levels = rest, rest_levels
        self._utt_start = ended.end_sample
        self._voiced_windows = len(rest)
        self._pre.clear()
        return [ended, SpeechStarted(self.utterances, ended.end_sample)]

    def _idle(self, w: FloatAudio, prob: float) -> list[EndpointEvent]:
        if prob >= self.threshold:
            self._candidate.append(w)
            if len(self._candidate) >= self.min_speech_windows:
                first = self._samples - len(self._candidate) * WINDOW
                pre = list(self._pre)
                self._utt = [*pre, *self._candidate]
                self._levels = [_level(x) for x in self._utt]
                self._utt_start = first - len(pre) * WINDOW
                self._voiced_windows = len(self._utt)
                self._silence = 0
                self._paused = False
                self._pre.clear()
                self._candidate = []
                return [SpeechStarted(self.utterances, first)]
            return []
        # A voiced run too short to count (a click): it becomes ordinary pre-roll.
        for c in self._candidate:
            self._pre.append(c)
        self._candidate = []
        if self.pre_roll_windows:
            self._pre.append(w)
        return []

    def _slice(self, keep_all: bool = False) -> tuple[FloatAudio, int, int]:
        assert self._utt is not None
        n = len(self._utt) if keep_all else min(len(self._utt), self._voiced_windows + self.pause_windows)
        audio = np.concatenate(self._utt[:n]) if n else np.zeros(0, dtype=np.float32)
        return audio, self._utt_start, self._utt_start + audio.size

    def _end(self, reason: EndReason, keep_all: bool = False) -> SpeechEnded:
        audio, start, end = self._slice(keep_all)
        assert self._utt is not None
        # The silence after the slice is the next utterance's pre-roll.
        tail = self._utt[len(audio) // WINDOW :]
        self._pre.clear()
        for w in tail[-self.pre_roll_windows :] if self.pre_roll_windows else []:
            self._pre.append(w)
        voice_end = min(end, start + self._voiced_windows * WINDOW) if reason == "silence" else end
        event = SpeechEnded(self.utterances, audio, start, end, self._samples, reason, voice_end)
        self._utt = None
        self._levels = []
        self._silence = 0
        self._paused = False
        self.utterances += 1
        return event


# ----------------------------------------------------------------------------- session


@dataclass(frozen=True)
class StreamConfig:
    """What a client asked for, validated."""

    language: str | None = None
    interim_results: bool = False
    word_timestamps: bool = False
    initial_prompt: str | None = None
    model_hint: str = ""
    single_utterance: bool = False
    end_of_speech_silence_ms: int = 0


@dataclass(frozen=True)
class SpeechEvent:
    """Speech started or ended, at ``at_seconds`` of stream time."""

    kind: Literal["started", "ended"]
    utterance: int
    at_seconds: float
    processed_seconds: float


@dataclass(frozen=True)
class StreamResult:
    """An interim or final transcript of one utterance."""

    transcript: Transcript
    is_final: bool
    utterance: int
    start_seconds: float
    end_seconds: float
    processed_seconds: float


SessionEvent = SpeechEvent | StreamResult


@dataclass
class _Utterance:
    index: int
    start_sample: int = 0
    final_sent: bool = False
    interim_task: asyncio.Task[None] | None = None
    interim_at: int = 0  # utterance samples when the last interim was started
    spec_task: asyncio.Task[Recognition] | None = None
    spec_end: int = -1


class _Done:
    pass


_DONE = _Done()


class StreamSession:
    """One streaming recognition: audio in, speech events and transcripts out."""

    def __init__(
        self, recognizer: Recognizer, vad: VadModel, settings: StreamingSettings, config: StreamConfig
    ) -> None:
        self.recognizer = recognizer
        self.settings = settings
        self.config = config
        self.endpointer = Endpointer(vad, settings, config.end_of_speech_silence_ms or None)
        self.interim_samples = settings.interim_interval_ms * SPEECH_RATE // 1000
        self._received = 0
        self._out: asyncio.Queue[SessionEvent | BaseException | _Done] = asyncio.Queue()
        self._utt: _Utterance | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_final: asyncio.Task[None] | None = None

    @property
    def processed_seconds(self) -> float:
        return self._received / SPEECH_RATE

    def _options(self, kind: Literal["final", "speculative", "interim"]) -> DecodeOptions:
        c = self.config
        return DecodeOptions(
            language=c.language, word_timestamps=c.word_timestamps, initial_prompt=c.initial_prompt, kind=kind
        )

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def run(self, audio: AsyncIterator[FloatAudio]) -> AsyncIterator[SessionEvent]:
        """Yields events as they happen; ends after the last final (or the first, with
        single_utterance). Errors of the input or of a final decode are raised here."""
        reader = self._spawn(self._read(audio))
        try:
            while True:
                item = await self._out.get()
                if isinstance(item, _Done):
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
                if self.config.single_utterance and isinstance(item, StreamResult) and item.is_final:
                    return
        finally:
            # The client left, an error ended the stream, or we are done: no decode of this
            # stream may outlive it (each would hold a queue slot).
            reader.cancel()
            pending = list(self._tasks)
            for t in pending:
                t.cancel()
            for t in pending:
                with contextlib.suppress(BaseException):
                    await t

    async def _read(self, audio: AsyncIterator[FloatAudio]) -> None:
        try:
            async for chunk in audio:
                self._received += chunk.size
                for event in self.endpointer.feed(chunk):
                    self._on_endpoint(event)
                self._maybe_interim()
            for event in self.endpointer.flush():
                self._on_endpoint(event)
            if self._last_final is not None:
                await self._last_final
            self._out.put_nowait(_DONE)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it to the client
            self._out.put_nowait(exc)

    def _on_endpoint(self, event: EndpointEvent) -> None:
        if isinstance(event, SpeechStarted):
            self._utt = _Utterance(event.utterance)
            self._out.put_nowait(
                SpeechEvent("started", event.utterance, event.at_sample / SPEECH_RATE, self.processed_seconds)
            )
        elif isinstance(event, Paused):
            utt = self._utt
            assert utt is not None
            utt.spec_task = self._spawn(
                self.recognizer.recognize(event.audio, self._options("speculative"), hint=self.config.model_hint)
            )
            utt.spec_end = event.end_sample
        elif isinstance(event, Resumed):
            if self._utt is not None and self._utt.spec_task is not None:
                self._utt.spec_task.cancel()
                self._utt.spec_task = None
                SPECULATIVE.labels("discarded").inc()
        else:
            utt = self._utt or _Utterance(event.utterance)
            self._utt = None
            self._out.put_nowait(
                SpeechEvent("ended", event.utterance, event.at_sample / SPEECH_RATE, self.processed_seconds)
            )
            spec = utt.spec_task if utt.spec_task is not None and utt.spec_end == event.end_sample else None
            if spec is None and utt.spec_task is not None:
                utt.spec_task.cancel()
                SPECULATIVE.labels("discarded").inc()
            self._last_final = self._spawn(self._final(utt, event, spec, self._last_final, time.perf_counter()))

    def _maybe_interim(self) -> None:
        utt = self._utt
        ep = self.endpointer
        if not (self.config.interim_results and utt is not None and ep.speaking):
            return
        if utt.interim_task is not None and not utt.interim_task.done():
            return
        if ep.utterance_samples - utt.interim_at < self.interim_samples:
            return
        # Only on a worker no final needs: an interim must never make a final wait.
        if not self.recognizer.queue.interim_welcome:
            return
        audio, start = ep.utterance_audio()
        utt.interim_at = ep.utterance_samples
        utt.interim_task = self._spawn(self._interim(utt, audio, start))

    async def _interim(self, utt: _Utterance, audio: FloatAudio, start: int) -> None:
        try:
            rec = await self.recognizer.recognize(audio, self._options("interim"), hint=self.config.model_hint)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - an interim is optional: its failure must not end the stream
            log.info("interim decode skipped", error=f"{type(exc).__name__}: {exc}")
            return
        if utt.final_sent or not rec.transcript.text:
            return
        self._out.put_nowait(self._result(rec.transcript, False, utt.index, start, start + audio.size))

    async def _final(
        self,
        utt: _Utterance,
        ended: SpeechEnded,
        spec: asyncio.Task[Recognition] | None,
        previous: asyncio.Task[None] | None,
        ended_at: float,
    ) -> None:
        rec: Recognition | None = None
        error: Exception | None = None
        if spec is not None:
            try:
                rec = await spec
                SPECULATIVE.labels("used").inc()
            except asyncio.CancelledError:
                if not spec.cancelled():
                    raise
            except Exception:  # noqa: BLE001 - the speculative attempt failed; the final decode retries
                rec = None
        try:
            if rec is None:
                rec = await self.recognizer.recognize(ended.audio, self._options("final"), hint=self.config.model_hint)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported in order, below, and it ends the stream
            error = exc
        # Finals go out in utterance order even when a later one decodes faster.
        if previous is not None:
            await previous
        utt.final_sent = True
        if error is not None or rec is None:
            self._out.put_nowait(error or RuntimeError("final decode produced nothing"))
            return
        EOS_TO_FINAL.observe(time.perf_counter() - ended_at)
        self._out.put_nowait(
            self._result(rec.transcript, True, ended.utterance, ended.start_sample, ended.voice_end_sample)
        )

    def _result(self, t: Transcript, final: bool, utterance: int, start: int, end: int) -> StreamResult:
        offset = start / SPEECH_RATE
        words = tuple(Word(w.word, w.start + offset, w.end + offset, w.probability) for w in t.words)
        shifted = Transcript(
            t.text, t.language, t.language_probability, t.confidence, words, t.engine, t.decode_seconds
        )
        return StreamResult(shifted, final, utterance, offset, end / SPEECH_RATE, self.processed_seconds)
