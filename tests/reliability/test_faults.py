"""Faults, measured: services killed with -9 and restarted mid-conversation (the
orchestrator's breakers opening and closing), breakers across an Ollama outage, slow / blackholed / reset links between the orchestrator and each service,
and model files missing at start-up. Every test records its outcome in the reliability
ledger (``python -m bench.reliability`` builds docs/RELIABILITY.md from it).

One real subprocess fleet (the containers' commands) serves the whole module, with small
models and one-sentence answers so the module stays within a few minutes on a shared CPU.
The network faults put a ``FaultProxy`` between an in-process orchestrator and that fleet.
The Ollama fallback inside the LLM service is tested in tests/llm/test_fallback.py; here the
same service runs as a subprocess across an Ollama outage and recovery.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from client.demo import DEMO_DIR
from parole.llm.v1 import llm_pb2, llm_pb2_grpc
from parole.orchestrator.v1 import orchestrator_pb2 as pb
from parole.orchestrator.v1 import orchestrator_pb2_grpc
from services.fleet import ALL, Fleet, free_port
from services.orchestrator.app import OrchestratorApp
from services.orchestrator.config import OrchestratorSettings
from services.runtime.audio import read_wav
from services.runtime.channel import ChannelSettings
from services.runtime.config import ServerSettings
from services.runtime.server import RunningServer, start_app
from services.testkit.ledger import record
from tests.e2e.driver import Session, config, final_transcript, is_kind
from tests.faultproxy import FaultProxy
from tests.llm.fake_ollama import FakeOllama

pytestmark = pytest.mark.timeout(180)

SMALL_LLM = "smollm2-135m-instruct-q4_1"
PERSONA = "Answer in one short sentence."
CANNED_EN = "Sorry, the language model is unavailable right now."  # in the LLM's canned reply, after what it heard
# The orchestrator's deadlines in the proxied tests: short, so a blackhole shows within seconds.
LLM_DEADLINE = 4.0
TTS_DEADLINE = 4.0
KEEPALIVE = (5.0, 2.0)
ORCH_BREAKER_TTL = 2.0  # the orchestrator's breakers probe a failed service again after this
RETRY_PAUSE = 0.25  # between a client's turns while a stage recovers (a degraded turn can take 10 ms)  # ping every 5 s, dead after 2 s without an answer


# --------------------------------------------------------------------------- ledger helper
@dataclass
class Outcome:
    """What one fault test saw; recorded whether the test passes or fails."""

    injected: str
    details: dict[str, Any] = field(default_factory=dict)
    lost: int = 0


@contextmanager
def fault(name: str, injected: str) -> Iterator[Outcome]:
    out = Outcome(injected)
    try:
        yield out
    except BaseException as exc:
        record("fault", name, passed=False, lost=out.lost, injected=injected, error=str(exc)[:500], **out.details)
        raise
    record("fault", name, passed=True, lost=out.lost, injected=injected, **out.details)


# --------------------------------------------------------------------------- fleet
@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """stt, llm (SmolLM2 135M, then the canned reply), tts and the orchestrator as subprocesses.
    Started from this sync fixture (the main thread) so the children die with the test run."""
    with Fleet(
        ALL,
        ports=dict.fromkeys(ALL, 0),
        metrics_ports=dict.fromkeys(ALL, 0),
        env={
            "llm": {
                "LLM_BACKENDS": '["llamacpp","canned"]',
                "LLM_LLAMACPP__MODEL": SMALL_LLM,
                "LLM_LLAMACPP__THREADS": "1",
                "LLM_MAX_TOKENS": "24",
                # Greedy: the same words every run. Sampled, SmolLM now and then answers "Say
                # hello." with one emoji, which no voice can speak, and a clean turn degrades.
                "LLM_TEMPERATURE": "0",
            },
            "orchestrator": {"ORCH_BREAKER_THRESHOLD": "3", "ORCH_BREAKER_TTL_SECONDS": str(ORCH_BREAKER_TTL)},
        },
        log_dir=tmp_path_factory.mktemp("fleet"),
        ready_timeout=300,
        stop_grace=5,
    ) as f:
        yield f


@pytest.fixture(scope="module")
def question() -> bytes:
    """The bundled recording of the question: fixed audio, heard the same way every run.
    (Piper samples its prosody anew on each synthesis, and one take in a few dozen came back
    as "the capital of friends", failing whichever test drew it.)"""
    pcm = read_wav(DEMO_DIR / "en-capital-france.wav")
    assert pcm.sample_rate == 16000
    return pcm.data


def session_config() -> pb.SessionConfig:
    return config(language="en", persona=PERSONA, feedback_tail_ms=0)


@dataclass
class Answer:
    latency: pb.TurnLatency
    errors: list[pb.StageError]
    audio_bytes: int
    seconds: float

    @property
    def clean(self) -> bool:
        return not self.errors and not self.latency.degraded_stages and self.audio_bytes > 0


async def settle(s: Session, turn_id: str, audio_bytes: int) -> None:
    """Reports playback finished so the microphone opens again (the next spoken turn is heard)."""
    if audio_bytes:
        s.playback(pb.PLAYBACK_EVENT_TYPE_FINISHED, turn_id)
        await s.wait_for(
            lambda m: m.WhichOneof("event") == "microphone" and not m.microphone.gated and m.turn_id == turn_id,
            timeout=15,
        )


async def answer_of(s: Session, start: int, began: float, timeout: float) -> Answer:
    lat = await s.wait_for(is_kind("latency"), timeout=timeout, start=start)
    msgs = [m for _, m in s.events[start:] if m.turn_id == lat.turn_id]
    errors = [m.error for m in msgs if m.WhichOneof("event") == "error"]
    audio = sum(len(m.reply_audio.audio) for m in msgs if m.WhichOneof("event") == "reply_audio")
    ans = Answer(lat.latency, errors, audio, time.monotonic() - began)
    await settle(s, lat.turn_id, audio)
    return ans


async def text_turn(s: Session, text: str = "Say hello.", timeout: float = 60) -> Answer:
    start, began = len(s.events), time.monotonic()
    s.send_text(text)
    return await answer_of(s, start, began, timeout)


async def spoken_turn(s: Session, pcm: bytes, heard_within: float = 20) -> tuple[pb.ConverseResponse, Answer]:
    start = len(s.events)
    await s.say(pcm)
    began = time.monotonic()
    heard = await s.wait_for(final_transcript, timeout=heard_within, start=start)
    return heard, await answer_of(s, start, began, 60)


def heard_question(m: pb.ConverseResponse) -> bool:
    words = set(re.sub(r"[^\w ]+", " ", m.transcript.text.lower()).split())
    return {"capital", "france"} <= words


async def speak_until_heard(s: Session, pcm: bytes, since: float, limit: float = 30) -> tuple[Answer, int]:
    """Asks the question again until the session hears it whole (after an STT outage the
    stream may reopen mid-utterance and hear only its tail); the answer and the attempts."""
    attempts = 0
    while True:
        attempts += 1
        try:
            heard, answer = await spoken_turn(s, pcm, heard_within=6)
            if heard_question(heard):
                return answer, attempts
        except AssertionError:
            pass
        assert time.monotonic() - since < limit and not s.done.is_set(), "STT never came back for this session"


def stage_errors(s: Session, stage: int, start: int = 0) -> list[pb.StageError]:
    return [m.error for _, m in s.events[start:] if m.WhichOneof("event") == "error" and m.error.stage == stage]


@pytest.fixture
async def orch(fleet: Fleet) -> AsyncIterator[orchestrator_pb2_grpc.OrchestratorServiceAsyncStub]:
    async with grpc.aio.insecure_channel(fleet.target("orchestrator")) as channel:
        yield orchestrator_pb2_grpc.OrchestratorServiceStub(channel)


async def orchestrator_breaker(fleet: Fleet, service: str) -> float | None:
    """parole_breaker_state of the orchestrator's breaker for ``service`` (0 closed, 1 open,
    2 half-open), from its /metrics; None before the breaker has been used."""
    port = next(spec.metrics_port for spec in fleet.specs if spec.name == "orchestrator")
    url = f"http://127.0.0.1:{port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    match = re.search(rf'^parole_breaker_state\{{engine="{service}",service="orchestrator"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else None


async def outage_turns(s: Session, stage: int, text: str = "Say hello.") -> tuple[list[Answer], Answer]:
    """Turns while ``stage``'s service is down: one per failure the breaker counts, each
    degraded with UNAVAILABLE from the call itself, then one the open breaker answers without
    calling. Returns both."""
    failed = []
    for _ in range(3):  # ORCH_BREAKER_THRESHOLD
        down = await text_turn(s, text)
        assert [(e.stage, e.degraded, e.code) for e in down.errors] == [(stage, True, "UNAVAILABLE")], down.errors
        assert "circuit breaker" not in down.errors[0].message
        failed.append(down)
    skipped = await text_turn(s, text)
    assert [(e.stage, e.degraded, e.code) for e in skipped.errors] == [(stage, True, "UNAVAILABLE")], skipped.errors
    assert "circuit breaker is open" in skipped.errors[0].message, skipped.errors[0].message
    return failed, skipped


async def recover(fleet: Fleet, s: Session, name: str) -> tuple[Answer, int, float, float]:
    """Restarts ``name`` and talks until a clean turn: the breaker's half-open probe reaches
    the restarted service and closes it. The clean answer, degraded turns on the way, the
    restart's and the recovery's seconds."""
    child = fleet.restart(name)
    up_at = time.monotonic()
    degraded = 0
    while not (ans := await text_turn(s)).clean:
        degraded += 1
        await asyncio.sleep(RETRY_PAUSE)
        assert time.monotonic() - up_at < 30, f"the orchestrator never used the restarted {name}"
    assert await orchestrator_breaker(fleet, name) == 0.0, "the breaker did not close after a clean turn"
    return ans, degraded, child.serving_after or 0.0, time.monotonic() - up_at


def kill(fleet: Fleet, name: str) -> float:
    process = fleet.children[name].process
    process.kill()  # SIGKILL: no grace, no goodbye
    process.wait()
    return time.monotonic()


# --------------------------------------------------------------------------- kill -9 and restart
async def test_stt_killed_mid_conversation_the_same_session_hears_again(
    fleet: Fleet, orch: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub, question: bytes
) -> None:
    with fault("kill -9 stt mid-conversation, restart", "SIGKILL to the STT process between two spoken turns") as out:
        s = Session(orch, session_config())
        heard, first = await spoken_turn(s, question)
        assert heard_question(heard) and first.clean
        killed_at = kill(fleet, "stt")
        start = len(s.events)
        await s.say(question)  # spoken while STT is dead
        err = (await s.wait_for(lambda m: m.WhichOneof("event") == "error", timeout=15, start=start)).error
        assert err.stage == pb.STAGE_STT and not err.degraded and err.code == "UNAVAILABLE", err
        assert "typed turns still work" in err.message
        # The session stays open and typed turns are answered during the outage.
        typed = await text_turn(s)
        assert typed.clean, typed
        child = fleet.restart("stt")
        up_at = time.monotonic()
        # The same session hears again once the orchestrator has reopened its STT stream
        # (reconnect backoff at most 2 s): speak until a final transcript comes back.
        again, attempts = await speak_until_heard(s, question, up_at)
        assert again.clean, again
        recovery = time.monotonic() - again.seconds - up_at
        assert len(stage_errors(s, pb.STAGE_STT)) == 1, "one StageError per outage, not one per retry"
        await s.close()
        assert s.error is None
        out.details.update(
            seen="StageError(STT, UNAVAILABLE, degraded=false) once; typed turn answered during the outage; "
            "the same session heard the next spoken question after the restart",
            restart_seconds=round(child.serving_after or 0, 2),
            recovery_seconds=round(recovery, 2),
            outage_seconds=round(time.monotonic() - killed_at, 2),
            spoken_attempts_after_restart=attempts,
        )


async def test_llm_killed_mid_conversation_degrades_breaker_opens_then_recovers(
    fleet: Fleet, orch: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub
) -> None:
    with fault("kill -9 llm mid-conversation, restart", "SIGKILL to the LLM process between two turns") as out:
        s = Session(orch, session_config())
        assert (await text_turn(s)).clean
        assert await orchestrator_breaker(fleet, "llm") == 0.0
        kill(fleet, "llm")
        failed, skipped = await outage_turns(s, pb.STAGE_LLM, "What is the capital of France?")
        for down in (*failed, skipped):  # every turn of the outage is still answered out loud
            assert CANNED_EN in down.latency.reply_text and "capital of France" in down.latency.reply_text
            assert down.audio_bytes > 0 and list(down.latency.degraded_stages) == [pb.STAGE_LLM]
        assert await orchestrator_breaker(fleet, "llm") == 1.0
        ans, degraded_after, restart, recovery = await recover(fleet, s, "llm")
        await s.close()
        assert s.error is None
        out.details.update(
            seen="every turn during the outage got the canned reply out loud + StageError(LLM, degraded); "
            "the orchestrator's LLM breaker opened after 3 (parole_breaker_state=1) and the next turn "
            f"skipped the call; after the restart its half-open probe ({ORCH_BREAKER_TTL:g} s TTL) "
            "closed it and the same session was answered by the model again",
            restart_seconds=round(restart, 2),
            recovery_seconds=round(recovery, 2),
            degraded_turns_after_restart=degraded_after,
            failed_call_seconds=round(max(d.seconds for d in failed), 2),
            skipped_call_seconds=round(skipped.seconds, 2),
            first_token_after_restart=round(ans.latency.first_token_seconds, 2),
        )


async def test_tts_killed_mid_conversation_text_only_breaker_opens_then_recovers(
    fleet: Fleet, orch: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub
) -> None:
    with fault("kill -9 tts mid-conversation, restart", "SIGKILL to the TTS process between two turns") as out:
        s = Session(orch, session_config())
        assert (await text_turn(s)).clean
        kill(fleet, "tts")
        failed, skipped = await outage_turns(s, pb.STAGE_TTS)
        for down in (*failed, skipped):  # the model's answer, as text
            assert down.audio_bytes == 0 and down.latency.reply_text
            assert CANNED_EN not in down.latency.reply_text
        assert await orchestrator_breaker(fleet, "tts") == 1.0
        _, degraded_after, restart, recovery = await recover(fleet, s, "tts")
        await s.close()
        assert s.error is None
        out.details.update(
            seen="every turn during the outage came as text only + StageError(TTS, degraded); the "
            "orchestrator's TTS breaker opened after 3 and the next turn skipped the call; after the "
            "restart its half-open probe closed it and the same session was spoken to again",
            restart_seconds=round(restart, 2),
            recovery_seconds=round(recovery, 2),
            degraded_turns_after_restart=degraded_after,
        )


async def test_orchestrator_killed_the_client_sees_unavailable_and_a_new_session_works(fleet: Fleet) -> None:
    with fault("kill -9 orchestrator mid-conversation, restart", "SIGKILL to the orchestrator process") as out:
        async with grpc.aio.insecure_channel(fleet.target("orchestrator")) as channel:
            s = Session(orchestrator_pb2_grpc.OrchestratorServiceStub(channel), session_config())
            assert (await text_turn(s)).clean
            killed_at = kill(fleet, "orchestrator")
            await asyncio.wait_for(s.done.wait(), 10)
            ended = time.monotonic() - killed_at
            assert s.error is not None and s.error.code() == grpc.StatusCode.UNAVAILABLE, s.error
        child = fleet.restart("orchestrator")
        # A client reconnects: a new channel, a new session.
        async with grpc.aio.insecure_channel(fleet.target("orchestrator")) as channel:
            s2 = Session(orchestrator_pb2_grpc.OrchestratorServiceStub(channel), session_config())
            ans = await text_turn(s2)
            assert ans.clean, ans
            await s2.close()
        out.details.update(
            seen=f"the client's stream ended with UNAVAILABLE {ended:.2f} s after the kill; "
            "a new session after the restart was answered normally",
            stream_ended_after_seconds=round(ended, 2),
            restart_seconds=round(child.serving_after or 0, 2),
            recovery_seconds=round(time.monotonic() - killed_at, 2),
        )


# --------------------------------------------------------------------------- slow and flaky links
@dataclass
class Proxied:
    """An in-process orchestrator whose links to the fleet's services go through fault proxies."""

    proxies: dict[str, FaultProxy]
    running: RunningServer
    stub: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub


@asynccontextmanager
async def proxied_orchestrator(
    fleet: Fleet, llm_deadline: float, tts_deadline: float, keepalive: tuple[float, float]
) -> AsyncIterator[Proxied]:
    proxies: dict[str, FaultProxy] = {}
    for name in ("stt", "llm", "tts"):
        host, port = fleet.target(name).rsplit(":", 1)
        proxies[name] = await FaultProxy(host, int(port)).start()
    server = ServerSettings(
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        grace_seconds=1.0,
        keepalive_time_seconds=keepalive[0],
        keepalive_timeout_seconds=keepalive[1],
    )
    settings = OrchestratorSettings(
        server=server,
        dependency_wait_seconds=10,
        llm_timeout_seconds=llm_deadline,
        tts_timeout_seconds=tts_deadline,
        **{name: ChannelSettings(target=p.target) for name, p in proxies.items()},  # type: ignore[arg-type]
    )
    running = await start_app(OrchestratorApp(settings), server)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Proxied(proxies, running, orchestrator_pb2_grpc.OrchestratorServiceStub(channel))
    finally:
        await running.stop(0)
        for p in proxies.values():
            await p.kill()


@pytest.fixture
async def proxied(fleet: Fleet) -> AsyncIterator[Proxied]:
    """Short deadlines: a blackhole shows within seconds."""
    async with proxied_orchestrator(fleet, LLM_DEADLINE, TTS_DEADLINE, KEEPALIVE) as p:
        yield p


@pytest.fixture
async def patient(fleet: Fleet) -> AsyncIterator[Proxied]:
    """Long deadlines and the default keepalive (30 s, 10 s): a 1 s round trip with data queued
    behind it slows the audio stream's flow control, and delays ping answers, a lot."""
    defaults = ServerSettings()
    keepalive = (defaults.keepalive_time_seconds, defaults.keepalive_timeout_seconds)
    async with proxied_orchestrator(fleet, 30.0, 30.0, keepalive) as p:
        yield p


def turn_point(stage: str, lat: pb.TurnLatency) -> float:
    """The latency point a stage's link delays first."""
    return {
        "stt": lat.final_transcript_seconds,
        "llm": lat.first_token_seconds,
        "tts": lat.first_audio_seconds,
    }[stage]


async def one_turn(stage: str, s: Session, question: bytes) -> Answer:
    if stage == "stt":
        return (await spoken_turn(s, question, heard_within=30))[1]
    return await text_turn(s)


@pytest.mark.parametrize("stage", ["stt", "llm", "tts"])
async def test_slow_link_the_turn_completes_later(stage: str, patient: Proxied, question: bytes) -> None:
    proxied = patient
    delay = 0.5
    with fault(f"slow link orchestrator-{stage}", f"+{delay} s per chunk each way on the {stage} link") as out:
        s = Session(proxied.stub, session_config())
        before = await one_turn(stage, s, question)
        assert before.clean, before
        proxied.proxies[stage].delay = delay
        after = await one_turn(stage, s, question)
        assert after.clean, after
        grew = turn_point(stage, after.latency) - turn_point(stage, before.latency)
        # At least the response's own crossing of the slow link; bounded: chunks are coalesced
        # while the link sleeps, so the delay does not pile up per token or per audio chunk.
        assert grew >= 0.8 * delay, (turn_point(stage, before.latency), turn_point(stage, after.latency))
        assert after.latency.last_audio_seconds < before.latency.last_audio_seconds + 20 * delay
        await s.close()
        assert s.error is None
        out.details.update(
            seen="the turn completed with no error, later",
            latency_point={"stt": "final transcript", "llm": "first token", "tts": "first audio"}[stage],
            before_seconds=round(turn_point(stage, before.latency), 2),
            after_seconds=round(turn_point(stage, after.latency), 2),
            last_audio_before=round(before.latency.last_audio_seconds, 2),
            last_audio_after=round(after.latency.last_audio_seconds, 2),
        )


@pytest.mark.parametrize("stage", ["llm", "tts"])
async def test_blackholed_link_the_deadline_fires_and_the_turn_degrades(stage: str, proxied: Proxied) -> None:
    # The TTS stream opens with the turn: its deadline spans the LLM's and its own.
    deadline = {"llm": LLM_DEADLINE, "tts": LLM_DEADLINE + TTS_DEADLINE}[stage]
    with fault(f"blackholed link orchestrator-{stage}", f"{stage} link drops every byte, connection left open") as out:
        s = Session(proxied.stub, session_config())
        assert (await text_turn(s)).clean
        proxied.proxies[stage].drop = True
        down = await text_turn(s, timeout=deadline + 30)
        expected = pb.STAGE_LLM if stage == "llm" else pb.STAGE_TTS
        # Whichever comes first ends the call: the deadline, or the keepalive ping timing out.
        assert len(down.errors) == 1, down.errors
        err = down.errors[0]
        assert (err.stage, err.degraded) == (expected, True) and err.code in ("DEADLINE_EXCEEDED", "UNAVAILABLE"), err
        if stage == "llm":
            assert CANNED_EN in down.latency.reply_text and down.audio_bytes > 0
        else:
            assert down.audio_bytes == 0 and down.latency.reply_text
        assert down.seconds < min(deadline, sum(KEEPALIVE) + 1) + 5, "bounded in time, not a hang"
        proxied.proxies[stage].drop = False
        up_at = time.monotonic()
        degraded_after = 0
        while not (await text_turn(s)).clean:
            degraded_after += 1
            await asyncio.sleep(RETRY_PAUSE)
            assert time.monotonic() - up_at < 30, f"the {stage} link never recovered"
        await s.close()
        assert s.error is None
        out.details.update(
            seen=f"StageError({stage.upper()}, {err.code}, degraded) after {down.seconds:.1f} s "
            f"(deadline {deadline:.0f} s, keepalive {KEEPALIVE[0]:.0f}+{KEEPALIVE[1]:.0f} s); "
            + ("canned reply spoken" if stage == "llm" else "answer sent as text only"),
            turn_seconds=round(down.seconds, 2),
            recovery_seconds=round(time.monotonic() - up_at, 2),
            degraded_turns_after_repair=degraded_after,
        )


async def test_blackholed_stt_link_keepalive_ends_the_stream_and_it_reconnects(
    proxied: Proxied, question: bytes
) -> None:
    bound = sum(KEEPALIVE) + 5
    with fault("blackholed link orchestrator-stt", "stt link drops every byte, connection left open") as out:
        s = Session(proxied.stub, session_config())
        heard, first = await spoken_turn(s, question)
        assert heard_question(heard) and first.clean
        proxied.proxies["stt"].drop = True
        start, dropped_at = len(s.events), time.monotonic()
        await s.say(question)
        err = (await s.wait_for(is_kind("error"), timeout=bound + 10, start=start)).error
        detected = time.monotonic() - dropped_at
        assert err.stage == pb.STAGE_STT and not err.degraded and err.code == "UNAVAILABLE", err
        assert detected < bound, f"keepalive ({KEEPALIVE[0]:.0f}+{KEEPALIVE[1]:.0f} s) should end the dead stream"
        proxied.proxies["stt"].drop = False
        up_at = time.monotonic()
        again, attempts = await speak_until_heard(s, question, up_at)
        await s.close()
        out.details.update(
            seen=f"StageError(STT, UNAVAILABLE) {detected:.1f} s after the link went dark (keepalive "
            f"{KEEPALIVE[0]:.0f} s + {KEEPALIVE[1]:.0f} s; defaults 30 + 10 s); the same session heard again after repair",
            detected_seconds=round(detected, 2),
            recovery_seconds=round(time.monotonic() - again.seconds - up_at, 2),
            spoken_attempts_after_repair=attempts,
        )


@pytest.mark.parametrize("stage", ["stt", "llm", "tts"])
async def test_reset_mid_stream_degrades_as_specified(stage: str, proxied: Proxied, question: bytes) -> None:
    with fault(f"connection reset orchestrator-{stage}", f"TCP RST on the {stage} link during a turn") as out:
        s = Session(proxied.stub, session_config())
        if stage == "stt":
            half = len(question) // 4 * 2  # whole 16-bit samples
            await s.stream_audio(question[:half])  # mid-utterance
            start = len(s.events)
            proxied.proxies["stt"].reset_after_bytes = 0
            await proxied.proxies["stt"].kill()  # RST every open connection ...
            await proxied.proxies["stt"].revive()  # ... and accept new ones at once
            proxied.proxies["stt"].reset_after_bytes = None
            await s.stream_audio(question[half:])
            err = (await s.wait_for(is_kind("error"), timeout=15, start=start)).error
            assert err.stage == pb.STAGE_STT and not err.degraded and err.code == "UNAVAILABLE", err
            reset_at = time.monotonic()
            again, attempts = await speak_until_heard(s, question, reset_at)
            assert again.clean, again
            out.details.update(
                seen="StageError(STT, UNAVAILABLE); the session reopened its STT stream and heard the next question",
                recovery_seconds=round(time.monotonic() - again.seconds - reset_at, 2),
                spoken_attempts_after_reset=attempts,
            )
        else:
            # The proxy counts the bytes each connection sent back; the next ones reset it,
            # once the answer has started flowing.
            proxied.proxies[stage].reset_after_bytes = 600 if stage == "llm" else 40_000
            down = await text_turn(s, "Tell me about Paris.", timeout=60)
            proxied.proxies[stage].reset_after_bytes = None
            expected = pb.STAGE_LLM if stage == "llm" else pb.STAGE_TTS
            assert [(e.stage, e.degraded, e.code) for e in down.errors] == [(expected, True, "UNAVAILABLE")], down
            if stage == "llm":
                reply = down.latency.reply_text
                cut = "cut short" in down.errors[0].message
                assert cut or CANNED_EN in reply
                assert down.audio_bytes > 0, "what was said (or the canned reply) is still spoken"
            else:
                assert down.latency.reply_text and CANNED_EN not in down.latency.reply_text
                cut = down.audio_bytes > 0
            up_at = time.monotonic()
            while not (await text_turn(s)).clean:
                await asyncio.sleep(RETRY_PAUSE)
                assert time.monotonic() - up_at < 30
            out.details.update(
                seen=f"StageError({stage.upper()}, UNAVAILABLE, degraded) after {down.seconds:.1f} s; "
                + (
                    ("answer cut short and spoken" if cut else "canned reply spoken")
                    if stage == "llm"
                    else ("partial audio, then text only" if cut else "text only")
                )
                + "; the next turn was clean",
                turn_seconds=round(down.seconds, 2),
                recovery_seconds=round(time.monotonic() - up_at, 2),
            )
        await s.close()
        assert s.error is None


# --------------------------------------------------------------------------- Ollama outage, breakers
OLLAMA_TTL = 2.0


@pytest.fixture(scope="module")
def ollama_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def llm_with_ollama(ollama_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A second LLM service: Ollama (through a fault proxy on ``ollama_port``), then SmolLM2,
    then the canned reply; a 2 s Ollama timeout and a 2 s breaker TTL."""
    with Fleet(
        ["llm"],
        ports={"llm": 0},
        metrics_ports={"llm": 0},
        env={
            "llm": {
                "LLM_BACKENDS": '["ollama","llamacpp","canned"]',
                "LLM_OLLAMA__HOST": f"http://127.0.0.1:{ollama_port}",
                "LLM_OLLAMA__WARM_UP": "false",
                "LLM_OLLAMA__TIMEOUT_SECONDS": "2",
                "LLM_LLAMACPP__MODEL": SMALL_LLM,
                "LLM_LLAMACPP__THREADS": "1",
                "LLM_MAX_TOKENS": "16",
                "LLM_BREAKER_THRESHOLD": "3",
                "LLM_BREAKER_TTL_SECONDS": str(OLLAMA_TTL),
            }
        },
        log_dir=tmp_path_factory.mktemp("llm-ollama"),
        ready_timeout=180,
        stop_grace=5,
    ) as f:
        yield f


async def generate(stub: llm_pb2_grpc.LlmServiceAsyncStub) -> tuple[llm_pb2.GenerationSummary, float]:
    began = time.monotonic()
    request = llm_pb2.GenerateRequest(text="Say hello.", options=llm_pb2.GenerationOptions(language="en"))
    summary = None
    async for r in stub.Generate(request, timeout=30):
        if r.WhichOneof("response") == "summary":
            summary = r.summary
    assert summary is not None
    return summary, time.monotonic() - began


async def ollama_breaker(stub: llm_pb2_grpc.LlmServiceAsyncStub, metrics_port: int | None) -> tuple[str, float | None]:
    """The Ollama breaker as ListModels and /metrics tell it."""
    models = await stub.ListModels(llm_pb2.ListModelsRequest())
    state = next(m.breaker_state for m in models.models if m.backend == "ollama")
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    match = re.search(r'^parole_breaker_state\{engine="ollama",service="llm"\} (\S+)$', text, re.M)
    return state, float(match.group(1)) if match else None


async def test_ollama_killed_breaker_opens_llamacpp_answers_breaker_closes_after_revival(
    llm_with_ollama: Fleet, ollama_port: int
) -> None:
    with fault(
        "Ollama killed and revived: breaker open, half-open probe, closed",
        "Ollama refuses connections (killed), then comes back",
    ) as out:
        fake = await FakeOllama(words=["Hello", " from", " Ollama."]).start()
        proxy = FaultProxy("127.0.0.1", fake.port)
        proxy.port = ollama_port
        await proxy.start()
        metrics = llm_with_ollama.specs[0].metrics_port
        try:
            async with grpc.aio.insecure_channel(llm_with_ollama.target("llm")) as channel:
                stub = llm_pb2_grpc.LlmServiceStub(channel)
                summary, _ = await generate(stub)
                assert summary.backend == "ollama" and summary.text == "Hello from Ollama."
                assert await ollama_breaker(stub, metrics) == ("closed", 0.0)
                await proxy.kill()  # connection refused from now on
                killed_at = time.monotonic()
                reasons = []
                for _ in range(3):
                    summary, _ = await generate(stub)
                    assert summary.backend == "llamacpp" and summary.text, summary
                    assert summary.fallbacks[0].startswith("ollama:") and "breaker" not in summary.fallbacks[0]
                    reasons.append(summary.fallbacks[0])
                assert await ollama_breaker(stub, metrics) == ("open", 1.0)
                opened_after = time.monotonic() - killed_at
                summary, skipped_in = await generate(stub)
                assert summary.backend == "llamacpp" and list(summary.fallbacks) == ["ollama: breaker open"]
                chats = len(fake.chats())
                await proxy.revive()
                revived_at = time.monotonic()
                await asyncio.sleep(OLLAMA_TTL + 0.2)
                summary, _ = await generate(stub)  # the half-open probe reaches Ollama and succeeds
                assert summary.backend == "ollama" and not summary.fallbacks, summary
                assert len(fake.chats()) == chats + 1
                assert await ollama_breaker(stub, metrics) == ("closed", 0.0)
                out.details.update(
                    seen="llamacpp answered every turn of the outage (summary.fallbacks names ollama); "
                    "breaker open after 3 failures (ListModels and parole_breaker_state=1), skipped without a call; "
                    f"the half-open probe after the {OLLAMA_TTL:.0f} s TTL reached the revived Ollama and closed it",
                    opened_after_seconds=round(opened_after, 2),
                    fallback_reason=reasons[0],
                    skipped_in_seconds=round(skipped_in, 2),
                    recovery_seconds=round(time.monotonic() - revived_at, 2),
                )
        finally:
            await proxy.kill()
            await fake.stop()


async def test_ollama_blackholed_llamacpp_answers_after_the_ollama_timeout(
    llm_with_ollama: Fleet, ollama_port: int
) -> None:
    with fault("Ollama blackholed", "Ollama's port accepts connections and answers nothing") as out:
        fake = await FakeOllama().start()
        proxy = FaultProxy("127.0.0.1", fake.port)
        proxy.port = ollama_port
        await proxy.start()
        proxy.drop = True
        try:
            async with grpc.aio.insecure_channel(llm_with_ollama.target("llm")) as channel:
                stub = llm_pb2_grpc.LlmServiceStub(channel)
                await asyncio.sleep(OLLAMA_TTL + 0.2)  # a breaker the last test left open is probing again
                summary, seconds = await generate(stub)
                assert summary.backend == "llamacpp" and summary.text, summary
                assert summary.fallbacks[0].startswith("ollama:") and "breaker" not in summary.fallbacks[0]
                assert 2.0 <= seconds < 2.0 + 10, "the Ollama timeout (2 s) bounds the wait"
                out.details.update(
                    seen=f"llamacpp answered after {seconds:.1f} s; summary.fallbacks: {summary.fallbacks[0]!r}",
                    turn_seconds=round(seconds, 2),
                )
        finally:
            await proxy.kill()
            await fake.stop()


# --------------------------------------------------------------------------- missing model files
@pytest.mark.parametrize(
    ("service", "model", "env"),
    [
        ("stt", "whisper-base", {}),
        ("llm", "qwen2.5-coder-1.5b-instruct-q4_k_m", {"LLM_BACKENDS": '["llamacpp","canned"]'}),
    ],
)
def test_missing_model_at_start_exits_4_naming_model_path_and_fix(
    service: str, model: str, env: dict[str, str], tmp_path: Path
) -> None:
    with fault(f"{service} model file missing at start-up", f"empty PAROLE_MODEL_DIR: no {model}") as out:
        prefix = service.upper()
        child_env = {
            **os.environ,
            "PAROLE_MODEL_DIR": str(tmp_path),
            f"{prefix}_SERVER__HOST": "127.0.0.1",
            f"{prefix}_SERVER__PORT": str(free_port()),
            f"{prefix}_SERVER__METRICS_PORT": str(free_port()),
            **env,
        }
        began = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", f"services.{service}"], env=child_env, capture_output=True, text=True, timeout=120
        )
        seconds = time.monotonic() - began
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        assert done.returncode == 4, (done.returncode, done.stderr[-2000:])
        assert last.startswith(f"{service}: model '{model}' at {tmp_path}/"), last
        assert f"python -m services.models assemble {model}" in last, last
        out.details.update(seen=f"exit 4 after {seconds:.1f} s: {last}", exit_code=done.returncode)


def test_missing_piper_voice_at_start_tts_serves_with_espeak_and_says_which(tmp_path: Path) -> None:
    """The TTS service's design: an absent configured voice is skipped (espeak-ng comes last),
    so it starts; the log names the voice, the path looked at and the command that fetches it."""
    from parole.tts.v1 import tts_pb2, tts_pb2_grpc

    with fault("tts voice file missing at start-up", "empty PAROLE_MODEL_DIR: no en_US-joe-medium") as out:
        models, logs = tmp_path / "models", tmp_path / "logs"
        models.mkdir()
        with (
            Fleet(
                ["tts"],
                ports={"tts": 0},
                metrics_ports={"tts": 0},
                env={"tts": {"PAROLE_MODEL_DIR": str(models)}},
                log_dir=logs,
                ready_timeout=60,
                stop_grace=5,
            ) as tts,
            grpc.insecure_channel(tts.target("tts")) as channel,
        ):
            reply = tts_pb2_grpc.TtsServiceStub(channel).Synthesize(
                tts_pb2.SynthesizeRequest(text="Hello.", config=tts_pb2.SynthesisConfig(language="en")), timeout=30
            )
            assert reply.audio.voice == "espeak-ng:en-us" and reply.audio.audio, reply.audio.voice
        warning = next((line for line in (logs / "tts.log").read_text().splitlines() if "en_US-joe-medium" in line), "")
        assert "configured voice unavailable" in warning, warning
        assert f"{models}/piper/en_US-joe-medium.onnx" in warning, warning
        assert "python -m services.models assemble en_US-joe-medium" in warning, warning
        out.details.update(
            seen="SERVING; English spoken by espeak-ng:en-us; warning: " + warning.split("error=", 1)[-1][:300]
        )
