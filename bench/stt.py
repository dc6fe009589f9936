"""STT benchmark: clips streamed at real-time pace over loopback gRPC.

``python -m bench.stt [--out reports/bench_stt.json] [--no-interims] [--turns-only | --no-turns]``

Starts the real service in-process (Whisper base, CPU int8 by default settings), then streams
each clip in 100 ms chunks at the pace it would be spoken, with interim results on, and
measures per clip: end of speech → final (from sending the chunk where the voice stops to
receiving the final; it includes the configured 300 ms silence), the final's decode time and
real-time factor, and word error rate against the text. Peak memory is the process's
maximum resident set (model, VAD, gRPC, client all in one process).

It also times how the decode workers share the cores (``threads``): a lone decode, and four
decodes two at a time, with every core per worker (the default) against the cores split
between the workers, as a ratio from the same run.

Turn-taking (``turns``; ``--turns-only`` runs just this). First a replay: each recording
through the endpointer with the real VAD and end-of-turn model but no decoder, in stream
time, so the figures do not depend on the host's load: silence only (the old default, 300 ms),
semantic without the transcript hold, and semantic with the hold at its bound (a transcript
never ready: what a stream sent faster than real time gets); a live stream's hold falls in
between. Then live: every real recording of
shared/speech/turns (paused clips with natural inner pauses, complete short commands) and
shared/speech, and our own recordings (Piper sentences with a pause inserted mid-sentence at a
word gap, Piper and espeak commands), each one turn, streamed at real-time pace with semantic
endpointing and with silence only (the old default, 300 ms) in the same run. Per group: the
share of turns split into several finals; for the complete commands the silence waited after
the voice, p50/p95, three ways: to the decision (stream time, what the policy waited), to the
end of the utterance (after holding for the transcript), and wall-clock to SPEECH_ENDED and to
the final; and the end-of-turn model's CPU and wall time per run.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from parole.audio.v1 import audio_pb2
from parole.stt.v1 import stt_pb2, stt_pb2_grpc
from services.models.store import ModelStore
from services.runtime.audio import Pcm, pcm16_to_float, read_wav, resample_pcm16, silence
from services.runtime.config import default_model_dir
from services.runtime.server import start_app
from services.stt.app import SttApp
from services.stt.config import StreamingSettings, SttServerSettings, SttSettings, TurnSettings
from services.stt.engine import DecodeOptions, SileroVad, WhisperEngine
from services.stt.streaming import CheckTurn, Endpointer, SpeechEnded
from services.stt.turn import SmartTurn
from services.testkit.speech import espeak, piper_joe, real_samples, slow_espeak
from services.testkit.stt import paced_requests
from services.testkit.transcripts import normalise, word_error_rate

SPEECH_DIR = Path(os.environ.get("PAROLE_SPEECH_DIR", Path(__file__).resolve().parents[2] / "shared" / "speech"))
JOE = [
    "Could you tell me how long it takes to drive to the airport?",
    "Please set a timer for ten minutes and remind me to call my sister.",
    "What time does the pharmacy close tonight?",
]
ESPEAK_EN = ["Turn on the lights in the kitchen.", "Play some music please."]
LEAD, TAIL = 0.3, 1.0
TURN_TAIL = 2.6
"""Silence after a turn: past the longest pause semantic endpointing waits (2 s by default)."""
MODES = {"semantic": stt_pb2.ENDPOINTING_MODE_SEMANTIC, "silence": stt_pb2.ENDPOINTING_MODE_SILENCE}
# Our own recordings for turn-taking: commands, and sentences where a pause is inserted at a
# word gap mid-sentence (the prosody before it is mid-sentence, unlike a fragment synthesised
# on its own, which always sounds final).
OWN_COMMANDS_EN = [
    "What time is it?",
    "Turn off the kitchen lights.",
    "Set a timer for ten minutes.",
    "What's the weather like tomorrow?",
    "Call my sister.",
    "Remind me to buy milk.",
]
OWN_COMMANDS_FR = ["Quelle heure est-il ?", "Allume la lumière du salon.", "Mets un minuteur de cinq minutes."]
OWN_PAUSED = [
    "My brother and I are planning a trip to the mountains next weekend with the whole family.",
    "Could you remind me tomorrow morning to send the report to my manager before the meeting starts?",
    "The blue car parked in front of the house belongs to our neighbour who lives across the street.",
]


def trim(pcm: Pcm) -> Pcm:
    """Drops the clip's own leading and trailing silence, so the speech end is known."""
    audio = np.frombuffer(pcm.data, dtype="<i2")
    loud = np.nonzero(np.abs(audio) > 300)[0]
    return Pcm(audio[loud[0] : loud[-1] + 1].tobytes(), pcm.sample_rate) if loud.size else pcm


def clips(store: ModelStore) -> list[tuple[str, str, str, Pcm]]:
    out = [(f"joe-{i}", "en", t, piper_joe(t, store)) for i, t in enumerate(JOE)]
    out += [(f"espeak-en-{i}", "en", t, espeak(t, "en")) for i, t in enumerate(ESPEAK_EN)]
    if (SPEECH_DIR / "manifest.tsv").is_file():
        for s in real_samples(SPEECH_DIR):
            pcm = read_wav(s.path)
            out.append(
                (s.path.stem, s.language, s.transcript, Pcm(resample_pcm16(pcm.data, pcm.sample_rate, 16000), 16000))
            )
    return [(n, lang, text, trim(p)) for n, lang, text, p in out]


async def stream_clip(stub: Any, language: str, pcm: Pcm, interims: bool) -> dict[str, Any]:
    cfg = stt_pb2.RecognitionConfig(
        language=language,
        interim_results=interims,
        audio_format=audio_pb2.AudioFormat(sample_rate_hz=16000, encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE),
    )
    audio = silence(LEAD) + pcm.data + silence(TAIL)
    speech_end = LEAD + pcm.duration
    marks: dict[str, float] = {}

    finals: list[tuple[float, stt_pb2.RecognitionResult]] = []
    interim_count = 0
    async for response in stub.StreamingRecognize(paced_requests(cfg, audio, speech_end, marks)):
        if response.HasField("result"):
            if response.result.is_final:
                finals.append((time.perf_counter(), response.result))
            else:
                interim_count += 1
    last_at, last = finals[-1]
    utterance_seconds = last.end_seconds - last.start_seconds
    return {
        "transcript": " ".join(f.transcript for _, f in finals),
        "finals": len(finals),
        "interims": interim_count,
        # The chunk that holds the speech end can be sent up to 100 ms after the voice stops.
        "eos_to_final_seconds": last_at - marks["speech_end"],
        "decode_seconds": last.decode_seconds,
        "rtf": last.decode_seconds / utterance_seconds if utterance_seconds > 0 else None,
    }


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# ----------------------------------------------------------------------------- turn-taking


def with_pause(pcm: Pcm, seconds: float) -> Pcm:
    """``pcm`` with ``seconds`` of silence inserted at its middle word gap (the quietest 20 ms
    between 30 % and 70 % of the speech)."""
    audio = np.frombuffer(pcm.data, dtype="<i2").astype(np.float32)
    frame = 320
    rms = np.sqrt(np.mean(audio[: audio.size - audio.size % frame].reshape(-1, frame) ** 2, axis=1))
    lo, hi = int(0.3 * rms.size), int(0.7 * rms.size)
    cut = (lo + int(np.argmin(rms[lo:hi]))) * frame
    return Pcm(pcm.data[: 2 * cut] + silence(seconds) + pcm.data[2 * cut :], pcm.sample_rate)


def turn_clips(store: ModelStore) -> list[tuple[str, str, str, str, Pcm]]:
    """(group, name, language, text, audio) of every one-turn recording."""
    out: list[tuple[str, str, str, str, Pcm]] = []
    turns = SPEECH_DIR / "turns"
    if (turns / "manifest.tsv").is_file():
        with (turns / "manifest.tsv").open() as f:
            for row in csv.DictReader(f, delimiter="\t"):
                pcm = read_wav(turns / row["file"])
                pcm = Pcm(resample_pcm16(pcm.data, pcm.sample_rate, 16000), 16000)
                out.append((f"turns-{row['kind']}", Path(row["file"]).stem, row["language"], row["transcript"], pcm))
    if (SPEECH_DIR / "manifest.tsv").is_file():
        for s in real_samples(SPEECH_DIR):
            pcm = read_wav(s.path)
            pcm = Pcm(resample_pcm16(pcm.data, pcm.sample_rate, 16000), 16000)
            out.append(("speech", s.path.stem, s.language, s.transcript, pcm))
    out += [("own-complete", f"joe: {t}", "en", t, piper_joe(t, store)) for t in OWN_COMMANDS_EN]
    out += [("own-complete", f"espeak-fr: {t}", "fr", t, slow_espeak(t, "fr+m3", 120)) for t in OWN_COMMANDS_FR]
    for t in OWN_PAUSED:
        for pause in (0.5, 0.9):
            out.append(("own-paused", f"joe+{pause}s: {t[:30]}", "en", t, with_pause(trim(piper_joe(t, store)), pause)))
    return [(g, n, lang, text, trim(p)) for g, n, lang, text, p in out]


async def stream_turn(stub: Any, language: str, pcm: Pcm, mode: str) -> dict[str, Any]:
    """One turn at real-time pace: its finals and how the last one was ended."""
    cfg = stt_pb2.RecognitionConfig(
        language=language,
        endpointing=MODES[mode],
        audio_format=audio_pb2.AudioFormat(sample_rate_hz=16000, encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE),
    )
    marks: dict[str, float] = {}
    got: list[tuple[float, stt_pb2.StreamingRecognizeResponse]] = []
    audio = silence(LEAD) + pcm.data + silence(TURN_TAIL)
    async for response in stub.StreamingRecognize(paced_requests(cfg, audio, LEAD + pcm.duration, marks)):
        got.append((time.perf_counter(), response))
    finals = [(t, r.result) for t, r in got if r.HasField("result") and r.result.is_final]
    ended = [t for t, r in got if r.speech_event == stt_pb2.SPEECH_EVENT_TYPE_SPEECH_ENDED]
    row: dict[str, Any] = {"finals": len(finals), "transcript": " | ".join(f.transcript for _, f in finals)}
    if not finals:
        return row
    final_at, last = finals[-1]
    eot = last.end_of_turn
    # Stream second x had been sent by start + x (paced_requests sends each 100 ms chunk at its
    # start): measured from there, as a client that sends audio the moment it is spoken would
    # see it. A microphone client sending 100 ms chunks adds up to 100 ms of its own buffering.
    voice_end_at = marks["start"] + last.end_seconds
    row.update(
        reason=stt_pb2.EndOfTurnReason.Name(eot.reason).removeprefix("END_OF_TURN_REASON_").lower(),
        probability=round(eot.probability, 3) if eot.HasField("probability") else None,
        checks=eot.checks,
        decision_silence_seconds=round(eot.silence_seconds, 3),
        end_silence_seconds=round(eot.silence_seconds + eot.held_seconds, 3),
        wall_to_speech_ended_seconds=round(ended[-1] - voice_end_at, 3),
        wall_to_final_seconds=round(final_at - voice_end_at, 3),
        split_reasons=[
            stt_pb2.EndOfTurnReason.Name(f.end_of_turn.reason).removeprefix("END_OF_TURN_REASON_").lower()
            for _, f in finals[:-1]
        ],
        model_runs=[
            (f.end_of_turn.decision_cpu_seconds / f.end_of_turn.checks, f.end_of_turn.decision_wall_seconds)
            for _, f in finals
            if f.end_of_turn.checks
        ],
    )
    return row


def _summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"p50": round(pct(values, 50), 3), "p95": round(pct(values, 95), 3), "n": len(values)}


REPLAYS: dict[str, tuple[bool, int]] = {
    "silence_300ms": (False, 0),
    "semantic_no_hold": (True, 0),
    "semantic_hold_bound": (True, 500),
}


def replay(turn: SmartTurn, pcm: Pcm, semantic: bool, hold_ms: int) -> tuple[list[SpeechEnded], list[float]]:
    """One recording through the endpointer in stream time, each question answered at once;
    the transcript is never reported ready, so a hold runs to its bound. Also the CPU time of
    each model run."""
    settings = StreamingSettings(turn=TurnSettings(hold_for_transcript_ms=hold_ms))
    ep = Endpointer(SileroVad(), settings, semantic=semantic)
    ended: list[SpeechEnded] = []
    cpu: list[float] = []

    def handle(events: list[Any]) -> None:
        for e in events:
            if isinstance(e, CheckTurn):
                started = time.thread_time()
                p = turn.probability(e.audio)
                cpu.append(time.thread_time() - started)
                handle(ep.verdict(e.check, p))
            elif isinstance(e, SpeechEnded):
                ended.append(e)

    audio = pcm16_to_float(silence(LEAD) + pcm.data + silence(TURN_TAIL))
    for i in range(0, audio.size, 1600):
        handle(ep.feed(audio[i : i + 1600]))
    handle(ep.flush())
    return ended, cpu


def policy_replay(store: ModelStore, data: list[tuple[str, str, str, str, Pcm]]) -> dict[str, Any]:
    turn = SmartTurn(store.turn_model())
    turn.load()
    out: dict[str, Any] = {}
    cpu: list[float] = []
    for label, (semantic, hold) in REPLAYS.items():
        rows = []
        for group, name, _, _, pcm in data:
            ended, runs = replay(turn, pcm, semantic, hold)
            cpu += runs
            last = ended[-1]
            rows.append(
                {
                    "group": group,
                    "clip": name,
                    "finals": len(ended),
                    "reasons": [e.reason for e in ended],
                    "decision_silence_seconds": last.silence_samples / 16000,
                    "end_silence_seconds": (last.at_sample - last.voice_end_sample) / 16000,
                }
            )
        out[label] = _turn_summary(rows)
        print(
            f"replay {label:20s} split real {out[label]['split_share_real']:.3f} all {out[label]['split_share_all']:.3f} "
            f"commands: decision {out[label]['complete_commands']['decision_silence_seconds']} "
            f"end {out[label]['complete_commands']['end_silence_seconds']}",
            flush=True,
        )
    turn.close()
    out["model_run_cpu_seconds"] = _summary(cpu)
    return out


def _turn_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Split shares by group and overall, and the silence waited after the complete commands."""
    groups: dict[str, Any] = {}
    for group in sorted({r["group"] for r in rows}):
        mine = [r for r in rows if r["group"] == group]
        split = [r["clip"] for r in mine if r["finals"] > 1]
        groups[group] = {"clips": len(mine), "split": len(split), "split_share": round(len(split) / len(mine), 3)}
        groups[group]["split_clips"] = split
    real = [r for r in rows if not r["group"].startswith("own")]
    commands = [r for r in rows if r["group"] in ("turns-complete", "own-complete") and r["finals"] == 1]
    summary: dict[str, Any] = {
        "groups": groups,
        "split_share_real": round(sum(r["finals"] > 1 for r in real) / max(1, len(real)), 3),
        "split_share_all": round(sum(r["finals"] > 1 for r in rows) / len(rows), 3),
        "complete_commands": {
            key: _summary([r[key] for r in commands if r.get(key) is not None])
            for key in (
                "decision_silence_seconds",
                "end_silence_seconds",
                "wall_to_speech_ended_seconds",
                "wall_to_final_seconds",
            )
        },
    }
    return summary


async def turn_taking(stub: Any, store: ModelStore) -> dict[str, Any]:
    """Every one-turn recording replayed under each policy, then streamed live under both
    endpointing modes, in one run."""
    data = turn_clips(store)
    report: dict[str, Any] = {"clips": len(data), "tail_seconds": TURN_TAIL, "replay": policy_replay(store, data)}
    report["modes"] = {}
    # The two modes take turns clip by clip (in alternating order), so a change in the host's
    # load over the run weighs on both alike.
    rows: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for i, (group, name, language, text, pcm) in enumerate(data):
        for mode in list(MODES)[:: 1 if i % 2 == 0 else -1]:
            row = await stream_turn(stub, language, pcm, mode)
            ref = set(normalise(text))
            row.update(group=group, clip=name, seconds=round(pcm.duration, 2))
            row["reference_words_heard"] = round(len(ref & set(normalise(row["transcript"]))) / max(1, len(ref)), 2)
            rows[mode].append(row)
            print(
                f"{mode:8s} {group:14s} {name[:38]:38s} finals {row['finals']} {row.get('reason', '-'):12s} "
                f"p={row.get('probability')} silence {row.get('decision_silence_seconds')}/"
                f"{row.get('end_silence_seconds')} wall→final {row.get('wall_to_final_seconds')}",
                flush=True,
            )
    for mode, mine in rows.items():
        runs = [run for r in mine for run in r.get("model_runs", [])]
        report["modes"][mode] = {
            **_turn_summary(mine),
            "model_run_cpu_seconds": _summary([cpu for cpu, _ in runs]),
            "model_run_wall_seconds": _summary([wall for _, wall in runs]),
            "results": mine,
        }
    return report


async def thread_split(store: ModelStore, pcm: Pcm, workers: int, repeats: int = 3) -> dict[str, Any]:
    """Lone-decode and concurrent-decode times with each worker on every core, then on its share."""
    audio = pcm16_to_float(pcm.data)
    cores = os.cpu_count() or 1
    out: dict[str, Any] = {"workers": workers, "cores": cores, "speech_seconds": round(pcm.duration, 3)}
    for label, threads in (("every_core", cores), ("split", max(1, cores // workers))):
        engine = WhisperEngine(
            "bench",
            store.whisper("whisper-base"),
            "whisper-base",
            "cpu",
            0,
            "int8",
            cpu_threads=threads,
            workers=workers,
        )
        await engine.load()
        options = DecodeOptions(language="en")
        lone = []
        for _ in range(repeats):
            t = time.perf_counter()
            await engine.transcribe(audio, options)
            lone.append(time.perf_counter() - t)
        t = time.perf_counter()
        await asyncio.gather(*(engine.transcribe(audio, options) for _ in range(2 * workers)))
        out[label] = {
            "threads_per_worker": threads,
            "lone_decode_seconds": round(statistics.median(lone), 3),
            f"{2 * workers}_decodes_wall_seconds": round(time.perf_counter() - t, 3),
        }
        await engine.close()
    every, split = out["every_core"], out["split"]
    out["lone_speedup"] = round(split["lone_decode_seconds"] / every["lone_decode_seconds"], 2)
    key = f"{2 * workers}_decodes_wall_seconds"
    out["concurrent_throughput_ratio"] = round(split[key] / every[key], 2)
    return out


async def main(interims: bool, latency: bool = True, turns: bool = True) -> dict[str, Any]:
    store = ModelStore(default_model_dir())
    data = clips(store) if latency else []
    settings = SttSettings(server=SttServerSettings(host="127.0.0.1", port=0, metrics_port=None), cache_max_bytes=0)
    app = SttApp.from_settings(settings)
    started = time.perf_counter()
    running = await start_app(app, settings.server)
    load_seconds = time.perf_counter() - started
    rows = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = stt_pb2_grpc.SttServiceStub(channel)
            await asyncio.sleep(1.0)  # let Piper's ONNX threads stop spinning before timing
            turn_report = await turn_taking(stub, store) if turns else None
            for name, language, text, pcm in data:
                row = await stream_clip(stub, language, pcm, interims)
                row.update(clip=name, language=language, speech_seconds=round(pcm.duration, 3))
                row["wer"] = round(word_error_rate(text, row["transcript"]), 3)
                rows.append(row)
                print(
                    f"{name:40s} {pcm.duration:5.2f}s eos→final {row['eos_to_final_seconds']:.3f}s "
                    f"decode {row['decode_seconds']:.3f}s rtf {row['rtf'] or 0:.3f} wer {row['wer']:.2f} "
                    f"interims {row['interims']}",
                    flush=True,
                )
    finally:
        await running.stop(0)
        await app.close()
    if not latency:
        return {"benchmark": "stt", "host": _host(), "settings": _turn_settings(settings), "turns": turn_report}
    latencies = [r["eos_to_final_seconds"] for r in rows]
    rtfs = [r["rtf"] for r in rows if r["rtf"] is not None]
    report = {
        "benchmark": "stt",
        "engine": "whisper-base cpu int8 (default settings)",
        "host": _host(),
        "settings": {
            "end_of_speech_silence_ms": settings.streaming.end_of_speech_silence_ms,
            "speculative_pause_ms": settings.streaming.speculative_pause_ms,
            "decode_workers": settings.decode_workers,
            "interim_results": interims,
            "pace": "real time, 100 ms chunks",
            **_turn_settings(settings),
        },
        "load_and_warm_seconds": round(load_seconds, 3),
        "clips": len(rows),
        "eos_to_final_seconds": {
            "p50": round(pct(latencies, 50), 3),
            "p95": round(pct(latencies, 95), 3),
            "mean": round(statistics.fmean(latencies), 3),
            "note": "includes the 300 ms end-of-speech silence and up to 100 ms of chunking",
        },
        "rtf": {
            "p50": round(pct(rtfs, 50), 3),
            "p95": round(pct(rtfs, 95), 3),
            "mean": round(statistics.fmean(rtfs), 3),
        },
        "mean_wer": round(statistics.fmean(r["wer"] for r in rows), 3),
        "threads": await thread_split(store, next(c[3] for c in data if c[1] == "en"), settings.decode_workers),
        # ru_maxrss is in KiB on Linux.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "results": rows,
        "turns": turn_report,
    }
    return report


def _host() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "machine": platform.machine(), "load_average_1m": os.getloadavg()[0]}


def _turn_settings(settings: SttSettings) -> dict[str, Any]:
    return {
        "turn": settings.streaming.turn.model_dump(),
        "speculative_pause_ms": settings.streaming.speculative_pause_ms,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.stt")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_stt.json"))
    parser.add_argument("--no-interims", action="store_true", help="stream without interim results")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--turns-only", action="store_true", help="only the turn-taking measurements")
    which.add_argument("--no-turns", action="store_true", help="skip the turn-taking measurements")
    args = parser.parse_args()
    result = asyncio.run(main(not args.no_interims, latency=not args.turns_only, turns=not args.no_turns))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    keys = ("eos_to_final_seconds", "rtf", "mean_wer", "peak_rss_bytes", "load_and_warm_seconds", "threads")
    summary = {k: result[k] for k in keys if k in result}
    if result.get("turns"):
        summary["turns"] = {
            "replay": result["turns"]["replay"],
            "live": {
                mode: {k: v for k, v in m.items() if k != "results"} for mode, m in result["turns"]["modes"].items()
            },
        }
    print(json.dumps(summary, indent=2))
