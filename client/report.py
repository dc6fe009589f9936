"""What the client shows and saves: each turn, the latency table, the validation report."""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from client.session import Turn
from parole.orchestrator.v1 import orchestrator_pb2

PROTOCOL = "parole-human-validation/1"
ACCURACY_SCALE = {
    1: "unusable: the meaning was lost",
    2: "poor: several words wrong, meaning partly lost",
    3: "fair: some words wrong, meaning kept",
    4: "good: minor slips only",
    5: "perfect: word for word",
}
LATENCY_SCALE = {
    1: "far too slow: I would give up",
    2: "slow: an awkward wait",
    3: "acceptable: noticeable pause",
    4: "good: a short natural pause",
    5: "instant: like a person answering",
}


def stage_name(stage: int) -> str:
    """STAGE_LLM -> "llm"."""
    return orchestrator_pb2.Stage.Name(stage).removeprefix("STAGE_").lower()  # type: ignore[arg-type]


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value else "—"


def latency_line(turn: Turn) -> str:
    """The turn's timings from the end of the user's speech, as the server measured them."""
    lat = turn.latency
    if lat is None:
        return "latency: none reported (the turn did not finish)"
    parts = [
        f"final transcript {_seconds(lat.final_transcript_seconds)}",
        f"first token {_seconds(lat.first_token_seconds)}",
        f"first audio {_seconds(lat.first_audio_seconds)}",
        f"last audio {_seconds(lat.last_audio_seconds)}",
        f"{lat.audio_seconds:.1f} s of audio",
    ]
    line = "latency: " + " · ".join(parts)
    if lat.interrupted:
        line += " · interrupted"
    if lat.degraded_stages:
        line += " · degraded: " + ", ".join(stage_name(s) for s in lat.degraded_stages)
    return line


def describe_turn(turn: Turn) -> str:
    """A few lines for the terminal: heard, answered, latency, problems."""
    lines = [f"── turn {turn.index} " + "─" * 40]
    if turn.input and turn.input not in ("microphone", turn.heard):
        lines.append(f"  sent:     {turn.input}")
    if turn.heard or turn.turn_id:
        lang = f"  ({turn.heard_language}, {turn.heard_confidence:.2f})" if turn.heard_language else ""
        lines.append(f"  heard:    {turn.heard or '(nothing)'}{lang}")
        lines.append(f"  answered: {turn.reply or '(nothing)'}")
        lines.append(f"  {latency_line(turn)}")
    client = turn.client_first_audio_seconds
    if client is not None:
        lines.append(f"  client:   question sent → first audio received {client:.2f} s")
    if turn.stopped:
        lines.append(f"  playback stopped by the server ({turn.stopped})")
    for err in turn.errors:
        how = "degraded" if err.degraded else "failed"
        lines.append(f"  ! {stage_name(err.stage)} {how} [{err.code}]: {err.message}")
    if turn.reply_wav is not None:
        lines.append(f"  audio:    {turn.reply_wav}")
    return "\n".join(lines)


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


LATENCY_COLUMNS = (
    ("final", "final_transcript_seconds"),
    ("token", "first_token_seconds"),
    ("audio₁", "first_audio_seconds"),
    ("audioₙ", "last_audio_seconds"),
)


def latency_table(turns: Sequence[Turn], width: int = 34) -> str:
    """Per turn: heard, answered and the latencies from end of speech; then the medians."""
    head = f"{'#':>2}  {'heard':<{width}}  {'answered':<{width}}" + "".join(f"  {c:>7}" for c, _ in LATENCY_COLUMNS)
    rows = [head, "-" * len(head)]
    values: dict[str, list[float]] = {field: [] for _, field in LATENCY_COLUMNS}
    for turn in turns:
        cells = ""
        for _, name in LATENCY_COLUMNS:
            v = float(getattr(turn.latency, name)) if turn.latency is not None else 0.0
            cells += f"  {v:>7.2f}" if v else f"  {'—':>7}"
            if v:
                values[name].append(v)
        heard = _short(turn.heard or ("(failed)" if turn.failed else "(nothing)"), width)
        rows.append(f"{turn.index:>2}  {heard:<{width}}  {_short(turn.reply, width):<{width}}{cells}")
    p50 = "".join(
        f"  {statistics.median(values[name]):>7.2f}" if values[name] else f"  {'—':>7}" for _, name in LATENCY_COLUMNS
    )
    rows.append("-" * len(head))
    rows.append(f"{'p50':>2}  {'':<{width}}  {'(seconds from end of speech)':<{width}}{p50}")
    return "\n".join(rows)


def turn_record(turn: Turn) -> dict[str, Any]:
    """A turn as JSON-ready data."""
    lat = turn.latency
    return {
        "index": turn.index,
        "turn_id": turn.turn_id,
        "input": turn.input,
        "heard": turn.heard,
        "heard_language": turn.heard_language,
        "heard_confidence": round(turn.heard_confidence, 4),
        "reply": turn.reply,
        "latency": None
        if lat is None
        else {
            "final_transcript_seconds": lat.final_transcript_seconds,
            "first_token_seconds": lat.first_token_seconds,
            "first_audio_seconds": lat.first_audio_seconds,
            "last_audio_seconds": lat.last_audio_seconds,
            "audio_seconds": lat.audio_seconds,
            "interrupted": lat.interrupted,
            "degraded_stages": [stage_name(s) for s in lat.degraded_stages],
        },
        "client_first_audio_seconds": turn.client_first_audio_seconds,
        "audio_chunks": turn.audio_chunks,
        "playback_stopped": turn.stopped,
        "errors": [
            {"stage": stage_name(e.stage), "code": e.code, "message": e.message, "degraded": e.degraded}
            for e in turn.errors
        ],
        "reply_wav": str(turn.reply_wav) if turn.reply_wav else None,
        "started_at": turn.started_at.isoformat(),
        "finished_at": turn.finished_at.isoformat() if turn.finished_at else None,
    }


@dataclass(frozen=True)
class Rating:
    """One person's judgement of one turn."""

    transcription_accuracy: int
    perceived_latency: int
    comment: str
    rated_at: datetime


class Rater:
    """Asks the user to rate each turn (1-5 twice, then an optional comment).

    ``ask`` is ``input`` by default; tests pass a scripted one. It runs in a thread so the
    conversation (playback events, the microphone's silence) keeps going while the user types.
    """

    def __init__(self, ask: Callable[[str], str] = input, out: TextIO | None = None) -> None:
        self.ask = ask
        self.out = out

    def _say(self, text: str) -> None:
        if self.out is not None:
            print(text, file=self.out, flush=True)

    async def _score(self, question: str, scale: dict[int, str]) -> int:
        self._say(question + "\n" + "\n".join(f"    {k} {v}" for k, v in scale.items()))
        while True:
            answer = (await asyncio.to_thread(self.ask, "  your rating (1-5): ")).strip()
            if answer.isdigit() and int(answer) in scale:
                return int(answer)
            self._say(f"  please answer 1 to 5 (got {answer!r})")

    async def rate(self, turn: Turn) -> Rating:
        accuracy = await self._score("  Transcription accuracy: was 'heard' what you said?", ACCURACY_SCALE)
        latency = await self._score("  Perceived latency: how long did the answer take to start?", LATENCY_SCALE)
        comment = (await asyncio.to_thread(self.ask, "  comment (optional, Enter to skip): ")).strip()
        return Rating(accuracy, latency, comment, datetime.now(UTC))


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 3) if values else None


def session_report(
    turns: Sequence[Turn],
    ratings: dict[int, Rating],
    *,
    session: dict[str, Any],
    started_at: datetime,
    finished_at: datetime,
) -> dict[str, Any]:
    """The validation session as JSON-ready data: every turn with its ratings, and a summary."""
    records = []
    for turn in turns:
        record = turn_record(turn)
        rating = ratings.get(turn.index)
        record["rating"] = (
            None
            if rating is None
            else {
                "transcription_accuracy": rating.transcription_accuracy,
                "perceived_latency": rating.perceived_latency,
                "comment": rating.comment,
                "rated_at": rating.rated_at.isoformat(),
            }
        )
        records.append(record)
    first_audio = [t.latency.first_audio_seconds for t in turns if t.latency and t.latency.first_audio_seconds]
    return {
        "protocol": PROTOCOL,
        "scales": {"transcription_accuracy": ACCURACY_SCALE, "perceived_latency": LATENCY_SCALE},
        "session": session,
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "turns": records,
        "summary": {
            "turns": len(turns),
            "rated": len(ratings),
            "mean_transcription_accuracy": _mean([r.transcription_accuracy for r in ratings.values()]),
            "mean_perceived_latency": _mean([r.perceived_latency for r in ratings.values()]),
            "first_audio_seconds_p50": round(statistics.median(first_audio), 4) if first_audio else None,
        },
    }


def save_report(path: Path, report: dict[str, Any]) -> Path:
    """Writes the report as indented UTF-8 JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
