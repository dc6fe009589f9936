"""End-to-end benchmark: time to first audio, streamed versus the original sequential design.

``python -m bench.e2e [--rounds N] [--out reports/bench_e2e.json]``

The fleet runs as it would in production (four processes started by ``services.fleet``, CPU,
offline defaults). For each spoken question (the bundled demo questions, plus the real
recordings in ../shared/speech when present), streamed at real-time pace:

- **streamed**: through the orchestrator. Time to first audio = end of the user's speech (the
  moment the last speech sample left the client) → first answer audio at the client.
- **sequential** (the original design): the same audio, the same models, one stage after the
  other — endpointing silence, then the whole transcript (unary Recognize), then the whole
  answer (Generate to the end), then the whole audio (unary Synthesize).
- **floor**: each stage's best time measured alone for the same turn — endpointing silence +
  fastest decode of the utterance + fastest first token of the same prompt + fastest first
  audio of the answer's first clause. Nothing streamed can beat it on this machine.

The ratio sequential/streamed and the distance above the floor are reported per question and
as medians. Every number comes from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import re
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from parole.audio.v1 import audio_pb2
from parole.llm.v1 import llm_pb2, llm_pb2_grpc
from parole.orchestrator.v1 import orchestrator_pb2 as opb
from parole.orchestrator.v1 import orchestrator_pb2_grpc
from parole.stt.v1 import stt_pb2, stt_pb2_grpc
from parole.tts.v1 import tts_pb2, tts_pb2_grpc
from services.fleet import Fleet
from services.runtime.audio import Pcm, chunks, read_wav, resample_pcm16, silence

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "client" / "demo"
SHARED = REPO.parent / "shared" / "speech"
SILENCE_MS = 300
PCM = audio_pb2.AUDIO_ENCODING_PCM_S16LE


def questions() -> list[tuple[str, str, Pcm]]:
    """(name, language, 16 kHz audio) of the bundled questions and the real recordings."""
    out = []
    for manifest, folder in ((DEMO / "questions.tsv", DEMO), (SHARED / "manifest.tsv", SHARED)):
        if not manifest.is_file():
            continue
        with manifest.open() as f:
            for row in csv.DictReader(f, delimiter="\t"):
                if float(row.get("duration_s") or 0) > 6:
                    continue  # long recordings are speeches, not questions
                pcm = read_wav(folder / row["file"])
                out.append((row["file"], row["language"], Pcm(resample_pcm16(pcm.data, pcm.sample_rate, 16000), 16000)))
    return out


def speech_end(pcm: Pcm) -> float:
    """Seconds into the clip where speech ends: recordings carry trailing silence, and the
    clock must start when the user stopped talking, not when the file ran out."""
    samples = np.frombuffer(pcm.data, dtype="<i2").astype(np.float32) / 32768
    frame = pcm.sample_rate // 50  # 20 ms
    n = len(samples) // frame
    rms = np.sqrt((samples[: n * frame].reshape(n, frame) ** 2).mean(axis=1))
    loud = np.nonzero(rms > max(0.01, 0.1 * float(rms.max())))[0]
    return float((loud[-1] + 1) * frame / pcm.sample_rate) if loud.size else pcm.duration


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


async def streamed_turn(stub: Any, language: str, pcm: Pcm) -> dict[str, Any]:
    """One spoken turn through the orchestrator, timed at the client."""
    out: asyncio.Queue[opb.ConverseRequest | None] = asyncio.Queue()
    fmt = audio_pb2.AudioFormat(sample_rate_hz=16000, encoding=PCM)
    out.put_nowait(
        opb.ConverseRequest(
            config=opb.SessionConfig(language=language, input_format=fmt, session_id=f"bench-{uuid.uuid4().hex[:12]}")
        )
    )

    async def requests() -> Any:
        while (r := await out.get()) is not None:
            yield r

    call = stub.Converse(requests())
    ended = 0.0

    spoken = speech_end(pcm)

    async def send() -> None:
        nonlocal ended
        position = 0.0
        for c in chunks(pcm.data, 16000):
            out.put_nowait(opb.ConverseRequest(audio=c))
            position += len(c) / 32000
            if not ended and position >= spoken:
                # A microphone delivers a chunk once it is recorded: the user stopped talking
                # (position - spoken) seconds before this chunk left. Taking the real send time
                # keeps timer drift out of the measurement.
                ended = time.monotonic() - (position - spoken)
            await asyncio.sleep(len(c) / 32000)
        for c in chunks(silence(1.5), 16000):
            out.put_nowait(opb.ConverseRequest(audio=c))
            await asyncio.sleep(len(c) / 32000)

    sender = asyncio.create_task(send())
    first_audio = None
    transcript, latency = "", None
    async for msg in call:
        kind = msg.WhichOneof("event")
        if kind == "reply_audio" and msg.reply_audio.audio and first_audio is None:
            first_audio = time.monotonic()
        elif kind == "transcript" and msg.transcript.is_final:
            transcript = msg.transcript.text
        elif kind == "latency":
            latency = msg.latency
            break
    await sender
    out.put_nowait(None)
    call.cancel()
    assert latency is not None and first_audio is not None, "the turn produced no audio"
    return {
        "transcript": transcript,
        "reply": latency.reply_text,
        "time_to_first_audio_s": first_audio - ended,
        "server": {
            "final_transcript_s": latency.final_transcript_seconds,
            "first_token_s": latency.first_token_seconds,
            "first_audio_s": latency.first_audio_seconds,
            "last_audio_s": latency.last_audio_seconds,
        },
    }


async def sequential_turn(stt: Any, llm: Any, tts: Any, language: str, pcm: Pcm) -> dict[str, Any]:
    """The original design: each stage waits for the whole previous one."""
    fmt = audio_pb2.AudioFormat(sample_rate_hz=16000, encoding=PCM)
    t0 = time.monotonic()
    rec = await stt.Recognize(
        stt_pb2.RecognizeRequest(config=stt_pb2.RecognitionConfig(language=language, audio_format=fmt), audio=pcm.data)
    )
    t_stt = time.monotonic()
    reply = ""
    async for r in llm.Generate(
        llm_pb2.GenerateRequest(
            session_id=f"bench-{uuid.uuid4().hex[:12]}",
            text=rec.result.transcript,
            options=llm_pb2.GenerationOptions(language=language),
        )
    ):
        if r.WhichOneof("response") == "summary":
            reply = r.summary.text
    t_llm = time.monotonic()
    await tts.Synthesize(tts_pb2.SynthesizeRequest(text=reply, config=tts_pb2.SynthesisConfig(language=language)))
    t_tts = time.monotonic()
    stages = {"stt_s": t_stt - t0, "llm_s": t_llm - t_stt, "tts_s": t_tts - t_llm}
    return {
        "time_to_first_audio_s": SILENCE_MS / 1000 + sum(stages.values()),
        **stages,
        "transcript": rec.result.transcript,
        "reply": reply,
    }


def first_clause(text: str) -> str:
    m = re.match(r"(.+?[.!?;:,])(\s|$)", text.strip())
    return m.group(1) if m else text.strip()


async def floor(
    stt: Any, llm: Any, tts: Any, language: str, pcm: Pcm, transcript: str, reply: str, round_index: int
) -> dict[str, float]:
    """Each stage alone, once, for this turn (the caller keeps the best of several rounds)."""
    fmt = audio_pb2.AudioFormat(sample_rate_hz=16000, encoding=PCM)
    # A little silence makes each request's audio differ, should a result cache be on.
    audio = pcm.data + silence(0.01 * (round_index + 1))
    t = time.monotonic()
    await stt.Recognize(
        stt_pb2.RecognizeRequest(config=stt_pb2.RecognitionConfig(language=language, audio_format=fmt), audio=audio)
    )
    decode = time.monotonic() - t
    t = time.monotonic()
    ttft = float("nan")
    call = llm.Generate(
        llm_pb2.GenerateRequest(
            session_id=f"bench-{uuid.uuid4().hex[:12]}",
            text=transcript,
            options=llm_pb2.GenerationOptions(language=language, max_tokens=1),
        )
    )
    async for r in call:
        if r.WhichOneof("response") == "delta":
            ttft = time.monotonic() - t
            call.cancel()
            break
    t = time.monotonic()
    tts_first = float("nan")
    async for _ in tts.SynthesizeStream(
        tts_pb2.SynthesizeStreamRequest(text=first_clause(reply), config=tts_pb2.SynthesisConfig(language=language))
    ):
        tts_first = time.monotonic() - t
        break
    parts = {
        "endpoint_silence_s": SILENCE_MS / 1000,
        "stt_decode_s": decode,
        "llm_first_token_s": ttft,
        "tts_first_audio_s": tts_first,
    }
    return {**parts, "floor_s": sum(parts.values())}


def fleet() -> Fleet:
    """The production fleet with result caches off: repeated questions must cost what new
    ones do, or the comparison measures the caches."""
    env = {
        "stt": {"STT_CACHE_MAX_BYTES": "0"},
        "llm": {"LLM_BACKENDS": '["llamacpp","canned"]'},
        "tts": {"TTS_CACHE_BYTES": "0"},
    }
    names = ("stt", "llm", "tts", "orchestrator")
    return Fleet(env=env, ports=dict.fromkeys(names, 0), metrics_ports=dict.fromkeys(names, 0))


async def run(fleet: Fleet, rounds: int) -> dict[str, Any]:
    channels = {n: grpc.aio.insecure_channel(t) for n, t in fleet.targets.items()}
    orch = orchestrator_pb2_grpc.OrchestratorServiceStub(channels["orchestrator"])
    stt = stt_pb2_grpc.SttServiceStub(channels["stt"])
    llm = llm_pb2_grpc.LlmServiceStub(channels["llm"])
    tts = tts_pb2_grpc.TtsServiceStub(channels["tts"])
    qs = questions()
    await streamed_turn(orch, qs[0][1], qs[0][2])  # warm every path once, not measured
    streamed: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in qs}
    sequential: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in qs}
    # Questions take turns, so no prompt directly follows itself: the LLM then reuses only the
    # system prompt's cache, as in a real conversation, not a whole identical prompt.
    for _ in range(rounds):
        for name, language, pcm in qs:
            streamed[name].append(await streamed_turn(orch, language, pcm))
        for name, language, pcm in qs:
            sequential[name].append(await sequential_turn(stt, llm, tts, language, pcm))
    # The floor, interleaved too: the LLM must read each question anew, as in a real turn.
    floors: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in qs}
    for i in range(rounds):
        for name, language, pcm in qs:
            best = min(streamed[name], key=lambda r: r["time_to_first_audio_s"])
            floors[name].append(await floor(stt, llm, tts, language, pcm, best["transcript"], best["reply"], i))
    rows = []
    for name, language, pcm in qs:
        parts = {k: min(f[k] for f in floors[name]) for k in floors[name][0] if k != "floor_s"}
        fl = {**parts, "floor_s": sum(parts.values())}
        s_med = statistics.median(r["time_to_first_audio_s"] for r in streamed[name])
        q_med = statistics.median(r["time_to_first_audio_s"] for r in sequential[name])
        rows.append(
            {
                "question": name,
                "language": language,
                "speech_s": round(speech_end(pcm), 2),
                "streamed": streamed[name],
                "sequential": sequential[name],
                "floor": fl,
                "streamed_median_s": s_med,
                "sequential_median_s": q_med,
                "speedup": q_med / s_med,
                "above_floor_s": s_med - fl["floor_s"],
            }
        )
        print(
            f"{name:40} streamed {s_med:5.2f}s  sequential {q_med:5.2f}s  x{q_med / s_med:4.1f}  floor {fl['floor_s']:5.2f}s"
        )
    for ch in channels.values():
        await ch.close()
    ttfa = [r["time_to_first_audio_s"] for row in rows for r in row["streamed"]]
    seq = [r["time_to_first_audio_s"] for row in rows for r in row["sequential"]]
    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "models": {
            "stt": "whisper-base int8 (CPU)",
            "llm": "qwen2.5-coder-1.5b-instruct-q4_k_m (llama.cpp CPU)",
            "tts": "piper en_US-joe-medium / espeak-ng fr",
        },
        "endpoint_silence_ms": SILENCE_MS,
        "rounds": rounds,
        "summary": {
            "turns": len(ttfa),
            "streamed_time_to_first_audio_p50_s": percentile(ttfa, 0.5),
            "streamed_time_to_first_audio_p95_s": percentile(ttfa, 0.95),
            "sequential_time_to_first_audio_p50_s": percentile(seq, 0.5),
            "sequential_time_to_first_audio_p95_s": percentile(seq, 0.95),
            "speedup_p50": percentile(seq, 0.5) / percentile(ttfa, 0.5),
            "median_floor_s": statistics.median(r["floor"]["floor_s"] for r in rows),
            "median_above_floor_s": statistics.median(r["above_floor_s"] for r in rows),
        },
        "questions": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench_e2e.json")
    args = parser.parse_args()
    with fleet() as running:  # started from the main thread: its services die with this process
        report = asyncio.run(run(running, args.rounds))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["summary"], indent=2))
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
