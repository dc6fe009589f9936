"""Intake: the client's messages. Microphone audio goes through the gate to listen (or is
dropped while the answer plays), playback reports go to the gate, an interrupt cuts the
answer, an end of turn ends the utterance in progress at once, and typed text becomes a turn
as if it had been spoken."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from parole.orchestrator.v1 import orchestrator_pb2 as pb
from services.orchestrator.gate import Gatekeeper
from services.orchestrator.metrics import GATED_AUDIO
from services.orchestrator.stages.listen import Listen
from services.orchestrator.turn import TurnQueue
from services.orchestrator.validation import check_audio, check_control, check_kind, check_playback, check_text_turn
from services.runtime.audio import PCM16_WIDTH


class Intake:
    """Reads the client's request stream until it half-closes."""

    def __init__(
        self,
        *,
        listen: Listen,
        gate: Gatekeeper,
        turns: TurnQueue,
        interrupt: Callable[[str], None],
        input_rate: int,
        barge_in: bool,
    ) -> None:
        self.listen = listen
        self.gate = gate
        self.turns = turns
        self.interrupt = interrupt
        self.input_rate = input_rate
        self.barge_in = barge_in

    async def run(self, requests: AsyncIterator[pb.ConverseRequest]) -> None:
        """Every message after the config (``after_config`` refuses a second one); a bad one
        ends the session with its status."""
        async for req in requests:
            kind = check_kind(req)
            if kind == "audio":
                self.audio(req.audio)
            elif kind == "playback":
                self.playback(req.playback)
            elif kind == "control":
                self.control(req.control)
            elif kind == "text":
                self.text(req.text)

    def audio(self, data: bytes) -> None:
        check_audio(data)
        now = time.monotonic()
        seconds = len(data) / PCM16_WIDTH / self.input_rate
        if not self.barge_in and self.gate.closed(now):
            GATED_AUDIO.inc(seconds)  # the client was told the microphone is gated
            return
        self.listen.feed(data, seconds, now)

    def control(self, control: pb.Control) -> None:
        check_control(control)
        if control.interrupt:
            self.interrupt("interrupt")
        if control.end_of_turn:
            self.listen.end_utterance()

    def playback(self, event: pb.PlaybackEvent) -> None:
        check_playback(event)
        if event.type == pb.PLAYBACK_EVENT_TYPE_FINISHED:
            self.gate.playback_finished(event.turn_id, time.monotonic())

    def text(self, text: str) -> None:
        text = check_text_turn(text)
        now = time.monotonic()
        self.turns.submit(text, start=now, final_at=now)
