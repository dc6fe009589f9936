"""Listen: microphone audio → the STT stream → speech events, transcripts and spoken turns.

One STT stream stays open for the whole session (the STT service finds where each utterance
ends); it is reopened if the service drops, and while it is down microphone audio is
dropped (the client is told once) and typed turns still work. A final transcript with words
in it becomes a turn, timed from when the user stopped speaking (``AudioClock``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

import grpc
import structlog

from parole.audio.v1 import audio_pb2
from parole.orchestrator.v1 import orchestrator_pb2 as pb
from parole.stt.v1 import stt_pb2, stt_pb2_grpc
from services.orchestrator.gate import AudioClock
from services.orchestrator.guard import status_of
from services.orchestrator.outbox import Outbox
from services.orchestrator.stages.early import EarlyNotice
from services.orchestrator.turn import Turn, TurnQueue
from services.runtime.errors import FailedPrecondition
from services.runtime.streams import Channel, ChannelFull, pump

RETRY_DELAY = 0.25
"""First pause before reopening a broken STT stream; it doubles up to ``reconnect_max``."""
MIC_BUFFER_CHUNKS = 600
"""Microphone chunks (~100 ms each: 60 s) that may wait for the STT stream. Bounded: if STT
stalls, the session errors instead of buffering without limit."""


class Ahead(Protocol):
    """Who answers ahead on a pause's transcript (the answer stage)."""

    def speculate(self, text: str, *, start: float, heard_at: float) -> None: ...

    def withdraw(self) -> None: ...


class Continuation(Protocol):
    """Who holds a turn's answer when its speaker resumes right after it (the answer stage)."""

    def hold(self, now: float) -> bool: ...

    def merge(self) -> str | None: ...

    def release(self) -> None: ...


@dataclass
class _Heard:
    """A final transcript with words, on its way to becoming a turn."""

    text: str
    start: float
    final_at: float
    ended_at: float | None
    reserved: Turn | None = None
    """The turn that already said "one moment" for these words (``EarlyNotice``)."""


class Listen:
    """The session's speech recognition: ``feed`` takes microphone audio, ``run`` is the stage."""

    def __init__(
        self,
        stt: stt_pb2_grpc.SttServiceAsyncStub,
        config: stt_pb2.RecognitionConfig,
        *,
        outbox: Outbox,
        turns: TurnQueue,
        barge_in: Callable[[], None] | None,
        interim_results: bool,
        ahead: Ahead | None = None,
        continuation: Continuation | None = None,
        early: EarlyNotice | None = None,
        reconnect_max: float,
        log: structlog.stdlib.BoundLogger,
    ) -> None:
        self.stt = stt
        self.config = config
        self.outbox = outbox
        self.turns = turns
        self.barge_in = barge_in
        self.interim_results = interim_results
        self.ahead = ahead
        self.continuation = continuation
        self.early = early
        self.reconnect_max = reconnect_max
        self.log = log
        # Audio, and the client's end-of-utterance marks in their place among it.
        self.mic: Channel[bytes | None] = Channel(MIC_BUFFER_CHUNKS)
        self.clock = AudioClock()
        # When each SPEECH_ENDED arrived whose final has not yet: the STT sends an utterance's
        # end before decoding its final, and its finals in order.
        self.ended_at: deque[float] = deque()
        self.ends = self.finals = self.started_after = 0
        """Utterance ends and finals seen on this stream (one final per end, in order), and
        the ends seen when speech last started: the speaker went on after final ``n`` if
        ``started_after >= n``."""
        self.pending: _Heard | None = None
        """A final whose speaker was already going on when it came (see ``heard``)."""
        self.connected = True  # until a failure says otherwise: audio queues while it connects
        self._retry_delay = RETRY_DELAY
        self.outage_reported = False
        self.stopped = asyncio.Event()

    def feed(self, pcm: bytes, seconds: float, now: float) -> None:
        """Microphone audio that passed the gate, on its way to STT."""
        if not self.connected:
            return  # STT is down: the client was told (StageError), and the session stays open
        self.clock.add(seconds, now)
        try:
            self.mic.send_nowait(pcm)
        except ChannelFull:
            raise FailedPrecondition(
                "speech recognition is not keeping up (60 s of audio queued); the session is ended to bound memory"
            ) from None

    def end_utterance(self) -> None:
        """The client says the user has finished (push-to-talk released, a Realtime commit):
        the STT ends the utterance in progress after the audio sent before this."""
        if self.connected:
            try:
                self.mic.send_nowait(None)
            except ChannelFull:
                raise FailedPrecondition(
                    "speech recognition is not keeping up (60 s of audio queued); the session is ended to bound memory"
                ) from None

    def finish(self) -> None:
        """The client closed its side: STT flushes its last final, then the stream ends."""
        self.mic.close()

    async def run(self) -> None:
        """Keeps one STT stream open for the session, reopening it if the service drops."""
        try:
            await self._listen()
        finally:
            self._release()
            self.stopped.set()

    def _release(self) -> None:
        """No final will come to say whether a held answer, or a final kept back, was
        continued: the answer goes out, the final becomes a turn."""
        if self.continuation is not None:
            self.continuation.release()
        if self.pending is not None:
            self._submit(self.pending)
        if self.early is not None:
            self.early.forget()

    async def _listen(self) -> None:
        while True:
            self.clock.reset()
            self.ended_at.clear()
            self.ends = self.finals = self.started_after = 0
            # Each stream reads the microphone through a pump of its own. When the stream
            # breaks, gRPC keeps reading its request stream (a dead call's reader is not
            # cancelled): leaving the block abandons the pump's channel, which ends that
            # reader instead of letting it swallow a chunk of the next stream's audio.
            async with pump(self.mic, maxsize=1) as audio:
                try:
                    await self._recognize(audio)
                    return  # the client closed its side and STT flushed its last final
                except grpc.aio.AioRpcError as err:
                    self.connected = False
                    self._release()
                    if not self.outage_reported:  # once per outage, not once per retry
                        self.outage_reported = True
                        self.outbox.stage_error(
                            pb.STAGE_STT,
                            f"speech recognition failed ({err.details()}); audio is ignored until it is back, "
                            "typed turns still work",
                            degraded=False,
                            code=status_of(err).name,
                        )
                    if err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
                        return  # our request is wrong: retrying cannot help
            self.mic.clear()  # audio queued for the dead stream is stale now
            if self.mic.closed:
                return  # the client is done: nothing more to hear
            await asyncio.sleep(self._retry_delay)
            self._retry_delay = min(self._retry_delay * 2, self.reconnect_max)

    async def _recognize(self, audio: Channel[bytes | None]) -> None:
        """One STT stream, until it ends (the client is done) or fails."""
        call = self.stt.StreamingRecognize(self._requests(audio))
        await call.wait_for_connection()
        self.connected, self._retry_delay = True, RETRY_DELAY
        async for resp in call:
            # The outage ends when STT answers, not when it accepts a connection: a
            # restarted STT accepts them while its models load, and rejects the stream.
            if self.outage_reported:
                self.outage_reported = False
                self.log.info("speech recognition is back")
            self.heard(resp)

    async def _requests(self, audio: Channel[bytes | None]) -> AsyncIterator[stt_pb2.StreamingRecognizeRequest]:
        yield stt_pb2.StreamingRecognizeRequest(config=self.config)
        async for chunk in audio:
            if chunk is None:
                yield stt_pb2.StreamingRecognizeRequest(end_utterance=stt_pb2.EndUtterance())
            else:
                yield stt_pb2.StreamingRecognizeRequest(audio=chunk)

    def heard(self, resp: stt_pb2.StreamingRecognizeResponse) -> None:
        """One message of the STT stream: speech started or ended, or a transcript."""
        if resp.speech_event == stt_pb2.SPEECH_EVENT_TYPE_SPEECH_STARTED:
            self.started_after = self.ends
            if self.early is not None:
                self.early.resumed()
            self.outbox.emit(speech=pb.SpeechActivity(started=True))
            # Right after a turn whose answer is not heard yet, it may be the same sentence
            # going on: the answer is held rather than cut (nothing was played to cut).
            held = self.continuation is not None and self.continuation.hold(time.monotonic())
            if self.barge_in is not None and not held:
                self.barge_in()
        elif resp.speech_event == stt_pb2.SPEECH_EVENT_TYPE_SPEECH_ENDED:
            self.ends += 1
            now = time.monotonic()
            self.ended_at.append(now)
            if self.early is not None:
                spoke_until = self.clock.wall_at(resp.voice_end_seconds) if resp.voice_end_seconds else None
                self.early.expect(self.ends, min(spoke_until or now, now))
            self.outbox.emit(speech=pb.SpeechActivity(started=False))
        elif resp.speech_event == stt_pb2.SPEECH_EVENT_TYPE_SPEECH_RESUMED:
            if self.ahead is not None:
                self.ahead.withdraw()
        elif resp.HasField("result") and resp.result.speculative:
            r = resp.result
            if self.ahead is not None and re.search(r"\w", r.transcript):
                now = time.monotonic()
                spoke_until = self.clock.wall_at(r.end_seconds) or now
                text = self._joined(r.transcript)
                self.ahead.speculate(text, start=min(spoke_until, now), heard_at=now)
            if self.interim_results:  # for the client it is one more interim transcript
                self.outbox.emit(
                    transcript=pb.Transcript(
                        text=r.transcript, is_final=False, language=r.language, confidence=r.confidence
                    )
                )
        elif resp.HasField("result"):
            r = resp.result
            ended_at = self.ended_at.popleft() if r.is_final and self.ended_at else None
            if not r.is_final and not self.interim_results:
                return
            turn_id, text = "", r.transcript
            self.finals += r.is_final
            reserved = self.early.claim(self.finals) if r.is_final and self.early is not None else None
            if r.is_final and re.search(r"\w", r.transcript):  # a final with words starts a turn (not ". . .")
                # The words after a pause that continue a held turn, or a final kept back: one
                # turn with all of them.
                before = self.continuation.merge() if self.continuation is not None else None
                if before or self.pending:
                    text = self._joined(r.transcript, before)
                if self.pending is not None and self.pending.reserved is not None:
                    reserved, unused = self.pending.reserved, reserved  # the first notice stands
                    if unused is not None and self.early is not None:
                        self.early.unused(unused)
                self.pending = None
                now = time.monotonic()
                spoke_until = self.clock.wall_at(r.end_seconds) or now
                heard = _Heard(text.strip(), min(spoke_until, now), now, ended_at, reserved)
                if self.continuation is not None and self.started_after >= self.finals:
                    # The speaker went on before this final came (its decode took longer than
                    # their pause): it waits for what they say next rather than be answered alone.
                    self.pending = heard
                else:
                    turn_id = self._submit(heard)
            elif r.is_final:
                if reserved is not None and self.early is not None:
                    self.early.unused(reserved)  # it said "one moment" for a cough
                self._release()  # the speech that resumed was not words
            self.outbox.emit(
                turn_id,
                transcript=pb.Transcript(text=text, is_final=r.is_final, language=r.language, confidence=r.confidence),
            )

    def _joined(self, transcript: str, before: str | None = None) -> str:
        """``transcript`` after the words it continues (a held turn's, a final kept back)."""
        parts = [p for p in (before, self.pending.text if self.pending else None, transcript.strip()) if p]
        return " ".join(parts)

    def _submit(self, heard: _Heard) -> str:
        self.pending = None
        turn = self.turns.submit(
            heard.text,
            start=heard.start,
            final_at=heard.final_at,
            end_of_turn_at=heard.ended_at,
            spoken=True,
            reserved=heard.reserved,
        )
        return turn.turn_id


def recognition_config(
    *,
    language: str,
    input_rate: int,
    interim_results: bool,
    end_of_speech_silence_ms: int,
    endpointing: stt_pb2.EndpointingMode.ValueType = stt_pb2.ENDPOINTING_MODE_UNSPECIFIED,
    speculative_results: bool = False,
) -> stt_pb2.RecognitionConfig:
    """The STT stream's config for a session."""
    return stt_pb2.RecognitionConfig(
        language=language,
        audio_format=audio_pb2.AudioFormat(
            sample_rate_hz=input_rate, encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, channels=1
        ),
        interim_results=interim_results,
        end_of_speech_silence_ms=end_of_speech_silence_ms,
        endpointing=endpointing,
        speculative_results=speculative_results,
    )
