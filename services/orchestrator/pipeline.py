"""One conversation, top to bottom: microphone → STT → LLM → TTS → speaker.

Reading order:
1. ``Conversation.run`` starts three loops and relays their messages to the client:
   ``_read_client`` (microphone audio, playback reports, interrupts, typed turns),
   ``_listen`` (one long-lived STT stream that turns audio into speech events and finals) and
   ``_answer_turns`` (one turn at a time).
2. A final transcript becomes a turn: ``_run_turn`` streams the LLM's tokens into the TTS
   stream as they arrive (``_think``) while the TTS audio goes to the client as each clause is
   ready (``_speak``): nothing waits for a whole stage.
3. ``MicGate`` keeps the assistant from hearing itself: microphone audio is dropped from the
   first answer chunk until the client has played the last one (or the audio's duration has
   elapsed, if it never says), plus a tail for the room's echo. With barge-in on, audio keeps
   flowing to STT instead, and speech during the answer cancels it.
4. Every turn ends with a ``TurnLatency`` (end of speech → final transcript → first token →
   first audio → last audio) sent to the client and to Prometheus.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import grpc
import structlog
from prometheus_client import Counter, Gauge, Histogram

from parole.audio.v1 import audio_pb2
from parole.llm.v1 import llm_pb2, llm_pb2_grpc
from parole.orchestrator.v1 import orchestrator_pb2 as pb
from parole.stt.v1 import stt_pb2, stt_pb2_grpc
from parole.tts.v1 import tts_pb2, tts_pb2_grpc
from services.orchestrator.config import OrchestratorSettings
from services.runtime.audio import PCM16_WIDTH, SPEECH_RATE, check_input_rate
from services.runtime.errors import FailedPrecondition, InvalidArgument
from services.runtime.logging import get_logger
from services.runtime.resilience import BreakerOpen, Breakers

log = get_logger(__name__)

TURN_LATENCY = Histogram(
    "parole_turn_latency_seconds",
    "Seconds from the end of the user's speech to each point of the answer.",
    ["stage"],
    buckets=(0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 30, 60),
)
TURNS = Counter("parole_turns_total", "Conversation turns by outcome.", ["outcome"])
STAGE_ERRORS = Counter("parole_stage_errors_total", "Stage failures seen by the orchestrator.", ["stage", "degraded"])
SESSIONS = Gauge("parole_sessions_active", "Conversations in progress.")
GATED_AUDIO = Counter(
    "parole_gated_audio_seconds_total", "Microphone audio ignored while the answer played (anti-feedback)."
)

SESSION_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
MAX_TEXT_TURN_CHARS = 2000
STAGE_NAMES = {pb.STAGE_STT: "stt", pb.STAGE_LLM: "llm", pb.STAGE_TTS: "tts", pb.STAGE_ORCHESTRATOR: "orchestrator"}

# Status codes that say a service (or the way to it) is down or sick: they count against its
# breaker. The others (a request it refused, a busy model, a turn cancelled by a barge-in)
# say nothing about its health.
OUTAGE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
)

CANNED = {
    "fr": "Désolé, le modèle de langage est indisponible pour le moment. Vous avez dit : {text}",
    "en": "Sorry, the language model is unavailable right now. You said: {text}",
}


@dataclass
class Stubs:
    """Clients of the three services, and the breakers of the two a turn calls (shared by
    every session: one outage opens them for all)."""

    stt: stt_pb2_grpc.SttServiceAsyncStub
    llm: llm_pb2_grpc.LlmServiceAsyncStub
    tts: tts_pb2_grpc.TtsServiceAsyncStub
    breakers: Breakers = field(default_factory=lambda: Breakers("orchestrator"))


class _Failed(NamedTuple):
    """Why a stage call failed: a status from the service, or its breaker standing open."""

    code: str
    details: str


async def _guarded(breakers: Breakers, name: str, call: Callable[[], Awaitable[None]]) -> _Failed | None:
    """Runs ``call`` under the service's breaker. Outages count against it; a breaker that
    stands open fails at once without calling. Returns what went wrong, or None."""
    try:
        async with await breakers.guard(name):
            try:
                await call()
            except grpc.aio.AioRpcError as err:
                if err.code() in OUTAGE_CODES:
                    raise
                return _Failed(err.code().name, err.details() or "")
    except BreakerOpen:
        return _Failed(
            "UNAVAILABLE",
            f"{name} service not called: its circuit breaker is open, one turn retries it every {breakers.ttl:g} s",
        )
    except grpc.aio.AioRpcError as err:
        return _Failed(err.code().name, err.details() or "")
    return None


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
        d = settings.defaults
        session_id = cfg.session_id or uuid.uuid4().hex
        if not SESSION_ID.match(session_id):
            raise InvalidArgument(
                "session_id may hold letters, digits, '-', '_' and '.', at most 128 characters",
                fields={"config.session_id": "invalid characters or length"},
            )
        language = (cfg.language or d.language).lower()
        if not re.fullmatch(r"[a-z]{2}", language):
            raise InvalidArgument(
                f"language must be an ISO 639-1 code such as 'fr' or 'en'; got {cfg.language!r}",
                fields={"config.language": "not a two-letter code"},
            )
        if cfg.input_format.encoding not in (audio_pb2.AUDIO_ENCODING_UNSPECIFIED, audio_pb2.AUDIO_ENCODING_PCM_S16LE):
            raise InvalidArgument(
                "microphone audio must be PCM S16LE", fields={"config.input_format.encoding": "use PCM_S16LE"}
            )
        if cfg.input_format.channels > 1:
            raise InvalidArgument("microphone audio must be mono", fields={"config.input_format.channels": "use 1"})
        if cfg.output_sample_rate_hz and not 8000 <= cfg.output_sample_rate_hz <= 48000:
            raise InvalidArgument(
                "output_sample_rate_hz must be between 8000 and 48000 (0: the voice's own rate)",
                fields={"config.output_sample_rate_hz": "out of range"},
            )
        if cfg.end_of_speech_silence_ms and not 100 <= cfg.end_of_speech_silence_ms <= 5000:
            raise InvalidArgument(
                "end_of_speech_silence_ms must be between 100 and 5000",
                fields={"config.end_of_speech_silence_ms": "out of range"},
            )
        if cfg.endpointing not in stt_pb2.EndpointingMode.values():
            raise InvalidArgument(
                f"endpointing {cfg.endpointing} is not an EndpointingMode; use ENDPOINTING_MODE_SEMANTIC, "
                "ENDPOINTING_MODE_SILENCE or leave it unspecified",
                fields={"config.endpointing": "unknown value"},
            )
        tail_ms = cfg.feedback_tail_ms if cfg.HasField("feedback_tail_ms") else d.feedback_tail_ms
        if tail_ms > 10_000:
            raise InvalidArgument(
                "feedback_tail_ms must be at most 10000", fields={"config.feedback_tail_ms": "too long"}
            )
        return cls(
            session_id=session_id,
            language=language,
            voice=cfg.voice or d.voices.get(language, ""),
            persona=cfg.persona,
            input_rate=check_input_rate(cfg.input_format.sample_rate_hz, "config.input_format.sample_rate_hz"),
            output_rate=cfg.output_sample_rate_hz,
            barge_in=cfg.barge_in or d.barge_in,
            feedback_tail=tail_ms / 1000,
            playback_slack=d.playback_slack_ms / 1000,
            end_of_speech_silence_ms=cfg.end_of_speech_silence_ms or d.end_of_speech_silence_ms,
            interim_results=cfg.interim_results,
            endpointing=cfg.endpointing,
        )


class MicGate:
    """When the microphone is ignored: from the first answer chunk until playback has ended
    (client report, else the audio's duration plus slack) and a tail after it."""

    def __init__(self, tail: float, slack: float) -> None:
        self.tail = tail
        self.slack = slack
        self.turn_id: str | None = None
        self._expected_end = 0.0
        self._finished_at: float | None = None
        self.changed = asyncio.Event()

    def audio_sent(self, turn_id: str, seconds: float, now: float) -> bool:
        """Accounts for an answer chunk; True when it closes the gate (first of its turn)."""
        opened = self.turn_id != turn_id
        if opened:
            self.turn_id, self._expected_end, self._finished_at = turn_id, now, None
        # The client plays chunks back to back; a chunk that arrives after the previous one
        # ended starts playing when it arrives.
        self._expected_end = max(self._expected_end, now) + seconds
        self.changed.set()
        return opened

    def playback_finished(self, turn_id: str, now: float) -> bool:
        if turn_id != self.turn_id or self._finished_at is not None:
            return False
        self._finished_at = now
        self.changed.set()
        return True

    def opens_at(self) -> float | None:
        if self.turn_id is None:
            return None
        end = self._finished_at if self._finished_at is not None else self._expected_end + self.slack
        return end + self.tail

    def closed(self, now: float) -> bool:
        at = self.opens_at()
        return at is not None and now < at

    def release(self) -> None:
        self.turn_id = None
        self.changed.set()


class AudioClock:
    """Maps positions in the STT stream (seconds of audio sent) to when that audio arrived,
    so 'end of speech' is the moment the user stopped talking, not when STT noticed."""

    def __init__(self) -> None:
        self.sent = 0.0
        self._ends: list[float] = []
        self._walls: list[float] = []

    def add(self, seconds: float, wall: float) -> None:
        self.sent += seconds
        self._ends.append(self.sent)
        self._walls.append(wall)

    def wall_at(self, position: float) -> float | None:
        i = bisect.bisect_left(self._ends, position - 1e-6)
        if not self._ends:
            return None
        return self._walls[min(i, len(self._walls) - 1)]

    def reset(self) -> None:
        self.sent = 0.0
        self._ends.clear()
        self._walls.clear()


@dataclass
class Turn:
    """A user utterance to answer."""

    turn_id: str
    text: str
    start: float
    """Wall time the user stopped speaking (or the typed text arrived)."""
    final_at: float
    """Wall time the final transcript arrived (= start for typed turns)."""
    degraded: set[pb.Stage.ValueType] = field(default_factory=set)
    timing: dict[str, float] = field(default_factory=dict)
    """Seconds from ``start`` to each point of the answer."""
    reply: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0
    sequence: int = 0
    out_rate: int = 0

    def mark(self, point: str, now: float, *, first: bool = True) -> None:
        if first:
            self.timing.setdefault(point, now - self.start)
        else:
            self.timing[point] = now - self.start


Outgoing = pb.ConverseResponse | BaseException | None


class Conversation:
    """One Converse stream."""

    def __init__(self, stubs: Stubs, settings: OrchestratorSettings, session: SessionSettings) -> None:
        self.stubs = stubs
        self.settings = settings
        self.s = session
        self.started = time.monotonic()
        self.outbox: asyncio.Queue[Outgoing] = asyncio.Queue()
        self.gate = MicGate(session.feedback_tail, session.playback_slack)
        self.clock = AudioClock()
        # Audio on its way to STT. None closes the STT stream (client finished). Bounded: if STT
        # stalls, the session errors instead of buffering without limit.
        self.mic: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=600)
        self.turns: asyncio.Queue[Turn | None] = asyncio.Queue()
        self.current: asyncio.Task[None] | None = None
        self.current_turn: Turn | None = None
        self.stt_connected = True  # until a failure says otherwise: audio queues while it connects
        self.stt_outage_reported = False
        self.client_done = False
        self.log = log.bind(session_id=session.session_id)
        self._turn_counter = 0
        self._gate_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ plumbing
    def emit(self, turn_id: str = "", **event: Any) -> None:
        self.outbox.put_nowait(
            pb.ConverseResponse(turn_id=turn_id, session_seconds=time.monotonic() - self.started, **event)
        )

    def stage_error(
        self, stage: pb.Stage.ValueType, message: str, *, degraded: bool, code: str, turn: Turn | None = None
    ) -> None:
        STAGE_ERRORS.labels(STAGE_NAMES[stage], str(degraded).lower()).inc()
        if turn is not None and degraded:
            turn.degraded.add(stage)
        self.log.warning("stage degraded" if degraded else "stage failed", stage=STAGE_NAMES[stage], reason=message)
        self.emit(
            turn.turn_id if turn else "",
            error=pb.StageError(stage=stage, message=message, degraded=degraded, code=code),  # type: ignore[arg-type]
        )

    async def run(self, requests: AsyncIterator[pb.ConverseRequest]) -> AsyncIterator[pb.ConverseResponse]:
        """The session: relays what the three loops emit until the client is done."""
        SESSIONS.inc()
        self.emit(
            session_started=pb.SessionStarted(
                session_id=self.s.session_id, language=self.s.language, voice=self.s.voice
            )
        )
        self.listener = asyncio.create_task(self._listen(), name="listen")
        tasks = [
            asyncio.create_task(self._read_client(requests), name="read-client"),
            self.listener,
            asyncio.create_task(self._answer_turns(), name="answer-turns"),
        ]
        try:
            while (item := await self.outbox.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            SESSIONS.dec()
            for t in [*tasks, self.current, self._gate_task]:
                if t is not None:
                    t.cancel()
            await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)

    # ------------------------------------------------------------------ client side
    async def _read_client(self, requests: AsyncIterator[pb.ConverseRequest]) -> None:
        try:
            async for req in requests:
                kind = req.WhichOneof("request")
                if kind == "audio":
                    await self._on_audio(req.audio)
                elif kind == "playback":
                    self._on_playback(req.playback)
                elif kind == "control":
                    if req.control.interrupt:
                        self._interrupt("interrupt")
                elif kind == "text":
                    self._on_text(req.text)
                elif kind == "config":
                    raise FailedPrecondition("the session config may only be sent once, as the first message")
                else:
                    raise InvalidArgument("empty ConverseRequest: set one of audio, playback, control or text")
            # The client closed its side: flush STT (a last final may start a turn), let the
            # turns finish, then end the response stream.
            self.client_done = True
            await self.mic.put(None)
            await self.listener
            await self.turns.put(None)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the response stream, which raises it
            self.outbox.put_nowait(exc)

    async def _on_audio(self, data: bytes) -> None:
        if len(data) % PCM16_WIDTH:
            raise InvalidArgument(
                f"microphone audio must hold whole 16-bit samples; got a chunk of {len(data)} bytes",
                fields={"audio": "odd byte count"},
            )
        now = time.monotonic()
        seconds = len(data) / PCM16_WIDTH / self.s.input_rate
        if not self.s.barge_in and self.gate.closed(now):
            GATED_AUDIO.inc(seconds)  # the client was told the microphone is gated
            return
        if not self.stt_connected:
            return  # STT is down: the client was told (StageError), and the session stays open
        self.clock.add(seconds, now)
        try:
            self.mic.put_nowait(data)
        except asyncio.QueueFull:
            raise FailedPrecondition(
                "speech recognition is not keeping up (60 s of audio queued); the session is ended to bound memory"
            ) from None

    def _on_playback(self, event: pb.PlaybackEvent) -> None:
        if event.type == pb.PLAYBACK_EVENT_TYPE_FINISHED:
            if self.gate.playback_finished(event.turn_id, time.monotonic()) and not self.s.barge_in:
                self.emit(event.turn_id, microphone=pb.MicrophoneState(gated=True, reason="tail"))
        elif event.type != pb.PLAYBACK_EVENT_TYPE_STARTED:
            raise InvalidArgument("playback.type must be STARTED or FINISHED", fields={"playback.type": "unspecified"})

    def _on_text(self, text: str) -> None:
        text = text.strip()
        if not text:
            raise InvalidArgument("a text turn must not be empty", fields={"text": "blank"})
        if len(text) > MAX_TEXT_TURN_CHARS:
            raise InvalidArgument(
                f"a text turn may hold at most {MAX_TEXT_TURN_CHARS} characters; got {len(text)}",
                fields={"text": "too long"},
            )
        now = time.monotonic()
        self._submit(text, start=now, final_at=now)

    def _submit(self, text: str, *, start: float, final_at: float) -> str:
        """Queues a turn; returns its id."""
        self._turn_counter += 1
        turn = Turn(f"{self.s.session_id}-{self._turn_counter}", text, start, final_at)
        self.turns.put_nowait(turn)
        return turn.turn_id

    def _interrupt(self, reason: str) -> None:
        """Barge-in or interrupt: cancel the answer in progress and tell the client to stop."""
        turn_id = self.current_turn.turn_id if self.current_turn else self.gate.turn_id
        if self.current is not None and not self.current.done():
            self.current.cancel()
        elif turn_id is None or not self.gate.closed(time.monotonic()):
            return  # nothing is being said or played
        self.emit(turn_id or "", stop_playback=pb.StopPlayback(turn_id=turn_id or "", reason=reason))
        self._open_gate()

    # ------------------------------------------------------------------ speech-to-text
    async def _stt_requests(self) -> AsyncIterator[stt_pb2.StreamingRecognizeRequest]:
        yield stt_pb2.StreamingRecognizeRequest(
            config=stt_pb2.RecognitionConfig(
                language=self.s.language,
                audio_format=audio_pb2.AudioFormat(
                    sample_rate_hz=self.s.input_rate, encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, channels=1
                ),
                interim_results=self.s.interim_results,
                end_of_speech_silence_ms=self.s.end_of_speech_silence_ms,
                endpointing=self.s.endpointing,
            )
        )
        while (chunk := await self.mic.get()) is not None:
            yield stt_pb2.StreamingRecognizeRequest(audio=chunk)

    async def _listen(self) -> None:
        """Keeps one STT stream open for the session, reopening it if the service drops."""
        delay = 0.25
        while True:
            self.clock.reset()
            call = self.stubs.stt.StreamingRecognize(self._stt_requests())
            try:
                await call.wait_for_connection()
                self.stt_connected, delay = True, 0.25
                async for resp in call:
                    # The outage ends when STT answers, not when it accepts a connection: a
                    # restarted STT accepts them while its models load, and rejects the stream.
                    if self.stt_outage_reported:
                        self.stt_outage_reported = False
                        self.log.info("speech recognition is back")
                    self._on_stt(resp)
                return  # the client closed its side and STT flushed its last final
            except grpc.aio.AioRpcError as err:
                self.stt_connected = False
                if not self.stt_outage_reported:  # once per outage, not once per retry
                    self.stt_outage_reported = True
                    self.stage_error(
                        pb.STAGE_STT,
                        f"speech recognition failed ({err.details()}); audio is ignored until it is back, "
                        "typed turns still work",
                        degraded=False,
                        code=err.code().name,
                    )
                if err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
                    return  # our request is wrong: retrying cannot help
            if self.client_done:
                return
            while not self.mic.empty():  # audio queued for the dead stream is stale now
                if self.mic.get_nowait() is None:
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.stt_reconnect_max_seconds)

    def _on_stt(self, resp: stt_pb2.StreamingRecognizeResponse) -> None:
        if resp.speech_event == stt_pb2.SPEECH_EVENT_TYPE_SPEECH_STARTED:
            self.emit(speech=pb.SpeechActivity(started=True))
            if self.s.barge_in:
                self._interrupt("barge_in")
        elif resp.speech_event == stt_pb2.SPEECH_EVENT_TYPE_SPEECH_ENDED:
            self.emit(speech=pb.SpeechActivity(started=False))
        elif resp.HasField("result"):
            r = resp.result
            if not r.is_final and not self.s.interim_results:
                return
            turn_id = ""
            if r.is_final and re.search(r"\w", r.transcript):  # a final with words starts a turn (not ". . .")
                now = time.monotonic()
                spoke_until = self.clock.wall_at(r.end_seconds) or now
                turn_id = self._submit(r.transcript.strip(), start=min(spoke_until, now), final_at=now)
            self.emit(
                turn_id,
                transcript=pb.Transcript(
                    text=r.transcript, is_final=r.is_final, language=r.language, confidence=r.confidence
                ),
            )

    # ------------------------------------------------------------------ turns
    async def _answer_turns(self) -> None:
        """One turn at a time; a turn cancelled by barge-in makes way for the next."""
        while (turn := await self.turns.get()) is not None:
            self.current_turn = turn
            self.current = asyncio.create_task(self._run_turn(turn), name=f"turn-{turn.turn_id}")
            # wait() (unlike await) does not raise the turn's own cancellation (a barge-in),
            # while a cancellation of this loop (the session ending) still propagates.
            await asyncio.wait({self.current})
            if not self.current.cancelled() and self.current.exception() is not None:
                raise self.current.exception()  # type: ignore[misc]
            if self.current.cancelled():
                self._finish_turn(turn, interrupted=True)
            self.current, self.current_turn = None, None
        # The client closed its side and every queued turn is answered: end the stream.
        self.outbox.put_nowait(None)

    async def _run_turn(self, turn: Turn) -> None:
        turn.mark("final_transcript", turn.final_at)
        turn.out_rate = self.s.output_rate
        structlog.contextvars.bind_contextvars(turn_id=turn.turn_id)
        self.log.debug("turn", text=turn.text)
        text_q: asyncio.Queue[str | None] = asyncio.Queue()
        await asyncio.gather(self._think(turn, text_q), self._speak(turn, text_q))
        self.emit(
            turn.turn_id,
            reply_audio=pb.ReplyAudio(
                sequence=turn.sequence, is_last=True, format=self._format(turn.out_rate or SPEECH_RATE)
            ),
        )
        self._finish_turn(turn, interrupted=False)

    async def _think(self, turn: Turn, text_q: asyncio.Queue[str | None]) -> None:
        """LLM tokens → client text and TTS input, as they arrive."""
        request = llm_pb2.GenerateRequest(
            session_id=self.s.session_id,
            text=turn.text,
            options=llm_pb2.GenerationOptions(language=self.s.language, system_prompt=self.s.persona),
        )

        async def stream() -> None:
            async for r in self.stubs.llm.Generate(request, timeout=self.settings.llm_timeout_seconds):
                if r.WhichOneof("response") == "delta" and r.delta:
                    turn.mark("first_token", time.monotonic())
                    turn.reply.append(r.delta)
                    self.emit(turn.turn_id, reply_text=pb.ReplyText(delta=r.delta))
                    text_q.put_nowait(r.delta)
                elif (
                    r.WhichOneof("response") == "summary" and r.summary.finish_reason == llm_pb2.FINISH_REASON_FALLBACK
                ):
                    self.stage_error(
                        pb.STAGE_LLM,
                        "no language model answered; a fallback reply was given",
                        degraded=True,
                        code="UNAVAILABLE",
                        turn=turn,
                    )

        try:
            failed = await _guarded(self.stubs.breakers, "llm", stream)
            if failed is not None:
                cut_short = bool(turn.reply)
                if not cut_short:  # nothing said yet: answer with the fallback reply ourselves
                    canned = CANNED.get(self.s.language, CANNED["en"]).format(text=turn.text)
                    turn.mark("first_token", time.monotonic())
                    turn.reply.append(canned)
                    self.emit(turn.turn_id, reply_text=pb.ReplyText(delta=canned))
                    text_q.put_nowait(canned)
                self.stage_error(
                    pb.STAGE_LLM,
                    f"language model service failed ({failed.details}); "
                    + ("the answer was cut short" if cut_short else "a fallback reply was given"),
                    degraded=True,
                    code=failed.code,
                    turn=turn,
                )
        finally:
            text_q.put_nowait(None)

    async def _tts_requests(
        self, text_q: asyncio.Queue[str | None]
    ) -> AsyncIterator[tts_pb2.StreamingSynthesizeRequest]:
        yield tts_pb2.StreamingSynthesizeRequest(
            config=tts_pb2.SynthesisConfig(
                voice=self.s.voice, language=self.s.language, sample_rate_hz=self.s.output_rate
            )
        )
        while (delta := await text_q.get()) is not None:
            yield tts_pb2.StreamingSynthesizeRequest(text=delta)

    async def _speak(self, turn: Turn, text_q: asyncio.Queue[str | None]) -> None:
        """TTS audio → client, clause by clause, closing the microphone gate on the first."""
        warned_voice = False

        async def stream() -> None:
            nonlocal warned_voice
            # The stream opens with the turn and is fed by the LLM, so its deadline spans the
            # LLM's too: a canned reply after an LLM timeout is still spoken.
            call = self.stubs.tts.StreamingSynthesize(
                self._tts_requests(text_q),
                timeout=self.settings.llm_timeout_seconds + self.settings.tts_timeout_seconds,
            )
            async for r in call:
                chunk = r.audio
                now = time.monotonic()
                turn.mark("first_audio", now)
                turn.out_rate = chunk.format.sample_rate_hz
                if self.gate.audio_sent(turn.turn_id, chunk.duration_seconds, now) and not self.s.barge_in:
                    self.emit(turn.turn_id, microphone=pb.MicrophoneState(gated=True, reason="playback"))
                    self._watch_gate()
                self.emit(
                    turn.turn_id,
                    reply_audio=pb.ReplyAudio(
                        audio=chunk.audio, format=chunk.format, sequence=turn.sequence, text=chunk.text
                    ),
                )
                turn.sequence += 1
                turn.audio_seconds += chunk.duration_seconds
                turn.mark("last_audio", time.monotonic(), first=False)
                if self.s.voice and chunk.voice != self.s.voice and not warned_voice:
                    warned_voice = True
                    self.stage_error(
                        pb.STAGE_TTS,
                        f"voice {self.s.voice} failed; speaking with {chunk.voice} ({chunk.engine})",
                        degraded=True,
                        code="UNAVAILABLE",
                        turn=turn,
                    )

        failed = await _guarded(self.stubs.breakers, "tts", stream)
        if failed is not None:
            # The LLM side keeps streaming text to the client; its queue is unbounded, so
            # nobody needs to drain it.
            self.stage_error(
                pb.STAGE_TTS,
                f"speech synthesis failed ({failed.details}); the answer was sent as text only",
                degraded=True,
                code=failed.code,
                turn=turn,
            )

    def _finish_turn(self, turn: Turn, *, interrupted: bool) -> None:
        outcome = "interrupted" if interrupted else ("degraded" if turn.degraded else "completed")
        TURNS.labels(outcome).inc()
        timing = turn.timing
        for stage, seconds in timing.items():
            TURN_LATENCY.labels(stage).observe(seconds)
        self.emit(
            turn.turn_id,
            latency=pb.TurnLatency(
                final_transcript_seconds=timing.get("final_transcript", 0.0),
                first_token_seconds=timing.get("first_token", 0.0),
                first_audio_seconds=timing.get("first_audio", 0.0),
                last_audio_seconds=timing.get("last_audio", 0.0),
                audio_seconds=turn.audio_seconds,
                reply_text="".join(turn.reply),
                interrupted=interrupted,
                degraded_stages=sorted(turn.degraded),  # type: ignore[arg-type]
            ),
        )
        self.log.info("turn done", outcome=outcome, **{k: round(v, 3) for k, v in timing.items()})

    # ------------------------------------------------------------------ microphone gate
    def _watch_gate(self) -> None:
        if self._gate_task is None or self._gate_task.done():
            self._gate_task = asyncio.create_task(self._gate_loop(), name="mic-gate")

    async def _gate_loop(self) -> None:
        """Opens the gate when playback (plus tail) is over, whichever way that is learnt."""
        while (at := self.gate.opens_at()) is not None:
            wait = at - time.monotonic()
            if wait <= 0:
                self._open_gate()
                return
            self.gate.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gate.changed.wait(), timeout=wait)

    def _open_gate(self) -> None:
        was = self.gate.turn_id
        self.gate.release()
        if was is not None and not self.s.barge_in:
            self.emit(was, microphone=pb.MicrophoneState(gated=False, reason="open"))

    @staticmethod
    def _format(rate: int) -> audio_pb2.AudioFormat:
        return audio_pb2.AudioFormat(sample_rate_hz=rate, encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, channels=1)


async def converse(
    stubs: Stubs,
    settings: OrchestratorSettings,
    requests: AsyncIterator[pb.ConverseRequest],
) -> AsyncIterator[pb.ConverseResponse]:
    """The Converse RPC: validates the config message, then runs the conversation."""
    try:
        first = await anext(aiter(requests))
    except StopAsyncIteration:
        raise InvalidArgument("empty stream: send a SessionConfig first") from None
    if first.WhichOneof("request") != "config":
        raise FailedPrecondition("the first message must be the session config (SessionConfig), before any audio")
    session = SessionSettings.from_config(first.config, settings)
    structlog.contextvars.bind_contextvars(session_id=session.session_id)
    async for msg in Conversation(stubs, settings, session).run(requests):
        yield msg
