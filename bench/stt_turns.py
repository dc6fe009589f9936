"""Turn-taking, for ``bench.stt``: does the STT end a turn where the speaker did, and how soon?

First a replay (``policy_replay``): each recording through the endpointer with the real VAD and
end-of-turn model but no decoder, in stream time, under each policy of ``REPLAYS``. Then live
(``turn_taking``): every one-turn recording (``turn_clips``: the real ones of shared/speech and
shared/speech/turns, our own Piper and espeak commands, Piper sentences with a pause inserted
mid-sentence) streamed at real-time pace under both endpointing modes. Per group: the share of
turns split into several finals; for the complete commands the silence waited after the voice.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import SPEECH_DIR, quantile
from parole.audio.v1 import audio_pb2
from parole.stt.v1 import stt_pb2
from services.models.store import ModelStore
from services.runtime.audio import Pcm, pcm16_to_float, read_wav, resample_pcm16, silence
from services.stt.config import StreamingSettings, TurnSettings
from services.stt.engine import SileroVad
from services.stt.streaming import CheckTurn, Endpointer, SpeechEnded
from services.stt.turn import SmartTurn
from services.testkit.speech import piper_joe, real_samples, slow_espeak, trim
from services.testkit.stt import paced_requests
from services.testkit.transcripts import normalise

LEAD = 0.3
"""Silence streamed before each clip."""
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
        overruled=eot.overruled,
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
    return {"p50": round(quantile(values, 0.5), 3), "p95": round(quantile(values, 0.95), 3), "n": len(values)}


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
        "overruled_by_text": [r["clip"] for r in rows if r.get("overruled")],
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
