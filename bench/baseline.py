"""What ``bench.e2e`` measures streaming against: the original sequential design, and the floor.

- ``sequential_turn``: the same audio and models, one stage after the other: endpointing
  silence, then the whole transcript (unary Recognize), then the whole answer (Generate to the
  end), then the whole audio (unary Synthesize).
- ``floor``: each stage's best time alone for the same turn: endpointing, the decode, the
  LLM's first piece, the TTS's first audio of it. Nothing streamed can beat their sum.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from typing import Any

from parole.audio.v1 import audio_pb2
from parole.llm.v1 import llm_pb2
from parole.stt.v1 import stt_pb2
from parole.tts.v1 import tts_pb2
from services.runtime.audio import Pcm, silence
from services.stt.config import StreamingSettings
from services.tts.text import IncrementalSplitter, SplitPolicy

SILENCE_MS = 300
"""The original design's end of turn: a fixed silence after the speech."""
PCM = audio_pb2.AUDIO_ENCODING_PCM_S16LE


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
        # The original's end of turn: a fixed silence, then the whole chain one after another.
        "time_to_first_audio_s": SILENCE_MS / 1000 + sum(stages.values()),
        **stages,
        "transcript": rec.result.transcript,
        "reply": reply,
    }


def first_piece(reply: str, language: str) -> str:
    """The first piece of ``reply`` the TTS speaks on its own, cut as its incremental splitter
    cuts an answer arriving token by token."""
    splitter = IncrementalSplitter(language, SplitPolicy())
    for word in re.findall(r"\S+\s*", reply):
        pieces = splitter.feed(word)
        if pieces:
            return pieces[0].strip()
    return splitter.flush().strip()


async def floor(
    stt: Any, llm: Any, tts: Any, language: str, pcm: Pcm, transcript: str, reply: str, round_index: int
) -> dict[str, float]:
    """Each stage alone, once, for this turn (the caller keeps the best of several rounds):
    the pause at which the STT starts decoding, the decode (or the end-of-turn silence, if
    longer), the LLM until the first piece the TTS speaks has been generated, and the TTS
    until that piece's first audio. Nothing streamed can beat their sum on this machine."""
    fmt = audio_pb2.AudioFormat(sample_rate_hz=16000, encoding=PCM)
    # A little silence makes each request's audio differ, should a result cache be on.
    audio = pcm.data + silence(0.01 * (round_index + 1))
    t = time.monotonic()
    await stt.Recognize(
        stt_pb2.RecognizeRequest(config=stt_pb2.RecognitionConfig(language=language, audio_format=fmt), audio=audio)
    )
    decode = time.monotonic() - t
    piece = first_piece(reply, language)
    t = time.monotonic()
    first_token, first_piece_at = float("nan"), float("nan")
    text = ""
    call = llm.Generate(
        llm_pb2.GenerateRequest(
            session_id=f"bench-{uuid.uuid4().hex[:12]}",
            text=transcript,
            options=llm_pb2.GenerationOptions(language=language, max_tokens=24, temperature=0.0),
        )
    )
    async for r in call:
        if r.WhichOneof("response") == "delta":
            if math.isnan(first_token):
                first_token = time.monotonic() - t
            text += r.delta
            if len(text.split()) > len(piece.split()):  # the piece is complete once a word follows it
                first_piece_at = time.monotonic() - t
                call.cancel()
                break
    else:
        # The answer ended with its first piece ("Il est midi."): the piece was complete then.
        if text:
            first_piece_at = time.monotonic() - t
    t = time.monotonic()
    tts_first = float("nan")
    async for _ in tts.SynthesizeStream(
        tts_pb2.SynthesizeStreamRequest(text=piece, config=tts_pb2.SynthesisConfig(language=language))
    ):
        tts_first = time.monotonic() - t
        break
    streaming = StreamingSettings()
    pause = streaming.speculative_pause_ms / 1000
    end_of_turn = streaming.turn.complete_silence_ms / 1000
    parts = {
        "speculative_pause_s": pause,
        "stt_decode_s": decode,
        "end_of_turn_wait_s": max(0.0, end_of_turn - pause - decode),
        "llm_first_token_s": first_token,
        "llm_first_piece_rest_s": first_piece_at - first_token,
        "tts_first_audio_s": tts_first,
    }
    return {**parts, "floor_s": sum(parts.values())}
