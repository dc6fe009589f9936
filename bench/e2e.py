"""End-to-end benchmark: time to first audio, streamed versus the original sequential design.

``python -m bench.e2e [--rounds N] [--ablation-rounds N] [--configs ...] [--out reports/bench_e2e.json]``

The fleet runs as it would in production (four processes started by ``services.fleet``, CPU,
offline defaults). For each spoken question (the bundled demo questions, plus the real
recordings in ../shared/speech when present), streamed at real-time pace:

- **streamed**: through the orchestrator. Time to first audio = end of the user's speech (the
  moment the last speech sample left the client) → first answer audio at the client.
- **sequential** (the original design, ``bench.baseline``): the same audio, the same models,
  one stage after the other — endpointing silence, then the whole transcript (unary
  Recognize), then the whole answer (Generate to the end), then the whole audio (unary
  Synthesize).
- **floor** (``bench.baseline``): each stage's best time measured alone for the same turn —
  endpointing silence + fastest decode of the utterance + fastest first token of the same
  prompt + fastest first audio of the answer's first clause. Nothing streamed can beat it on
  this machine.

The ratio sequential/streamed and the distance above the floor are reported per question and
as medians. Every number comes from the same run.

**Ablation**: the same questions through fleets that differ by one setting each (``CONFIGS``):
every latency lever on (the defaults), each lever off on its own, all of them off (the settings
before the latency work), and a smaller LLM. Each row gives time to first audio p50/p95 overall
and per language, the orchestrator's own breakdown, and the word error rate of what the
orchestrator heard against the questions' reference text. Fleets run one after another, never
two at once, so each has the machine to itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from bench.baseline import floor, sequential_turn
from bench.common import REPO, Question, percentile, questions, speech_end
from bench.fleet import Changes, fleet, merged
from client.converse import ConverseStream, answer_audio, final_transcript, is_kind
from parole.audio.v1 import audio_pb2
from parole.llm.v1 import llm_pb2_grpc
from parole.orchestrator.v1 import orchestrator_pb2 as opb
from parole.orchestrator.v1 import orchestrator_pb2_grpc
from parole.stt.v1 import stt_pb2_grpc
from parole.tts.v1 import tts_pb2_grpc
from services.fleet import Fleet
from services.models.store import ModelError, ModelStore
from services.runtime.audio import Pcm, silence
from services.runtime.config import default_model_dir
from services.testkit.transcripts import normalise, word_error_rate

MAX_SILENCE_CHUNKS = 150
"""After the question, up to 15 s of silence until the turn ends: a live microphone goes on."""
PCM = audio_pb2.AUDIO_ENCODING_PCM_S16LE


async def streamed_turn(stub: Any, language: str, pcm: Pcm) -> dict[str, Any]:
    """One spoken turn through the orchestrator, timed at the client. After the question the
    microphone keeps sending silence, as a live one would, until the turn's latency report."""
    fmt = audio_pb2.AudioFormat(sample_rate_hz=16000, encoding=PCM)
    config = opb.SessionConfig(language=language, input_format=fmt, session_id=f"bench-{uuid.uuid4().hex[:12]}")
    stream = ConverseStream(stub, config)
    stream.open()
    ended: list[float] = []  # when the user stopped talking

    async def send() -> None:
        await stream.stream_audio(pcm.data, mark=(speech_end(pcm), ended.append))
        await stream.stream_audio(silence(MAX_SILENCE_CHUNKS / 10))

    sender = asyncio.create_task(send())
    try:
        # A turn the speaker continued after a pause ends interrupted, unheard: the answer is
        # the turn that holds all their words.
        latency_event = await stream.wait_for(answered, timeout=None)
    finally:
        sender.cancel()
        stream.cancel()
    events = stream.events[: next(i for i, (_, m) in enumerate(stream.events) if m is latency_event)]
    first_audio = next((t for t, m in events if answer_audio(m)), None)
    continued = {m.turn_id for _, m in events if is_kind("latency")(m) and m.latency.interrupted}
    finals = [m.transcript.text for _, m in events if final_transcript(m) and m.turn_id not in continued]
    latency = latency_event.latency
    assert first_audio is not None, "the turn produced no audio"
    return {
        "transcript": " ".join(finals),
        "finals": len(finals),
        "reply": latency.reply_text,
        "time_to_first_audio_s": first_audio - ended[0],
        "playback_stalls_s": playback_stalls([(t, m.reply_audio) for t, m in events if answer_audio(m)]),
        "server": {
            "final_transcript_s": latency.final_transcript_seconds,
            "first_token_s": latency.first_token_seconds,
            "first_audio_s": latency.first_audio_seconds,
            "last_audio_s": latency.last_audio_seconds,
            **{m.point: m.seconds for m in getattr(latency, "marks", ())},
        },
    }


def answered(m: Any) -> bool:
    """A turn's record, for a turn that was answered (not continued by the next)."""
    return bool(is_kind("latency")(m)) and not m.latency.interrupted


def playback_stalls(chunks: list[tuple[float, Any]]) -> float:
    """Seconds of silence inside an answer, played as a client plays it: chunks back to back
    from the first one's arrival, a chunk that arrives after the one before has ended starting
    when it arrives (the user hears the gap: synthesis fell behind speech)."""
    stalls, played_until = 0.0, chunks[0][0] if chunks else 0.0
    for arrived, audio in chunks:
        stalls += max(0.0, arrived - played_until)
        played_until = max(played_until, arrived) + len(audio.audio) / 2 / audio.format.sample_rate_hz
    return stalls


SMALL_LLM = "qwen2.5-coder-0.5b-instruct"
FULL_WINDOW = {"stt": {"STT_ENGINES": '[{"name": "base", "window_padding_seconds": null}]'}}
SENTENCE_FIRST = {"tts": {"TTS_SPLIT__FIRST_CHUNK_MIN_WORDS": "50", "TTS_SPLIT__FIRST_CHUNK_MAX_WORDS": "100"}}
NO_PREEMPT = {"orchestrator": {"ORCH_PREEMPTIVE_GENERATION": "false"}}
SILENCE_ENDPOINTING = {"stt": {"STT_STREAMING__TURN__MODE": "silence"}}
FRENCH_ESPEAK = {"orchestrator": {"ORCH_DEFAULTS__VOICES": '{"fr": "espeak-ng:fr"}'}}

CONFIGS: dict[str, list[Changes]] = {
    "defaults": [],
    "stt-full-window": [FULL_WINDOW],
    "tts-first-sentence": [SENTENCE_FIRST],
    "no-preemptive-llm": [NO_PREEMPT],
    "silence-endpointing": [SILENCE_ENDPOINTING],
    "fr-voice-espeak": [FRENCH_ESPEAK],
    "all-levers-off": [FULL_WINDOW, SENTENCE_FIRST, NO_PREEMPT, SILENCE_ENDPOINTING, FRENCH_ESPEAK],
    "llm-qwen-0.5b": [{"llm": {"LLM_LLAMACPP__MODEL": SMALL_LLM}}],
}
"""Fleets of the ablation, as changes to the defaults: one lever off at a time (the STT's short
window, the TTS's short first piece, answering ahead, semantic end of turn, the Kokoro French
voice), all of them off (the settings before the latency work), and a smaller LLM. The first
one is the main configuration: it also runs the sequential baseline and the floor."""


def wer(rows: list[tuple[Question, dict[str, Any]]]) -> float:
    """Word error rate of what the orchestrator heard, over all the turns' reference words."""
    errors = sum(word_error_rate(q.text, r["transcript"]) * len(normalise(q.text)) for q, r in rows)
    return errors / max(1, sum(len(normalise(q.text)) for q, _ in rows))


def figures(rows: list[tuple[Question, dict[str, Any]]]) -> dict[str, Any]:
    """Time to first audio, the server's breakdown and WER, overall and per language."""
    out: dict[str, Any] = {}
    for language in ("all", "fr", "en"):
        sel = [(q, r) for q, r in rows if language == "all" or q.language == language]
        if not sel:
            continue
        ttfa = [r["time_to_first_audio_s"] for _, r in sel]
        server = {
            point: round(statistics.median(r["server"].get(point, 0.0) for _, r in sel), 3)
            for point in sel[0][1]["server"]
        }
        out[language] = {
            "turns": len(sel),
            "time_to_first_audio_p50_s": round(percentile(ttfa, 0.5), 3),
            "time_to_first_audio_p95_s": round(percentile(ttfa, 0.95), 3),
            "wer_heard": round(wer(sel), 4),
            "split_turns": sum(r["finals"] > 1 for _, r in sel),
            "playback_stalls_mean_s": round(statistics.mean(r["playback_stalls_s"] for _, r in sel), 3),
            "turns_with_stalls_over_100ms": sum(r["playback_stalls_s"] > 0.1 for _, r in sel),
            "server_median_s": server,
        }
    return out


async def streamed_only(fleet: Fleet, qs: list[Question], rounds: int) -> list[tuple[Question, dict[str, Any]]]:
    async with grpc.aio.insecure_channel(fleet.target("orchestrator")) as channel:
        orch = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        await streamed_turn(orch, qs[0].language, qs[0].pcm)  # warm every path once, not measured
        rows = []
        for _ in range(rounds):
            for q in qs:
                rows.append((q, await streamed_turn(orch, q.language, q.pcm)))
        return rows


async def run(fleet: Fleet, qs: list[Question], rounds: int) -> dict[str, Any]:
    channels = {n: grpc.aio.insecure_channel(t) for n, t in fleet.targets.items()}
    orch = orchestrator_pb2_grpc.OrchestratorServiceStub(channels["orchestrator"])
    stt = stt_pb2_grpc.SttServiceStub(channels["stt"])
    llm = llm_pb2_grpc.LlmServiceStub(channels["llm"])
    tts = tts_pb2_grpc.TtsServiceStub(channels["tts"])
    await streamed_turn(orch, qs[0].language, qs[0].pcm)  # warm every path once, not measured
    streamed: dict[str, list[dict[str, Any]]] = {q.name: [] for q in qs}
    sequential: dict[str, list[dict[str, Any]]] = {q.name: [] for q in qs}
    # Questions take turns, so no prompt directly follows itself: the LLM then reuses only the
    # system prompt's cache, as in a real conversation, not a whole identical prompt.
    for _ in range(rounds):
        for q in qs:
            streamed[q.name].append(await streamed_turn(orch, q.language, q.pcm))
        for q in qs:
            sequential[q.name].append(await sequential_turn(stt, llm, tts, q.language, q.pcm))
    # The floor, interleaved too: the LLM must read each question anew, as in a real turn.
    floors: dict[str, list[dict[str, float]]] = {q.name: [] for q in qs}
    for i in range(rounds):
        for q in qs:
            best = min(streamed[q.name], key=lambda r: r["time_to_first_audio_s"])
            floors[q.name].append(await floor(stt, llm, tts, q.language, q.pcm, best["transcript"], best["reply"], i))
    rows = []
    for q in qs:
        parts = {k: min(f[k] for f in floors[q.name]) for k in floors[q.name][0] if k != "floor_s"}
        fl = {**parts, "floor_s": sum(parts.values())}
        s_med = statistics.median(r["time_to_first_audio_s"] for r in streamed[q.name])
        q_med = statistics.median(r["time_to_first_audio_s"] for r in sequential[q.name])
        rows.append(
            {
                "question": q.name,
                "language": q.language,
                "speech_s": round(speech_end(q.pcm), 2),
                "streamed": streamed[q.name],
                "sequential": sequential[q.name],
                "floor": fl,
                "streamed_median_s": s_med,
                "sequential_median_s": q_med,
                "speedup": q_med / s_med,
                "above_floor_s": s_med - fl["floor_s"],
            }
        )
        print(
            f"{q.name:44} streamed {s_med:5.2f}s  sequential {q_med:5.2f}s  x{q_med / s_med:4.1f}  "
            f"floor {fl['floor_s']:5.2f}s",
            flush=True,
        )
    for ch in channels.values():
        await ch.close()
    ttfa = [r["time_to_first_audio_s"] for row in rows for r in row["streamed"]]
    seq = [r["time_to_first_audio_s"] for row in rows for r in row["sequential"]]
    floor_parts = {
        k: round(statistics.median(r["floor"][k] for r in rows), 3) for k in rows[0]["floor"] if k != "floor_s"
    }
    return {
        "summary": {
            "turns": len(ttfa),
            "streamed_time_to_first_audio_p50_s": percentile(ttfa, 0.5),
            "streamed_time_to_first_audio_p95_s": percentile(ttfa, 0.95),
            "sequential_time_to_first_audio_p50_s": percentile(seq, 0.5),
            "sequential_time_to_first_audio_p95_s": percentile(seq, 0.95),
            "speedup_p50": percentile(seq, 0.5) / percentile(ttfa, 0.5),
            "median_floor_s": statistics.median(r["floor"]["floor_s"] for r in rows),
            "median_floor_parts_s": floor_parts,
            "median_above_floor_s": statistics.median(r["above_floor_s"] for r in rows),
        },
        "streamed": figures([(q, r) for q in qs for row in rows if row["question"] == q.name for r in row["streamed"]]),
        "questions": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the main configuration")
    parser.add_argument("--ablation-rounds", type=int, default=2, help="rounds of every other configuration")
    parser.add_argument(
        "--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS), help="configurations to run, in order"
    )
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench_e2e.json")
    args = parser.parse_args()
    qs = questions()
    report: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "models": {
            "stt": "whisper-base int8 (CPU)",
            "llm": "qwen2.5-coder-1.5b-instruct-q4_k_m (llama.cpp CPU)",
            "tts": "piper en_US-joe-medium / the French default voice",
        },
        "rounds": args.rounds,
        "ablation_rounds": args.ablation_rounds,
        "configs": {name: merged(*CONFIGS[name]) for name in args.configs},
        "ablation": {},
    }
    store = ModelStore(default_model_dir())
    for i, name in enumerate(args.configs):
        print(f"--- {name}", flush=True)
        model = merged(*CONFIGS[name]).get("llm", {}).get("LLM_LLAMACPP__MODEL")
        missing = None
        if model:
            try:
                store.gguf(model)
            except ModelError as err:
                missing = str(err)
        if missing:
            why = f"model {model} not assembled ({missing})"
            print(f"skipped: {why}", flush=True)
            report["ablation"][name] = {"skipped": why}
            continue
        # Each fleet is started from the main thread, so its services die with this process.
        with fleet(CONFIGS[name]) as running:
            if i == 0:
                main_run = asyncio.run(run(running, qs, args.rounds))
                report["main"] = name
                report["summary"] = main_run["summary"]
                report["questions"] = main_run["questions"]
                report["ablation"][name] = main_run["streamed"]
            else:
                rows = asyncio.run(streamed_only(running, qs, args.ablation_rounds))
                report["ablation"][name] = figures(rows)
        row = report["ablation"][name]["all"]  # type: ignore[index]
        print(
            f"{name:22} TTFA p50 {row['time_to_first_audio_p50_s']:.2f}s p95 {row['time_to_first_audio_p95_s']:.2f}s "
            f"WER {row['wer_heard']:.3f}",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(json.dumps({"summary": report.get("summary"), "ablation": report["ablation"]}, indent=2))
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
