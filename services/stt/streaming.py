"""Streaming recognition: voice activity, endpointing, interims, speculative and final decodes.

``Endpointer`` is a synchronous state machine over 32 ms VAD windows: it says when speech
starts, when a short pause begins (time to decode speculatively), when speech resumes (throw
that decode away) and when the utterance ends. Under semantic endpointing it also says when
to ask the end-of-turn model, and waits for the answer before judging the silence after that
point. ``StreamSession`` drives it over an audio stream, runs the end-of-turn model and
schedules decodes through the ``Recognizer``, yielding domain events that the servicer turns
into protobuf messages. Neither knows about gRPC.
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
from services.runtime.streams import Channel, ChannelClosed, producing
from services.stt.config import StreamingSettings
from services.stt.engine import DecodeOptions, Transcript, Word
from services.stt.recognizer import EOS_TO_FINAL, SPECULATIVE, Recognition, Recognizer
from services.stt.turn import SAMPLES as TURN_SAMPLES
from services.stt.turn import TURN_DECISIONS, TURN_FALLBACKS, TURN_SILENCE, TurnDetector, TurnVerdict

log = get_logger(__name__)

WINDOW = 512
"""Silero VAD's window at 16 kHz: 32 ms."""

VadModel = Callable[[FloatAudio], float]
"""Speech probability of the next 512-sample window of a stream (stateful)."""

EndReason = Literal["silence", "complete", "max_silence", "max_length", "end_of_stream", "client"]
"""silence: the silence-only rule (end_of_speech_silence_ms). complete: the end-of-turn model
judged the turn finished. max_silence: it judged it unfinished, but the silence reached the
longest allowed pause. max_length: the utterance cap. end_of_stream: the client closed."""
EndpointingMode = Literal["semantic", "silence"]
_SILENT_ENDS = ("silence", "complete", "max_silence")
_TURN_WINDOWS = -(-TURN_SAMPLES // WINDOW)
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
    voice_end_sample: int
    """Where the voice stopped (``end_sample`` runs on by the pause decoded with it)."""


@dataclass(frozen=True)
class CheckTurn:
    """Time to ask the end-of-turn model. ``audio`` is the end of the utterance up to now,
    its trailing silence included (what the model was trained on); ``check`` identifies the
    answer expected by ``Endpointer.verdict``."""

    utterance: int
    check: int
    audio: FloatAudio
    silence_samples: int


@dataclass(frozen=True)
class Resumed:
    """Speech came back before end of speech; a speculative decode is now stale."""

    utterance: int
    at_sample: int
    """Stream sample where the voice came back (the end of the window heard as speech)."""


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
    probability: float | None = None
    """The end-of-turn model's last answer in the pause that ended the utterance (None: not asked)."""
    checks: int = 0
    """Times the model was asked in that pause."""
    mode: EndpointingMode = "silence"
    """The endpointing in effect."""
    decided_sample: int = 0
    """Where the end was decided: for a turn judged complete, where the model's answer was
    applied; ``at_sample`` may be later when the end was held for the pause's transcript."""

    @property
    def silence_samples(self) -> int:
        """Silence waited: from where the voice stopped to where the end was decided."""
        return self.decided_sample - self.voice_end_sample

    @property
    def held_samples(self) -> int:
        """Silence listened to after the decision, while the pause's transcript was decoded."""
        return self.at_sample - self.decided_sample


EndpointEvent = SpeechStarted | Paused | CheckTurn | Resumed | SpeechEnded


@dataclass
class _Check:
    """An end-of-turn question in flight."""

    id: int
    decide_at: int
    """Silent windows at which the answer is applied (and the stream waits for it)."""
    answered: bool = False
    probability: float | None = None
    """None once answered: the model could not judge (failed or late)."""


class Endpointer:
    """Finds utterances in a 16 kHz stream with a streaming VAD.

    A window at or above ``threshold`` is speech; below ``neg_threshold`` silence; in between
    it keeps the current state (hysteresis, so a soft syllable does not end an utterance).
    The decoded audio of an utterance runs from ``pre_roll`` before the first voiced window to
    ``pause`` after the last one; Paused and SpeechEnded carry the same slice when nothing was
    said in between, which is what lets the speculative decode stand as the final.

    Semantic endpointing (``semantic=True``): at ``turn.check_silence_ms`` of silence it emits
    CheckTurn and, from the silence where the answer is needed, buffers the audio until
    ``verdict`` brings it. Complete: the utterance ends at ``turn.complete_silence_ms``, or
    when ``transcript_ready`` says the pause's speculative decode is done, within
    ``turn.hold_for_transcript_ms``. Unfinished: it asks again
    every ``turn.recheck_ms`` and ends at ``turn.max_silence_ms`` regardless. No answer: that
    pause falls back to the silence rule. Because each answer is applied at the stream
    position it was asked for, the events do not depend on how fast the audio arrives.
    """

    def __init__(
        self,
        vad: VadModel,
        settings: StreamingSettings,
        end_silence_ms: int | None = None,
        semantic: bool = False,
    ) -> None:
        self._vad = vad
        self.threshold = settings.vad_threshold
        self.neg_threshold = settings.vad_neg_threshold
        eos_ms = end_silence_ms or settings.end_of_speech_silence_ms
        self.eos_windows = _ms_to_windows(eos_ms)
        self.semantic = semantic
        turn = settings.turn
        self.max_silence_windows = _ms_to_windows(turn.max_silence_ms)
        self.complete_threshold = turn.complete_threshold
        self.recheck_windows = _ms_to_windows(turn.recheck_ms) if turn.recheck_ms else 0
        # Under silence-only endpointing the pause can only come before the end; at equal
        # length there is nothing to gain. Under semantic endpointing it is where the model
        # is first asked, so it always comes (the settings keep it below max_silence_ms).
        self.pause_windows = _ms_to_windows(settings.speculative_pause_ms)
        if not semantic:
            self.pause_windows = min(self.pause_windows, self.eos_windows)
        self.check_windows = _ms_to_windows(turn.check_silence_ms)
        self.complete_windows = max(self.check_windows, _ms_to_windows(turn.complete_silence_ms))
        self.hold_windows = _ms_to_windows(turn.hold_for_transcript_ms) if turn.hold_for_transcript_ms else 0
        self.speculate = semantic or self.pause_windows < self.eos_windows
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
        # Semantic endpointing: windows waiting for an answer, the question in flight, and
        # what this pause has learnt so far.
        self._queue: deque[FloatAudio] = deque()
        self._check: _Check | None = None
        self._checks = 0  # ids
        self._next_check = self.check_windows
        self._pause_checks = 0
        self._probability: float | None = None
        self._unjudged = False  # the model could not answer in this pause: the silence rule holds
        self._decided_at = 0  # stream sample where the model's "complete" was applied
        self._decided_silence = 0  # and the silent windows then
        self._holding = False  # judged complete, waiting for this pause's transcript
        self._transcript_ready = False  # the speculative decode of this pause has finished

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

    @property
    def waiting(self) -> bool:
        """An end-of-turn answer is needed before the next window can be judged."""
        c = self._check
        return c is not None and not c.answered and self._silence >= c.decide_at

    @property
    def pending_check(self) -> int | None:
        """Id of the end-of-turn question in flight, if any."""
        return None if self._check is None else self._check.id

    def feed(self, audio: FloatAudio) -> list[EndpointEvent]:
        """Consumes 16 kHz audio; returns the events it caused, in order. While an end-of-turn
        answer is awaited the audio is kept, and judged once ``verdict`` brings the answer."""
        buf = np.concatenate([self._residue, audio]) if self._residue.size else audio
        whole = buf.size - buf.size % WINDOW
        self._residue = buf[whole:].copy()
        for i in range(0, whole, WINDOW):
            self._queue.append(np.ascontiguousarray(buf[i : i + WINDOW], dtype=np.float32))
        return self._drain()

    def verdict(self, check: int, probability: float | None) -> list[EndpointEvent]:
        """The end-of-turn model's answer to CheckTurn ``check`` (None: it could not judge).
        A stale answer (speech resumed, or the utterance ended) changes nothing."""
        c = self._check
        if c is None or c.id != check:
            return []
        c.answered, c.probability = True, probability
        events = self._apply(c) if self._silence >= c.decide_at else []
        return events + self._drain()

    def transcript_ready(self, end_sample: int) -> list[EndpointEvent]:
        """The speculative decode of the pause ending at ``end_sample`` has finished. A turn
        judged complete and held for it ends now, at the stream position reached."""
        if self._utt is None or not self._paused or self._slice_end() != end_sample:
            return []  # an older pause: speech resumed since
        self._transcript_ready = True
        if not self._holding:
            return []
        return [self._end("complete"), *self._drain()]

    def _slice_end(self) -> int:
        assert self._utt is not None
        return self._utt_start + min(len(self._utt), self._voiced_windows + self.pause_windows) * WINDOW

    def _drain(self) -> list[EndpointEvent]:
        events: list[EndpointEvent] = []
        while self._queue and not self.waiting:
            events += self._window(self._queue.popleft())
        return events

    def flush(self, reason: Literal["end_of_stream", "client"] = "end_of_stream") -> list[EndpointEvent]:
        """End of stream, or the client saying the utterance is over: an utterance in progress
        ends here. Audio still waiting for an answer is judged without it."""
        events: list[EndpointEvent] = []
        if self._check is not None and not self._check.answered:
            self._check = None
            self._unjudged = True
        events += self._drain()
        if self._utt is None:
            return events
        if self._holding:
            return [*events, self._end("complete")]
        if self._residue.size and self._silence == 0:
            self._utt.append(self._residue)
        self._residue = np.zeros(0, dtype=np.float32)
        return [*events, self._end(reason, keep_all=self._silence == 0)]

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
                events.append(Resumed(self.utterances, self._samples))
                self._paused = False
            self._silence = 0
            self._voiced_windows = len(self._utt)
            self._new_pause()
        else:
            self._silence += 1
            if self.speculate and self._silence == self.pause_windows:
                audio, start, end = self._slice()
                self._paused = True
                voice_end = min(end, start + self._voiced_windows * WINDOW)
                events.append(Paused(self.utterances, audio, start, end, voice_end))
            if self.semantic:
                ended = self._semantic_silence(events)
                if ended is not None:
                    events.append(ended)
                    return events
            elif self._silence >= self.eos_windows:
                events.append(self._end("silence"))
                return events
        if len(self._utt) >= self.max_windows:
            events += self._cut()
        return events

    def _new_pause(self) -> None:
        """Speech (re)started: a question about the last pause no longer matters."""
        self._check = None
        self._next_check = self.check_windows
        self._pause_checks = 0
        self._probability = None
        self._unjudged = False
        self._holding = False
        self._transcript_ready = False

    def _semantic_silence(self, events: list[EndpointEvent]) -> SpeechEnded | None:
        """One more silent window under semantic endpointing: ask, apply an answer, or end."""
        if self._silence >= self.max_silence_windows:
            return self._end("complete" if self._holding else "max_silence")
        if self._holding:
            return self._end("complete") if self._silence >= self._decided_silence + self.hold_windows else None
        if self._unjudged:
            return self._end("silence") if self._silence >= self.eos_windows else None
        if self._check is None and self._silence == self._next_check:
            self._checks += 1
            first = self._pause_checks == 0
            self._pause_checks += 1
            # The first answer is applied where a complete turn would end; a later one at once.
            self._check = _Check(self._checks, self.complete_windows if first else self._silence)
            assert self._utt is not None
            audio = np.concatenate(self._utt[-_TURN_WINDOWS:])
            events.append(CheckTurn(self.utterances, self._checks, audio, self._silence * WINDOW))
        c = self._check
        if c is not None and c.answered and self._silence >= c.decide_at:
            return self._apply_one(c)
        return None

    def _apply(self, c: _Check) -> list[EndpointEvent]:
        ended = self._apply_one(c)
        return [] if ended is None else [ended]

    def _apply_one(self, c: _Check) -> SpeechEnded | None:
        self._check = None
        if c.probability is None:
            self._unjudged = True
            return self._end("silence") if self._silence >= self.eos_windows else None
        self._probability = c.probability
        if c.probability >= self.complete_threshold:
            self._decided_at, self._decided_silence = self._samples, self._silence
            if self.hold_windows and not self._transcript_ready:
                # Ending now would not bring the final sooner: it needs this pause's decode,
                # still running. Listening on until it is ready costs nothing, and a speaker
                # who goes on meanwhile is not cut off.
                self._holding = True
                return None
            return self._end("complete")
        # Unfinished: ask again after more silence (the model then hears it too).
        self._next_check = self._silence + self.recheck_windows if self.recheck_windows else -1
        return None

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
        silent = reason in _SILENT_ENDS or (reason == "client" and self._silence > 0)
        voice_end = min(end, start + self._voiced_windows * WINDOW) if silent else end
        event = SpeechEnded(
            self.utterances,
            audio,
            start,
            end,
            self._samples,
            reason,
            voice_end,
            probability=self._probability,
            checks=self._pause_checks,
            mode="semantic" if self.semantic else "silence",
            decided_sample=self._decided_at if reason == "complete" else self._samples,
        )
        self._utt = None
        self._levels = []
        self._silence = 0
        self._paused = False
        self._new_pause()
        self.utterances += 1
        return event


# ----------------------------------------------------------------------------- session


class EndUtterance:
    """In a session's input, between audio chunks: the client says the utterance is over."""


END_UTTERANCE = EndUtterance()


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
    endpointing: EndpointingMode | None = None
    """None: the server's default (``turn.mode``)."""
    speculative_results: bool = False
    """Send each pause's speculative transcript as soon as it is decoded."""


@dataclass(frozen=True)
class SpeechEvent:
    """Speech started or ended (or resumed after a pause whose speculative transcript was
    sent), at ``at_seconds`` of stream time."""

    kind: Literal["started", "ended", "resumed"]
    utterance: int
    at_seconds: float
    processed_seconds: float


@dataclass(frozen=True)
class EndOfTurn:
    """How an utterance was ended: what a final reports of the decision."""

    mode: EndpointingMode
    reason: EndReason
    probability: float | None
    """The end-of-turn model's last answer in the final pause (None: not asked)."""
    checks: int
    silence_seconds: float
    """From the end of the voice to the decision, in stream time."""
    held_seconds: float
    """After a "complete" decision, the silence listened to until the pause's transcript was
    ready (the end waits for it: the final could not come sooner)."""
    decision_cpu_seconds: float
    """CPU time of the model's runs in the final pause."""
    decision_wall_seconds: float
    """From asking to the answer, for the last run (waiting for a core included)."""


@dataclass(frozen=True)
class StreamResult:
    """An interim or final transcript of one utterance."""

    transcript: Transcript
    is_final: bool
    utterance: int
    start_seconds: float
    end_seconds: float
    processed_seconds: float
    end_of_turn: EndOfTurn | None = None
    """Finals only."""
    speculative: bool = False
    """The transcript of a pause's speculative decode (not final)."""


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
    spec_sent: bool = False
    """The current pause's speculative transcript went to the client."""


class StreamSession:
    """One streaming recognition: audio in, speech events and transcripts out."""

    def __init__(
        self,
        recognizer: Recognizer,
        vad: VadModel,
        settings: StreamingSettings,
        config: StreamConfig,
        turn: TurnDetector | None = None,
    ) -> None:
        self.recognizer = recognizer
        self.settings = settings
        self.config = config
        self.turn = turn
        asked = config.endpointing or settings.turn.mode
        # Semantic without the model: silence only, counted (the warning was given at start-up).
        self.model_missing = asked == "semantic" and turn is None
        self.endpointer = Endpointer(
            vad, settings, config.end_of_speech_silence_ms or None, semantic=asked == "semantic" and turn is not None
        )
        self._judging: asyncio.Task[None] | None = None
        self._pause_verdicts: list[TurnVerdict] = []  # answers accepted in the current pause
        self.interim_samples = settings.interim_interval_ms * SPEECH_RATE // 1000
        self._received = 0
        # What the consumer gets: events, then the end, or the first error (after the events
        # sent before it). Decodes run as tasks of their own and send their results here.
        self._out: Channel[SessionEvent] = Channel()
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

    def _emit(self, event: SessionEvent) -> None:
        """Sends ``event`` to the consumer; dropped once the stream is over (an error ended
        it, or the consumer left): a late interim or speculative result goes nowhere."""
        with contextlib.suppress(ChannelClosed):
            self._out.send_nowait(event)

    def _fail(self, error: Exception) -> None:
        """Ends the stream with ``error``, raised to the consumer after the events before it."""
        self._out.close(error)

    async def run(self, audio: AsyncIterator[FloatAudio | EndUtterance]) -> AsyncIterator[SessionEvent]:
        """Yields events as they happen; ends after the last final (or the first, with
        single_utterance). Errors of the input or of a final decode are raised here."""
        try:
            async with producing(self._out, self._read(audio)) as events:
                async for item in events:
                    yield item
                    if self.config.single_utterance and isinstance(item, StreamResult) and item.is_final:
                        return
        finally:
            # The client left, an error ended the stream, or we are done: no decode of this
            # stream may outlive it (each would hold a queue slot).
            pending = list(self._tasks)
            for t in pending:
                t.cancel()
            for t in pending:
                with contextlib.suppress(BaseException):
                    await t

    async def _read(self, audio: AsyncIterator[FloatAudio | EndUtterance]) -> None:
        """The producer: feeds the endpointer; the stream ends once the last final is out."""
        async for chunk in audio:
            if isinstance(chunk, EndUtterance):
                await self._flush("client")
                continue
            self._received += chunk.size
            for event in self.endpointer.feed(chunk):
                self._on_endpoint(event)
            self._maybe_interim()
        await self._flush("end_of_stream")
        if self._last_final is not None:
            await self._last_final

    async def _flush(self, reason: Literal["end_of_stream", "client"]) -> None:
        """Ends the utterance in progress. Audio waiting for an end-of-turn answer is judged
        with it first, as a live stream would be: ending right after the audio must not
        change the result."""
        while self.endpointer.waiting and self._judging is not None and not self._judging.done():
            await self._judging
        for event in self.endpointer.flush(reason):
            self._on_endpoint(event)

    def _on_endpoint(self, event: EndpointEvent) -> None:
        if isinstance(event, SpeechStarted):
            self._utt = _Utterance(event.utterance)
            self._emit(SpeechEvent("started", event.utterance, event.at_sample / SPEECH_RATE, self.processed_seconds))
        elif isinstance(event, Paused):
            assert self._utt is not None
            self._speculate(self._utt, event)
        elif isinstance(event, CheckTurn):
            self._judging = self._spawn(self._judge(event))
        elif isinstance(event, Resumed):
            self._pause_verdicts = []
            if self._utt is not None and self._utt.spec_task is not None:
                self._utt.spec_task.cancel()
                self._utt.spec_task = None
                SPECULATIVE.labels("discarded").inc()
            if self._utt is not None and self._utt.spec_sent:
                # The client may be answering that transcript: tell it the speaker went on.
                self._utt.spec_sent = False
                self._emit(
                    SpeechEvent("resumed", event.utterance, event.at_sample / SPEECH_RATE, self.processed_seconds)
                )
        else:
            utt = self._utt or _Utterance(event.utterance)
            self._utt = None
            self._emit(SpeechEvent("ended", event.utterance, event.at_sample / SPEECH_RATE, self.processed_seconds))
            spec = utt.spec_task if utt.spec_task is not None and utt.spec_end == event.end_sample else None
            if spec is None and utt.spec_task is not None:
                utt.spec_task.cancel()
                SPECULATIVE.labels("discarded").inc()
            decision = self._decision(event)
            self._last_final = self._spawn(
                self._final(utt, event, spec, self._last_final, time.perf_counter(), decision)
            )

    def _speculate(self, utt: _Utterance, paused: Paused) -> None:
        """The pause's decode, started before anyone knows whether the pause ends the
        utterance: if it does, the final is this decode's result, ready sooner."""
        spec = self._spawn(
            self.recognizer.recognize(paused.audio, self._options("speculative"), hint=self.config.model_hint)
        )
        utt.spec_task, utt.spec_end = spec, paused.end_sample
        if self.config.speculative_results:
            spec.add_done_callback(lambda task: self._speculative_done(task, utt, paused))
        if self.endpointer.hold_windows:
            spec.add_done_callback(lambda task: self._transcript_ready(task, paused.end_sample))

    def _speculative_done(self, task: asyncio.Task[Recognition], utt: _Utterance, paused: Paused) -> None:
        """Sends a pause's speculative transcript, unless it is stale already: speech resumed
        (the task was cancelled or replaced) or the utterance ended (the final follows)."""
        if task.cancelled() or task.exception() is not None or utt.spec_task is not task:
            return
        if self._utt is not utt or utt.final_sent:
            return
        transcript = task.result().transcript
        if not transcript.text:
            return
        utt.spec_sent = True
        self._emit(
            self._result(transcript, False, utt.index, paused.start_sample, paused.voice_end_sample, speculative=True)
        )

    def _transcript_ready(self, task: asyncio.Task[Recognition], end_sample: int) -> None:
        """A speculative decode finished (or failed: the final decodes again either way)."""
        if task.cancelled():
            return
        try:
            for event in self.endpointer.transcript_ready(end_sample):
                self._on_endpoint(event)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it to the client
            self._fail(exc)

    def _decision(self, ended: SpeechEnded) -> EndOfTurn:
        """What the final reports of how its utterance ended; counted in the metrics."""
        verdicts, self._pause_verdicts = self._pause_verdicts, []
        silence = ended.silence_samples / SPEECH_RATE
        TURN_DECISIONS.labels(ended.mode, ended.reason).inc()
        if ended.reason in _SILENT_ENDS:
            TURN_SILENCE.labels(ended.reason).observe(silence)
        if self.model_missing and ended.reason == "silence":
            TURN_FALLBACKS.labels("model_missing").inc()
        return EndOfTurn(
            mode=ended.mode,
            reason=ended.reason,
            probability=ended.probability,
            checks=ended.checks,
            silence_seconds=silence,
            held_seconds=ended.held_samples / SPEECH_RATE,
            decision_cpu_seconds=sum(v.cpu_seconds for v in verdicts),
            decision_wall_seconds=verdicts[-1].wall_seconds if verdicts else 0.0,
        )

    async def _judge(self, check: CheckTurn) -> None:
        """Runs the end-of-turn model on its own threads (the audio keeps arriving meanwhile)
        and hands the answer to the endpointer; a failed or late answer leaves that pause to
        the silence rule."""
        assert self.turn is not None
        verdict: TurnVerdict | None = None
        try:
            verdict = await asyncio.wait_for(
                self.turn.decide(check.audio), self.settings.turn.decision_timeout_ms / 1000
            )
        except TimeoutError:
            TURN_FALLBACKS.labels("timeout").inc()
            log.warning(
                "end-of-turn model answered too late; this pause is judged by silence",
                timeout_ms=self.settings.turn.decision_timeout_ms,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the model is an aid: its failure must not end the stream
            TURN_FALLBACKS.labels("error").inc()
            log.warning(
                "end-of-turn model failed; this pause is judged by silence", error=f"{type(exc).__name__}: {exc}"
            )
        try:
            if self.endpointer.pending_check != check.check:
                return  # speech resumed or the utterance ended meanwhile
            if verdict is not None:
                self._pause_verdicts.append(verdict)
            for event in self.endpointer.verdict(check.check, None if verdict is None else verdict.probability):
                self._on_endpoint(event)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it to the client
            self._fail(exc)

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
        self._emit(self._result(rec.transcript, False, utt.index, start, start + audio.size))

    async def _final(
        self,
        utt: _Utterance,
        ended: SpeechEnded,
        spec: asyncio.Task[Recognition] | None,
        previous: asyncio.Task[None] | None,
        ended_at: float,
        decision: EndOfTurn,
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
            self._fail(error or RuntimeError("final decode produced nothing"))
            return
        EOS_TO_FINAL.observe(time.perf_counter() - ended_at)
        self._emit(
            self._result(rec.transcript, True, ended.utterance, ended.start_sample, ended.voice_end_sample, decision)
        )

    def _result(
        self,
        t: Transcript,
        final: bool,
        utterance: int,
        start: int,
        end: int,
        decision: EndOfTurn | None = None,
        *,
        speculative: bool = False,
    ) -> StreamResult:
        offset = start / SPEECH_RATE
        words = tuple(Word(w.word, w.start + offset, w.end + offset, w.probability) for w in t.words)
        shifted = Transcript(
            t.text, t.language, t.language_probability, t.confidence, words, t.engine, t.decode_seconds
        )
        return StreamResult(
            shifted, final, utterance, offset, end / SPEECH_RATE, self.processed_seconds, decision, speculative
        )
