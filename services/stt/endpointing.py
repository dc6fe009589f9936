"""Endpointing: voice activity, pauses and the end-of-turn policy over a 16 kHz stream.

``Endpointer`` is a synchronous state machine over 32 ms VAD windows: it says when speech
starts, when a short pause begins (time to decode speculatively), when speech resumes (throw
that decode away) and when the utterance ends. Under semantic endpointing it also says when
to ask the end-of-turn model, and waits for the answer before judging the silence after that
point. It runs no model but the VAD it is given; ``streaming.StreamSession`` drives it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from services.runtime.audio import SPEECH_RATE, FloatAudio
from services.stt.config import StreamingSettings
from services.stt.events import (
    SILENT_ENDS,
    CheckTurn,
    EndpointEvent,
    EndReason,
    Paused,
    Resumed,
    SpeechEnded,
    SpeechStarted,
)
from services.stt.turn import SAMPLES as TURN_SAMPLES

WINDOW = 512
"""Silero VAD's window at 16 kHz: 32 ms."""

VadModel = Callable[[FloatAudio], float]
"""Speech probability of the next 512-sample window of a stream (stateful)."""

_TURN_WINDOWS = -(-TURN_SAMPLES // WINDOW)


def _ms_to_windows(ms: int) -> int:
    return max(1, -(-ms * SPEECH_RATE // 1000 // WINDOW))


def _level(window: FloatAudio) -> float:
    return float(np.dot(window, window)) / max(1, window.size)


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
    ``turn.hold_for_transcript_ms``, unless that transcript reads as unfinished (a trailing
    comma, an ellipsis, a dangling article or conjunction: ``unfinished``), which overrules
    the model. Unfinished: it asks again
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
        on_overrule: Callable[[], None] | None = None,
    ) -> None:
        self._vad = vad
        self._on_overrule = on_overrule
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
        self.vad_reset_windows = _ms_to_windows(settings.vad_reset_ms) if settings.vad_reset_ms else 0
        self._idle_windows = 0  # silent windows in a row between utterances
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
        self._text_unfinished = False  # and its text breaks off mid-sentence
        self._overruled = False  # a "complete" of this pause was overruled by that text

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

    def transcript_ready(self, end_sample: int, unfinished: bool = False) -> list[EndpointEvent]:
        """The speculative decode of the pause ending at ``end_sample`` has finished. A turn
        judged complete and held for it ends now, at the stream position reached, unless its
        text breaks off mid-sentence (``unfinished``): then the pause is judged unfinished,
        whatever the model said or will say, and the turn ends at ``max_silence_ms``."""
        if self._utt is None or not self._paused or self._slice_end() != end_sample:
            return []  # an older pause: speech resumed since
        self._transcript_ready = True
        if unfinished:
            self._text_unfinished = True
            if self._holding:
                self._holding = False
                self._overrule()
            return []
        if not self._holding:
            return []
        return [self._end("complete"), *self._drain()]

    def _overrule(self) -> None:
        """The model's "complete" stands corrected by the text: listen on as for "unfinished"."""
        self._overruled = True
        if self._on_overrule is not None:
            self._on_overrule()
        self._recheck_later()

    def _recheck_later(self) -> None:
        """Judged unfinished: ask the model again after more silence (it then hears that too);
        with rechecks off, never again (the turn ends at ``max_silence_ms``)."""
        self._next_check = self._silence + self.recheck_windows if self.recheck_windows else -1

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
        self._text_unfinished = False
        self._overruled = False

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
        if c.probability >= self.complete_threshold and self._text_unfinished:
            self._overrule()
            return None
        if c.probability >= self.complete_threshold:
            self._decided_at, self._decided_silence = self._samples, self._silence
            if self.hold_windows and not self._transcript_ready:
                # Ending now would not bring the final sooner: it needs this pause's decode,
                # still running. Listening on until it is ready costs nothing, and a speaker
                # who goes on meanwhile is not cut off.
                self._holding = True
                return None
            return self._end("complete")
        self._recheck_later()
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
        self._idle_windows = 0 if prob >= self.threshold else self._idle_windows + 1
        if self.vad_reset_windows and self._idle_windows >= self.vad_reset_windows:
            # The next words are judged as at the start of a stream (see vad_reset_ms).
            # Models without a state (test fakes) have nothing to reset.
            reset = getattr(self._vad, "reset", None)
            if reset is not None:
                reset()
            self._idle_windows = 0
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
        silent = reason in SILENT_ENDS or (reason == "client" and self._silence > 0)
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
            overruled=self._overruled,
        )
        self._utt = None
        self._levels = []
        self._silence = 0
        self._paused = False
        self._new_pause()
        self.utterances += 1
        return event
