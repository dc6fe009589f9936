"""A conversation: the session's settings, and ``Conversation``, which wires the stages
together and runs them for one Converse stream."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import structlog

from parole.orchestrator.v1 import orchestrator_pb2 as pb
from parole.stt.v1 import stt_pb2
from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.gate import Gatekeeper, MicGate
from services.orchestrator.guard import Stubs
from services.orchestrator.metrics import SESSIONS
from services.orchestrator.outbox import Outbox
from services.orchestrator.stages.answer import Answer
from services.orchestrator.stages.intake import Intake
from services.orchestrator.stages.listen import Listen, recognition_config
from services.orchestrator.stages.speak import Speak
from services.orchestrator.stages.think import Think
from services.orchestrator.turn import TurnQueue
from services.orchestrator.validation import check_session_config
from services.runtime.config_first import after_config, first_config
from services.runtime.errors import InvalidArgument
from services.runtime.logging import get_logger
from services.runtime.streams import producing

log = get_logger(__name__)


@dataclass
class SessionSettings:
    """A session's config with the server defaults filled in."""

    session_id: str
    language: str
    voice: str
    persona: str
    input_rate: int
    output_rate: int
    barge_in: bool
    feedback_tail: float
    playback_slack: float
    end_of_speech_silence_ms: int
    interim_results: bool
    endpointing: stt_pb2.EndpointingMode.ValueType = stt_pb2.ENDPOINTING_MODE_UNSPECIFIED
    """Passed to speech-to-text as is (unspecified: its own default)."""

    @classmethod
    def from_config(cls, cfg: pb.SessionConfig, settings: OrchestratorSettings) -> SessionSettings:
        """Checked by ``validation``; what the config leaves empty comes from ``settings.defaults``."""
        d = settings.defaults
        checked = check_session_config(cfg, d.language)
        language = checked.language
        tail_ms = d.feedback_tail_ms if checked.feedback_tail_ms is None else checked.feedback_tail_ms
        return cls(
            session_id=checked.session_id,
            language=language,
            voice=cfg.voice or d.voices.get(language, ""),
            persona=cfg.persona,
            input_rate=checked.input_rate,
            output_rate=cfg.output_sample_rate_hz,
            barge_in=cfg.barge_in or d.barge_in,
            feedback_tail=tail_ms / 1000,
            playback_slack=d.playback_slack_ms / 1000,
            end_of_speech_silence_ms=cfg.end_of_speech_silence_ms or d.end_of_speech_silence_ms,
            interim_results=cfg.interim_results,
            endpointing=cfg.endpointing,
        )


class Conversation:
    """One Converse stream: the stages of the session, wired to each other."""

    def __init__(self, stubs: Stubs, settings: OrchestratorSettings, session: SessionSettings) -> None:
        s = self.s = session
        self.log = log.bind(session_id=s.session_id)
        self.outbox = Outbox(self.log)
        self.turns = TurnQueue(s.session_id)
        # With barge-in the microphone is never ignored, so the client hears nothing of the gate.
        self.gate = Gatekeeper(
            MicGate(s.feedback_tail, s.playback_slack), announce=None if s.barge_in else self._announce_gate
        )
        think = Think(
            stubs.llm,
            stubs.breakers,
            session_id=s.session_id,
            language=s.language,
            persona=s.persona,
            timeout=settings.llm_timeout_seconds,
        )
        speak = Speak(
            stubs.tts,
            stubs.breakers,
            voice=s.voice,
            language=s.language,
            output_rate=s.output_rate,
            # The TTS stream opens with the turn and waits on the LLM's text: its deadline
            # spans the LLM's, so a canned reply after an LLM timeout is still spoken.
            timeout=settings.llm_timeout_seconds + settings.tts_timeout_seconds,
            phrases=stubs.phrases,
        )
        self.answer = Answer(
            think,
            speak,
            turns=self.turns,
            outbox=self.outbox,
            gate=self.gate,
            output_rate=s.output_rate,
            log=self.log,
            admission=stubs.admission,
            language=s.language,
            continuation=settings.continuation_seconds,
        )
        self.listen = Listen(
            stubs.stt,
            recognition_config(
                language=s.language,
                input_rate=s.input_rate,
                interim_results=s.interim_results,
                end_of_speech_silence_ms=s.end_of_speech_silence_ms,
                endpointing=s.endpointing,
                speculative_results=settings.preemptive_generation,
            ),
            outbox=self.outbox,
            turns=self.turns,
            barge_in=functools.partial(self.answer.interrupt, "barge_in") if s.barge_in else None,
            interim_results=s.interim_results,
            ahead=self.answer if settings.preemptive_generation else None,
            continuation=self.answer if settings.continuation_seconds > 0 else None,
            early=self.answer.early,
            reconnect_max=settings.stt_reconnect_max_seconds,
            log=self.log,
        )
        self.intake = Intake(
            listen=self.listen,
            gate=self.gate,
            turns=self.turns,
            interrupt=self.answer.interrupt,
            input_rate=s.input_rate,
            barge_in=s.barge_in,
        )

    async def run(self, requests: AsyncIterator[pb.ConverseRequest]) -> AsyncIterator[pb.ConverseResponse]:
        """The session: the stages run at once, each emitting into the outbox, until the
        client is done and its last turn answered (or a stage fails: the stream ends with its
        error)."""
        SESSIONS.inc()
        s = self.s
        self.outbox.emit(session_started=pb.SessionStarted(session_id=s.session_id, language=s.language, voice=s.voice))
        try:
            async with producing(
                self.outbox.channel,
                # 1. the client's messages: microphone audio (through the gate), playback
                #    reports, interrupts, typed turns
                self._take_in(requests),
                # 2. microphone audio → STT stream → speech events, transcripts, spoken turns
                self.listen.run(),
                # 3. one turn at a time: think (LLM → text) → speak (text → TTS → audio),
                #    released to the client through the turn's output
                self.answer.run(),
                # 4. the microphone reopens once the answer has played (plus the echo's tail)
                self.gate.run(),
            ) as messages:
                async for msg in messages:
                    yield msg
        finally:
            SESSIONS.dec()

    async def _take_in(self, requests: AsyncIterator[pb.ConverseRequest]) -> None:
        await self.intake.run(requests)
        # The client closed its side: STT flushes (its last final may start a turn), then no
        # more turns come, and the answer stage ends the stream once they are answered.
        self.listen.finish()
        await self.listen.stopped.wait()
        self.turns.close()

    def _announce_gate(self, turn_id: str, state: pb.MicrophoneState) -> None:
        self.outbox.emit(turn_id, microphone=state)


async def converse(
    stubs: Stubs,
    settings: OrchestratorSettings,
    requests: AsyncIterator[pb.ConverseRequest],
) -> AsyncIterator[pb.ConverseResponse]:
    """The Converse RPC: checks the config message, then runs the conversation over the
    messages after it (a second config is refused, FAILED_PRECONDITION, like a first
    message that is not one)."""
    first = await first_config(requests, "Converse", required=False)
    if first is None:
        # Still INVALID_ARGUMENT, as before the shared check: nothing was sent in the wrong
        # order, there is simply no conversation to hold.
        raise InvalidArgument("empty stream: send a SessionConfig first")
    session = SessionSettings.from_config(first.config, settings)
    structlog.contextvars.bind_contextvars(session_id=session.session_id)
    async for msg in Conversation(stubs, settings, session).run(after_config(requests, "Converse")):
        yield msg
