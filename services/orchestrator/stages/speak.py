"""Speak: answer text → the TTS stream → answer audio, clause by clause as each is ready.
The TTS stream opens with the turn and is fed while the LLM is still thinking, so the first
clause is spoken before the answer is complete. When the TTS service fails, the answer goes
on as text only."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator

import grpc

from parole.orchestrator.v1 import orchestrator_pb2 as pb
from parole.tts.v1 import tts_pb2, tts_pb2_grpc
from services.orchestrator.guard import guarded
from services.orchestrator.turn import Turn, TurnOutput
from services.runtime.resilience import Breakers
from services.runtime.streams import Channel

PHRASE_TIMEOUT = 3.0
"""Seconds for a fixed phrase: a cache hit takes milliseconds, a first synthesis well under one
on a quiet CPU; past this the phrase is sent as text only rather than keep the person waiting."""
WARM_TIMEOUT = 60.0
"""Seconds for having a phrase cached ahead of need: nobody waits on it, and on a full machine a
first synthesis can queue behind answers for a while."""


Phrases = dict[tuple[str, str, int, str], tts_pb2.AudioChunk]
"""Fixed phrases already spoken, by (voice asked, language, output rate, text)."""


class Speak:
    """Text (from think) → TTS audio → the turn's output."""

    def __init__(
        self,
        tts: tts_pb2_grpc.TtsServiceAsyncStub,
        breakers: Breakers,
        *,
        voice: str,
        language: str,
        output_rate: int,
        timeout: float,
        phrases: Phrases | None = None,
    ) -> None:
        self.tts = tts
        self.phrases = phrases if phrases is not None else {}
        self.breakers = breakers
        self.voice = voice
        self.language = language
        self.output_rate = output_rate
        self.timeout = timeout

    async def run(self, out: TurnOutput, text: Channel[str]) -> None:
        """Speaks ``text`` until it ends; returns once it has (even when the TTS failed)."""
        failed = await guarded(self.breakers, "tts", functools.partial(self._synthesize, out, text))
        if failed is not None:
            out.degraded(
                pb.STAGE_TTS,
                f"speech synthesis failed ({failed.details}); the answer was sent as text only",
                code=failed.code,
            )
        # Whatever the TTS did, the LLM keeps streaming its text to the client and the turn
        # lasts until it is done: wait for the end of the text (already there when the TTS
        # stream read it all).
        async for _ in text:
            pass

    async def phrase(self, text: str, timeout: float = PHRASE_TIMEOUT) -> tts_pb2.AudioChunk | None:
        """A short fixed phrase spoken whole (the wait notice), kept once spoken in
        ``phrases`` (shared by the orchestrator's sessions): when it is needed the machine is
        full, and a synthesis then would queue behind answers. None when the TTS did not
        answer in time: the phrase then reaches the client as text only. Not counted against
        the TTS breaker: a notice late on a full machine says nothing of the service's health."""
        key = (self.voice, self.language, self.output_rate, text)
        if (kept := self.phrases.get(key)) is not None:
            return kept
        config = tts_pb2.SynthesisConfig(voice=self.voice, language=self.language, sample_rate_hz=self.output_rate)
        try:
            r = await self.tts.Synthesize(tts_pb2.SynthesizeRequest(text=text, config=config), timeout=timeout)
        except grpc.aio.AioRpcError:
            return None
        self.phrases[key] = r.audio
        return r.audio

    async def _synthesize(self, out: TurnOutput, text: Channel[str]) -> None:
        # The stream opens with the turn and is fed by the LLM, so its deadline spans the LLM's
        # too: the caller passes both (a canned reply after an LLM timeout is still spoken).
        call = self.tts.StreamingSynthesize(self._requests(out.turn, text), timeout=self.timeout)
        warned_voice = False
        async for r in call:
            out.turn.mark("first_tts_audio", time.monotonic())
            out.audio(r.audio)
            if self.voice and r.audio.voice != self.voice and not warned_voice:
                warned_voice = True
                out.degraded(
                    pb.STAGE_TTS,
                    f"voice {self.voice} failed; speaking with {r.audio.voice} ({r.audio.engine})",
                    code="UNAVAILABLE",
                )

    async def _requests(self, turn: Turn, text: Channel[str]) -> AsyncIterator[tts_pb2.StreamingSynthesizeRequest]:
        yield tts_pb2.StreamingSynthesizeRequest(
            config=tts_pb2.SynthesisConfig(voice=self.voice, language=self.language, sample_rate_hz=self.output_rate)
        )
        async for delta in text:
            # Taken by gRPC to write as it is yielded: the time the text went to the TTS.
            turn.mark("first_tts_text", time.monotonic())
            yield tts_pb2.StreamingSynthesizeRequest(text=delta)
