"""Load: N conversations at once against the local fleet, at real-time pace, level after level.

``python -m bench.load [--levels 1,2,4,8] [--seconds 60] [--out reports/bench_load.json]``

Each conversation is one ``Converse`` stream that behaves like a hands-free client: it speaks a
question (a real recording streamed at real-time pace, then silence so the server hears the end
of speech), reports playback STARTED on the first answer audio and FINISHED once the answer has
played (its audio duration after the first chunk), waits for the microphone gate to reopen, and
asks the next question, until the level's time is up. No turn starts after the deadline; the
turns in flight finish (or time out) before the level ends, so every turn is accounted for.

Every turn ends in exactly one way:

- **ok**: the answer was spoken (latency event and answer audio);
- **degraded**: it was answered, with a ``StageError(degraded=True)`` (canned reply, text only);
- **error**: it ended with a clear error (``StageError(degraded=False)`` or an RPC status);
- **lost**: none of these within the turn timeout, or the stream ended without a reason.

Per level: turns by outcome, errors by kind, client-side time to first audio (from the true end
of speech, as in ``bench.e2e``) p50/p95/p99 and the server's own figure, and each service's
open file descriptors before and after the level (sessions closed). The knee is the first level
whose p95 is at least twice level 1's. Each level is recorded in the reliability ledger
(category "load"; passed = no turn lost).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import grpc

from bench.e2e import DEMO, percentile, questions, speech_end
from bench.e2e import fleet as e2e_fleet
from client.converse import ConverseStream
from parole.audio.v1 import audio_pb2
from parole.orchestrator.v1 import orchestrator_pb2 as opb
from parole.orchestrator.v1 import orchestrator_pb2_grpc
from services.fleet import Fleet
from services.runtime.audio import Pcm, silence
from services.testkit.ledger import record

REPO = Path(__file__).resolve().parent.parent
PCM = audio_pb2.AUDIO_ENCODING_PCM_S16LE
TRAILING_SILENCE_S = 1.5
"""Silence streamed after each question: the server's end-of-speech detection needs it."""

Outcome = Literal["ok", "degraded", "error", "lost"]

TYPED: dict[str, list[str]] = {
    "en": ["What is the capital of Italy?", "How many legs does a spider have?", "Name a primary colour."],
    "fr": ["Quelle est la capitale de l'Italie ?", "Combien de pattes a une araignée ?", "Cite une couleur primaire."],
}


def typed_questions() -> dict[str, list[str]]:
    """Typed questions by language: a few built-in ones plus the bundled questions' text."""
    out = {lang: list(texts) for lang, texts in TYPED.items()}
    with (DEMO / "questions.tsv").open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            out.setdefault(row["language"], []).append(row["text"])
    return out


def spoken_questions() -> dict[str, list[tuple[str, Pcm]]]:
    """Spoken questions (``bench.e2e.questions``) by language."""
    out: dict[str, list[tuple[str, Pcm]]] = {}
    for q in questions():
        out.setdefault(q.language, []).append((q.name, q.pcm))
    return out


# ---------------------------------------------------------------------------- process stats


@dataclass(frozen=True)
class ProcStat:
    rss_mb: float
    """Resident memory, all of it (VmRSS)."""
    anon_mb: float
    """Resident private memory (RssAnon): heaps, arenas, model weights read into memory. What a
    leak grows; file-backed pages (libraries, memory-mapped files) the kernel may drop or keep."""
    fds: int


def proc_stat(pid: int) -> ProcStat:
    """Resident memory (VmRSS, RssAnon) and open file descriptors of a process, from /proc."""
    kb = {"VmRSS": 0, "RssAnon": 0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in kb:
            kb[key] = int(line.split()[1])
    return ProcStat(rss_mb=kb["VmRSS"] / 1024, anon_mb=kb["RssAnon"] / 1024, fds=len(os.listdir(f"/proc/{pid}/fd")))


def fleet_stats(fleet: Fleet) -> dict[str, ProcStat]:
    """``proc_stat`` of every service of the fleet, by name."""
    return {name: proc_stat(child.process.pid) for name, child in fleet.children.items()}


# ---------------------------------------------------------------------------- one conversation


@dataclass
class TurnResult:
    kind: Literal["spoken", "typed"]
    question: str
    outcome: Outcome
    error: str = ""
    """Kind of error for error/lost/degraded turns ("stage:STT:UNAVAILABLE", "rpc:...", "timeout")."""
    time_to_first_audio_s: float | None = None
    """Client-side: end of speech (or text sent) to first answer audio received."""
    server_first_audio_s: float | None = None
    audio_s: float = 0.0
    reply: str = ""


class SessionEnded(Exception):
    """The Converse stream ended; ``error`` says how ("rpc:CODE" or "closed")."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


@dataclass
class _TurnState:
    done: asyncio.Event = field(default_factory=asyncio.Event)
    turn_id: str = ""
    first_audio: float | None = None
    latency: opb.TurnLatency | None = None
    degraded: str = ""
    error: str = ""


class Talker:
    """One conversation held like a client: speaks or types turns one at a time, reports
    playback, honours the microphone gate. ``playback``: "realtime" reports FINISHED once the
    answer's audio would have played; "instant" as soon as the turn's audio has all arrived
    (a headless client; soak uses it to fit hundreds of turns). The stream is the client's
    ``ConverseStream``."""

    def __init__(
        self,
        stub: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub,
        language: str,
        *,
        playback: Literal["realtime", "instant"] = "realtime",
        turn_timeout: float = 90.0,
        gate_timeout: float = 15.0,
    ) -> None:
        self.language = language
        self.playback = playback
        self.turn_timeout = turn_timeout
        self.gate_timeout = gate_timeout
        self.session_id = f"load-{uuid.uuid4().hex[:12]}"
        fmt = audio_pb2.AudioFormat(sample_rate_hz=16000, encoding=PCM)
        config = opb.SessionConfig(language=language, input_format=fmt, session_id=self.session_id)
        self.stream = ConverseStream(stub, config, on_event=self._on, record=False)
        self._turn: _TurnState | None = None
        self._finished: set[str] = set()
        self._mic_open = asyncio.Event()
        self._mic_open.set()

    @property
    def ended(self) -> str | None:
        """How the stream ended ("closed", "rpc:CODE", "cancelled"); None while it is open."""
        stream = self.stream
        if not stream.done.is_set():
            return None
        if stream.error is not None:
            return f"rpc:{stream.error.code().name}"
        if stream.failure is not None:
            return f"failure:{type(stream.failure).__name__}"
        return "cancelled" if stream.cancelled else "closed"

    async def open(self, timeout: float = 30.0) -> None:
        self.stream.open()
        if await self.stream.started(timeout) is None:
            raise SessionEnded(self.ended or "timeout:session_start")

    async def close(self, grace: float = 10.0) -> None:
        """Closes the request side and waits for the server to end the stream."""
        await self.stream.close(grace)

    async def _on(self, msg: opb.ConverseResponse, now: float) -> None:
        kind = msg.WhichOneof("event")
        if kind == "microphone":
            (self._mic_open.clear if msg.microphone.gated else self._mic_open.set)()
            return
        turn = self._turn
        if kind == "session_started" or turn is None or (msg.turn_id and msg.turn_id in self._finished):
            return  # session-level news, or a late message of a turn already accounted for
        if msg.turn_id and not turn.turn_id:
            turn.turn_id = msg.turn_id
        if kind == "reply_audio" and msg.reply_audio.audio and turn.first_audio is None:
            turn.first_audio = now
            self.stream.playback(opb.PLAYBACK_EVENT_TYPE_STARTED, msg.turn_id)
        elif kind == "latency":
            turn.latency = msg.latency
            turn.done.set()
        elif kind == "error":
            e = msg.error
            label = f"{opb.Stage.Name(e.stage).removeprefix('STAGE_')}:{e.code or 'UNKNOWN'}"
            if e.degraded:
                turn.degraded = turn.degraded or f"degraded:{label}"
            else:
                turn.error = f"stage:{label}"
                turn.done.set()

    async def _await_turn(self, result: TurnResult, turn: _TurnState, started: float, ended: float) -> TurnResult:
        remaining = max(0.0, started + self.turn_timeout - time.monotonic())
        await self.stream.until(turn.done, remaining)  # the turn's end, the stream's, or the timeout
        self._turn = None
        if turn.turn_id:
            self._finished.add(turn.turn_id)
        if turn.first_audio is not None:
            result.time_to_first_audio_s = turn.first_audio - ended
        if turn.latency is not None:
            lat = turn.latency
            result.server_first_audio_s = lat.first_audio_seconds or None
            result.audio_s, result.reply = lat.audio_seconds, lat.reply_text
            if turn.degraded:
                result.outcome, result.error = "degraded", turn.degraded
            elif turn.first_audio is None:
                result.outcome, result.error = "lost", "no_audio"  # answered, silently
            else:
                result.outcome = "ok"
            await self._play(turn, lat)
        elif turn.error:
            result.outcome, result.error = "error", turn.error
        elif self.ended is not None:
            # The stream ended mid-turn: with a status that is a clear error, without one it is not.
            result.outcome = "error" if self.ended.startswith("rpc:") else "lost"
            result.error = self.ended
        else:
            result.outcome, result.error = "lost", "timeout"
        return result

    async def _play(self, turn: _TurnState, lat: opb.TurnLatency) -> None:
        """Plays the answer (in time only) and reports it finished, then waits for the gate."""
        if turn.first_audio is None:
            return
        if self.playback == "realtime":
            await asyncio.sleep(max(0.0, turn.first_audio + lat.audio_seconds - time.monotonic()))
        self.stream.playback(opb.PLAYBACK_EVENT_TYPE_FINISHED, turn.turn_id)
        await self.wait_mic()

    async def wait_mic(self) -> None:
        """Waits for the microphone gate to open (or the stream to end); a gate stuck closed is
        a session error."""
        if not await self.stream.until(self._mic_open, self.gate_timeout) and not self.stream.ended:
            raise SessionEnded("gate_stuck")

    def _check_open(self) -> None:
        if self.ended is not None:
            raise SessionEnded(self.ended)

    async def speak(self, name: str, pcm: Pcm) -> TurnResult:
        """One spoken turn: the recording at real-time pace, then silence; waits for the answer."""
        self._check_open()
        await self.wait_mic()
        turn = self._turn = _TurnState()
        started = time.monotonic()
        spoken = speech_end(pcm)
        await self.stream.stream_audio(pcm.data, pcm.sample_rate)
        ended = started + spoken  # the last speech sample left at real-time pace

        def answered() -> bool:  # a client's microphone would be gated now anyway
            return turn.done.is_set() or turn.first_audio is not None

        await self.stream.stream_audio(silence(TRAILING_SILENCE_S), until=answered)
        return await self._await_turn(TurnResult("spoken", name, "lost"), turn, started, ended)

    async def type(self, text: str) -> TurnResult:
        """One typed turn; the clock starts when the text is sent."""
        self._check_open()
        await self.wait_mic()
        turn = self._turn = _TurnState()
        started = time.monotonic()
        self.stream.send_text(text)
        return await self._await_turn(TurnResult("typed", text, "lost"), turn, started, started)


# ---------------------------------------------------------------------------- a level


def summarize(turns: Sequence[TurnResult]) -> dict[str, Any]:
    """Counts by outcome, errors by kind, and time-to-first-audio percentiles."""
    outcomes = Counter(t.outcome for t in turns)
    # Real answers only (outcome "ok"): the time to first audio of a spoken model answer.
    ttfa = [t.time_to_first_audio_s for t in turns if t.outcome == "ok" and t.time_to_first_audio_s is not None]
    server = [t.server_first_audio_s for t in turns if t.outcome == "ok" and t.server_first_audio_s is not None]
    out: dict[str, Any] = {
        "turns": len(turns),
        "completed": outcomes["ok"] + outcomes["degraded"],
        "ok": outcomes["ok"],
        "degraded": outcomes["degraded"],
        "errors": outcomes["error"],
        "lost": outcomes["lost"],
        "errors_by_kind": dict(Counter(t.error for t in turns if t.error)),
    }
    for q in (0.5, 0.95, 0.99):
        out[f"time_to_first_audio_p{round(q * 100)}_s"] = percentile(ttfa, q) if ttfa else None
    out["server_first_audio_p50_s"] = percentile(server, 0.5) if server else None
    # Degraded answers (the LLM's canned fallback when it is saturated) come fast and would
    # flatter the figures above; these include them.
    answered = [t.time_to_first_audio_s for t in turns if t.outcome in ("ok", "degraded") and t.time_to_first_audio_s]
    out["answered_time_to_first_audio_p50_s"] = percentile(answered, 0.5) if answered else None
    out["answered_time_to_first_audio_p95_s"] = percentile(answered, 0.95) if answered else None
    return out


async def _conversation(
    stub: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub,
    language: str,
    spoken: Sequence[tuple[str, Pcm]],
    deadline: float,
    offset: int,
    turns: list[TurnResult],
    turn_timeout: float,
) -> None:
    """Question after question until the deadline; a session that ends is reopened."""
    i = offset
    while time.monotonic() < deadline:
        talker = Talker(stub, language, turn_timeout=turn_timeout)
        try:
            await talker.open()
            while time.monotonic() < deadline:
                name, pcm = spoken[i % len(spoken)]
                i += 1
                turns.append(await talker.speak(name, pcm))
        except SessionEnded as ended:
            # A session refused or ended between turns: no turn was lost, but it is an error.
            turns.append(TurnResult("spoken", "(session)", "error", error=f"session:{ended.error}"))
            await asyncio.sleep(1.0)
        finally:
            await talker.close()


async def run_level(
    fleet: Fleet,
    conversations: int,
    seconds: float,
    *,
    turn_timeout: float = 90.0,
    ledger_name: str | None = None,
) -> dict[str, Any]:
    """Holds ``conversations`` at once for ``seconds``; returns the level's summary and records
    it in the ledger (``ledger_name``: the record's name; default from the level)."""
    spoken = spoken_questions()
    languages = sorted(spoken, key=lambda lang: lang != "en")  # English first: most questions
    fds_before = {n: s.fds for n, s in fleet_stats(fleet).items()}
    load_before = os.getloadavg()[0]
    channel = grpc.aio.insecure_channel(fleet.target("orchestrator"))
    stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
    turns: list[TurnResult] = []
    t0 = time.monotonic()
    deadline = t0 + seconds
    tasks = []
    for i in range(conversations):
        lang = languages[i % len(languages)]
        tasks.append(asyncio.create_task(_conversation(stub, lang, spoken[lang], deadline, i, turns, turn_timeout)))
        await asyncio.sleep(min(1.0, 3.0 / conversations))  # staggered, not in lockstep
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - t0
    await channel.close()
    await asyncio.sleep(1.0)  # let the services release the sessions' streams
    stats_after = fleet_stats(fleet)
    summary = {
        "conversations": conversations,
        "seconds": seconds,
        "elapsed_s": round(elapsed, 1),
        **summarize(turns),
        "fds_before": fds_before,
        "fds_after": {n: s.fds for n, s in stats_after.items()},
        "rss_after_mb": {n: round(s.rss_mb, 1) for n, s in stats_after.items()},
        # The machine's 1-minute load average: other work on shared cores inflates latencies.
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "turn_log": [asdict(t) for t in turns],
    }
    summary["turns_per_minute"] = round(summary["completed"] * 60 / elapsed, 1)
    record(
        "load",
        ledger_name or f"{conversations} conversations x {seconds:.0f} s",
        passed=summary["lost"] == 0 and summary["completed"] > 0,
        lost=summary["lost"],
        conversations=conversations,
        seconds=seconds,
        turns=summary["turns"],
        completed=summary["completed"],
        errors=summary["errors"],
        errors_by_kind=summary["errors_by_kind"],
        ttfa_p50_s=summary["time_to_first_audio_p50_s"],
        ttfa_p95_s=summary["time_to_first_audio_p95_s"],
        ttfa_p99_s=summary["time_to_first_audio_p99_s"],
        loadavg_1m=summary["loadavg_1m"],
    )
    return summary


def knee(levels: Mapping[int, Mapping[str, Any]]) -> int | None:
    """The first level whose p95 time to first audio is at least twice the lowest level's."""
    ordered = sorted(levels)
    base = levels[ordered[0]].get("time_to_first_audio_p95_s") if ordered else None
    if not base:
        return None
    for n in ordered[1:]:
        p95 = levels[n].get("time_to_first_audio_p95_s")
        if p95 is not None and p95 >= 2 * base:
            return n
    return None


async def warm_up(fleet: Fleet) -> None:
    """One spoken turn through every stage, not measured (first-call costs)."""
    async with grpc.aio.insecure_channel(fleet.target("orchestrator")) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        spoken = spoken_questions()["en"]
        talker = Talker(stub, "en", playback="instant")
        await talker.open()
        await talker.speak(*spoken[0])
        await talker.close()


async def run(fleet: Fleet, levels: Sequence[int], seconds: float) -> dict[str, Any]:
    await warm_up(fleet)
    results: dict[int, dict[str, Any]] = {}
    for n in levels:
        results[n] = await run_level(fleet, n, seconds)
        s = results[n]
        print(
            f"{n:3d} conversations: {s['completed']:4d} turns ({s['turns_per_minute']}/min, "
            f"{s['degraded']} degraded), "
            f"{s['errors']} errors, {s['lost']} lost, time to first audio "
            f"p50 {s['time_to_first_audio_p50_s']} p95 {s['time_to_first_audio_p95_s']} "
            f"p99 {s['time_to_first_audio_p99_s']}",
            flush=True,
        )
    k = knee(results)
    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "seconds_per_level": seconds,
        "knee": k,
        "knee_note": (
            f"p95 time to first audio at {k} conversations is at least twice that at {min(levels)}"
            if k is not None
            else f"p95 did not double up to {max(levels)} conversations"
        ),
        "levels": {str(n): r for n, r in results.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,2,4,8", help="concurrent conversations per level, comma-separated")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long each level lasts")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench_load.json")
    args = parser.parse_args()
    levels = sorted({int(x) for x in args.levels.split(",") if x.strip()})
    if not levels or levels[0] < 1:
        parser.error("--levels: positive integers")
    with e2e_fleet([]) as running:  # main thread: the services die with this process
        report = asyncio.run(run(running, levels, args.seconds))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"knee: {report['knee_note']}")
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
