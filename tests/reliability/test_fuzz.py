"""Bad input: property-based fuzzing of every RPC of the four services, and of audio bytes.

The services run in this process on real models (Whisper base, SmolLM2 135M, Piper joe and
espeak-ng, the orchestrator over them). Messages come from strategies derived from the
protobuf descriptors (``protofuzz``). Every call must end OK or with a status that names the
caller's mistake (INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND, RESOURCE_EXHAUSTED,
OUT_OF_RANGE): never INTERNAL or UNKNOWN, and never hang. After each target the service must
still be SERVING and answer a real call; over the whole module resident memory must stay
bounded. Each target records what it tried in the reliability ledger.
"""

from __future__ import annotations

import asyncio
import math
import random
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from parole.audio.v1 import audio_pb2
from parole.llm.v1 import llm_pb2, llm_pb2_grpc
from parole.orchestrator.v1 import orchestrator_pb2 as orch_pb2
from parole.orchestrator.v1 import orchestrator_pb2_grpc
from parole.stt.v1 import stt_pb2, stt_pb2_grpc
from parole.tts.v1 import tts_pb2, tts_pb2_grpc
from services.llm.app import build as build_llm
from services.llm.config import LlmSettings
from services.orchestrator.app import OrchestratorApp
from services.orchestrator.config import OrchestratorSettings
from services.runtime import healthcheck
from services.runtime.channel import ChannelSettings
from services.runtime.config import ServerSettings
from services.runtime.server import RunningServer, start_app
from services.stt.app import SttApp
from services.stt.config import SttSettings
from services.testkit.ledger import record
from services.tts.app import build as build_tts
from services.tts.config import TtsSettings
from tests.reliability.protofuzz import (
    BATCH,
    Check,
    Tally,
    fuzz_examples,
    message,
    outcome,
    rss_bytes,
    run_fuzz,
    server_failures,
    sync_outcome,
    text_strategy,
)

CALL_TIMEOUT = 60.0
RSS_GROWTH_LIMIT = 150 * 1024 * 1024
RATE = 16000
PCM = audio_pb2.AudioFormat(sample_rate_hz=RATE, encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, channels=1)
VOICE = "en_US-joe-medium"


def local() -> ServerSettings:
    return ServerSettings(host="127.0.0.1", port=0, metrics_port=None, grace_seconds=1.0)


def tone(seconds: float, freq: float = 440.0, amp: int = 8000) -> bytes:
    n = int(seconds * RATE)
    return struct.pack(f"<{n}h", *(int(amp * math.sin(2 * math.pi * freq * i / RATE)) for i in range(n)))


def _random_bytes(t: tuple[int, random.Random]) -> bytes:
    return t[1].randbytes(t[0])


def _square(t: tuple[int, int, int]) -> bytes:
    period, n, level = t
    return b"".join(struct.pack("<h", level if (i // period) % 2 else -level - 1) for i in range(n))


def pcm() -> st.SearchStrategy[bytes]:
    """Audio bytes: random noise of any length (odd ones too), full-scale DC, square waves at
    the int16 extremes, silence, and any of those cut to an odd number of bytes."""
    base = st.one_of(
        st.tuples(st.integers(0, 2 * RATE + 1), st.randoms(use_true_random=False)).map(_random_bytes),
        st.tuples(st.sampled_from([-32768, 32767, -1]), st.integers(0, RATE)).map(
            lambda t: struct.pack("<h", t[0]) * t[1]
        ),
        st.tuples(st.integers(1, 400), st.integers(0, RATE), st.sampled_from([32767, 1, 12000])).map(_square),
        st.integers(0, 2 * RATE).map(lambda n: b"\x00" * n),
        st.binary(max_size=64),
    )
    return st.tuples(base, st.booleans()).map(lambda t: t[0][:-1] if t[1] and t[0] else t[0])


@dataclass
class Fleet:
    stt: RunningServer
    llm: RunningServer
    tts: RunningServer
    orch: RunningServer
    channels: dict[str, grpc.aio.Channel]
    """For health and the real calls after each target, on the servers' loop."""
    sync: dict[str, grpc.Channel]
    """For the fuzzing itself, from a worker thread (see ``protofuzz.sync_outcome``)."""
    llm_app: Any = None
    """The LLM service's app, whose backends report the session snapshots they hold."""

    def cached_bytes(self) -> int:
        """Memory the services hold on purpose, each within a configured budget: the STT and
        TTS result caches (``parole_cache_bytes``) and the LLM's session snapshots."""
        total = 0.0
        for metric in REGISTRY.collect():
            if metric.name == "parole_cache_bytes":
                total += sum(sample.value for sample in metric.samples)
        for backend in getattr(getattr(self.llm_app, "engine", None), "backends", ()):
            total += getattr(backend, "snapshot_bytes", 0)
        return int(total)

    @property
    def stt_sync(self) -> stt_pb2_grpc.SttServiceStub:
        return stt_pb2_grpc.SttServiceStub(self.sync["stt"])

    @property
    def llm_sync(self) -> llm_pb2_grpc.LlmServiceStub:
        return llm_pb2_grpc.LlmServiceStub(self.sync["llm"])

    @property
    def tts_sync(self) -> tts_pb2_grpc.TtsServiceStub:
        return tts_pb2_grpc.TtsServiceStub(self.sync["tts"])

    @property
    def orch_sync(self) -> orchestrator_pb2_grpc.OrchestratorServiceStub:
        return orchestrator_pb2_grpc.OrchestratorServiceStub(self.sync["orchestrator"])

    @property
    def service_names(self) -> dict[str, str]:
        return {
            "stt": "parole.stt.v1.SttService",
            "llm": "parole.llm.v1.LlmService",
            "tts": "parole.tts.v1.TtsService",
            "orchestrator": "parole.orchestrator.v1.OrchestratorService",
        }

    @property
    def stt_stub(self) -> stt_pb2_grpc.SttServiceAsyncStub:
        return stt_pb2_grpc.SttServiceStub(self.channels["stt"])

    @property
    def llm_stub(self) -> llm_pb2_grpc.LlmServiceAsyncStub:
        return llm_pb2_grpc.LlmServiceStub(self.channels["llm"])

    @property
    def tts_stub(self) -> tts_pb2_grpc.TtsServiceAsyncStub:
        return tts_pb2_grpc.TtsServiceStub(self.channels["tts"])

    @property
    def orch_stub(self) -> orchestrator_pb2_grpc.OrchestratorServiceAsyncStub:
        return orchestrator_pb2_grpc.OrchestratorServiceStub(self.channels["orchestrator"])


@pytest.fixture(scope="module")
async def fleet() -> AsyncIterator[Fleet]:
    stt = await start_app(SttApp.from_settings(SttSettings(server=local().model_dump())), local())  # type: ignore[arg-type]
    llm_app = build_llm(
        LlmSettings(
            server=local(),
            backends=["llamacpp", "canned"],
            llamacpp={"model": "smollm2-135m-instruct-q4_1"},  # type: ignore[arg-type]
            max_tokens=8,
            max_tokens_limit=16,
        )
    )
    llm = await start_app(llm_app, local())
    tts = await start_app(build_tts(TtsSettings(server=local(), max_text_chars=400)), local())
    orch_settings = OrchestratorSettings(
        server=local(),
        stt=ChannelSettings(target=f"127.0.0.1:{stt.port}"),
        llm=ChannelSettings(target=f"127.0.0.1:{llm.port}"),
        tts=ChannelSettings(target=f"127.0.0.1:{tts.port}"),
        dependency_wait_seconds=30,
        llm_timeout_seconds=30,
        tts_timeout_seconds=30,
    )
    orch = await start_app(OrchestratorApp(orch_settings), local())
    servers = {"stt": stt, "llm": llm, "tts": tts, "orchestrator": orch}
    channels = {name: grpc.aio.insecure_channel(f"127.0.0.1:{s.port}") for name, s in servers.items()}
    sync = {name: grpc.insecure_channel(f"127.0.0.1:{s.port}") for name, s in servers.items()}
    yield Fleet(stt, llm, tts, orch, channels, sync, llm_app)
    for ch in channels.values():
        await ch.close()
    for sch in sync.values():
        sch.close()
    for s in (orch, stt, llm, tts):
        await s.stop(0)


# ------------------------------------------------------------------------- real calls


async def real_stt(f: Fleet) -> None:
    reply = await f.stt_stub.Recognize(
        stt_pb2.RecognizeRequest(config=stt_pb2.RecognitionConfig(language="en", audio_format=PCM), audio=tone(0.5)),
        timeout=CALL_TIMEOUT,
    )
    assert reply.audio_duration_seconds == pytest.approx(0.5, abs=0.01)


async def real_llm(f: Fleet) -> None:
    out = [r async for r in f.llm_stub.Generate(llm_pb2.GenerateRequest(text="Say hello."), timeout=CALL_TIMEOUT)]
    assert out and out[-1].WhichOneof("response") == "summary" and out[-1].summary.text.strip()


async def real_tts(f: Fleet) -> None:
    reply = await f.tts_stub.Synthesize(
        tts_pb2.SynthesizeRequest(text="Hello there.", config=tts_pb2.SynthesisConfig(voice=VOICE)),
        timeout=CALL_TIMEOUT,
    )
    assert len(reply.audio.audio) > 1000


async def real_orchestrator(f: Fleet) -> None:
    reqs = [
        orch_pb2.ConverseRequest(config=orch_pb2.SessionConfig(language="en", input_format=PCM)),
        orch_pb2.ConverseRequest(text="Hello."),
    ]
    code, details, out = await outcome(f.orch_stub.Converse(iter(reqs), timeout=CALL_TIMEOUT))
    kinds = [m.WhichOneof("event") for m in out]
    assert code == grpc.StatusCode.OK, details
    assert "session_started" in kinds and "latency" in kinds, kinds


REAL: dict[str, Callable[[Fleet], Awaitable[None]]] = {
    "stt": real_stt,
    "llm": real_llm,
    "tts": real_tts,
    "orchestrator": real_orchestrator,
}


async def fuzz(fleet: Fleet, service: str, rpc: str, strategy: st.SearchStrategy[Any], check: Check) -> Tally:
    """Fuzzes one target (``fuzz_examples`` calls), records it, then checks the service
    still serves for real."""
    tally = Tally(f"{service}.{rpc}")
    full_name = fleet.service_names[service]
    failures_before = server_failures(full_name)
    failure: BaseException | None = None
    try:
        await asyncio.to_thread(
            run_fuzz, tally, strategy, check, fuzz_examples(service, rpc), lambda: rss_bytes() - fleet.cached_bytes()
        )
    except BaseException as exc:
        failure = exc
    if (halves := tally.growth_halves) is not None and tally.examples >= LEVELS_OFF_FROM:
        GROWTH_HALVES[tally.name] = halves
    server_side = server_failures(full_name) - failures_before
    if server_side and failure is None:
        failure = AssertionError(f"{service} itself recorded {server_side} INTERNAL/UNKNOWN statuses during {rpc}")
    serving = await healthcheck.status(fleet.channels[service]) == healthcheck.SERVING
    real_ok = True
    try:
        await REAL[service](fleet)
    except (AssertionError, grpc.aio.AioRpcError) as exc:
        real_ok = False
        failure = failure or exc
    record(
        "bad_input",
        tally.name,
        passed=failure is None and serving,
        contract=service,
        **tally.details(),
        server_internal_or_unknown=server_side,
        rss_mb_after=round(rss_bytes() / 2**20),
        serving_after=serving,
        real_call_after=real_ok,
    )
    if failure is not None:
        raise failure
    assert serving, f"{service} not SERVING after fuzzing {rpc}"
    return tally


def unary(call: Callable[..., Any]) -> Check:
    """A check calling a blocking stub method with one request (unary or server stream)."""

    def check(req: Any) -> tuple[grpc.StatusCode, str]:
        code, details, _ = sync_outcome(lambda: call(req, timeout=CALL_TIMEOUT))
        return code, details

    return check


def streaming(call: Callable[..., Any]) -> Check:
    """A check calling a blocking bidirectional stub method with a request sequence."""

    def check(reqs: list[Any]) -> tuple[grpc.StatusCode, str]:
        code, details, _ = sync_outcome(lambda: call(iter(reqs), timeout=CALL_TIMEOUT))
        return code, details

    return check


@pytest.fixture(scope="module")
async def rss_start(fleet: Fleet) -> int:
    # one real call each first, so lazy allocations are not counted as growth
    for real in REAL.values():
        await real(fleet)
    CACHED_AT_START[0] = fleet.cached_bytes()
    return rss_bytes()


CACHED_AT_START = [0]
GROWTH_HALVES: dict[str, tuple[int, int]] = {}
"""Per target, memory growth (RSS less the caches) over the first and second half of its calls."""
SECOND_HALF_LIMIT = 64 * 1024 * 1024
LEVELS_OFF_FROM = 2 * BATCH
"""Calls from which a target's second half must show memory levelled off: in a CI-sized run
(a few hundred calls) the allocators are still meeting new input sizes in both halves."""


# ------------------------------------------------------------------------------- STT

RECOGNITION = stt_pb2.RecognitionConfig(language="en", audio_format=PCM)


async def test_stt_recognize(fleet: Fleet, rss_start: int) -> None:
    base = stt_pb2.RecognizeRequest(config=RECOGNITION, audio=tone(0.3))
    strategy = message(stt_pb2.RecognizeRequest.DESCRIPTOR, base=base, overrides={"audio": pcm()})
    await fuzz(fleet, "stt", "Recognize", strategy, unary(fleet.stt_sync.Recognize))


def stt_stream() -> st.SearchStrategy[list[Any]]:
    req = stt_pb2.StreamingRecognizeRequest
    config = message(stt_pb2.RecognitionConfig.DESCRIPTOR, base=RECOGNITION).map(lambda c: req(config=c))
    audio = pcm().map(lambda a: req(audio=a))
    anything = message(req.DESCRIPTOR, overrides={"audio": pcm()})
    structured = st.tuples(config, st.lists(st.one_of(audio, anything), max_size=5)).map(lambda t: [t[0], *t[1]])
    return st.one_of(st.lists(anything, max_size=5), structured, structured)


async def test_stt_streaming_recognize(fleet: Fleet, rss_start: int) -> None:
    await fuzz(fleet, "stt", "StreamingRecognize", stt_stream(), streaming(fleet.stt_sync.StreamingRecognize))


async def test_stt_audio_bytes(fleet: Fleet, rss_start: int) -> None:
    """Valid configs, hostile audio: unary and streamed."""
    req = stt_pb2.StreamingRecognizeRequest

    def check(t: tuple[bool, list[bytes]]) -> tuple[grpc.StatusCode, str]:
        streamed, pieces = t
        if streamed:
            reqs = [req(config=RECOGNITION), *(req(audio=p) for p in pieces)]
            code, details, _ = sync_outcome(lambda: fleet.stt_sync.StreamingRecognize(iter(reqs), timeout=CALL_TIMEOUT))
        else:
            r = stt_pb2.RecognizeRequest(config=RECOGNITION, audio=b"".join(pieces))
            code, details, _ = sync_outcome(lambda: fleet.stt_sync.Recognize(r, timeout=CALL_TIMEOUT))
        return code, details

    strategy = st.tuples(st.booleans(), st.lists(pcm(), min_size=1, max_size=4))
    await fuzz(fleet, "stt", "audio bytes", strategy, check)


async def test_stt_list_engines(fleet: Fleet, rss_start: int) -> None:
    strategy = message(stt_pb2.ListEnginesRequest.DESCRIPTOR)
    await fuzz(fleet, "stt", "ListEngines", strategy, unary(fleet.stt_sync.ListEngines))


# ------------------------------------------------------------------------------- LLM


async def test_llm_generate(fleet: Fleet, rss_start: int) -> None:
    base = llm_pb2.GenerateRequest(
        session_id="fuzz-session",
        text="Hi.",
        options=llm_pb2.GenerationOptions(max_tokens=4, language="en", backend="llamacpp"),
    )
    strategy = message(llm_pb2.GenerateRequest.DESCRIPTOR, base=base)
    await fuzz(fleet, "llm", "Generate", strategy, unary(fleet.llm_sync.Generate))


async def test_llm_generate_valid_envelope(fleet: Fleet, rss_start: int) -> None:
    """Deeper: a well-formed request whose text, history, sampling and prompt are hostile, so
    generation itself runs on them (NaN and infinite temperatures, control characters...)."""
    history = st.lists(
        st.builds(
            llm_pb2.ChatMessage,
            role=st.sampled_from([llm_pb2.ROLE_USER, llm_pb2.ROLE_ASSISTANT]),
            content=text_strategy(60),
        ),
        max_size=3,
    )
    options = st.builds(
        llm_pb2.GenerationOptions,
        max_tokens=st.integers(0, 16),
        temperature=st.one_of(st.floats(0, 2, width=32), st.floats(width=32, allow_nan=True, allow_infinity=True)),
        system_prompt=text_strategy(80),
        language=st.one_of(st.sampled_from(["", "en", "fr"]), text_strategy(8)),
    )
    # a session (the server keeps the history) or a stateless call (the client sends it)
    strategy = st.one_of(
        st.builds(
            llm_pb2.GenerateRequest,
            session_id=st.sampled_from(["fuzz-a", "fuzz-b"]),
            text=text_strategy(120),
            options=options,
            speculative=st.booleans(),
        ),
        st.builds(llm_pb2.GenerateRequest, text=text_strategy(120), messages=history, options=options),
    )
    await fuzz(fleet, "llm", "Generate (valid envelope)", strategy, unary(fleet.llm_sync.Generate))


async def test_llm_sessions(fleet: Fleet, rss_start: int) -> None:
    ids = st.one_of(text_strategy(), st.just("fuzz-session"))
    reset = message(llm_pb2.ResetSessionRequest.DESCRIPTOR, overrides={"session_id": ids})
    await fuzz(fleet, "llm", "ResetSession", reset, unary(fleet.llm_sync.ResetSession))
    get = message(llm_pb2.GetSessionRequest.DESCRIPTOR, overrides={"session_id": ids})
    await fuzz(fleet, "llm", "GetSession", get, unary(fleet.llm_sync.GetSession))
    models = message(llm_pb2.ListModelsRequest.DESCRIPTOR)
    await fuzz(fleet, "llm", "ListModels", models, unary(fleet.llm_sync.ListModels))
    add = message(
        llm_pb2.AddExchangeRequest.DESCRIPTOR,
        overrides={"session_id": ids, "language": st.one_of(st.sampled_from(["", "en", "fr"]), text_strategy(8))},
    )
    await fuzz(fleet, "llm", "AddExchange", add, unary(fleet.llm_sync.AddExchange))


# ------------------------------------------------------------------------------- TTS

SYNTH = tts_pb2.SynthesisConfig(voice=VOICE, language="en", speed=1.0)


async def test_tts_synthesize(fleet: Fleet, rss_start: int) -> None:
    base = tts_pb2.SynthesizeRequest(text="Hello.", config=SYNTH)
    strategy = message(tts_pb2.SynthesizeRequest.DESCRIPTOR, base=base)
    await fuzz(fleet, "tts", "Synthesize", strategy, unary(fleet.tts_sync.Synthesize))
    base_stream = tts_pb2.SynthesizeStreamRequest(text="Hello.", config=SYNTH)
    strategy = message(tts_pb2.SynthesizeStreamRequest.DESCRIPTOR, base=base_stream)
    await fuzz(fleet, "tts", "SynthesizeStream", strategy, unary(fleet.tts_sync.SynthesizeStream))


async def test_tts_synthesize_valid_config(fleet: Fleet, rss_start: int) -> None:
    """Deeper: a known voice (Piper joe or espeak-ng) with hostile text and speed, so the
    text normaliser and the engines themselves see it."""
    config = st.builds(
        tts_pb2.SynthesisConfig,
        voice=st.sampled_from([VOICE, "espeak-ng:fr", "espeak-ng:en"]),
        speed=st.one_of(st.just(0.0), st.floats(width=32, allow_nan=True, allow_infinity=True)),
        sample_rate_hz=st.sampled_from([0, 8000, 16000, 22050, 48000, 1, 2**32 - 1]),
    )
    strategy = st.builds(tts_pb2.SynthesizeRequest, text=text_strategy(150), config=config)
    await fuzz(fleet, "tts", "Synthesize (valid voice)", strategy, unary(fleet.tts_sync.Synthesize))


def tts_stream() -> st.SearchStrategy[list[Any]]:
    req = tts_pb2.StreamingSynthesizeRequest
    config = message(tts_pb2.SynthesisConfig.DESCRIPTOR, base=SYNTH).map(lambda c: req(config=c))
    text = text_strategy(80).map(lambda t: req(text=t))
    flush = st.booleans().map(lambda b: req(flush=b))
    anything = message(req.DESCRIPTOR)
    structured = st.tuples(config, st.lists(st.one_of(text, flush, anything), max_size=6)).map(lambda t: [t[0], *t[1]])
    return st.one_of(st.lists(anything, max_size=5), structured, structured)


async def test_tts_streaming_synthesize(fleet: Fleet, rss_start: int) -> None:
    await fuzz(fleet, "tts", "StreamingSynthesize", tts_stream(), streaming(fleet.tts_sync.StreamingSynthesize))


async def test_tts_list_voices(fleet: Fleet, rss_start: int) -> None:
    strategy = message(tts_pb2.ListVoicesRequest.DESCRIPTOR)
    await fuzz(fleet, "tts", "ListVoices", strategy, unary(fleet.tts_sync.ListVoices))


# ----------------------------------------------------------------------- orchestrator


def converse() -> st.SearchStrategy[list[Any]]:
    req = orch_pb2.ConverseRequest
    valid = orch_pb2.SessionConfig(language="en", input_format=PCM, voice=VOICE)
    config = message(orch_pb2.SessionConfig.DESCRIPTOR, base=valid).map(lambda c: req(config=c))
    audio = pcm().map(lambda a: req(audio=a))
    text = text_strategy(40).map(lambda t: req(text=t))
    other = message(req.DESCRIPTOR, overrides={"audio": pcm(), "text": text_strategy(40)})
    structured = st.tuples(config, st.lists(st.one_of(audio, text, other), max_size=4)).map(lambda t: [t[0], *t[1]])
    return st.one_of(st.lists(other, max_size=4), structured, structured)


async def test_orchestrator_converse(fleet: Fleet, rss_start: int) -> None:
    def check(reqs: list[Any]) -> tuple[grpc.StatusCode, str]:
        code, details, out = sync_outcome(lambda: fleet.orch_sync.Converse(iter(reqs), timeout=CALL_TIMEOUT))
        # A stage failing on what the orchestrator passed it is a bug too, even when the
        # stream itself ends OK with the error reported in-band.
        for m in out:
            if m.WhichOneof("event") == "error" and m.error.code in ("INTERNAL", "UNKNOWN"):
                return grpc.StatusCode.INTERNAL, f"stage error {m.error.code}: {m.error.message}"
        return code, details

    await fuzz(fleet, "orchestrator", "Converse", converse(), check)


async def test_memory_bounded_over_the_run(fleet: Fleet, rss_start: int) -> None:
    """Runs after every fuzz target (file order): memory is bounded. Two checks:

    - it levels off: over the second half of each target's calls (long runs), memory not held
      by a cache grows by less than ``SECOND_HALF_LIMIT`` summed over the targets. A leak
      grows with every call, so in both halves alike, in every target that reaches it; an
      allocator reaching its high-water mark (CTranslate2's and onnxruntime's arenas keep the
      largest buffers any input needed, glibc keeps freed heap) grows while new input sizes
      come and then stops. The sum is signed, and no single target is judged alone: resident
      memory also falls back when an allocator returns pages (the TTS arenas give back ~150 MB
      after an oversized run, and the next target's first ordinary runs take it again), and
      rises alone would add that up. This holds at any scale;
    - the total stays within ``RSS_GROWTH_LIMIT`` (the caches, each within its configured
      budget, aside): what a larger run cannot exceed if the first check holds."""
    growth = rss_bytes() - rss_start
    # The caches fill with what the run sent, each up to its configured budget (the STT's
    # 200 MB, the LLM's 256 MB of snapshots, the TTS's 64 MB): at 10,000 calls a contract they
    # hold hundreds of MB by design.
    cached = fleet.cached_bytes() - CACHED_AT_START[0]
    unexplained = growth - cached
    second_halves = sum(late for _, late in GROWTH_HALVES.values())
    worst = max((late for _, late in GROWTH_HALVES.values()), default=0)
    levels_off = second_halves < SECOND_HALF_LIMIT
    passed = unexplained < RSS_GROWTH_LIMIT and levels_off
    record(
        "bad_input",
        "memory (RSS growth over the fuzz run)",
        passed=passed,
        rss_growth_mb=round(growth / 2**20, 1),
        cached_growth_mb=round(cached / 2**20, 1),
        unexplained_mb=round(unexplained / 2**20, 1),
        limit_mb=RSS_GROWTH_LIMIT // 2**20,
        second_halves_growth_mb=round(second_halves / 2**20, 1),
        largest_second_half_mb=round(worst / 2**20, 1),
        second_halves_limit_mb=SECOND_HALF_LIMIT // 2**20,
        largest_first_halves_mb={
            name: round(early / 2**20, 1)
            for name, (early, _) in sorted(GROWTH_HALVES.items(), key=lambda kv: -kv[1][0])[:4]
        },
    )
    assert levels_off, (
        f"memory not held by the caches grew {second_halves / 2**20:.0f} MB over the second halves of the "
        f"fuzz targets (a leak grows there as in the first): {GROWTH_HALVES}"
    )
    assert unexplained < RSS_GROWTH_LIMIT, (
        f"RSS grew {growth / 2**20:.0f} MB over the fuzz run, {cached / 2**20:.0f} MB of it in the caches"
    )


async def test_memory_plateaus_under_repeated_calls(fleet: Fleet, rss_start: int) -> None:
    """Growth seen above could be a leak or allocators reaching their high-water mark (the
    ONNX and llama.cpp arenas grow to the largest input once). Repeating the same accepted
    calls tells them apart: after one warm round, two more rounds must not grow memory."""
    long_text = ("Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich; " * 4)[:200]

    async def one_round() -> None:
        for real in REAL.values():
            await real(fleet)
        await fleet.tts_stub.Synthesize(tts_pb2.SynthesizeRequest(text=long_text, config=SYNTH), timeout=CALL_TIMEOUT)

    await one_round()
    before = rss_bytes()
    for _ in range(2):
        await one_round()
    growth = rss_bytes() - before
    limit = 30 * 2**20
    record("bad_input", "memory plateau (2 repeated rounds of accepted calls on every service)",
           passed=growth < limit, rss_growth_mb=round(growth / 2**20, 1), limit_mb=limit // 2**20)  # fmt: skip
    assert growth < limit, f"RSS grew {growth / 2**20:.0f} MB over two identical rounds: a leak"
