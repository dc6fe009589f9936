"""Stages on their own, each with fake neighbours and no server: a turn's output (where the
gate closes), think (LLM → text) with a fake stub, speak (text → audio) with a fake stub,
and listen's handling of what the STT says."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from parole.audio.v1 import audio_pb2
from parole.llm.v1 import llm_pb2
from parole.orchestrator.v1 import orchestrator_pb2 as pb
from parole.stt.v1 import stt_pb2
from parole.tts.v1 import tts_pb2
from services.orchestrator.gate import Gatekeeper, MicGate
from services.orchestrator.guard import CLIENT_WRITE_FAILED, status_of
from services.orchestrator.outbox import Outbox
from services.orchestrator.stages.listen import Listen
from services.orchestrator.stages.speak import Speak
from services.orchestrator.stages.think import Think
from services.orchestrator.turn import Turn, TurnOutput, TurnQueue
from services.runtime.logging import get_logger
from services.runtime.resilience import Breakers
from services.runtime.streams import Channel
from tests.orchestrator.fakes import final, speech_event

log = get_logger(__name__)


async def drain(outbox: Outbox) -> list[pb.ConverseResponse]:
    """What the outbox holds now (the session's stream would send it)."""
    return [await outbox.channel.receive() for _ in range(outbox.channel.qsize())]


@dataclass
class Wiring:
    """One turn's neighbours: the outbox, the gate (and what it announced), the output."""

    outbox: Outbox = field(default_factory=lambda: Outbox(log))
    announced: list[tuple[str, bool, str]] = field(default_factory=list)
    gate: Gatekeeper = field(init=False)
    turn: Turn = field(init=False)
    out: TurnOutput = field(init=False)

    def __post_init__(self) -> None:
        self.gate = Gatekeeper(MicGate(tail=0.3, slack=0.5), announce=self._announce)
        now = time.monotonic()
        self.turn = Turn("s-1", "What is the capital of France?", start=now, final_at=now)
        self.out = TurnOutput(self.turn, self.outbox, self.gate)

    def _announce(self, turn_id: str, state: pb.MicrophoneState) -> None:
        # As the session does: the client is told through the same outbox.
        self.announced.append((turn_id, state.gated, state.reason))
        self.outbox.emit(turn_id, microphone=state)


def chunk(seconds: float, text: str = "Paris.", voice: str = "v") -> tts_pb2.AudioChunk:
    samples = int(16000 * seconds)
    return tts_pb2.AudioChunk(
        audio=b"\0\0" * samples,
        format=audio_pb2.AudioFormat(sample_rate_hz=16000, encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, channels=1),
        text=text,
        voice=voice,
        engine="fake",
        duration_seconds=seconds,
    )


async def test_the_gate_closes_when_answer_audio_is_released_not_on_text() -> None:
    w = Wiring()
    w.out.text("Paris.")
    assert not w.gate.closed(time.monotonic()) and not w.announced
    w.out.audio(chunk(1.0))
    assert w.gate.closed(time.monotonic()) and w.announced == [("s-1", True, "playback")]
    w.out.audio(chunk(1.0))
    assert len(w.announced) == 1  # only the turn's first chunk closes it
    # The client was told the microphone is gated before it got the audio.
    assert [m.WhichOneof("event") for m in await drain(w.outbox)] == [
        "reply_text",
        "microphone",
        "reply_audio",
        "reply_audio",
    ]
    assert w.turn.audio_seconds == 2.0 and "first_audio" in w.turn.timing and "last_audio" in w.turn.timing


async def test_a_turn_record_carries_its_times_and_outcome() -> None:
    w = Wiring()
    w.turn.mark("first_token", w.turn.start + 0.2)
    w.out.text("Paris.")
    w.out.degraded(pb.STAGE_TTS, "no voice", code="UNAVAILABLE")
    w.out.end()
    assert w.out.finish(interrupted=False) == "degraded"
    *_, end, record = await drain(w.outbox)
    assert end.reply_audio.is_last and end.reply_audio.sequence == 0
    lat = record.latency
    assert lat.first_token_seconds == pytest.approx(0.2) and lat.reply_text == "Paris."
    assert list(lat.degraded_stages) == [pb.STAGE_TTS] and not lat.interrupted
    assert [m.point for m in lat.marks] == ["first_token"] and lat.marks[0].seconds == pytest.approx(0.2)


async def test_marks_come_in_pipeline_order_whatever_order_they_were_taken() -> None:
    w = Wiring()
    for point, seconds in [("first_audio", 0.9), ("new_point", 1.0), ("turn_started", 0.1), ("llm_request", 0.2)]:
        w.turn.mark(point, w.turn.start + seconds)
    w.out.finish(interrupted=True)
    record = (await drain(w.outbox))[-1].latency
    assert [m.point for m in record.marks] == ["turn_started", "llm_request", "first_audio", "new_point"]
    assert record.interrupted


class FakeLlmStub:
    """Stands in for the LLM stub: answers with ``pieces``, then fails with ``error``."""

    def __init__(self, pieces: Sequence[str], error: grpc.StatusCode | None = None) -> None:
        self.pieces = pieces
        self.error = error
        self.requests: list[llm_pb2.GenerateRequest] = []

    def Generate(self, request: llm_pb2.GenerateRequest, timeout: float | None = None) -> AsyncIterator[Any]:
        self.requests.append(request)
        return self._stream()

    async def _stream(self) -> AsyncIterator[llm_pb2.GenerateResponse]:
        for piece in self.pieces:
            yield llm_pb2.GenerateResponse(delta=piece)
        if self.error is not None:
            raise grpc.aio.AioRpcError(self.error, grpc.aio.Metadata(), grpc.aio.Metadata(), details="link reset")


def think_with(stub: FakeLlmStub) -> Think:
    return Think(
        stub,  # type: ignore[arg-type]
        Breakers("test-think"),
        session_id="s",
        language="fr",
        persona="",
        timeout=5,
    )


async def test_think_sends_each_piece_to_the_client_and_to_speech() -> None:
    w, speech = Wiring(), Channel[str]()
    stub = FakeLlmStub(["Paris ", "est la capitale."])
    await think_with(stub).run(w.turn, w.out, speech)
    assert speech.qsize() == 2  # both pieces wait for the TTS stream
    assert [m.reply_text.delta for m in await drain(w.outbox)] == ["Paris ", "est la capitale."]
    assert stub.requests[0].options.language == "fr" and not w.turn.degraded


async def test_think_failing_before_any_word_says_the_canned_reply_in_the_session_language() -> None:
    w, speech = Wiring(), Channel[str]()
    await think_with(FakeLlmStub([], grpc.StatusCode.UNAVAILABLE)).run(w.turn, w.out, speech)
    canned = await speech.receive()
    assert "Désolé" in canned and w.turn.text in canned  # the LLM service's own wording (one definition)
    events = await drain(w.outbox)
    assert [e.WhichOneof("event") for e in events] == ["reply_text", "error"]
    assert "fallback reply" in events[1].error.message and w.turn.degraded == {pb.STAGE_LLM}


async def test_think_failing_mid_answer_keeps_what_was_said() -> None:
    w, speech = Wiring(), Channel[str]()
    await think_with(FakeLlmStub(["Paris "], grpc.StatusCode.UNAVAILABLE)).run(w.turn, w.out, speech)
    assert w.turn.reply == ["Paris "] and await speech.receive() == "Paris " and speech.qsize() == 0
    assert "cut short" in (await drain(w.outbox))[-1].error.message


def test_a_request_stream_broken_under_the_call_is_unavailable_not_internal() -> None:
    """gRPC ends a call whose request could not be written (the connection was reset) with its
    own INTERNAL; the orchestrator reports the way to the service as down, and keeps a
    service's own INTERNAL as it is."""

    def err(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)

    assert status_of(err(grpc.StatusCode.INTERNAL, CLIENT_WRITE_FAILED)) == grpc.StatusCode.UNAVAILABLE
    assert status_of(err(grpc.StatusCode.INTERNAL, "decoder crashed")) == grpc.StatusCode.INTERNAL
    assert status_of(err(grpc.StatusCode.UNAVAILABLE, "reset")) == grpc.StatusCode.UNAVAILABLE


class FakeTtsStub:
    """Stands in for the TTS stub: one chunk per piece of text, spoken by ``voice``."""

    def __init__(self, voice: str) -> None:
        self.voice = voice
        self.config: tts_pb2.SynthesisConfig | None = None

    def StreamingSynthesize(self, requests: AsyncIterator[Any], timeout: float | None = None) -> AsyncIterator[Any]:
        return self._stream(requests)

    async def _stream(self, requests: AsyncIterator[Any]) -> AsyncIterator[tts_pb2.StreamingSynthesizeResponse]:
        async for request in requests:
            if request.WhichOneof("request") == "config":
                self.config = request.config
            else:
                yield tts_pb2.StreamingSynthesizeResponse(audio=chunk(0.5, request.text, self.voice))


async def test_speak_turns_text_into_released_audio_and_reports_a_fallback_voice_once() -> None:
    w, text = Wiring(), Channel[str]()
    stub = FakeTtsStub(voice="espeak-fr")
    speak = Speak(stub, Breakers("test-speak"), voice="fr_FR-siwis-medium", language="fr", output_rate=0, timeout=5)  # type: ignore[arg-type]
    for piece in ("Paris est ", "la capitale."):
        text.send_nowait(piece)
    text.close()
    await speak.run(w.out, text)
    assert stub.config is not None and stub.config.voice == "fr_FR-siwis-medium"
    kinds = [m.WhichOneof("event") for m in await drain(w.outbox)]
    assert kinds == ["microphone", "reply_audio", "error", "reply_audio"]
    assert w.turn.audio_seconds == 1.0 and w.turn.degraded == {pb.STAGE_TTS}


def listen_with(outbox: Outbox, turns: TurnQueue, barged: list[str]) -> Listen:
    return Listen(
        None,  # type: ignore[arg-type]  # heard() never calls the STT
        stt_pb2.RecognitionConfig(),
        outbox=outbox,
        turns=turns,
        barge_in=lambda: barged.append("barge_in"),
        interim_results=False,
        reconnect_max=1,
        log=log,
    )


async def test_listen_answers_finals_with_words_and_shows_every_transcript() -> None:
    outbox, turns, barged = Outbox(log), TurnQueue("s"), list[str]()
    listen = listen_with(outbox, turns, barged)
    listen.heard(speech_event(True))
    assert barged == ["barge_in"]
    listen.heard(final(". . ."))  # Whisper's transcript of a cough: shown, not answered
    listen.heard(final(""))
    interim = stt_pb2.StreamingRecognizeResponse(result=stt_pb2.RecognitionResult(transcript="hel", is_final=False))
    listen.heard(interim)  # interim results off: not shown
    assert turns.channel.qsize() == 0
    listen.heard(final(" hello "))
    turn = await turns.channel.receive()
    assert turn.text == "hello" and turn.turn_id == "s-1"
    shown = [(m.transcript.text, m.turn_id) for m in await drain(outbox) if m.WhichOneof("event") == "transcript"]
    # Every final is shown to the client; only the one with words carries a turn id.
    assert shown == [(". . .", ""), ("", ""), (" hello ", "s-1")]


async def test_listen_drops_audio_while_the_stt_is_down_and_bounds_its_buffer() -> None:
    from services.runtime.errors import FailedPrecondition

    listen = listen_with(Outbox(log), TurnQueue("s"), [])
    listen.connected = False
    listen.feed(b"\0\0" * 1600, 0.1, time.monotonic())
    assert listen.mic.qsize() == 0 and listen.clock.sent == 0
    listen.connected = True
    for _ in range(listen.mic.maxsize):
        listen.feed(b"\0\0" * 1600, 0.1, time.monotonic())
    with pytest.raises(FailedPrecondition, match="not keeping up"):
        listen.feed(b"\0\0" * 1600, 0.1, time.monotonic())
