"""A recognition result in the transcription response formats: json, text, verbose_json (with
segments and words), srt and vtt. Separate from the endpoint: pure formatting, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, PlainTextResponse, Response

from parole.stt.v1 import stt_pb2


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


def segments(result: stt_pb2.RecognitionResult, duration: float) -> list[Segment]:
    """Subtitle-sized segments from the word timings: a new one after a sentence end, a pause
    over 0.8 s, or 8 s of speech (the STT gives one result per file, not Whisper's segments)."""
    if not result.transcript.strip():
        return []
    if not result.words:
        return [Segment(result.start_seconds, result.end_seconds or duration, result.transcript.strip())]
    out: list[Segment] = []
    words: list[stt_pb2.WordInfo] = []

    def close() -> None:
        if words:
            out.append(Segment(words[0].start_seconds, words[-1].end_seconds, " ".join(w.word for w in words)))
            words.clear()

    for w in result.words:
        if words and (w.start_seconds - words[-1].end_seconds > 0.8 or w.end_seconds - words[0].start_seconds > 8.0):
            close()
        words.append(w)
        if w.word.rstrip().endswith((".", "?", "!")):
            close()
    close()
    return out


def _timestamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def transcription_response(
    result: stt_pb2.RecognitionResult, duration: float, fmt: str, granularities: list[str]
) -> Response:
    text = result.transcript.strip()
    usage = {"type": "duration", "seconds": round(duration, 3)}
    if fmt == "json":
        return JSONResponse({"text": text, "usage": usage})
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    segs = segments(result, duration)
    if fmt == "srt":
        cues = [
            f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text}\n" for i, s in enumerate(segs, 1)
        ]
        return PlainTextResponse("\n".join(cues), media_type="application/x-subrip")
    if fmt == "vtt":
        cues = [f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text}\n" for s in segs]
        return PlainTextResponse("WEBVTT\n\n" + "\n".join(cues), media_type="text/vtt")
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": result.language,
        "duration": round(duration, 3),
        "text": text,
        "usage": usage,
    }
    if not granularities or "segment" in granularities:
        body["segments"] = [
            {
                "id": i,
                "seek": 0,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": math.log(max(result.confidence, 1e-6)),
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
            }
            for i, s in enumerate(segs)
        ]
    if "word" in granularities:
        body["words"] = [
            {"word": w.word, "start": round(w.start_seconds, 3), "end": round(w.end_seconds, 3)} for w in result.words
        ]
    return JSONResponse(body)
