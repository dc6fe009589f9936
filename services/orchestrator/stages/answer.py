"""Answer: the turns, one at a time. Each turn runs think (LLM → text) and speak (text → TTS
→ audio) at once, joined by a channel of text, with everything it says going out through its
``TurnOutput``. An interrupt (barge-in, or the client's control message) cancels the turn in
progress and tells the client to stop playing."""

from __future__ import annotations

import asyncio
import time

import structlog

from parole.orchestrator.v1 import orchestrator_pb2 as pb
from services.orchestrator.gate import Gatekeeper
from services.orchestrator.outbox import Outbox
from services.orchestrator.stages.speak import Speak
from services.orchestrator.stages.think import Think
from services.orchestrator.turn import Turn, TurnOutput, TurnQueue
from services.runtime.streams import Channel, producing


class Answer:
    """The answering stage: ``run`` takes turns from the queue; ``interrupt`` cuts one short."""

    def __init__(
        self,
        think: Think,
        speak: Speak,
        *,
        turns: TurnQueue,
        outbox: Outbox,
        gate: Gatekeeper,
        output_rate: int,
        log: structlog.stdlib.BoundLogger,
    ) -> None:
        self.think = think
        self.speak = speak
        self.turns = turns
        self.outbox = outbox
        self.gate = gate
        self.output_rate = output_rate
        self.log = log
        self.current: asyncio.Task[None] | None = None
        self.current_turn: Turn | None = None

    async def run(self) -> None:
        """One turn at a time until the queue ends; then the session's stream ends too."""
        try:
            async for turn in self.turns.channel:
                turn.mark("turn_started", time.monotonic())
                out = TurnOutput(turn, self.outbox, self.gate)
                self.current_turn = turn
                self.current = asyncio.create_task(self.answer(turn, out), name=f"turn-{turn.turn_id}")
                # wait() (unlike await) does not raise the turn's own cancellation (a barge-in),
                # while a cancellation of this loop (the session ending) still propagates.
                await asyncio.wait({self.current})
                if self.current.cancelled():
                    self._finished(out, interrupted=True)
                elif (error := self.current.exception()) is not None:
                    raise error
                self.current, self.current_turn = None, None
        finally:
            # The session ended mid-turn (the client left, a stage failed): the turn goes too.
            if self.current is not None and not self.current.done():
                self.current.cancel()
                await asyncio.wait({self.current})
        # The client closed its side and every queued turn is answered: end the stream.
        self.outbox.close()

    async def answer(self, turn: Turn, out: TurnOutput) -> None:
        """One turn: think and speak at once, the LLM's text flowing into the TTS stream."""
        turn.out_rate = self.output_rate
        structlog.contextvars.bind_contextvars(turn_id=turn.turn_id)
        self.log.debug("turn", text=turn.text)
        # Unbounded: the text of one answer is small, and the LLM must never wait on the TTS
        # (the client gets the text as it comes even when the speech lags or has failed).
        speech: Channel[str] = Channel()
        async with producing(speech, self.think.run(turn, out, speech)):
            await self.speak.run(out, speech)
        out.end()
        self._finished(out, interrupted=False)

    def interrupt(self, reason: str) -> None:
        """Barge-in or interrupt: cancel the answer in progress and tell the client to stop."""
        turn_id = self.current_turn.turn_id if self.current_turn else self.gate.turn_id
        if self.current is not None and not self.current.done():
            self.current.cancel()
        elif turn_id is None or not self.gate.closed(time.monotonic()):
            return  # nothing is being said or played
        self.outbox.emit(turn_id or "", stop_playback=pb.StopPlayback(turn_id=turn_id or "", reason=reason))
        self.gate.open()

    def _finished(self, out: TurnOutput, *, interrupted: bool) -> None:
        outcome = out.finish(interrupted=interrupted)
        self.log.info("turn done", outcome=outcome, **{k: round(v, 3) for k, v in out.turn.timing.items()})
