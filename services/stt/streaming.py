"""Streaming recognition: one session drives the endpointer over an audio stream, runs the
end-of-turn model and schedules interim, speculative and final decodes.

``StreamSession`` feeds the ``Endpointer`` (``endpointing``) as audio arrives, asks the
end-of-turn model when it says so, and decodes through the ``Recognizer``: an interim now and
then while speech goes on, a speculative decode at each pause (it stands as the final when the
pause ends the utterance), a final at each end. It yields the domain events of ``events``,
which the servicer turns into protobuf messages; it knows nothing about gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from services.runtime.audio import SPEECH_RATE, FloatAudio
from services.runtime.logging import get_logger
from services.runtime.streams import Channel, ChannelClosed, producing
from services.stt.config import StreamingSettings
from services.stt.endpointing import WINDOW, Endpointer, VadModel
from services.stt.engine import DecodeOptions, Transcript, Word
from services.stt.events import (
    SILENT_ENDS,
    CheckTurn,
    EndOfTurn,
    EndpointEvent,
    EndUtterance,
    Paused,
    Resumed,
    SessionEvent,
    SpeechEnded,
    SpeechEvent,
    SpeechStarted,
    StreamConfig,
    StreamResult,
)
from services.stt.recognizer import EOS_TO_FINAL, SPECULATIVE, Recognition, Recognizer
from services.stt.turn import TURN_DECISIONS, TURN_FALLBACKS, TURN_OVERRULED, TURN_SILENCE, TurnDetector, TurnVerdict
from services.stt.unfinished import sounds_unfinished

# The endpointer and its events stay importable from here, where tests and bench.stt take them.
__all__ = [
    "WINDOW",
    "CheckTurn",
    "EndpointEvent",
    "Endpointer",
    "Paused",
    "Resumed",
    "SpeechEnded",
    "SpeechStarted",
    "StreamSession",
]

log = get_logger(__name__)

T = TypeVar("T")


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
            vad,
            settings,
            config.end_of_speech_silence_ms or None,
            semantic=asked == "semantic" and turn is not None,
            on_overrule=TURN_OVERRULED.inc,
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
            self._emit(
                SpeechEvent(
                    "ended",
                    event.utterance,
                    event.at_sample / SPEECH_RATE,
                    self.processed_seconds,
                    voice_end_seconds=event.voice_end_sample / SPEECH_RATE,
                )
            )
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
        """A speculative decode finished (or failed: the final decodes again either way). Its
        text may overrule a "complete": see ``unfinished``."""
        if task.cancelled():
            return
        unfinished = False
        if self.settings.turn.text_veto and task.exception() is None:
            t = task.result().transcript
            unfinished = sounds_unfinished(t.text, t.language)
        try:
            for event in self.endpointer.transcript_ready(end_sample, unfinished):
                self._on_endpoint(event)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it to the client
            self._fail(exc)

    def _decision(self, ended: SpeechEnded) -> EndOfTurn:
        """What the final reports of how its utterance ended; counted in the metrics."""
        verdicts, self._pause_verdicts = self._pause_verdicts, []
        silence = ended.silence_samples / SPEECH_RATE
        TURN_DECISIONS.labels(ended.mode, ended.reason).inc()
        if ended.reason in SILENT_ENDS:
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
            overruled=ended.overruled,
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
