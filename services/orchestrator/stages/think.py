"""Think: the user's words → the language model → answer text, piece by piece as the tokens
arrive, to the client and to the speak stage at once. When the LLM service fails before
saying anything, the answer is a canned reply (which is spoken); when it fails mid-answer,
the answer is what was said so far."""

from __future__ import annotations

import functools
import time

import grpc

from parole.llm.v1 import llm_pb2, llm_pb2_grpc
from parole.orchestrator.v1 import orchestrator_pb2 as pb
from services.llm.backends.canned import canned_reply
from services.orchestrator.guard import guarded
from services.orchestrator.turn import Turn, TurnOutput
from services.runtime.logging import get_logger
from services.runtime.resilience import Breakers
from services.runtime.streams import Channel

log = get_logger(__name__)

REMEMBER_TIMEOUT = 5.0
"""Seconds for the LLM service to record an exchange (a dictionary update)."""


class Think:
    """LLM tokens → answer text (to the client) and speech input (to the TTS stream)."""

    def __init__(
        self,
        llm: llm_pb2_grpc.LlmServiceAsyncStub,
        breakers: Breakers,
        *,
        session_id: str,
        language: str,
        persona: str,
        timeout: float,
    ) -> None:
        self.llm = llm
        self.breakers = breakers
        self.session_id = session_id
        self.language = language
        self.persona = persona
        self.timeout = timeout

    async def run(self, turn: Turn, out: TurnOutput, speech: Channel[str]) -> None:
        """Answers ``turn``: every piece of text goes to ``out`` and into ``speech``."""
        failed = await guarded(self.breakers, "llm", functools.partial(self._generate, turn, out, speech))
        if failed is None:
            return
        cut_short = bool(turn.reply)
        if not cut_short:  # nothing said yet: answer with the fallback reply ourselves (the LLM's own words)
            self._said(turn, out, speech, canned_reply(turn.text, self.language))
        out.degraded(
            pb.STAGE_LLM,
            f"language model service failed ({failed.details}); "
            + ("the answer was cut short" if cut_short else "a fallback reply was given"),
            code=failed.code,
        )

    async def _generate(self, turn: Turn, out: TurnOutput, speech: Channel[str]) -> None:
        request = llm_pb2.GenerateRequest(
            session_id=self.session_id,
            text=turn.text,
            options=llm_pb2.GenerationOptions(language=self.language, system_prompt=self.persona),
            # Answering a pause's transcript: the LLM must not remember an exchange the
            # speaker may yet make wrong by going on (``remember`` records it once it stands).
            speculative=turn.speculative,
        )
        turn.mark("llm_request", time.monotonic())
        async for r in self.llm.Generate(request, timeout=self.timeout):
            kind = r.WhichOneof("response")
            if kind == "delta" and r.delta:
                self._said(turn, out, speech, r.delta)
            elif kind == "summary" and r.summary.finish_reason == llm_pb2.FINISH_REASON_FALLBACK:
                # The LLM service's own last resort answered (its canned reply): it is spoken
                # like any answer, but the client learns no model did.
                out.degraded(pb.STAGE_LLM, "no language model answered; a fallback reply was given", code="UNAVAILABLE")
            elif kind == "summary":
                turn.answered = True

    async def remember(self, turn: Turn) -> None:
        """Records a confirmed speculative turn's exchange in the session's history, as the
        LLM service does itself for a normal turn (only a complete answer is remembered). A
        failure costs the conversation this one exchange of context, not the turn: logged."""
        if not (turn.speculative and turn.answered) or turn.merged:
            return
        request = llm_pb2.AddExchangeRequest(
            session_id=self.session_id, user=turn.text, assistant="".join(turn.reply), language=self.language
        )
        try:
            await self.llm.AddExchange(request, timeout=REMEMBER_TIMEOUT)
        except grpc.aio.AioRpcError as err:
            log.warning("the answered exchange could not be remembered", code=err.code().name, error=err.details())

    @staticmethod
    def _said(turn: Turn, out: TurnOutput, speech: Channel[str], text: str) -> None:
        turn.mark("first_token", time.monotonic())
        out.text(text)
        speech.send_nowait(text)
