"""Gateway benchmark: what the translation layer adds over calling the services directly.

``python -m bench.gateway [--rounds N] [--turns N] [--out reports/bench_gateway.json]``

Starts the real fleet as subprocesses (``services.fleet``, the containers' commands: STT
Whisper base, LLM SmolLM2 135M, TTS Piper joe, the orchestrator and the gateway), then from
this process times each kind of call both ways, interleaved so the shared CPU's drift hits both
alike:

- transcription: gRPC ``Recognize`` vs ``POST /v1/audio/transcriptions`` (the same WAV; the
  STT result cache answers both after the first call, so the difference is the gateway's own
  cost: HTTP, multipart, a second gRPC hop);
- speech: ``SynthesizeStream`` first chunk vs ``POST /v1/audio/speech`` (pcm) first bytes
  (the TTS phrase cache likewise);
- chat: ``Generate`` first delta vs the first content chunk of a streamed chat completion;
- Wyoming: ``StreamingRecognize`` final vs the Wyoming ``transcript``; ``SynthesizeStream``
  first chunk vs the first Wyoming ``audio-chunk``;
- Realtime: ``Converse`` vs ``/v1/realtime``, time to first answer audio after the last chunk
  of a spoken question (the bundled recording plus silence) was sent.

Clients are the plainest for each protocol (httpx, websockets, the wyoming package, grpc.aio),
so the figures are the gateway's, not an SDK's. The goal: at most 10 ms added at p50 per call,
and Realtime's first audio within 50 ms of Converse's. Timing on a shared CPU is noisy: the
report gives medians of each path and their difference from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import websockets
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize, SynthesizeVoice

from bench.common import host
from client.converse import ConverseStream, answer_audio
from parole.audio.v1 import audio_pb2
from parole.llm.v1 import llm_pb2, llm_pb2_grpc
from parole.orchestrator.v1 import orchestrator_pb2 as orch_pb2
from parole.orchestrator.v1 import orchestrator_pb2_grpc
from parole.stt.v1 import stt_pb2, stt_pb2_grpc
from parole.tts.v1 import tts_pb2, tts_pb2_grpc
from services.fleet import DEFAULT, REPO, Fleet, announce
from services.runtime import healthcheck
from services.runtime.audio import chunks, read_wav, resample_pcm16, silence

VOICE = "en_US-joe-medium"
SMOLLM = "smollm2-135m-instruct-q4_1"
QUESTION = REPO / "client" / "demo" / "en-capital-france.wav"
SENTENCE = "The capital of France is Paris."
PCM16K = audio_pb2.AudioFormat(sample_rate_hz=16000, encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, channels=1)
Timer = Callable[[], Awaitable[float]]


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values) * 1000, 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 2),
        "min_ms": round(ordered[0] * 1000, 2),
    }


async def compare(name: str, direct: Timer, gateway: Timer, rounds: int, goal_ms: float) -> dict[str, Any]:
    """Both paths once to warm up, then ``rounds`` interleaved pairs."""
    await direct()
    await gateway()
    times: dict[str, list[float]] = {"direct": [], "gateway": []}
    for i in range(rounds):
        pair = [("direct", direct), ("gateway", gateway)]
        for label, timer in pair if i % 2 == 0 else reversed(pair):
            times[label].append(await timer())
    row: dict[str, Any] = {"call": name, "direct": stats(times["direct"]), "gateway": stats(times["gateway"])}
    added = row["gateway"]["p50_ms"] - row["direct"]["p50_ms"]
    row["added_p50_ms"] = round(added, 2)
    row["goal_ms"] = goal_ms
    row["within_goal"] = added <= goal_ms
    print(
        f"{name:<26} direct p50 {row['direct']['p50_ms']:8.1f} ms   gateway p50 {row['gateway']['p50_ms']:8.1f} ms"
        f"   added {added:+7.1f} ms (goal <= {goal_ms:g})",
        flush=True,
    )
    return row


class Bench:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.channels = {n: grpc.aio.insecure_channel(fleet.target(n)) for n in ("stt", "llm", "tts", "orchestrator")}
        self.stt = stt_pb2_grpc.SttServiceStub(self.channels["stt"])
        self.llm = llm_pb2_grpc.LlmServiceStub(self.channels["llm"])
        self.tts = tts_pb2_grpc.TtsServiceStub(self.channels["tts"])
        self.orch = orchestrator_pb2_grpc.OrchestratorServiceStub(self.channels["orchestrator"])
        self.http_port = fleet.extra_port("gateway", "HTTP__PORT")
        self.base = f"http://127.0.0.1:{self.http_port}/v1"
        self.http = httpx.AsyncClient(base_url=self.base, timeout=120)
        self.wav = QUESTION.read_bytes()
        self.question = read_wav(QUESTION)

    async def close(self) -> None:
        await self.http.aclose()
        for channel in self.channels.values():
            await channel.close()

    # ------------------------------------------------------------------ unary-ish calls
    async def health_direct(self) -> float:
        t = time.perf_counter()
        await healthcheck.status(self.channels["stt"])
        return time.perf_counter() - t

    async def health_gateway(self) -> float:
        t = time.perf_counter()
        (await self.http.get(f"http://127.0.0.1:{self.http_port}/health")).raise_for_status()
        return time.perf_counter() - t

    async def stt_direct(self) -> float:
        t = time.perf_counter()
        config = stt_pb2.RecognitionConfig(
            language="en", audio_format=audio_pb2.AudioFormat(encoding=audio_pb2.AUDIO_ENCODING_WAV)
        )
        await self.stt.Recognize(stt_pb2.RecognizeRequest(config=config, audio=self.wav), timeout=60)
        return time.perf_counter() - t

    async def stt_gateway(self) -> float:
        t = time.perf_counter()
        r = await self.http.post("/audio/transcriptions", files={"file": ("q.wav", self.wav)}, data={"language": "en"})
        r.raise_for_status()
        return time.perf_counter() - t

    async def tts_direct(self, sample_rate_hz: int = 24000) -> float:
        """SynthesizeStream's first chunk (``sample_rate_hz`` 0: the voice's own rate)."""
        t = time.perf_counter()
        config = tts_pb2.SynthesisConfig(voice=VOICE, sample_rate_hz=sample_rate_hz)
        call = self.tts.SynthesizeStream(tts_pb2.SynthesizeStreamRequest(text=SENTENCE, config=config), timeout=60)
        async for _ in call:
            break
        elapsed = time.perf_counter() - t
        call.cancel()
        return elapsed

    async def tts_gateway(self) -> float:
        t = time.perf_counter()
        body = {"model": "tts-1", "voice": VOICE, "input": SENTENCE, "response_format": "pcm"}
        async with self.http.stream("POST", "/audio/speech", json=body) as r:
            r.raise_for_status()
            async for _ in r.aiter_raw():
                break
            return time.perf_counter() - t

    async def canned_direct(self) -> float:
        return await self.llm_direct(backend="canned")

    async def canned_gateway(self) -> float:
        return await self.llm_gateway(model="canned")

    async def llm_direct(self, backend: str = "") -> float:
        t = time.perf_counter()
        request = llm_pb2.GenerateRequest(
            messages=[
                llm_pb2.ChatMessage(role=llm_pb2.ROLE_SYSTEM, content="You are a helpful assistant."),
                llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content="Say hello."),
            ],
            options=llm_pb2.GenerationOptions(max_tokens=8, backend=backend),
        )
        elapsed = 0.0
        async for r in self.llm.Generate(request, timeout=60):
            if r.WhichOneof("response") == "delta" and not elapsed:
                elapsed = time.perf_counter() - t
        return elapsed

    async def llm_gateway(self, model: str = "x") -> float:
        t = time.perf_counter()
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "Say hello."}],
            "stream": True,
            "max_tokens": 8,
        }
        elapsed = 0.0
        async with self.http.stream("POST", "/chat/completions", json=body) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not elapsed and '"content": "' in line and '"content": ""' not in line:
                    elapsed = time.perf_counter() - t
        return elapsed

    # ------------------------------------------------------------------ Wyoming
    async def asr_direct(self) -> float:
        pcm = self.question.data + silence(0.3)

        async def requests() -> Any:
            yield stt_pb2.StreamingRecognizeRequest(
                config=stt_pb2.RecognitionConfig(language="en", audio_format=PCM16K)
            )
            for piece in chunks(pcm, 16000, 100):
                yield stt_pb2.StreamingRecognizeRequest(audio=piece)

        t = time.perf_counter()
        async for _ in self.stt.StreamingRecognize(requests(), timeout=60):
            pass
        return time.perf_counter() - t

    async def asr_wyoming(self) -> float:
        pcm = self.question.data + silence(0.3)
        async with AsyncTcpClient("127.0.0.1", self.fleet.extra_port("gateway", "WYOMING__ASR_PORT")) as client:
            t = time.perf_counter()
            await client.write_event(Transcribe(language="en").event())
            await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
            for piece in chunks(pcm, 16000, 100):
                await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=piece).event())
            await client.write_event(AudioStop().event())
            while (event := await client.read_event()) is not None and event.type != "transcript":
                pass
            return time.perf_counter() - t

    async def tts_wyoming(self) -> float:
        async with AsyncTcpClient("127.0.0.1", self.fleet.extra_port("gateway", "WYOMING__TTS_PORT")) as client:
            t = time.perf_counter()
            await client.write_event(Synthesize(text=SENTENCE, voice=SynthesizeVoice(name=VOICE)).event())
            while (event := await client.read_event()) is not None and event.type != "audio-chunk":
                pass
            elapsed = time.perf_counter() - t
            while (event := await client.read_event()) is not None and event.type != "audio-stop":
                pass
            return elapsed

    async def tts_direct_native(self) -> float:
        """SynthesizeStream at the voice's own rate, as the Wyoming server asks for it."""
        return await self.tts_direct(sample_rate_hz=0)

    # ------------------------------------------------------------------ conversation
    async def converse_direct(self) -> float:
        config = orch_pb2.SessionConfig(
            session_id=f"bench-{uuid.uuid4().hex[:12]}",
            language="en",
            voice=VOICE,
            input_format=PCM16K,
            output_sample_rate_hz=24000,
            barge_in=True,
            interim_results=True,
        )
        stream = ConverseStream(self.orch, config)
        stream.open(timeout=120)
        try:
            sent_at = await stream.stream_audio(self.question.data + silence(1.5), 16000, realtime=False)
            await stream.wait_for(answer_audio, timeout=None)
        finally:
            stream.cancel()
        first = next(at for at, m in stream.events if answer_audio(m))
        return first - sent_at

    async def converse_gateway(self) -> float:
        pcm = resample_pcm16(self.question.data + silence(1.5), 16000, 24000)
        url = self.base.replace("http", "ws") + "/realtime"
        async with websockets.connect(url, max_size=None) as ws:
            update = {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {"input": {"transcription": {"language": "en"}}, "output": {"voice": VOICE}},
                },
            }
            await ws.send(json.dumps(update))
            while json.loads(await ws.recv())["type"] != "session.updated":
                pass
            for piece in chunks(pcm, 24000, 100):
                await ws.send(
                    json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(piece).decode()})
                )
            sent_at = time.perf_counter()
            while True:
                event = json.loads(await ws.recv())
                if event["type"] == "response.output_audio.delta":
                    return time.perf_counter() - sent_at


def relay(fleet: Fleet) -> dict[str, float]:
    """The gateway's relay histogram (parole_gateway_realtime_relay_seconds): count, mean and
    the bucket bound under which half of the relays fell."""
    from prometheus_client.parser import text_string_to_metric_families

    port = next(s.metrics_port for s in fleet.specs if s.name == "gateway")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    buckets: list[tuple[float, float]] = []
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "parole_gateway_realtime_relay_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_count"):
                count = sample.value
    p50 = next((le for le, n in sorted(buckets) if count and n >= count / 2), float("nan"))
    mean = total / count * 1000 if count else float("nan")
    return {"messages": count, "mean_ms": round(mean, 3), "p50_at_most_ms": p50 * 1000}


def fleet() -> Fleet:
    # Greedy, short answers: the same question gets the same answer every time, so the LLM's
    # sampling does not add its own spread to the comparison of the two paths.
    env = {
        "llm": {
            "LLM_BACKENDS": '["llamacpp", "canned"]',
            "LLM_LLAMACPP__MODEL": SMOLLM,
            "LLM_TEMPERATURE": "0",
            "LLM_MAX_TOKENS": "32",
        },
        "gateway": {"GATEWAY_LOG__LEVEL": "WARNING"},
    }
    return Fleet(
        DEFAULT,
        env=env,
        ports=dict.fromkeys(DEFAULT, 0),
        metrics_ports=dict.fromkeys(DEFAULT, 0),
        log_dir=REPO / "reports" / "bench_gateway_fleet",
        on_ready=announce,
    )


async def run(fleet: Fleet, rounds: int, model_rounds: int, turns: int) -> dict[str, Any]:
    results: dict[str, Any] = {
        "benchmark": "gateway",
        "host": host(),
        "settings": {
            "rounds": rounds,
            "model_rounds": model_rounds,
            "realtime_turns": turns,
            "fleet": "subprocesses (services.fleet); STT Whisper base, LLM SmolLM2 135M, TTS Piper joe",
            "clients": "httpx, websockets, wyoming, grpc.aio from one process; calls one at a time",
            "caches": "STT result cache and TTS phrase cache on (the services' defaults): after the first call "
            "both paths hit them, so differences are the gateway's own",
        },
    }
    bench = Bench(fleet)
    try:
        results["calls"] = [
            # The floor: a health check each way (no work behind it): what HTTP and its client
            # cost against gRPC and its client on this host.
            await compare("health (no work)", bench.health_direct, bench.health_gateway, rounds, 10),
            await compare("transcription", bench.stt_direct, bench.stt_gateway, rounds, 10),
            await compare("speech (first bytes)", bench.tts_direct, bench.tts_gateway, rounds, 10),
            await compare("chat (first token)", bench.llm_direct, bench.llm_gateway, model_rounds, 10),
            # The canned backend answers at once: the same call without the model's own spread.
            await compare("chat, canned backend", bench.canned_direct, bench.canned_gateway, rounds, 10),
            await compare("wyoming asr (transcript)", bench.asr_direct, bench.asr_wyoming, model_rounds, 10),
            await compare("wyoming tts (first audio)", bench.tts_direct_native, bench.tts_wyoming, rounds, 10),
        ]
        results["realtime"] = await compare(
            "realtime first audio", bench.converse_direct, bench.converse_gateway, turns, 50
        )
        # End to end, a turn's time to first audio spreads over seconds on a shared CPU (the
        # model's work), which hides a few milliseconds either way; the gateway's own part is
        # measured inside it: Converse audio in, Realtime deltas out.
        results["realtime"]["gateway_relay"] = relay(fleet)
        print(f"realtime relay inside the gateway: {results['realtime']['gateway_relay']}", flush=True)
    finally:
        await bench.close()
    results["host"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="interleaved pairs per cached call kind")
    parser.add_argument(
        "--model-rounds", type=int, default=10, help="interleaved pairs of calls that run a model (chat, Wyoming ASR)"
    )
    parser.add_argument("--turns", type=int, default=8, help="interleaved pairs of spoken Realtime/Converse turns")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_gateway.json"))
    args = parser.parse_args()
    # Started from the main thread, outside the event loop: the services then die with this
    # process even if it is killed (the fleet's parent-death signal is set per thread).
    with fleet() as running:
        results = asyncio.run(run(running, args.rounds, args.model_rounds, args.turns))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
