"""The bundled demo questions, the demo driver of ``make run`` and the latency table."""

from __future__ import annotations

import wave
from pathlib import Path

from client.conversation import Turn
from client.demo import questions
from client.report import latency_table
from client.run import demo
from parole.orchestrator.v1 import orchestrator_pb2 as pb
from tests.client.conftest import FakeServer
from tests.client.fake_orchestrator import Script


def test_bundled_questions_are_small_16k_mono_and_listed() -> None:
    items = questions()
    assert {q.language for q in items} == {"en", "fr"}
    for q in items:
        with wave.open(str(q.path)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2), q.path
            assert 0.5 < w.getnframes() / 16000 < 3.0, q.path
        assert q.text and q.made_with
    listed = {q.path.name for q in items}
    on_disk = {p.name for p in items[0].path.parent.glob("*.wav")}
    assert listed == on_disk


async def test_demo_asks_each_question_in_its_language_session(fake_server: FakeServer, tmp_path: Path) -> None:
    fake, target = await fake_server.start(Script(chunks=1, chunk_seconds=0.1, end_silence_chunks=6))
    picked = [next(q for q in questions() if q.language == lang) for lang in ("en", "fr")]
    turns = await demo(target, picked, tmp_path, turn_timeout=15)
    assert [t.index for t in turns] == [1, 2]
    assert [t.input for t in turns] == [q.path.name for q in picked]
    assert [s.requests[0][1].config.language for s in fake.sessions] == ["en", "fr"]
    assert all(t.reply == "Paris is the capital." for t in turns)
    assert (tmp_path / "en" / "reply-01.wav").is_file() and (tmp_path / "fr" / "reply-01.wav").is_file()


def _turn(index: int, heard: str, first_audio: float) -> Turn:
    from datetime import UTC, datetime

    turn = Turn(turn_id=f"t{index}", index=index, started_at=datetime.now(UTC), heard=heard, reply="An answer.")
    turn.latency = pb.TurnLatency(
        final_transcript_seconds=0.2, first_token_seconds=0.5, first_audio_seconds=first_audio, last_audio_seconds=3.0
    )
    return turn


def test_latency_table_lists_turns_and_medians() -> None:
    turns = [_turn(1, "What is the capital of France?", 0.8), _turn(2, "How many days?", 1.2), _turn(3, "Two?", 2.0)]
    turns.append(Turn(turn_id="t4", index=4, started_at=turns[0].started_at))  # never answered
    lines = latency_table(turns).splitlines()
    assert lines[0].split()[:3] == ["#", "heard", "answered"]
    assert "What is the capital of France?" in lines[2] and lines[2].split()[-4:] == ["0.20", "0.50", "0.80", "3.00"]
    assert lines[5].split()[-4:] == ["—", "—", "—", "—"]
    # Medians over the answered turns only: first audio p50 of 0.8, 1.2, 2.0 is 1.2.
    assert lines[-1].startswith("p50") and lines[-1].split()[-4:] == ["0.20", "0.50", "1.20", "3.00"]
